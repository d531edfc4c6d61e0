package iadvize

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// Storage (docs/storage.md; storage.go): what a failed Put, Get or Delete
// leaves behind, and what a restart finds.

func TestStorageFailedTokenPersistKeepsPreviousTokenAndServesItWithWarning(t *testing.T) {
	s, e, u := newFaultyAppEnv(t, "pw-one")
	first := accessToken(t, e.mustRead("creds/app"))
	roleBefore := storedRole(t, s, "app")

	// Into the refresh window: a read starts a login, and storing that token
	// fails; the read after it is served the old token with a warning.
	e.clock.Advance(23*time.Hour + time.Second)
	s.failPuts(tokensStoragePrefix, true)
	e.mustRead("creds/app")
	e.settle()
	resp, err := e.read("creds/app")
	u.wantCount(t, 2, " (the refresh was attempted)")
	switch {
	case err != nil:
		// An error is acceptable; a 200 with nothing is not.
	case resp == nil || resp.IsError():
		t.Fatalf("read during the storage fault answered %v, want the old token with a warning or an error", respErr(resp))
	default:
		if got := accessToken(t, resp); got != first {
			t.Fatal("read during the storage fault served a token other than the persisted one")
		}
		if len(resp.Warnings) == 0 {
			t.Fatal("old token served during the storage fault without a warning")
		}
	}
	if st := storedToken(t, s, "app"); st == nil || st.AccessToken != first {
		t.Fatal("the previous token is no longer in storage after a failed persist")
	}
	if r := storedRole(t, s, "app"); !reflect.DeepEqual(r, roleBefore) {
		t.Fatal("the role changed in storage after a failed token persist")
	}

	s.failPuts("", false)
	e.clock.Advance(time.Second) // a failed store holds the next login back a second
	e.mustRead("creds/app")      // starts the next login
	e.settle()
	third := accessToken(t, e.mustRead("creds/app"))
	u.wantCount(t, 3, " (the read after the fault logs in again)")
	if third == first {
		t.Fatal("the read after the fault served the old token")
	}
	if st := storedToken(t, s, "app"); st == nil || st.AccessToken != third {
		t.Fatal("the token of the read after the fault was not persisted")
	}
	if strings.Contains(e.logs.String(), first) || strings.Contains(e.logs.String(), third) {
		t.Fatal("an access token appears in the log")
	}
}

func TestStorageFailedTokenPersistOnColdReadIsAnErrorThenNextReadLogsIn(t *testing.T) {
	s, e, u := newFaultyAppEnv(t, "pw-one")

	s.failPuts(tokensStoragePrefix, true)
	resp, err := e.read("creds/app")
	if err == nil && (resp == nil || !resp.IsError()) {
		t.Fatal("a cold read whose token could not be stored answered 200")
	}
	if err != nil && !strings.Contains(err.Error(), `"app"`) {
		t.Errorf("error %q does not name the role", err)
	}
	if strings.Contains(errText(err), "tok-1") || strings.Contains(e.logs.String(), "tok-1") {
		t.Fatal("the unstored access token leaked into the error or the log")
	}
	if st := storedToken(t, s, "app"); st != nil && st.AccessToken != "" {
		t.Fatal("a token is in storage although its persist failed")
	}
	if storedRole(t, s, "app") == nil {
		t.Fatal("the role is gone after a failed token persist")
	}

	s.failPuts("", false)
	tok := accessToken(t, e.mustRead("creds/app"))
	u.wantCount(t, 2, "")
	if st := storedToken(t, s, "app"); st == nil || st.AccessToken != tok {
		t.Fatal("the token served after the fault cleared is not the persisted one")
	}
}

func TestStorageFailedRolePutLeavesRoleAndTokenUnchanged(t *testing.T) {
	s, e, u := newFaultyAppEnv(t, "pw-one")
	tok := accessToken(t, e.mustRead("creds/app"))
	before := storageSnapshot(t, s)

	s.failPuts(rolesStoragePrefix, true)
	resp, err := e.write("roles/app", map[string]any{"password": "pw-two"})
	if err == nil && (resp == nil || !resp.IsError()) {
		t.Fatal("a role write whose Put failed reported success")
	}
	if strings.Contains(errText(err), "pw-two") || strings.Contains(errText(respErr(resp)), "pw-two") {
		t.Fatal("the password appears in the error")
	}
	s.failPuts("", false)
	assertStorageUnchanged(t, s, before)
	if got := accessToken(t, e.mustRead("creds/app")); got != tok || u.count() != 1 {
		t.Fatal("the cached token changed after a failed role write")
	}
}

func TestStorageGetFailureOnColdReadIsAnErrorNotAnEmptyAnswer(t *testing.T) {
	s, e, u := newFaultyAppEnv(t, "pw-one")

	s.failGets(tokensStoragePrefix, true)
	resp, err := e.read("creds/app")
	if err == nil {
		t.Fatalf("a read whose storage Get failed answered without error (%v)", respErr(resp))
	}
	u.wantCount(t, 0, ": the token state could not be read")
	s.failGets("", false)
	e.mustRead("creds/app")
	u.wantCount(t, 1, " after the fault cleared")
}

func TestStorageCacheHitTouchesNoStorage(t *testing.T) {
	s, e, u := newFaultyAppEnv(t, "pw-one")
	tok := accessToken(t, e.mustRead("creds/app"))

	s.failGets("", true)
	gets := s.getCount()
	for range 5 {
		if got := accessToken(t, e.mustRead("creds/app")); got != tok {
			t.Fatal("a cache hit served another token")
		}
		e.mustRead("static-creds/app")
	}
	if s.getCount() != gets {
		t.Fatalf("cache hits made %d storage reads, want 0", s.getCount()-gets)
	}
	u.wantCount(t, 1, "")
}

func TestStorageDeleteRoleDeletesItsCachedToken(t *testing.T) {
	e, u := newAppEnv(t, nil, issuing(24*time.Hour), "pw-one")
	old := accessToken(t, e.mustRead("creds/app"))
	if storedToken(t, e.storage, "app") == nil {
		t.Fatal("no token stored after a read")
	}

	if resp, err := e.do(logical.DeleteOperation, "roles/app", nil); err != nil || (resp != nil && resp.IsError()) {
		t.Fatalf("deleting the role: %v %v", err, respErr(resp))
	}
	if storedToken(t, e.storage, "app") != nil {
		t.Fatal("tokens/app survives the deletion of its role")
	}
	if storedRole(t, e.storage, "app") != nil {
		t.Fatal("roles/app survives its deletion")
	}
	resp, err := e.read("creds/app")
	if err != nil || resp == nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), `"app"`) {
		t.Fatalf("creds of a deleted role: err=%v resp=%v, want a 400 naming the role", err, respErr(resp))
	}

	// Re-created with the same name, the role does not inherit the old token.
	e.addRole("app", "svc@example.com", "pw-one")
	if got := accessToken(t, e.mustRead("creds/app")); got == old {
		t.Fatal("a re-created role served the token of the deleted one")
	}
	u.wantCount(t, 2, "")
}

func TestStorageRestartServesPersistedTokenWithoutLogin(t *testing.T) {
	e, u := newAppEnv(t, nil, issuing(24*time.Hour), "pw-one")
	tok := accessToken(t, e.mustRead("creds/app"))

	e.clock.Advance(12 * time.Hour)
	restarted := newTestEnv(t, e.storage, e.clock)
	restarted.wantServed(tok, "after a restart (the persisted token)", "creds/app", "static-creds/app")
	u.wantCount(t, 1, ": a restart must not log in while the token is fresh")
}

// A login that fails upstream (500) with Put failing too keeps the backoff in
// memory: the next read does not hammer upstream.
func TestStorageFailedBookkeepingPersistStillBacksOff(t *testing.T) {
	u := newUpstream(t, func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "boom", http.StatusInternalServerError)
	})
	s := newFaultyStorage()
	e := newTestEnv(t, s, nil)
	e.configure(u, nil)
	e.addRole("app", "svc@example.com", "pw-one")
	s.failPuts(tokensStoragePrefix, true)
	if _, err := e.read("creds/app"); codedStatus(err) != http.StatusBadGateway {
		t.Fatalf("first read: status %d (%v), want 502", codedStatus(err), err)
	}
	if _, err := e.read("creds/app"); codedStatus(err) != http.StatusTooManyRequests {
		t.Fatalf("read during backoff: status %d (%v), want 429", codedStatus(err), err)
	}
	u.wantCount(t, 1, "")
}

// New credentials retire the cached token even when deleting it from storage
// fails: a token of the old credentials is never served beside the new ones, on
// this node or on one that loads the role from storage.
func TestStorageFailedTokenDeleteAfterNewCredentialsNeverServesTheOldToken(t *testing.T) {
	s, e, u := newFaultyAppEnv(t, "pw-one")
	old := accessToken(t, e.mustRead("creds/app"))

	s.failDeletes(true)
	if resp, err := e.write("roles/app", map[string]any{"password": "pw-two"}); err == nil && (resp == nil || !resp.IsError()) {
		t.Fatal("a role write whose token delete failed reported success")
	}
	s.failDeletes(false)

	other := newTestEnv(t, s, e.clock) // another node, loading from storage
	for _, env := range []*testEnv{e, other} {
		if got := accessToken(t, env.mustRead("creds/app")); got == old {
			t.Fatal("the token of the old credentials was served after they were rewritten")
		}
	}
	u.wantCount(t, 2, " (one login under the new credentials)")
}

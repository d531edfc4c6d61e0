package iadvize

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// errInjected is what faultyStorage answers when a fault is switched on. It holds
// nothing of the entry, as a real storage error might not.
var errInjected = errors.New("injected storage fault")

// faultyStorage wraps a storage and fails Put (or Get) for keys under a prefix
// while the fault is on.
type faultyStorage struct {
	logical.Storage
	mu        sync.Mutex
	putPrefix string // "" with failPut false: no fault
	failPut   bool
	getPrefix string
	failGet   bool
	failDel   bool
	gets      int
}

func newFaultyStorage() *faultyStorage {
	return &faultyStorage{Storage: &logical.InmemStorage{}}
}

// newFaultyAppEnv is newAppEnv (an upstream issuing day-long tokens, role "app"
// with password) over a faultyStorage, returned to switch faults on and off.
func newFaultyAppEnv(t *testing.T, password string) (*faultyStorage, *testEnv, *upstream) {
	t.Helper()
	s := newFaultyStorage()
	e, u := newAppEnv(t, s, issuing(24*time.Hour), password)
	return s, e, u
}

// failDeletes makes every Delete fail while on.
func (s *faultyStorage) failDeletes(on bool) {
	s.mu.Lock()
	s.failDel = on
	s.mu.Unlock()
}

func (s *faultyStorage) Delete(ctx context.Context, key string) error {
	s.mu.Lock()
	fail := s.failDel
	s.mu.Unlock()
	if fail {
		return errInjected
	}
	return s.Storage.Delete(ctx, key)
}

// failPuts makes every Put of a key under prefix fail (on=false clears it).
func (s *faultyStorage) failPuts(prefix string, on bool) {
	s.mu.Lock()
	s.putPrefix, s.failPut = prefix, on
	s.mu.Unlock()
}

// failGets makes every Get of a key under prefix fail (on=false clears it).
func (s *faultyStorage) failGets(prefix string, on bool) {
	s.mu.Lock()
	s.getPrefix, s.failGet = prefix, on
	s.mu.Unlock()
}

func (s *faultyStorage) getCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gets
}

func (s *faultyStorage) Put(ctx context.Context, e *logical.StorageEntry) error {
	s.mu.Lock()
	fail := s.failPut && strings.HasPrefix(e.Key, s.putPrefix)
	s.mu.Unlock()
	if fail {
		return errInjected
	}
	return s.Storage.Put(ctx, e)
}

func (s *faultyStorage) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	s.mu.Lock()
	s.gets++
	fail := s.failGet && strings.HasPrefix(key, s.getPrefix)
	s.mu.Unlock()
	if fail {
		return nil, errInjected
	}
	return s.Storage.Get(ctx, key)
}

// storageSnapshot returns every key of s with its raw value.
func storageSnapshot(t *testing.T, s logical.Storage) map[string]string {
	t.Helper()
	keys, err := logical.CollectKeys(context.Background(), s)
	if err != nil {
		t.Fatalf("listing storage: %v", err)
	}
	snap := make(map[string]string, len(keys))
	for _, k := range keys {
		entry, err := s.Get(context.Background(), k)
		if err != nil {
			t.Fatalf("reading storage key %s: %v", k, err)
		}
		if entry != nil {
			snap[k] = string(entry.Value)
		}
	}
	return snap
}

// assertStorageUnchanged fails when s differs from before. It prints keys only:
// values hold secrets.
func assertStorageUnchanged(t *testing.T, s logical.Storage, before map[string]string) {
	t.Helper()
	after := storageSnapshot(t, s)
	if reflect.DeepEqual(before, after) {
		return
	}
	var changed []string
	for k, v := range before {
		if av, ok := after[k]; !ok || av != v {
			changed = append(changed, k)
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			changed = append(changed, k+" (new)")
		}
	}
	t.Errorf("stored state changed: keys %v", changed)
}

// storedToken decodes tokens/<name>; nil when absent.
func storedToken(t *testing.T, s logical.Storage, name string) *tokenState {
	return storedJSON[tokenState](t, s, tokensStoragePrefix+name)
}

// storedRole decodes roles/<name>; nil when absent.
func storedRole(t *testing.T, s logical.Storage, name string) *role {
	return storedJSON[role](t, s, rolesStoragePrefix+name)
}

// storedJSON decodes a storage entry; nil when absent.
func storedJSON[T any](t *testing.T, s logical.Storage, key string) *T {
	t.Helper()
	entry, err := s.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("reading %s: %v", key, err)
	}
	if entry == nil {
		return nil
	}
	v := new(T)
	if err := json.Unmarshal(entry.Value, v); err != nil {
		t.Fatalf("decoding %s: %v", key, err)
	}
	return v
}

// putLoggedInRole stores password role name (user name@example.com), bound to
// the token host host (tokenOrigin), with the day-long token tok it logged in
// for at issued, as a node that served it left them: a start over this storage
// finds both.
func putLoggedInRole(tb testing.TB, s logical.Storage, host, name, tok string, issued time.Time) {
	tb.Helper()
	id := "id-" + name
	r := &role{GrantType: grantPassword, Username: name + "@example.com", Password: "pw-" + name,
		CredentialsID: id, TokenHost: host}
	st := &tokenState{AccessToken: tok, TokenType: "Bearer", IssuedAt: issued, Issuer: host,
		ExpiresAt: issued.Add(24 * time.Hour), LastAttempt: issued, LastOutcome: outcomeSuccess, CredentialsID: id}
	for key, v := range map[string]any{rolesStoragePrefix + name: r, tokensStoragePrefix + name: st} {
		entry, err := logical.StorageEntryJSON(key, v)
		if err != nil {
			tb.Fatal(err)
		}
		if err := s.Put(context.Background(), entry); err != nil {
			tb.Fatal(err)
		}
	}
}

// accessToken is the access_token of a creds/ or static-creds/ answer.
func accessToken(t *testing.T, resp *logical.Response) string {
	t.Helper()
	tok, _ := resp.Data["access_token"].(string)
	if tok == "" {
		t.Fatal("answer holds no access_token")
	}
	return tok
}

// wantServed fails the test unless each of paths, read on e, answers with the
// access token tok; why says when (the message names the path, never a token).
func (e *testEnv) wantServed(tok, why string, paths ...string) {
	e.t.Helper()
	for _, path := range paths {
		if got := accessToken(e.t, e.mustRead(path)); got != tok {
			e.t.Fatalf("%s: %s served another token", why, path)
		}
	}
}

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

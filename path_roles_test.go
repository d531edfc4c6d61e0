package iadvize

import (
	"context"
	"encoding/json"
	"net/http"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

func TestRoleBadInputIs400NamingFieldAndLeavesStorageUnchanged(t *testing.T) {
	creds := map[string]any{"username": "svc@example.com", "password": "pw-good"}
	cc := map[string]any{"grant_type": "client_credentials", "client_id": "cid", "client_secret": "cs-good"}
	with := func(base map[string]any, kv ...any) map[string]any {
		m := map[string]any{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	cases := []struct {
		name  string
		path  string
		data  map[string]any
		names string // what the message must name
	}{
		{"unknown grant type", "roles/new", with(creds, "grant_type", "implicit"), "grant_type"},
		{"empty grant type", "roles/new", with(creds, "grant_type", ""), "grant_type"},
		{"password grant without username", "roles/new", map[string]any{"password": "pw-good"}, "username"},
		{"password grant without password", "roles/new", map[string]any{"username": "svc@example.com"}, "password"},
		{"client_credentials without client_id", "roles/new",
			map[string]any{"grant_type": "client_credentials", "client_secret": "cs-good"}, "client_id"},
		{"client_credentials without client_secret", "roles/new",
			map[string]any{"grant_type": "client_credentials", "client_id": "cid"}, "client_secret"},
		{"password grant with client_secret", "roles/new", with(creds, "client_secret", "cs-good"), "client_secret"},
		{"client_credentials with username", "roles/new", with(cc, "username", "svc@example.com"), "username"},
		{"client_credentials with password", "roles/new", with(cc, "password", "pw-good"), "password"},
		{"unknown field pasword", "roles/new", map[string]any{"username": "svc@example.com", "pasword": "pw-good"}, "pasword"},
		{"ttl above max_ttl", "roles/new", with(creds, "ttl", "2h", "max_ttl", "1h"), "ttl"},
		{"negative ttl", "roles/new", with(creds, "ttl", "-5m"), "ttl"},
		{"negative max_ttl", "roles/new", with(creds, "max_ttl", "-1"), "max_ttl"},
		{"ttl not a duration", "roles/new", with(creds, "ttl", "soon"), "ttl"},
		{"upper-case name", "roles/App", creds, "App"},
		{"name with a space", "roles/my role", creds, "my role"},
		{"name with a slash", "roles/a/b", creds, "a/b"},
		{"name dot-dot", "roles/..", creds, ".."},
		{"name too long", "roles/" + strings.Repeat("a", 129), creds, "name is 129 bytes; at most 128"},

		{"update: unknown field pasword", "roles/app", map[string]any{"pasword": "pw-new"}, "pasword"},
		{"update: empty password", "roles/app", map[string]any{"password": ""}, "password"},
		{"update: empty username", "roles/app", map[string]any{"username": ""}, "username"},
		{"update: client_secret without client_id on a password role", "roles/app", map[string]any{"client_secret": "cs-good"}, "client_id"},
		{"update: switch grant without client credentials", "roles/app",
			map[string]any{"grant_type": "client_credentials"}, "client_id"},
		{"update: ttl above the stored max_ttl", "roles/app", map[string]any{"ttl": "3h"}, "ttl"},
		{"update: negative ttl", "roles/app", map[string]any{"ttl": -1}, "ttl"},
		{"update: username on a client_credentials role", "roles/cc", map[string]any{"username": "svc@example.com"}, "username"},
		{"update: empty client_secret", "roles/cc", map[string]any{"client_secret": ""}, "client_secret"},
		{"update: unknown field clientsecret", "roles/cc", map[string]any{"clientsecret": "cs-new"}, "clientsecret"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := newUpstream(t, issuing(24*time.Hour))
			e := newTestEnv(t, nil, nil)
			e.configure(u, nil)
			e.mustWrite("roles/app", with(creds, "max_ttl", "2h"))
			e.mustWrite("roles/cc", cc)
			tokApp := accessToken(t, e.mustRead("creds/app"))
			tokCC := accessToken(t, e.mustRead("creds/cc"))
			e.refusedWrite(tc.path, tc.data, tc.names)
			// The in-memory state is unchanged too: same tokens, no login.
			if accessToken(t, e.mustRead("creds/app")) != tokApp || accessToken(t, e.mustRead("creds/cc")) != tokCC {
				t.Fatal("a refused write changed the served tokens")
			}
			u.wantCount(t, 2, "")
		})
	}
}

func TestRolePartialUpdateChangesOnlyNamedFields(t *testing.T) {
	u := checkingUpstream(t, "pw-good", "")
	e := newTestEnv(t, nil, nil)
	e.configure(u, nil)
	e.mustWrite("roles/app", map[string]any{
		"username": "svc@example.com", "password": "pw-good", "scope": "a b", "ttl": "1h", "max_ttl": "2h",
	})
	want := map[string]any{
		"grant_type": "password", "username": "svc@example.com", "scope": "a b",
		"ttl": int64(3600), "max_ttl": int64(7200),
	}
	if got := e.mustRead("roles/app").Data; !reflect.DeepEqual(got, want) {
		t.Fatalf("role read %v, want %v", got, want)
	}

	e.mustWrite("roles/app", map[string]any{"ttl": "30m"})
	want["ttl"] = int64(1800)
	if got := e.mustRead("roles/app").Data; !reflect.DeepEqual(got, want) {
		t.Fatalf("after a ttl update: %v, want %v", got, want)
	}
	e.mustWrite("roles/app", map[string]any{"username": "svc2@example.com"})
	want["username"] = "svc2@example.com"
	if got := e.mustRead("roles/app").Data; !reflect.DeepEqual(got, want) {
		t.Fatalf("after a username update: %v, want %v", got, want)
	}
	// The password was kept through both updates: the login succeeds.
	e.mustRead("creds/app")

	e.mustWrite("roles/cc", map[string]any{"grant_type": "client_credentials", "client_id": "cid", "client_secret": "cs"})
	e.mustWrite("roles/cc", map[string]any{"max_ttl": "3h"})
	got := e.mustRead("roles/cc").Data
	if got["client_id"] != "cid" || got["grant_type"] != "client_credentials" || got["max_ttl"] != int64(10800) {
		t.Fatalf("client_credentials role after a max_ttl update: %v", got)
	}
	if r := storedRole(t, e.storage, "cc"); r.ClientSecret != "cs" {
		t.Fatal("a max_ttl update lost the client secret")
	}
}

func TestRoleExistenceCheckTellsCreateFromUpdate(t *testing.T) {
	e, _ := newAppEnv(t, nil, issuing(24*time.Hour), "pw-good")

	for name, want := range map[string]bool{"app": true, "ghost": false} {
		found, exists, err := e.b.HandleExistenceCheck(context.Background(), &logical.Request{
			Operation: logical.UpdateOperation, Path: "roles/" + name, Storage: e.storage,
		})
		if err != nil || !found || exists != want {
			t.Fatalf("existence of %s: found=%v exists=%v err=%v, want exists=%v", name, found, exists, err, want)
		}
	}

	// An update (not a create) of a missing role is refused, naming the role.
	before := storageSnapshot(t, e.storage)
	resp, err := e.do(logical.UpdateOperation, "roles/ghost", map[string]any{"username": "g@example.com", "password": "pw-g"})
	if msg := errorMessage(resp, err); !strings.Contains(msg, `"ghost"`) {
		t.Fatalf("update of a missing role: err=%v message=%q, want a 400 naming the role", err, msg)
	}
	assertStorageUnchanged(t, e.storage, before)

	// A create that races with another create of the same role merges into it
	// rather than wiping the credentials.
	if resp, err := e.do(logical.CreateOperation, "roles/app", map[string]any{"ttl": "1h"}); errorMessage(resp, err) != "" || err != nil {
		t.Fatalf("create over an existing role: err=%v resp=%v", err, respErr(resp))
	}
	if r := storedRole(t, e.storage, "app"); r.Username != "svc@example.com" || r.Password != "pw-good" || r.TTL != time.Hour {
		t.Fatal("a create over an existing role lost its credentials or ignored ttl")
	}
}

func TestRoleNewCredentialsDiscardCachedTokenButTTLUpdateKeepsIt(t *testing.T) {
	e, u := newAppEnv(t, nil, issuing(24*time.Hour), "pw-one")
	e.mustWrite("roles/cc", map[string]any{"grant_type": "client_credentials", "client_id": "cid", "client_secret": "cs-one"})
	tok := accessToken(t, e.mustRead("creds/app"))
	ccTok := accessToken(t, e.mustRead("creds/cc"))

	e.mustWrite("roles/app", map[string]any{"ttl": "1h", "max_ttl": "2h"})
	if got := accessToken(t, e.mustRead("creds/app")); got != tok {
		t.Fatal("a ttl-only update discarded the cached token")
	}
	if st := storedToken(t, e.storage, "app"); st == nil || st.AccessToken != tok {
		t.Fatal("a ttl-only update removed the stored token")
	}
	u.wantCount(t, 2, "")

	for i, update := range []map[string]any{
		{"password": "pw-two"},
		{"username": "svc-b@example.com"},
		{"username": "svc-b@example.com", "password": "pw-three"},
	} {
		e.mustWrite("roles/app", update)
		if st := storedToken(t, e.storage, "app"); st != nil && st.AccessToken != "" {
			t.Fatalf("update %d: the stored token survives new credentials", i)
		}
		next := accessToken(t, e.mustRead("creds/app"))
		if next == tok {
			t.Fatalf("update %d: the token of the old credentials is still served", i)
		}
		tok = next
		if want := int64(3 + i); u.count() != want {
			t.Fatalf("update %d: upstream requests = %d, want %d", i, u.count(), want)
		}
	}

	e.mustWrite("roles/cc", map[string]any{"client_secret": "cs-two"})
	if got := accessToken(t, e.mustRead("creds/cc")); got == ccTok {
		t.Fatal("a new client secret did not discard the cached token")
	}
}

// Row 12: a role re-applied with the values it has (Terraform, Ansible, CI)
// keeps its token and its bookkeeping, costs no login, and warns about a shared
// username once, when the sharing begins; any change to what a login sends
// retires the token.
func TestRoleReappliedUnchangedKeepsItsToken(t *testing.T) {
	u := newUpstream(t, issuing(24*time.Hour))
	e := newTestEnv(t, nil, nil)
	e.configure(u, nil)
	data := map[string]any{"username": "svc@example.com", "password": "pw-one", "scope": "read write", "ttl": "1h"}
	e.mustWrite("roles/app", data)
	tok := accessToken(t, e.mustRead("creds/app"))
	before := storedToken(t, e.storage, "app")

	for range 3 {
		if resp := e.mustWrite("roles/app", data); resp != nil && len(resp.Warnings) > 0 {
			t.Fatalf("re-applying the role warned: %q", resp.Warnings)
		}
	}
	e.mustWrite("roles/app", map[string]any{"password": "pw-one", "ttl": "2h"}) // only a lease cap changes
	if got := accessToken(t, e.mustRead("creds/app")); got != tok {
		t.Fatal("re-applying unchanged credentials retired the token")
	}
	if after := storedToken(t, e.storage, "app"); after.LastAttempt != before.LastAttempt || after.CredentialsID != before.CredentialsID {
		t.Fatal("re-applying unchanged credentials changed the token's bookkeeping")
	}
	u.wantCount(t, 1, " (re-applies cost no login)")

	// The sharing warning comes when it begins, and not on re-applies.
	other := map[string]any{"username": "SVC@example.com", "password": "pw-other"}
	if resp := e.mustWrite("roles/other", other); resp == nil || len(resp.Warnings) != 1 {
		t.Fatal("no warning when a second role began to share the username")
	}
	if resp := e.mustWrite("roles/other", other); resp != nil && len(resp.Warnings) > 0 {
		t.Fatalf("re-applying a role that shares a username warned again: %q", resp.Warnings)
	}

	// Each value a login sends retires the token.
	for _, change := range []map[string]any{
		{"scope": "read"}, {"password": "pw-two"}, {"username": "svc2@example.com"},
		{"client_id": "a-client"}, {"grant_type": "client_credentials", "client_id": "c", "client_secret": "s"},
	} {
		last := accessToken(t, e.mustRead("creds/app"))
		e.mustWrite("roles/app", change)
		if accessToken(t, e.mustRead("creds/app")) == last {
			t.Fatalf("writing %v kept the token of the old values", keysOf(change))
		}
	}
}

func keysOf(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

func TestRoleRewrittenCredentialsClearRejectedState(t *testing.T) {
	u := checkingUpstream(t, "pw-good", "")
	e := newTestEnv(t, nil, nil)
	e.configure(u, nil)
	e.addRole("app", "svc@example.com", "pw-wrong")

	_, err := e.read("creds/app")
	if codedStatus(err) != http.StatusBadGateway || !strings.Contains(errText(err), `"app"`) {
		t.Fatalf("rejected credentials: status %d (%v), want a 502 naming the role", codedStatus(err), err)
	}
	for range 5 {
		if _, err := e.read("creds/app"); err == nil {
			t.Fatal("a role with rejected credentials served a token")
		}
	}
	u.wantCount(t, 1, ": rejected credentials are not retried")
	if rej := e.mustRead("status/app").Data["credentials_rejected"]; rej != true {
		t.Fatalf("status credentials_rejected = %v, want true", rej)
	}

	e.mustWrite("roles/app", map[string]any{"password": "pw-good"})
	e.mustRead("creds/app")
	u.wantCount(t, 2, "")
	if rej := e.mustRead("status/app").Data["credentials_rejected"]; rej != false {
		t.Fatalf("status credentials_rejected = %v after the rewrite, want false", rej)
	}
}

func TestRoleSharingUsernameWarnsNamingTheOtherRole(t *testing.T) {
	e := newTestEnv(t, nil, nil)
	e.addRole("first", "shared@example.com", "pw-1")
	if resp := e.mustWrite("roles/alone", map[string]any{"username": "alone@example.com", "password": "pw-2"}); resp != nil && len(resp.Warnings) > 0 {
		t.Fatalf("a role with its own username got warnings %v", resp.Warnings)
	}
	resp := e.mustWrite("roles/second", map[string]any{"username": "shared@example.com", "password": "pw-3"})
	if resp == nil || len(resp.Warnings) == 0 {
		t.Fatal("no warning for a role sharing another role's username")
	}
	if w := strings.Join(resp.Warnings, " "); !strings.Contains(w, "first") || strings.Contains(w, "pw-") {
		t.Fatalf("warning %q does not name the other role, or holds a password", w)
	}
	if storedRole(t, e.storage, "second") == nil {
		t.Fatal("the role sharing a username was not stored")
	}
	// Updating a role does not warn about itself.
	if resp := e.mustWrite("roles/alone", map[string]any{"ttl": "1h"}); resp != nil && len(resp.Warnings) > 0 {
		t.Fatalf("an update warned %v", resp.Warnings)
	}

	e.mustWrite("roles/cc1", map[string]any{"grant_type": "client_credentials", "client_id": "same-client", "client_secret": "cs-1"})
	resp = e.mustWrite("roles/cc2", map[string]any{"grant_type": "client_credentials", "client_id": "same-client", "client_secret": "cs-2"})
	if resp == nil || !strings.Contains(strings.Join(resp.Warnings, " "), "cc1") {
		t.Fatal("no warning naming the role sharing a client_id")
	}
}

func TestRoleListAndReadShowNoSecrets(t *testing.T) {
	e := newTestEnv(t, nil, nil)
	e.addRole("b-app", "svc@example.com", "PW-list-secret")
	e.mustWrite("roles/a-cc", map[string]any{"grant_type": "client_credentials", "client_id": "cid", "client_secret": "CS-list-secret"})
	resp, err := e.do(logical.ListOperation, "roles/", nil)
	if err != nil || resp == nil {
		t.Fatalf("list: %v", err)
	}
	keys, _ := resp.Data["keys"].([]string)
	sort.Strings(keys)
	if !reflect.DeepEqual(keys, []string{"a-cc", "b-app"}) {
		t.Fatalf("list = %v", keys)
	}
	for _, path := range []string{"roles/a-cc", "roles/b-app"} {
		r := e.mustRead(path)
		for _, k := range []string{"password", "client_secret"} {
			if _, ok := r.Data[k]; ok {
				t.Errorf("%s shows %s", path, k)
			}
		}
	}
}

// The framework's field validation echoes a value it cannot convert: a password or
// client_secret sent as a list or an object must be refused without it.
func TestRoleNonStringSecretIsRefusedWithoutEchoingIt(t *testing.T) {
	const secret = "PW-nonstring-4Gh7"
	cases := []map[string]any{
		{"username": "svc@example.com", "password": []any{secret}},
		{"username": "svc@example.com", "password": []any{secret, "x"}},
		{"username": "svc@example.com", "password": map[string]any{"v": secret}},
		{"grant_type": "client_credentials", "client_id": "cid", "client_secret": []any{secret, "y"}},
	}
	for i, data := range cases {
		e := newTestEnv(t, nil, nil)
		e.addRole("app", "svc@example.com", "pw-good")
		before := storageSnapshot(t, e.storage)
		for _, path := range []string{"roles/app", "roles/new"} {
			_, _, existErr := e.b.HandleExistenceCheck(context.Background(), &logical.Request{
				Operation: logical.UpdateOperation, Path: path, Data: data, Storage: e.storage,
			})
			if strings.Contains(errText(existErr), secret) {
				t.Errorf("case %d %s: the existence check error echoes the secret", i, path)
			}
			resp, err := e.write(path, data)
			msg := errorMessage(resp, err)
			if msg == "" {
				t.Errorf("case %d %s: a non-string secret was accepted (err=%v)", i, path, err)
			}
			if strings.Contains(msg, secret) || strings.Contains(errText(err), secret) {
				t.Errorf("case %d %s: the error echoes the secret", i, path)
			}
			if !strings.Contains(msg, "password") && !strings.Contains(msg, "client_secret") {
				t.Errorf("case %d %s: message %q does not name the field", i, path, msg)
			}
		}
		assertStorageUnchanged(t, e.storage, before)
		if strings.Contains(e.logs.String(), secret) {
			t.Errorf("case %d: the secret appears in the log", i)
		}
	}
	// Scalars the framework converts to a string are still accepted.
	e := newTestEnv(t, nil, nil)
	e.mustWrite("roles/num", map[string]any{"username": "svc@example.com", "password": json.Number("12345678")})
	if r := storedRole(t, e.storage, "num"); r == nil || r.Password != "12345678" {
		t.Fatal("a numeric password was not stored as its string")
	}
}

// The shared-username warning follows the index as roles change user or go, and a
// role write reads no other role (a mount of 10,000 roles stays cheap to write).
func TestRoleSharingIndexFollowsUsernameChangesAndDeletesWithoutReadingOtherRoles(t *testing.T) {
	s := newFaultyStorage()
	e := newTestEnv(t, s, nil)
	for _, n := range []string{"r1", "r2", "r3", "r4", "r5"} {
		e.addRole(n, n+"@example.com", "pw")
	}
	e.addRole("a", "shared@example.com", "pw")

	gets := s.getCount()
	resp := e.mustWrite("roles/b", map[string]any{"username": "shared@example.com", "password": "pw"})
	if resp == nil || len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "a") {
		t.Fatalf("writing b as a's user: warnings = %v, want one naming role a", resp)
	}
	if n := s.getCount() - gets; n > 2 {
		t.Fatalf("a role write made %d storage reads, want at most 2 (its own role and existence check)", n)
	}

	e.mustWrite("roles/b", map[string]any{"username": "other@example.com"})
	if resp := e.mustWrite("roles/a", map[string]any{"password": "pw2"}); resp != nil && len(resp.Warnings) > 0 {
		t.Fatalf("after b changed user, writing a warns: %v", resp.Warnings)
	}
	e.mustWrite("roles/b", map[string]any{"username": "shared@example.com"})
	if _, err := e.do(logical.DeleteOperation, "roles/b", nil); err != nil {
		t.Fatal(err)
	}
	if resp := e.mustWrite("roles/a", map[string]any{"password": "pw3"}); resp != nil && len(resp.Warnings) > 0 {
		t.Fatalf("after b was deleted, writing a warns: %v", resp.Warnings)
	}
}

// Row 10 of the issue: a role delete that fails half-way is finished by the
// operator's retry: no token state and no principal index entry outlive the
// role, whichever storage operation failed.
func TestRoleDeleteRetriedAfterAFailureFinishesTheJob(t *testing.T) {
	for fail := 1; ; fail++ {
		s := &sweepStorage{Storage: &logical.InmemStorage{}}
		e, _ := newAppEnv(t, s, issuing(24*time.Hour), "pw-delete")
		e.mustRead("creds/app")
		s.failOp(fail)
		_, err := e.do(logical.DeleteOperation, "roles/app", nil)
		if !s.failed() {
			if err != nil {
				t.Fatalf("delete with no fault: %v", err)
			}
			break // every operation of the delete has failed once
		}
		if err == nil {
			continue // a failed read the delete did not need
		}
		if strings.Contains(err.Error(), "pw-delete") {
			t.Fatal("the error holds the password")
		}
		if resp, err := e.do(logical.DeleteOperation, "roles/app", nil); err != nil || (resp != nil && resp.IsError()) {
			t.Fatalf("operation %d failed; the retried delete: %v %v", fail, err, respErr(resp))
		}
		for _, prefix := range []string{rolesStoragePrefix, tokensStoragePrefix, principalsStoragePrefix} {
			if keys := storageKeys(t, s, prefix); len(keys) > 0 {
				t.Fatalf("operation %d failed; after the retried delete %v remain", fail, keys)
			}
		}
	}
}

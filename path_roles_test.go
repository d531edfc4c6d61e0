package iadvize

import (
	"context"
	"encoding/json"
	"net/http"
	"reflect"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// checkingUpstream issues a token only for the expected password (password grant)
// or client secret (client_credentials), and answers 401 invalid_grant otherwise.
func checkingUpstream(t *testing.T, password, clientSecret string) *upstream {
	issue := issuing(24 * time.Hour)
	return newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		ok := false
		switch r.PostForm.Get("grant_type") {
		case "password":
			ok = r.PostForm.Get("password") == password
		case "client_credentials":
			_, secret, _ := r.BasicAuth()
			ok = secret == clientSecret
		}
		if !ok {
			jsonAnswer(http.StatusUnauthorized, map[string]any{"error": "invalid_grant"})(w, r)
			return
		}
		issue(w, r)
	})
}

// errorMessage is the message of a 400 answer, or "" when the answer is no 400.
// refusedWrite writes data to path and fails the test unless the write is
// refused with a 400 whose message names names, storage left unchanged. It
// returns the message.
func (e *testEnv) refusedWrite(path string, data map[string]any, names string) string {
	t := e.t
	t.Helper()
	before := storageSnapshot(t, e.storage)
	resp, err := e.write(path, data)
	if err != nil {
		t.Fatalf("error %v, want a 400 response", err)
	}
	msg := errorMessage(resp, err)
	if msg == "" {
		t.Fatal("bad input accepted")
	}
	if !strings.Contains(msg, names) {
		t.Errorf("message %q does not name %q", msg, names)
	}
	assertStorageUnchanged(t, e.storage, before)
	return msg
}

func errorMessage(resp *logical.Response, err error) string {
	if err != nil || resp == nil || !resp.IsError() {
		return ""
	}
	return resp.Error().Error()
}

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

// secretSink gathers everything a caller or an operator can see: responses,
// warnings, errors.
type secretSink struct{ b strings.Builder }

func (s *secretSink) add(resp *logical.Response, err error) {
	if err != nil {
		s.b.WriteString(err.Error())
		s.b.WriteByte('\n')
	}
	if resp != nil {
		raw, jerr := json.Marshal(resp)
		if jerr != nil {
			s.b.WriteString("unencodable response")
		}
		s.b.Write(raw)
		s.b.WriteString(strings.Join(resp.Warnings, "\n"))
		if resp.IsError() {
			s.b.WriteString(resp.Error().Error())
		}
		s.b.WriteByte('\n')
	}
}

func TestSecretsNeverAppearInResponsesErrorsWarningsOrLogs(t *testing.T) {
	const (
		pwGood    = "PW-good-7Hq2"
		pwWrong   = "PW-wrong-9Zx4"
		pwBoom    = "PW-boom-3Kd8"
		csGood    = "CS-good-5Mv1"
		csWrong   = "CS-wrong-2Lp6"
		pwNew     = "PW-new-8Rt3"
		tokPrefix = "AT-x7c2-"
	)
	secrets := []string{pwGood, pwWrong, pwBoom, csGood, csWrong, pwNew}
	var n atomic.Int64
	issue := func(w http.ResponseWriter, lifetime int) {
		jsonAnswer(200, map[string]any{
			"access_token": tokPrefix + itoa(n.Add(1)), "expires_in": lifetime, "token_type": "Bearer",
		})(w, nil)
	}
	u := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/_authenticated" {
			jsonAnswer(200, map[string]any{"authenticated": true})(w, r)
			return
		}
		_ = r.ParseForm()
		f := r.PostForm
		// Upstream that echoes what it was sent, the worst case for the plugin.
		if f.Get("grant_type") == "client_credentials" {
			id, secret, _ := r.BasicAuth()
			if secret != csGood {
				jsonAnswer(http.StatusUnauthorized, map[string]any{
					"error": "invalid_client", "error_description": "bad secret " + secret + " for " + id,
				})(w, r)
				return
			}
			issue(w, 3600)
			return
		}
		switch f.Get("password") {
		case pwGood, pwNew:
			issue(w, 86400)
		case pwBoom:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte(`{"error":"server_error","error_description":"crashed on password ` + f.Get("password") + `"}`))
		default:
			jsonAnswer(http.StatusUnauthorized, map[string]any{
				"error": "invalid_grant", "error_description": "wrong password " + f.Get("password") + " for " + f.Get("username"),
			})(w, r)
		}
	})
	e := newTestEnv(t, nil, nil)
	sink := &secretSink{}  // everything but the token answers
	creds := &secretSink{} // creds/ and static-creds/ answers, which carry the token
	wr := func(path string, data map[string]any) {
		sink.add(e.write(path, data))
	}
	rd := func(path string) {
		resp, err := e.read(path)
		if strings.HasPrefix(path, "creds/") || strings.HasPrefix(path, "static-creds/") {
			if resp != nil && !resp.IsError() {
				d := map[string]any{}
				for k, v := range resp.Data {
					if k != "access_token" {
						d[k] = v
					}
				}
				sink.add(&logical.Response{Data: d, Warnings: resp.Warnings}, err)
				creds.add(resp, err)
				return
			}
		}
		sink.add(resp, err)
	}

	// Config, roles, lists.
	e.configure(u, nil)
	rd("config")
	wr("roles/good", map[string]any{"username": "good@example.com", "password": pwGood, "scope": "all"})
	wr("roles/wrong", map[string]any{"username": "wrong@example.com", "password": pwWrong})
	wr("roles/boom", map[string]any{"username": "boom@example.com", "password": pwBoom})
	wr("roles/shared", map[string]any{"username": "good@example.com", "password": pwGood}) // warning
	wr("roles/cc", map[string]any{"grant_type": "client_credentials", "client_id": "cid", "client_secret": csGood})
	wr("roles/ccwrong", map[string]any{"grant_type": "client_credentials", "client_id": "cid2", "client_secret": csWrong})
	sink.add(e.do(logical.ListOperation, "roles/", nil))
	for _, name := range []string{"good", "wrong", "boom", "shared", "cc", "ccwrong", "ghost"} {
		rd("roles/" + name)
	}

	// Bad input that carries a secret.
	wr("roles/typo", map[string]any{"username": "typo@example.com", "pasword": pwNew})
	wr("roles/good", map[string]any{"pasword": pwNew})
	wr("roles/good", map[string]any{"password": pwNew, "ttl": "2h", "max_ttl": "1h"})
	wr("roles/good", map[string]any{"password": pwNew, "client_id": "x"})
	wr("roles/Bad Name", map[string]any{"username": "u", "password": pwNew})
	wr("roles/cc", map[string]any{"client_secret": csWrong, "username": "u"})
	wr("roles/good", map[string]any{"password": pwNew, "ttl": "forever"})
	wr("roles/good", map[string]any{"password": []any{pwNew}})
	wr("roles/good", map[string]any{"password": map[string]any{"v": pwNew}})
	wr("roles/cc", map[string]any{"client_secret": []any{csWrong}})
	wr("config", map[string]any{"token_url": "http://svc:" + pwNew + "@example.com/token"})
	sink.add(e.do(logical.HelpOperation, "roles/good", nil))

	// Reads, failures and retries.
	for range 2 {
		for _, name := range []string{"good", "wrong", "boom", "shared", "cc", "ccwrong", "ghost"} {
			rd("creds/" + name)
			rd("static-creds/" + name)
			rd("status/" + name)
			rd("verify/" + name)
		}
	}
	for _, name := range []string{"good", "wrong", "boom", "ccwrong"} {
		sink.add(e.do(logical.UpdateOperation, "rotate-role/"+name, nil))
	}
	e.clock.Advance(10 * time.Minute)
	rd("creds/boom")
	wr("roles/wrong", map[string]any{"password": pwNew}) // fixes it
	rd("creds/wrong")
	e.clock.Advance(23*time.Hour + time.Minute) // refresh window
	rd("creds/good")
	rd("static-creds/cc")
	sink.add(e.do(logical.DeleteOperation, "roles/shared", nil))
	rd("creds/shared")

	seen := sink.b.String()
	logs := e.logs.String()
	for _, s := range secrets {
		if strings.Contains(seen, s) {
			t.Errorf("a password or client secret (%s...) appears in a response, error or warning", s[:7])
		}
		if strings.Contains(creds.b.String(), s) {
			t.Errorf("a password or client secret (%s...) appears in a creds answer", s[:7])
		}
		if strings.Contains(logs, s) {
			t.Errorf("a password or client secret (%s...) appears in the log", s[:7])
		}
	}
	if strings.Contains(seen, tokPrefix) {
		t.Error("an access token appears outside the access_token field of creds/ and static-creds/")
	}
	if strings.Contains(logs, tokPrefix) {
		t.Error("an access token appears in the log")
	}
	// Sanity: the drive did serve tokens and did log failures.
	if !strings.Contains(creds.b.String(), tokPrefix) {
		t.Fatal("no token was ever served: the test drove nothing")
	}
	if !strings.Contains(logs, "login failed") {
		t.Fatal("no login failure was logged: the test drove no failure")
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

// Row 11 of the issue: Svc@Example.com and svc@example.com (or one name in NFC
// and NFD) are one user to upstream: the second role warns, and both share one
// login budget.
func TestPrincipalsFoldCaseAndUnicodeForm(t *testing.T) {
	for _, pair := range [][2]string{
		{"Svc@Example.com", "svc@example.com"},
		{"jos\u00e9@example.com", "jose\u0301@example.com"}, // é precomposed (NFC) and decomposed (NFD)
		{"STRASSE@example.com", "stra\u00dfe@example.com"},
	} {
		t.Run(pair[1], func(t *testing.T) {
			u := newUpstream(t, issuing(24*time.Hour))
			e := newTestEnv(t, nil, nil)
			e.configure(u, map[string]any{"user_logins_per_minute": 1})
			e.addRole("first", pair[0], "pw-1")
			resp := e.mustWrite("roles/second", map[string]any{"username": pair[1], "password": "pw-2"})
			if resp == nil || len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "first") {
				t.Fatalf("warnings %v, want one naming role first", resp)
			}
			e.mustRead("creds/first")
			if _, err := e.read("creds/second"); codedStatus(err) != http.StatusTooManyRequests {
				t.Fatalf("the second spelling's login: %v, want 429 (one budget for one user)", err)
			}
			u.wantCount(t, 1, "")
		})
	}
}

// storageKeys lists every key under prefix, recursively.
func storageKeys(t *testing.T, s logical.Storage, prefix string) []string {
	t.Helper()
	keys, err := logical.CollectKeysWithPrefix(t.Context(), s, prefix)
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

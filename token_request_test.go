package iadvize

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestPasswordGrantSendsFormWithUsernamePasswordAndGrantType(t *testing.T) {
	for _, scope := range []string{"", "read write"} {
		t.Run("scope="+scope, func(t *testing.T) {
			rec := &recorder{}
			u := newUpstream(t, rec.wrap(issuing(24*time.Hour)))
			e := newTestEnv(t, nil, nil)
			e.configure(u, nil)
			data := map[string]any{"username": "svc@example.com", "password": "p&ss=w rd+%"}
			if scope != "" {
				data["scope"] = scope
			}
			e.mustWrite("roles/app", data)
			e.mustRead("creds/app")

			got := rec.last(t)
			if got.method != http.MethodPost || got.path != "/oauth2/token" {
				t.Errorf("request %s %s, want POST /oauth2/token", got.method, got.path)
			}
			if !strings.HasPrefix(got.contentType, "application/x-www-form-urlencoded") {
				t.Errorf("Content-Type %q, want a form", got.contentType)
			}
			if got.auth != "" {
				t.Error("the password grant sent an Authorization header")
			}
			if got.form.Get("grant_type") != "password" {
				t.Errorf("grant_type = %q, want password", got.form.Get("grant_type"))
			}
			if got.form.Get("username") != "svc@example.com" {
				t.Errorf("username = %q", got.form.Get("username"))
			}
			if got.form.Get("password") != "p&ss=w rd+%" {
				t.Error("upstream did not receive the password intact")
			}
			if _, ok := got.form["scope"]; ok != (scope != "") || got.form.Get("scope") != scope {
				t.Errorf("scope sent=%v value=%q, want sent only when set (%q)", ok, got.form.Get("scope"), scope)
			}
			for _, k := range []string{"client_id", "client_secret"} {
				if _, ok := got.form[k]; ok {
					t.Errorf("the password grant sent %s", k)
				}
			}
		})
	}
}

func TestClientCredentialsGrantSendsBasicAuthAndNoUserPassword(t *testing.T) {
	for _, scope := range []string{"", "catalog:read"} {
		t.Run("scope="+scope, func(t *testing.T) {
			rec := &recorder{}
			u := newUpstream(t, rec.wrap(issuing(time.Hour)))
			e := newTestEnv(t, nil, nil)
			e.configure(u, nil)
			data := map[string]any{"grant_type": "client_credentials", "client_id": "iceye-client", "client_secret": "cs-Secret123"}
			if scope != "" {
				data["scope"] = scope
			}
			e.mustWrite("roles/iceye", data)
			e.mustRead("creds/iceye")

			got := rec.last(t)
			want := "Basic " + base64.StdEncoding.EncodeToString([]byte("iceye-client:cs-Secret123"))
			if got.auth != want {
				t.Error("Authorization is not HTTP Basic with client_id:client_secret")
			}
			if got.form.Get("grant_type") != "client_credentials" {
				t.Errorf("grant_type = %q, want client_credentials", got.form.Get("grant_type"))
			}
			for _, k := range []string{"username", "password", "client_secret"} {
				if _, ok := got.form[k]; ok {
					t.Errorf("the client_credentials grant sent %s in the body", k)
				}
			}
			if _, ok := got.form["scope"]; ok != (scope != "") || got.form.Get("scope") != scope {
				t.Errorf("scope sent=%v value=%q, want sent only when set (%q)", ok, got.form.Get("scope"), scope)
			}
		})
	}
}

// TestClientAuthenticationStyles: client_auth picks how the client secret
// travels; each style works against the servers that decode it, whatever the
// secret holds.
func TestClientAuthenticationStyles(t *testing.T) {
	const id = "iceye-client"
	for _, secret := range []string{"s3cr/t+K3y=", "a:b c%2F&d=é", "AlphaNum3ric"} {
		cases := []struct {
			clientAuth string
			server     string
			served     bool
		}{
			{"", "raw", true}, // the default is basic
			{"basic", "raw", true},
			{"basic_urlencoded", "rfc", true},
			{"post", "rfc", true},
			// Where the two kinds of servers differ: raw Basic against an RFC
			// server works only when nothing needs encoding, and the other way round.
			{"basic", "rfc", secret == "AlphaNum3ric"},
			{"basic_urlencoded", "raw", secret == "AlphaNum3ric"},
		}
		for _, tc := range cases {
			t.Run(tc.clientAuth+"/"+tc.server+"/"+url.PathEscape(secret), func(t *testing.T) {
				rec := &recorder{}
				u := newUpstream(t, rec.wrap(clientCheckingServer(tc.server, id, secret, issuing(time.Hour))))
				e := newTestEnv(t, nil, nil)
				cfg := map[string]any{}
				if tc.clientAuth != "" {
					cfg["client_auth"] = tc.clientAuth
				}
				e.configure(u, cfg)
				e.mustWrite("roles/iceye", map[string]any{
					"grant_type": "client_credentials", "client_id": id, "client_secret": secret,
				})
				_, err := e.read("creds/iceye")
				if served := err == nil; served != tc.served {
					t.Fatalf("served = %v (%v), want %v", served, err, tc.served)
				}
				got := rec.last(t)
				switch tc.clientAuth {
				case "", "basic":
					if got.auth != "Basic "+base64.StdEncoding.EncodeToString([]byte(id+":"+secret)) {
						t.Error("Authorization is not Basic base64(client_id:client_secret) as written")
					}
				case "basic_urlencoded":
					want := base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id) + ":" + url.QueryEscape(secret)))
					if got.auth != "Basic "+want {
						t.Error("Authorization is not Basic of the form-encoded client_id and client_secret")
					}
				case "post":
					if got.auth != "" || got.form.Get("client_id") != id || got.form.Get("client_secret") != secret {
						t.Error("post did not send client_id and client_secret in the body alone")
					}
				}
				if tc.clientAuth != "post" {
					if _, ok := got.form["client_secret"]; ok {
						t.Error("the client secret was sent in the body as well")
					}
				}
			})
		}
	}
}

// TestPasswordGrantWithClient: a password role may hold a client (RFC 6749
// §4.3.2): a client_id alone goes in the body as a public client; with a secret,
// the client authenticates as client_auth says. The username and password are
// sent either way.
func TestPasswordGrantWithClient(t *testing.T) {
	cases := []struct {
		name       string
		clientAuth string // the mount's
		role       map[string]any
		check      func(t *testing.T, got received)
	}{
		{"public client", "basic", map[string]any{"client_id": "web-app"}, func(t *testing.T, got received) {
			if got.auth != "" || got.form.Get("client_id") != "web-app" {
				t.Error("a client_id without a secret must go in the body, with no Authorization")
			}
			if _, ok := got.form["client_secret"]; ok {
				t.Error("client_secret sent for a public client")
			}
		}},
		{"confidential client, basic", "basic", map[string]any{"client_id": "web-app", "client_secret": "cs/+=:x"}, func(t *testing.T, got received) {
			if got.auth != "Basic "+base64.StdEncoding.EncodeToString([]byte("web-app:cs/+=:x")) {
				t.Error("Authorization is not Basic of the client as written")
			}
			if _, ok := got.form["client_id"]; ok {
				t.Error("client_id sent in the body too")
			}
		}},
		{"confidential client, post", "post", map[string]any{"client_id": "web-app", "client_secret": "cs/+=:x"}, func(t *testing.T, got received) {
			if got.auth != "" || got.form.Get("client_id") != "web-app" || got.form.Get("client_secret") != "cs/+=:x" {
				t.Error("post did not send the client in the body")
			}
		}},
		{"no client", "post", map[string]any{}, func(t *testing.T, got received) {
			if got.auth != "" {
				t.Error("Authorization sent without a client")
			}
			for _, k := range []string{"client_id", "client_secret"} {
				if _, ok := got.form[k]; ok {
					t.Errorf("%s sent without a client", k)
				}
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			u := newUpstream(t, rec.wrap(issuing(24*time.Hour)))
			e := newTestEnv(t, nil, nil)
			e.configure(u, map[string]any{"client_auth": tc.clientAuth})
			data := map[string]any{"username": "svc@example.com", "password": "pw-Secret-42"}
			for k, v := range tc.role {
				data[k] = v
			}
			e.mustWrite("roles/app", data)
			e.mustRead("creds/app")
			got := rec.last(t)
			if got.form.Get("grant_type") != "password" || got.form.Get("username") != "svc@example.com" ||
				got.form.Get("password") != "pw-Secret-42" {
				t.Error("the password grant's fields were not sent intact")
			}
			tc.check(t, got)

			read := e.mustRead("roles/app").Data
			if _, ok := read["client_secret"]; ok {
				t.Fatal("a role read shows client_secret")
			}
			if read["client_id"] != tc.role["client_id"] {
				t.Errorf("role read client_id = %v, want %v", read["client_id"], tc.role["client_id"])
			}
		})
	}
}

// TestColonInClientIDWithRawBasic: raw Basic cannot carry a client_id holding
// ':' (RFC 7617 §2), so no request is sent and the role says why; the styles that
// encode it work.
func TestColonInClientIDWithRawBasic(t *testing.T) {
	const id, secret = "tenant:app", "cs-Secret-1"
	u := newUpstream(t, clientCheckingServer("rfc", id, secret, issuing(time.Hour)))
	e := newTestEnv(t, nil, nil)
	e.configure(u, nil)
	e.mustWrite("roles/app", map[string]any{"grant_type": "client_credentials", "client_id": id, "client_secret": secret})
	_, err := e.read("creds/app")
	if err == nil || !strings.Contains(err.Error(), "client_auth") || u.count() != 0 {
		t.Fatalf("raw Basic with ':' in client_id: err=%v requests=%d, want an error naming client_auth and no request", err, u.count())
	}
	e.mustWrite("config", map[string]any{"client_auth": "basic_urlencoded"})
	e.mustRead("creds/app")
	u.wantCount(t, 1, "")
}

// TestRejectedCredentialsRetriedAfterClientAuthChange: a rejection reached with
// one token URL or client authentication does not stop logins under another,
// so fixing client_auth fixes the roles it broke; with the same settings the
// verdict stands.
func TestRejectedCredentialsRetriedAfterClientAuthChange(t *testing.T) {
	const id, secret = "iceye-client", "s3cr/t+K3y="
	u := newUpstream(t, clientCheckingServer("raw", id, secret, issuing(time.Hour)))
	e := newTestEnv(t, nil, nil)
	e.configure(u, map[string]any{"client_auth": "basic_urlencoded"})
	e.mustWrite("roles/iceye", map[string]any{"grant_type": "client_credentials", "client_id": id, "client_secret": secret})
	if _, err := e.read("creds/iceye"); err == nil {
		t.Fatal("form-encoded Basic accepted by a raw server")
	}
	if st := e.mustRead("status/iceye").Data; st["credentials_rejected"] != true {
		t.Fatalf("status after the rejection: credentials_rejected = %v", st["credentials_rejected"])
	}
	e.mustWrite("config", map[string]any{"request_timeout": "5s"}) // not a login setting
	if _, err := e.read("creds/iceye"); err == nil || u.count() != 1 {
		t.Fatalf("after an unrelated config change: err=%v requests=%d, want still rejected with no request", err, u.count())
	}
	e.mustWrite("config", map[string]any{"client_auth": "basic"})
	if st := e.mustRead("status/iceye").Data; st["credentials_rejected"] != false {
		t.Errorf("status after the client_auth change: credentials_rejected = %v, want false", st["credentials_rejected"])
	}
	e.mustRead("creds/iceye")
	u.wantCount(t, 2, "")

	// A role without a client secret sends the same request whatever
	// client_auth says: changing it does not lift that role's rejection.
	e2, rejecting := newAppEnv(t, nil, rawAnswer(401, jsonType, nil, `{"error":"invalid_grant"}`), "pw-Wrong-1")
	_, _ = e2.read("creds/app")
	for _, style := range []string{"post", "basic_urlencoded", "basic"} {
		e2.mustWrite("config", map[string]any{"client_auth": style})
		if _, err := e2.read("creds/app"); err == nil {
			t.Fatal("a rejected role was served")
		}
	}
	if rejecting.count() != 1 {
		t.Fatalf("logins of a password-only role after client_auth changes = %d, want 1", rejecting.count())
	}
}

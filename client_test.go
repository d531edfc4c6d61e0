package iadvize

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// received is what the upstream saw of one token request.
type received struct {
	method      string
	path        string
	contentType string
	auth        string
	form        url.Values
}

// recorder wraps a handler and keeps what each request carried.
type recorder struct {
	mu   sync.Mutex
	reqs []received
}

func (rec *recorder) wrap(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		rec.mu.Lock()
		rec.reqs = append(rec.reqs, received{
			method:      r.Method,
			path:        r.URL.Path,
			contentType: r.Header.Get("Content-Type"),
			auth:        r.Header.Get("Authorization"),
			form:        r.PostForm,
		})
		rec.mu.Unlock()
		next(w, r)
	}
}

func (rec *recorder) last(t *testing.T) received {
	t.Helper()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.reqs) == 0 {
		t.Fatal("upstream received no request")
	}
	return rec.reqs[len(rec.reqs)-1]
}

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

func jsonAnswer(status int, body any) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(body)
	}
}

func TestMalformedUpstreamAnswersAre502NamingRoleAndCauseAndNeverCached(t *testing.T) {
	const leaked = "tok-must-not-be-cached"
	var redirectHits atomic.Int64
	redirectTarget := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		redirectHits.Add(1)
		issuing(24*time.Hour)(w, r)
	}))
	t.Cleanup(redirectTarget.Close)

	big := map[string]any{
		"access_token": leaked, "expires_in": 86400, "token_type": "Bearer",
		"pad": strings.Repeat("x", 2<<20),
	}
	cases := []struct {
		name    string
		handler http.HandlerFunc
		timeout bool
		cause   string
	}{
		{name: "HTML 502", cause: "HTTP 502", handler: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusBadGateway)
			_, _ = w.Write([]byte("<html><body>Bad Gateway</body></html>"))
		}},
		{name: "HTML 200", cause: "malformed", handler: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			_, _ = w.Write([]byte("<html><body>Maintenance</body></html>"))
		}},
		{name: "no access_token", cause: "access_token",
			handler: jsonAnswer(200, map[string]any{"expires_in": 86400, "token_type": "Bearer"})},
		{name: "empty access_token", cause: "access_token",
			handler: jsonAnswer(200, map[string]any{"access_token": "", "expires_in": 86400})},
		{name: "expires_in missing", cause: "expires_in",
			handler: jsonAnswer(200, map[string]any{"access_token": leaked, "token_type": "Bearer"})},
		{name: "expires_in zero", cause: "expires_in",
			handler: jsonAnswer(200, map[string]any{"access_token": leaked, "expires_in": 0})},
		{name: "expires_in negative", cause: "expires_in",
			handler: jsonAnswer(200, map[string]any{"access_token": leaked, "expires_in": -60})},
		{name: "expires_in not numeric", cause: "expires_in",
			handler: jsonAnswer(200, map[string]any{"access_token": leaked, "expires_in": "a day"})},
		{name: "expires_in a boolean", cause: "expires_in",
			handler: jsonAnswer(200, map[string]any{"access_token": leaked, "expires_in": true})},
		{name: "expires_in NaN", cause: "expires_in",
			handler: jsonAnswer(200, map[string]any{"access_token": leaked, "expires_in": "NaN"})},
		{name: "access_token a number", cause: "access_token",
			handler: jsonAnswer(200, map[string]any{"access_token": 12345678, "expires_in": 3600})},
		{name: "JSON array", cause: "malformed", handler: jsonAnswer(200, []any{"access_token", leaked})},
		{name: "expires_in null", cause: "expires_in",
			handler: jsonAnswer(200, map[string]any{"access_token": leaked, "expires_in": nil})},
		{name: "2 MiB body", cause: "1 MiB", handler: jsonAnswer(200, big)},
		{name: "redirect", cause: "redirect", handler: func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, redirectTarget.URL+"/oauth2/token", http.StatusFound)
		}},
		{name: "permanent redirect keeping the body", cause: "redirect", handler: func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, redirectTarget.URL+"/oauth2/token", http.StatusPermanentRedirect)
		}},
		{name: "slower than request_timeout", cause: "request_timeout", timeout: true,
			handler: func(w http.ResponseWriter, r *http.Request) {
				_ = r.ParseForm() // read the body, so a client disconnect cancels r.Context()
				select {
				case <-r.Context().Done():
				case <-time.After(waitFor):
				}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := newUpstream(t, tc.handler)
			e := newTestEnv(t, nil, nil)
			extra := map[string]any{}
			if tc.timeout {
				extra["request_timeout"] = "1s"
			}
			e.configure(u, extra)
			e.addRole("app", "svc@example.com", "pw-Secret-42")
			hitsBefore := redirectHits.Load()

			start := time.Now()
			resp, err := e.read("creds/app")
			if tc.timeout && time.Since(start) > 4*time.Second {
				t.Errorf("the read took %s with request_timeout 1s", time.Since(start))
			}
			if err == nil {
				t.Fatalf("malformed answer accepted (resp error: %v)", respErr(resp))
			}
			if st := codedStatus(err); st != http.StatusBadGateway {
				t.Fatalf("status = %d (%v), want 502", st, err)
			}
			msg := err.Error()
			if !strings.Contains(msg, `"app"`) {
				t.Errorf("message %q does not name the role", msg)
			}
			if !strings.Contains(msg, tc.cause) {
				t.Errorf("message %q does not name the cause (%q)", msg, tc.cause)
			}
			for _, secret := range []string{"pw-Secret-42", leaked} {
				if strings.Contains(msg, secret) || strings.Contains(e.logs.String(), secret) {
					t.Fatal("a secret or the refused token appears in the error or the log")
				}
			}
			if n := redirectHits.Load() - hitsBefore; n != 0 {
				t.Fatalf("the redirect target received %d requests: redirects must not be followed", n)
			}
			u.wantCount(t, 1, "")
			if c := e.b.cache.role("app"); c != nil && c.state.AccessToken != "" {
				t.Fatal("a refused answer was cached in memory")
			}
			if st := storedToken(t, e.storage, "app"); st != nil && st.AccessToken != "" {
				t.Fatal("a refused answer was cached in storage")
			}
			for k, v := range storageSnapshot(t, e.storage) {
				if strings.Contains(v, leaked) {
					t.Fatalf("storage key %s holds the refused token", k)
				}
			}

			// Backing off (README, "When the plugin logs in": malformed answers back off): the next read does not call upstream.
			_, err = e.read("static-creds/app")
			if err == nil || u.count() != 1 {
				t.Fatalf("read right after the failure: err=%v requests=%d, want an error and no new request", err, u.count())
			}
			if st := codedStatus(err); st != http.StatusTooManyRequests {
				t.Errorf("read during backoff: status %d, want 429", st)
			}
		})
	}
}

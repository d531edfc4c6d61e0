package fakeiadvize

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeclock"
)

// Test credentials. They are fake, but the tests still never print them (nor
// any access token): failure messages show statuses and error codes only.
const (
	user     = "alice"
	password = "pa:ss word/+&="
	clientID = "my client"
	secret   = "s3cr:et/+&=%"
)

// newFake returns a fake on a test clock with one user and one client.
func newFake(t *testing.T, opts Options) (*Server, *fakeclock.Clock) {
	t.Helper()
	clock := fakeclock.New()
	if opts.Now == nil {
		opts.Now = clock.Now
	}
	f := New(opts)
	f.AddUser(user, password)
	f.AddClient(clientID, secret)
	t.Cleanup(f.Close)
	t.Cleanup(func() { checkInvariant(t, f.Stats()) })
	return f, clock
}

// checkInvariant checks that every login attempt has exactly one outcome.
func checkInvariant(t *testing.T, st Stats) {
	t.Helper()
	sum := st.LoginSuccesses + st.RateLimited + st.InjectedRateLimited +
		st.FailedCredentials + st.BadRequests + st.InjectedFaults + st.Hanging
	if sum != st.LoginAttempts {
		t.Errorf("outcome counters sum to %d, want login_attempts %d (stats %+v)", sum, st.LoginAttempts, st)
	}
}

func passwordForm(u, p string) url.Values {
	return url.Values{"grant_type": {"password"}, "username": {u}, "password": {p}}
}

func tokenRequestFor(form url.Values) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/oauth2/token", strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return r
}

// basicAuth is the header golang.org/x/oauth2 sends, as RFC 6749 §2.3.1
// says: both halves query-escaped, then joined and base64-encoded.
func basicAuth(id, secret string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id)+":"+url.QueryEscape(secret)))
}

// rawBasic is the header of RFC 7617 alone: both halves as written.
func rawBasic(id, secret string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(id+":"+secret))
}

func serve(f *Server, r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	f.ServeHTTP(w, r)
	return w
}

// login makes a password-grant request from ip.
func login(f *Server, u, p, ip string) *httptest.ResponseRecorder {
	r := tokenRequestFor(passwordForm(u, p))
	r.RemoteAddr = ip + ":4242"
	return serve(f, r)
}

// tokenBody is a decoded success answer.
type tokenBody struct {
	AccessToken  *string `json:"access_token"`
	ExpiresIn    *int64  `json:"expires_in"`
	TokenType    string  `json:"token_type"`
	RefreshToken string  `json:"refresh_token"`
}

func decodeToken(t *testing.T, w *httptest.ResponseRecorder) tokenBody {
	t.Helper()
	var b tokenBody
	if err := json.Unmarshal(w.Body.Bytes(), &b); err != nil {
		t.Fatalf("token answer is not JSON: %v", err) // the error quotes no more than a byte
	}
	return b
}

func decodeError(t *testing.T, w *httptest.ResponseRecorder) oauthError {
	t.Helper()
	var e oauthError
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil {
		t.Fatalf("error answer is not JSON: %v", err)
	}
	return e
}

// verify calls /_authenticated with tok and returns the status.
func verify(f *Server, tok string) int {
	r := httptest.NewRequest(http.MethodGet, "/_authenticated", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	return serve(f, r).Code
}

func TestTokenEndpoint(t *testing.T) {
	tests := []struct {
		name      string
		form      url.Values
		basic     string // Authorization header
		method    string
		wantCode  int
		wantError string // OAuth2 error code, "" for success
		wantDesc  string
		// which counter the attempt lands in
		wantOutcome func(Stats) int
		wantUser    string // key of UserAttempts, "" for none
		// RFC 6749 §5.2: a failed Basic client authentication gets a challenge
		wantBasicChallenge bool
		mode               BasicAuthMode // "" for the default, raw
		requireClient      bool
		// what Stats says of the client authentication (defaults: none, no client_id in the form)
		wantAuth     string
		wantClientID string
		wantInForm   bool
	}{
		{
			name: "password grant", form: passwordForm(user, password),
			wantCode: 200, wantOutcome: func(s Stats) int { return s.LoginSuccesses }, wantUser: user,
		},
		{
			name:     "password grant with scope",
			form:     url.Values{"grant_type": {"password"}, "username": {user}, "password": {password}, "scope": {"all"}},
			wantCode: 200, wantOutcome: func(s Stats) int { return s.LoginSuccesses }, wantUser: user,
		},
		{
			name: "wrong password", form: passwordForm(user, "nope"),
			wantCode: 401, wantError: "invalid_grant", wantDesc: "invalid username or password",
			wantOutcome: func(s Stats) int { return s.FailedCredentials }, wantUser: user,
		},
		{
			name: "unknown user", form: passwordForm("bob", password),
			wantCode: 401, wantError: "invalid_grant", wantDesc: "invalid username or password",
			wantOutcome: func(s Stats) int { return s.FailedCredentials }, wantUser: "bob",
		},
		{
			name: "missing password", form: url.Values{"grant_type": {"password"}, "username": {user}},
			wantCode: 400, wantError: "invalid_request",
			wantOutcome: func(s Stats) int { return s.BadRequests }, wantUser: user,
		},
		{
			name: "missing username", form: url.Values{"grant_type": {"password"}, "password": {password}},
			wantCode: 400, wantError: "invalid_request",
			wantOutcome: func(s Stats) int { return s.BadRequests },
		},
		{
			name: "missing grant_type", form: url.Values{"username": {user}, "password": {password}},
			wantCode: 400, wantError: "invalid_request",
			wantOutcome: func(s Stats) int { return s.BadRequests },
		},
		{
			name: "unsupported grant", form: url.Values{"grant_type": {"authorization_code"}, "code": {"x"}},
			wantCode: 400, wantError: "unsupported_grant_type",
			wantOutcome: func(s Stats) int { return s.BadRequests },
		},
		{
			name: "client credentials, raw basic auth (default mode)", form: url.Values{"grant_type": {"client_credentials"}},
			basic:    rawBasic(clientID, secret),
			wantCode: 200, wantOutcome: func(s Stats) int { return s.LoginSuccesses }, wantUser: clientID,
			wantAuth: ClientAuthBasic, wantClientID: clientID,
		},
		{
			name: "raw mode: an escaped basic auth is taken as written", form: url.Values{"grant_type": {"client_credentials"}},
			basic:    basicAuth(clientID, secret),
			wantCode: 401, wantError: "invalid_client", wantBasicChallenge: true,
			wantOutcome: func(s Stats) int { return s.FailedCredentials }, wantUser: "my+client",
			wantAuth: ClientAuthBasic, wantClientID: "my+client",
		},
		{
			name: "raw mode: the right id, its secret escaped", form: url.Values{"grant_type": {"client_credentials"}},
			basic:    rawBasic(clientID, url.QueryEscape(secret)),
			wantCode: 401, wantError: "invalid_client", wantBasicChallenge: true,
			wantOutcome: func(s Stats) int { return s.FailedCredentials }, wantUser: clientID,
			wantAuth: ClientAuthBasic, wantClientID: clientID,
		},
		{
			name: "urlencoded mode: escaped basic auth", form: url.Values{"grant_type": {"client_credentials"}},
			basic: basicAuth(clientID, secret), mode: BasicAuthURLEncoded,
			wantCode: 200, wantOutcome: func(s Stats) int { return s.LoginSuccesses }, wantUser: clientID,
			wantAuth: ClientAuthBasic, wantClientID: clientID,
		},
		{
			name: "urlencoded mode: a raw '+' reads as a space", form: url.Values{"grant_type": {"client_credentials"}},
			basic: rawBasic("plus", "a+b/c=d:e"), mode: BasicAuthURLEncoded,
			wantCode: 401, wantError: "invalid_client", wantBasicChallenge: true,
			wantOutcome: func(s Stats) int { return s.FailedCredentials }, wantUser: "plus",
			wantAuth: ClientAuthBasic, wantClientID: "plus",
		},
		{
			name: "raw mode: a raw '+' is a '+'", form: url.Values{"grant_type": {"client_credentials"}},
			basic:    rawBasic("plus", "a+b/c=d:e"),
			wantCode: 200, wantOutcome: func(s Stats) int { return s.LoginSuccesses }, wantUser: "plus",
			wantAuth: ClientAuthBasic, wantClientID: "plus",
		},
		{
			name: "urlencoded mode: a bad escape is a bad request", form: url.Values{"grant_type": {"client_credentials"}},
			basic: rawBasic(clientID, "100%"), mode: BasicAuthURLEncoded,
			wantCode: 400, wantError: "invalid_request",
			wantOutcome: func(s Stats) int { return s.BadRequests }, wantUser: clientID,
			wantAuth: ClientAuthBasic, wantClientID: clientID,
		},
		{
			name: "client credentials, plain basic auth", form: url.Values{"grant_type": {"client_credentials"}},
			basic:    "Basic " + base64.StdEncoding.EncodeToString([]byte("plain:Secret123")),
			wantCode: 200, wantOutcome: func(s Stats) int { return s.LoginSuccesses }, wantUser: "plain",
			wantAuth: ClientAuthBasic, wantClientID: "plain",
		},
		{
			name: "client credentials, plain basic auth, urlencoded mode", form: url.Values{"grant_type": {"client_credentials"}},
			basic: "Basic " + base64.StdEncoding.EncodeToString([]byte("plain:Secret123")), mode: BasicAuthURLEncoded,
			wantCode: 200, wantOutcome: func(s Stats) int { return s.LoginSuccesses }, wantUser: "plain",
			wantAuth: ClientAuthBasic, wantClientID: "plain",
		},
		{
			name:     "client credentials in form",
			form:     url.Values{"grant_type": {"client_credentials"}, "client_id": {clientID}, "client_secret": {secret}},
			wantCode: 200, wantOutcome: func(s Stats) int { return s.LoginSuccesses }, wantUser: clientID,
			wantAuth: ClientAuthPost, wantClientID: clientID, wantInForm: true,
		},
		{
			name:     "client credentials in form, urlencoded mode",
			form:     url.Values{"grant_type": {"client_credentials"}, "client_id": {clientID}, "client_secret": {secret}},
			mode:     BasicAuthURLEncoded,
			wantCode: 200, wantOutcome: func(s Stats) int { return s.LoginSuccesses }, wantUser: clientID,
			wantAuth: ClientAuthPost, wantClientID: clientID, wantInForm: true,
		},
		{
			name: "wrong client secret", form: url.Values{"grant_type": {"client_credentials"}},
			basic:    rawBasic(clientID, "nope"),
			wantCode: 401, wantError: "invalid_client", wantBasicChallenge: true,
			wantOutcome: func(s Stats) int { return s.FailedCredentials }, wantUser: clientID,
			wantAuth: ClientAuthBasic, wantClientID: clientID,
		},
		{
			name: "urlencoded mode: unescaped basic auth does not match an escaped secret", form: url.Values{"grant_type": {"client_credentials"}},
			basic:    "Basic " + base64.StdEncoding.EncodeToString([]byte("my+client:"+strings.ReplaceAll(secret, "%", "%25"))),
			mode:     BasicAuthURLEncoded,
			wantCode: 401, wantError: "invalid_client", wantBasicChallenge: true,
			wantOutcome: func(s Stats) int { return s.FailedCredentials }, wantUser: clientID,
			wantAuth: ClientAuthBasic, wantClientID: clientID,
		},
		{
			name: "basic and client_secret in the form: one method only", form: url.Values{"grant_type": {"client_credentials"}, "client_secret": {secret}},
			basic:    rawBasic(clientID, secret),
			wantCode: 400, wantError: "invalid_request", wantDesc: "more than one client authentication method",
			wantOutcome: func(s Stats) int { return s.BadRequests }, wantUser: clientID,
			wantAuth: ClientAuthBasic, wantClientID: clientID,
		},
		{
			name: "unknown client", form: url.Values{"grant_type": {"client_credentials"}, "client_id": {"other"}, "client_secret": {secret}},
			wantCode: 401, wantError: "invalid_client",
			wantOutcome: func(s Stats) int { return s.FailedCredentials }, wantUser: "other",
			wantAuth: ClientAuthPost, wantClientID: "other", wantInForm: true,
		},
		{
			name: "client credentials without client", form: url.Values{"grant_type": {"client_credentials"}},
			wantCode: 400, wantError: "invalid_request",
			wantOutcome: func(s Stats) int { return s.BadRequests },
		},
		{
			name: "client credentials, public client", form: url.Values{"grant_type": {"client_credentials"}, "client_id": {"public-app"}},
			wantCode: 400, wantError: "invalid_request",
			wantOutcome: func(s Stats) int { return s.BadRequests }, wantUser: "public-app",
			wantClientID: "public-app", wantInForm: true,
		},

		// The password grant with a client (RFC 6749 §4.3.2).
		{
			name:     "password grant, confidential client by raw basic",
			form:     passwordForm(user, password),
			basic:    rawBasic(clientID, secret),
			wantCode: 200, wantOutcome: func(s Stats) int { return s.LoginSuccesses }, wantUser: user,
			wantAuth: ClientAuthBasic, wantClientID: clientID,
		},
		{
			name:  "password grant, confidential client by urlencoded basic",
			form:  passwordForm(user, password),
			basic: basicAuth(clientID, secret), mode: BasicAuthURLEncoded, requireClient: true,
			wantCode: 200, wantOutcome: func(s Stats) int { return s.LoginSuccesses }, wantUser: user,
			wantAuth: ClientAuthBasic, wantClientID: clientID,
		},
		{
			name: "password grant, confidential client in the form",
			form: url.Values{"grant_type": {"password"}, "username": {user}, "password": {password},
				"client_id": {clientID}, "client_secret": {secret}},
			requireClient: true,
			wantCode:      200, wantOutcome: func(s Stats) int { return s.LoginSuccesses }, wantUser: user,
			wantAuth: ClientAuthPost, wantClientID: clientID, wantInForm: true,
		},
		{
			name: "password grant, public client", requireClient: true,
			form:     url.Values{"grant_type": {"password"}, "username": {user}, "password": {password}, "client_id": {"public-app"}},
			wantCode: 200, wantOutcome: func(s Stats) int { return s.LoginSuccesses }, wantUser: user,
			wantClientID: "public-app", wantInForm: true,
		},
		{
			name:     "password grant, a confidential client without its secret",
			form:     url.Values{"grant_type": {"password"}, "username": {user}, "password": {password}, "client_id": {clientID}},
			wantCode: 401, wantError: "invalid_client",
			wantOutcome: func(s Stats) int { return s.FailedCredentials }, wantUser: user,
			wantClientID: clientID, wantInForm: true,
		},
		{
			name:     "password grant, unknown public client",
			form:     url.Values{"grant_type": {"password"}, "username": {user}, "password": {password}, "client_id": {"nobody"}},
			wantCode: 401, wantError: "invalid_client",
			wantOutcome: func(s Stats) int { return s.FailedCredentials }, wantUser: user,
			wantClientID: "nobody", wantInForm: true,
		},
		{
			name:     "password grant, wrong client secret by basic",
			form:     passwordForm(user, password),
			basic:    rawBasic(clientID, "nope"),
			wantCode: 401, wantError: "invalid_client", wantBasicChallenge: true,
			wantOutcome: func(s Stats) int { return s.FailedCredentials }, wantUser: user,
			wantAuth: ClientAuthBasic, wantClientID: clientID,
		},
		{
			name:          "password grant, client required and missing",
			form:          passwordForm(user, password),
			requireClient: true,
			wantCode:      401, wantError: "invalid_client", wantDesc: "client authentication required",
			wantOutcome: func(s Stats) int { return s.FailedCredentials }, wantUser: user,
		},
		{
			name:     "password grant, right client, wrong password",
			form:     url.Values{"grant_type": {"password"}, "username": {user}, "password": {"nope"}, "client_id": {"public-app"}},
			wantCode: 401, wantError: "invalid_grant",
			wantOutcome: func(s Stats) int { return s.FailedCredentials }, wantUser: user,
			wantClientID: "public-app", wantInForm: true,
		},
		{
			name: "GET is not allowed", method: http.MethodGet, wantCode: 405,
			// not a login attempt
			wantOutcome: func(s Stats) int { return 1 - s.LoginAttempts },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, _ := newFake(t, Options{BasicAuth: tt.mode, RequireClient: tt.requireClient})
			f.AddClient("plain", "Secret123")
			f.AddClient("plus", "a+b/c=d:e")
			f.AddPublicClient("public-app")
			r := tokenRequestFor(tt.form)
			if tt.method != "" {
				r.Method = tt.method
			}
			if tt.basic != "" {
				r.Header.Set("Authorization", tt.basic)
			}
			w := serve(f, r)
			if w.Code != tt.wantCode {
				t.Fatalf("status = %d, want %d", w.Code, tt.wantCode)
			}
			st := f.Stats()
			if got := tt.wantOutcome(st); got != 1 {
				t.Errorf("outcome counter = %d, want 1 (stats %+v)", got, st)
			}
			if tt.wantUser != "" && st.UserAttempts[tt.wantUser] != 1 {
				t.Errorf("UserAttempts = %v, want 1 for %q", st.UserAttempts, tt.wantUser)
			}
			if got := strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Basic "); got != tt.wantBasicChallenge {
				t.Errorf("Basic WWW-Authenticate challenge: %v, want %v", got, tt.wantBasicChallenge)
			}
			if tt.wantCode == 405 {
				if st.LastClientAuth != "" {
					t.Errorf("LastClientAuth = %q after no token request", st.LastClientAuth)
				}
				return
			}
			wantAuth := cmp.Or(tt.wantAuth, ClientAuthNone)
			if st.LastClientAuth != wantAuth || st.LastClientID != tt.wantClientID || st.LastClientIDInForm != tt.wantInForm ||
				st.LastGrantType != tt.form.Get("grant_type") {
				t.Errorf("last request: grant %q, client auth %q, client_id %q, client_id in form %v; want %q, %q, %q, %v",
					st.LastGrantType, st.LastClientAuth, st.LastClientID, st.LastClientIDInForm,
					tt.form.Get("grant_type"), wantAuth, tt.wantClientID, tt.wantInForm)
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			if tt.wantError != "" {
				e := decodeError(t, w)
				if e.Error != tt.wantError || (tt.wantDesc != "" && e.Description != tt.wantDesc) {
					t.Errorf("error = %+v, want %q %q", e, tt.wantError, tt.wantDesc)
				}
				if st.TokensIssued != 0 {
					t.Errorf("TokensIssued = %d after a failure", st.TokensIssued)
				}
				return
			}
			b := decodeToken(t, w)
			if b.AccessToken == nil {
				t.Fatal("no access_token")
			}
			if raw, err := base64.RawURLEncoding.DecodeString(*b.AccessToken); err != nil || len(raw) != 32 {
				t.Errorf("access_token is not 32 base64url bytes (%d bytes, err %v)", len(raw), err)
			}
			if b.ExpiresIn == nil || *b.ExpiresIn != 86400 || b.TokenType != "Bearer" || b.RefreshToken != "none" {
				t.Errorf("expires_in %v, token_type %q, refresh_token %q; want 86400 Bearer none",
					b.ExpiresIn, b.TokenType, b.RefreshToken)
			}
			if st.UserSuccesses[tt.wantUser] != 1 {
				t.Errorf("UserSuccesses = %v, want 1 for %q", st.UserSuccesses, tt.wantUser)
			}
			if code := verify(f, *b.AccessToken); code != 200 {
				t.Errorf("/_authenticated with the new token = %d, want 200", code)
			}
		})
	}
}

func TestTokensAreUnique(t *testing.T) {
	f, _ := newFake(t, Options{UserLoginsPerMinute: -1})
	seen := map[string]bool{}
	for range 50 {
		b := decodeToken(t, login(f, user, password, "10.0.0.1"))
		if seen[*b.AccessToken] {
			t.Fatal("the same access token was issued twice")
		}
		seen[*b.AccessToken] = true
	}
}

func TestAuthenticated(t *testing.T) {
	f, clock := newFake(t, Options{})
	f.SetTokenLifetime(20 * time.Second)
	b := decodeToken(t, login(f, user, password, "10.0.0.1"))
	if *b.ExpiresIn != 20 {
		t.Fatalf("expires_in = %d, want 20", *b.ExpiresIn)
	}
	tok := *b.AccessToken

	tests := []struct {
		name    string
		header  string
		advance time.Duration
		revoke  bool
		want    int
	}{
		{name: "fresh token", header: "Bearer " + tok, want: 200},
		{name: "lower-case scheme", header: "bearer " + tok, want: 200},
		{name: "no header", header: "", want: 401},
		{name: "basic scheme", header: "Basic " + tok, want: 401},
		{name: "unknown token", header: "Bearer nottoken", want: 401},
		{name: "one second before expiry", header: "Bearer " + tok, advance: 19 * time.Second, want: 200},
		{name: "at expiry", header: "Bearer " + tok, advance: time.Second, want: 401},
	}
	for i, tt := range tests {
		clock.Advance(tt.advance)
		r := httptest.NewRequest(http.MethodGet, "/_authenticated", nil)
		if tt.header != "" {
			r.Header.Set("Authorization", tt.header)
		}
		w := serve(f, r)
		if w.Code != tt.want {
			t.Fatalf("%s: status = %d, want %d", tt.name, w.Code, tt.want)
		}
		var got map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
			t.Fatalf("%s: body is not JSON: %v", tt.name, err)
		}
		if tt.want == 200 && got["authenticated"] != true {
			t.Errorf("%s: body = %v, want authenticated true", tt.name, got)
		}
		if tt.want == 401 && (got["error"] != "invalid_token" || got["error_description"] != "access token not valid") {
			t.Errorf("%s: body = %v, want invalid_token", tt.name, got)
		}
		if st := f.Stats(); st.VerifyCalls != i+1 {
			t.Errorf("%s: VerifyCalls = %d, want %d", tt.name, st.VerifyCalls, i+1)
		}
	}
}

func TestSetTokenLifetime(t *testing.T) {
	tests := []struct {
		lifetime time.Duration
		want     int64 // expires_in, and the token's real lifetime in seconds
	}{
		{20 * time.Second, 20},
		{time.Hour, 3600},
		{1500 * time.Millisecond, 1}, // rounded down to whole seconds
		{0, 1},                       // at least one second
		{-5 * time.Second, 1},
	}
	for _, tt := range tests {
		t.Run(tt.lifetime.String(), func(t *testing.T) {
			f, clock := newFake(t, Options{})
			f.SetTokenLifetime(tt.lifetime)
			b := decodeToken(t, login(f, user, password, "10.0.0.1"))
			if *b.ExpiresIn != tt.want {
				t.Fatalf("expires_in = %d, want %d", *b.ExpiresIn, tt.want)
			}
			clock.Advance(time.Duration(tt.want)*time.Second - time.Nanosecond)
			if code := verify(f, *b.AccessToken); code != 200 {
				t.Errorf("just before expiry: %d, want 200", code)
			}
			clock.Advance(time.Nanosecond)
			if code := verify(f, *b.AccessToken); code != 401 {
				t.Errorf("at expiry: %d, want 401", code)
			}
		})
	}
}

func TestRevokeAll(t *testing.T) {
	f, _ := newFake(t, Options{})
	before := *decodeToken(t, login(f, user, password, "10.0.0.1")).AccessToken
	f.RevokeAll()
	if code := verify(f, before); code != 401 {
		t.Errorf("revoked token: status %d, want 401", code)
	}
	after := *decodeToken(t, login(f, user, password, "10.0.0.1")).AccessToken
	if code := verify(f, after); code != 200 {
		t.Errorf("token issued after RevokeAll: status %d, want 200", code)
	}
	if st := f.Stats(); st.VerifyFailures != 1 || st.VerifyCalls != 2 {
		t.Errorf("VerifyCalls %d, VerifyFailures %d; want 2, 1", st.VerifyCalls, st.VerifyFailures)
	}
}

// callAPI calls GET /api/me with the Authorization header auth ("" for none).
func callAPI(f *Server, auth string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodGet, APIPath, nil)
	if auth != "" {
		r.Header.Set("Authorization", auth)
	}
	return serve(f, r)
}

// TestAPI: the API answers a valid token 200 with whom it was issued to, and
// anything else 401 invalid_token with an RFC 6750 §3 challenge.
func TestAPI(t *testing.T) {
	f, clock := newFake(t, Options{})
	f.SetTokenLifetime(20 * time.Second)
	tok := *decodeToken(t, login(f, user, password, "10.0.0.1")).AccessToken
	r := tokenRequestFor(url.Values{"grant_type": {"client_credentials"}})
	r.Header.Set("Authorization", rawBasic(clientID, secret))
	clientTok := *decodeToken(t, serve(f, r)).AccessToken
	f.AddUser("bob", password)
	revoked := *decodeToken(t, login(f, "bob", password, "10.0.0.1")).AccessToken
	f.RevokeUser("bob")

	const challenge = `Bearer realm="iadvize", error="invalid_token"`
	tests := []struct {
		name          string
		header        string
		advance       time.Duration
		want          int
		wantPrincipal string // on 200
		wantGrant     string
		wantChallenge string // on 401
	}{
		{name: "password-grant token", header: "Bearer " + tok, want: 200, wantPrincipal: user, wantGrant: "password"},
		{name: "lower-case scheme", header: "bearer " + tok, want: 200, wantPrincipal: user, wantGrant: "password"},
		{name: "client-credentials token", header: "Bearer " + clientTok, want: 200, wantPrincipal: clientID, wantGrant: "client_credentials"},
		{name: "no header", want: 401, wantChallenge: `Bearer realm="iadvize"`},
		{name: "basic scheme", header: "Basic " + tok, want: 401, wantChallenge: `Bearer realm="iadvize"`},
		{name: "unknown token", header: "Bearer nottoken", want: 401, wantChallenge: challenge},
		{name: "revoked token", header: "Bearer " + revoked, want: 401, wantChallenge: challenge},
		{name: "one second before expiry", header: "Bearer " + tok, advance: 19 * time.Second, want: 200, wantPrincipal: user, wantGrant: "password"},
		{name: "at expiry", header: "Bearer " + tok, advance: time.Second, want: 401, wantChallenge: challenge},
	}
	refusals := 0
	for i, tt := range tests {
		clock.Advance(tt.advance)
		w := callAPI(f, tt.header)
		if w.Code != tt.want {
			t.Fatalf("%s: status = %d, want %d", tt.name, w.Code, tt.want)
		}
		if w.Header().Get("Cache-Control") != "no-store" || w.Header().Get("Content-Type") != "application/json" {
			t.Errorf("%s: Cache-Control %q, Content-Type %q", tt.name, w.Header().Get("Cache-Control"), w.Header().Get("Content-Type"))
		}
		if got := w.Header().Get("WWW-Authenticate"); got != tt.wantChallenge {
			t.Errorf("%s: WWW-Authenticate = %q, want %q", tt.name, got, tt.wantChallenge)
		}
		if tt.want == 200 {
			var got apiAnswer
			if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil || got != (apiAnswer{tt.wantPrincipal, tt.wantGrant}) {
				t.Errorf("%s: body %+v (error %v), want principal %q, grant %q", tt.name, got, err, tt.wantPrincipal, tt.wantGrant)
			}
		} else {
			refusals++
			if e := decodeError(t, w); e != (oauthError{"invalid_token", "access token not valid"}) {
				t.Errorf("%s: body = %+v, want invalid_token", tt.name, e)
			}
		}
		if st := f.Stats(); st.APICalls != i+1 || st.APIRefusals != refusals || st.VerifyCalls != 0 {
			t.Errorf("%s: APICalls %d, APIRefusals %d, VerifyCalls %d; want %d, %d, 0",
				tt.name, st.APICalls, st.APIRefusals, st.VerifyCalls, i+1, refusals)
		}
	}
	f.Reset()
	if st := f.Stats(); st.APICalls != 0 || st.APIRefusals != 0 {
		t.Errorf("after Reset: APICalls %d, APIRefusals %d", st.APICalls, st.APIRefusals)
	}
}

// TestRevokeOne: revoking one user's or one client's tokens, by a Go method or
// the admin API, leaves every other token valid, and tokens issued afterwards
// too.
func TestRevokeOne(t *testing.T) {
	// The tokens each case starts with, by name.
	all := []string{"alice", "bob", "client", "alice with client", "client named alice"}
	tests := []struct {
		name        string
		revoke      func(*Server) int // by a Go method
		body        string            // or POST /_fake/revoke with this body
		wantRevoked []string          // the rest stay valid
	}{
		{name: "RevokeUser", revoke: func(f *Server) int { return f.RevokeUser(user) },
			wantRevoked: []string{"alice", "alice with client"}},
		{name: "RevokeClient", revoke: func(f *Server) int { return f.RevokeClient(clientID) },
			wantRevoked: []string{"client"}},
		{name: "RevokeUser, unknown user", revoke: func(f *Server) int { return f.RevokeUser("nobody") }},
		{name: "RevokeClient of a user's name", revoke: func(f *Server) int { return f.RevokeClient("bob") }},
		{name: "admin username", body: `{"username":"alice"}`, wantRevoked: []string{"alice", "alice with client"}},
		{name: "admin client_id", body: `{"client_id":"alice"}`, wantRevoked: []string{"client named alice"}},
		{name: "admin no body", body: "", wantRevoked: all},
		{name: "admin empty object", body: " {}\n", wantRevoked: all},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, clock := newFake(t, Options{})
			f.AddUser("bob", password)
			f.AddClient("alice", secret) // a client named as a user: revoking one leaves the other
			cc := func(id string) string {
				r := tokenRequestFor(url.Values{"grant_type": {"client_credentials"}})
				r.Header.Set("Authorization", rawBasic(id, secret))
				return *decodeToken(t, serve(f, r)).AccessToken
			}
			withClient := passwordForm(user, password)
			withClient.Set("client_id", clientID)
			withClient.Set("client_secret", secret)
			held := map[string]string{
				"alice":              *decodeToken(t, login(f, user, password, "10.0.0.1")).AccessToken,
				"bob":                *decodeToken(t, login(f, "bob", password, "10.0.0.1")).AccessToken,
				"client":             cc(clientID),
				"alice with client":  *decodeToken(t, serve(f, tokenRequestFor(withClient))).AccessToken,
				"client named alice": cc("alice"),
			}
			// An expired token is forgotten too, but not counted as revoked.
			f.SetTokenLifetime(time.Second)
			expired := *decodeToken(t, login(f, user, password, "10.0.0.1")).AccessToken
			clock.Advance(time.Second)

			var n int
			if tt.revoke != nil {
				n = tt.revoke(f)
			} else {
				w := serve(f, httptest.NewRequest(http.MethodPost, "/_fake/revoke", strings.NewReader(tt.body)))
				var m struct {
					OK      bool `json:"ok"`
					Revoked int  `json:"revoked"`
				}
				if err := json.Unmarshal(w.Body.Bytes(), &m); w.Code != 200 || err != nil || !m.OK {
					t.Fatalf("POST /_fake/revoke: %d (decode error %v)", w.Code, err)
				}
				n = m.Revoked
			}
			if n != len(tt.wantRevoked) {
				t.Errorf("revoked %d, want %d", n, len(tt.wantRevoked))
			}
			for _, name := range all {
				want := 200
				if slices.Contains(tt.wantRevoked, name) {
					want = 401
				}
				if code, api := verify(f, held[name]), callAPI(f, "Bearer "+held[name]).Code; code != want || api != want {
					t.Errorf("token of %s: /_authenticated %d, API %d; want %d", name, code, api, want)
				}
			}
			if code := verify(f, expired); code != 401 {
				t.Errorf("expired token: %d, want 401", code)
			}
			f.SetTokenLifetime(time.Hour)
			after := *decodeToken(t, login(f, user, password, "10.0.0.1")).AccessToken
			if code, api := verify(f, after), callAPI(f, "Bearer "+after).Code; code != 200 || api != 200 {
				t.Errorf("token issued after the revocation: /_authenticated %d, API %d; want 200", code, api)
			}
		})
	}
}

// TestRevokeAdminErrors: a revoke body that names both kinds, an empty name,
// an unknown field or no JSON revokes nothing and answers 400.
func TestRevokeAdminErrors(t *testing.T) {
	f, _ := newFake(t, Options{})
	tok := *decodeToken(t, login(f, user, password, "10.0.0.1")).AccessToken
	for _, body := range []string{
		`{"username":"alice","client_id":"my client"}`,
		`{"username":""}`,
		`{"client_id":""}`,
		`{"user":"alice"}`,
		`alice`,
		`{"username":"alice"`,
	} {
		w := serve(f, httptest.NewRequest(http.MethodPost, "/_fake/revoke", strings.NewReader(body)))
		var m map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &m); w.Code != 400 || err != nil || m["error"] == nil {
			t.Errorf("POST /_fake/revoke %s: %d, want 400 with an error", body, w.Code)
		}
	}
	if code := callAPI(f, "Bearer "+tok).Code; code != 200 {
		t.Errorf("a refused revoke revoked the token: API %d", code)
	}
}

// step is one login attempt of a rate-limit scenario.
type step struct {
	advance    time.Duration // clock advance before each attempt
	user, pass string
	ip         string
	wantCode   int
	wantRetry  string // Retry-After on 429
	repeat     int    // make the attempt this many times (default 1)
}

func TestRateLimits(t *testing.T) {
	const s = time.Second
	ok, bad := password, "wrong"
	tests := []struct {
		name      string
		opts      Options
		steps     []step
		wantRated int
	}{
		{
			name: "user limit counts failed attempts and blocks correct ones",
			steps: []step{
				{user: user, pass: bad, ip: "10.0.0.1", wantCode: 401, repeat: 9},
				{user: user, pass: ok, ip: "10.0.0.1", wantCode: 200},
				{user: user, pass: ok, ip: "10.0.0.2", wantCode: 429, wantRetry: "60"},
				{advance: 30 * s, user: user, pass: ok, ip: "10.0.0.3", wantCode: 429, wantRetry: "30"},
				{user: "bob", pass: bad, ip: "10.0.0.1", wantCode: 401}, // other users are not blocked
				{advance: 29 * s, user: user, pass: ok, ip: "10.0.0.3", wantCode: 429, wantRetry: "1"},
				{advance: 1 * s, user: user, pass: ok, ip: "10.0.0.3", wantCode: 200},
			},
			wantRated: 3,
		},
		{
			name: "sliding window, not fixed",
			steps: []step{
				// Ten attempts at t=0..9s.
				{user: user, pass: ok, ip: "10.0.0.1", wantCode: 200},
				{advance: s, user: user, pass: ok, ip: "10.0.0.1", wantCode: 200, repeat: 9},
				// t=60s: the t=0 attempt is exactly 60 s old and no longer counts.
				{advance: 51 * s, user: user, pass: ok, ip: "10.0.0.1", wantCode: 200},
				// Eleventh attempt within 60 s.
				{user: user, pass: ok, ip: "10.0.0.1", wantCode: 429, wantRetry: "60"},
				// t=120s: block over, the two t=60s attempts have left the window.
				{advance: 60 * s, user: user, pass: ok, ip: "10.0.0.1", wantCode: 200},
			},
			wantRated: 1,
		},
		{
			name: "attempts refused during a block still count",
			opts: Options{BlockDuration: 10 * s},
			steps: []step{
				{user: user, pass: ok, ip: "10.0.0.1", wantCode: 200, repeat: 10},
				{user: user, pass: ok, ip: "10.0.0.1", wantCode: 429, wantRetry: "10"},
				{advance: 5 * s, user: user, pass: ok, ip: "10.0.0.1", wantCode: 429, wantRetry: "5"},
				// Block over, but 12 attempts within 60 s: blocked again.
				{advance: 5 * s, user: user, pass: ok, ip: "10.0.0.1", wantCode: 429, wantRetry: "10"},
			},
			wantRated: 3,
		},
		{
			name: "ip limit across users",
			opts: Options{IPLoginsPerMinute: 5, UserLoginsPerMinute: -1},
			steps: []step{
				{user: "u1", pass: bad, ip: "10.0.0.1", wantCode: 401, repeat: 5},
				{user: "u2", pass: bad, ip: "10.0.0.1", wantCode: 429, wantRetry: "60"},
				{user: user, pass: ok, ip: "10.0.0.1", wantCode: 429, wantRetry: "60"},
				{user: user, pass: ok, ip: "10.0.0.2", wantCode: 200}, // other IPs are not blocked
				{advance: 60 * s, user: user, pass: ok, ip: "10.0.0.1", wantCode: 200},
			},
			wantRated: 2,
		},
		{
			name: "default ip limit is 100",
			opts: Options{UserLoginsPerMinute: -1},
			steps: []step{
				{user: "u", pass: bad, ip: "10.0.0.1", wantCode: 401, repeat: 100},
				{user: "v", pass: bad, ip: "10.0.0.1", wantCode: 429, wantRetry: "60"},
			},
			wantRated: 1,
		},
		{
			name: "limits disabled",
			opts: Options{UserLoginsPerMinute: -1, IPLoginsPerMinute: -1},
			steps: []step{
				{user: user, pass: ok, ip: "10.0.0.1", wantCode: 200, repeat: 150},
			},
		},
		{
			name: "bad requests count against the ip",
			opts: Options{IPLoginsPerMinute: 2},
			steps: []step{
				{user: "", pass: "", ip: "10.0.0.1", wantCode: 400, repeat: 2},
				{user: user, pass: ok, ip: "10.0.0.1", wantCode: 429, wantRetry: "60"},
			},
			wantRated: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, clock := newFake(t, tt.opts)
			for i, st := range tt.steps {
				for n := range max(st.repeat, 1) {
					clock.Advance(st.advance)
					w := login(f, st.user, st.pass, st.ip)
					if w.Code != st.wantCode {
						t.Fatalf("step %d, attempt %d (user %q, ip %s): status %d, want %d",
							i, n, st.user, st.ip, w.Code, st.wantCode)
					}
					if got := w.Header().Get("Retry-After"); got != st.wantRetry {
						t.Fatalf("step %d: Retry-After = %q, want %q", i, got, st.wantRetry)
					}
					if w.Code == 429 {
						if e := decodeError(t, w); e.Error != "too_many_requests" || e.Description == "" {
							t.Fatalf("step %d: 429 body = %+v, want too_many_requests", i, e)
						}
					}
				}
			}
			st := f.Stats()
			if st.RateLimited != tt.wantRated || st.InjectedRateLimited != 0 {
				t.Errorf("RateLimited %d, InjectedRateLimited %d; want %d, 0", st.RateLimited, st.InjectedRateLimited, tt.wantRated)
			}
		})
	}
}

func TestSetLimitsAndBlock(t *testing.T) {
	f, clock := newFake(t, Options{})
	f.SetLimits(2, 0)
	f.SetBlockDuration(0)
	for range 2 {
		if w := login(f, user, password, "10.0.0.1"); w.Code != 200 {
			t.Fatalf("status %d, want 200", w.Code)
		}
	}
	if w := login(f, user, password, "10.0.0.1"); w.Code != 429 || w.Header().Get("Retry-After") != "1" {
		t.Fatalf("third attempt: status %d Retry-After %q, want 429 1", w.Code, w.Header().Get("Retry-After"))
	}
	clock.Advance(60 * time.Second)
	if w := login(f, user, password, "10.0.0.1"); w.Code != 200 {
		t.Fatalf("after the window: status %d, want 200", w.Code)
	}
}

func TestLoginTimesAndMaxAttemptsInWindow(t *testing.T) {
	const s = time.Second
	tests := []struct {
		name    string
		offsets []time.Duration // since the start, in order
		window  time.Duration
		want    int
	}{
		{name: "none", window: time.Minute, want: 0},
		{name: "one", offsets: []time.Duration{0}, window: time.Minute, want: 1},
		{name: "all in one window", offsets: []time.Duration{0, 10 * s, 59 * s}, window: time.Minute, want: 3},
		{name: "exactly a window apart", offsets: []time.Duration{0, 60 * s}, window: time.Minute, want: 1},
		{name: "best window in the middle", offsets: []time.Duration{0, 50 * s, 55 * s, 70 * s, 109 * s, 200 * s}, window: time.Minute, want: 4},
		{name: "same instant", offsets: []time.Duration{5 * s, 5 * s, 5 * s}, window: time.Second, want: 3},
		{name: "zero window", offsets: []time.Duration{0}, window: 0, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, clock := newFake(t, Options{UserLoginsPerMinute: -1})
			start := clock.Now()
			var prev time.Duration
			for _, off := range tt.offsets {
				clock.Advance(off - prev)
				prev = off
				login(f, user, "wrong", "10.0.0.1")
			}
			if got := f.MaxAttemptsInWindow(tt.window); got != tt.want {
				t.Errorf("MaxAttemptsInWindow(%s) = %d, want %d", tt.window, got, tt.want)
			}
			times := f.LoginTimes()
			if len(times) != len(tt.offsets) {
				t.Fatalf("LoginTimes has %d entries, want %d", len(times), len(tt.offsets))
			}
			for i, off := range tt.offsets {
				if !times[i].Equal(start.Add(off)) {
					t.Errorf("LoginTimes[%d] = %s, want %s", i, times[i], start.Add(off))
				}
			}
		})
	}
}

func TestReset(t *testing.T) {
	f, _ := newFake(t, Options{UserLoginsPerMinute: 1})
	tok := *decodeToken(t, login(f, user, password, "10.0.0.1")).AccessToken
	if w := login(f, user, password, "10.0.0.1"); w.Code != 429 {
		t.Fatalf("status %d, want 429", w.Code)
	}
	f.Reset()
	st := f.Stats()
	if st.LoginAttempts != 0 || st.RateLimited != 0 || len(st.UserAttempts) != 0 || len(f.LoginTimes()) != 0 {
		t.Errorf("after Reset: %+v, %d login times", st, len(f.LoginTimes()))
	}
	// The block is gone; users and tokens are kept.
	if w := login(f, user, password, "10.0.0.1"); w.Code != 200 {
		t.Errorf("after Reset: status %d, want 200", w.Code)
	}
	if code := verify(f, tok); code != 200 {
		t.Errorf("token issued before Reset: status %d, want 200", code)
	}
}

func TestFaults(t *testing.T) {
	tests := []struct {
		name        string
		fault       Fault
		wantCode    int
		wantType    string // Content-Type prefix
		wantRetry   string
		injected429 bool
		check       func(t *testing.T, f *Server, body []byte)
	}{
		{
			name: "rate_limit", fault: Fault{Mode: FaultRateLimit, RetryAfter: 120},
			wantCode: 429, wantType: "application/json", wantRetry: "120", injected429: true,
			check: wantErrorCode("too_many_requests"),
		},
		{
			name: "rate_limit default retry", fault: Fault{Mode: FaultRateLimit},
			wantCode: 429, wantType: "application/json", wantRetry: "60", injected429: true,
			check: wantErrorCode("too_many_requests"),
		},
		{
			name: "rate_limit_no_retry_after", fault: Fault{Mode: FaultRateLimitNoRetry},
			wantCode: 429, wantType: "application/json", injected429: true,
			check: wantErrorCode("too_many_requests"),
		},
		{
			name: "server_error default", fault: Fault{Mode: FaultServerError},
			wantCode: 503, wantType: "application/json", check: wantErrorCode("server_error"),
		},
		{
			name: "server_error 500 plain", fault: Fault{Mode: FaultServerError, Status: 500, PlainText: true},
			wantCode: 500, wantType: "text/plain",
			check: func(t *testing.T, _ *Server, body []byte) {
				if json.Valid(body) {
					t.Errorf("plain body is JSON")
				}
			},
		},
		{
			name: "server_error 502", fault: Fault{Mode: FaultServerError, Status: 502},
			wantCode: 502, wantType: "application/json", check: wantErrorCode("server_error"),
		},
		{
			name: "html", fault: Fault{Mode: FaultHTML},
			wantCode: 502, wantType: "text/html", check: wantHTML,
		},
		{
			name: "html_200", fault: Fault{Mode: FaultHTML200},
			wantCode: 200, wantType: "text/html", check: wantHTML,
		},
		{
			name: "no_expires_in", fault: Fault{Mode: FaultNoExpiresIn},
			wantCode: 200, wantType: "application/json",
			check: func(t *testing.T, f *Server, body []byte) {
				m := decodeMap(t, body)
				if _, ok := m["expires_in"]; ok {
					t.Error("expires_in present")
				}
				wantValidToken(t, f, m)
			},
		},
		{
			name: "zero_expires_in", fault: Fault{Mode: FaultZeroExpiresIn},
			wantCode: 200, wantType: "application/json",
			check: func(t *testing.T, f *Server, body []byte) {
				m := decodeMap(t, body)
				if v, ok := m["expires_in"].(float64); !ok || v != 0 {
					t.Errorf("expires_in = %v, want 0", m["expires_in"])
				}
				wantValidToken(t, f, m)
			},
		},
		{
			name: "negative_expires_in", fault: Fault{Mode: FaultNegativeExpiresIn},
			wantCode: 200, wantType: "application/json",
			check: func(t *testing.T, f *Server, body []byte) {
				m := decodeMap(t, body)
				if v, ok := m["expires_in"].(float64); !ok || v >= 0 {
					t.Errorf("expires_in = %v, want negative", m["expires_in"])
				}
				wantValidToken(t, f, m)
			},
		},
		{
			name: "no_access_token", fault: Fault{Mode: FaultNoAccessToken},
			wantCode: 200, wantType: "application/json",
			check: func(t *testing.T, f *Server, body []byte) {
				m := decodeMap(t, body)
				if _, ok := m["access_token"]; ok {
					t.Error("access_token present")
				}
				if m["expires_in"] != float64(86400) {
					t.Errorf("expires_in = %v, want 86400", m["expires_in"])
				}
			},
		},
		{
			name: "huge_body", fault: Fault{Mode: FaultHugeBody},
			wantCode: 200, wantType: "application/json",
			check: func(t *testing.T, f *Server, body []byte) {
				if len(body) < 2<<20 {
					t.Errorf("body is %d bytes, want at least 2 MiB", len(body))
				}
				m := decodeMap(t, body)
				pad, _ := m["pad"].(string)
				if len(pad) != 2<<20 || strings.Trim(pad, "x") != "" {
					t.Errorf("pad is %d bytes, want 2 MiB of x", len(pad))
				}
				if m["expires_in"] != float64(86400) {
					t.Errorf("expires_in = %v, want 86400", m["expires_in"])
				}
				wantValidToken(t, f, m)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, _ := newFake(t, Options{})
			fault := tt.fault
			fault.Count = 2
			if err := f.InjectFault(fault); err != nil {
				t.Fatal(err)
			}
			for i := range 2 {
				w := login(f, user, password, "10.0.0.1")
				if w.Code != tt.wantCode {
					t.Fatalf("request %d: status %d, want %d", i, w.Code, tt.wantCode)
				}
				if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, tt.wantType) {
					t.Errorf("Content-Type = %q, want %s", ct, tt.wantType)
				}
				if got := w.Header().Get("Retry-After"); got != tt.wantRetry {
					t.Errorf("Retry-After = %q, want %q", got, tt.wantRetry)
				}
				tt.check(t, f, w.Body.Bytes())
				if i == 0 {
					if left := f.Stats().Fault; left.Mode != tt.fault.Mode || left.Count != 1 {
						t.Errorf("after one request Stats().Fault = %+v, want %s with 1 left", left, tt.fault.Mode)
					}
				}
			}
			// The fault is used up: back to normal.
			w := login(f, user, password, "10.0.0.1")
			if w.Code != 200 || w.Header().Get("Content-Type") != "application/json" {
				t.Fatalf("after the fault: status %d, Content-Type %q; want a normal 200", w.Code, w.Header().Get("Content-Type"))
			}
			if b := decodeToken(t, w); b.AccessToken == nil || b.ExpiresIn == nil || *b.ExpiresIn != 86400 {
				t.Errorf("after the fault: answer is not a normal token answer")
			}
			st := f.Stats()
			want429, wantOther := 0, 2
			if tt.injected429 {
				want429, wantOther = 2, 0
			}
			if st.InjectedRateLimited != want429 || st.InjectedFaults != wantOther || st.RateLimited != 0 ||
				st.LoginSuccesses != 1 || st.LoginAttempts != 3 || st.Fault.Mode != FaultNone {
				t.Errorf("stats = %+v", st)
			}
		})
	}
}

func wantErrorCode(code string) func(*testing.T, *Server, []byte) {
	return func(t *testing.T, _ *Server, body []byte) {
		t.Helper()
		var e oauthError
		if err := json.Unmarshal(body, &e); err != nil || e.Error != code {
			t.Errorf("error = %q (decode error %v), want %q", e.Error, err, code)
		}
	}
}

func wantHTML(t *testing.T, _ *Server, body []byte) {
	t.Helper()
	if !bytes.Contains(body, []byte("<html")) || json.Valid(body) {
		t.Errorf("body is not an HTML page")
	}
}

func decodeMap(t *testing.T, body []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("body is not JSON: %v", err)
	}
	return m
}

func wantValidToken(t *testing.T, f *Server, m map[string]any) {
	t.Helper()
	tok, _ := m["access_token"].(string)
	if tok == "" {
		t.Fatal("no access_token")
	}
	if code := verify(f, tok); code != 200 {
		t.Errorf("/_authenticated with the faulted answer's token = %d, want 200", code)
	}
}

func TestFaultUntilCleared(t *testing.T) {
	f, _ := newFake(t, Options{UserLoginsPerMinute: -1})
	if err := f.InjectFault(Fault{Mode: FaultServerError}); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if w := login(f, user, password, "10.0.0.1"); w.Code != 503 {
			t.Fatalf("request %d: status %d, want 503", i, w.Code)
		}
	}
	f.ClearFault()
	if w := login(f, user, password, "10.0.0.1"); w.Code != 200 {
		t.Fatalf("after ClearFault: status %d, want 200", w.Code)
	}
	if st := f.Stats(); st.InjectedFaults != 20 {
		t.Errorf("InjectedFaults = %d, want 20", st.InjectedFaults)
	}
}

func TestFaultsTakePrecedenceAndCount(t *testing.T) {
	// A fault answers even a blocked user, and its requests count against
	// the limits.
	f, _ := newFake(t, Options{UserLoginsPerMinute: 2})
	if err := f.InjectFault(Fault{Mode: FaultServerError, Count: 3}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if w := login(f, user, password, "10.0.0.1"); w.Code != 503 {
			t.Fatalf("status %d, want 503", w.Code)
		}
	}
	if w := login(f, user, password, "10.0.0.1"); w.Code != 429 {
		t.Fatalf("after the fault: status %d, want 429 (4 attempts > limit 2)", w.Code)
	}
}

func TestInjectFaultValidation(t *testing.T) {
	f, _ := newFake(t, Options{})
	for _, bad := range []Fault{
		{Mode: "explode"},
		{Mode: FaultRateLimit, Count: -1},
		{Mode: FaultRateLimit, RetryAfter: -5},
		{Mode: FaultServerError, Status: 404},
		{Mode: FaultServerError, Status: 600},
	} {
		if err := f.InjectFault(bad); err == nil {
			t.Errorf("InjectFault(%+v) succeeded, want an error", bad)
		}
	}
	if st := f.Stats(); st.Fault.Mode != FaultNone {
		t.Errorf("a rejected fault was installed: %+v", st.Fault)
	}
}

// waitHanging waits until n requests are held by the hang fault. It yields
// instead of sleeping; the deadline only guards against a broken fake.
func waitHanging(t *testing.T, f *Server, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for f.Stats().Hanging != n {
		if time.Now().After(deadline) {
			t.Fatalf("Hanging = %d, want %d", f.Stats().Hanging, n)
		}
		runtime.Gosched()
	}
}

// waitDone fails the test if ch is not closed soon; the deadline only guards
// against a broken fake.
func waitDone(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not return", what)
	}
}

func TestHang(t *testing.T) {
	tests := []struct {
		name     string
		end      func(f *Server, cancel context.CancelFunc)
		wantCode int // 0: nothing written
		wantStat func(Stats) int
	}{
		{
			name:     "client gives up",
			end:      func(_ *Server, cancel context.CancelFunc) { cancel() },
			wantStat: func(s Stats) int { return s.InjectedFaults },
		},
		{
			name:     "fault cleared: normal answer",
			end:      func(f *Server, _ context.CancelFunc) { f.ClearFault() },
			wantCode: 200, wantStat: func(s Stats) int { return s.LoginSuccesses - 1 },
		},
		{
			name: "fault replaced: normal answer",
			end: func(f *Server, _ context.CancelFunc) {
				_ = f.InjectFault(Fault{Mode: FaultHTML, Count: 1})
			},
			wantCode: 200, wantStat: func(s Stats) int { return s.LoginSuccesses - 1 },
		},
		{
			name:     "fake closed",
			end:      func(f *Server, _ context.CancelFunc) { f.Close() },
			wantCode: 503, wantStat: func(s Stats) int { return s.InjectedFaults },
		},
	}
	for _, tt := range tests {
		// synctest.Wait returns once every goroutine of the bubble is blocked,
		// so "still hanging" is checked deterministically, and the bubble
		// fails the test if the handler goroutine outlives it.
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f, _ := newFake(t, Options{})
				// Count 1: using the fault up does not release the request.
				if err := f.InjectFault(Fault{Mode: FaultHang, Count: 1}); err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				r := tokenRequestFor(passwordForm(user, password)).WithContext(ctx)
				w := httptest.NewRecorder()
				done := make(chan struct{})
				go func() {
					defer close(done)
					f.ServeHTTP(w, r)
				}()
				synctest.Wait()
				// The fault is used up: the next request is answered normally,
				// and the first one keeps hanging.
				if w2 := login(f, user, password, "10.0.0.9"); w2.Code != 200 {
					t.Fatalf("request after the used-up hang: status %d, want 200", w2.Code)
				}
				synctest.Wait()
				select {
				case <-done:
					t.Fatalf("the request was answered while hanging")
				default:
				}
				if st := f.Stats(); st.Hanging != 1 {
					t.Fatalf("Hanging = %d, want 1", st.Hanging)
				}

				tt.end(f, cancel)
				<-done
				if tt.wantCode == 0 {
					if w.Body.Len() != 0 || w.Header().Get("Content-Type") != "" {
						t.Errorf("something was written to a client that gave up")
					}
				} else if w.Code != tt.wantCode {
					t.Errorf("status %d, want %d", w.Code, tt.wantCode)
				}
				st := f.Stats()
				if tt.wantStat(st) != 1 || st.Hanging != 0 || st.LoginSuccesses+st.InjectedFaults != 2 {
					t.Errorf("stats = %+v", st)
				}
			})
		})
	}
}

func TestHangOverHTTPDoesNotBlockClose(t *testing.T) {
	f, _ := newFake(t, Options{})
	ts := httptest.NewServer(f)
	t.Cleanup(func() { f.Close(); ts.Close() }) // in that order, if the test fails early
	if err := f.InjectFault(Fault{Mode: FaultHang}); err != nil {
		t.Fatal(err)
	}

	// One client gives up on its own.
	ctx, cancel := context.WithCancel(context.Background())
	gaveUp := make(chan struct{})
	go func() {
		defer close(gaveUp)
		if _, err := postToken(ctx, ts.URL); !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled request: error %v, want context.Canceled", err)
		}
	}()
	waitHanging(t, f, 1)
	cancel()
	waitDone(t, gaveUp, "the cancelled request")
	waitHanging(t, f, 0)

	// Two more are held when the fake closes.
	codes := make(chan int, 2)
	for range 2 {
		go func() {
			resp, err := postToken(context.Background(), ts.URL)
			if err != nil {
				t.Errorf("held request: %v", err)
				codes <- 0
				return
			}
			codes <- resp.StatusCode
		}()
	}
	waitHanging(t, f, 2)
	f.Close()
	for range 2 {
		if code := <-codes; code != 503 {
			t.Errorf("held request answered %d after Close, want 503", code)
		}
	}
	// httptest.Server.Close waits for every handler: it returns only if none leaked.
	closed := make(chan struct{})
	go func() { defer close(closed); ts.Close() }()
	waitDone(t, closed, "httptest.Server.Close")
	if st := f.Stats(); st.InjectedFaults != 3 || st.Hanging != 0 {
		t.Errorf("stats = %+v", st)
	}
}

func TestHangAfterCloseAnswersAtOnce(t *testing.T) {
	f, _ := newFake(t, Options{})
	f.Close()
	if err := f.InjectFault(Fault{Mode: FaultHang}); err != nil {
		t.Fatal(err)
	}
	if w := login(f, user, password, "10.0.0.1"); w.Code != 503 {
		t.Errorf("status %d, want 503", w.Code)
	}
	if w := login(f, user, password, "10.0.0.1"); w.Code != 503 {
		t.Errorf("status %d, want 503", w.Code)
	}
}

func postToken(ctx context.Context, base string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/oauth2/token",
		strings.NewReader(passwordForm(user, password).Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp, nil
}

func TestAdminAPI(t *testing.T) {
	f, clock := newFake(t, Options{})
	ts := httptest.NewServer(f)
	t.Cleanup(ts.Close)

	post := func(path, body string) (int, map[string]any) {
		t.Helper()
		resp, err := http.Post(ts.URL+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	stats := func() Stats {
		t.Helper()
		resp, err := http.Get(ts.URL + "/_fake/stats")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var st Stats
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			t.Fatal(err)
		}
		return st
	}
	tokenCode := func(form url.Values, basic string) (int, string, tokenBody) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, ts.URL+"/oauth2/token", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if basic != "" {
			req.Header.Set("Authorization", basic)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b tokenBody
		_ = json.NewDecoder(resp.Body).Decode(&b)
		return resp.StatusCode, resp.Header.Get("Retry-After"), b
	}

	// Users and clients.
	if code, _ := post("/_fake/users", `{"username":"carol","password":"c-pass"}`); code != 200 {
		t.Fatalf("POST /_fake/users: %d", code)
	}
	if code, _, _ := tokenCode(passwordForm("carol", "c-pass"), ""); code != 200 {
		t.Errorf("login as the added user: %d", code)
	}
	if code, _ := post("/_fake/clients", `{"client_id":"svc","client_secret":"svc-secret"}`); code != 200 {
		t.Fatalf("POST /_fake/clients: %d", code)
	}
	if code, _, _ := tokenCode(url.Values{"grant_type": {"client_credentials"}}, basicAuth("svc", "svc-secret")); code != 200 {
		t.Errorf("login as the added client: %d", code)
	}

	// Faults.
	if code, _ := post("/_fake/fault", `{"mode":"rate_limit","count":1,"retry_after":120}`); code != 200 {
		t.Fatalf("POST /_fake/fault: %d", code)
	}
	if st := stats(); st.Fault.Mode != FaultRateLimit || st.Fault.Count != 1 || st.Fault.RetryAfter != 120 {
		t.Errorf("stats fault = %+v", st.Fault)
	}
	if code, retry, _ := tokenCode(passwordForm("carol", "c-pass"), ""); code != 429 || retry != "120" {
		t.Errorf("with rate_limit fault: %d, Retry-After %q", code, retry)
	}
	if code, _ := post("/_fake/fault", `{"mode":"server_error","status":502}`); code != 200 {
		t.Fatalf("POST /_fake/fault: %d", code)
	}
	if code, _, _ := tokenCode(passwordForm("carol", "c-pass"), ""); code != 502 {
		t.Errorf("with server_error fault: %d", code)
	}
	if code, _ := post("/_fake/fault", `{"mode":"none"}`); code != 200 {
		t.Fatalf("POST /_fake/fault none: %d", code)
	}
	if code, _, _ := tokenCode(passwordForm("carol", "c-pass"), ""); code != 200 {
		t.Errorf("after clearing: %d", code)
	}

	// Config.
	if code, _ := post("/_fake/config", `{"token_lifetime_seconds":20,"user_logins_per_minute":10,"ip_logins_per_minute":100}`); code != 200 {
		t.Fatalf("POST /_fake/config: %d", code)
	}
	code, _, b := tokenCode(passwordForm("carol", "c-pass"), "")
	if code != 200 || b.ExpiresIn == nil || *b.ExpiresIn != 20 {
		t.Fatalf("after config: status %d, expires_in %v; want 200, 20", code, b.ExpiresIn)
	}
	tok := *b.AccessToken
	if code := verify(f, tok); code != 200 {
		t.Errorf("verify: %d", code)
	}
	clock.Advance(20 * time.Second)
	if code := verify(f, tok); code != 401 {
		t.Errorf("verify after 20 s: %d, want 401", code)
	}

	// Revoke.
	_, _, b = tokenCode(passwordForm("carol", "c-pass"), "")
	if code, _ := post("/_fake/revoke", ``); code != 200 {
		t.Fatalf("POST /_fake/revoke: %d", code)
	}
	if code := verify(f, *b.AccessToken); code != 401 {
		t.Errorf("verify after revoke: %d, want 401", code)
	}
	_, _, b = tokenCode(passwordForm("carol", "c-pass"), "")
	if code, m := post("/_fake/revoke", `{"username":"carol"}`); code != 200 || m["revoked"] != 1.0 {
		t.Fatalf("POST /_fake/revoke carol: %d, revoked %v; want 200, 1", code, m["revoked"])
	}
	req, _ := http.NewRequest(http.MethodGet, ts.URL+APIPath, nil)
	req.Header.Set("Authorization", "Bearer "+*b.AccessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != `Bearer realm="iadvize", error="invalid_token"` {
		t.Errorf("API after revoking carol: %d, WWW-Authenticate %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}

	// Stats and reset.
	st := stats()
	if st.LoginAttempts != 8 || st.LoginSuccesses != 6 || st.InjectedRateLimited != 1 || st.InjectedFaults != 1 ||
		st.UserAttempts["carol"] != 7 || st.UserSuccesses["svc"] != 1 || st.VerifyCalls != 3 || st.MaxAttemptsInWindow != 8 ||
		st.APICalls != 1 || st.APIRefusals != 1 {
		t.Errorf("stats = %+v", st)
	}
	if code, _ := post("/_fake/reset", ``); code != 200 {
		t.Fatalf("POST /_fake/reset: %d", code)
	}
	if st := stats(); st.LoginAttempts != 0 || st.VerifyCalls != 0 || st.APICalls != 0 || len(st.UserAttempts) != 0 {
		t.Errorf("after reset: %+v", st)
	}

	// Bad admin requests.
	for i, tc := range []struct{ path, body string }{
		{"/_fake/fault", `{"mode":"explode"}`},
		{"/_fake/fault", `{"mode":"server_error","status":404}`},
		{"/_fake/fault", `{"mode":"rate_limit","cuont":3}`},
		{"/_fake/fault", `not json`},
		{"/_fake/users", `{"username":"x"}`},
		{"/_fake/clients", `{"client_secret":"x"}`},
		{"/_fake/config", `{"token_lifetime_seconds":0}`},
		{"/_fake/config", `{"block_seconds":-1}`},
		{"/_fake/revoke", `{"username":"carol","client_id":"svc"}`},
	} {
		if code, m := post(tc.path, tc.body); code != 400 || m["error"] == nil {
			t.Errorf("bad admin request %d (POST %s): %d, want 400 with an error", i, tc.path, code) // body not shown: it may hold a secret
		}
	}
	resp, err = http.Get(ts.URL + "/_fake/fault")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 {
		t.Errorf("GET /_fake/fault: %d, want 405", resp.StatusCode)
	}
}

func TestConfigLimitsAndBlock(t *testing.T) {
	f, clock := newFake(t, Options{})
	w := httptest.NewRecorder()
	f.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/_fake/config",
		strings.NewReader(`{"user_logins_per_minute":1,"block_seconds":5}`)))
	if w.Code != 200 {
		t.Fatalf("POST /_fake/config: %d", w.Code)
	}
	login(f, user, password, "10.0.0.1")
	if w := login(f, user, password, "10.0.0.1"); w.Code != 429 || w.Header().Get("Retry-After") != "5" {
		t.Fatalf("status %d, Retry-After %q; want 429, 5", w.Code, w.Header().Get("Retry-After"))
	}
	clock.Advance(60 * time.Second)
	if w := login(f, user, password, "10.0.0.1"); w.Code != 200 {
		t.Fatalf("status %d, want 200", w.Code)
	}
}

// TestNoSecretsLogged drives every path with logging on and checks the log
// names users but never shows a password, client secret or access token.
func TestNoSecretsLogged(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	logger := log.New(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return buf.Write(p)
	}), "", 0)
	f, _ := newFake(t, Options{Logger: logger, UserLoginsPerMinute: 3})

	var tokens []string
	collect := func(w *httptest.ResponseRecorder) {
		var m map[string]any
		if json.Unmarshal(w.Body.Bytes(), &m) == nil {
			if tok, ok := m["access_token"].(string); ok {
				tokens = append(tokens, tok)
			}
		}
	}
	collect(login(f, user, password, "10.0.0.1"))
	login(f, user, "wrong-"+password, "10.0.0.1")
	r := tokenRequestFor(url.Values{"grant_type": {"client_credentials"}})
	r.Header.Set("Authorization", rawBasic(clientID, secret))
	collect(serve(f, r))
	r = tokenRequestFor(url.Values{"grant_type": {"client_credentials"}})
	r.Header.Set("Authorization", rawBasic(clientID, "wrong-"+secret))
	serve(f, r)
	for _, mode := range []FaultMode{FaultNoExpiresIn, FaultHugeBody, FaultServerError,
		FaultEchoSecret, FaultEchoSecretURLEncoded, FaultEchoSecretBase64, FaultEchoSecretForm} {
		_ = f.InjectFault(Fault{Mode: mode, Count: 1})
		collect(login(f, "dave", password, "10.0.0.2"))
	}
	r = tokenRequestFor(url.Values{"grant_type": {"client_credentials"}})
	r.Header.Set("Authorization", rawBasic(clientID, secret))
	_ = f.InjectFault(Fault{Mode: FaultEchoSecret, Count: 1})
	serve(f, r)
	login(f, user, password, "10.0.0.1")
	login(f, user, password, "10.0.0.1") // rate limited
	for _, tok := range tokens {
		verify(f, tok)
		callAPI(f, "Bearer "+tok)
	}
	serve(f, httptest.NewRequest(http.MethodPost, "/_fake/revoke", strings.NewReader(`{"username":"alice"}`)))
	serve(f, httptest.NewRequest(http.MethodPost, "/_fake/revoke", strings.NewReader(`{"client_id":"my client"}`)))
	for _, tok := range tokens {
		callAPI(f, "Bearer "+tok)
	}
	f.RevokeAll()
	serve(f, httptest.NewRequest(http.MethodPost, "/_fake/users",
		strings.NewReader(`{"username":"erin","password":"`+password+`x"}`)))
	serve(f, httptest.NewRequest(http.MethodPost, "/_fake/clients",
		strings.NewReader(`{"client_id":"svc","client_secret":"`+secret+`x"}`)))

	if len(tokens) != 4 {
		t.Fatalf("collected %d tokens, want 4", len(tokens))
	}
	mu.Lock()
	logged := buf.String()
	mu.Unlock()
	for _, s := range append([]string{password, secret, url.QueryEscape(password), url.QueryEscape(secret),
		base64.StdEncoding.EncodeToString([]byte(password)), base64.StdEncoding.EncodeToString([]byte(secret))}, tokens...) {
		if strings.Contains(logged, s) {
			t.Errorf("the log contains a secret or token (not shown)")
		}
	}
	for _, name := range []string{user, clientID, "dave", "erin", "svc"} {
		if !strings.Contains(logged, name) {
			t.Errorf("the log does not mention %q", name)
		}
	}
}

// writerFunc adapts a function to io.Writer.
type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestConcurrentUse hammers every entry point at once; run with -race.
func TestConcurrentUse(t *testing.T) {
	f, clock := newFake(t, Options{UserLoginsPerMinute: -1, IPLoginsPerMinute: -1})
	const workers, each = 8, 50
	var wg sync.WaitGroup
	for i := range workers {
		wg.Go(func() {
			for j := range each {
				w := login(f, user, password, "10.0.0.1")
				if w.Code != 200 {
					t.Errorf("status %d", w.Code)
					return
				}
				var b tokenBody
				if err := json.Unmarshal(w.Body.Bytes(), &b); err != nil || b.AccessToken == nil {
					t.Errorf("token answer is not a token (decode error %v)", err)
					return
				}
				if code := verify(f, *b.AccessToken); code != 200 {
					t.Errorf("/_authenticated = %d, want 200", code)
					return
				}
				if code := callAPI(f, "Bearer "+*b.AccessToken).Code; code != 200 {
					t.Errorf("API = %d, want 200", code)
					return
				}
				switch (i + j) % 6 {
				case 0:
					f.Stats()
				case 1:
					f.MaxAttemptsInWindow(time.Minute)
				case 2:
					f.LoginTimes()
				case 3:
					f.SetTokenLifetime(time.Hour)
				case 4:
					clock.Advance(time.Millisecond)
				case 5:
					f.RevokeUser("nobody")
				}
			}
		})
	}
	wg.Wait()
	st := f.Stats()
	if st.LoginAttempts != workers*each || st.LoginSuccesses != workers*each || st.VerifyCalls != workers*each ||
		st.APICalls != workers*each || st.UserAttempts[user] != workers*each {
		t.Errorf("stats = %+v", st)
	}
}

func TestResetWhileHanging(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, _ := newFake(t, Options{}) // its cleanup checks the counters add up
		if err := f.InjectFault(Fault{Mode: FaultHang}); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			login(f, user, password, "10.0.0.1")
		}()
		synctest.Wait()
		f.Reset()
		if st := f.Stats(); st.LoginAttempts != 1 || st.Hanging != 1 {
			t.Errorf("after Reset: attempts %d, hanging %d; want 1, 1", st.LoginAttempts, st.Hanging)
		}
		f.ClearFault()
		<-done
		if st := f.Stats(); st.LoginAttempts != 1 || st.LoginSuccesses != 1 || st.Hanging != 0 {
			t.Errorf("after release: %+v", st)
		}
	})
}

// SetHandler: the handler answers every request but the admin API's, counted
// apart (and its token requests timed), until it is removed.
func TestSetHandlerAnswersInTheFakesStead(t *testing.T) {
	f, clock := newFake(t, Options{})
	f.SetHandler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusTeapot)
	}))
	if w := login(f, user, password, "10.0.0.1"); w.Code != http.StatusTeapot {
		t.Fatalf("token request with a handler: %d, want 418", w.Code)
	}
	clock.Advance(time.Second)
	if code := verify(f, "anything"); code != http.StatusTeapot {
		t.Fatalf("verify with a handler: %d, want 418", code)
	}
	if w := serve(f, httptest.NewRequest(http.MethodGet, "/_fake/stats", nil)); w.Code != http.StatusOK {
		t.Fatalf("admin API with a handler: %d, want 200", w.Code)
	}
	st := f.Stats()
	if st.Handled != 2 || st.LoginAttempts != 0 || st.VerifyCalls != 0 || st.TokensIssued != 0 {
		t.Fatalf("stats = %+v, want handled 2 and nothing else", st)
	}
	if times := f.LoginTimes(); len(times) != 1 || !times[0].Equal(fakeclock.Start) {
		t.Fatalf("login times = %v, want the token request's alone", times)
	}

	f.SetHandler(nil)
	w := login(f, user, password, "10.0.0.1")
	if w.Code != http.StatusOK {
		t.Fatalf("token request after SetHandler(nil): %d, want 200", w.Code)
	}
	if st := f.Stats(); st.Handled != 2 || st.LoginSuccesses != 1 {
		t.Fatalf("stats = %+v, want handled 2 and one login", st)
	}
}

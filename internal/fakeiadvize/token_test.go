package fakeiadvize

import (
	"cmp"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

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

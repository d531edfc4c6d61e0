package fakeiadvize

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"
)

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

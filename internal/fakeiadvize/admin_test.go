package fakeiadvize

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

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

package fakeiadvize

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// noRedirects is an HTTP client that shows redirects instead of following them.
var noRedirects = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// wireAnswer is a token answer as it came over a real connection.
type wireAnswer struct {
	status int
	header http.Header
	body   []byte
}

// postWire sends a token request to a real server, with an optional
// Authorization header, and reads the whole answer.
func postWire(t *testing.T, base string, form url.Values, authorization string) wireAnswer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"/oauth2/token", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := noRedirects.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return wireAnswer{resp.StatusCode, resp.Header, body}
}

// tokenIn finds the access token of an answer in any of the shapes the fake
// sends: JSON (after an optional byte-order mark) or form-encoded.
func tokenIn(body []byte) string {
	var m struct {
		AccessToken string `json:"access_token"`
	}
	if json.Unmarshal(bytes.TrimPrefix(body, []byte("\xEF\xBB\xBF")), &m) == nil {
		return m.AccessToken
	}
	if v, err := url.ParseQuery(string(body)); err == nil {
		return v.Get("access_token")
	}
	return ""
}

// TestTokenAnswerShapes checks, byte for byte and over a real connection (so
// an absent Content-Type is really absent), every valid token answer shape
// the fake can send, and that each token lives exactly as long as the answer
// says.
func TestTokenAnswerShapes(t *testing.T) {
	const std = `{"access_token":"TOKEN","expires_in":86400,"token_type":"Bearer","refresh_token":"none"}` + "\n"
	tests := []struct {
		mode     FaultMode
		wantType []string // Content-Type values; nil for no header
		want     string   // the body, TOKEN standing for the access token
		lifetime time.Duration
	}{
		{FaultJSONTextPlain, []string{"text/plain"}, std, 24 * time.Hour},
		{FaultJSONTextHTML, []string{"text/html"}, std, 24 * time.Hour},
		{FaultJSONNoContentType, nil, std, 24 * time.Hour},
		{FaultJSONCharset, []string{"application/json; charset=utf-8"}, std, 24 * time.Hour},
		{FaultJSONBOM, []string{"application/json"}, "\xEF\xBB\xBF" + std, 24 * time.Hour},
		{FaultFormToken, []string{"application/x-www-form-urlencoded"},
			"access_token=TOKEN&expires_in=86400&refresh_token=none&token_type=Bearer", 24 * time.Hour},
		{FaultDecimalExpiresIn, []string{"application/json"},
			`{"access_token":"TOKEN","expires_in":3599.5,"token_type":"Bearer","refresh_token":"none"}` + "\n", 3599500 * time.Millisecond},
		{FaultStringExpiresIn, []string{"application/json"},
			`{"access_token":"TOKEN","expires_in":"3600","token_type":"Bearer","refresh_token":"none"}` + "\n", time.Hour},
		{FaultHugeExpiresIn, []string{"application/json"},
			`{"access_token":"TOKEN","expires_in":2147483647,"token_type":"Bearer","refresh_token":"none"}` + "\n", 2147483647 * time.Second},
		{FaultLowercaseTokenType, []string{"application/json"},
			`{"access_token":"TOKEN","expires_in":86400,"token_type":"bearer","refresh_token":"none"}` + "\n", 24 * time.Hour},
		{FaultUppercaseTokenType, []string{"application/json"},
			`{"access_token":"TOKEN","expires_in":86400,"token_type":"BEARER","refresh_token":"none"}` + "\n", 24 * time.Hour},
		{FaultNoTokenType, []string{"application/json"},
			`{"access_token":"TOKEN","expires_in":86400,"refresh_token":"none"}` + "\n", 24 * time.Hour},
		{FaultNoExpiresIn, []string{"application/json"},
			`{"access_token":"TOKEN","token_type":"Bearer","refresh_token":"none"}` + "\n", 24 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(string(tt.mode), func(t *testing.T) {
			f, clock := newFake(t, Options{})
			ts := httptest.NewServer(f)
			t.Cleanup(ts.Close)
			if err := f.InjectFault(Fault{Mode: tt.mode, Count: 1}); err != nil {
				t.Fatal(err)
			}
			a := postWire(t, ts.URL, passwordForm(user, password), "")
			if a.status != 200 {
				t.Fatalf("status %d, want 200", a.status)
			}
			if got := a.header.Values("Content-Type"); strings.Join(got, ",") != strings.Join(tt.wantType, ",") {
				t.Errorf("Content-Type %q, want %q", got, tt.wantType)
			}
			tok := tokenIn(a.body)
			if tok == "" {
				t.Fatal("no access_token in the answer")
			}
			if want := strings.Replace(tt.want, "TOKEN", tok, 1); string(a.body) != want {
				// The body holds a token: show its shape only.
				t.Errorf("body mismatch:\n got %q\nwant %q", strings.Replace(string(a.body), tok, "TOKEN", 1), tt.want)
			}
			clock.Advance(tt.lifetime - time.Nanosecond)
			if code := verify(f, tok); code != 200 {
				t.Errorf("token just before its advertised expiry: %d, want 200", code)
			}
			clock.Advance(time.Nanosecond)
			if code := verify(f, tok); code != 401 {
				t.Errorf("token at its advertised expiry: %d, want 401", code)
			}
			st := f.Stats()
			if st.LoginAttempts != 1 || st.InjectedFaults != 1 || st.TokensIssued != 1 || st.LoginSuccesses != 0 {
				t.Errorf("stats = %+v", st)
			}
		})
	}
}

// TestFailureAnswerShapes checks, byte for byte, the failure answers the new
// faults send: errors in a 200, secret echoes, Retry-After on 429 and 503,
// redirects.
func TestFailureAnswerShapes(t *testing.T) {
	// password is "pa:ss word/+&=": JSON escapes its '&', the form encoding
	// most of it.
	descForm := url.QueryEscape(echoPrefix + password)
	tests := []struct {
		name         string
		fault        Fault
		wantStatus   int
		wantType     string
		wantHeader   map[string]string
		want         string
		wantInjected int // InjectedFaults; otherwise InjectedRateLimited
	}{
		{
			name: "error in a 200, credentials", fault: Fault{Mode: FaultError200Credentials},
			wantStatus: 200, wantType: "application/json",
			want: `{"error":"incorrect_client_credentials"}` + "\n", wantInjected: 1,
		},
		{
			name: "error in a 200, temporary", fault: Fault{Mode: FaultError200Temporary},
			wantStatus: 200, wantType: "application/json",
			want: `{"error":"temporarily_unavailable"}` + "\n", wantInjected: 1,
		},
		{
			name: "echo, raw in JSON", fault: Fault{Mode: FaultEchoSecret},
			wantStatus: 400, wantType: "application/json",
			want:         `{"error":"invalid_grant","error_description":"` + echoPrefix + `pa:ss word/+\u0026="}` + "\n",
			wantInjected: 1,
		},
		{
			name: "echo, form-encoded in JSON", fault: Fault{Mode: FaultEchoSecretURLEncoded},
			wantStatus: 400, wantType: "application/json",
			want:         `{"error":"invalid_grant","error_description":"` + echoPrefix + `pa%3Ass+word%2F%2B%26%3D"}` + "\n",
			wantInjected: 1,
		},
		{
			name: "echo, base64 in JSON", fault: Fault{Mode: FaultEchoSecretBase64},
			wantStatus: 400, wantType: "application/json",
			want: `{"error":"invalid_grant","error_description":"` + echoPrefix +
				base64.StdEncoding.EncodeToString([]byte(password)) + `"}` + "\n",
			wantInjected: 1,
		},
		{
			name: "echo, form-encoded body", fault: Fault{Mode: FaultEchoSecretForm},
			wantStatus: 400, wantType: "application/x-www-form-urlencoded",
			want: "error=invalid_grant&error_description=" + descForm, wantInjected: 1,
		},
		{
			name: "429 with a year of Retry-After", fault: Fault{Mode: FaultRateLimit, RetryAfter: 31536000},
			wantStatus: 429, wantType: "application/json", wantHeader: map[string]string{"Retry-After": "31536000"},
			want: `{"error":"too_many_requests","error_description":"too many requests, retry later"}` + "\n",
		},
		{
			name: "503 with Retry-After", fault: Fault{Mode: FaultUnavailableRetryAfter, RetryAfter: 7},
			wantStatus: 503, wantType: "application/json", wantHeader: map[string]string{"Retry-After": "7"},
			want:         `{"error":"temporarily_unavailable","error_description":"the service is temporarily unavailable, retry later"}` + "\n",
			wantInjected: 1,
		},
		{
			name: "502 with the default Retry-After", fault: Fault{Mode: FaultUnavailableRetryAfter, Status: 502},
			wantStatus: 502, wantType: "application/json", wantHeader: map[string]string{"Retry-After": "60"},
			want:         `{"error":"temporarily_unavailable","error_description":"the service is temporarily unavailable, retry later"}` + "\n",
			wantInjected: 1,
		},
		{
			name: "302 redirect", fault: Fault{Mode: FaultRedirect, Location: "http://127.0.0.2:9/oauth2/token?a=1&b=2"},
			wantStatus: 302, wantType: "text/html; charset=utf-8",
			wantHeader:   map[string]string{"Location": "http://127.0.0.2:9/oauth2/token?a=1&b=2"},
			want:         `<a href="http://127.0.0.2:9/oauth2/token?a=1&amp;b=2">Moved</a>.` + "\n",
			wantInjected: 1,
		},
		{
			name: "307 redirect", fault: Fault{Mode: FaultRedirect, Status: 307, Location: "https://localhost:8443/token"},
			wantStatus: 307, wantType: "text/html; charset=utf-8",
			wantHeader:   map[string]string{"Location": "https://localhost:8443/token"},
			want:         `<a href="https://localhost:8443/token">Moved</a>.` + "\n",
			wantInjected: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, _ := newFake(t, Options{})
			ts := httptest.NewServer(f)
			t.Cleanup(ts.Close)
			fault := tt.fault
			fault.Count = 1
			if err := f.InjectFault(fault); err != nil {
				t.Fatal(err)
			}
			a := postWire(t, ts.URL, passwordForm(user, password), "")
			if a.status != tt.wantStatus {
				t.Fatalf("status %d, want %d", a.status, tt.wantStatus)
			}
			if got := a.header.Get("Content-Type"); got != tt.wantType {
				t.Errorf("Content-Type %q, want %q", got, tt.wantType)
			}
			for k, v := range tt.wantHeader {
				if got := a.header.Get(k); got != v {
					t.Errorf("%s %q, want %q", k, got, v)
				}
			}
			if string(a.body) != tt.want {
				// The body may echo the test password, which is never printed.
				t.Errorf("body mismatch (%d bytes, want %d)", len(a.body), len(tt.want))
			}
			st := f.Stats()
			if st.LoginAttempts != 1 || st.InjectedFaults != tt.wantInjected ||
				st.InjectedRateLimited != 1-tt.wantInjected || st.TokensIssued != 0 {
				t.Errorf("stats = %+v", st)
			}
			// The fault is used up.
			if a := postWire(t, ts.URL, passwordForm(user, password), ""); a.status != 200 {
				t.Errorf("after the fault: status %d, want 200", a.status)
			}
		})
	}
}

func TestEchoPrefix(t *testing.T) {
	if len(echoPrefix) != EchoPrefixLen || len([]rune(echoPrefix)) != EchoPrefixLen {
		t.Fatalf("echo prefix is %d bytes, want %d characters", len(echoPrefix), EchoPrefixLen)
	}
	if b, _ := json.Marshal(echoPrefix); string(b) != `"`+echoPrefix+`"` {
		t.Errorf("the echo prefix needs escaping in JSON")
	}
}

// TestEchoSecretClientCredentials: the client-credentials grant gets its
// client secret echoed, whichever way it was sent.
func TestEchoSecretClientCredentials(t *testing.T) {
	for _, tc := range []struct {
		name  string
		mode  BasicAuthMode
		form  url.Values
		basic string
	}{
		{"raw basic", BasicAuthRaw, url.Values{"grant_type": {"client_credentials"}}, rawBasic(clientID, secret)},
		{"urlencoded basic", BasicAuthURLEncoded, url.Values{"grant_type": {"client_credentials"}}, basicAuth(clientID, secret)},
		{"post", BasicAuthRaw, url.Values{"grant_type": {"client_credentials"}, "client_id": {clientID}, "client_secret": {secret}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, _ := newFake(t, Options{BasicAuth: tc.mode})
			if err := f.InjectFault(Fault{Mode: FaultEchoSecretBase64, Count: 1}); err != nil {
				t.Fatal(err)
			}
			r := tokenRequestFor(tc.form)
			if tc.basic != "" {
				r.Header.Set("Authorization", tc.basic)
			}
			e := decodeError(t, serve(f, r))
			if e.Error != "invalid_grant" || e.Description != echoPrefix+base64.StdEncoding.EncodeToString([]byte(secret)) {
				t.Errorf("the description is not the prefix and the base64 client secret (error %q, %d characters)",
					e.Error, len(e.Description))
			}
		})
	}
}

// TestFaultForOneUser: a fault limited to one user leaves the others alone
// and waits for that user's request.
func TestFaultForOneUser(t *testing.T) {
	f, _ := newFake(t, Options{})
	f.AddUser("bob", "bob-pass")
	if err := f.InjectFault(Fault{Mode: FaultHTML, Count: 1, User: "bob"}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if w := login(f, user, password, "10.0.0.1"); w.Code != 200 {
			t.Fatalf("another user: status %d, want 200", w.Code)
		}
	}
	if st := f.Stats(); st.Fault.Mode != FaultHTML || st.Fault.Count != 1 || st.Fault.User != "bob" {
		t.Fatalf("the fault was used by another user: %+v", st.Fault)
	}
	if w := login(f, "bob", "bob-pass", "10.0.0.1"); w.Code != 502 {
		t.Fatalf("bob: status %d, want the injected 502", w.Code)
	}
	if w := login(f, "bob", "bob-pass", "10.0.0.1"); w.Code != 200 {
		t.Fatalf("bob after the fault: status %d, want 200", w.Code)
	}
	// A client-credentials fault targets the client_id.
	if err := f.InjectFault(Fault{Mode: FaultError200Credentials, Count: 1, User: clientID}); err != nil {
		t.Fatal(err)
	}
	r := tokenRequestFor(url.Values{"grant_type": {"client_credentials"}, "client_id": {clientID}, "client_secret": {secret}})
	if e := decodeError(t, serve(f, r)); e.Error != "incorrect_client_credentials" {
		t.Errorf("client %q: error %q, want the injected one", clientID, e.Error)
	}
	if st := f.Stats(); st.InjectedFaults != 2 || st.LoginSuccesses != 4 {
		t.Errorf("stats = %+v", st)
	}
}

func TestNewFaultValidation(t *testing.T) {
	f, _ := newFake(t, Options{})
	for i, bad := range []Fault{
		{Mode: FaultRedirect},
		{Mode: FaultRedirect, Location: "/relative"},
		{Mode: FaultRedirect, Location: "ftp://127.0.0.1/x"},
		{Mode: FaultRedirect, Location: "http://127.0.0.2/x", Status: 200},
		{Mode: FaultRedirect, Location: "http://127.0.0.2/x", Status: 503},
		{Mode: FaultServerError, Status: 302},
		{Mode: FaultUnavailableRetryAfter, Status: 429},
		{Mode: FaultUnavailableRetryAfter, RetryAfter: -1},
		{Mode: FaultHTML, Location: "http://127.0.0.2/x"},
	} {
		if err := f.InjectFault(bad); err == nil {
			t.Errorf("fault %d (%s) accepted, want an error", i, bad.Mode)
		}
	}
	for _, ok := range []Fault{
		{Mode: FaultRedirect, Location: "http://127.0.0.2:1/oauth2/token", Status: 308},
		{Mode: FaultUnavailableRetryAfter, Status: 500, RetryAfter: 3600},
	} {
		if err := f.InjectFault(ok); err != nil {
			t.Errorf("fault %s: %v", ok.Mode, err)
		}
	}
	if got := KnownFaultModes(); len(got) != len(knownModes) || got[0] != FaultNone {
		t.Errorf("KnownFaultModes() = %v", got)
	}
}

func TestBasicAuthModeSwitch(t *testing.T) {
	f, _ := newFake(t, Options{})
	ccRaw := func() int {
		r := tokenRequestFor(url.Values{"grant_type": {"client_credentials"}})
		r.Header.Set("Authorization", rawBasic(clientID, secret))
		return serve(f, r).Code
	}
	if code := ccRaw(); code != 200 {
		t.Fatalf("default mode, raw basic: %d, want 200", code)
	}
	if err := f.SetBasicAuth(BasicAuthURLEncoded); err != nil {
		t.Fatal(err)
	}
	// "s3cr:et/+&=%" ends in a lone '%': not form-decodable.
	if code := ccRaw(); code != 400 {
		t.Fatalf("urlencoded mode, raw basic: %d, want 400", code)
	}
	if err := f.SetBasicAuth("plain"); err == nil {
		t.Fatal("SetBasicAuth accepted an unknown mode")
	}
	if err := f.SetBasicAuth(BasicAuthRaw); err != nil {
		t.Fatal(err)
	}
	if code := ccRaw(); code != 200 {
		t.Fatalf("raw mode again: %d, want 200", code)
	}
	f.SetRequireClient(true)
	if w := login(f, user, password, "10.0.0.1"); w.Code != 401 {
		t.Fatalf("password grant without a client, client required: %d, want 401", w.Code)
	}
	f.SetRequireClient(false)
	if w := login(f, user, password, "10.0.0.1"); w.Code != 200 {
		t.Fatalf("password grant without a client, client optional: %d, want 200", w.Code)
	}

	defer func() {
		if recover() == nil {
			t.Error("New accepted an unknown BasicAuth mode")
		}
	}()
	New(Options{BasicAuth: "plain"})
}

// TestAdminClientAuth drives the new switches and public clients through the
// admin API, and reads what the last request sent from /_fake/stats.
func TestAdminClientAuth(t *testing.T) {
	f, _ := newFake(t, Options{})
	ts := httptest.NewServer(f)
	t.Cleanup(ts.Close)
	post := func(path, body string) int {
		t.Helper()
		resp, err := http.Post(ts.URL+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	stats := func() map[string]any {
		t.Helper()
		resp, err := http.Get(ts.URL + "/_fake/stats")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
			t.Fatal(err)
		}
		return m
	}

	for i, tc := range []struct {
		path, body string
		want       int
	}{
		{"/_fake/config", `{"basic_auth":"urlencoded","require_client":true}`, 200},
		{"/_fake/config", `{"basic_auth":"plain"}`, 400},
		{"/_fake/clients", `{"client_id":"pub","public":true}`, 200},
		{"/_fake/clients", `{"client_id":"pub2","public":true,"client_secret":"x"}`, 400},
		{"/_fake/clients", `{"public":true}`, 400},
		{"/_fake/fault", `{"mode":"redirect","location":"http://127.0.0.2:1/oauth2/token","count":1,"user":"someone"}`, 200},
		{"/_fake/fault", `{"mode":"redirect"}`, 400},
	} {
		if code := post(tc.path, tc.body); code != tc.want {
			t.Errorf("admin request %d (POST %s): %d, want %d", i, tc.path, code, tc.want)
		}
	}
	fault, _ := stats()["fault"].(map[string]any)
	if fault["mode"] != "redirect" || fault["user"] != "someone" || fault["location"] != "http://127.0.0.2:1/oauth2/token" {
		t.Errorf("stats fault = %v", fault)
	}

	// Client required: none is 401; the public client is fine.
	if a := postWire(t, ts.URL, passwordForm(user, password), ""); a.status != 401 {
		t.Errorf("no client: %d, want 401", a.status)
	}
	form := passwordForm(user, password)
	form.Set("client_id", "pub")
	if a := postWire(t, ts.URL, form, ""); a.status != 200 {
		t.Errorf("public client: %d, want 200", a.status)
	}
	if m := stats(); m["last_client_auth"] != "none" || m["last_client_id"] != "pub" || m["last_client_id_in_form"] != true ||
		m["last_grant_type"] != "password" {
		t.Errorf("stats after the public client: auth %v, client %v, in form %v, grant %v",
			m["last_client_auth"], m["last_client_id"], m["last_client_id_in_form"], m["last_grant_type"])
	}
	// urlencoded mode: the form-encoded Basic of RFC 6749.
	if a := postWire(t, ts.URL, passwordForm(user, password), basicAuth(clientID, secret)); a.status != 200 {
		t.Errorf("urlencoded basic: %d, want 200", a.status)
	}
	if m := stats(); m["last_client_auth"] != "basic" || m["last_client_id"] != clientID || m["last_client_id_in_form"] != false {
		t.Errorf("stats after basic: auth %v, client %v, in form %v", m["last_client_auth"], m["last_client_id"], m["last_client_id_in_form"])
	}
	if code := post("/_fake/config", `{"basic_auth":"raw","require_client":false}`); code != 200 {
		t.Fatalf("config back: %d", code)
	}
	if a := postWire(t, ts.URL, passwordForm(user, password), basicAuth(clientID, secret)); a.status != 401 {
		t.Errorf("raw mode, escaped basic: %d, want 401", a.status)
	}
	if a := postWire(t, ts.URL, passwordForm(user, password), ""); a.status != 200 {
		t.Errorf("client optional, none sent: %d, want 200", a.status)
	}
}

// TestEndpoints: every endpoint that Endpoints lists is served with its
// method, and has a description.
func TestEndpoints(t *testing.T) {
	f, _ := newFake(t, Options{})
	eps := Endpoints()
	if len(eps) < 9 {
		t.Fatalf("Endpoints() lists %d endpoints", len(eps))
	}
	for _, ep := range eps {
		if ep.Description == "" || strings.Contains(ep.Description, "\n") {
			t.Errorf("%s %s: description must be one non-empty line", ep.Method, ep.Path)
		}
		w := serve(f, httptest.NewRequest(ep.Method, ep.Path, strings.NewReader("")))
		if w.Code == http.StatusNotFound || w.Code == http.StatusMethodNotAllowed {
			t.Errorf("%s %s: %d", ep.Method, ep.Path, w.Code)
		}
	}
	if w := serve(f, httptest.NewRequest(http.MethodGet, "/_fake/nothing", nil)); w.Code != 404 {
		t.Errorf("an unlisted path: %d, want 404", w.Code)
	}
}

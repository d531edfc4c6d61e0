package fakeiadvize

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
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

package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeclock"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
)

const (
	role       = "crm-sync"
	username   = "svc-crm"
	password   = "pw-Zq8/+x=3"
	vaultToken = "hvs.consumer-test"
	lifetime   = 24 * time.Hour
)

// world is one test's fake upstream (the token endpoint and the API) and
// stand-in Vault, and the trace of what the consumers did, in order.
type world struct {
	t     *testing.T
	clock *fakeclock.Clock
	fake  *fakeiadvize.Server
	up    *httptest.Server
	vault *standIn

	mu     sync.Mutex
	trace  []string
	tokens []string // every token the stand-in got, T1 first
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{t: t, clock: fakeclock.New()}
	w.fake = fakeiadvize.New(fakeiadvize.Options{Now: w.clock.Now, TokenLifetime: lifetime})
	w.fake.AddUser(username, password)
	w.up = httptest.NewServer(w.fake)
	t.Cleanup(w.up.Close)
	t.Cleanup(w.fake.Close)
	w.vault = &standIn{w: w}
	ts := httptest.NewServer(w.vault)
	t.Cleanup(ts.Close)
	t.Setenv("VAULT_ADDR", ts.URL)
	t.Setenv("VAULT_TOKEN", vaultToken)
	t.Setenv("VAULT_AGENT_ADDR", "")
	t.Setenv("VAULT_NAMESPACE", "")
	return w
}

func (w *world) record(format string, args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.trace = append(w.trace, fmt.Sprintf(format, args...))
}

// name is "T1", "T2"... for the tokens the stand-in got, "T?" for another.
func (w *world) name(tok string) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if i := slices.Index(w.tokens, tok); i >= 0 {
		return fmt.Sprintf("T%d", i+1)
	}
	return "T?"
}

// redact replaces every token the stand-in got with its name.
func (w *world) redact(s string) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, tok := range w.tokens {
		s = strings.ReplaceAll(s, tok, fmt.Sprintf("[T%d]", i+1))
	}
	return s
}

// consumer returns a consumer of path whose API calls go to the fake and whose
// waits are recorded, not slept; before, if set, runs before the n-th API call
// (from 1) and may answer in the API's stead.
func (w *world) consumer(path string, tries int, out *bytes.Buffer, before func(n int) *http.Response) *consumer {
	w.t.Helper()
	vault, err := vaultClient()
	if err != nil {
		w.t.Fatal(err)
	}
	n := 0
	rt := roundTripper(func(r *http.Request) (*http.Response, error) {
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		n++
		var resp *http.Response
		if before != nil {
			resp = before(n)
		}
		if resp == nil {
			var err error
			if resp, err = http.DefaultTransport.RoundTrip(r); err != nil {
				return nil, err
			}
		}
		w.record("api %s %d", w.name(tok), resp.StatusCode)
		return resp, nil
	})
	return &consumer{vault: vault, path: path, apiURL: w.up.URL + fakeiadvize.APIPath,
		http: &http.Client{Transport: rt}, interval: 3 * time.Second, tries: tries, out: out,
		sleep: func(_ context.Context, d time.Duration) error {
			w.record("sleep %s", d)
			return nil
		}}
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// refusal is a 401 as an API sends it for a token that /_authenticated still
// takes (a token without the scope the call needs).
func refusal() *http.Response {
	return &http.Response{StatusCode: http.StatusUnauthorized, Header: http.Header{},
		Body: http.NoBody, Status: "401 Unauthorized"}
}

// standIn is a stand-in Vault with one role, answering a read of
// iadvize/creds/crm-sync or iadvize/static-creds/crm-sync, and a refused-token
// report written to either, as the README ("When the API refuses the token") says: a hash that is not the
// cached token's gets the current token; the cached token's is checked at the
// fake's /_authenticated, and replaced by a login only when invalid there.
type standIn struct {
	w *world

	mu           sync.Mutex
	token        string
	issued       time.Time
	reports      []string // the hashes reported, in order
	reportStatus int      // when set, a report is refused with this status (as the 5-minute rule of the README answers 429)
}

func (v *standIn) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	path := strings.TrimPrefix(r.URL.Path, "/v1/")
	static := path == "iadvize/static-creds/"+role
	if !static && path != "iadvize/creds/"+role {
		vaultError(rw, http.StatusNotFound, "no handler for route "+path)
		return
	}
	if r.Header.Get("X-Vault-Token") != vaultToken {
		vaultError(rw, http.StatusForbidden, "permission denied")
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	var warnings []string
	switch r.Method {
	case http.MethodGet:
		defer func() { v.w.record("read %s", v.w.name(v.token)) }()
	case http.MethodPut, http.MethodPost:
		var body struct {
			Hash string `json:"refused_token_sha256"`
		}
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&body); err != nil || len(body.Hash) != 64 || hex.EncodeToString(mustHex(body.Hash)) != body.Hash {
			vaultError(rw, http.StatusBadRequest, "refused_token_sha256 must be 64 hex digits")
			return
		}
		v.reports = append(v.reports, body.Hash)
		reported := v.w.nameOfHash(body.Hash)
		if v.reportStatus != 0 {
			v.w.record("report %s %d", reported, v.reportStatus)
			vaultError(rw, v.reportStatus, "a report may act again later")
			return
		}
		if body.Hash == sha(v.token) {
			if v.verify() {
				warnings = append(warnings, "the token is valid upstream: the refusal has another cause")
			} else {
				v.token = ""
			}
		}
		defer func() { v.w.record("report %s -> %s", reported, v.w.name(v.token)) }()
	default:
		vaultError(rw, http.StatusMethodNotAllowed, "unsupported operation")
		return
	}
	if v.token == "" {
		v.login()
	}
	expire := v.issued.Add(lifetime)
	ttl := int(expire.Sub(v.w.clock.Now()).Seconds()) - 30
	answer := map[string]any{
		"data": map[string]any{
			"access_token": v.token, "token_type": "Bearer", "expire_time": expire.Format(time.RFC3339),
		},
		"warnings": warnings,
	}
	if static {
		data := answer["data"].(map[string]any)
		data["ttl"], data["rotation_period"], data["last_vault_rotation"] = ttl-3600, 23*3600, v.issued.Format(time.RFC3339)
	} else {
		answer["lease_id"], answer["lease_duration"], answer["renewable"] = "iadvize/creds/"+role+"/x", ttl, false
	}
	rw.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(rw).Encode(answer)
}

// nameOfHash is the name of the token whose SHA-256 is hash.
func (w *world) nameOfHash(hash string) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, tok := range w.tokens {
		if sha(tok) == hash {
			return fmt.Sprintf("T%d", i+1)
		}
	}
	return "T?"
}

func mustHex(s string) []byte {
	b, _ := hex.DecodeString(s)
	return b
}

func vaultError(rw http.ResponseWriter, status int, msg string) {
	rw.Header().Set("Content-Type", "application/json")
	rw.WriteHeader(status)
	_ = json.NewEncoder(rw).Encode(map[string][]string{"errors": {msg}})
}

// login gets a token from the fake (the lock held).
func (v *standIn) login() {
	form := url.Values{"grant_type": {"password"}, "username": {username}, "password": {password}}
	resp, err := http.PostForm(v.w.up.URL+"/oauth2/token", form)
	if err != nil {
		v.w.t.Errorf("stand-in login: %v", err)
		return
	}
	defer resp.Body.Close()
	var body struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.AccessToken == "" {
		v.w.t.Errorf("stand-in login: status %d, no token", resp.StatusCode)
		return
	}
	v.token, v.issued = body.AccessToken, v.w.clock.Now()
	v.w.mu.Lock()
	v.w.tokens = append(v.w.tokens, v.token)
	v.w.mu.Unlock()
}

// verify checks the cached token at the fake's /_authenticated (the lock held).
func (v *standIn) verify() bool {
	req, _ := http.NewRequest(http.MethodGet, v.w.up.URL+"/_authenticated", nil)
	req.Header.Set("Authorization", "Bearer "+v.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		v.w.t.Errorf("stand-in verify: %v", err)
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// prime makes the stand-in log in, as a first read would have.
func (v *standIn) prime() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.login()
}

var doneLine = regexp.MustCompile(`(?m)^consumer done: calls=\d+ ok=\d+ failed=\d+ refused=\d+ reported=\d+ reads=\d+$`)

// TestConsumer: with the real fake as the API and a stand-in Vault, the
// consumer keeps its token while the API takes it, reports a refused token
// exactly once with its SHA-256 and goes on with the answer's token, waits
// before re-reading when a token is refused again, gives up after -tries
// attempts, and never prints a token.
func TestConsumer(t *testing.T) {
	tests := []struct {
		name         string
		calls, tries int
		revoked      bool                       // the stand-in's token is revoked before the run
		before       func(w *world, n int) bool // before API call n: true answers 401 in the API's stead
		reportStatus int
		want         []string // the trace
		wantReports  []string // the tokens reported, by name
		wantOK       bool
		wantDone     string
		wantLines    []string // lines of the output, {Tn} standing for the fingerprint of Tn
	}{
		{name: "token taken", calls: 3, tries: 2,
			want:   []string{"read T1", "api T1 200", "sleep 3s", "api T1 200", "sleep 3s", "api T1 200"},
			wantOK: true, wantDone: "calls=3 ok=3 failed=0 refused=0 reported=0 reads=1"},
		{name: "revoked before the first call", calls: 2, tries: 2, revoked: true,
			want:        []string{"read T1", "api T1 401", "report T1 -> T2", "api T2 200", "sleep 3s", "api T2 200"},
			wantReports: []string{"T1"}, wantOK: true, wantDone: "calls=2 ok=2 failed=0 refused=1 reported=1 reads=1",
			wantLines: []string{"reported token sha256:{T1} to iadvize/{kind}/crm-sync, got sha256:{T2}"}},
		{name: "revoked between calls", calls: 3, tries: 2,
			before: func(w *world, n int) bool {
				if n == 2 {
					w.fake.RevokeUser(username)
				}
				return false
			},
			want: []string{"read T1", "api T1 200", "sleep 3s", "api T1 401", "report T1 -> T2", "api T2 200",
				"sleep 3s", "api T2 200"},
			wantReports: []string{"T1"}, wantOK: true, wantDone: "calls=3 ok=3 failed=0 refused=1 reported=1 reads=1"},
		{name: "the new token refused too", calls: 1, tries: 3,
			before: func(w *world, n int) bool {
				if n <= 2 {
					w.fake.RevokeUser(username)
				}
				return false
			},
			want: []string{"read T1", "api T1 401", "report T1 -> T2", "api T2 401", "sleep 3s",
				"read T2", "api T2 401", "report T2 -> T3", "api T3 200"},
			wantReports: []string{"T1", "T2"}, wantOK: true, wantDone: "calls=1 ok=1 failed=0 refused=3 reported=2 reads=2",
			wantLines: []string{"reported token sha256:{T1} to iadvize/{kind}/crm-sync, got sha256:{T2}",
				"reported token sha256:{T2} to iadvize/{kind}/crm-sync, got sha256:{T3}"}},
		{name: "a token valid upstream refused by the API", calls: 1, tries: 3,
			before: func(*world, int) bool { return true },
			want: []string{"read T1", "api T1 401", "report T1 -> T1", "api T1 401", "sleep 3s",
				"read T1", "api T1 401", "sleep 3s", "read T1", "api T1 401"},
			wantReports: []string{"T1"}, wantDone: "calls=1 ok=0 failed=1 refused=4 reported=1 reads=3",
			wantLines: []string{"vault warning: the token is valid upstream: the refusal has another cause",
				"reported token sha256:{T1} to iadvize/{kind}/crm-sync, got sha256:{T1}",
				"call 1 failed: the API refused token sha256:{T1}"}},
		{name: "report refused by Vault", calls: 1, tries: 3, revoked: true, reportStatus: http.StatusTooManyRequests,
			want: []string{"read T1", "api T1 401", "report T1 429", "sleep 3s",
				"read T1", "api T1 401", "sleep 3s", "read T1", "api T1 401"},
			wantReports: []string{"T1"}, wantDone: "calls=1 ok=0 failed=1 refused=3 reported=1 reads=3",
			wantLines: []string{"report of token sha256:{T1} failed: Error making API request.",
				"* a report may act again later", "call 1 failed: the API refused token sha256:{T1}"}},
	}
	for _, tt := range tests {
		for _, kind := range []string{"creds", "static-creds"} {
			t.Run(tt.name+"/"+kind, func(t *testing.T) {
				w := newWorld(t)
				w.vault.prime()
				w.vault.reportStatus = tt.reportStatus
				if tt.revoked {
					w.fake.RevokeUser(username)
				}
				var out bytes.Buffer
				var before func(int) *http.Response
				if tt.before != nil {
					before = func(n int) *http.Response {
						if tt.before(w, n) {
							return refusal()
						}
						return nil
					}
				}
				c := w.consumer("iadvize/"+kind+"/"+role, tt.tries, &out, before)
				ok := c.run(context.Background(), tt.calls)

				printed := out.String()
				if redacted := w.redact(printed); redacted != printed {
					t.Fatalf("the consumer printed a token:\n%s", redacted)
				}
				if ok != tt.wantOK {
					t.Errorf("run = %v, want %v", ok, tt.wantOK)
				}
				if !slices.Equal(w.trace, tt.want) {
					t.Errorf("trace:\n  %s\nwant:\n  %s", strings.Join(w.trace, "\n  "), strings.Join(tt.want, "\n  "))
				}
				var reported []string
				for _, h := range w.vault.reports {
					reported = append(reported, w.nameOfHash(h))
				}
				if !slices.Equal(reported, tt.wantReports) {
					t.Errorf("reports of %v, want %v", reported, tt.wantReports)
				}
				if last := doneLine.FindString(printed); last != "consumer done: "+tt.wantDone {
					t.Errorf("final line %q, want %q; output:\n%s", last, "consumer done: "+tt.wantDone, printed)
				}
				for _, line := range tt.wantLines {
					for i, tok := range w.tokens {
						line = strings.ReplaceAll(line, fmt.Sprintf("{T%d}", i+1), sha(tok)[:12])
					}
					line = strings.ReplaceAll(line, "{kind}", kind)
					if !strings.Contains(printed, line+"\n") {
						t.Errorf("the output does not say %q:\n%s", line, printed)
					}
				}
			})
		}
	}
}

// TestConsumersShareOneLogin: copies of the consumer that all read a token
// since revoked each report it once; the stand-in logs in once for all of them (a report of
// a token already replaced gets the current one), and every call succeeds.
func TestConsumersShareOneLogin(t *testing.T) {
	const copies, calls = 8, 3
	w := newWorld(t)
	w.vault.prime()
	w.fake.RevokeAll()
	outs := make([]bytes.Buffer, copies)
	cs := make([]*consumer, copies)
	var read sync.WaitGroup // every copy read T1 before any calls the API
	read.Add(copies)
	for i := range cs {
		cs[i] = w.consumer("iadvize/static-creds/"+role, 2, &outs[i], func(n int) *http.Response {
			if n == 1 {
				read.Done()
				read.Wait()
			}
			return nil
		})
	}
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Go(func() {
			if !c.run(context.Background(), calls) {
				t.Error("a consumer did not complete its calls")
			}
		})
	}
	wg.Wait()
	if len(w.vault.reports) != copies {
		t.Errorf("%d reports, want one per consumer (%d)", len(w.vault.reports), copies)
	}
	for _, h := range w.vault.reports {
		if h != sha(w.tokens[0]) {
			t.Errorf("a report of %s, want T1", w.nameOfHash(h))
		}
	}
	st := w.fake.Stats()
	if st.LoginSuccesses != 2 || st.APIRefusals != copies || st.APICalls != copies*(calls+1) {
		t.Errorf("fake: %d logins, %d API calls, %d refused; want 2, %d, %d",
			st.LoginSuccesses, st.APICalls, st.APIRefusals, copies*(calls+1), copies)
	}
	for i := range outs {
		printed := outs[i].String()
		if w.redact(printed) != printed {
			t.Fatalf("consumer %d printed a token", i)
		}
		if !strings.Contains(printed, "consumer done: calls=3 ok=3 failed=0 refused=1 reported=1 reads=1\n") {
			t.Errorf("consumer %d:\n%s", i, printed)
		}
	}
}

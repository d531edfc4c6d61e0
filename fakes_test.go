package iadvize

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeclock"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
)

// The fakes the tests run against: the fake iAdvize upstream
// (internal/fakeiadvize) behind an httptest server, the handlers that answer
// as a real server might, the upstreams that hold logins until a test answers
// them, raw TCP and TLS servers for transport failures, and storages, a system
// view and a clock that fail, pause, count or move on demand.

// ---- the fake upstream ----

// upstream is the fake iAdvize upstream (internal/fakeiadvize) behind an
// httptest server: the one fake upstream of the unit tests.
type upstream struct {
	*fakeiadvize.Server
	url string // base URL: the token endpoint is url+"/oauth2/token"
}

// startFakeIAdvize serves the fake iAdvize upstream on clock (nil: a clock of
// its own), with its own token and verify endpoints.
func startFakeIAdvize(t *testing.T, clock *fakeclock.Clock, opts fakeiadvize.Options) *upstream {
	t.Helper()
	if clock == nil {
		clock = fakeclock.New()
	}
	opts.Now = clock.Now
	fake := fakeiadvize.New(opts)
	ts := httptest.NewServer(fake)
	t.Cleanup(ts.Close)
	t.Cleanup(fake.Close) // runs first: releases any held request
	return &upstream{Server: fake, url: ts.URL}
}

// newUpstream starts the fake upstream with every request answered by handler.
func newUpstream(t *testing.T, handler http.HandlerFunc) *upstream {
	return newUpstreamOn(t, nil, handler)
}

// newUpstreamOn is newUpstream on clock, the time LoginTimes reports.
func newUpstreamOn(t *testing.T, clock *fakeclock.Clock, handler http.HandlerFunc) *upstream {
	t.Helper()
	u := startFakeIAdvize(t, clock, fakeiadvize.Options{})
	u.SetHandler(handler)
	return u
}

// setHandler makes handler answer every request from now on.
func (u *upstream) setHandler(handler http.HandlerFunc) { u.SetHandler(handler) }

// count is the number of requests the upstream received, on any path.
func (u *upstream) count() int64 {
	st := u.Stats()
	return int64(st.Handled + st.LoginAttempts + st.VerifyCalls)
}

// tokenURL is the upstream's token endpoint.
func (u *upstream) tokenURL() string { return u.url + "/oauth2/token" }

// wantCount fails the test unless the upstream received n requests in all;
// why, if not empty, follows the figures in the failure message.
func (u *upstream) wantCount(t *testing.T, n int64, why string) {
	t.Helper()
	if got := u.count(); got != n {
		t.Fatalf("upstream requests = %d, want %d%s", got, n, why)
	}
}

// ---- answers ----

// issuing answers every login with a new token "tok-N" of the given lifetime.
func issuing(lifetime time.Duration) http.HandlerFunc {
	var n atomic.Int64
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"access_token":  "tok-" + itoa(n.Add(1)),
			"expires_in":    int(lifetime.Seconds()),
			"token_type":    "Bearer",
			"refresh_token": "none",
		})
	}
}

// failWith answers every request with status, content type and body.
func failWith(status int, contentType, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

// rateLimited answers 429, with the Retry-After header when retryAfter is set.
func rateLimited(retryAfter func() string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		if retryAfter != nil {
			w.Header().Set("Retry-After", retryAfter())
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTooManyRequests)
		io.WriteString(w, `{"error":"too_many_requests","error_description":"retry later"}`)
	}
}

func jsonAnswer(status int, body any) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(body)
	}
}

// namedToken answers a login with the given day-long token.
func namedToken(tok string) http.HandlerFunc {
	return jsonAnswer(http.StatusOK, map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": 86400})
}

// tokenFor answers a login with a day-long token named after its username.
func tokenFor(w http.ResponseWriter, r *http.Request) {
	jsonAnswer(http.StatusOK, map[string]any{"access_token": "tok-for-" + url.QueryEscape(r.PostForm.Get("username")),
		"token_type": "Bearer", "expires_in": 86400})(w, r)
}

// rawAnswer answers every request with exactly these bytes. contentType "-"
// sends no Content-Type at all (the server would otherwise sniff one).
func rawAnswer(status int, contentType string, header map[string]string, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		if contentType == "-" {
			w.Header()["Content-Type"] = nil
		} else {
			w.Header().Set("Content-Type", contentType)
		}
		for k, v := range header {
			w.Header().Set(k, v)
		}
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}
}

const (
	jsonType = "application/json"
	formType = "application/x-www-form-urlencoded"
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

// clientCheckingServer is a token endpoint that authenticates the client the way
// a kind of real server does, and answers 401 invalid_client when it does not
// recognise it:
//   - "raw": HTTP Basic decoded as written (seed of ICEYE-style servers);
//   - "rfc": HTTP Basic whose halves are form-decoded (RFC 6749 §2.3.1: Hydra,
//     Keycloak), or client_id/client_secret in the body.
func clientCheckingServer(style, clientID, clientSecret string, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		id, secret, basic := r.BasicAuth()
		switch {
		case basic && style == "rfc":
			var err1, err2 error
			id, err1 = url.QueryUnescape(id)
			secret, err2 = url.QueryUnescape(secret)
			if err1 != nil || err2 != nil {
				id, secret = "", ""
			}
		case !basic && style == "rfc":
			id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
		}
		if id != clientID || secret != clientSecret {
			rawAnswer(401, jsonType, nil, `{"error":"invalid_client"}`)(w, r)
			return
		}
		next(w, r)
	}
}

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

// ---- upstreams that hold logins ----

// holdingUpstream issues 24-hour tokens until hold is called; from then on each
// login waits until the test answers them all with release. entered receives one
// value per login that arrived while held.
type holdingUpstream struct {
	*upstream
	entered chan struct{}
	issue   http.HandlerFunc // the normal answer: a new token

	mu     sync.Mutex
	gate   chan struct{} // nil: not holding
	answer http.HandlerFunc
}

func newHoldingUpstream(t *testing.T) *holdingUpstream {
	h := &holdingUpstream{entered: make(chan struct{}, 100), issue: issuing(24 * time.Hour)}
	h.upstream = newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		gate := h.gate
		h.mu.Unlock()
		if gate == nil {
			h.issue(w, r)
			return
		}
		h.entered <- struct{}{}
		select {
		case <-gate:
			h.mu.Lock()
			answer := h.answer
			h.mu.Unlock()
			answer(w, r)
		case <-r.Context().Done():
		}
	})
	t.Cleanup(func() { h.release(nil) }) // before the server closes (cleanups run last-in first-out)
	return h
}

func (h *holdingUpstream) hold() {
	h.mu.Lock()
	h.gate = make(chan struct{})
	h.mu.Unlock()
}

// release answers the held logins with answer (nil: 503) and stops holding.
func (h *holdingUpstream) release(answer http.HandlerFunc) {
	if answer == nil {
		answer = func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) }
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.gate != nil {
		h.answer = answer
		close(h.gate)
		h.gate = nil
	}
}

// waitEntered waits until a held login reached upstream.
func (h *holdingUpstream) waitEntered(t *testing.T) {
	t.Helper()
	select {
	case <-h.entered:
	case <-time.After(waitFor):
		t.Fatal("no login reached upstream")
	}
}

// ticketUpstream holds every login until the test answers it, one by one and in
// any order: login i (in arrival order) waits on tickets[i].
type ticketUpstream struct {
	*upstream
	mu      sync.Mutex
	arrived chan int
	tickets []chan http.HandlerFunc
	users   []string // the username each login was sent with
}

func newTicketUpstream(t *testing.T) *ticketUpstream {
	tu := &ticketUpstream{arrived: make(chan int, 100)}
	tu.upstream = newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		answer := make(chan http.HandlerFunc, 1)
		tu.mu.Lock()
		i := len(tu.tickets)
		tu.tickets = append(tu.tickets, answer)
		tu.users = append(tu.users, r.PostForm.Get("username"))
		tu.mu.Unlock()
		tu.arrived <- i
		select {
		case h := <-answer:
			h(w, r)
		case <-r.Context().Done():
		}
	})
	t.Cleanup(func() { // release whatever is still held, before the server closes
		tu.mu.Lock()
		defer tu.mu.Unlock()
		for _, c := range tu.tickets {
			select {
			case c <- func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) }:
			default:
			}
		}
	})
	return tu
}

// next waits for the next login to arrive and returns its number.
func (tu *ticketUpstream) next(t *testing.T) int {
	t.Helper()
	select {
	case i := <-tu.arrived:
		return i
	case <-time.After(waitFor):
		t.Fatal("no login reached upstream")
		return -1
	}
}

// answer answers login i with h.
func (tu *ticketUpstream) answer(i int, h http.HandlerFunc) {
	tu.mu.Lock()
	c := tu.tickets[i]
	tu.mu.Unlock()
	c <- h
}

// user is the username login i was sent with.
func (tu *ticketUpstream) user(i int) string {
	tu.mu.Lock()
	defer tu.mu.Unlock()
	return tu.users[i]
}

// gatedUpstream issues 24-hour tokens; while gated, each login first announces
// itself on arrivals and waits until the test closes the channel it sent, so the
// test sees how many logins are in flight at once and decides how long each
// takes on the fake clock.
type gatedUpstream struct {
	*upstream
	arrivals chan chan struct{}
	gated    atomic.Bool
}

func newGatedUpstream(t *testing.T) *gatedUpstream {
	g := &gatedUpstream{arrivals: make(chan chan struct{}, 1000)}
	closed := make(chan struct{})
	issue := issuing(24 * time.Hour)
	g.upstream = newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if g.gated.Load() {
			release := make(chan struct{})
			g.arrivals <- release
			select {
			case <-release:
			case <-closed:
			case <-r.Context().Done():
				return
			}
		}
		issue(w, r)
	})
	t.Cleanup(func() { close(closed) }) // before the server closes
	return g
}

// ---- token hosts that keep every request ----

// tokenHost is a fake iAdvize upstream behind a server that keeps every request
// it receives (method, path, headers, body, and the Basic credentials decoded),
// so a test can tell that the host got no request, and never a given secret.
// What it keeps is never printed.
type tokenHost struct {
	*fakeiadvize.Server
	url    string // http://127.0.0.1:PORT
	origin string // tokenOrigin of its URLs

	mu   sync.Mutex
	reqs []string
}

func startTokenHost(t *testing.T, clock *fakeclock.Clock) *tokenHost {
	t.Helper()
	h := &tokenHost{Server: fakeiadvize.New(fakeiadvize.Options{Now: clock.Now})}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var rec strings.Builder
		fmt.Fprintf(&rec, "%s %s\n", r.Method, r.URL)
		for k, v := range r.Header {
			fmt.Fprintf(&rec, "%s: %s\n", k, strings.Join(v, ", "))
		}
		if id, secret, ok := r.BasicAuth(); ok {
			fmt.Fprintf(&rec, "basic: %s:%s\n", id, secret)
		}
		rec.Write(body)
		if form, err := url.ParseQuery(string(body)); err == nil {
			fmt.Fprintf(&rec, "\n%v", form)
		}
		h.mu.Lock()
		h.reqs = append(h.reqs, rec.String())
		h.mu.Unlock()
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		h.Server.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	t.Cleanup(h.Server.Close)
	h.url = ts.URL
	h.origin = tokenOrigin(ts.URL)
	if h.origin == "" {
		t.Fatalf("no origin for the fake's URL")
	}
	return h
}

func (h *tokenHost) tokenURL() string { return h.url + "/oauth2/token" }

func (h *tokenHost) verifyURL() string { return h.url + "/_authenticated" }

// requests is the number of requests the host received, on any path.
func (h *tokenHost) requests() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.reqs)
}

// saw reports whether any request the host received held secret (as sent,
// form-encoded or base64-encoded).
func (h *tokenHost) saw(secret string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	forms := []string{secret, url.QueryEscape(secret), base64.StdEncoding.EncodeToString([]byte(secret))}
	for _, r := range h.reqs {
		for _, f := range forms {
			if strings.Contains(r, f) {
				return true
			}
		}
	}
	return false
}

// logins is the number of token requests the host received for user (a
// username or client ID).
func (h *tokenHost) logins(user string) int { return h.Stats().UserAttempts[user] }

// wantNothing fails the test unless the host received no request at all and
// none of secrets (named by what, never shown).
func (h *tokenHost) wantNothing(t *testing.T, when string, secrets map[string]string) {
	t.Helper()
	if n := h.requests(); n != 0 {
		st := h.Stats()
		t.Fatalf("%s: the other host received %d request(s) (%d logins, %d verify calls), want none",
			when, n, st.LoginAttempts, st.VerifyCalls)
	}
	for what, v := range secrets {
		if h.saw(v) {
			t.Fatalf("%s: the other host received %s", when, what)
		}
	}
}

// ---- raw TCP and TLS upstreams ----

// rawUpstream is a TCP listener on loopback whose connections handle serves,
// n counting them from 0. Its cleanup closes the listener and every connection,
// and waits for the handlers.
type rawUpstream struct {
	ln    net.Listener
	conns atomic.Int64
	reqs  atomic.Int64 // requests read (readRequest)
}

func newRawUpstream(t *testing.T, handle func(u *rawUpstream, n int, c net.Conn)) *rawUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &rawUpstream{ln: ln}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		open []net.Conn
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			n := int(u.conns.Add(1)) - 1
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(u, n, c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return u
}

// host is the upstream's host:port.
func (u *rawUpstream) host() string { return u.ln.Addr().String() }

// readRequest reads one request and its body from br, and counts it.
func (u *rawUpstream) readRequest(br *bufio.Reader) (*http.Request, error) {
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, err
	}
	if _, err := io.Copy(io.Discard, req.Body); err != nil {
		return nil, err
	}
	u.reqs.Add(1)
	return req, nil
}

// answerToken writes a token answer; keep-alive unless the request asked to close.
func answerToken(c net.Conn, req *http.Request, token string) error {
	body := fmt.Sprintf(`{"access_token":%q,"expires_in":3600,"token_type":"Bearer"}`, token)
	connection := "keep-alive"
	if req.Close {
		connection = "close"
	}
	_, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: %s\r\n\r\n%s",
		len(body), connection, body)
	return err
}

// keptAliveDropper answers logins over raw HTTP/1.1: on its first connection it
// answers the first login and keeps the connection alive, then reads the next
// login on it and closes it without answering (the keep-alive race of
// golang/go#22158, made certain). Every other connection is answered.
func keptAliveDropper(t *testing.T) *rawUpstream {
	return newRawUpstream(t, func(u *rawUpstream, n int, c net.Conn) {
		br := bufio.NewReader(c)
		for i := 0; ; i++ {
			req, err := u.readRequest(br)
			if err != nil || (n == 0 && i == 1) {
				return
			}
			if answerToken(c, req, fmt.Sprintf("tok-%d", u.reqs.Load())) != nil || req.Close {
				return
			}
		}
	})
}

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  string
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "net test CA"},
		NotBefore:             time.Now().Add(-48 * time.Hour),
		NotAfter:              time.Now().Add(48 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, key := signedCert(t, tmpl, nil)
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))}
}

// signedCert makes a key and a certificate of tmpl for it, signed by ca (nil:
// self-signed), and returns the certificate's DER bytes and the key.
func signedCert(t *testing.T, tmpl *x509.Certificate, ca *testCA) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	parent, parentKey := tmpl, key
	if ca != nil {
		parent, parentKey = ca.cert, ca.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	return der, key
}

// serve starts a TLS server on loopback with a certificate the CA signs for
// dnsNames and ips, valid from notBefore to notAfter, and returns its base URL.
// Every request is answered with a token, should one get through.
func (ca *testCA) serve(t *testing.T, dnsNames []string, ips []net.IP, notBefore, notAfter time.Time) string {
	t.Helper()
	der, key := signedCert(t, &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "net test server"},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     dnsNames,
		IPAddresses:  ips,
	}, ca)
	srv := httptest.NewUnstartedServer(issuing(time.Hour))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL
}

// ---- storages ----

// errInjected is what the faulty storages answer when a fault is switched on. It
// holds nothing of the entry, as a real storage error might not.
var errInjected = errors.New("injected storage fault")

// faultyStorage wraps a storage and fails Put (or Get) for keys under a prefix
// while the fault is on.
type faultyStorage struct {
	logical.Storage
	mu        sync.Mutex
	putPrefix string // "" with failPut false: no fault
	failPut   bool
	getPrefix string
	failGet   bool
	failDel   bool
	gets      int
}

func newFaultyStorage() *faultyStorage {
	return &faultyStorage{Storage: &logical.InmemStorage{}}
}

// failDeletes makes every Delete fail while on.
func (s *faultyStorage) failDeletes(on bool) {
	s.mu.Lock()
	s.failDel = on
	s.mu.Unlock()
}

func (s *faultyStorage) Delete(ctx context.Context, key string) error {
	s.mu.Lock()
	fail := s.failDel
	s.mu.Unlock()
	if fail {
		return errInjected
	}
	return s.Storage.Delete(ctx, key)
}

// failPuts makes every Put of a key under prefix fail (on=false clears it).
func (s *faultyStorage) failPuts(prefix string, on bool) {
	s.mu.Lock()
	s.putPrefix, s.failPut = prefix, on
	s.mu.Unlock()
}

// failGets makes every Get of a key under prefix fail (on=false clears it).
func (s *faultyStorage) failGets(prefix string, on bool) {
	s.mu.Lock()
	s.getPrefix, s.failGet = prefix, on
	s.mu.Unlock()
}

func (s *faultyStorage) getCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gets
}

func (s *faultyStorage) Put(ctx context.Context, e *logical.StorageEntry) error {
	s.mu.Lock()
	fail := s.failPut && strings.HasPrefix(e.Key, s.putPrefix)
	s.mu.Unlock()
	if fail {
		return errInjected
	}
	return s.Storage.Put(ctx, e)
}

func (s *faultyStorage) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	s.mu.Lock()
	s.gets++
	fail := s.failGet && strings.HasPrefix(key, s.getPrefix)
	s.mu.Unlock()
	if fail {
		return nil, errInjected
	}
	return s.Storage.Get(ctx, key)
}

// sweepStorage fails one storage operation, once: the n-th Get, Put, Delete or
// List after failOp(n) is called (counting from 1). The fault sweeps fail each
// operation of a request in turn.
type sweepStorage struct {
	logical.Storage
	mu      sync.Mutex
	countdn int  // operations left before the one to fail; 0: not armed
	hit     bool // the armed operation failed
}

// failOp arms the n-th operation from now to fail.
func (s *sweepStorage) failOp(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.countdn, s.hit = n, false
}

// failed reports whether the armed operation came and failed; it disarms.
func (s *sweepStorage) failed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	hit := s.hit
	s.countdn, s.hit = 0, false
	return hit
}

func (s *sweepStorage) fault() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.countdn == 0 {
		return nil
	}
	s.countdn--
	if s.countdn == 0 {
		s.hit = true
		return errInjected
	}
	return nil
}

func (s *sweepStorage) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	if err := s.fault(); err != nil {
		return nil, err
	}
	return s.Storage.Get(ctx, key)
}

func (s *sweepStorage) Put(ctx context.Context, entry *logical.StorageEntry) error {
	if err := s.fault(); err != nil {
		return err
	}
	return s.Storage.Put(ctx, entry)
}

func (s *sweepStorage) Delete(ctx context.Context, key string) error {
	if err := s.fault(); err != nil {
		return err
	}
	return s.Storage.Delete(ctx, key)
}

func (s *sweepStorage) List(ctx context.Context, prefix string) ([]string, error) {
	if err := s.fault(); err != nil {
		return nil, err
	}
	return s.Storage.List(ctx, prefix)
}

// pausingStorage wraps a storage; once armed on a key, the next Get of that key
// reads the entry and then waits until the test resumes it, so that a change
// lands between a read of storage and the use of what it read.
type pausingStorage struct {
	logical.Storage
	mu             sync.Mutex
	key            string // "": not armed
	paused, resume chan struct{}
}

// pauseGet arms the next Get of key: paused is closed once it has read the
// entry, and it returns when the test closes resume.
func (s *pausingStorage) pauseGet(key string) (paused, resume chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.key, s.paused, s.resume = key, make(chan struct{}), make(chan struct{})
	return s.paused, s.resume
}

func (s *pausingStorage) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	entry, err := s.Storage.Get(ctx, key)
	s.mu.Lock()
	armed := key == s.key
	paused, resume := s.paused, s.resume
	if armed {
		s.key = ""
	}
	s.mu.Unlock()
	if armed {
		close(paused)
		<-resume
	}
	return entry, err
}

// countingStorage counts the reads of a storage.
type countingStorage struct {
	logical.Storage
	gets, lists atomic.Int64
}

func (s *countingStorage) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	s.gets.Add(1)
	return s.Storage.Get(ctx, key)
}

func (s *countingStorage) List(ctx context.Context, prefix string) ([]string, error) {
	s.lists.Add(1)
	return s.Storage.List(ctx, prefix)
}

// heldPutStorage holds the first Put of key until release is closed (entered
// is closed once it is held), and counts the Puts of key.
type heldPutStorage struct {
	logical.Storage
	key              string
	entered, release chan struct{}
	puts             atomic.Int64
}

func (s *heldPutStorage) Put(ctx context.Context, entry *logical.StorageEntry) error {
	if entry.Key == s.key && s.puts.Add(1) == 1 {
		close(s.entered)
		<-s.release
	}
	return s.Storage.Put(ctx, entry)
}

// clockedStorage advances a fake clock on every read of a token state, as a
// slow storage makes a schedule build take the run's time.
type clockedStorage struct {
	logical.Storage
	clock *fakeclock.Clock
	step  time.Duration
	reads atomic.Int64
}

func (s *clockedStorage) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	if strings.HasPrefix(key, tokensStoragePrefix) {
		s.reads.Add(1)
		s.clock.Advance(s.step)
	}
	return s.Storage.Get(ctx, key)
}

// ---- Vault's system view, the clock ----

// countingSystemView counts ReplicationState calls: in a plugin process each one
// is a gRPC round trip to Vault.
type countingSystemView struct {
	logical.StaticSystemView
	calls atomic.Int64
}

func (v *countingSystemView) ReplicationState() consts.ReplicationState {
	v.calls.Add(1)
	return v.StaticSystemView.ReplicationState()
}

// monotonicClock returns times with monotonic readings, as time.Now does; set
// moves it.
type monotonicClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *monotonicClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *monotonicClock) set(t time.Time) { c.mu.Lock(); c.now = t; c.mu.Unlock() }

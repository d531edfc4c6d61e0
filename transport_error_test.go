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
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const netPassword = "pw-net-Secret-7c1f"

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

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  string
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "net test CA"},
		NotBefore:             time.Now().Add(-48 * time.Hour),
		NotAfter:              time.Now().Add(48 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))}
}

// serve starts a TLS server on loopback with a certificate the CA signs for
// dnsNames and ips, valid from notBefore to notAfter, and returns its base URL.
// Every request is answered with a token, should one get through.
func (ca *testCA) serve(t *testing.T, dnsNames []string, ips []net.IP, notBefore, notAfter time.Time) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "net test server"},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     dnsNames,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(issuing(time.Hour))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL
}

// hostOf is the host:port of a base URL.
func hostOf(t *testing.T, base string) string {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// expectTransportFailure reads creds/app and checks that it fails with 502
// naming the role and cause, that status/ reports the same cause as an upstream
// error, that the next read backs off (429) without a request, and that no
// secret shows anywhere.
func expectTransportFailure(t *testing.T, e *testEnv, cause string, requests func() int64) {
	t.Helper()
	_, err := e.read("creds/app")
	msg := expectCodedError(t, err, http.StatusBadGateway, `role "app": `+cause+"; next login attempt not before ")
	st := statusOf(t, e, "app")
	if got, _ := st["last_error"].(string); got != cause {
		t.Errorf("status last_error = %q, want %q", got, cause)
	}
	expectStatus(t, st, map[string]any{"last_outcome": outcomeUpstream, "consecutive_failures": 1, "has_token": false})
	for _, text := range []string{msg, e.logs.String()} {
		if strings.Contains(text, netPassword) {
			t.Fatal("the password appears in the error or the log")
		}
	}
	before := requests()
	_, err = e.read("creds/app")
	expectCodedError(t, err, http.StatusTooManyRequests, "backing off after: "+cause)
	if n := requests() - before; n != 0 {
		t.Fatalf("the read during the backoff sent %d requests", n)
	}
}

// netEnv is a mount configured on base with extra, and role "app".
func netEnv(t *testing.T, base string, extra map[string]any) *testEnv {
	t.Helper()
	e := newTestEnv(t, nil, nil)
	e.configureBase(base, extra)
	e.addRole("app", "svc@example.com", netPassword)
	return e
}

func noRequests() int64 { return 0 }

func TestConnectionFailuresAreNamedWithTheHostPort(t *testing.T) {
	t.Run("connection refused", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		host := ln.Addr().String()
		ln.Close() // nothing listens there any more
		e := netEnv(t, "http://"+host, nil)
		expectTransportFailure(t, e, "upstream "+host+
			" refused the connection (nothing listens on that port, or a firewall refuses it)", noRequests)
	})
	t.Run("connection reset", func(t *testing.T) {
		u := newRawUpstream(t, func(u *rawUpstream, _ int, c net.Conn) {
			if _, err := u.readRequest(bufio.NewReader(c)); err != nil {
				return
			}
			_ = c.(*net.TCPConn).SetLinger(0) // Close sends RST
		})
		e := netEnv(t, "http://"+u.host(), nil)
		expectTransportFailure(t, e, "upstream "+u.host()+" reset the connection without answering", u.reqs.Load)
		if n := u.reqs.Load(); n != 1 {
			t.Fatalf("upstream read %d requests, want 1 (a new connection is never retried)", n)
		}
	})
	t.Run("closed without answering on a new connection", func(t *testing.T) {
		u := newRawUpstream(t, func(u *rawUpstream, _ int, c net.Conn) {
			_, _ = u.readRequest(bufio.NewReader(c))
		})
		e := netEnv(t, "http://"+u.host(), nil)
		expectTransportFailure(t, e, "upstream "+u.host()+" closed the connection without answering", u.reqs.Load)
		if n := u.reqs.Load(); n != 1 {
			t.Fatalf("upstream read %d requests, want 1 (a new connection is never retried)", n)
		}
	})
	t.Run("closed in the middle of the answer", func(t *testing.T) {
		u := newRawUpstream(t, func(u *rawUpstream, _ int, c net.Conn) {
			if _, err := u.readRequest(bufio.NewReader(c)); err != nil {
				return
			}
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"access_token\":")
		})
		e := netEnv(t, "http://"+u.host(), nil)
		expectTransportFailure(t, e, "upstream "+u.host()+" closed the connection in the middle of its answer", u.reqs.Load)
		if n := u.reqs.Load(); n != 1 {
			t.Fatalf("upstream read %d requests, want 1 (a cut answer is never retried)", n)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		u := newRawUpstream(t, func(u *rawUpstream, _ int, c net.Conn) {
			if _, err := u.readRequest(bufio.NewReader(c)); err != nil {
				return
			}
			_, _ = c.Read(make([]byte, 1)) // until the client gives up, or cleanup
		})
		e := netEnv(t, "http://"+u.host(), map[string]any{"request_timeout": "1s"})
		expectTransportFailure(t, e, "upstream "+u.host()+" did not answer within request_timeout", u.reqs.Load)
	})
}

func TestTLSFailuresAreNamedAndUnknownAuthoritySuggestsCAPEM(t *testing.T) {
	loopback := []net.IP{net.IPv4(127, 0, 0, 1)}
	now := time.Now()
	t.Run("unknown authority", func(t *testing.T) {
		srv := httptest.NewTLSServer(issuing(time.Hour))
		t.Cleanup(srv.Close)
		host := hostOf(t, srv.URL)
		e := netEnv(t, srv.URL, nil) // no ca_pem
		expectTransportFailure(t, e, "upstream "+host+` presented a TLS certificate signed by an unknown authority (issuer "O=Acme Co")`+
			"; if upstream uses a private CA, give its certificate in config ca_pem", noRequests)
	})
	t.Run("expired", func(t *testing.T) {
		ca := newTestCA(t)
		notAfter := now.Add(-time.Hour).Truncate(time.Second)
		base := ca.serve(t, nil, loopback, now.Add(-48*time.Hour), notAfter)
		e := netEnv(t, base, map[string]any{"ca_pem": ca.pem})
		expectTransportFailure(t, e, "upstream "+hostOf(t, base)+" presented a TLS certificate that expired at "+
			rfc3339At(notAfter)+` (subject "CN=net test server")`, noRequests)
	})
	t.Run("not valid yet", func(t *testing.T) {
		ca := newTestCA(t)
		notBefore := now.Add(24 * time.Hour).Truncate(time.Second)
		base := ca.serve(t, nil, loopback, notBefore, now.Add(47*time.Hour))
		e := netEnv(t, base, map[string]any{"ca_pem": ca.pem})
		expectTransportFailure(t, e, "upstream "+hostOf(t, base)+" presented a TLS certificate that is not valid before "+
			rfc3339At(notBefore)+`; check this host's clock (subject "CN=net test server")`, noRequests)
	})
	t.Run("another host name", func(t *testing.T) {
		ca := newTestCA(t)
		base := ca.serve(t, []string{"other.example", "www.other.example"}, nil, now.Add(-time.Hour), now.Add(time.Hour))
		e := netEnv(t, base, map[string]any{"ca_pem": ca.pem})
		expectTransportFailure(t, e, "upstream "+hostOf(t, base)+
			` presented a TLS certificate for other host names, not "127.0.0.1" (it names other.example, www.other.example)`, noRequests)
	})
	t.Run("trusted through ca_pem", func(t *testing.T) { // the control: the same server, trusted, answers
		ca := newTestCA(t)
		base := ca.serve(t, nil, loopback, now.Add(-time.Hour), now.Add(time.Hour))
		e := netEnv(t, base, map[string]any{"ca_pem": ca.pem})
		e.mustRead("creds/app")
	})
}

// TestTransportErrorClassifiesDNSAndOtherFailures covers what no loopback test
// can produce without resolving a name or a proxy: resolver failures, wrapped as
// net/http wraps a dial error, and the rarer classes.
func TestTransportErrorClassifiesDNSAndOtherFailures(t *testing.T) {
	const host = "api.idp.invalid:443"
	wrap := func(err error) error {
		return &url.Error{Op: "Post", URL: "https://" + host + "/oauth2/token",
			Err: &net.OpError{Op: "dial", Net: "tcp", Err: err}}
	}
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"no such host", wrap(&net.DNSError{Err: "no such host", Name: "api.idp.invalid", IsNotFound: true}),
			`cannot resolve the upstream host name "api.idp.invalid": no such host`},
		{"resolver timeout", wrap(&net.DNSError{Err: "i/o timeout", Name: "api.idp.invalid", IsTimeout: true}),
			`cannot resolve the upstream host name "api.idp.invalid": the DNS server did not answer in time`},
		{"server misbehaving", wrap(&net.DNSError{Err: "server misbehaving", Name: "api.idp.invalid", IsTemporary: true}),
			`cannot resolve the upstream host name "api.idp.invalid": DNS lookup failed (server misbehaving)`},
		{"resolver text holding a secret", wrap(&net.DNSError{Err: "lookup " + netPassword, Name: "api.idp.invalid"}),
			`cannot resolve the upstream host name "api.idp.invalid": DNS lookup failed (` + withheld + `)`},
		{"kept-alive connection closed while the request was written",
			&url.Error{Op: "Post", URL: "https://" + host + "/oauth2/token", Err: errors.New("http: server closed idle connection")},
			"upstream " + host + " closed the connection without answering"},
		{"proxy refused", &url.Error{Op: "Post", URL: "https://" + host + "/oauth2/token",
			Err: &net.OpError{Op: "proxyconnect", Net: "tcp", Err: &net.OpError{Op: "dial", Net: "tcp",
				Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}}},
			"cannot reach the HTTP proxy (HTTPS_PROXY, HTTP_PROXY) on the way to upstream " + host + ": dial tcp: connect: connection refused"},
		{"cancelled", &url.Error{Op: "Post", URL: "https://" + host + "/oauth2/token", Err: context.Canceled},
			"the request to upstream " + host + " was cancelled before an answer came"},
		{"no route", wrap(errors.New("connect: no route to host")),
			"cannot reach upstream " + host + ": dial connect: no route to host"},
		{"anything else, without the URL", &url.Error{Op: "Post", URL: "https://" + host + "/oauth2/token?k=v", Err: errors.New("unsupported protocol")},
			"the request to upstream " + host + " failed: unsupported protocol"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			le := transportError(tc.err, host, newRedactor(netPassword))
			if le.kind != kindTransient {
				t.Errorf("kind %v, want transient", le.kind)
			}
			if got := le.Error(); got != tc.want {
				t.Errorf("message %q, want %q", got, tc.want)
			}
		})
	}
}

func TestVerifyNamesTheTransportFailure(t *testing.T) {
	srv := httptest.NewServer(issuing(time.Hour))
	e := netEnv(t, srv.URL, nil)
	e.mustRead("creds/app")
	host := hostOf(t, srv.URL)
	srv.Close() // nothing listens there any more
	_, err := e.read("verify/app")
	expectCodedError(t, err, http.StatusBadGateway, `role "app": checking the token failed: upstream `+host+
		" refused the connection (nothing listens on that port, or a firewall refuses it)")
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

// storedLogins is the count of logins in the mount's stored budget record.
func storedLogins(t *testing.T, e *testEnv) int64 {
	t.Helper()
	rec, err := readBudget(t.Context(), e.storage, recentBudgetKey)
	if err != nil || rec == nil {
		t.Fatalf("reading the stored budget: %v", err)
	}
	var n int64
	for _, b := range rec.Logins {
		n += b[1]
	}
	return n
}

func TestLoginOnAKeptAliveConnectionUpstreamClosedIsRetriedOnceOnANewConnection(t *testing.T) {
	u := keptAliveDropper(t)
	e := netEnv(t, "http://"+u.host(), nil)
	if tok := accessToken(t, e.mustRead("creds/app")); tok != "tok-1" {
		t.Fatalf("first read got %q", tok)
	}
	e.clock.Advance(2 * time.Hour) // the token expired; the budget window is empty again

	resp, err := e.read("creds/app")
	if err != nil || resp.IsError() {
		t.Fatalf("the read after upstream closed the kept-alive connection failed: %v %v", err, respErr(resp))
	}
	if tok := accessToken(t, resp); tok != "tok-3" {
		t.Fatalf("read got %q, want tok-3 (the retry's token)", tok)
	}
	if reqs, conns := u.reqs.Load(), u.conns.Load(); reqs != 3 || conns != 2 {
		t.Fatalf("upstream read %d requests on %d connections, want 3 on 2 (one retry, on a new connection)", reqs, conns)
	}
	if n := storedLogins(t, e); n != 2 {
		t.Fatalf("the budget counts %d logins for the read, want 2 (the retry is a login)", n)
	}
	expectStatus(t, statusOf(t, e, "app", "tok-1", "tok-3"), map[string]any{"last_outcome": outcomeSuccess, "last_error": ""})
}

func TestLoginIsNotRetriedWhenTheBudgetHasNoRoomForIt(t *testing.T) {
	u := keptAliveDropper(t)
	e := netEnv(t, "http://"+u.host(), map[string]any{"user_logins_per_minute": 1})
	e.mustRead("creds/app")
	e.clock.Advance(2 * time.Hour)

	expectTransportFailure(t, e, "upstream "+u.host()+" closed the connection without answering", u.reqs.Load)
	if reqs, conns := u.reqs.Load(), u.conns.Load(); reqs != 2 || conns != 1 {
		t.Fatalf("upstream read %d requests on %d connections, want 2 on 1 (no retry without budget)", reqs, conns)
	}
	if n := storedLogins(t, e); n != 1 {
		t.Fatalf("the budget counts %d logins, want 1", n)
	}
}

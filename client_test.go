package iadvize

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The HTTP client of the token request (client.go): what it refuses of an
// answer (redirects, a body over 1 MiB, no answer within request_timeout), how
// it names a transport failure, and its one retry on a new connection.

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

const netPassword = "pw-net-Secret-7c1f"

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
	// Upstreams that read the request, then do then, then close the connection.
	for _, tc := range []struct {
		name  string
		then  func(c net.Conn)
		extra map[string]any
		cause string // after "upstream host:port "
		once  string // why upstream must read a single request; "": not checked
	}{
		{"connection reset", func(c net.Conn) {
			_ = c.(*net.TCPConn).SetLinger(0) // Close sends RST
		}, nil, "reset the connection without answering", "a new connection is never retried"},
		{"closed without answering on a new connection", func(net.Conn) {}, nil,
			"closed the connection without answering", "a new connection is never retried"},
		{"closed in the middle of the answer", func(c net.Conn) {
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"access_token\":")
		}, nil, "closed the connection in the middle of its answer", "a cut answer is never retried"},
		{"timeout", func(c net.Conn) {
			_, _ = c.Read(make([]byte, 1)) // until the client gives up, or cleanup
		}, map[string]any{"request_timeout": "1s"}, "did not answer within request_timeout", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := newRawUpstream(t, func(u *rawUpstream, _ int, c net.Conn) {
				if _, err := u.readRequest(bufio.NewReader(c)); err == nil {
					tc.then(c)
				}
			})
			e := netEnv(t, "http://"+u.host(), tc.extra)
			expectTransportFailure(t, e, "upstream "+u.host()+" "+tc.cause, u.reqs.Load)
			if n := u.reqs.Load(); tc.once != "" && n != 1 {
				t.Fatalf("upstream read %d requests, want 1 (%s)", n, tc.once)
			}
		})
	}
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

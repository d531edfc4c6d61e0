package iadvize

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-cleanhttp"
)

// tokenClient performs the token exchange against one config. It exists so that the
// HTTP details (TLS roots, timeouts, redirects, body bound) are built once per
// config rather than on every login.
type tokenClient struct {
	// http keeps connections alive between requests (RFC 9112 §9.3).
	http *http.Client
	// fresh opens a new connection for every request (keep-alives disabled):
	// it sends the one retry of a login whose kept-alive connection upstream
	// closed (login). Closing http's idle connections instead would not make
	// the retry's connection certainly new: a concurrent login may hand one
	// back to the pool in between, itself perhaps closed by upstream.
	fresh *http.Client
}

// newTokenClient builds the HTTP client for a config: extra CA roots, no redirects
// followed, every response body bounded to 1 MiB.
func newTokenClient(cfg *config) (*tokenClient, error) {
	transport := cleanhttp.DefaultPooledTransport()
	if cfg.CAPEM != "" {
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM([]byte(cfg.CAPEM)) {
			return nil, errors.New("ca_pem holds no PEM certificate")
		}
		transport.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	oneShot := transport.Clone()
	oneShot.DisableKeepAlives = true
	client := func(t http.RoundTripper) *http.Client {
		return &http.Client{
			Transport: &boundedTransport{next: t},
			Timeout:   cfg.RequestTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		}
	}
	return &tokenClient{http: client(transport), fresh: client(oneShot)}, nil
}

// requestToken exchanges a role's credentials for a token at tokenURL, presenting a
// client secret as clientAuth says. It returns a *loginError for every failure;
// upstream text in its message has passed redact.
//
// A requestToken sent on a kept-alive connection that upstream closed as it arrived
// (the connection ends, EOF or reset, with no answer: golang/go#22158; net/http
// retries only idempotent requests, RFC 9110 §9.2.2, and a token request is a
// POST) is sent once more, on a new connection, if rules.beforeRetry allows it:
// that is a second requestToken, which it takes from the budgets first. Refused, the
// first failure stands.
func (c *tokenClient) requestToken(ctx context.Context, tokenURL string, clientAuth clientAuthStyle, r *role, rules answerRules) (*issuedToken, error) {
	host := upstreamHost(tokenURL)
	send := func(client *http.Client) (resp *http.Response, reused bool, le *loginError) {
		req, err := newTokenRequest(ctx, tokenURL, r, clientAuth)
		switch {
		case errors.Is(err, errColonInClientID):
			return nil, false, &loginError{kind: kindRejected, msg: err.Error(), err: err}
		case err != nil:
			return nil, false, &loginError{kind: kindTransient, msg: "building the token request failed", err: err}
		}
		resp, reused, err = doTraced(client, req)
		if err != nil {
			return nil, reused, transportError(err, host, rules.redact)
		}
		return resp, reused, nil
	}
	resp, reused, le := send(c.http)
	if le != nil && reused && droppedConnection(le.err) && ctx.Err() == nil &&
		rules.beforeRetry != nil && rules.beforeRetry() {
		resp, _, le = send(c.fresh)
	}
	if le != nil {
		return nil, le
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body) // bounded by boundedTransport
	if err != nil {
		return nil, transportError(err, host, rules.redact)
	}
	tok, le := classifyAnswer(tokenAnswer{status: resp.StatusCode, header: resp.Header, body: body}, rules)
	if le != nil {
		return nil, le
	}
	return tok, nil
}

// doTraced sends req with client, and reports whether it went on a connection that
// an earlier request had used (httptrace.GotConnInfo.Reused).
func doTraced(client *http.Client, req *http.Request) (*http.Response, bool, error) {
	var reused atomic.Bool
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) { reused.Store(info.Reused) }}
	resp, err := client.Do(req.WithContext(httptrace.WithClientTrace(req.Context(), trace)))
	return resp, reused.Load(), err
}

// droppedConnection: the request got no answer because the connection ended
// under it: the peer closed it (EOF before any byte of an answer) or reset it.
// On a kept-alive connection that is upstream closing it as the request
// arrived, not upstream failing: the request may be sent again on a new
// connection.
func droppedConnection(err error) bool {
	if err == nil || errors.Is(err, errAnswerCut) {
		return false
	}
	return errors.Is(err, io.EOF) || serverClosedIdle(err) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// serverClosedIdle matches net/http's unexported error for a kept-alive
// connection upstream closed while the request was being written ("http: server
// closed idle connection"), which it returns for requests it does not retry.
func serverClosedIdle(err error) bool {
	for ; err != nil; err = errors.Unwrap(err) {
		if err.Error() == "http: server closed idle connection" {
			return true
		}
	}
	return false
}

// errAnswerCut: the connection failed while the answer's body was being read
// (boundedTransport); upstream had begun to answer.
var errAnswerCut = errors.New("the answer was cut off")

// transportError is the one place that turns a request that got no usable
// answer into a message and an outcome: all transient (README, "When the plugin
// logs in": network errors back off). host is the upstream's host:port
// (upstreamHost). Each class a Go HTTP client meets has its own message, in the
// plugin's words; upstream text (certificate names, an error's own text) passes
// redact before it is repeated.
func transportError(err error, host string, redact *redactor) *loginError {
	le := &loginError{kind: kindTransient, err: err}
	quoted := func(s string) string {
		return strconv.Quote(printable(redact.clean(s), maxDescriptionBytes))
	}
	var (
		dnsErr     *net.DNSError
		authority  x509.UnknownAuthorityError
		invalid    x509.CertificateInvalidError
		hostname   x509.HostnameError
		verifyErr  *tls.CertificateVerificationError
		opErr      *net.OpError
		hostName   = hostOnly(host)
		upstreamAt = "upstream " + host
	)
	switch {
	case errors.Is(err, errBodyTooLarge):
		le.msg = "malformed answer from upstream: " + errBodyTooLarge.Error()
	case errors.As(err, &opErr) && opErr.Op == "proxyconnect":
		// Before the classes below, which would blame upstream for the proxy.
		le.msg = "cannot reach the HTTP proxy (HTTPS_PROXY, HTTP_PROXY) on the way to " + upstreamAt
		le.detail = ": " + printable(redact.clean(errText(opErr.Err)), maxDescriptionBytes)
	case errors.As(err, &dnsErr):
		// Before the timeouts: a resolver that did not answer is a DNS failure.
		le.msg = "cannot resolve the upstream host name " + strconv.Quote(hostName) + ": "
		switch {
		case dnsErr.IsNotFound:
			le.msg += "no such host"
		case dnsErr.IsTimeout:
			le.msg += "the DNS server did not answer in time"
		default:
			le.msg += "DNS lookup failed"
			le.detail = " (" + printable(redact.clean(dnsErr.Err), maxDescriptionBytes) + ")"
		}
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		le.msg = upstreamAt + " did not answer within request_timeout"
	case errors.Is(err, context.Canceled):
		le.msg = "the request to " + upstreamAt + " was cancelled before an answer came"
	case errors.Is(err, errAnswerCut) || errors.Is(err, io.ErrUnexpectedEOF):
		le.msg = upstreamAt + " closed the connection in the middle of its answer"
	case errors.Is(err, syscall.ECONNREFUSED):
		le.msg = upstreamAt + " refused the connection (nothing listens on that port, or a firewall refuses it)"
	case errors.Is(err, syscall.ECONNRESET):
		le.msg = upstreamAt + " reset the connection without answering"
	case errors.Is(err, io.EOF) || errors.Is(err, syscall.EPIPE) || serverClosedIdle(err):
		le.msg = upstreamAt + " closed the connection without answering"
	case errors.As(err, &authority):
		le.msg = upstreamAt + " presented a TLS certificate signed by an unknown authority"
		if authority.Cert != nil {
			le.detail = " (issuer " + quoted(authority.Cert.Issuer.String()) + ")"
		}
		le.detail += "; if upstream uses a private CA, give its certificate in config ca_pem"
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired && invalid.Cert != nil:
		cert := invalid.Cert
		if time.Now().Before(cert.NotBefore) {
			le.msg = upstreamAt + " presented a TLS certificate that is not valid before " +
				cert.NotBefore.UTC().Format(time.RFC3339) + "; check this host's clock"
		} else {
			le.msg = upstreamAt + " presented a TLS certificate that expired at " + cert.NotAfter.UTC().Format(time.RFC3339)
		}
		le.detail = " (subject " + quoted(cert.Subject.String()) + ")"
	case errors.As(err, &invalid):
		le.msg = upstreamAt + " presented a TLS certificate that is not valid"
		le.detail = ": " + printable(redact.clean(invalid.Error()), maxDescriptionBytes)
	case errors.As(err, &hostname):
		le.msg = upstreamAt + " presented a TLS certificate for other host names, not " + strconv.Quote(hostName)
		if names := certNames(hostname.Certificate); names != "" {
			le.detail = " (it names " + printable(redact.clean(names), maxDescriptionBytes) + ")"
		}
	case errors.As(err, &verifyErr):
		le.msg = upstreamAt + " presented a TLS certificate that cannot be verified"
		le.detail = ": " + printable(redact.clean(errText(verifyErr.Err)), maxDescriptionBytes)
	case errors.As(err, &opErr):
		le.msg = "cannot reach " + upstreamAt
		le.detail = ": " + printable(redact.clean(opErr.Op+" "+errText(opErr.Err)), maxDescriptionBytes)
	default:
		le.msg = "the request to " + upstreamAt + " failed"
		le.detail = ": " + printable(redact.clean(errText(innerError(err))), maxDescriptionBytes)
	}
	return le
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// innerError strips net/http's *url.Error, whose text repeats the whole URL.
func innerError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// hostOnly is the host name of a host:port.
func hostOnly(hostPort string) string {
	if h, _, err := net.SplitHostPort(hostPort); err == nil {
		return h
	}
	return hostPort
}

// certNames lists the names a certificate is valid for (RFC 5280 §4.2.1.6),
// comma-separated.
func certNames(c *x509.Certificate) string {
	if c == nil {
		return ""
	}
	names := slices.Clone(c.DNSNames)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	return strings.Join(names, ", ")
}

// boundedTransport reads every response body up front and refuses one over
// maxBodyBytes with errBodyTooLarge. (oauth2 alone would silently truncate it.)
type boundedTransport struct{ next http.RoundTripper }

func (t *boundedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBodyBytes+1))
	resp.Body.Close()
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || isTimeout(err) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %w", errAnswerCut, err)
	}
	if len(body) > maxBodyBytes {
		return nil, errBodyTooLarge
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}

// verify asks verifyURL whether an access token is valid: (true, nil) for
// {"authenticated": true}, (false, nil) when upstream says the token is not valid.
// Its errors hold no upstream text but what passed redact.
func (c *tokenClient) verify(ctx context.Context, verifyURL, accessToken string, redact *redactor) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, verifyURL, nil)
	if err != nil {
		return false, fmt.Errorf("building the request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+accessToken)
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return false, transportError(err, upstreamHost(verifyURL), redact)
	}
	defer resp.Body.Close()
	var answer struct {
		Authenticated bool   `json:"authenticated"`
		Error         string `json:"error"`
	}
	decodeErr := json.NewDecoder(resp.Body).Decode(&answer)
	switch {
	case resp.StatusCode == http.StatusOK && decodeErr == nil:
		return answer.Authenticated, nil
	case resp.StatusCode == http.StatusUnauthorized || answer.Error == "invalid_token":
		return false, nil
	default:
		return false, fmt.Errorf("%w (HTTP %d)", errVerifyAnswer, resp.StatusCode)
	}
}

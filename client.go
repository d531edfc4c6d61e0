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
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-cleanhttp"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// maxBodyBytes bounds what is read of any upstream answer (SPEC 5).
const maxBodyBytes = 1 << 20

// Sentinel errors of the token exchange. They carry no upstream text, so they are
// safe to put in messages; loginError wraps them with the detail that is.
var (
	errBodyTooLarge = errors.New("answer body larger than 1 MiB")
	errMalformed    = errors.New("malformed answer")
)

// loginKind sorts a failed login by what the plugin must do next (SPEC 3, items 6-9).
type loginKind int

const (
	// kindTransient: network error, timeout, 5xx, redirect, malformed answer. Back off.
	kindTransient loginKind = iota
	// kindRateLimited: upstream answered 429. Honour Retry-After.
	kindRateLimited
	// kindRejected: upstream refused the credentials. No retry until they change.
	kindRejected
)

// loginError is a failed login, classified. Its message never holds a secret: it is
// built from the status code, the OAuth2 error code and a bounded description.
type loginError struct {
	kind       loginKind
	status     int           // HTTP status, 0 when no answer came
	retryAfter time.Duration // from a 429's Retry-After, 0 when absent
	msg        string
	err        error
}

func (e *loginError) Error() string { return e.msg }
func (e *loginError) Unwrap() error { return e.err }

// token is what a successful login yields. expiresIn is the upstream's lifetime;
// the caller turns it into an expiry from the moment the request was sent.
type token struct {
	accessToken string
	tokenType   string
	expiresIn   time.Duration
}

// tokenClient performs the token exchange against one config. It exists so that the
// HTTP details (TLS roots, timeouts, redirects, body bound) are built once per
// config rather than on every login.
type tokenClient struct {
	http *http.Client
	now  func() time.Time
}

// newTokenClient builds the HTTP client for a config: extra CA roots, no redirects
// followed, every response body bounded to 1 MiB.
func newTokenClient(cfg *config, now func() time.Time) (*tokenClient, error) {
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
	return &tokenClient{
		http: &http.Client{
			Transport: &boundedTransport{next: transport},
			Timeout:   cfg.RequestTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		},
		now: now,
	}, nil
}

// login exchanges a role's credentials for a token at tokenURL. It returns a
// *loginError for every failure.
func (c *tokenClient) login(ctx context.Context, tokenURL string, r *role) (*token, error) {
	ctx = context.WithValue(ctx, oauth2.HTTPClient, c.http)
	var (
		tok *oauth2.Token
		err error
	)
	switch r.GrantType {
	case grantClientCredentials:
		cc := clientcredentials.Config{
			ClientID:     r.ClientID,
			ClientSecret: r.ClientSecret,
			TokenURL:     tokenURL,
			Scopes:       strings.Fields(r.Scope),
			AuthStyle:    oauth2.AuthStyleInHeader,
		}
		tok, err = cc.Token(ctx)
	default:
		pc := oauth2.Config{
			Endpoint: oauth2.Endpoint{TokenURL: tokenURL, AuthStyle: oauth2.AuthStyleInParams},
			Scopes:   strings.Fields(r.Scope),
		}
		tok, err = pc.PasswordCredentialsToken(ctx, r.Username, r.Password)
	}
	if err != nil {
		return nil, classify(err, c.now())
	}
	return parseToken(tok)
}

// parseToken checks a successful answer: an access token and a positive expires_in.
func parseToken(tok *oauth2.Token) (*token, error) {
	if tok.AccessToken == "" {
		return nil, malformed("no access_token")
	}
	var seconds float64
	switch v := tok.Extra("expires_in").(type) {
	case float64:
		seconds = v
	case int64:
		seconds = float64(v)
	case nil:
		return nil, malformed("no expires_in")
	default:
		return nil, malformed("expires_in is not a number")
	}
	if seconds <= 0 || seconds > float64(10*365*24*3600) {
		return nil, malformed("expires_in is not a positive number of seconds")
	}
	tokenType := tok.TokenType
	if tokenType == "" {
		tokenType = "Bearer"
	}
	return &token{
		accessToken: tok.AccessToken,
		tokenType:   tokenType,
		expiresIn:   time.Duration(seconds * float64(time.Second)),
	}, nil
}

func malformed(what string) *loginError {
	return &loginError{kind: kindTransient, msg: "malformed answer from upstream: " + what, err: errMalformed}
}

// rejectedCodes are the OAuth2 error codes that mean "these credentials will not
// work": retrying them only burns the login budget.
var rejectedCodes = map[string]bool{
	"invalid_grant":       true,
	"invalid_client":      true,
	"unauthorized_client": true,
	"access_denied":       true,
}

// classify turns an error of the oauth2 exchange into a *loginError.
func classify(err error, now time.Time) *loginError {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil {
		status := re.Response.StatusCode
		le := &loginError{status: status, err: err}
		detail := describe(re)
		switch {
		case status == http.StatusTooManyRequests:
			le.kind = kindRateLimited
			le.retryAfter = parseRetryAfter(re.Response.Header.Get("Retry-After"), now)
			le.msg = "upstream rate limit (HTTP 429)" + detail
		case rejectedCodes[re.ErrorCode] || status == http.StatusUnauthorized ||
			status == http.StatusBadRequest || status == http.StatusForbidden:
			le.kind = kindRejected
			le.msg = fmt.Sprintf("upstream rejected the credentials (HTTP %d)%s", status, detail)
		case status >= 300 && status < 400:
			le.kind = kindTransient
			le.msg = fmt.Sprintf("upstream answered a redirect (HTTP %d), which is not followed", status)
		default:
			le.kind = kindTransient
			le.msg = fmt.Sprintf("upstream answered HTTP %d%s", status, detail)
		}
		return le
	}
	switch {
	case errors.Is(err, errBodyTooLarge):
		return &loginError{kind: kindTransient, msg: "malformed answer from upstream: " + errBodyTooLarge.Error(), err: err}
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		return &loginError{kind: kindTransient, msg: "upstream did not answer within request_timeout", err: err}
	case strings.HasPrefix(err.Error(), "oauth2: cannot parse"), strings.HasPrefix(err.Error(), "oauth2: server response missing"):
		return &loginError{kind: kindTransient, msg: "malformed answer from upstream: not a token (JSON with access_token expected)", err: errMalformed}
	}
	var ne net.Error
	var oe *net.OpError
	if errors.As(err, &oe) {
		return &loginError{kind: kindTransient, msg: "cannot reach upstream: " + oe.Op + " " + errText(oe.Err), err: err}
	}
	if errors.As(err, &ne) {
		return &loginError{kind: kindTransient, msg: "cannot reach upstream", err: err}
	}
	return &loginError{kind: kindTransient, msg: "token request failed", err: err}
}

// describe renders the OAuth2 error code and a bounded description of an answer.
func describe(re *oauth2.RetrieveError) string {
	if re.ErrorCode == "" {
		return ""
	}
	s := ": " + re.ErrorCode
	if d := re.ErrorDescription; d != "" {
		if len(d) > 200 {
			d = d[:200] + "..."
		}
		s += " (" + d + ")"
	}
	return s
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

// parseRetryAfter reads a Retry-After header in seconds or as an HTTP date; 0 when
// absent or unreadable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil {
		if s < 0 {
			return 0
		}
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
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
		return nil, err
	}
	if len(body) > maxBodyBytes {
		return nil, errBodyTooLarge
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}

// verify asks verifyURL whether an access token is valid: (true, nil) for
// {"authenticated": true}, (false, nil) when upstream says the token is not valid.
func (c *tokenClient) verify(ctx context.Context, verifyURL, accessToken string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, verifyURL, nil)
	if err != nil {
		return false, fmt.Errorf("building the request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+accessToken)
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return false, classify(err, c.now())
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

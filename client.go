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

	"github.com/hashicorp/go-cleanhttp"
)

// tokenClient performs the token exchange against one config. It exists so that the
// HTTP details (TLS roots, timeouts, redirects, body bound) are built once per
// config rather than on every login.
type tokenClient struct {
	http *http.Client
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
	return &tokenClient{
		http: &http.Client{
			Transport: &boundedTransport{next: transport},
			Timeout:   cfg.RequestTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		},
	}, nil
}

// login exchanges a role's credentials for a token at tokenURL, presenting a
// client secret as clientAuth says. It returns a *loginError for every failure;
// upstream text in its message has passed redact.
func (c *tokenClient) login(ctx context.Context, tokenURL, clientAuth string, r *role, rules answerRules) (*issuedToken, error) {
	req, err := newTokenRequest(ctx, tokenURL, r, clientAuth)
	switch {
	case errors.Is(err, errColonInClientID):
		return nil, &loginError{kind: kindRejected, msg: err.Error(), err: err}
	case err != nil:
		return nil, &loginError{kind: kindTransient, msg: "building the token request failed", err: err}
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, transportError(err, rules.redact)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body) // bounded by boundedTransport
	if err != nil {
		return nil, transportError(err, rules.redact)
	}
	tok, le := classifyAnswer(tokenAnswer{status: resp.StatusCode, header: resp.Header, body: body}, rules)
	if le != nil {
		return nil, le
	}
	return tok, nil
}

// transportError classifies a request that got no usable answer: all transient.
func transportError(err error, redact *redactor) *loginError {
	le := &loginError{kind: kindTransient, err: err}
	var oe *net.OpError
	switch {
	case errors.Is(err, errBodyTooLarge):
		le.msg = "malformed answer from upstream: " + errBodyTooLarge.Error()
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		le.msg = "upstream did not answer within request_timeout"
	case errors.As(err, &oe):
		le.msg = "cannot reach upstream"
		le.detail = ": " + printable(redact.clean(oe.Op+" "+errText(oe.Err)), maxDescriptionBytes)
	default:
		le.msg = "token request failed"
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
		return false, transportError(err, redact)
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

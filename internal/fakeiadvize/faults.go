package fakeiadvize

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
)

// Faults: the failures and the unusual but valid answers the token endpoint
// can be told to give (InjectFault, POST /_fake/fault); shapes.go builds them.

// Defaults of the faults.
const (
	// DefaultRetryAfter is the Retry-After, in seconds, of an injected
	// rate_limit fault that does not set one.
	DefaultRetryAfter = 60
	// DefaultErrorStatus is the status of an injected server_error fault that
	// does not set one.
	DefaultErrorStatus = http.StatusServiceUnavailable
	// HugeBodyPad is the size of the "pad" field of the huge_body fault.
	HugeBodyPad = 2 << 20
)

// FaultMode names a failure the fake can imitate on token requests.
type FaultMode string

// The fault modes. See Fault.
//
// Failures:
const (
	FaultNone              FaultMode = "none"                      // behave normally
	FaultRateLimit         FaultMode = "rate_limit"                // 429 with Retry-After (retry_after seconds)
	FaultRateLimitNoRetry  FaultMode = "rate_limit_no_retry_after" // 429 without Retry-After
	FaultServerError       FaultMode = "server_error"              // 5xx, JSON or plain body
	FaultHTML              FaultMode = "html"                      // 502 text/html error page
	FaultHTML200           FaultMode = "html_200"                  // 200 text/html page
	FaultHang              FaultMode = "hang"                      // no answer until the client gives up or the fault is cleared
	FaultNoExpiresIn       FaultMode = "no_expires_in"             // 200 JSON token without expires_in
	FaultZeroExpiresIn     FaultMode = "zero_expires_in"           // 200 JSON token with "expires_in":0
	FaultNegativeExpiresIn FaultMode = "negative_expires_in"       // 200 JSON token with a negative expires_in
	FaultNoAccessToken     FaultMode = "no_access_token"           // 200 JSON without access_token
	FaultHugeBody          FaultMode = "huge_body"                 // 200 JSON token with a 2 MiB "pad" field

	// 503 temporarily_unavailable JSON with Retry-After (retry_after seconds,
	// default DefaultRetryAfter; status may set another 5xx).
	FaultUnavailableRetryAfter FaultMode = "unavailable_retry_after"
	// A redirect (status: 301, 302 (default), 303, 307 or 308) to location,
	// which is required: for example another host's token endpoint.
	FaultRedirect FaultMode = "redirect"
	// HTTP 200 whose JSON body is {"error":"incorrect_client_credentials"}, no
	// token: a rejection in a success status, as some servers send.
	FaultError200Credentials FaultMode = "error_200_credentials"
	// HTTP 200 whose JSON body is {"error":"temporarily_unavailable"}, no token.
	FaultError200Temporary FaultMode = "error_200_temporary"
	// 400 invalid_grant JSON whose error_description is EchoPrefixLen
	// characters of text followed by the submitted secret (the password of
	// the password grant, the client secret of the client-credentials grant)
	// exactly as received.
	FaultEchoSecret FaultMode = "echo_secret"
	// As echo_secret, the secret form-encoded (url.QueryEscape) inside the
	// JSON error_description.
	FaultEchoSecretURLEncoded FaultMode = "echo_secret_urlencoded"
	// As echo_secret, the secret base64-encoded (standard, padded).
	FaultEchoSecretBase64 FaultMode = "echo_secret_base64"
	// As echo_secret, but the whole error body is form-encoded
	// (application/x-www-form-urlencoded: error=invalid_grant&error_description=...).
	FaultEchoSecretForm FaultMode = "echo_secret_form"
)

// Valid token answers in the shapes real servers send. Each issues a real
// token, valid for /_authenticated for the lifetime it advertises:
const (
	// The usual JSON token answer, with Content-Type "text/plain".
	FaultJSONTextPlain FaultMode = "json_text_plain"
	// The usual JSON token answer, with Content-Type "text/html".
	FaultJSONTextHTML FaultMode = "json_text_html"
	// The usual JSON token answer, with no Content-Type header at all.
	FaultJSONNoContentType FaultMode = "json_no_content_type"
	// The usual JSON token answer, Content-Type "application/json; charset=utf-8".
	FaultJSONCharset FaultMode = "json_charset"
	// The usual JSON token answer preceded by a UTF-8 byte-order mark (EF BB BF).
	FaultJSONBOM FaultMode = "json_bom"
	// The token answer form-encoded (application/x-www-form-urlencoded):
	// access_token, expires_in, refresh_token and token_type fields.
	FaultFormToken FaultMode = "form_token"
	// JSON token with "expires_in":3599.5 (DecimalExpiresIn seconds).
	FaultDecimalExpiresIn FaultMode = "decimal_expires_in"
	// JSON token with "expires_in":"3600", a string (StringExpiresIn).
	FaultStringExpiresIn FaultMode = "string_expires_in"
	// JSON token with "expires_in":2147483647 (HugeExpiresIn, about 68 years).
	FaultHugeExpiresIn FaultMode = "huge_expires_in"
	// JSON token with "token_type":"bearer".
	FaultLowercaseTokenType FaultMode = "lowercase_token_type"
	// JSON token with "token_type":"BEARER".
	FaultUppercaseTokenType FaultMode = "uppercase_token_type"
	// JSON token with no token_type field.
	FaultNoTokenType FaultMode = "no_token_type"
)

// Values of the expires_in faults.
const (
	negativeExpiresIn = -1 // negative_expires_in
	// DecimalExpiresIn is the expires_in of decimal_expires_in, in seconds.
	DecimalExpiresIn = 3599.5
	// StringExpiresIn is the expires_in of string_expires_in, a JSON string.
	StringExpiresIn = "3600"
	// HugeExpiresIn is the expires_in of huge_expires_in, in seconds: the
	// largest 32-bit signed integer.
	HugeExpiresIn = 2147483647
	// EchoPrefixLen is how many characters of text come before the echoed
	// secret in the error_description of the echo_secret faults.
	EchoPrefixLen = 185
	// DefaultRedirectStatus is the status of a redirect fault that does not set one.
	DefaultRedirectStatus = http.StatusFound
)

var knownModes = []FaultMode{
	FaultNone, FaultRateLimit, FaultRateLimitNoRetry, FaultServerError, FaultHTML,
	FaultHTML200, FaultHang, FaultNoExpiresIn, FaultZeroExpiresIn,
	FaultNegativeExpiresIn, FaultNoAccessToken, FaultHugeBody,
	FaultUnavailableRetryAfter, FaultRedirect, FaultError200Credentials, FaultError200Temporary,
	FaultEchoSecret, FaultEchoSecretURLEncoded, FaultEchoSecretBase64, FaultEchoSecretForm,
	FaultJSONTextPlain, FaultJSONTextHTML, FaultJSONNoContentType, FaultJSONCharset, FaultJSONBOM,
	FaultFormToken, FaultDecimalExpiresIn, FaultStringExpiresIn, FaultHugeExpiresIn,
	FaultLowercaseTokenType, FaultUppercaseTokenType, FaultNoTokenType,
}

// KnownFaultModes lists every fault mode, "none" first.
func KnownFaultModes() []FaultMode { return slices.Clone(knownModes) }

var redirectStatuses = []int{
	http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
	http.StatusTemporaryRedirect, http.StatusPermanentRedirect,
}

// Fault describes a failure to imitate on upcoming token requests. It is both
// the argument of InjectFault and the body of POST /_fake/fault.
//
// Faults take precedence over the natural rate limits and over credential
// checks, but every faulted request is still a login attempt (counted, and
// counted against the limits). Faulted 200 answers that carry an access token
// issue a real token, valid for /_authenticated.
type Fault struct {
	Mode FaultMode `json:"mode"`
	// Count is how many token requests the fault applies to; 0 means until
	// cleared. In Stats it is the number of requests left.
	Count int `json:"count"`
	// User, when set, limits the fault to token requests for that username
	// (password grant) or client_id (client-credentials grant); requests for
	// others are answered normally and do not use the fault up.
	User string `json:"user,omitempty"`
	// RetryAfter is the Retry-After header, in seconds, of rate_limit and
	// unavailable_retry_after. 0 means DefaultRetryAfter.
	RetryAfter int `json:"retry_after,omitempty"`
	// Status is the status code of server_error and unavailable_retry_after
	// (500 to 599; 0 means DefaultErrorStatus), or of redirect (301, 302,
	// 303, 307 or 308; 0 means DefaultRedirectStatus).
	Status int `json:"status,omitempty"`
	// PlainText makes server_error answer text/plain instead of JSON.
	PlainText bool `json:"plain_text,omitempty"`
	// Location is the absolute http(s) URL a redirect fault points to.
	Location string `json:"location,omitempty"`
}

func (f Fault) validate() error {
	if !slices.Contains(knownModes, f.Mode) && f.Mode != "" {
		return fmt.Errorf("fakeiadvize: unknown fault mode %q", f.Mode)
	}
	if f.Count < 0 {
		return fmt.Errorf("fakeiadvize: negative fault count %d", f.Count)
	}
	if f.RetryAfter < 0 {
		return fmt.Errorf("fakeiadvize: negative retry_after %d", f.RetryAfter)
	}
	if f.Mode == FaultRedirect {
		if f.Status != 0 && !slices.Contains(redirectStatuses, f.Status) {
			return fmt.Errorf("fakeiadvize: redirect status %d is not one of %v", f.Status, redirectStatuses)
		}
		u, err := url.Parse(f.Location)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return errors.New("fakeiadvize: a redirect fault needs an absolute http(s) location")
		}
		return nil
	}
	if f.Status != 0 && (f.Status < 500 || f.Status > 599) {
		return fmt.Errorf("fakeiadvize: fault status %d is not 5xx", f.Status)
	}
	if f.Location != "" {
		return errors.New("fakeiadvize: location is only for the redirect fault")
	}
	return nil
}

// InjectFault makes the next f.Count token requests (all of them while
// f.Count is 0) fail as f.Mode says, replacing any active fault. Requests
// held by a previous hang fault are released. Mode "none" clears.
func (s *Server) InjectFault(f Fault) error {
	if err := f.validate(); err != nil {
		return err
	}
	if f.Mode == FaultNone {
		f = Fault{}
	}
	s.mu.Lock()
	s.fault = f
	close(s.release) // the fault those requests hang on is gone
	s.release = make(chan struct{})
	s.mu.Unlock()
	if f.Mode != "" {
		s.logf("fault injected: mode=%s count=%d", f.Mode, f.Count)
	} else {
		s.logf("fault cleared")
	}
	return nil
}

// ClearFault stops fault injection and releases requests held by the hang
// fault, which then get their normal answer.
func (s *Server) ClearFault() {
	_ = s.InjectFault(Fault{}) // the zero Fault is always valid
}

// takeFaultLocked returns the fault that applies to req, if any, using up
// one of its requests, and the channel that is closed when the fault is
// cleared.
func (s *Server) takeFaultLocked(req tokenRequest) (Fault, chan struct{}) {
	f := s.fault
	if f.Mode == "" || (f.User != "" && f.User != req.identity) {
		return Fault{}, nil
	}
	if f.Count > 0 {
		s.fault.Count--
		if s.fault.Count == 0 {
			// Used up. Requests it holds keep hanging: only clearing releases them.
			s.fault = Fault{}
		}
	}
	return f, s.release
}

// hang holds a request until its client gives up (ok false: write nothing),
// the fault is cleared (the request then gets its normal answer) or the fake
// is closed (503).
func (s *Server) hang(ctx context.Context, req tokenRequest, release chan struct{}) (rp reply, ok bool) {
	released := false
	select {
	case <-ctx.Done():
	case <-s.done:
		rp = errorReply(http.StatusServiceUnavailable, "temporarily_unavailable",
			"fake iAdvize server closed", "hang ended by Close")
		ok = true
	case <-release:
		released = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.Hanging--
	if released {
		return s.loginLocked(req), true
	}
	s.stats.InjectedFaults++
	return rp, ok
}

package iadvize

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Bounds on what the plugin takes from a token answer.
const (
	// maxBodyBytes bounds what is read of any upstream answer (README, "When
	// the plugin logs in": malformed answers); a larger answer is malformed, never truncated and parsed.
	maxBodyBytes = 1 << 20
	// maxTokenLifetime caps expires_in: servers that mean "does not expire" send
	// 2147483647 (2^31-1 seconds, 68 years); a year is served instead.
	maxTokenLifetime = 365 * 24 * time.Hour
	// minTokenLifetime is the shortest expires_in taken as a token.
	minTokenLifetime = time.Second
	// maxRetryAfter caps a Retry-After header: a broken proxy's "one year" must
	// not lock an integration out.
	maxRetryAfter = time.Hour
	// Upstream text repeated in a message is cut to these many bytes, after the
	// redactor has had its say on the whole of it.
	maxCodeBytes        = 64
	maxDescriptionBytes = 200
)

// Sentinel errors of the token exchange. They carry no upstream text.
var (
	errBodyTooLarge = errors.New("answer body larger than 1 MiB")
	errMalformed    = errors.New("malformed answer")
)

// loginKind sorts a failed login by what the plugin must do next (README, "When
// the plugin logs in").
type loginKind int

const (
	// kindTransient: network error, timeout, 5xx, redirect, malformed answer, or an
	// OAuth2 error code saying the failure is temporary. Back off.
	kindTransient loginKind = iota
	// kindRateLimited: HTTP 429, or an error code that means "slow down". Honour
	// Retry-After, block the principal.
	kindRateLimited
	// kindRejected: upstream refused the credentials. No retry until they change.
	kindRejected
)

// loginError is a failed login, classified. Its message never holds a secret:
// msg is the plugin's own words, and detail, the upstream text, passed the
// role's redactor whole before it was cut.
type loginError struct {
	kind       loginKind
	status     int           // HTTP status, 0 when no answer came
	retryAfter time.Duration // Retry-After (at most maxRetryAfter), 0 when absent
	msg        string
	detail     string
	err        error
}

func (e *loginError) Error() string { return e.msg + e.detail }
func (e *loginError) Unwrap() error { return e.err }

// issuedToken is what a successful login yields (RFC 6749 §5.1). expiresIn is
// the upstream's lifetime; the caller turns it into an expiry from the moment the
// request was sent.
type issuedToken struct {
	accessToken string
	tokenType   string
	expiresIn   time.Duration
}

// tokenAnswer is one HTTP answer of the token endpoint, body read in full.
type tokenAnswer struct {
	status int
	header http.Header
	body   []byte
}

// answerRules are what the classification of an answer depends on besides the
// answer itself.
type answerRules struct {
	now func() time.Time
	// defaultExpiresIn is the lifetime assumed when a token answer has no
	// expires_in; 0 makes such an answer malformed.
	defaultExpiresIn time.Duration
	// redact decides whether upstream text may be repeated.
	redact *redactor
	// beforeRetry, when set, is asked before a login is sent a second time
	// because upstream closed the kept-alive connection it went on
	// (tokenClient.login): the retry is a login, so it reserves one more from
	// the budgets (docs/login-policy.md, "Budgets"); false means no retry.
	beforeRetry func() bool
}

// OAuth2 error codes (RFC 6749 §5.2, RFC 8628 §3.5, and what servers send in
// practice) that do not mean "these credentials will never work".
var (
	rateLimitCodes = map[string]bool{
		"slow_down": true, "too_many_requests": true, "rate_limit_exceeded": true, "rate_limited": true,
	}
	temporaryCodes = map[string]bool{
		"temporarily_unavailable": true, "server_error": true, "authorization_pending": true,
	}
	// rejectionCodes mean the credentials (or the client) are refused, even when a
	// server sends them with a 5xx status.
	rejectionCodes = map[string]bool{
		"invalid_grant": true, "invalid_client": true, "unauthorized_client": true,
		"access_denied": true, "unsupported_grant_type": true, "invalid_scope": true,
	}
)

// knownCode reports whether code is one of the error codes listed above.
func knownCode(code string) bool {
	return rateLimitCodes[code] || temporaryCodes[code] || rejectionCodes[code] || code == "invalid_request"
}

// classifyAnswer is the one place that decides what a token endpoint's answer
// is: a token, or a *loginError of kind rejected, rate limited or transient
// (malformed answers are transient). The rules, in order:
//
//   - 429, or an error code meaning "slow down": rate limited; Retry-After (RFC
//     9110 §10.2.3) honoured up to maxRetryAfter.
//   - 3xx: transient; redirects are never followed.
//   - an error code saying the failure is temporary (temporarily_unavailable,
//     server_error): transient, whatever the status.
//   - a rejection code (invalid_grant, invalid_client, ... RFC 6749 §5.2): rejected,
//     whatever the status.
//   - 5xx: transient; a Retry-After is honoured up to maxRetryAfter.
//   - any other error code, in a 2xx or 4xx answer: rejected (servers that answer
//     200 {"error": ...} mean a refusal).
//   - 400, 401, 403: rejected; other non-2xx: transient.
//   - 2xx: a token (RFC 6749 §5.1) when the body has a non-empty access_token and
//     a usable lifetime; malformed otherwise.
//
// The body may be JSON whatever its Content-Type (with a byte-order mark or not),
// or form-encoded. See parseTokenFields for what a token answer may look like.
func classifyAnswer(a tokenAnswer, rules answerRules) (*issuedToken, *loginError) {
	fields, parsed := parseAnswerBody(a.body)
	code := errorCode(fields)
	le := &loginError{status: a.status}
	retryAfter := parseRetryAfter(a.header.Get("Retry-After"), rules.now())
	switch {
	case a.status == http.StatusTooManyRequests || rateLimitCodes[code]:
		le.kind, le.retryAfter = kindRateLimited, retryAfter
		le.msg = fmt.Sprintf("upstream rate limit (HTTP %d)", a.status)
	case a.status >= 300 && a.status < 400:
		le.kind = kindTransient
		le.msg = fmt.Sprintf("upstream answered a redirect (HTTP %d), which is not followed", a.status)
		return nil, le
	case temporaryCodes[code]:
		le.kind, le.retryAfter = kindTransient, retryAfter
		le.msg = fmt.Sprintf("upstream is temporarily unable to log in (HTTP %d)", a.status)
	case rejectionCodes[code]:
		le.kind = kindRejected
		le.msg = fmt.Sprintf("upstream rejected the credentials (HTTP %d)", a.status)
	case a.status >= 500:
		le.kind, le.retryAfter = kindTransient, retryAfter
		le.msg = fmt.Sprintf("upstream answered HTTP %d", a.status)
	case code != "":
		le.kind = kindRejected
		le.msg = fmt.Sprintf("upstream rejected the credentials (HTTP %d)", a.status)
	case a.status == http.StatusBadRequest || a.status == http.StatusUnauthorized || a.status == http.StatusForbidden:
		le.kind = kindRejected
		le.msg = fmt.Sprintf("upstream rejected the credentials (HTTP %d)", a.status)
	case a.status < 200 || a.status > 299:
		le.kind = kindTransient
		le.msg = fmt.Sprintf("upstream answered HTTP %d", a.status)
	default:
		if !parsed {
			return nil, malformed("not a token answer (neither JSON nor form-encoded)")
		}
		return parseTokenFields(fields, rules.defaultExpiresIn)
	}
	le.detail = upstreamDetail(code, stringField(fields, "error_description"), rules.redact)
	return nil, le
}

// parseAnswerBody reads a token endpoint's body as a JSON object (a leading UTF-8
// byte-order mark and surrounding white space ignored, numbers kept exact) or,
// failing that, as a form-encoded body holding at least one OAuth2 field. It
// ignores the Content-Type, which real servers get wrong (text/plain, text/html,
// none). parsed is false when the body is neither.
func parseAnswerBody(body []byte) (fields map[string]any, parsed bool) {
	body = bytes.TrimPrefix(body, []byte("\xef\xbb\xbf"))
	body = bytes.TrimSpace(body)
	if len(body) > 0 && body[0] == '{' {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.UseNumber()
		if err := dec.Decode(&fields); err == nil {
			return fields, true
		}
		return nil, false
	}
	values, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, false
	}
	fields = make(map[string]any, len(values))
	known := false
	for k, v := range values {
		fields[k] = v[0]
		switch k {
		case "access_token", "error", "expires_in", "token_type":
			known = true
		}
	}
	return fields, known
}

// parseTokenFields reads a successful token answer (RFC 6749 §5.1). It accepts
// what real servers send: expires_in as an integer, a decimal or a numeric
// string; above maxTokenLifetime it is capped; missing or null, defaultExpiresIn
// applies (0: malformed). token_type is "Bearer" whatever its case (RFC 6750 §4
// registers it case-insensitively), "Bearer" when absent, else as sent.
func parseTokenFields(fields map[string]any, defaultExpiresIn time.Duration) (*issuedToken, *loginError) {
	accessToken, isString := fields["access_token"].(string)
	switch {
	case fields["access_token"] == nil:
		return nil, malformed("no access_token")
	case !isString:
		return nil, malformed("access_token is not a string")
	case strings.TrimSpace(accessToken) == "":
		return nil, malformed("access_token is empty")
	case strings.IndexFunc(accessToken, unicode.IsControl) >= 0:
		// A line break in a token would forge a header in a naive client.
		return nil, malformed("access_token holds control characters")
	}
	expiresIn, err := parseExpiresIn(fields["expires_in"], defaultExpiresIn)
	if err != nil {
		return nil, err
	}
	tokenType, _ := fields["token_type"].(string)
	tokenType = strings.TrimSpace(tokenType)
	switch {
	case tokenType == "" || strings.EqualFold(tokenType, "bearer"):
		tokenType = "Bearer"
	case strings.IndexFunc(tokenType, unicode.IsControl) >= 0:
		return nil, malformed("token_type holds control characters")
	}
	return &issuedToken{accessToken: accessToken, tokenType: tokenType, expiresIn: expiresIn}, nil
}

// parseExpiresIn turns expires_in (a json.Number, a string holding a decimal
// number, or nil) into a lifetime: at least minTokenLifetime, capped at
// maxTokenLifetime.
func parseExpiresIn(v any, defaultExpiresIn time.Duration) (time.Duration, *loginError) {
	var text string
	switch v := v.(type) {
	case nil:
	case json.Number:
		text = v.String()
	case string:
		text = strings.TrimSpace(v)
	default:
		return 0, malformed("expires_in is not a number")
	}
	if text == "" {
		if defaultExpiresIn > 0 {
			return defaultExpiresIn, nil
		}
		return 0, malformed("no expires_in, and config has no default_expires_in")
	}
	if !decimalNumber.MatchString(text) {
		return 0, malformed("expires_in is not a number")
	}
	seconds, err := strconv.ParseFloat(text, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0, malformed("expires_in is not a number")
	}
	if seconds < minTokenLifetime.Seconds() {
		// Vault counts leases in whole seconds: a token that dies within one
		// could never be served, and every read would log in for nothing.
		return 0, malformed("expires_in is not a positive number of seconds (at least 1)")
	}
	if seconds >= maxTokenLifetime.Seconds() { // also values beyond float64's range
		return maxTokenLifetime, nil
	}
	return time.Duration(seconds * float64(time.Second)), nil
}

// decimalNumber is a JSON number (RFC 8259 §6), also accepted in a string: no
// hex, no Inf or NaN, no underscores.
var decimalNumber = regexp.MustCompile(`^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$`)

func malformed(what string) *loginError {
	return &loginError{kind: kindTransient, msg: "malformed answer from upstream: " + what, err: errMalformed}
}

// errorCode is an answer's OAuth2 error code (RFC 6749 §5.2), lower-cased; ""
// when there is none. An error member that is not a string (an object, a number,
// true) still makes the answer an error: "error".
func errorCode(fields map[string]any) string {
	switch v := fields["error"].(type) {
	case nil:
		return ""
	case string:
		return strings.ToLower(strings.TrimSpace(v))
	case bool:
		if !v {
			return ""
		}
	}
	return "error"
}

// stringField is a field of an answer as a string; "" when absent or not a string.
func stringField(fields map[string]any, name string) string {
	s, _ := fields[name].(string)
	return s
}

// upstreamDetail renders an OAuth2 error code and description for a message.
// The two are judged together, so that a secret split between them is caught:
// when they hold part of a secret, both are withheld whole, except a code this
// file knows (RFC 6749 §5.2 and the lists above), which cannot be a secret's.
// What is shown is stripped of control characters and cut.
func upstreamDetail(code, description string, redact *redactor) string {
	if code == "" {
		return ""
	}
	if redact.leaks(code + " " + description) {
		if knownCode(code) && !redact.leaks(code) {
			return ": " + code + " (" + withheld + ")"
		}
		return ": " + withheld
	}
	s := ": " + printable(code, maxCodeBytes)
	if description != "" {
		s += " (" + printable(description, maxDescriptionBytes) + ")"
	}
	return s
}

// printable replaces control characters (a forged line in a log) and cuts s to
// at most limit bytes on a rune boundary.
func printable(s string, limit int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == unicode.ReplacementChar {
			return '?'
		}
		return r
	}, s)
	if len(s) <= limit {
		return s
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// parseRetryAfter reads a Retry-After header (RFC 9110 §10.2.3) in seconds or as
// an HTTP date, capped at maxRetryAfter; 0 when absent, past or unreadable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s <= 0 {
			return 0
		}
		d = maxRetryAfter
		if s < int64(maxRetryAfter/time.Second) {
			d = time.Duration(s) * time.Second
		}
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), maxRetryAfter)
}

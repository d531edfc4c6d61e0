// Package fakeiadvize is an in-memory imitation of the iAdvize OAuth2 token
// server, for tests and demos.
//
// It answers POST /oauth2/token (password and client-credentials grants) and
// GET /_authenticated (bearer-token check) the way the real upstream does,
// including its login rate limits, and serves GET /api/me, an API call that
// an integration makes with its token (200, or 401 invalid_token per RFC 6750
// §3 once the token expired or was revoked). Tokens can be revoked all at
// once, or those of one user or one client. It can be told to misbehave (rate
// limits, 5xx, HTML pages, hangs, malformed token answers) or to send any of
// the valid but unusual answers real token endpoints send (JSON under another
// Content-Type, form-encoded tokens, decimal or string expires_in, lower-case
// token types, errors in a 200 body, error descriptions that echo the
// submitted secret, redirects) through Go methods or through a small JSON
// admin API under /_fake/. Time comes from an injectable clock, so tests drive
// the rate-limit windows and token expiries without sleeping.
//
// Client authentication follows RFC 6749 §2.3.1: HTTP Basic or client_id and
// client_secret in the form body. How the two halves of Basic are read is a
// switch (BasicAuthMode): exactly as written, as many client-credentials
// servers do (the default), or form-decoded as the RFC says. The password
// grant takes an optional client (RFC 6749 §4.3.2), which can be required.
//
// In a Go test:
//
//	fake := fakeiadvize.New(fakeiadvize.Options{Now: clock.Now})
//	fake.AddUser("alice", "s3cret")
//	ts := httptest.NewServer(fake)
//	t.Cleanup(ts.Close)
//	t.Cleanup(fake.Close) // runs first: releases requests held by the hang fault
//
// The fake never logs a password, client secret or access token.
package fakeiadvize

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"log"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Defaults, matching the real upstream.
const (
	// Window is the length of the sliding window the login rate limits count in.
	Window = 60 * time.Second

	DefaultTokenLifetime       = 24 * time.Hour
	DefaultUserLoginsPerMinute = 10
	DefaultIPLoginsPerMinute   = 100
	DefaultBlockDuration       = 60 * time.Second

	// DefaultRetryAfter is the Retry-After, in seconds, of an injected
	// rate_limit fault that does not set one.
	DefaultRetryAfter = 60
	// DefaultErrorStatus is the status of an injected server_error fault that
	// does not set one.
	DefaultErrorStatus = http.StatusServiceUnavailable
	// HugeBodyPad is the size of the "pad" field of the huge_body fault.
	HugeBodyPad = 2 << 20

	tokenPath   = "/oauth2/token"
	adminPrefix = "/_fake/"
	// APIPath is the API endpoint an integration calls with its token.
	APIPath = "/api/me"

	maxFormBytes  = 64 << 10
	maxAdminBytes = 64 << 10
)

// Options configures a Server. The zero value gives the upstream's defaults.
type Options struct {
	// Now is the clock for rate-limit windows, blocks and token expiry.
	// Default time.Now.
	Now func() time.Time
	// TokenLifetime is the lifetime of issued tokens, in whole seconds
	// (rounded down, at least one second). Default 24h.
	TokenLifetime time.Duration
	// UserLoginsPerMinute is how many login attempts one username (or
	// client_id) may make within Window. Default 10; negative disables.
	UserLoginsPerMinute int
	// IPLoginsPerMinute is how many login attempts one client IP may make
	// within Window. Default 100; negative disables.
	IPLoginsPerMinute int
	// BlockDuration is how long a username or IP that went over its limit is
	// refused. Default 60s; negative means no block beyond the refused attempt.
	BlockDuration time.Duration
	// Logger, if set, receives one line per request (usernames, client IDs,
	// IPs and outcomes; never secrets or tokens). Default: no logging.
	Logger *log.Logger
	// BasicAuth is how the halves of an HTTP Basic client authentication are
	// read. Default BasicAuthRaw. New panics on an unknown mode.
	BasicAuth BasicAuthMode
	// RequireClient makes the password grant refuse (401 invalid_client) a
	// request that names no client, as standard OAuth2 servers do. Default
	// false: the client is optional, and checked when present.
	RequireClient bool
}

// BasicAuthMode says how the fake reads the user-id and password of an HTTP
// Basic client authentication (RFC 7617), once base64-decoded and split at the
// first colon.
type BasicAuthMode string

// The Basic modes.
const (
	// BasicAuthRaw takes both halves exactly as written: a secret "a+b"
	// matches only "a+b". What ICEYE-style client-credentials servers do.
	BasicAuthRaw BasicAuthMode = "raw"
	// BasicAuthURLEncoded form-decodes each half first (RFC 6749 §2.3.1): a
	// secret "a+b" matches only "a%2Bb"; "a+b" reads as "a b". What servers
	// that follow the RFC (Ory Hydra, Keycloak) do.
	BasicAuthURLEncoded BasicAuthMode = "urlencoded"
)

func (m BasicAuthMode) validate() error {
	if m != BasicAuthRaw && m != BasicAuthURLEncoded {
		return fmt.Errorf("fakeiadvize: unknown basic auth mode %q (want %q or %q)", m, BasicAuthRaw, BasicAuthURLEncoded)
	}
	return nil
}

// How a token request authenticated its client, as Stats reports it.
const (
	ClientAuthBasic = "basic" // HTTP Basic (RFC 6749 §2.3.1)
	ClientAuthPost  = "post"  // client_secret in the form body (RFC 6749 §2.3.1)
	ClientAuthNone  = "none"  // no client secret: no client, or a client_id alone (a public client)
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

// Stats is a snapshot of what the fake has seen since it was created or last
// Reset. It is also the body of GET /_fake/stats.
//
// Every login attempt ends up in exactly one outcome counter, so
// LoginAttempts == LoginSuccesses + RateLimited + InjectedRateLimited +
// FailedCredentials + BadRequests + InjectedFaults + Hanging. A request held
// by the hang fault is counted under InjectedFaults once the client gives up
// (or the fake closes), or under its real outcome if the fault is cleared.
type Stats struct {
	LoginAttempts       int `json:"login_attempts"`        // POST /oauth2/token requests
	LoginSuccesses      int `json:"login_successes"`       // 200 with a token, no fault involved
	RateLimited         int `json:"rate_limited"`          // 429 from the natural limits
	InjectedRateLimited int `json:"injected_rate_limited"` // 429 from rate_limit faults
	FailedCredentials   int `json:"failed_credentials"`    // 401 invalid_grant / invalid_client
	BadRequests         int `json:"bad_requests"`          // 400 invalid_request / unsupported_grant_type
	InjectedFaults      int `json:"injected_faults"`       // answers from other faults
	Hanging             int `json:"hanging"`               // requests held by the hang fault right now
	TokensIssued        int `json:"tokens_issued"`         // including by faulted 200 answers
	VerifyCalls         int `json:"verify_calls"`          // GET /_authenticated requests
	VerifyFailures      int `json:"verify_failures"`       // of which answered 401
	APICalls            int `json:"api_calls"`             // GET /api/me requests
	APIRefusals         int `json:"api_refusals"`          // of which answered 401
	// Handled counts the requests, on any path but the admin API, answered
	// by the handler set with SetHandler; they are in no other counter.
	Handled int `json:"handled"`
	// MaxAttemptsInWindow is MaxAttemptsInWindow(Window).
	MaxAttemptsInWindow int `json:"max_attempts_in_window"`
	// UserAttempts and UserSuccesses count per username (password grant) or
	// client_id (client-credentials grant).
	UserAttempts  map[string]int `json:"user_attempts"`
	UserSuccesses map[string]int `json:"user_successes"`
	// The last token request, as sent (never its secrets): its grant_type,
	// how it authenticated its client (ClientAuthBasic, ClientAuthPost or
	// ClientAuthNone; "" before any request), the client_id it named ("" for
	// none) and whether client_id was a field of the form body.
	LastGrantType      string `json:"last_grant_type"`
	LastClientAuth     string `json:"last_client_auth"`
	LastClientID       string `json:"last_client_id"`
	LastClientIDInForm bool   `json:"last_client_id_in_form"`
	// Fault is the active fault, Mode "none" when there is none.
	Fault Fault `json:"fault"`
}

// Server is the fake: an http.Handler holding users, clients, issued tokens,
// rate-limit state, the active fault and the counters, all behind one mutex.
// Create it with New; call Close when done.
type Server struct {
	mux    *http.ServeMux
	now    func() time.Time
	logger *log.Logger
	done   chan struct{} // closed by Close
	once   sync.Once

	mu        sync.Mutex
	users     map[string]string      // username → password
	clients   map[string]string      // client_id → client_secret, "" for a public client
	tokens    map[string]issuedToken // access token → what it was issued for
	pruneAt   int                    // token count at which expired tokens are swept
	lifetime  time.Duration
	userLimit int // <= 0: no limit
	ipLimit   int // <= 0: no limit
	block     time.Duration
	basicMode BasicAuthMode
	reqClient bool // the password grant requires a client

	userWindows map[string][]time.Time // attempt times within Window, per username
	ipWindows   map[string][]time.Time // attempt times within Window, per IP
	userBlocks  map[string]time.Time   // blocked until, per username
	ipBlocks    map[string]time.Time   // blocked until, per IP

	handler http.Handler  // answers in the fake's stead when set (SetHandler)
	fault   Fault         // Mode "" when none
	release chan struct{} // closed when the fault is cleared or replaced

	stats      Stats
	loginTimes []time.Time
}

// issuedToken is what the fake remembers of a token it issued.
type issuedToken struct {
	expires   time.Time
	grant     string // grant_type of the request that got it
	principal string // its username (password grant) or client_id (client credentials)
}

// New returns a fake with no users or clients.
func New(opts Options) *Server {
	s := &Server{
		now:         opts.Now,
		logger:      opts.Logger,
		done:        make(chan struct{}),
		users:       map[string]string{},
		clients:     map[string]string{},
		tokens:      map[string]issuedToken{},
		userWindows: map[string][]time.Time{},
		ipWindows:   map[string][]time.Time{},
		userBlocks:  map[string]time.Time{},
		ipBlocks:    map[string]time.Time{},
		release:     make(chan struct{}),
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.lifetime = wholeSeconds(orDefault(opts.TokenLifetime, DefaultTokenLifetime))
	s.userLimit = orDefault(opts.UserLoginsPerMinute, DefaultUserLoginsPerMinute)
	s.ipLimit = orDefault(opts.IPLoginsPerMinute, DefaultIPLoginsPerMinute)
	s.block = max(orDefault(opts.BlockDuration, DefaultBlockDuration), 0)
	s.basicMode = cmp.Or(opts.BasicAuth, BasicAuthRaw)
	if err := s.basicMode.validate(); err != nil {
		panic(err)
	}
	s.reqClient = opts.RequireClient
	s.resetCountersLocked()

	s.mux = http.NewServeMux()
	for _, rt := range s.routes() {
		s.mux.HandleFunc(rt.Method+" "+rt.Path, rt.handler)
	}
	return s
}

// Endpoint is one route the fake serves.
type Endpoint struct {
	Method, Path string
	// Description is one line saying what it does.
	Description string
}

type route struct {
	Endpoint
	handler http.HandlerFunc
}

func (s *Server) routes() []route {
	return []route{
		{Endpoint{"POST", "/oauth2/token", "token endpoint: password and client_credentials grants (form body)"}, s.handleToken},
		{Endpoint{"GET", "/_authenticated", "checks an Authorization: Bearer token"}, s.handleAuthenticated},
		{Endpoint{"GET", APIPath, `an integration's API call with an Authorization: Bearer token: 200 {"principal":"u","grant_type":"password"}, or 401 invalid_token`}, s.handleAPI},
		{Endpoint{"GET", "/_fake/stats", "counters, the active fault and how the last token request authenticated"}, s.handleStats},
		{Endpoint{"POST", "/_fake/fault", `inject a fault: {"mode":"rate_limit","count":1,"retry_after":120}; {"mode":"none"} clears`}, s.handleFault},
		{Endpoint{"POST", "/_fake/revoke", `make tokens issued so far invalid: no body (or {}) all; {"username":"u"} one user's; {"client_id":"c"} one client's`}, s.handleRevoke},
		{Endpoint{"POST", "/_fake/users", `add a password-grant user: {"username":"u","password":"p"}`}, s.handleUsers},
		{Endpoint{"POST", "/_fake/clients", `add a client: {"client_id":"c","client_secret":"s"}, or {"client_id":"c","public":true}`}, s.handleClients},
		{Endpoint{"POST", "/_fake/reset", "zero the counters and forget rate-limit windows and blocks"}, s.handleReset},
		{Endpoint{"POST", "/_fake/config", `change settings: token_lifetime_seconds, user_logins_per_minute, ip_logins_per_minute, block_seconds, basic_auth ("raw"|"urlencoded"), require_client`}, s.handleConfig},
	}
}

// Endpoints lists the routes a Server serves, in a stable order.
func Endpoints() []Endpoint {
	var eps []Endpoint
	for _, rt := range (&Server{}).routes() {
		eps = append(eps, rt.Endpoint)
	}
	return eps
}

// orDefault returns v, or def when v is zero; a negative v stays negative, which
// callers read as "disabled".
func orDefault[T int | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// wholeSeconds rounds d down to whole seconds, with a minimum of one, so the
// advertised expires_in and the real expiry agree.
func wholeSeconds(d time.Duration) time.Duration {
	return max(d.Truncate(time.Second), time.Second)
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.HasPrefix(r.URL.Path, adminPrefix) {
		s.mu.Lock()
		h := s.handler
		if h != nil {
			s.stats.Handled++
			if r.URL.Path == tokenPath {
				s.loginTimes = append(s.loginTimes, s.now())
			}
		}
		s.mu.Unlock()
		if h != nil {
			h.ServeHTTP(w, r)
			return
		}
	}
	s.mux.ServeHTTP(w, r)
}

// SetHandler makes h answer every request but those of the admin API
// (/_fake/) from now on, in place of the fake's own token, verify and API
// endpoints; nil gives them back. It serves tests that need an answer no
// fault mode gives. The requests h answers count in Stats.Handled only, and
// those to /oauth2/token also in LoginTimes; users, tokens, limits and the
// active fault are neither used nor changed by them.
func (s *Server) SetHandler(h http.Handler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handler = h
}

// Close releases every request held by the hang fault (they are answered 503)
// and makes later hang faults answer 503 at once. Call it before closing an
// httptest.Server, whose Close waits for outstanding requests. The fake keeps
// answering other requests normally after Close.
func (s *Server) Close() {
	s.once.Do(func() { close(s.done) })
}

// AddUser adds a password-grant user, or changes its password.
func (s *Server) AddUser(username, password string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users[username] = password
}

// AddClient adds a confidential client, or changes its secret. It can use the
// client-credentials grant, and be the client of a password grant.
func (s *Server) AddClient(clientID, clientSecret string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clients[clientID] = clientSecret
}

// AddPublicClient adds a public client (RFC 6749 §2.1): one with no secret,
// which names itself with client_id alone in the form body of a password
// grant. It cannot use the client-credentials grant.
func (s *Server) AddPublicClient(clientID string) {
	s.AddClient(clientID, "")
}

// SetBasicAuth sets how the halves of HTTP Basic client authentication are
// read from now on. It fails on an unknown mode.
func (s *Server) SetBasicAuth(mode BasicAuthMode) error {
	if err := mode.validate(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.basicMode = mode
	return nil
}

// SetRequireClient sets whether the password grant requires a client
// (RFC 6749 §4.3.2 lets a server require one; most standard servers do).
func (s *Server) SetRequireClient(require bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reqClient = require
}

// SetTokenLifetime sets the lifetime of tokens issued from now on, in whole
// seconds (rounded down, at least one second).
func (s *Server) SetTokenLifetime(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lifetime = wholeSeconds(d)
}

// SetLimits sets the per-username and per-IP login limits within Window.
// A value <= 0 disables that limit.
func (s *Server) SetLimits(user, ip int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.userLimit, s.ipLimit = user, ip
}

// SetBlockDuration sets how long a username or IP that went over its limit
// is refused (negative counts as zero).
func (s *Server) SetBlockDuration(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.block = max(d, 0)
}

// RevokeAll makes every token issued so far invalid for /_authenticated and
// the API. Tokens issued later are valid.
func (s *Server) RevokeAll() {
	s.revoke(func(issuedToken) bool { return true })
}

// RevokeUser makes every token issued so far to username by the password
// grant invalid for /_authenticated and the API, and returns how many
// unexpired tokens that was. Other users' and clients' tokens, and tokens
// issued later, stay valid.
func (s *Server) RevokeUser(username string) int {
	return s.revoke(func(t issuedToken) bool { return t.grant == "password" && t.principal == username })
}

// RevokeClient makes every token issued so far to clientID by the
// client-credentials grant invalid for /_authenticated and the API, and
// returns how many unexpired tokens that was. Password-grant tokens whose
// request named the client are not affected (revoke their user), nor are
// tokens issued later.
func (s *Server) RevokeClient(clientID string) int {
	return s.revoke(func(t issuedToken) bool { return t.grant == "client_credentials" && t.principal == clientID })
}

// revoke forgets the tokens that match, and returns how many of them were
// still unexpired.
func (s *Server) revoke(match func(issuedToken) bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	now, n := s.now(), 0
	maps.DeleteFunc(s.tokens, func(_ string, t issuedToken) bool {
		if !match(t) {
			return false
		}
		if now.Before(t.expires) {
			n++
		}
		return true
	})
	return n
}

// Reset zeroes the counters and the login history, and forgets the rate-limit
// windows and blocks (requests held by the hang fault stay counted as
// attempts). Users, clients, tokens, settings and the active fault
// are kept.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resetCountersLocked()
	clear(s.userWindows)
	clear(s.ipWindows)
	clear(s.userBlocks)
	clear(s.ipBlocks)
}

func (s *Server) resetCountersLocked() {
	// Requests still held by the hang fault carry over as attempts, so the
	// outcome counters keep adding up once they end.
	hanging := s.stats.Hanging
	s.stats = Stats{LoginAttempts: hanging, Hanging: hanging,
		UserAttempts: map[string]int{}, UserSuccesses: map[string]int{}}
	s.loginTimes = nil
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

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.UserAttempts = maps.Clone(s.stats.UserAttempts)
	st.UserSuccesses = maps.Clone(s.stats.UserSuccesses)
	st.MaxAttemptsInWindow = MaxInWindow(s.loginTimes, Window)
	st.Fault = s.fault
	if st.Fault.Mode == "" {
		st.Fault.Mode = FaultNone
	}
	return st
}

// IssuedTokens returns every access token issued since the fake was created,
// for tests that check none reached an error or a log line. Never print them.
func (s *Server) IssuedTokens() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	toks := make([]string, 0, len(s.tokens))
	for tok := range s.tokens {
		toks = append(toks, tok)
	}
	return toks
}

// LoginTimes returns the time, per the injected clock, of every login attempt
// (those answered by the SetHandler handler included) since creation or the
// last Reset, in arrival order.
func (s *Server) LoginTimes() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.loginTimes)
}

// MaxAttemptsInWindow returns the largest number of login attempts that fall
// within any span shorter than d (attempts d or more apart are never in the
// same span, as in the rate limiter). It is 0 when d <= 0.
func (s *Server) MaxAttemptsInWindow(d time.Duration) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return MaxInWindow(s.loginTimes, d)
}

// MaxInWindow returns the largest number of times that fall within one span
// shorter than d, in any order: "at most N in any minute" holds when
// MaxInWindow(times, time.Minute) <= N. It is 0 when d <= 0.
func MaxInWindow(times []time.Time, d time.Duration) int {
	if d <= 0 {
		return 0
	}
	ts := slices.Clone(times)
	slices.SortFunc(ts, time.Time.Compare)
	best, lo := 0, 0
	for hi := range ts {
		for ts[hi].Sub(ts[lo]) >= d {
			lo++
		}
		best = max(best, hi-lo+1)
	}
	return best
}

func (s *Server) logf(format string, args ...any) {
	if s.logger != nil {
		s.logger.Printf(format, args...)
	}
}

// tokenRequest is what a POST /oauth2/token asks for. secret and
// clientSecret must never reach a log line.
type tokenRequest struct {
	grant    string
	identity string // username (password grant) or client_id (client credentials): the rate-limit key
	secret   string // password (password grant) or client secret (client credentials)

	clientID       string // the client named, "" for none
	clientSecret   string
	clientAuth     string // ClientAuthBasic, ClientAuthPost or ClientAuthNone
	clientIDInForm bool

	badInput string // why the request is malformed, "" if it is not
	ip       string
}

// basic reports whether the client authenticated with HTTP Basic.
func (req tokenRequest) basic() bool { return req.clientAuth == ClientAuthBasic }

// parseTokenRequest reads a token request; mode says how to read HTTP Basic.
func parseTokenRequest(w http.ResponseWriter, r *http.Request, mode BasicAuthMode) tokenRequest {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	req := tokenRequest{ip: clientIP(r), clientAuth: ClientAuthNone}
	formErr := r.ParseForm()
	form := r.PostForm

	// Client authentication, RFC 6749 §2.3.1: HTTP Basic, or client_id and
	// client_secret in the body; one method only (§2.3).
	req.clientIDInForm = form.Has("client_id")
	if id, secret, ok := r.BasicAuth(); ok {
		req.clientAuth = ClientAuthBasic
		req.clientID, req.clientSecret = id, secret
		if mode == BasicAuthURLEncoded {
			uid, err1 := url.QueryUnescape(id)
			usecret, err2 := url.QueryUnescape(secret)
			if err1 != nil || err2 != nil {
				req.badInput = "malformed client credentials"
			} else {
				req.clientID, req.clientSecret = uid, usecret
			}
		}
		if form.Has("client_secret") && req.badInput == "" {
			req.badInput = "more than one client authentication method"
		}
	} else {
		req.clientID = form.Get("client_id")
		if form.Has("client_secret") {
			req.clientAuth = ClientAuthPost
			req.clientSecret = form.Get("client_secret")
		}
	}

	if formErr != nil {
		req.badInput = "malformed form body"
		return req
	}
	req.grant = form.Get("grant_type")
	switch req.grant {
	case "":
		req.badInput = "missing grant_type"
	case "password":
		req.identity, req.secret = form.Get("username"), form.Get("password")
		if (req.identity == "" || req.secret == "") && req.badInput == "" {
			req.badInput = "missing username or password"
		}
	case "client_credentials":
		req.identity, req.secret = req.clientID, req.clientSecret
		if (req.identity == "" || req.secret == "") && req.badInput == "" {
			req.badInput = "missing client_id or client_secret"
		}
	}
	return req
}

// clientIP is the host part of the connection's remote address.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// reply is a token-endpoint answer decided under the mutex and written after
// it is released, so a slow client never holds the fake up.
type reply struct {
	status     int
	retryAfter string // Retry-After header, "" for none
	wwwAuth    string // WWW-Authenticate header, "" for none
	location   string // Location header, "" for none
	// raw, when non-nil, is the body as is, sent with contentType ("" for no
	// Content-Type header at all). Otherwise body is sent as JSON.
	raw         []byte
	contentType string
	body        any
	outcome     string // for the log line
}

func (rp reply) write(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	if rp.retryAfter != "" {
		h.Set("Retry-After", rp.retryAfter)
	}
	if rp.wwwAuth != "" {
		h.Set("WWW-Authenticate", rp.wwwAuth)
	}
	if rp.location != "" {
		h.Set("Location", rp.location)
	}
	if rp.raw != nil {
		if rp.contentType != "" {
			h.Set("Content-Type", rp.contentType)
		} else {
			h["Content-Type"] = nil // no header, and no sniffing either
		}
		w.WriteHeader(rp.status)
		_, _ = w.Write(rp.raw)
		return
	}
	writeJSON(w, rp.status, rp.body)
}

// jsonBytes is v as writeJSON sends it.
func jsonBytes(v any) []byte {
	b, _ := json.Marshal(v) // only the fake's own plain structs: cannot fail
	return append(b, '\n')
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// oauthError is the upstream's error body.
type oauthError struct {
	Error       string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

// tokenResponse is the upstream's success body; omitempty lets faults leave
// fields out. ExpiresIn is a number (int64 or float64) or a string, nil for
// none.
type tokenResponse struct {
	AccessToken  string `json:"access_token,omitempty"`
	ExpiresIn    any    `json:"expires_in,omitempty"`
	TokenType    string `json:"token_type,omitempty"`
	RefreshToken string `json:"refresh_token,omitempty"`
	Pad          string `json:"pad,omitempty"`
}

func errorReply(status int, code, desc, outcome string) reply {
	return reply{status: status, body: oauthError{code, desc}, outcome: outcome}
}

func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	mode := s.basicMode
	s.mu.Unlock()
	req := parseTokenRequest(w, r, mode)

	s.mu.Lock()
	s.recordAttemptLocked(req)
	f, release := s.takeFaultLocked(req)
	var rp reply
	switch f.Mode {
	case "":
		rp = s.loginLocked(req)
	case FaultHang:
		s.stats.Hanging++
	default:
		rp = s.faultReplyLocked(f, req)
	}
	s.mu.Unlock()

	if f.Mode == FaultHang {
		var ok bool
		if rp, ok = s.hang(r.Context(), req, release); !ok {
			s.logf("token grant=%q user=%q ip=%s: hang ended, client gone", req.grant, req.identity, req.ip)
			return
		}
	}
	s.logf("token grant=%q user=%q ip=%s: %d %s", req.grant, req.identity, req.ip, rp.status, rp.outcome)
	rp.write(w)
}

// recordAttemptLocked counts a login attempt and adds it to the windows.
func (s *Server) recordAttemptLocked(req tokenRequest) {
	now := s.now()
	s.stats.LoginAttempts++
	s.stats.LastGrantType = req.grant
	s.stats.LastClientAuth = req.clientAuth
	s.stats.LastClientID = req.clientID
	s.stats.LastClientIDInForm = req.clientIDInForm
	s.loginTimes = append(s.loginTimes, now)
	s.ipWindows[req.ip] = appendWindow(s.ipWindows[req.ip], now)
	if req.identity != "" {
		s.stats.UserAttempts[req.identity]++
		s.userWindows[req.identity] = appendWindow(s.userWindows[req.identity], now)
	}
}

// appendWindow drops the times Window or more before now, and appends now.
func appendWindow(times []time.Time, now time.Time) []time.Time {
	times = slices.DeleteFunc(times, func(t time.Time) bool { return now.Sub(t) >= Window })
	return append(times, now)
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

// loginLocked answers a login attempt that no fault applies to: natural rate
// limits first, then request validation and credentials.
func (s *Server) loginLocked(req tokenRequest) reply {
	now := s.now()
	if wait, limited := s.limitedLocked(req, now); limited {
		s.stats.RateLimited++
		secs := max(int64((wait+time.Second-1)/time.Second), 1)
		rp := errorReply(http.StatusTooManyRequests, "too_many_requests",
			"too many login attempts, retry later", "rate limited")
		rp.retryAfter = strconv.FormatInt(secs, 10)
		return rp
	}
	if req.badInput != "" {
		s.stats.BadRequests++
		return errorReply(http.StatusBadRequest, "invalid_request", req.badInput, "bad request: "+req.badInput)
	}
	switch req.grant {
	case "password":
		// RFC 6749 §4.3.2: the client, when there is one, authenticates.
		switch {
		case req.clientID == "" && req.clientAuth == ClientAuthNone:
			if s.reqClient {
				s.stats.FailedCredentials++
				return errorReply(http.StatusUnauthorized, "invalid_client", "client authentication required", "no client")
			}
		case !s.clientOKLocked(req):
			s.stats.FailedCredentials++
			return s.invalidClient(req)
		}
		if !match(s.users, req.identity, req.secret) {
			s.stats.FailedCredentials++
			return errorReply(http.StatusUnauthorized, "invalid_grant", "invalid username or password", "invalid credentials")
		}
	case "client_credentials":
		if !match(s.clients, req.identity, req.secret) {
			s.stats.FailedCredentials++
			return s.invalidClient(req)
		}
	default:
		s.stats.BadRequests++
		return errorReply(http.StatusBadRequest, "unsupported_grant_type", "", "unsupported grant type")
	}
	s.stats.LoginSuccesses++
	s.stats.UserSuccesses[req.identity]++
	tok, secs := s.issueLocked(now, s.lifetime, req)
	return reply{
		status:  http.StatusOK,
		body:    tokenResponse{AccessToken: tok, ExpiresIn: secs, TokenType: "Bearer", RefreshToken: "none"},
		outcome: "token issued",
	}
}

// invalidClient is the answer to a failed client authentication (RFC 6749
// §5.2): 401 invalid_client, with a Basic challenge when Basic was used.
func (s *Server) invalidClient(req tokenRequest) reply {
	rp := errorReply(http.StatusUnauthorized, "invalid_client", "invalid client id or secret", "invalid client credentials")
	if req.basic() {
		rp.wwwAuth = `Basic realm="iadvize"`
	}
	return rp
}

// clientOKLocked reports whether the client a password grant names is
// registered and authenticated: a public client by client_id alone, a
// confidential one by its secret.
func (s *Server) clientOKLocked(req tokenRequest) bool {
	if req.clientAuth == ClientAuthNone {
		want, ok := s.clients[req.clientID]
		return ok && want == ""
	}
	return match(s.clients, req.clientID, req.clientSecret)
}

// match reports, in constant time per entry, whether creds[id] is secret.
func match(creds map[string]string, id, secret string) bool {
	want, ok := creds[id]
	return ok && subtle.ConstantTimeCompare([]byte(want), []byte(secret)) == 1
}

// limitedLocked reports whether the attempt (already recorded in the windows)
// must be refused, blocking the username or IP that just went over its limit,
// and how long until the block ends.
func (s *Server) limitedLocked(req tokenRequest, now time.Time) (time.Duration, bool) {
	var until time.Time
	check := func(blocks map[string]time.Time, windows map[string][]time.Time, key string, limit int) {
		if t, ok := blocks[key]; ok {
			if now.Before(t) {
				until = maxTime(until, t)
				return
			}
			delete(blocks, key)
		}
		if limit > 0 && len(windows[key]) > limit {
			s.logf("rate limit: blocking %q for %s", key, s.block)
			blocks[key] = now.Add(s.block)
			until = maxTime(until, blocks[key])
		}
	}
	check(s.ipBlocks, s.ipWindows, req.ip, s.ipLimit)
	if req.identity != "" {
		check(s.userBlocks, s.userWindows, req.identity, s.userLimit)
	}
	if until.IsZero() {
		return 0, false
	}
	return until.Sub(now), true
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// issueLocked creates and remembers a token valid for lifetime, issued for
// req, and returns it with the lifetime in whole seconds.
func (s *Server) issueLocked(now time.Time, lifetime time.Duration, req tokenRequest) (string, int64) {
	if len(s.tokens) >= s.pruneAt {
		maps.DeleteFunc(s.tokens, func(_ string, t issuedToken) bool { return !now.Before(t.expires) })
		s.pruneAt = max(2*len(s.tokens), 1024)
	}
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand, Go 1.24+)
	tok := base64.RawURLEncoding.EncodeToString(b)
	s.tokens[tok] = issuedToken{expires: now.Add(lifetime), grant: req.grant, principal: req.identity}
	s.stats.TokensIssued++
	return tok, int64(lifetime / time.Second)
}

const (
	htmlErrorPage = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n" +
		"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
	htmlOKPage = "<!DOCTYPE html>\n<html><head><title>iAdvize</title></head>\n" +
		"<body><h1>Maintenance</h1><p>We will be back shortly.</p></body></html>\n"
)

// echoPrefix is the text before the secret in the echo faults' error
// description: EchoPrefixLen characters, long enough that cutting a message
// at 200 characters still leaves part of the secret in it.
var echoPrefix = func() string {
	const text = "The provided authorization grant is invalid, expired or revoked, or does not " +
		"match the client it was issued to. Check the submitted credentials and try again; submitted value: "
	return (text + strings.Repeat(".", EchoPrefixLen))[:EchoPrefixLen]
}()

// faultReplyLocked builds the answer of every fault but hang, to req.
func (s *Server) faultReplyLocked(f Fault, req tokenRequest) reply {
	outcome := "injected " + string(f.Mode)
	switch f.Mode {
	case FaultRateLimit, FaultRateLimitNoRetry:
		s.stats.InjectedRateLimited++
		rp := errorReply(http.StatusTooManyRequests, "too_many_requests", "too many requests, retry later", outcome)
		if f.Mode == FaultRateLimit {
			rp.retryAfter = strconv.Itoa(orDefault(f.RetryAfter, DefaultRetryAfter))
		}
		return rp
	}

	s.stats.InjectedFaults++
	switch f.Mode {
	case FaultServerError:
		status := orDefault(f.Status, DefaultErrorStatus)
		if f.PlainText {
			return reply{status: status, contentType: "text/plain; charset=utf-8",
				raw: []byte(http.StatusText(status) + "\n"), outcome: outcome}
		}
		return errorReply(status, "server_error", "the server encountered an unexpected error", outcome)
	case FaultUnavailableRetryAfter:
		rp := errorReply(orDefault(f.Status, DefaultErrorStatus), "temporarily_unavailable",
			"the service is temporarily unavailable, retry later", outcome)
		rp.retryAfter = strconv.Itoa(orDefault(f.RetryAfter, DefaultRetryAfter))
		return rp
	case FaultRedirect:
		return reply{status: orDefault(f.Status, DefaultRedirectStatus), location: f.Location,
			contentType: "text/html; charset=utf-8",
			raw:         []byte(`<a href="` + html.EscapeString(f.Location) + `">Moved</a>.` + "\n"), outcome: outcome}
	case FaultHTML:
		return reply{status: http.StatusBadGateway, contentType: "text/html", raw: []byte(htmlErrorPage), outcome: outcome}
	case FaultHTML200:
		return reply{status: http.StatusOK, contentType: "text/html; charset=utf-8", raw: []byte(htmlOKPage), outcome: outcome}
	case FaultNoAccessToken:
		return reply{status: http.StatusOK, outcome: outcome,
			body: tokenResponse{ExpiresIn: int64(s.lifetime / time.Second), TokenType: "Bearer", RefreshToken: "none"}}
	case FaultError200Credentials:
		return reply{status: http.StatusOK, body: oauthError{Error: "incorrect_client_credentials"}, outcome: outcome}
	case FaultError200Temporary:
		return reply{status: http.StatusOK, body: oauthError{Error: "temporarily_unavailable"}, outcome: outcome}
	case FaultEchoSecret:
		return errorReply(http.StatusBadRequest, "invalid_grant", echoPrefix+req.secret, outcome)
	case FaultEchoSecretURLEncoded:
		return errorReply(http.StatusBadRequest, "invalid_grant", echoPrefix+url.QueryEscape(req.secret), outcome)
	case FaultEchoSecretBase64:
		return errorReply(http.StatusBadRequest, "invalid_grant",
			echoPrefix+base64.StdEncoding.EncodeToString([]byte(req.secret)), outcome)
	case FaultEchoSecretForm:
		body := url.Values{"error": {"invalid_grant"}, "error_description": {echoPrefix + req.secret}}
		return reply{status: http.StatusBadRequest, contentType: "application/x-www-form-urlencoded",
			raw: []byte(body.Encode()), outcome: outcome}
	}

	// The rest carry a real token, valid for the lifetime they advertise.
	lifetime := s.lifetime
	switch f.Mode {
	case FaultDecimalExpiresIn:
		lifetime = time.Duration(DecimalExpiresIn * float64(time.Second))
	case FaultStringExpiresIn:
		n, _ := strconv.Atoi(StringExpiresIn)
		lifetime = time.Duration(n) * time.Second
	case FaultHugeExpiresIn:
		lifetime = HugeExpiresIn * time.Second
	}
	tok, secs := s.issueLocked(s.now(), lifetime, req)
	body := tokenResponse{AccessToken: tok, ExpiresIn: secs, TokenType: "Bearer", RefreshToken: "none"}
	rp := reply{status: http.StatusOK, outcome: outcome}
	switch f.Mode {
	case FaultNoExpiresIn:
		body.ExpiresIn = nil
	case FaultZeroExpiresIn:
		body.ExpiresIn = int64(0)
	case FaultNegativeExpiresIn:
		body.ExpiresIn = int64(negativeExpiresIn)
	case FaultHugeBody:
		body.RefreshToken = ""
		body.Pad = strings.Repeat("x", HugeBodyPad)
	case FaultDecimalExpiresIn:
		body.ExpiresIn = DecimalExpiresIn
	case FaultStringExpiresIn:
		body.ExpiresIn = StringExpiresIn
	case FaultLowercaseTokenType, FaultUppercaseTokenType, FaultNoTokenType:
		body.TokenType = faultTokenTypes[f.Mode]
	case FaultJSONTextPlain, FaultJSONTextHTML, FaultJSONNoContentType, FaultJSONCharset:
		rp.contentType = faultContentTypes[f.Mode]
		rp.raw = jsonBytes(body)
		return rp
	case FaultJSONBOM:
		rp.contentType = "application/json"
		rp.raw = append([]byte("\xEF\xBB\xBF"), jsonBytes(body)...)
		return rp
	case FaultFormToken:
		rp.contentType = "application/x-www-form-urlencoded"
		rp.raw = []byte(url.Values{
			"access_token": {tok}, "expires_in": {strconv.FormatInt(secs, 10)},
			"token_type": {"Bearer"}, "refresh_token": {"none"},
		}.Encode())
		return rp
	}
	rp.body = body
	return rp
}

// The token_type of the token-type faults.
var faultTokenTypes = map[FaultMode]string{
	FaultLowercaseTokenType: "bearer",
	FaultUppercaseTokenType: "BEARER",
	FaultNoTokenType:        "",
}

// The Content-Type of the JSON-under-another-type faults; "" sends none.
var faultContentTypes = map[FaultMode]string{
	FaultJSONTextPlain:     "text/plain",
	FaultJSONTextHTML:      "text/html",
	FaultJSONNoContentType: "",
	FaultJSONCharset:       "application/json; charset=utf-8",
}

func (s *Server) handleAuthenticated(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.stats.VerifyCalls++
	_, valid := s.bearerLocked(r)
	if !valid {
		s.stats.VerifyFailures++
	}
	s.mu.Unlock()

	if !valid {
		s.logf("authenticated: 401 invalid token")
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		writeJSON(w, http.StatusUnauthorized, oauthError{"invalid_token", "access token not valid"})
		return
	}
	s.logf("authenticated: 200")
	writeJSON(w, http.StatusOK, map[string]bool{"authenticated": true})
}

// apiAnswer is the body of a successful GET /api/me.
type apiAnswer struct {
	Principal string `json:"principal"`  // the username or client_id the token was issued to
	GrantType string `json:"grant_type"` // the grant that got it
}

// handleAPI answers an integration's API call: 200 for a valid token, and
// otherwise 401 invalid_token as a resource server does (RFC 6750 §3): the
// WWW-Authenticate challenge carries error="invalid_token" when a token was
// sent, and no error when the request had none (§3.1).
func (s *Server) handleAPI(w http.ResponseWriter, r *http.Request) {
	_, sent := bearerToken(r)
	s.mu.Lock()
	s.stats.APICalls++
	t, valid := s.bearerLocked(r)
	if !valid {
		s.stats.APIRefusals++
	}
	s.mu.Unlock()

	w.Header().Set("Cache-Control", "no-store")
	if !valid {
		s.logf("api: 401 invalid token")
		challenge := `Bearer realm="iadvize"`
		if sent {
			challenge += `, error="invalid_token"`
		}
		w.Header().Set("WWW-Authenticate", challenge)
		writeJSON(w, http.StatusUnauthorized, oauthError{"invalid_token", "access token not valid"})
		return
	}
	s.logf("api: 200 for %q", t.principal)
	writeJSON(w, http.StatusOK, apiAnswer{Principal: t.principal, GrantType: t.grant})
}

// bearerLocked returns the token of r's "Authorization: Bearer" header, and
// whether it is one the fake issued, unexpired and not revoked.
func (s *Server) bearerLocked(r *http.Request) (issuedToken, bool) {
	tok, ok := bearerToken(r)
	if !ok {
		return issuedToken{}, false
	}
	t, found := s.tokens[tok]
	return t, found && s.now().Before(t.expires)
}

// bearerToken extracts the token of an "Authorization: Bearer" header.
func bearerToken(r *http.Request) (string, bool) {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// Admin API.

// decodeAdmin reads a JSON admin request body, rejecting unknown fields so a
// typo in a test script fails loudly. It answers 400 itself on error.
func decodeAdmin(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAdminBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		adminError(w, "malformed JSON body: "+err.Error())
		return false
	}
	return true
}

func adminError(w http.ResponseWriter, msg string) {
	writeJSON(w, http.StatusBadRequest, map[string]string{"error": msg})
}

func adminOK(w http.ResponseWriter) {
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
}

func (s *Server) handleStats(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.Stats())
}

func (s *Server) handleFault(w http.ResponseWriter, r *http.Request) {
	var f Fault
	if !decodeAdmin(w, r, &f) {
		return
	}
	if err := s.InjectFault(f); err != nil {
		adminError(w, err.Error())
		return
	}
	adminOK(w)
}

// revokeRequest is the body of POST /_fake/revoke: at most one of its
// fields, none (or no body at all) to revoke every token.
type revokeRequest struct {
	Username *string `json:"username"`  // a password-grant user's tokens (RevokeUser)
	ClientID *string `json:"client_id"` // a client-credentials client's tokens (RevokeClient)
}

// handleRevoke answers {"ok":true,"revoked":N}, N the unexpired tokens it
// made invalid.
func (s *Server) handleRevoke(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAdminBytes))
	if err != nil {
		adminError(w, "reading the body: "+err.Error())
		return
	}
	var q revokeRequest
	if len(bytes.TrimSpace(body)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&q); err != nil {
			adminError(w, "malformed JSON body: "+err.Error())
			return
		}
	}
	var n int
	switch {
	case q.Username != nil && q.ClientID != nil:
		adminError(w, "name a username or a client_id, not both")
		return
	case q.Username != nil && *q.Username == "", q.ClientID != nil && *q.ClientID == "":
		adminError(w, "username and client_id must not be empty when present")
		return
	case q.Username != nil:
		n = s.RevokeUser(*q.Username)
		s.logf("revoked %d token(s) of user %q", n, *q.Username)
	case q.ClientID != nil:
		n = s.RevokeClient(*q.ClientID)
		s.logf("revoked %d token(s) of client %q", n, *q.ClientID)
	default:
		n = s.revoke(func(issuedToken) bool { return true })
		s.logf("all tokens revoked (%d)", n)
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "revoked": n})
}

func (s *Server) handleUsers(w http.ResponseWriter, r *http.Request) {
	var u struct {
		Username string `json:"username"`
		Password string `json:"password"`
	}
	if !decodeAdmin(w, r, &u) {
		return
	}
	if u.Username == "" || u.Password == "" {
		adminError(w, "username and password are required")
		return
	}
	s.AddUser(u.Username, u.Password)
	s.logf("user %q added", u.Username)
	adminOK(w)
}

func (s *Server) handleClients(w http.ResponseWriter, r *http.Request) {
	var c struct {
		ClientID     string `json:"client_id"`
		ClientSecret string `json:"client_secret"`
		Public       bool   `json:"public"`
	}
	if !decodeAdmin(w, r, &c) {
		return
	}
	switch {
	case c.Public && (c.ClientID == "" || c.ClientSecret != ""):
		adminError(w, "a public client has a client_id and no client_secret")
		return
	case !c.Public && (c.ClientID == "" || c.ClientSecret == ""):
		adminError(w, "client_id and client_secret are required")
		return
	}
	s.AddClient(c.ClientID, c.ClientSecret)
	kind := "confidential"
	if c.Public {
		kind = "public"
	}
	s.logf("%s client %q added", kind, c.ClientID)
	adminOK(w)
}

func (s *Server) handleReset(w http.ResponseWriter, r *http.Request) {
	s.Reset()
	s.logf("counters reset")
	adminOK(w)
}

// configRequest is the body of POST /_fake/config; absent fields are left
// unchanged, and a limit <= 0 disables that limit.
type configRequest struct {
	TokenLifetimeSeconds *int           `json:"token_lifetime_seconds"`
	UserLoginsPerMinute  *int           `json:"user_logins_per_minute"`
	IPLoginsPerMinute    *int           `json:"ip_logins_per_minute"`
	BlockSeconds         *int           `json:"block_seconds"`
	BasicAuth            *BasicAuthMode `json:"basic_auth"`
	RequireClient        *bool          `json:"require_client"`
}

func (s *Server) handleConfig(w http.ResponseWriter, r *http.Request) {
	var c configRequest
	if !decodeAdmin(w, r, &c) {
		return
	}
	if c.TokenLifetimeSeconds != nil && *c.TokenLifetimeSeconds < 1 {
		adminError(w, "token_lifetime_seconds must be at least 1")
		return
	}
	if c.BlockSeconds != nil && *c.BlockSeconds < 0 {
		adminError(w, "block_seconds must not be negative")
		return
	}
	if c.BasicAuth != nil {
		if err := c.BasicAuth.validate(); err != nil {
			adminError(w, err.Error())
			return
		}
	}
	s.mu.Lock()
	if c.TokenLifetimeSeconds != nil {
		s.lifetime = time.Duration(*c.TokenLifetimeSeconds) * time.Second
	}
	if c.UserLoginsPerMinute != nil {
		s.userLimit = *c.UserLoginsPerMinute
	}
	if c.IPLoginsPerMinute != nil {
		s.ipLimit = *c.IPLoginsPerMinute
	}
	if c.BlockSeconds != nil {
		s.block = time.Duration(*c.BlockSeconds) * time.Second
	}
	if c.BasicAuth != nil {
		s.basicMode = *c.BasicAuth
	}
	if c.RequireClient != nil {
		s.reqClient = *c.RequireClient
	}
	lifetime, user, ip, block, mode, reqClient := s.lifetime, s.userLimit, s.ipLimit, s.block, s.basicMode, s.reqClient
	s.mu.Unlock()
	s.logf("config: token lifetime %s, user limit %d, ip limit %d, block %s, basic auth %s, require client %v",
		lifetime, user, ip, block, mode, reqClient)
	adminOK(w)
}

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
	"cmp"
	"log"
	"net/http"
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

func (s *Server) logf(format string, args ...any) {
	if s.logger != nil {
		s.logger.Printf(format, args...)
	}
}

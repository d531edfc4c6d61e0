package fakeiadvize

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// The token endpoint (POST /oauth2/token): who may log in (users, clients,
// how their client authenticates), the request, the login checks, the tokens
// issued and their revocation.

const (
	tokenPath    = "/oauth2/token"
	maxFormBytes = 64 << 10
)

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

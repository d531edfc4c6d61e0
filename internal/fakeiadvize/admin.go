package fakeiadvize

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"time"
)

// The test API under /_fake/: counters, faults, revocation, users, clients,
// reset and settings, as JSON, for tests and demos that run the fake as a
// process (cmd/fake-iadvize).

const (
	adminPrefix   = "/_fake/"
	maxAdminBytes = 64 << 10
)

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

package fakeiadvize

import (
	"net/http"
	"strings"
)

// What an integration calls with its token: GET /_authenticated (the token
// check) and GET /api/me (an API call).

// APIPath is the API endpoint an integration calls with its token.
const APIPath = "/api/me"

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

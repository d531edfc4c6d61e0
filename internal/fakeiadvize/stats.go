package fakeiadvize

import (
	"maps"
	"slices"
	"time"
)

// What the fake has seen: the counters (Stats), the issued tokens and the
// login times, and Reset.

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

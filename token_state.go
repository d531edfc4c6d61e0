package iadvize

import "time"

// A role's token state (docs/storage.md, tokens/<role>) and every rule of its
// token's life, each in one function that all callers use: fresh, usable, alive,
// due for the background refresh (dueAt); and the lease and ttl a read of it
// returns. When the next login may happen also depends on the budgets: nextLogin
// (login.go).

// Login outcomes, as tokenState.LastOutcome stores them and status/ reports them.
const (
	outcomeSuccess     = "success"
	outcomeRateLimited = "rate_limited"
	outcomeRejected    = "credentials_rejected"
	outcomeUpstream    = "upstream_error"
)

// tokenState is one role's cached token and its login bookkeeping. It is persisted
// at tokens/<role> (seal-wrapped), so a restart neither logs in while the token is
// fresh nor forgets a backoff or a "credentials rejected" verdict.
type tokenState struct {
	AccessToken string    `json:"access_token,omitempty"`
	TokenType   string    `json:"token_type,omitempty"`
	IssuedAt    time.Time `json:"issued_at,omitempty"`
	ExpiresAt   time.Time `json:"expires_at,omitempty"`

	// The login bookkeeping: when the last login was sent, its outcome (outcome*
	// constants) and error; Failures counts consecutive failures of the kind in
	// LastOutcome; no login before NextAttempt (backoff after a failure).
	LastAttempt         time.Time `json:"last_attempt,omitempty"`
	LastOutcome         string    `json:"last_outcome,omitempty"`
	LastError           string    `json:"last_error,omitempty"`
	Failures            int       `json:"failures,omitempty"`
	NextAttempt         time.Time `json:"next_attempt,omitempty"`
	CredentialsRejected bool      `json:"credentials_rejected,omitempty"`
	// RejectedSettings are the config's login settings (loginSettings) under
	// which the credentials were rejected: a new token URL or client
	// authentication style deserves a try. Empty in state stored before the field
	// existed, where the verdict stands whatever the config.
	RejectedSettings string `json:"rejected_settings,omitempty"`
	// Issuer is the token host (tokenOrigin) that issued AccessToken: the only
	// host the token is ever sent to (verify/, refused-token reports). Empty in
	// state stored before the field existed: the role's token host.
	Issuer string `json:"issuer,omitempty"`

	// The refused-token reports (README, "When the API refuses the token"): when
	// the last report that acted came, and what it led to (report* constants);
	// ForcedLoginAt is when a report last forced a login with no verify_url to
	// ask, which it may do once per reportLoginInterval. They outlive the token.
	LastReport        time.Time `json:"last_report,omitempty"`
	LastReportOutcome string    `json:"last_report_outcome,omitempty"`
	ForcedLoginAt     time.Time `json:"forced_login_at,omitempty"`

	// CredentialsID is the role's CredentialsID this state belongs to (state
	// stored before it existed carries Generation instead). State of other
	// credentials is retired: never served, never judged by.
	CredentialsID string `json:"credentials_id,omitempty"`
	Generation    uint64 `json:"generation,omitempty"`
}

// credentialsID is the CredentialsID the state belongs to, or its legacy
// generation's name.
func (st *tokenState) credentialsID() string { return credentialsID(st.CredentialsID, st.Generation) }

// backgroundLead: the periodic refresh runs about once a minute, so it logs in for
// tokens that will enter their refresh window before its next runs. When one run
// spends the mount budget, the next (60 s later) finds it still spent
// (budgetWindow is 61 s): the lead must cover the run after that too.
const backgroundLead = 3 * time.Minute

// lifetime is the token's whole lifetime as upstream granted it.
func (st *tokenState) lifetime() time.Duration {
	return st.ExpiresAt.Sub(st.IssuedAt)
}

// refreshWindow is how long before expiry the plugin logs in anew: refresh_before,
// but at most half the token's lifetime, so a refresh_before longer than the
// tokens live (1h against 1-hour tokens) cannot turn every read into a login;
// and at least the skew margin, so a read never gets a token it cannot use
// without a login having started (README, "When the plugin logs in").
func (st *tokenState) refreshWindow(refreshBefore time.Duration) time.Duration {
	return max(min(refreshBefore, st.lifetime()/2), st.skew())
}

// refreshAt is when the token enters its refresh window.
func (st *tokenState) refreshAt(refreshBefore time.Duration) time.Time {
	return st.ExpiresAt.Add(-st.refreshWindow(refreshBefore))
}

// fresh reports whether the token can be served without a login.
func (st *tokenState) fresh(now time.Time, refreshBefore time.Duration) bool {
	return st.AccessToken != "" && now.Before(st.refreshAt(refreshBefore))
}

// dueAt is when the background refresh logs in for the token: as it enters its
// refresh window less backgroundLead (a tenth of the lifetime for short tokens);
// ok is false with no token. The schedule, the periodic run and status/
// next_login all use it.
func (st *tokenState) dueAt(refreshBefore time.Duration) (at time.Time, ok bool) {
	if st.AccessToken == "" {
		return time.Time{}, false
	}
	return st.refreshAt(refreshBefore).Add(-min(backgroundLead, st.lifetime()/10)), true
}

// alive reports whether the token has time left, so it can still be served (with a
// warning) while a refresh fails.
func (st *tokenState) alive(now time.Time) bool {
	return st.AccessToken != "" && now.Before(st.ExpiresAt)
}

// usable reports whether the token has more than the skew margin to live: a read
// is then served at once, without waiting on a login, even inside the refresh
// window.
func (st *tokenState) usable(now time.Time) bool {
	return st.AccessToken != "" && now.Before(st.ExpiresAt.Add(-st.skew()))
}

// skew is the clock-skew margin taken off a lease: 30 s, or a tenth of the
// lifetime for tokens shorter than 5 minutes.
func (st *tokenState) skew() time.Duration {
	if lt := st.lifetime(); lt < 5*time.Minute {
		return lt / 10
	}
	return 30 * time.Second
}

// leaseTTL is the lease creds/ returns: the remaining lifetime minus the skew
// margin, capped by the role's ttl and max_ttl, in whole seconds and never below
// 1 s (Vault would apply the mount default to a zero TTL).
func leaseTTL(st *tokenState, r *role, now time.Time) time.Duration {
	ttl := st.ExpiresAt.Sub(now) - st.skew()
	if r.TTL > 0 {
		ttl = min(ttl, r.TTL)
	}
	if r.MaxTTL > 0 {
		ttl = min(ttl, r.MaxTTL)
	}
	return max(ttl.Truncate(time.Second), time.Second)
}

// rejectedRecheck is the static-creds/ ttl while a role's credentials are
// rejected: only a rewrite of the credentials (at any moment) brings a new token,
// so Vault Agent re-reads once a minute rather than every 2 s.
const rejectedRecheck = time.Minute

// staticTTL is the ttl static-creds/ returns: whole seconds until a read may get
// another token. While the token is fresh, until it enters its refresh window;
// inside the window, until nextLogin, the next moment a login may happen (the end
// of a backoff, of a spent login budget or of an upstream 429 block), or
// rejectedRecheck while the credentials are rejected. Always capped by the
// token's remaining life less the skew margin, and at least 1 s: Vault Agent
// sleeps ttl + 1 s, and must neither poll in a loop nor hold a dead token.
func staticTTL(e *cacheEntry, cfg *config, nextLogin func() time.Time, now time.Time) time.Duration {
	st := e.state
	var until time.Time
	switch {
	case st.fresh(now, cfg.RefreshBefore):
		until = st.refreshAt(cfg.RefreshBefore)
	case e.rejectedUnder(cfg):
		until = now.Add(rejectedRecheck)
	default:
		until = nextLogin()
	}
	ttl := min(until.Sub(now), st.ExpiresAt.Sub(now)-st.skew())
	return max(ttl.Truncate(time.Second), time.Second)
}

// rotationPeriod is the time between two logins of the role: the lifetime less the
// refresh window, in whole seconds, at least 1 s.
func rotationPeriod(st *tokenState, refreshBefore time.Duration) time.Duration {
	return max((st.lifetime() - st.refreshWindow(refreshBefore)).Truncate(time.Second), time.Second)
}

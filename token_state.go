package iadvize

import "time"

// What a role's tokenState (storage.go) says about its token: when it is fresh,
// usable, due for a login; and the lease and ttl a read of it returns.

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

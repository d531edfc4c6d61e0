package iadvize

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// Backoff bounds (README, "When the plugin logs in": upstream 429, network errors).
const (
	rateLimitBackoffMin = time.Minute
	rateLimitBackoffMax = 30 * time.Minute
	transientBackoffMin = time.Second
	transientBackoffMax = 5 * time.Minute
	// backgroundLead: the periodic refresh runs about once a minute, so it logs in
	// for tokens that will enter their refresh window before its next runs. When
	// one run spends the mount budget, the next (60 s later) finds it still spent
	// (budgetWindow is 61 s): the lead must cover the run after that too.
	backgroundLead = 3 * time.Minute
)

// errRoleChanged: the role's credentials were rewritten (or the role deleted and
// created again) while a login was in flight; its result belongs to the old
// credentials and is not kept.
var errRoleChanged = errors.New("role credentials changed during the login")

// errMountClosing: the mount's Clean cancelled the login in flight.
var errMountClosing = logical.CodedError(http.StatusServiceUnavailable, "the mount is closing (unmount, reload, seal or step-down); read again")

// loginMode says why a login is considered.
type loginMode int

const (
	// modeRead: a client read; log in when the token is not fresh.
	modeRead loginMode = iota
	// modeRotate: rotate-role; log in now, even after rejected credentials (one try).
	modeRotate
	// modeBackground: the periodic refresh; log in ahead of the refresh window.
	modeBackground
	// modeReport: a refused-token report (refused_token.go); log in when the
	// reported token is still the cached one and is refused at verify_url, or,
	// with no usable verify_url, at most once per reportLoginInterval.
	modeReport
)

// loginRequest is what a flight is asked to do: the mode, and for modeReport
// the hex SHA-256 of the token reported refused.
type loginRequest struct {
	mode        loginMode
	refusedHash string
}

// servedToken is what a read of creds/ or static-creds/ gets (serveToken): the
// role's entry, the config it was judged under, and a warning when the token is
// served while its refresh fails.
type servedToken struct {
	entry   *cacheEntry
	cfg     *configEntry
	warning string
}

// refreshOutcome is what refreshRole returns, whatever the mode: the role's entry
// after it, and, when no login could happen or the login failed, why (refusal).
// Callers that share one flight (refreshOnce) each build their own answer from it.
type refreshOutcome struct {
	entry   *cacheEntry
	cfg     *configEntry
	refusal *loginRefusal
	// mode is the mode of the flight that produced the outcome: a caller that
	// joined another kind of flight may need one of its own.
	mode loginMode
	// report is what a refused-token report led to, for the reporter alone
	// (modeReport).
	report *reportVerdict
}

// loginRefusal is why no token could be had: the login policy refused a login now
// (budget, backoff, rejected credentials: mayLogin), or upstream refused the one
// sent (upstreamRefusal), and until when.
type loginRefusal struct {
	status   int       // 429 (rate limit, budget, backoff), 502 (upstream failure), 409 (token host moved), 500
	cause    string    // safe to show: never holds a secret
	retryAt  time.Time // zero: not until the credentials are rewritten
	hostFull bool      // the token host's login budget is spent
	// until, when set, says what must happen before a login instead of the
	// default for a zero retryAt (rejected credentials).
	until string
}

// message names the role, the cause and when the next attempt may happen.
func (u *loginRefusal) message(name string) string {
	next := "no login until the role's credentials are rewritten or rotate-role is called"
	switch {
	case !u.retryAt.IsZero():
		next = "next login attempt not before " + ceilSecond(u.retryAt).UTC().Format(time.RFC3339)
	case u.until != "":
		next = u.until
	}
	return fmt.Sprintf("role %q: %s; %s", name, u.cause, next)
}

// ceilSecond rounds t up to a whole second, so that a time named in whole seconds
// (RFC 3339) is never before the moment it stands for: a jittered backoff ends
// mid-second, and a client that waits until the named time must be let through.
func ceilSecond(t time.Time) time.Time {
	return t.Add(time.Second - 1).Truncate(time.Second)
}

// serveToken returns a role's token for a read of creds/ or static-creds/: the
// first step of the read path (docs/read-path.md). A hit is served from memory: no lock,
// no storage, no network. A token inside its refresh window that still has more
// than the skew margin to live is served at once too, and its login runs on its
// own (refreshDetached): no read waits on upstream while its token is usable.
// Only a read with no usable token waits: concurrent ones share one call of
// refreshRole (refreshOnce), and so at most one login. While a refresh fails, a token with time
// left is served with a warning (README, "When the plugin logs in"); without one,
// the read fails with the status the README names.
func (b *backend) serveToken(ctx context.Context, s logical.Storage, name string) (servedToken, error) {
	cfg, e := b.cache.config(), b.cache.role(name)
	if cfg != nil && e != nil && e.state.fresh(b.now(), cfg.RefreshBefore) {
		return b.serveFresh(name, e, cfg), nil
	}
	if cfg == nil || e == nil {
		var err error
		if cfg, err = b.cachedConfig(ctx, s); err != nil {
			return servedToken{}, err
		}
		if e, err = b.cachedRole(ctx, s, name); err != nil {
			return servedToken{}, err
		}
		if e == nil {
			return servedToken{}, errRoleNotFound
		}
	}
	switch now := b.now(); {
	case e.state.fresh(now, cfg.RefreshBefore):
		return b.serveFresh(name, e, cfg), nil
	case e.state.usable(now):
		return b.serveWhileRefreshing(ctx, s, name, e, cfg, now), nil
	}

	return b.serveOutcome(ctx, s, name, modeRead, "")
}

// serveFresh answers a read of a fresh token: the token, with a warning when
// the role's credentials wait for a rewrite because config token_url moved to
// another host (waitingFor), so that its readers learn it before the token runs
// out.
func (b *backend) serveFresh(name string, e *cacheEntry, cfg *configEntry) servedToken {
	srv := servedToken{entry: e, cfg: cfg}
	if u := b.waitingFor(e.role, cfg); u != nil {
		srv.warning = servingWarning(u, e, name)
	}
	return srv
}

// serveOutcome runs a flight of the role (refreshOnce) and answers a reader from
// its outcome: a live token is served, with a warning while its refresh fails;
// without one, the read fails with the status the README names.
func (b *backend) serveOutcome(ctx context.Context, s logical.Storage, name string, mode loginMode, refusedHash string) (servedToken, error) {
	req := loginRequest{mode: mode, refusedHash: refusedHash}
	res, err := b.flight(ctx, s, name, req)
	if err == nil && res.mode != mode && res.refusal == nil && (mode == modeReport || !res.entry.state.usable(b.now())) {
		// Joined another kind of flight that found nothing to do for it (a
		// background run not yet due, a report of another token, a read of a
		// fresh token, a report that logged in nowhere: token valid at
		// verify_url, or throttled), and the reader's token is still not
		// usable or is still the one reported: one flight of this kind.
		res, err = b.flight(ctx, s, name, req)
	}
	if err != nil {
		return servedToken{}, err
	}
	srv := servedToken{entry: res.entry, cfg: res.cfg}
	// A report's verdict (a warning, or a 429) is for the reporter alone: a
	// read that joined the report's flight never gets it. A reporter whose
	// login could not happen gets why, not the token it reported.
	if mode == modeReport && res.mode == modeReport {
		if v := res.report; v != nil && v.refusal != nil {
			return servedToken{}, logical.CodedError(v.refusal.status, v.refusal.message(name))
		} else if v != nil {
			srv.warning = v.warning
		}
		if u := res.refusal; u != nil && res.entry.state.holds(refusedHash) {
			return servedToken{}, logical.CodedError(u.status, u.message(name))
		}
	}
	alive := res.entry.state.alive(b.now())
	switch {
	case res.refusal == nil && alive:
		return srv, nil
	case res.refusal == nil:
		return servedToken{}, logical.CodedError(http.StatusBadGateway, fmt.Sprintf("role %q: no token could be obtained; read again", name))
	case !alive:
		return servedToken{}, logical.CodedError(res.refusal.status, res.refusal.message(name))
	}
	srv.warning = servingWarning(res.refusal, res.entry, name)
	return srv, nil
}

// servingWarning is the warning of a read served the cached token while its
// refresh fails.
func servingWarning(u *loginRefusal, e *cacheEntry, name string) string {
	return fmt.Sprintf("%s; serving the cached token, which expires at %s", u.message(name), e.expireTime)
}

// serveWhileRefreshing answers a read of a usable token inside its refresh window:
// the token at once, with a warning only when its refresh has failed, and a login
// started on its own when one may happen now. A node that cannot write starts
// none: the active node refreshes the token.
func (b *backend) serveWhileRefreshing(ctx context.Context, s logical.Storage, name string, e *cacheEntry, cfg *configEntry, now time.Time) servedToken {
	srv := servedToken{entry: e, cfg: cfg}
	if u := b.waitingFor(e.role, cfg); u != nil {
		// Bound to another token host: no login, and the reader learns why.
		srv.warning = servingWarning(u, e, name)
		return srv
	}
	next := b.nextLogin(e, cfg, now)
	if u := refreshFailure(e, cfg.config, now); u != nil {
		srv.warning = servingWarning(u, e, name)
	} else if v, ok := b.detachedFailed.Load(name); ok {
		u := v.(*loginRefusal)
		srv.warning = servingWarning(u, e, name)
		next = latest(next, u.retryAt)
	}
	if _, busy := b.detached.Load(name); !busy && !next.After(now) && b.WriteSafeReplicationState() {
		b.refreshDetached(ctx, s, name)
	}
	return srv
}

// refreshFailure is why the token's refresh has failed, or nil when no attempt
// since the token was issued has failed (none yet, or one in flight).
func refreshFailure(e *cacheEntry, cfg *config, now time.Time) *loginRefusal {
	st := e.state
	switch {
	case st.LastOutcome == "" || st.LastOutcome == outcomeSuccess:
		return nil
	case e.rejectedUnder(cfg):
		return &loginRefusal{status: http.StatusBadGateway, cause: st.LastError}
	case now.Before(st.NextAttempt):
		return &loginRefusal{status: http.StatusTooManyRequests, cause: "backing off after: " + st.LastError, retryAt: st.NextAttempt}
	}
	return &loginRefusal{status: http.StatusBadGateway, cause: "the last login failed: " + st.LastError, retryAt: now}
}

// nextLogin is the earliest time the policy lets a login of the role happen
// (backoff after a failure, login budgets, upstream 429 block); the zero time
// never comes before now. A role whose credentials were rejected has none until
// they are rewritten: the far future.
func (b *backend) nextLogin(e *cacheEntry, cfg *configEntry, now time.Time) time.Time {
	if e.rejectedUnder(cfg.config) || b.boundElsewhere(e.role, cfg) {
		return farFuture
	}
	return latest(e.state.NextAttempt,
		b.budgets.nextAllowed(e.role.principal(), now, cfg.UserLoginsPerMinute, cfg.LoginsPerMinute))
}

// farFuture stands for "not until something else changes".
var farFuture = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

// refreshDetached runs a read's refresh of the role on its own, detached from the
// reader's request (its values kept, its cancellation not), so the reader is
// answered at once. It shares the role's flight (loginFlights) with waiting
// readers and the background refresh, and runs at most one per role at a time.
// The upstream call is bounded by request_timeout; the mount's cleanup cancels
// the rest.
func (b *backend) refreshDetached(ctx context.Context, s logical.Storage, name string) {
	if _, busy := b.detached.LoadOrStore(name, struct{}{}); busy {
		return
	}
	b.detachedWG.Add(1)
	go func() {
		defer b.detachedWG.Done()
		defer b.detached.Delete(name)
		ctx, cancel := b.detach(ctx, 0)
		defer cancel()
		res, err := b.refreshOnce(ctx, s, name, modeRead)
		// A failure the token state does not record (storage, a role changed
		// twice during the login) is remembered for the warning of the reads
		// that follow, and holds the next detached login back for a second.
		retryAt := b.now().Add(transientBackoffMin)
		switch {
		case errors.Is(err, errMountClosing):
		case err != nil && !errors.Is(err, errRoleNotFound):
			b.Logger().Warn("refreshing the token in the background failed", "role", name, "error", err)
			b.detachedFailed.Store(name, &loginRefusal{status: http.StatusInternalServerError,
				cause: "refreshing the token failed", retryAt: retryAt})
		case err == nil && res.refusal != nil && res.refusal.status == http.StatusInternalServerError:
			b.detachedFailed.Store(name, &loginRefusal{status: res.refusal.status, cause: res.refusal.cause, retryAt: retryAt})
		case err == nil && res.refusal == nil:
			b.detachedFailed.Delete(name)
		}
	}()
}

// refreshOnce runs refreshRole once for all concurrent callers of a role in the
// same kind of flight, keyed by role name. Reads and the background refresh share
// loginFlights (a read needs a login only when the background would log in too,
// and a role has one login at a time); rotate-role has rotateFlights, as it
// always logs in.
func (b *backend) refreshOnce(ctx context.Context, s logical.Storage, name string, mode loginMode) (refreshOutcome, error) {
	return b.flight(ctx, s, name, loginRequest{mode: mode})
}

// flight is refreshOnce for any loginRequest: refused-token reports share
// loginFlights with reads and the background refresh (one login per role).
func (b *backend) flight(ctx context.Context, s logical.Storage, name string, req loginRequest) (refreshOutcome, error) {
	flights := &b.loginFlights
	if req.mode == modeRotate {
		flights = &b.rotateFlights
	}
	v, err, _ := flights.Do(name, func() (any, error) {
		return b.refreshRole(ctx, s, name, req)
	})
	if err != nil {
		return refreshOutcome{}, err
	}
	return v.(refreshOutcome), nil
}

// refreshRole decides whether the role needs a login, logs in if it may (mayLogin,
// login) and records the outcome (recordLogin). It never holds a lock across the
// upstream call. Its error is for what no policy answers (storage, a missing
// role, a node that cannot write, the mount closing).
func (b *backend) refreshRole(ctx context.Context, s logical.Storage, name string, req loginRequest) (refreshOutcome, error) {
	mode := req.mode
	for tries := 0; ; tries++ {
		cfg, err := b.cachedConfig(ctx, s)
		if err != nil {
			return refreshOutcome{}, err
		}
		e, err := b.cachedRole(ctx, s, name)
		if err != nil {
			return refreshOutcome{}, err
		}
		if e == nil {
			return refreshOutcome{}, errRoleNotFound
		}
		now := b.now()
		done := refreshOutcome{entry: e, cfg: cfg, mode: mode}
		switch mode {
		case modeRead:
			if e.state.fresh(now, cfg.RefreshBefore) {
				return done, nil
			}
		case modeBackground:
			if !dueForBackground(e.state, cfg.RefreshBefore, now) {
				return done, nil
			}
		case modeReport:
			if !e.state.holds(req.refusedHash) {
				return done, nil // replaced already: serve the current token
			}
		}
		// A node that may not write storage (performance standby, DR secondary,
		// a replicated mount on a performance secondary: the SDK's
		// WriteSafeReplicationState) logs in nowhere: logical.ErrReadOnly makes
		// Vault forward the request to the active node before any upstream call
		// (docs/ha.md).
		if !b.WriteSafeReplicationState() {
			return refreshOutcome{}, logical.ErrReadOnly
		}
		forced := false // a report with no usable verify_url: drop the token once a login may happen
		if mode == modeReport {
			verdict, next, force, err := b.judgeReport(ctx, s, name, e, cfg, now)
			switch {
			case err != nil:
				return refreshOutcome{}, err
			case next == nil && verdict == nil:
				// The reported token was replaced meanwhile (rotate-role, which
				// has a flight of its own): the reporter gets the current one.
				if e, err = b.cachedRole(ctx, s, name); err != nil {
					return refreshOutcome{}, err
				}
				if e == nil {
					return refreshOutcome{}, errRoleNotFound
				}
				done.entry = e
				return done, nil
			case next == nil:
				done.report = verdict // the same token: valid at verify_url, or throttled
				return done, nil
			}
			e, done.entry, forced = next, next, force // dropped (refused at verify_url), or to drop: log in
		}
		bound, err := b.boundHost(ctx, s, e.role)
		if err != nil {
			return refreshOutcome{}, err
		}
		if u := b.mayLogin(ctx, s, e, cfg, bound, now, mode); u != nil {
			done.refusal = u
			return done, nil
		}
		if forced {
			// The login may happen: now the reported token goes, and the report
			// interval starts (README, "When the API refuses the token").
			next, err := b.dropToken(ctx, s, name, e.state.AccessToken, func(st *tokenState) {
				st.ForcedLoginAt = now
				markReport(st, now)
			})
			switch {
			case err != nil:
				return refreshOutcome{}, err
			case next == nil: // replaced meanwhile: serve the current token
				if done.entry, err = b.cachedRole(ctx, s, name); err != nil || done.entry == nil {
					return refreshOutcome{}, errors.Join(err, errRoleNotFound)
				}
				return done, nil
			}
			b.Logger().Info("token reported refused by the API; dropped, logging in", "role", name)
			e, done.entry = next, next
		}
		if bound == "" {
			// Credentials written with no config stored go to the host of their
			// first login, and nowhere else after (docs/security.md).
			if _, err := b.bindOnLogin(ctx, s, name, e.role, tokenOrigin(cfg.TokenURL)); err != nil {
				if (errors.Is(err, errRoleChanged) || errors.Is(err, errBoundMeanwhile)) && tries < 2 {
					continue
				}
				return refreshOutcome{}, err
			}
		}

		sent := b.now()
		tok, loginErr := b.sendLogin(ctx, s, cfg, e.role)
		if b.lifetime.Err() != nil {
			return refreshOutcome{}, errMountClosing
		}
		next, err := b.recordLogin(ctx, s, name, e.role, cfg.config, sent, tok, loginErr)
		switch {
		case errors.Is(err, errRoleNotFound):
			return refreshOutcome{}, err // deleted during the login
		case errors.Is(err, errRoleChanged) && tries < 2:
			continue // judge again under the new credentials
		case errors.Is(err, errRoleChanged):
			return refreshOutcome{}, logical.CodedError(http.StatusConflict,
				fmt.Sprintf("role %q: its credentials were rewritten during the login; read again", name))
		case errors.Is(err, errOvertaken):
			// A newer login's outcome is stored: it stands, and this answer is
			// dropped (docs/login-policy.md, "After the answer").
			done.entry = next
			if loginErr != nil && !next.state.alive(b.now()) {
				done.refusal = upstreamRefusal(loginErr, next.state)
			}
			return done, nil
		case err != nil && loginErr == nil:
			// The new token could not be stored: it is not cached, and the next
			// read tries again within the budget.
			b.Logger().Error("storing a new token failed", "role", name, "error", err)
			done.refusal = &loginRefusal{status: http.StatusInternalServerError, cause: "storing the new token failed", retryAt: b.now()}
			return done, nil
		case err != nil:
			return refreshOutcome{}, err
		case loginErr != nil:
			done.entry, done.refusal = next, upstreamRefusal(loginErr, next.state)
			return done, nil
		}
		done.entry = next
		return done, nil
	}
}

// dueForBackground: the token exists and enters its refresh window before the
// periodic refresh runs again.
func dueForBackground(st *tokenState, refreshBefore time.Duration, now time.Time) bool {
	if st.AccessToken == "" {
		return false
	}
	lead := min(backgroundLead, st.lifetime()/10)
	return !now.Before(st.refreshAt(refreshBefore).Add(-lead))
}

// mayLogin applies the login policy (README, "When the plugin logs in";
// docs/login-policy.md: rejected credentials, backoff, budgets, upstream 429)
// and, when a login may happen, reserves it from the budgets. It returns nil when
// the caller may log in now.
func (b *backend) mayLogin(ctx context.Context, s logical.Storage, e *cacheEntry, cfg *configEntry, bound string, now time.Time, mode loginMode) *loginRefusal {
	st := e.state
	if u := bindingRefusal(bound, e.role, cfg); u != nil {
		return u
	}
	if e.rejectedUnder(cfg.config) && mode != modeRotate {
		return &loginRefusal{status: http.StatusBadGateway, cause: st.LastError}
	}
	// rotate-role may cut short a transient backoff, never a 429's.
	if now.Before(st.NextAttempt) && !(mode == modeRotate && st.LastOutcome == outcomeUpstream) {
		return &loginRefusal{status: http.StatusTooManyRequests, cause: "backing off after: " + st.LastError, retryAt: st.NextAttempt}
	}
	principal := e.role.principal()
	if err := b.restoreBudgets(ctx, s); err != nil {
		return &loginRefusal{status: http.StatusInternalServerError, cause: "reading the login budget failed", retryAt: now}
	}
	retryAt, hostFull, ok := b.reserveLogin(ctx, s, principal, cfg, now)
	if ok {
		return nil
	}
	cause := fmt.Sprintf("login budget of %s spent (%d a minute per user, %d in all to %s, counting every mount)",
		principalKind(e.role), cfg.UserLoginsPerMinute, cfg.LoginsPerMinute, b.budgets.host())
	if hostFull {
		cause = fmt.Sprintf("login budget of the token host %s spent (%d a minute, counting every mount)",
			b.budgets.host(), cfg.LoginsPerMinute)
	}
	if until := b.budgets.blockedUntil(principal, now); !until.IsZero() && !until.Before(retryAt) {
		// Another role of the username (or the role before its credentials
		// were rewritten) was answered 429 upstream.
		cause = fmt.Sprintf("upstream rate limit (HTTP 429) for this %s", principalKind(e.role))
	}
	return &loginRefusal{status: http.StatusTooManyRequests, cause: cause, retryAt: retryAt, hostFull: hostFull}
}

// upstreamRefusal turns a failed login into the read's answer.
func upstreamRefusal(err error, st *tokenState) *loginRefusal {
	u := &loginRefusal{status: http.StatusBadGateway, cause: st.LastError, retryAt: st.NextAttempt}
	var le *loginError
	if errors.As(err, &le) && le.kind == kindRateLimited {
		u.status = http.StatusTooManyRequests
	}
	return u
}

// sendLogin performs the upstream call, bounded by request_timeout and detached from
// the first reader's cancellation (not the mount's Clean: detach): other readers
// share its result. A retry on a new connection (tokenClient.sendLogin) takes one
// more sendLogin from the budgets first.
func (b *backend) sendLogin(ctx context.Context, s logical.Storage, cfg *configEntry, r *role) (*issuedToken, error) {
	ctx, cancel := b.detach(ctx, cfg.RequestTimeout)
	defer cancel()
	return cfg.client.requestToken(ctx, cfg.TokenURL, cfg.clientAuth(), r, answerRules{
		now:              b.now,
		defaultExpiresIn: cfg.DefaultExpiresIn,
		redact:           newRedactor(r.secrets()...),
		beforeRetry: func() bool {
			_, _, ok := b.reserveLogin(ctx, s, r.principal(), cfg, b.now())
			b.Logger().Info("upstream closed a kept-alive connection as a login was sent", "retry_on_new_connection", ok)
			return ok
		},
	})
}

// recordLogin is the one place that keeps a login's answer (docs/login-policy.md,
// "After the answer"): the outcome of a login sent at sent with the credentials of
// sentFor, under cfg. It returns the role's entry after it. An answer belongs to
// the exact credentials it was sent with, and to the moment it was sent:
//   - errRoleChanged: the role was deleted and created again, or its credentials
//     rewritten, meanwhile (another CredentialsID): nothing is kept, not even a
//     verdict;
//   - errOvertaken, with the stored entry: a login sent later stored its outcome
//     already; an older token never replaces a newer one, and an older failure
//     never judges the role.
//
// A failed login is recorded too (backoff, rejected credentials), in memory even
// if storage refuses it.
func (b *backend) recordLogin(ctx context.Context, s logical.Storage, name string, sentFor *role,
	cfg *config, sent time.Time, tok *issuedToken, loginErr error) (*cacheEntry, error) {
	defer b.lockRole(name).Unlock()

	r, err := readRole(ctx, s, name)
	if err != nil {
		return nil, err
	}
	if r == nil {
		return nil, errRoleNotFound
	}
	if r.credentialsID() != sentFor.credentialsID() {
		return nil, errRoleChanged
	}
	st, err := b.currentState(ctx, s, name, r)
	if err != nil {
		return nil, err
	}
	now := b.now()
	if loginErr == nil {
		if st.AccessToken != "" && sent.Before(st.IssuedAt) {
			return newCacheEntry(r, st), errOvertaken
		}
		next := &tokenState{
			AccessToken:       tok.accessToken,
			TokenType:         tok.tokenType,
			IssuedAt:          sent,
			ExpiresAt:         sent.Add(tok.expiresIn),
			LastAttempt:       sent,
			LastOutcome:       outcomeSuccess,
			Issuer:            tokenOrigin(cfg.TokenURL),
			LastReport:        st.LastReport,
			LastReportOutcome: st.LastReportOutcome,
			ForcedLoginAt:     st.ForcedLoginAt,
			CredentialsID:     r.CredentialsID,
			Generation:        r.Generation,
		}
		if st.AccessToken != "" && !sent.After(st.IssuedAt) {
			// IssuedAt is the token's last_vault_rotation: a new token never
			// carries its predecessor's, even from a login sent in the same instant.
			next.IssuedAt = st.IssuedAt.Add(time.Nanosecond)
		}
		if err := writeTokenState(ctx, s, name, next); err != nil {
			return nil, err
		}
		compact(r, next)
		b.Logger().Info("logged in", "role", name, "expires_at", next.ExpiresAt.UTC().Format(time.RFC3339))
		e := newCacheEntry(r, next)
		b.rememberRole(name, e)
		return e, nil
	}

	var le *loginError
	if !errors.As(loginErr, &le) {
		le = &loginError{kind: kindTransient, msg: "token request failed", err: loginErr}
	}
	if sent.Before(st.LastAttempt) {
		// A login sent later has recorded its outcome: this older one does not
		// judge the role (its 429 still blocks the principal upstream blocked).
		if le.kind == kindRateLimited {
			b.blockPrincipal(ctx, s, r, now.Add(max(le.retryAfter, rateLimitBackoffMin)))
		}
		return newCacheEntry(r, st), errOvertaken
	}
	st = cloneState(st)
	st.LastAttempt = sent
	outcome := map[loginKind]string{kindTransient: outcomeUpstream, kindRateLimited: outcomeRateLimited, kindRejected: outcomeRejected}[le.kind]
	if st.LastOutcome == outcome {
		st.Failures++
	} else {
		st.Failures = 1
	}
	st.LastOutcome, st.LastError = outcome, le.Error()
	switch le.kind {
	case kindRejected:
		st.CredentialsRejected = true
		st.RejectedSettings = loginSettings(cfg, r)
		st.NextAttempt = time.Time{}
	case kindRateLimited:
		delay := le.retryAfter
		if delay <= 0 {
			delay = jitter(backoff(rateLimitBackoffMin, rateLimitBackoffMax, st.Failures))
		}
		st.NextAttempt = now.Add(delay)
		b.blockPrincipal(ctx, s, r, st.NextAttempt)
	default:
		// A Retry-After on a 5xx or "temporarily unavailable" answer is honoured
		// when it asks for longer than the backoff.
		st.NextAttempt = now.Add(max(backoff(transientBackoffMin, transientBackoffMax, st.Failures), le.retryAfter))
	}
	b.Logger().Warn("login failed", "role", name, "outcome", outcome, "error", le.Error(),
		"next_attempt", st.NextAttempt.UTC().Format(time.RFC3339))
	if err := writeTokenState(ctx, s, name, st); err != nil {
		b.Logger().Error("storing the login bookkeeping failed; it holds in memory", "role", name, "error", err)
	}
	e := newCacheEntry(r, st)
	b.rememberRole(name, e)
	return e, nil
}

// errOvertaken: a login sent later than this one has stored its outcome.
var errOvertaken = errors.New("a newer login's outcome is stored")

// currentState is the role's token state as this node last stored or read it
// (the cache, which also holds bookkeeping storage refused), else as stored; an
// empty state when what is there belongs to other credentials. Callers hold the
// role's lock.
func (b *backend) currentState(ctx context.Context, s logical.Storage, name string, r *role) (*tokenState, error) {
	if e := b.cache.role(name); e != nil && e.state.credentialsID() == r.credentialsID() {
		return e.state, nil
	}
	st, err := readTokenState(ctx, s, name)
	if err != nil {
		return nil, err
	}
	if st.credentialsID() != r.credentialsID() {
		st = &tokenState{CredentialsID: r.CredentialsID, Generation: r.Generation}
	}
	return st, nil
}

// cloneState copies a token state: entries are immutable once cached.
func cloneState(st *tokenState) *tokenState {
	c := *st
	return &c
}

// blockPrincipal stops logins of the role's principal until the given time
// (upstream answered 429), and stores the budgets.
func (b *backend) blockPrincipal(ctx context.Context, s logical.Storage, r *role, until time.Time) {
	b.budgets.block(r.principal(), until)
	if err := b.saveBudgets(ctx, s); err != nil {
		b.Logger().Warn("storing the login budget failed", "error", err)
	}
}

// backoff is base doubled for each consecutive failure after the first, capped.
func backoff(base, limit time.Duration, failures int) time.Duration {
	d := base
	for i := 1; i < failures && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

// jitter adds up to a tenth to d, so that roles blocked together do not all retry
// in the same instant. It never shortens d.
func jitter(d time.Duration) time.Duration {
	return d + rand.N(d/10+1)
}

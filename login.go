package iadvize

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
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
	// rewrite names the role's secret fields to write again, which bind it to
	// the token host bindsTo (bindingRefusal).
	rewrite, bindsTo string
}

// message names the role, the cause and when the next attempt may happen.
func (u *loginRefusal) message(name string) string {
	next := "no login until the role's credentials are rewritten or rotate-role is called"
	switch {
	case !u.retryAt.IsZero():
		next = "next login attempt not before " + ceilSecond(u.retryAt).UTC().Format(time.RFC3339)
	case u.until != "":
		next = u.until
	case u.rewrite != "":
		next = fmt.Sprintf("no login until the role's %s is written again (at roles/%s), which binds it to %s", u.rewrite, name, u.bindsTo)
	}
	return fmt.Sprintf("role %q: %s; %s", name, u.cause, next)
}

// err is the refusal as the error a reader gets: its status and message.
func (u *loginRefusal) err(name string) error {
	return logical.CodedError(u.status, u.message(name))
}

// servingWarning is the warning of a read served e's token while its refresh
// fails for this reason.
func (u *loginRefusal) servingWarning(name string, e *cacheEntry) string {
	return fmt.Sprintf("%s; serving the cached token, which expires at %s", u.message(name), e.expireTime)
}

// ceilSecond rounds t up to a whole second, so that a time named in whole seconds
// (RFC 3339) is never before the moment it stands for: a jittered backoff ends
// mid-second, and a client that waits until the named time must be let through.
func ceilSecond(t time.Time) time.Time {
	return t.Add(time.Second - 1).Truncate(time.Second)
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

// plannedLogin is when the plugin plans the role's next login (status/
// next_login): with no token, on the next read; with one, when the background
// refresh is due (dueAt); never before nextLogin. The zero time when none is
// planned (credentials rejected, or bound to another token host).
func (b *backend) plannedLogin(e *cacheEntry, cfg *configEntry, now time.Time) time.Time {
	next := b.nextLogin(e, cfg, now)
	if next.Equal(farFuture) {
		return time.Time{}
	}
	at, ok := e.state.dueAt(cfg.RefreshBefore)
	if !ok {
		at = now
	}
	return latest(at, next)
}

// farFuture stands for "not until something else changes".
var farFuture = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

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
		// The flight serves every caller that joins it: it runs on the first
		// caller's values, not its cancellation (a reader that gives up must not
		// take the login, or the storing of its answer, from the others), and
		// ends with the mount (Clean).
		ctx, cancel := b.detach(ctx, 0)
		defer cancel()
		return b.refreshRole(ctx, s, name, req)
	})
	if err != nil {
		return refreshOutcome{}, err
	}
	return v.(refreshOutcome), nil
}

// refreshRole decides whether the role needs a login, logs in if it may (mayLogin,
// sendLogin) and records the outcome (recordLogin). It never holds a lock across
// the upstream call. A login overtaken by a rewrite of the role's credentials is
// judged again, once: a second is answered 409. Its error is for what no policy
// answers (storage, a missing role, a node that cannot write, the mount closing).
func (b *backend) refreshRole(ctx context.Context, s logical.Storage, name string, req loginRequest) (refreshOutcome, error) {
	res, err := b.attempt(ctx, s, name, req)
	if errors.Is(err, errRoleChanged) {
		res, err = b.attempt(ctx, s, name, req) // judge again under the new credentials
	}
	if errors.Is(err, errRoleChanged) {
		return refreshOutcome{}, logical.CodedError(http.StatusConflict,
			fmt.Sprintf("role %q: its credentials were rewritten during the login, twice running; read again", name))
	}
	return res, err
}

// attempt is one pass of refreshRole over the role as it stands: errRoleChanged
// when its credentials were rewritten (or bound to a token host) during it.
func (b *backend) attempt(ctx context.Context, s logical.Storage, name string, req loginRequest) (refreshOutcome, error) {
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
	done := refreshOutcome{entry: e, cfg: cfg, mode: req.mode}
	if !needsLogin(e.state, cfg.config, req, now) {
		return done, nil
	}
	// A node that may not write storage (performance standby, DR secondary, a
	// replicated mount on a performance secondary: the SDK's
	// WriteSafeReplicationState) logs in nowhere: logical.ErrReadOnly makes Vault
	// forward the request to the active node before any upstream call
	// (docs/ha.md).
	if !b.WriteSafeReplicationState() {
		return refreshOutcome{}, logical.ErrReadOnly
	}
	forced := false // a report with no usable verify_url: the token goes once a login may happen
	if req.mode == modeReport {
		var answered bool
		if done, forced, answered, err = b.judgeReportInFlight(ctx, s, name, done, now); answered || err != nil {
			return done, err
		}
		e = done.entry
	}
	if b.lifetime.Err() != nil {
		return refreshOutcome{}, errMountClosing // no budget taken, no token dropped
	}
	bound, err := b.boundHost(ctx, s, e.role)
	if err != nil {
		return refreshOutcome{}, err
	}
	if done.refusal = b.mayLogin(ctx, s, e, cfg, bound, now, req.mode); done.refusal != nil {
		return done, nil
	}
	if forced {
		if done.entry, err = b.dropReported(ctx, s, name, e, now); err != nil || done.entry.state.AccessToken != "" {
			return done, err // replaced meanwhile: serve the current token
		}
		e = done.entry
	}
	if bound == "" {
		// Credentials written with no config stored go to the host of their
		// first login, and nowhere else after (docs/security.md).
		if _, err := b.bindOnLogin(ctx, s, name, e.role, cfg.origin); err != nil {
			if errors.Is(err, errBoundMeanwhile) {
				err = errRoleChanged
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
	return b.outcome(name, done, next, loginErr, err)
}

// needsLogin says whether a flight of this kind logs in for a token in state st:
// a read when the token is not fresh, the background refresh when it is due, a
// report when the reported token is still the cached one, rotate-role always.
func needsLogin(st *tokenState, cfg *config, req loginRequest, now time.Time) bool {
	switch req.mode {
	case modeRead:
		return !st.fresh(now, cfg.RefreshBefore)
	case modeBackground:
		at, ok := st.dueAt(cfg.RefreshBefore)
		return ok && !now.Before(at)
	case modeReport:
		return st.holds(req.refusedHash)
	}
	return true
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

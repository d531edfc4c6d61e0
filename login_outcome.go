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

// After the answer (docs/login-policy.md): the one place that keeps a login's
// answer, the backoff it sets, and what a reader is told of a failure.

// Backoff bounds (README, "When the plugin logs in": upstream 429, network errors).
const (
	rateLimitBackoffMin = time.Minute
	rateLimitBackoffMax = 30 * time.Minute
	transientBackoffMin = time.Second
	transientBackoffMax = 5 * time.Minute
)

// upstreamRefusal turns a failed login into the read's answer.
func upstreamRefusal(err error, st *tokenState) *loginRefusal {
	u := &loginRefusal{status: http.StatusBadGateway, cause: st.LastError, retryAt: st.NextAttempt}
	var le *loginError
	if errors.As(err, &le) && le.kind == kindRateLimited {
		u.status = http.StatusTooManyRequests
	}
	return u
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
	if loginErr == nil {
		return b.recordToken(ctx, s, name, r, st, cfg, sent, tok)
	}
	return b.recordFailure(ctx, s, name, r, st, cfg, sent, loginErr)
}

// recordToken keeps a new token, unless a login sent later stored one
// (errOvertaken). Callers hold the role's lock.
func (b *backend) recordToken(ctx context.Context, s logical.Storage, name string, r *role, st *tokenState,
	cfg *config, sent time.Time, tok *issuedToken) (*cacheEntry, error) {
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
	if sent.Before(st.LastAttempt) {
		// A login sent later failed (had it brought a token, this one would be
		// older than it): this token is newer than the stored one and is kept,
		// but the later attempt's bookkeeping stands (its backoff, its verdict).
		next.LastAttempt, next.LastOutcome, next.LastError, next.Failures = st.LastAttempt, st.LastOutcome, st.LastError, st.Failures
		next.NextAttempt, next.CredentialsRejected, next.RejectedSettings = st.NextAttempt, st.CredentialsRejected, st.RejectedSettings
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

// recordFailure keeps the bookkeeping of a failed login (outcome, backoff,
// rejected credentials, an upstream 429 block), in memory even if storage
// refuses it, unless a login sent later recorded its outcome (errOvertaken).
// Callers hold the role's lock.
func (b *backend) recordFailure(ctx context.Context, s logical.Storage, name string, r *role, st *tokenState,
	cfg *config, sent time.Time, loginErr error) (*cacheEntry, error) {
	now := b.now()
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

// outcome turns what recordLogin made of a login (next, err) into the flight's
// outcome: done with the role's entry after it, and why no token came when none
// did. errRoleChanged is returned as it is, for refreshRole to judge again.
func (b *backend) outcome(name string, done refreshOutcome, next *cacheEntry, loginErr, err error) (refreshOutcome, error) {
	switch {
	case errors.Is(err, errRoleNotFound), errors.Is(err, errRoleChanged):
		return refreshOutcome{}, err // deleted, or rewritten, during the login
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
		done.refusal = storageRefusal("storing the new token failed", b.now())
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

// storageRefusal is why no token could be had when storage failed; a read may
// try again at retryAt.
func storageRefusal(cause string, retryAt time.Time) *loginRefusal {
	return &loginRefusal{status: http.StatusInternalServerError, cause: cause, retryAt: retryAt}
}

// storageFailed reports whether the refusal is storage's (storageRefusal).
func (u *loginRefusal) storageFailed() bool { return u.status == http.StatusInternalServerError }

// errNoToken answers a read whose flight ended with no token and no reason (the
// token went while the read waited): 502, read again.
func errNoToken(name string) error {
	return logical.CodedError(http.StatusBadGateway, fmt.Sprintf("role %q: no token could be obtained; read again", name))
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

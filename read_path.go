package iadvize

import (
	"context"
	"errors"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// The read path (docs/read-path.md): what a read of creds/ or static-creds/ is
// served, from memory when the token is fresh, at once while it is usable, and
// otherwise through the role's login flight (login.go).

// servedToken is what a read of creds/ or static-creds/ gets (serveToken): the
// role's entry, the config it was judged under, and a warning when the token is
// served while its refresh fails.
type servedToken struct {
	entry   *cacheEntry
	cfg     *configEntry
	warning string
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
		srv.warning = u.servingWarning(name, e)
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
			return servedToken{}, v.refusal.err(name)
		} else if v != nil {
			srv.warning = v.warning
		}
		if u := res.refusal; u != nil && res.entry.state.holds(refusedHash) {
			return servedToken{}, u.err(name)
		}
	}
	alive := res.entry.state.alive(b.now())
	switch {
	case res.refusal == nil && alive:
		return srv, nil
	case res.refusal == nil:
		return servedToken{}, errNoToken(name)
	case !alive:
		return servedToken{}, res.refusal.err(name)
	}
	srv.warning = res.refusal.servingWarning(name, res.entry)
	return srv, nil
}

// serveWhileRefreshing answers a read of a usable token inside its refresh window:
// the token at once, with a warning only when its refresh has failed, and a login
// started on its own when one may happen now. A node that cannot write starts
// none: the active node refreshes the token.
func (b *backend) serveWhileRefreshing(ctx context.Context, s logical.Storage, name string, e *cacheEntry, cfg *configEntry, now time.Time) servedToken {
	srv := servedToken{entry: e, cfg: cfg}
	if u := b.waitingFor(e.role, cfg); u != nil {
		// Bound to another token host: no login, and the reader learns why.
		srv.warning = u.servingWarning(name, e)
		return srv
	}
	next := b.nextLogin(e, cfg, now)
	if u := refreshFailure(e, cfg.config, now); u != nil {
		srv.warning = u.servingWarning(name, e)
	} else if v, ok := b.detachedFailed.Load(name); ok {
		u := v.(*loginRefusal)
		srv.warning = u.servingWarning(name, e)
		next = latest(next, u.retryAt)
	}
	if _, busy := b.detached.Load(name); !busy && !next.After(now) && b.WriteSafeReplicationState() {
		b.refreshDetached(ctx, s, name)
	}
	return srv
}

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
			b.detachedFailed.Store(name, storageRefusal("refreshing the token failed", retryAt))
		case err == nil && res.refusal != nil && res.refusal.storageFailed():
			b.detachedFailed.Store(name, storageRefusal(res.refusal.cause, retryAt))
		case err == nil && res.refusal == nil:
			b.detachedFailed.Delete(name)
		}
	}()
}

package iadvize

import (
	"context"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// restoreBudgets merges this mount's stored record into the budgets of its
// current token host, once per host for this backend: at initialisation, and
// before any login. A record of another host is left out.
func (b *backend) restoreBudgets(ctx context.Context, s logical.Storage) error {
	m := b.limits
	h := m.current.Load()
	m.restoreMu.Lock()
	defer m.restoreMu.Unlock()
	if m.restored[h.host] {
		return nil
	}
	rec, err := readBudget(ctx, s, recentBudgetKey)
	if err == nil && rec == nil {
		rec, err = readBudget(ctx, s, legacyMountBudgetKey)
	}
	if err != nil {
		return err
	}
	if rec != nil && (rec.Host == "" || rec.Host == h.host) {
		h.shared.restore(rec)
		h.own.restore(rec)
	}
	m.restored[h.host] = true
	return nil
}

// saveBudgets writes this mount's own recent logins and blocks after a change,
// and returns once a write that holds the change has ended (its error, if it
// failed). Writes run one at a time, so an older snapshot never overwrites a
// newer one, and concurrent callers share them: a caller that waited for a
// write which began after its call returns without writing again. The record
// grows with the principals that logged in within the window, so without
// sharing N concurrent logins would write N records of up to N principals each
// (docs/storage.md, budgets/recent).
func (b *backend) saveBudgets(ctx context.Context, s logical.Storage) error {
	m := b.limits
	asked := m.saveAsked.Add(1)
	m.saveMu.Lock()
	defer m.saveMu.Unlock()
	if m.saveCovered >= asked {
		return m.saveErr // a write that began after this call holds its change
	}
	// Every call counted so far changed the budgets before it asked: the
	// snapshot, taken after this read, holds all of them.
	covers := m.saveAsked.Load()
	h := m.current.Load()
	rec := h.own.snapshot(b.now())
	rec.Host = h.host
	err := writeBudget(ctx, s, rec)
	m.saveCovered, m.saveErr = covers, err
	return err
}

// reserveLogin takes one login of principal from the token host's budgets under
// cfg's numbers (mountBudgets.reserve) and, when it did, stores this mount's copy
// (saveBudgets). It returns what reserve returns. A failed write is logged only:
// the login is within budget; only a restart's memory of it is lost.
func (b *backend) reserveLogin(ctx context.Context, s logical.Storage, principal string, cfg *configEntry, now time.Time) (retryAt time.Time, hostFull, ok bool) {
	retryAt, hostFull, ok = b.limits.reserve(principal, now, cfg.UserLoginsPerMinute, cfg.LoginsPerMinute)
	if ok {
		if err := b.saveBudgets(ctx, s); err != nil {
			b.Logger().Warn("storing the login budget failed", "error", err)
		}
	}
	return retryAt, hostFull, ok
}

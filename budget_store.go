package iadvize

import (
	"context"

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

// loadBudgets makes sure the budgets hold this mount's stored logins before a
// login is judged.
func (b *backend) loadBudgets(ctx context.Context, s logical.Storage, _ string) error {
	return b.restoreBudgets(ctx, s)
}

// saveBudgets writes this mount's own recent logins and blocks after a change.
// Saves are serialised so that an older snapshot never overwrites a newer one.
func (b *backend) saveBudgets(ctx context.Context, s logical.Storage, _ string) error {
	m := b.limits
	m.saveMu.Lock()
	defer m.saveMu.Unlock()
	h := m.current.Load()
	rec := h.own.snapshot(b.now())
	rec.Host = h.host
	return writeBudget(ctx, s, rec)
}

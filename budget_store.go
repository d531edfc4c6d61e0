package iadvize

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// budgetsStoragePrefix holds the login budgets: one entry per principal (keyed by
// a hash, so no username is stored in a key) and one for the mount.
const (
	budgetsStoragePrefix = "budgets/"
	mountBudgetKey       = budgetsStoragePrefix + "mount"
)

// budgetRecord is what storage keeps of one budget, so that a restart, a plugin
// reload or an HA failover does not start the minute afresh and let through logins
// upstream would answer 429 (SPEC 3 items 4 and 6).
//
// Logins are kept as [unix second, count] pairs, each login counted at the whole
// second after it: a record stays small (at most about 62 pairs) at any volume,
// and a restored window can only be stricter than the one it copies.
type budgetRecord struct {
	Logins       [][2]int64 `json:"logins,omitempty"`
	BlockedUntil time.Time  `json:"blocked_until,omitempty"`
}

// newBudgetRecord buckets login times (in time order) by whole second, rounded up.
func newBudgetRecord(times []time.Time, blockedUntil time.Time) *budgetRecord {
	rec := &budgetRecord{BlockedUntil: blockedUntil}
	for _, t := range times {
		sec := ceilSecond(t).Unix()
		if n := len(rec.Logins); n > 0 && rec.Logins[n-1][0] == sec {
			rec.Logins[n-1][1]++
		} else {
			rec.Logins = append(rec.Logins, [2]int64{sec, 1})
		}
	}
	return rec
}

// times expands the record back into login times.
func (r *budgetRecord) times() []time.Time {
	var ts []time.Time
	for _, bucket := range r.Logins {
		for range bucket[1] {
			ts = append(ts, time.Unix(bucket[0], 0))
		}
	}
	return ts
}

func principalBudgetKey(principal string) string {
	return budgetsStoragePrefix + principalHash(principal)
}

// principalHash names a principal in storage keys without spelling its username.
func principalHash(principal string) string {
	sum := sha256.Sum256([]byte(principal))
	return hex.EncodeToString(sum[:16])
}

// loadBudgets brings a principal's and the mount's stored budgets into memory the
// first time this backend sees them.
func (b *backend) loadBudgets(ctx context.Context, s logical.Storage, principal string) error {
	needPrincipal, needMount := b.limits.needsLoad(principal)
	var p, m *budgetRecord
	var err error
	if needPrincipal {
		if p, err = readBudget(ctx, s, principalBudgetKey(principal)); err != nil {
			return err
		}
	}
	if needMount {
		if m, err = readBudget(ctx, s, mountBudgetKey); err != nil {
			return err
		}
	}
	b.limits.merge(principal, p, m)
	return nil
}

// saveBudgets writes a principal's and the mount's budgets after a change. Saves
// are serialised so that an older snapshot never overwrites a newer one.
func (b *backend) saveBudgets(ctx context.Context, s logical.Storage, principal string) error {
	b.budgetSaveMu.Lock()
	defer b.budgetSaveMu.Unlock()
	p, m := b.limits.snapshot(principal)
	for key, rec := range map[string]*budgetRecord{principalBudgetKey(principal): p, mountBudgetKey: m} {
		entry, err := logical.StorageEntryJSON(key, rec)
		if err != nil {
			return fmt.Errorf("encoding a login budget: %w", err)
		}
		if err := s.Put(ctx, entry); err != nil {
			return fmt.Errorf("storing a login budget: %w", err)
		}
	}
	return nil
}

func readBudget(ctx context.Context, s logical.Storage, key string) (*budgetRecord, error) {
	entry, err := s.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("reading a login budget: %w", err)
	}
	rec := new(budgetRecord)
	if entry != nil {
		if err := entry.DecodeJSON(rec); err != nil {
			return nil, fmt.Errorf("decoding a login budget: %w", err)
		}
	}
	return rec, nil
}

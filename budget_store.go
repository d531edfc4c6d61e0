package iadvize

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// budgetsStoragePrefix holds what a mount keeps of its login budgets.
// recentBudgetKey is the one record of its recent logins; legacyMountBudgetKey is
// where versions that kept budgets per mount stored its total (read once, when
// there is no newer record).
const (
	budgetsStoragePrefix = "budgets/"
	recentBudgetKey      = budgetsStoragePrefix + "recent"
	legacyMountBudgetKey = budgetsStoragePrefix + "mount"
)

// budgetRecord is what a mount's storage keeps of its own logins to its token
// host in the last budgetWindow, and of the upstream 429 blocks it met, so that a
// restart, a plugin reload or an HA failover does not start the minute afresh and
// let through logins upstream would answer 429 (README, "When the plugin logs
// in"). Each mount stores only its own logins: restored into the budgets its
// process shares, the records of all mounts add up to what they sent, not a
// multiple of it. One record per mount, read once at start.
//
// Logins are kept as [unix second, count] pairs, each login counted at the whole
// second after it: a window stays small (at most about 62 pairs) at any volume,
// and a restored window can only be stricter than the one it copies. Principals
// are named by principalHash, never by username.
type budgetRecord struct {
	// Host is the token host (upstreamHost) the logins went to; empty in a
	// legacy record, which counts for the mount's current host.
	Host       string                `json:"host,omitempty"`
	Logins     [][2]int64            `json:"logins,omitempty"`
	Principals map[string][][2]int64 `json:"principals,omitempty"`
	Blocked    map[string]time.Time  `json:"blocked,omitempty"`
}

// secondBuckets buckets login times (in time order) by whole second, rounded up.
func secondBuckets(times []time.Time) [][2]int64 {
	var buckets [][2]int64
	for _, t := range times {
		sec := ceilSecond(t).Unix()
		if n := len(buckets); n > 0 && buckets[n-1][0] == sec {
			buckets[n-1][1]++
		} else {
			buckets = append(buckets, [2]int64{sec, 1})
		}
	}
	return buckets
}

// bucketTimes expands buckets back into login times.
func bucketTimes(buckets [][2]int64) []time.Time {
	var ts []time.Time
	for _, bucket := range buckets {
		for range bucket[1] {
			ts = append(ts, time.Unix(bucket[0], 0))
		}
	}
	return ts
}

// principalHash names a principal in storage and in the budgets without spelling
// its username.
func principalHash(principal string) string {
	sum := sha256.Sum256([]byte(principal))
	return hex.EncodeToString(sum[:16])
}

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
	entry, err := logical.StorageEntryJSON(recentBudgetKey, rec)
	if err != nil {
		return fmt.Errorf("encoding the login budget: %w", err)
	}
	if err := s.Put(ctx, entry); err != nil {
		return fmt.Errorf("storing the login budget: %w", err)
	}
	return nil
}

// readBudget reads a stored record; nil when there is none.
func readBudget(ctx context.Context, s logical.Storage, key string) (*budgetRecord, error) {
	entry, err := s.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("reading the login budget: %w", err)
	}
	if entry == nil {
		return nil, nil
	}
	rec := new(budgetRecord)
	if err := entry.DecodeJSON(rec); err != nil {
		return nil, fmt.Errorf("decoding the login budget: %w", err)
	}
	return rec, nil
}

package iadvize

// A mount's stored copy of its login budgets (docs/storage.md, budgets/recent):
// the record, its encoding, and when it is restored and saved. The windows
// themselves are in budget.go.

import (
	"context"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
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

// readBudget reads a stored record; nil when there is none.
func readBudget(ctx context.Context, s logical.Storage, key string) (*budgetRecord, error) {
	rec := new(budgetRecord)
	if found, err := getJSON(ctx, s, key, "the login budget", rec); !found || err != nil {
		return nil, err
	}
	return rec, nil
}

// writeBudget stores this mount's record at recentBudgetKey.
func writeBudget(ctx context.Context, s logical.Storage, rec *budgetRecord) error {
	return putJSON(ctx, s, recentBudgetKey, "the login budget", rec)
}

// restoreBudgets merges this mount's stored record into the budgets of its
// current token host, once per host for this backend: at initialisation, and
// before any login. A record of another host is left out.
func (b *backend) restoreBudgets(ctx context.Context, s logical.Storage) error {
	m := b.budgets
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
	m := b.budgets
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
	retryAt, hostFull, ok = b.budgets.reserve(principal, now, cfg.UserLoginsPerMinute, cfg.LoginsPerMinute)
	if ok {
		if err := b.saveBudgets(ctx, s); err != nil {
			b.Logger().Warn("storing the login budget failed", "error", err)
		}
	}
	return retryAt, hostFull, ok
}

package iadvize

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unique"

	"github.com/hashicorp/vault/sdk/logical"
)

// storageCache is the in-memory copy of the mount's config and roles (each with
// its token state) in front of storage (storage.go). A read that hits it takes no
// lock and touches no storage and no network (docs/read-path.md). Entries are
// immutable: a change stores a new one, so readers never lock.
//
// Invalidation rule (docs/storage.md, docs/ha.md): an entry is what storage held
// when this node last read or wrote it.
//   - Filled on a miss from storage (backend.cachedConfig, backend.cachedRole),
//     unless the cache changed while storage was read: gen counts the changes,
//     and a fill whose gen moved is not kept, so a stale read never undoes a drop.
//   - Replaced when this node writes a role's token state (backend.rememberRole:
//     a login's outcome, a token dropped).
//   - Dropped, so the next use reads storage: a role's entry by a role write or
//     delete (backend.forgetRole), the config by a config write or delete
//     (backend.dropConfig), and either by Invalidate when another node wrote
//     config, roles/<name> or tokens/<name> (backend.invalidate).
//
// The methods of storageCache touch memory only; backend.cachedConfig and
// backend.cachedRole read through it (memory, else storage).
//
// A role entry read under old credentials is never served under new ones: a role
// write drops the entry, and state of other credentials (another CredentialsID)
// is retired on load.
type storageCache struct {
	// mu makes a change and a fill's gen check atomic: a fill checks gen and stores
	// under mu, so no change comes between. Guards gen's changes, for in-memory
	// work only (order: docs/locks.md).
	mu    sync.Mutex
	gen   atomic.Uint64 // bumped by every change
	cfg   atomic.Pointer[configEntry]
	roles sync.Map // role name -> *cacheEntry
}

// configEntry is the cached config with the HTTP client built for it.
type configEntry struct {
	*config
	client *tokenClient
	// origin is tokenOrigin(TokenURL): where the roles' credentials may go.
	origin string
	// stored is false when no config is stored (the defaults apply).
	stored bool
}

// cacheEntry is the in-memory view of one role: the role and its token state, both
// as last read from or written to storage.
type cacheEntry struct {
	role  *role
	state *tokenState
	// expireTime is state.ExpiresAt in RFC 3339, and rotatedAt state.IssuedAt
	// in RFC 3339 with nanoseconds (static-creds/ last_vault_rotation),
	// formatted once rather than on every read.
	expireTime string
	rotatedAt  string
}

// compact makes a role and its token state, just read from storage or built,
// hold one copy of the strings every role repeats (grant, token host, token
// type, outcome) and of the credentials ID they share: BENCHMARKS.md keeps the
// plugin under 1 KiB of memory per cached role. Only for values not yet shared.
func compact(r *role, st *tokenState) {
	for _, p := range []*string{&r.GrantType, &r.TokenHost, &st.TokenType, &st.LastOutcome, &st.Issuer, &st.LastReportOutcome} {
		if *p != "" {
			*p = unique.Make(*p).Value()
		}
	}
	if st.CredentialsID == r.CredentialsID {
		st.CredentialsID = r.CredentialsID
	}
}

func newCacheEntry(r *role, st *tokenState) *cacheEntry {
	return &cacheEntry{role: r, state: st,
		expireTime: st.ExpiresAt.UTC().Format(time.RFC3339),
		rotatedAt:  st.IssuedAt.UTC().Format(time.RFC3339Nano)}
}

// rejectedUnder reports whether the role's credentials stand rejected under cfg:
// no login until they are rewritten, rotate-role is called, or the config changes
// the role's token request (loginSettings).
func (e *cacheEntry) rejectedUnder(cfg *config) bool {
	st := e.state
	return st.CredentialsRejected && (st.RejectedSettings == "" || st.RejectedSettings == loginSettings(cfg, e.role))
}

// config returns the cached config, or nil.
func (c *storageCache) config() *configEntry { return c.cfg.Load() }

// role returns a role's cached entry, or nil.
func (c *storageCache) role(name string) *cacheEntry {
	if v, ok := c.roles.Load(name); ok {
		return v.(*cacheEntry)
	}
	return nil
}

// generation is the change count a fill starts from.
func (c *storageCache) generation() uint64 { return c.gen.Load() }

// fill runs store when nothing changed since generation returned gen.
func (c *storageCache) fill(gen uint64, store func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen.Load() == gen {
		store()
	}
}

// change applies a change and counts it, so that fills begun before it are not kept.
func (c *storageCache) change(apply func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen.Add(1)
	apply()
}

func (c *storageCache) fillConfig(gen uint64, e *configEntry) {
	c.fill(gen, func() { c.cfg.Store(e) })
}

func (c *storageCache) fillRole(gen uint64, name string, e *cacheEntry) {
	c.fill(gen, func() { c.roles.Store(name, e) })
}

func (c *storageCache) setRole(name string, e *cacheEntry) {
	c.change(func() { c.roles.Store(name, e) })
}

func (c *storageCache) dropRole(name string) {
	c.change(func() { c.roles.Delete(name) })
}

func (c *storageCache) dropConfig() {
	c.change(func() { c.cfg.Store(nil) })
}

// cachedConfig returns the config, from memory when cached.
func (b *backend) cachedConfig(ctx context.Context, s logical.Storage) (*configEntry, error) {
	if c := b.cache.config(); c != nil {
		return c, nil
	}
	gen := b.cache.generation()
	cfg, stored, err := readConfig(ctx, s)
	if err != nil {
		return nil, err
	}
	client, err := newTokenClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("building the upstream client: %w", err)
	}
	c := &configEntry{config: cfg, client: client, origin: tokenOrigin(cfg.TokenURL), stored: stored}
	b.budgets.use(upstreamHost(cfg.TokenURL))
	b.cache.fillConfig(gen, c)
	return c, nil
}

// cachedRole returns a role's entry from memory, else from storage (and caches it).
// It returns nil when the role does not exist.
func (b *backend) cachedRole(ctx context.Context, s logical.Storage, name string) (*cacheEntry, error) {
	if e := b.cache.role(name); e != nil {
		return e, nil
	}
	gen := b.cache.generation()
	r, err := readRole(ctx, s, name)
	if err != nil || r == nil {
		return nil, err
	}
	st, err := readTokenState(ctx, s, name)
	if err != nil {
		return nil, err
	}
	if st.credentialsID() != r.credentialsID() {
		// retired with the old credentials
		st = &tokenState{CredentialsID: r.CredentialsID, Generation: r.Generation}
	}
	compact(r, st)
	e := newCacheEntry(r, st)
	b.cache.fillRole(gen, name, e)
	return e, nil
}

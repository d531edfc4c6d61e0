package iadvize

// The mount's memory of a role besides the cache entry: its place in the
// background refresh's schedule, the last verify/ answer, the last refused-token
// report that changed nothing in storage, and why its last detached refresh
// failed. rememberRole and forgetRole keep them all in step with storage; the
// cache alone is storageCache (cache.go).

import (
	"context"
	"strings"
)

// invalidate is the backend's Invalidate: it drops what another node changed in
// storage.
func (b *backend) invalidate(_ context.Context, key string) {
	switch {
	case key == configStoragePath:
		b.dropConfig()
	case key == legacyTokenHostKey:
		b.legacyHost.Store(nil)
	case strings.HasPrefix(key, rolesStoragePrefix):
		b.forgetRole(strings.TrimPrefix(key, rolesStoragePrefix))
	case strings.HasPrefix(key, tokensStoragePrefix):
		b.forgetRole(strings.TrimPrefix(key, tokensStoragePrefix))
	}
}

// dropConfig forgets the cached config; the next use reads storage.
func (b *backend) dropConfig() {
	b.cache.dropConfig()
	b.sched.reset() // refresh_before may have changed every due time
}

// rememberRole replaces a role's in-memory entry with state that was just written.
func (b *backend) rememberRole(name string, e *cacheEntry) {
	b.cache.setRole(name, e)
	b.sched.update(name, e.state)
}

// forgetRole forgets a role's in-memory entry and what was remembered of it (last
// verify/ answer, failed detached refresh); the next use reads storage.
func (b *backend) forgetRole(name string) {
	b.cache.dropRole(name)
	b.verifies.Delete(name)
	b.reports.Delete(name)
	b.detachedFailed.Delete(name)
	b.sched.touch(name) // the next periodic run reads it again
}

package iadvize

import (
	"context"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// The cache in front of storage (cache.go): what is read from storage is kept
// only if nothing dropped it meanwhile.

// A role's entry read from storage is not cached when the role was dropped
// while storage was read (its credentials rewritten, or another node's change
// invalidated): the next read goes to storage and never serves the stale token.
func TestCacheFillDuringADropIsNotKept(t *testing.T) {
	for _, tc := range []struct {
		name string
		drop func(e *testEnv)
	}{
		{"credentials rewritten", func(e *testEnv) {
			e.mustWrite("roles/app", map[string]any{"password": "pw-rewritten"})
		}},
		{"another node rotated the token", func(e *testEnv) {
			other := newTestEnv(e.t, e.storage, e.clock)
			if _, err := other.doRotate("app"); err != nil {
				e.t.Fatalf("rotate-role on the other node: %v", err)
			}
			e.b.Invalidate(context.Background(), tokensStoragePrefix+"app")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &pausingStorage{Storage: &logical.InmemStorage{}}
			e, u := newAppEnv(t, s, issuing(24*time.Hour), "pw-fill")
			old := accessToken(t, e.mustRead("creds/app"))
			e.b.Invalidate(context.Background(), tokensStoragePrefix+"app") // the next read fills

			paused, resume := s.pauseGet(tokensStoragePrefix + "app")
			read := e.readAsync("creds/app")
			select {
			case <-paused:
			case <-time.After(waitFor):
				t.Fatal("the read did not read the token state from storage")
			}
			tc.drop(e)
			close(resume)
			awaitRead(t, read, "the read whose fill was overtaken") // may serve old: it read first
			if accessToken(t, e.mustRead("creds/app")) == old {
				t.Fatal("the entry read before the drop was cached: the next read served the old token")
			}
			u.wantCount(t, 2, "")
		})
	}
}

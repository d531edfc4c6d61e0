package iadvize

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"
)

// Row 3 of the issue: a host suspended or hibernated for 25 h resumes; Go's
// monotonic clock stopped while it slept, the wall clock did not. Expiry,
// refresh windows and backoffs are judged on wall time (README, "When the plugin
// logs in"): the token that expired an hour ago is not served.

// suspendedFor returns what time.Now returns on a host that slept for d after
// t0 was read: t0's monotonic reading with a wall clock d later. It fails the
// test if the time package keeps its readings otherwise than this relies on
// (wall and monotonic in one value, the monotonic one in the second word).
func suspendedFor(t *testing.T, t0 time.Time, d time.Duration) time.Time {
	t.Helper()
	if !strings.Contains(t0.String(), " m=") {
		t.Fatal("t0 has no monotonic reading")
	}
	woke := t0.Add(d)
	// time.Time is {wall uint64; ext int64; loc *Location}; with a monotonic
	// reading, ext holds it: give woke t0's.
	*(*int64)(unsafe.Add(unsafe.Pointer(&woke), 8)) = *(*int64)(unsafe.Add(unsafe.Pointer(&t0), 8))
	if woke.Sub(t0) != 0 || woke.Round(0).Sub(t0.Round(0)) != d {
		t.Fatalf("cannot build a suspended time: monotonic %s, wall %s apart", woke.Sub(t0), woke.Round(0).Sub(t0.Round(0)))
	}
	return woke
}

// monotonicClock returns times with monotonic readings, as time.Now does; set
// moves it.
type monotonicClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *monotonicClock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *monotonicClock) set(t time.Time) { c.mu.Lock(); c.now = t; c.mu.Unlock() }

func TestSuspendedHostNeverServesAnExpiredToken(t *testing.T) {
	u := newUpstream(t, issuing(24*time.Hour))
	t0 := time.Now()
	clock := &monotonicClock{now: t0}
	s := &logical.InmemStorage{}
	b := newBackend(clock.Now, nil)
	conf := &logical.BackendConfig{Logger: hclog.NewNullLogger(), System: &logical.StaticSystemView{}, StorageView: s}
	if err := b.Setup(context.Background(), conf); err != nil {
		t.Fatal(err)
	}
	e := &testEnv{t: t, b: b, storage: s}
	e.configure(u, nil)
	e.addRole("app", "svc@example.com", "pw-one")
	first := accessToken(t, e.mustRead("creds/app"))

	// Every time the plugin kept has no monotonic reading.
	entry := b.cache.role("app")
	for what, kept := range map[string]time.Time{"issued": entry.state.IssuedAt, "expires": entry.state.ExpiresAt, "attempt": entry.state.LastAttempt} {
		if strings.Contains(kept.String(), " m=") {
			t.Fatalf("the cached %s time keeps a monotonic reading: %s", what, kept)
		}
	}

	clock.set(suspendedFor(t, t0, 25*time.Hour))
	resp := e.mustRead("creds/app")
	if accessToken(t, resp) == first {
		t.Fatal("after 25 h asleep, the token that expired an hour ago was served")
	}
	if resp.Secret.TTL > 24*time.Hour {
		t.Fatalf("lease %s longer than the new token's life", resp.Secret.TTL)
	}
	u.wantCount(t, 2, " (a login on waking: the token had expired)")
}

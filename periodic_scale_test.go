package iadvize

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeclock"
)

// gatedUpstream issues 24-hour tokens; while gated, each login first announces
// itself on arrivals and waits until the test closes the channel it sent, so the
// test sees how many logins are in flight at once and decides how long each
// takes on the fake clock.
type gatedUpstream struct {
	*upstream
	arrivals chan chan struct{}
	gated    atomic.Bool
}

func newGatedUpstream(t *testing.T) *gatedUpstream {
	g := &gatedUpstream{arrivals: make(chan chan struct{}, 1000)}
	closed := make(chan struct{})
	issue := issuing(24 * time.Hour)
	g.upstream = newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if g.gated.Load() {
			release := make(chan struct{})
			g.arrivals <- release
			select {
			case <-release:
			case <-closed:
			case <-r.Context().Done():
				return
			}
		}
		issue(w, r)
	})
	t.Cleanup(func() { close(closed) }) // before the server closes
	return g
}

// driveBatches answers the gated logins of a periodic run in batches: it waits
// until batch(done) logins are in flight, advances the clock by took, and lets
// them all answer. It stops when batch returns 0, and returns the logins answered.
// It fails the test if fewer logins than expected are in flight at once, or if
// the run ends early.
func driveBatches(t *testing.T, g *gatedUpstream, clock *fakeclock.Clock, runDone <-chan error,
	took time.Duration, batch func(done int) int) int {
	t.Helper()
	done := 0
	for want := batch(0); want > 0; want = batch(done) {
		var held []chan struct{}
		for len(held) < want {
			select {
			case r := <-g.arrivals:
				held = append(held, r)
			case err := <-runDone:
				t.Fatalf("the run ended (%v) after %d logins, with %d of %d in flight", err, done, len(held), want)
			case <-time.After(waitFor):
				t.Fatalf("after %d logins, %d in flight at once, want %d", done, len(held), want)
			}
		}
		clock.Advance(took)
		for _, r := range held {
			close(r)
		}
		done += want
	}
	return done
}

// awaitRunEnd waits for a periodic run to end, failing if another login starts.
func awaitRunEnd(t *testing.T, g *gatedUpstream, runDone <-chan error) {
	t.Helper()
	select {
	case err := <-runDone:
		if err != nil {
			t.Fatalf("periodic run: %v", err)
		}
	case r := <-g.arrivals:
		close(r)
		t.Fatal("the run started a login it should not have")
	case <-time.After(waitFor):
		t.Fatal("the periodic run did not end")
	}
}

// startRun runs the periodic function in the background.
func (e *testEnv) startRun() <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := e.b.HandleRequest(context.Background(), &logical.Request{
			Operation: logical.RollbackOperation, Storage: e.storage,
		})
		done <- err
	}()
	return done
}

// dueRoles creates n roles of distinct users with 24-hour tokens issued now, and
// moves the clock to when the background refresh is due for all of them.
func dueRoles(t *testing.T, e *testEnv, n int) {
	t.Helper()
	e.mustWrite("config", map[string]any{"logins_per_minute": 1_000_000, "user_logins_per_minute": 10})
	for i := range n {
		name := fmt.Sprintf("r%04d", i)
		e.addRole(name, name+"@example.com", "pw-"+name)
		e.mustRead("creds/" + name)
	}
	e.clock.Advance(23*time.Hour - backgroundLead)
}

// 200 due roles, an upstream that takes 2 s a login: one run refreshes the
// minute's budget (100), 8 logins at a time, in 26 s of its 45 s; the next run
// refreshes the rest.
func TestPeriodic200DueRolesSlowUpstreamOneRunRefreshesTheBudget(t *testing.T) {
	g := newGatedUpstream(t)
	e := newTestEnv(t, nil, nil)
	e.configure(g.upstream, nil)
	dueRoles(t, e, 200)
	e.mustWrite("config", map[string]any{"logins_per_minute": 100})
	before := g.count()

	g.gated.Store(true)
	start := e.clock.Now()
	run := e.startRun()
	n := driveBatches(t, g, e.clock, run, 2*time.Second, func(done int) int { return min(periodicConcurrency, 100-done) })
	awaitRunEnd(t, g, run)
	if n != 100 || g.count()-before != 100 {
		t.Fatalf("one run made %d logins (%d answered), want 100 (logins_per_minute)", g.count()-before, n)
	}
	if took := e.clock.Now().Sub(start); took != 26*time.Second {
		t.Fatalf("the run took %v of fake time, want 26s (13 rounds of 2 s)", took)
	}
	if got := e.b.sched.len(); got != 200 {
		t.Fatalf("schedule holds %d roles, want 200 (100 refreshed, 100 put back)", got)
	}

	// The next run, once the budget has room again, refreshes the other 100.
	g.gated.Store(false)
	e.clock.Advance(time.Minute)
	e.runPeriodic()
	if got := g.count() - before; got != 200 {
		t.Fatalf("two runs made %d logins, want 200 (every role once)", got)
	}
}

// A run starts no login once it has run periodicRunBudget: with logins that take
// 20 s, it starts three rounds of 8 (at 0, 20 and 40 s) and puts the rest back.
func TestPeriodicRunStopsStartingLoginsAfterItsDeadline(t *testing.T) {
	g := newGatedUpstream(t)
	e := newTestEnv(t, nil, nil)
	e.configure(g.upstream, nil)
	dueRoles(t, e, 50)
	before := g.count()

	g.gated.Store(true)
	run := e.startRun()
	n := driveBatches(t, g, e.clock, run, 20*time.Second, func(done int) int {
		if done < 3*periodicConcurrency {
			return periodicConcurrency
		}
		return 0
	})
	awaitRunEnd(t, g, run)
	if got := g.count() - before; got != 24 || n != 24 {
		t.Fatalf("the run made %d logins, want 24 (three rounds before its %s)", got, periodicRunBudget)
	}
	if got := e.b.sched.len(); got != 50 {
		t.Fatalf("schedule holds %d roles, want 50", got)
	}
}

// countingStorage counts the reads of a storage.
type countingStorage struct {
	logical.Storage
	gets, lists atomic.Int64
}

func (s *countingStorage) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	s.gets.Add(1)
	return s.Storage.Get(ctx, key)
}

func (s *countingStorage) List(ctx context.Context, prefix string) ([]string, error) {
	s.lists.Add(1)
	return s.Storage.List(ctx, prefix)
}

// 10,000 roles with fresh tokens: after the run that builds the schedule (after
// a start, as here), a run reads nothing from storage, not even the role list;
// when 10 of them are due, a run reads only what their logins need.
func TestPeriodic10000RolesNoneDueReadNothingFromStorage(t *testing.T) {
	u := newUpstream(t, issuing(24*time.Hour))
	clock := fakeclock.New()
	s := &countingStorage{Storage: &logical.InmemStorage{}}
	const roles = 10_000
	for i := range roles {
		name := fmt.Sprintf("r%05d", i)
		issued := clock.Now()
		if i%1000 == 0 {
			issued = issued.Add(-time.Hour) // 10 roles due an hour before the rest
		}
		putLoggedInRole(t, s, tokenOrigin(u.tokenURL()), name, "tok-"+name, issued)
	}
	e := newTestEnv(t, s, clock) // a start over existing storage
	e.configure(u, nil)
	clock.Advance(time.Minute)
	e.runPeriodic() // builds the schedule
	if got := e.b.sched.len(); got != roles {
		t.Fatalf("schedule holds %d roles, want %d", got, roles)
	}
	for range 3 {
		clock.Advance(time.Minute)
		gets, lists := s.gets.Load(), s.lists.Load()
		e.runPeriodic()
		if g, l := s.gets.Load()-gets, s.lists.Load()-lists; g != 0 || l != 0 {
			t.Fatalf("a run with %d roles, none due, made %d storage reads and %d lists, want none", roles, g, l)
		}
	}
	u.wantCount(t, 0, "")
	clock.Advance(22*time.Hour - backgroundLead - 4*time.Minute) // the 10 are due
	gets, lists := s.gets.Load(), s.lists.Load()
	e.runPeriodic()
	u.wantCount(t, 10, "")
	// At most four reads per login (the role and its token state, which the
	// build does not cache; the role again under its lock, and its state when a
	// concurrent login's change kept the fill out of the cache), and once the
	// mount's stored budget for the configured host (at most 2 reads).
	if g, l := s.gets.Load()-gets, s.lists.Load()-lists; g > 42 || l != 0 {
		t.Fatalf("a run with 10 roles due made %d storage reads and %d lists, want at most 42 and none", g, l)
	}
}

// The schedule follows what happens between runs: a role first read after the
// schedule was built is refreshed when due; new credentials or a delete take a
// role out; a changed refresh_before moves every due time.
func TestPeriodicScheduleFollowsRoleChangesAndConfig(t *testing.T) {
	u := newUpstream(t, issuing(24*time.Hour))
	e := newTestEnv(t, nil, nil)
	e.configure(u, nil)
	e.runPeriodic() // builds an empty schedule
	e.addRole("late", "late@example.com", "pw")
	e.addRole("gone", "gone@example.com", "pw")
	e.addRole("moved", "moved@example.com", "pw")
	for _, name := range []string{"late", "gone", "moved"} {
		e.mustRead("creds/" + name)
	}
	e.mustWrite("roles/moved", map[string]any{"password": "pw-two"}) // token discarded
	if _, err := e.do(logical.DeleteOperation, "roles/gone", nil); err != nil {
		t.Fatal(err)
	}
	e.runPeriodic()
	if got := e.b.sched.len(); got != 1 {
		t.Fatalf("schedule holds %d roles, want 1 (late)", got)
	}
	u.wantCount(t, 3, "")
	e.mustWrite("config", map[string]any{"refresh_before": "2h"})
	e.clock.Advance(22*time.Hour - backgroundLead)
	e.runPeriodic()
	u.wantCount(t, 4, " (late, due under the new refresh_before)")
}

// A run that finds the host's budget spent waits for it to have room, if that
// comes before the run's end: logins spent 30 s before the run free a slot 31 s
// into it, and the run uses the whole budget then (a run that stopped would find
// it spent again a minute later, and the next one half of it).
func TestPeriodicRunWaitsForTheHostBudgetWithinItsDeadline(t *testing.T) {
	u := newUpstream(t, issuing(24*time.Hour))
	e := newTestEnv(t, nil, nil)
	e.configure(u, nil)
	dueRoles(t, e, 20)
	for i := range 10 {
		e.addRole(fmt.Sprintf("x%d", i), fmt.Sprintf("x%d@example.com", i), "pw")
	}
	e.mustWrite("config", map[string]any{"logins_per_minute": 10})
	e.clock.Advance(-30 * time.Second) // 30 s before the roles are due
	for i := range 10 {
		e.mustRead(fmt.Sprintf("creds/x%d", i)) // spends the budget
	}
	e.clock.Advance(30 * time.Second)
	before, start := u.count(), e.clock.Now()
	e.runPeriodic()
	if got := u.count() - before; got != 10 {
		t.Fatalf("the run made %d logins, want 10 (the budget, once it had room)", got)
	}
	if waited := e.clock.Now().Sub(start); waited != 31*time.Second {
		t.Fatalf("the run waited %v for the budget, want 31s", waited)
	}
}

// clockedStorage advances a fake clock on every read of a token state, as a
// slow storage makes a schedule build take the run's time.
type clockedStorage struct {
	logical.Storage
	clock *fakeclock.Clock
	step  time.Duration
	reads atomic.Int64
}

func (s *clockedStorage) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	if strings.HasPrefix(key, tokensStoragePrefix) {
		s.reads.Add(1)
		s.clock.Advance(s.step)
	}
	return s.Storage.Get(ctx, key)
}

// A schedule build that a run's end cuts short (reading storage took the run's
// 45 s) keeps what it read: the next run goes on from there, reading each token
// state once in all, and the schedule is built within two runs with no login.
func TestScheduleBuildCutShortGoesOnInTheNextRun(t *testing.T) {
	u := newUpstream(t, issuing(24*time.Hour))
	clock := fakeclock.New()
	s := &clockedStorage{Storage: &logical.InmemStorage{}, clock: clock, step: time.Second}
	const roles = 100
	for i := range roles {
		name := fmt.Sprintf("r%03d", i)
		putLoggedInRole(t, s.Storage, tokenOrigin(u.tokenURL()), name, "tok-"+name, clock.Now())
	}
	e := newTestEnv(t, s, clock)
	e.configure(u, nil)
	e.runPeriodic()
	first := s.reads.Load()
	if first >= roles || e.b.sched.len() != 0 {
		t.Fatalf("the first run read %d of %d token states and scheduled %d: the run's end did not cut it short", first, roles, e.b.sched.len())
	}
	e.runPeriodic()
	if got := s.reads.Load(); got != roles {
		t.Fatalf("the two runs read %d token states, want each of the %d once", got, roles)
	}
	if n := e.b.sched.len(); n != roles {
		t.Fatalf("schedule holds %d roles after the second run, want %d", n, roles)
	}
	u.wantCount(t, 0, "")
}

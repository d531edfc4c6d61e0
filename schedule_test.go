package iadvize

import (
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeclock"
)

// The background refresh's schedule (schedule.go): built once, then followed
// from memory, so a run's cost grows with the roles due, not with all roles.

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

// A schedule build that a run's end cuts short (reading storage took the run's
// 45 s) keeps what it read: the next run goes on from there, reading each token
// state once in all, and the schedule is built with no login.
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
	// Each run reads for periodicRunBudget (45 s here, a second a read, 8 at a
	// time): the build needs a few runs, each going on where the last stopped.
	runs := 1
	for ; e.b.sched.len() == 0 && runs < 10; runs++ {
		e.runPeriodic()
	}
	if got := s.reads.Load(); got != roles {
		t.Fatalf("%d runs read %d token states, want each of the %d once", runs, got, roles)
	}
	if n := e.b.sched.len(); n != roles {
		t.Fatalf("schedule holds %d roles after %d runs, want %d", n, runs, roles)
	}
	u.wantCount(t, 0, "")
}

package iadvize

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeclock"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
)

// The background refresh (periodic.go): one login per rotation period, no read
// waiting; logins spread under the budgets; a run bounded in time and in the
// logins it has in flight.

// A simulated week: 50 roles with 24-hour tokens, the periodic function every
// minute as Vault runs it, every role read every few minutes. Each role logs in
// once per rotation period, every login after the first comes from the
// background refresh (no read ever waits on a login), and upstream never answers
// 429.
func TestPeriodicWeekOfBackgroundRefreshOneLoginPerRotationPeriodNoReadWaits(t *testing.T) {
	e, fake := newFakeEnv(t, fakeiadvize.Options{TokenLifetime: 24 * time.Hour}) // refresh_before 1h by default
	clock := e.clock
	const roles = 50
	names := addFakeRoles(e, fake, "svc", roles)
	ctx := context.Background()
	periodicReq := &logical.Request{Storage: e.storage}
	logins := func() int { return len(fake.LoginTimes()) }

	// The expected rotation: a token is refreshed in the background once it is
	// within refresh_before (at most half its life) plus the background lead of
	// expiry; the periodic function runs on a one-minute grid.
	const lifetime, refreshBefore = 24 * time.Hour, time.Hour
	period := lifetime - min(refreshBefore, lifetime/2) - min(backgroundLead, lifetime/10)
	period = (period + time.Minute - 1).Truncate(time.Minute) // the next run at or after it
	const week = 7 * 24 * time.Hour
	wantPerRole := 1 + int(week/period)
	t.Logf("rotation every %v: %d logins per role in a week", period, wantPerRole)

	for _, name := range names {
		e.mustRead("creds/" + name)
	}
	if got := logins(); got != roles {
		t.Fatalf("first reads made %d logins, want %d", got, roles)
	}
	var readLogins, backgroundLogins int
	const readEvery = 10 // minutes; and every minute near each rotation (below)
	for minute := 1; minute <= int(week/time.Minute); minute++ {
		clock.Advance(time.Minute)
		n := logins()
		if err := e.b.periodicRefresh(ctx, periodicReq); err != nil {
			t.Fatalf("periodic function at minute %d: %v", minute, err)
		}
		backgroundLogins += logins() - n
		// Every few minutes, and every minute around each rotation.
		if at := minute % int(period/time.Minute); minute%readEvery != 0 && at > 3 && at < int(period/time.Minute)-3 {
			continue
		}
		n = logins()
		for _, name := range names {
			resp, err := e.read("creds/" + name)
			if err != nil || resp == nil || resp.IsError() || len(resp.Warnings) != 0 {
				t.Fatalf("read %s at minute %d failed or warned: %v", name, minute, err)
			}
		}
		readLogins += logins() - n
	}

	stats := fake.Stats()
	if readLogins != 0 {
		t.Fatalf("%d logins happened during reads after the first; the background refresh should make them all", readLogins)
	}
	if backgroundLogins != roles*(wantPerRole-1) {
		t.Fatalf("background logins = %d, want %d (%d per role)", backgroundLogins, roles*(wantPerRole-1), wantPerRole-1)
	}
	for _, name := range names {
		user := name + "@example.com"
		if got := stats.UserAttempts[user]; got != wantPerRole {
			t.Fatalf("%s logged in %d times in a week, want %d", user, got, wantPerRole)
		}
	}
	if stats.RateLimited != 0 || stats.InjectedRateLimited != 0 || stats.FailedCredentials != 0 {
		t.Fatalf("upstream refused logins: %d rate limited, %d failed credentials",
			stats.RateLimited+stats.InjectedRateLimited, stats.FailedCredentials)
	}
}

// 150 roles whose tokens enter the refresh window at once, logins_per_minute
// 100: the first periodic run logs in 100 and the following runs the rest, never
// more than 100 in any minute, and all before the tokens enter their refresh
// window, so no read waits on a login. The periodic function runs on its own
// one-minute grid, half a minute off the moment the tokens were issued.
func TestPeriodicRefreshSpreadsLoginsUnderMountBudget(t *testing.T) {
	clock := fakeclock.New()
	u := newUpstreamOn(t, clock, issuing(24*time.Hour))
	e := newTestEnv(t, nil, clock)
	// A generous budget to get 150 tokens issued in the same second ...
	e.configure(u, map[string]any{"logins_per_minute": 1000})
	const roles = 150
	for i := range roles {
		name := fmt.Sprintf("role-%03d", i)
		e.addRole(name, name+"@example.com", "pw-"+name)
		e.mustRead("creds/" + name)
	}
	// ... then the real one.
	e.mustWrite("config", map[string]any{"logins_per_minute": 100})
	issued := clock.Now()
	refreshAt := issued.Add(23 * time.Hour)
	setup := len(u.LoginTimes())

	readAll := func() {
		t.Helper()
		n := u.count()
		for i := range roles {
			resp := e.mustRead(fmt.Sprintf("creds/role-%03d", i))
			if len(resp.Warnings) != 0 {
				t.Fatalf("read at %s warned: %q", rfc3339At(clock.Now()), resp.Warnings)
			}
		}
		if u.count() != n {
			t.Fatalf("reads at %s made %d logins; the background refresh should have made them",
				rfc3339At(clock.Now()), u.count()-n)
		}
	}
	// Quiet until shortly before the background lead; the periodic grid is 30 s
	// off the issue time.
	clock.Advance(23*time.Hour - backgroundLead - 2*time.Minute - 30*time.Second)
	var perRun []int
	for clock.Now().Before(refreshAt.Add(5 * time.Minute)) {
		clock.Advance(30 * time.Second)
		readAll() // between two runs
		clock.Advance(30 * time.Second)
		n := u.count()
		e.runPeriodic()
		if ran := int(u.count() - n); ran > 0 || len(perRun) > 0 {
			perRun = append(perRun, ran)
		}
		readAll()
	}
	t.Logf("background logins per run, from the first: %v", perRun)

	times := u.LoginTimes()[setup:]
	if len(times) != roles {
		t.Fatalf("background logins = %d, want %d (each role once)", len(times), roles)
	}
	if len(perRun) == 0 || perRun[0] != 100 {
		t.Fatalf("first background run logged in %v, want 100 (logins_per_minute)", perRun)
	}
	if got := fakeiadvize.MaxInWindow(times, time.Minute); got > 100 {
		t.Fatalf("%d background logins within a minute, logins_per_minute is 100", got)
	}
	for _, at := range times {
		if !at.Before(refreshAt) {
			t.Fatalf("a background login at %s, not before the tokens entered their refresh window at %s",
				rfc3339At(at), rfc3339At(refreshAt))
		}
	}
}

// The periodic function logs in only for roles with a token that nears its
// refresh window: never for a role that was never read, nor for fresh tokens.
func TestPeriodicRefreshSkipsFreshTokensAndRolesNeverRead(t *testing.T) {
	u := newUpstream(t, issuing(24*time.Hour))
	e := newTestEnv(t, nil, nil)
	e.configure(u, nil)
	e.addRole("used", "used@example.com", "pw-used")
	e.addRole("idle", "idle@example.com", "pw-idle")
	first := accessToken(t, e.mustRead("creds/used"))

	for range 60 {
		e.clock.Advance(time.Minute)
		e.runPeriodic()
	}
	if got := u.count(); got != 1 {
		t.Fatalf("logins = %d, want 1 (fresh token, idle role)", got)
	}
	// Just before the background lead: nothing; at it: one login.
	e.clock.Advance(23*time.Hour - backgroundLead - time.Hour - time.Second)
	e.runPeriodic()
	if got := u.count(); got != 1 {
		t.Fatalf("logins before the background lead = %d, want 1", got)
	}
	e.clock.Advance(time.Second)
	e.runPeriodic()
	if got := u.count(); got != 2 {
		t.Fatalf("logins at the background lead = %d, want 2", got)
	}
	if accessToken(t, e.mustRead("creds/used")) == first {
		t.Fatalf("the background refresh did not replace the token")
	}
	if st := e.mustRead("status/idle").Data; st["has_token"] != false || st["last_attempt"] != "" {
		t.Fatalf("idle role was logged in by the background refresh")
	}
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

package iadvize

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeclock"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
)

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
	first := tokenIn(t, e.mustRead("creds/used"))

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
	if tokenIn(t, e.mustRead("creds/used")) == first {
		t.Fatalf("the background refresh did not replace the token")
	}
	if st := e.mustRead("status/idle").Data; st["has_token"] != false || st["last_attempt"] != "" {
		t.Fatalf("idle role was logged in by the background refresh")
	}
}

// On a performance standby the periodic function does nothing, and rotate-role
// and verify answer logical.ErrReadOnly (Vault forwards them) without calling
// upstream. A fresh token is still served locally.
func TestPeriodicRotateVerifyDoNothingUpstreamOnPerformanceStandby(t *testing.T) {
	e, fake := newFakeAppEnv(t, "pw-standby")
	clock := e.clock
	tok := tokenIn(t, e.mustRead("creds/app"))
	clock.Advance(23*time.Hour - backgroundLead) // due for the background refresh

	e.system.ReplicationStateVal = consts.ReplicationPerformanceStandby
	e.runPeriodic()
	if got := fake.Stats().LoginAttempts; got != 1 {
		t.Fatalf("periodic function on a standby made %d logins, want none", got-1)
	}
	_, err := e.do(logical.UpdateOperation, "rotate-role/app", nil)
	if err != logical.ErrReadOnly {
		t.Fatalf("rotate-role on a standby: err = %v, want logical.ErrReadOnly", err)
	}
	_, err = e.read("verify/app")
	if err != logical.ErrReadOnly {
		t.Fatalf("verify on a standby: err = %v, want logical.ErrReadOnly", err)
	}
	if tokenIn(t, e.mustRead("creds/app")) != tok {
		t.Fatalf("the standby did not serve the cached token")
	}
	// Inside the refresh window, the token is still served locally and no login
	// starts; a read with no usable token left is forwarded.
	clock.Advance(time.Hour)
	if tokenIn(t, e.mustRead("creds/app")) != tok {
		t.Fatalf("the standby did not serve the cached token inside its refresh window")
	}
	e.settle()
	clock.Advance(3 * time.Minute) // the token expires
	if _, err := e.read("creds/app"); err != logical.ErrReadOnly {
		t.Fatalf("read needing a login on a standby: err = %v, want logical.ErrReadOnly", err)
	}
	if s := fake.Stats(); s.LoginAttempts != 1 || s.VerifyCalls != 0 {
		t.Fatalf("standby called upstream: %d logins, %d verify calls", s.LoginAttempts-1, s.VerifyCalls)
	}

	// Back on the active node, the periodic function does its job.
	e.system.ReplicationStateVal = 0
	clock.Advance(-time.Hour - 3*time.Minute)
	e.runPeriodic()
	if got := fake.Stats().LoginAttempts; got != 2 {
		t.Fatalf("periodic function on the active node made %d logins, want 1", got-1)
	}
	_ = http.StatusOK
}

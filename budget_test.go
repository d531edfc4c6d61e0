package iadvize

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeclock"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
)

// Login budgets (budget.go): sliding windows per principal and per token host,
// shared by the mounts of one plugin process.

func TestUpstreamHostIsLowerCaseHostAndPort(t *testing.T) {
	for _, tc := range []struct{ a, b string }{
		{"https://API.iadvize.com/oauth2/token", "https://api.iadvize.com:443/other"},
		{"https://api.iadvize.com./oauth2/token", "https://api.iadvize.com/oauth2/token"},
		{"http://LOCALHOST/token", "http://localhost:80/token"},
	} {
		if upstreamHost(tc.a) != upstreamHost(tc.b) {
			t.Errorf("%s and %s are one host: %q != %q", tc.a, tc.b, upstreamHost(tc.a), upstreamHost(tc.b))
		}
	}
	for _, tc := range []struct{ a, b string }{
		{"http://127.0.0.1:8200/token", "http://127.0.0.1:8201/token"},
		{"https://api.iadvize.com/oauth2/token", "https://api-eu.iadvize.com/oauth2/token"},
		{"http://example.com/token", "https://example.com/token"},
	} {
		if upstreamHost(tc.a) == upstreamHost(tc.b) {
			t.Errorf("%s and %s are different hosts, both %q", tc.a, tc.b, upstreamHost(tc.a))
		}
	}
}

// The limiter alone: "at most N in any minute" is a sliding window, not a token
// bucket that would let 2N through around a minute boundary.
func TestLimitsSlidingWindowNeverAllowsMoreThanLimitInAnyMinute(t *testing.T) {
	l := newHostBudget()
	start := fakeclock.New().Now()
	var granted []time.Time
	// Try a login for one principal every 100 ms for ten minutes.
	for now := start; now.Before(start.Add(10 * time.Minute)); now = now.Add(100 * time.Millisecond) {
		if _, _, ok := l.reserve("user:a", now, 10, 100); ok {
			granted = append(granted, now)
		}
	}
	if got := fakeiadvize.MaxInWindow(granted, time.Minute); got > 10 {
		t.Fatalf("%d logins granted within one minute, limit 10", got)
	}
	if len(granted) < 90 {
		t.Fatalf("only %d logins granted in ten minutes at 10 a minute: the budget is not reused", len(granted))
	}
}

func TestLimitsOverBudgetReturnsTheEarliestFreeTimeAndTakesNothing(t *testing.T) {
	l := newHostBudget()
	t0 := fakeclock.New().Now()
	for i := range 3 {
		if _, _, ok := l.reserve("user:a", t0.Add(time.Duration(i)*time.Second), 3, 100); !ok {
			t.Fatalf("login %d refused within the budget", i+1)
		}
	}
	at, hostFull, ok := l.reserve("user:a", t0.Add(10*time.Second), 3, 100)
	if ok || hostFull {
		t.Fatalf("4th login: ok=%v hostFull=%v, want refused by the user budget", ok, hostFull)
	}
	if want := t0.Add(budgetWindow); !at.Equal(want) || at.Sub(t0) < time.Minute {
		t.Fatalf("retry at %v, want %v (a minute after the oldest login, at least)", at, want)
	}
	// A refused login takes nothing: the next one is free exactly then.
	if _, _, ok := l.reserve("user:a", at, 3, 100); !ok {
		t.Fatalf("login refused at the announced retry time")
	}
	// Another principal is bound by the total budget only.
	if _, _, ok := l.reserve("user:b", t0.Add(10*time.Second), 3, 100); !ok {
		t.Fatalf("another user's login refused")
	}
	// An upstream 429 block holds whatever the window says.
	l.block("user:c", t0.Add(time.Hour))
	if at, _, ok := l.reserve("user:c", t0.Add(time.Minute), 3, 100); ok || !at.Equal(t0.Add(time.Hour)) {
		t.Fatalf("blocked principal: ok=%v retry at %v, want refused until the block ends", ok, at)
	}
}

// Reads of one username over five minutes with short tokens: logins never exceed
// user_logins_per_minute, and over budget no upstream call happens.
func TestLimitsUserLoginsPerMinuteNeverExceededAndNoCallOverBudget(t *testing.T) {
	clock := fakeclock.New()
	u := newUpstreamOn(t, clock, issuing(10*time.Second))
	e := newTestEnv(t, nil, clock)
	e.configure(u, map[string]any{"user_logins_per_minute": 3})
	e.addRole("app", "svc@example.com", "pw-budget")
	e.addRole("twin", "svc@example.com", "pw-budget") // same username, same budget

	overBudget := 0
	for i := range 300 {
		for _, name := range []string{"app", "twin"} {
			before := u.count()
			resp, err := e.read("creds/" + name)
			e.settle() // a login the read started on its own reaches upstream before the clock moves
			if u.count() != before {
				continue // a login within the budget
			}
			if err != nil {
				// No token left and no login allowed: 429 with a retry time.
				expectCodedError(t, err, http.StatusTooManyRequests, fmt.Sprintf("role %q", name), "login budget", "not before")
				overBudget++
			} else if resp.IsError() {
				t.Fatalf("read %s at %ds: error response %v", name, i, resp.Error())
			}
		}
		clock.Advance(time.Second)
	}
	times := u.LoginTimes()
	if got := fakeiadvize.MaxInWindow(times, time.Minute); got > 3 {
		t.Fatalf("%d logins for one username within a minute, user_logins_per_minute is 3", got)
	}
	if len(times) < 12 {
		t.Fatalf("%d logins in five minutes: the budget of 3 a minute is not used", len(times))
	}
	if overBudget == 0 {
		t.Fatalf("no read was refused over budget: the test did not exercise the limit")
	}
}

// Many users' reads over five minutes with short tokens: logins never exceed
// logins_per_minute for the mount.
func TestLimitsMountLoginsPerMinuteNeverExceededAndNoCallOverBudget(t *testing.T) {
	clock := fakeclock.New()
	u := newUpstreamOn(t, clock, issuing(20*time.Second))
	e := newTestEnv(t, nil, clock)
	e.configure(u, map[string]any{"logins_per_minute": 5})
	for i := range 12 {
		e.addRole(fmt.Sprintf("r%02d", i), fmt.Sprintf("user-%02d@example.com", i), "pw-mount")
	}
	refused := 0
	for range 60 {
		for i := range 12 {
			name := fmt.Sprintf("r%02d", i)
			before := u.count()
			_, err := e.read("creds/" + name)
			if u.count() == before && err != nil {
				expectCodedError(t, err, http.StatusTooManyRequests, fmt.Sprintf("role %q", name), "login budget of the token host", "counting every mount", "not before")
				refused++
			}
		}
		clock.Advance(5 * time.Second)
	}
	times := u.LoginTimes()
	if got := fakeiadvize.MaxInWindow(times, time.Minute); got > 5 {
		t.Fatalf("%d logins within a minute, logins_per_minute is 5", got)
	}
	if len(times) < 20 || refused == 0 {
		t.Fatalf("%d logins, %d refused reads: the test did not exercise the mount budget", len(times), refused)
	}
}

// 130 roles of distinct users read cold at once against the fake upstream, which
// enforces iAdvize's 100 logins a minute per IP: the plugin sends at most 100 in
// any minute, upstream never answers 429, the other reads get a 429 with a retry
// time, and every role is served within two minutes.
func TestLimits130ColdRolesAtOnceStayUnderUpstreamIPLimit(t *testing.T) {
	e, fake := newFakeEnv(t, fakeiadvize.Options{})
	clock := e.clock
	const roles = 130
	names := addFakeRoles(e, fake, "role", roles)
	start := clock.Now()

	paths := make([]string, roles)
	for i, name := range names {
		paths[i] = "creds/" + name
	}
	resps, errs := e.readAll(paths)

	var failed []int
	for i := range roles {
		if resp := resps[i]; errs[i] == nil && resp != nil && !resp.IsError() && resp.Data["access_token"] != "" {
			continue // served
		}
		expectCodedError(t, errs[i], http.StatusTooManyRequests, fmt.Sprintf("role %q", names[i]), "not before")
		failed = append(failed, i)
	}
	if len(failed) != roles-100 {
		t.Fatalf("%d cold reads served at once, want 100 (logins_per_minute)", roles-len(failed))
	}

	// Read the failed ones again every 10 s of fake time.
	for len(failed) > 0 {
		clock.Advance(10 * time.Second)
		if clock.Now().Sub(start) > 2*time.Minute {
			t.Fatalf("%d roles still not served two minutes after the cold start", len(failed))
		}
		var still []int
		for _, i := range failed {
			resp, err := e.read("creds/" + names[i])
			if err != nil {
				expectCodedError(t, err, http.StatusTooManyRequests, fmt.Sprintf("role %q", names[i]), "not before")
				still = append(still, i)
				continue
			}
			accessToken(t, resp)
		}
		failed = still
	}

	stats := fake.Stats()
	if stats.RateLimited != 0 || stats.InjectedRateLimited != 0 {
		t.Fatalf("upstream answered %d logins with 429", stats.RateLimited+stats.InjectedRateLimited)
	}
	if got := fake.MaxAttemptsInWindow(time.Minute); got > 100 {
		t.Fatalf("upstream saw %d logins within a minute, limit 100", got)
	}
	if got := fakeiadvize.MaxInWindow(fake.LoginTimes(), time.Minute); got > 100 {
		t.Fatalf("%d logins within a minute, limit 100", got)
	}
	if stats.LoginAttempts != roles || stats.LoginSuccesses != roles {
		t.Fatalf("upstream login attempts = %d, successes = %d, want %d each", stats.LoginAttempts, stats.LoginSuccesses, roles)
	}
}

// ---- mounts of one process ----

// twoMounts builds two mounts of one plugin process (separate storage, one set of
// budgets) against the same upstream.
func twoMounts(t *testing.T, clock *fakeclock.Clock, base string, extra map[string]any) (a, b *testEnv, limits *Budgets) {
	t.Helper()
	limits = NewBudgets()
	a = newTestEnvWith(t, nil, clock, limits)
	b = newTestEnvWith(t, nil, clock, limits)
	a.configureBase(base, extra)
	b.configureBase(base, extra)
	return a, b, limits
}

// Two mounts, 75 cold roles each (distinct users), one upstream that enforces
// iAdvize's 100 logins a minute per IP: together they send at most 100 in any
// minute, upstream never answers 429, and every role is served within two
// minutes.
func TestLimitsTwoMountsOverOneUpstreamNeverExceedTheSharedBudget(t *testing.T) {
	clock := fakeclock.New()
	fake := startFakeIAdvize(t, clock, fakeiadvize.Options{})
	a, b, _ := twoMounts(t, clock, fake.url, nil)
	type role struct {
		env  *testEnv
		name string
	}
	var roles []role
	for m, env := range []*testEnv{a, b} {
		for i := range 75 {
			name := fmt.Sprintf("r%02d", i)
			user, pw := fmt.Sprintf("m%d-user-%02d@example.com", m, i), fmt.Sprintf("pw-%d-%02d", m, i)
			fake.AddUser(user, pw)
			env.addRole(name, user, pw)
			roles = append(roles, role{env, name})
		}
	}
	start := clock.Now()

	served := make([]bool, len(roles))
	var wg sync.WaitGroup
	for i, r := range roles {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := r.env.read("creds/" + r.name)
			served[i] = err == nil && resp != nil && !resp.IsError()
			if !served[i] && codedStatus(err) != http.StatusTooManyRequests {
				t.Errorf("cold read of %s: %v, want a token or a 429", r.name, err)
			}
		}()
	}
	wg.Wait()
	n := 0
	for _, ok := range served {
		if ok {
			n++
		}
	}
	if n != 100 {
		t.Fatalf("%d cold reads served at once over two mounts, want 100 (the host's logins_per_minute)", n)
	}
	for n < len(roles) {
		clock.Advance(10 * time.Second)
		if clock.Now().Sub(start) > 2*time.Minute {
			t.Fatalf("%d roles still not served two minutes after the cold start", len(roles)-n)
		}
		for i, r := range roles {
			if !served[i] {
				if _, err := r.env.read("creds/" + r.name); err == nil {
					served[i] = true
					n++
				}
			}
		}
	}
	st := fake.Stats()
	if st.RateLimited != 0 || st.InjectedRateLimited != 0 {
		t.Fatalf("upstream answered %d logins with 429", st.RateLimited+st.InjectedRateLimited)
	}
	if got := fake.MaxAttemptsInWindow(time.Minute); got > 100 {
		t.Fatalf("upstream saw %d logins within a minute from the two mounts, limit 100", got)
	}
	if st.LoginAttempts != len(roles) {
		t.Fatalf("upstream login attempts = %d, want %d", st.LoginAttempts, len(roles))
	}
}

// One username in two mounts has one window: user_logins_per_minute holds over
// both, and a 429 for that user in one mount holds in the other.
func TestLimitsSameUsernameInTwoMountsSharesOneWindow(t *testing.T) {
	clock := fakeclock.New()
	u := newUpstream(t, issuing(24*time.Hour))
	a, b, _ := twoMounts(t, clock, u.url, map[string]any{"user_logins_per_minute": 3})
	a.addRole("app", "shared@example.com", "pw")
	b.addRole("app", "shared@example.com", "pw")
	rotate := func(e *testEnv) error {
		_, err := e.doRotate("app")
		return err
	}
	for i, e := range []*testEnv{a, b, a} {
		if err := rotate(e); err != nil {
			t.Fatalf("login %d: %v", i+1, err)
		}
	}
	expectCodedError(t, rotate(b), http.StatusTooManyRequests, "login budget of username", "counting every mount")
	u.wantCount(t, 3, "")

	u.setHandler(rateLimited(func() string { return "300" }))
	clock.Advance(2 * time.Minute)
	expectCodedError(t, rotate(a), http.StatusTooManyRequests, "429")
	u.setHandler(issuing(24 * time.Hour))
	clock.Advance(time.Minute)
	expectCodedError(t, rotate(b), http.StatusTooManyRequests, "429")
	u.wantCount(t, 4, ": the other mount logged in during the user's 429 block")
}

// Mounts that log in to different hosts do not share: each host has its budget.
func TestLimitsDifferentHostsDoNotShare(t *testing.T) {
	clock := fakeclock.New()
	u1, u2 := newUpstream(t, issuing(24*time.Hour)), newUpstream(t, issuing(24*time.Hour))
	limits := NewBudgets()
	a, b := newTestEnvWith(t, nil, clock, limits), newTestEnvWith(t, nil, clock, limits)
	a.configure(u1, map[string]any{"logins_per_minute": 5})
	b.configure(u2, map[string]any{"logins_per_minute": 5})
	for i := range 6 {
		a.addRole(fmt.Sprintf("r%d", i), fmt.Sprintf("a%d@example.com", i), "pw")
		b.addRole(fmt.Sprintf("r%d", i), fmt.Sprintf("b%d@example.com", i), "pw")
	}
	for i := range 5 {
		a.mustRead(fmt.Sprintf("creds/r%d", i))
		b.mustRead(fmt.Sprintf("creds/r%d", i))
	}
	for _, e := range []*testEnv{a, b} {
		_, err := e.read("creds/r5")
		expectCodedError(t, err, http.StatusTooManyRequests, "login budget of the token host")
	}
	if u1.count() != 5 || u2.count() != 5 {
		t.Fatalf("upstream logins = %d and %d, want 5 each", u1.count(), u2.count())
	}
}

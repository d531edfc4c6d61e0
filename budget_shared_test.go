package iadvize

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeclock"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
)

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
		_, err := e.do(logical.UpdateOperation, "rotate-role/app", nil)
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

// After the plugin process restarts (new budgets, every mount restored from its
// own storage), the logins of the last minute of both mounts count exactly once:
// 60 + 30 before, so 10 more fit, not more (a mount forgot) and not fewer (a
// mount counted another's logins as well as its own).
func TestBudgetSharedAcrossMountsRestoredExactlyAfterAProcessRestart(t *testing.T) {
	clock := fakeclock.New()
	u := newUpstream(t, issuing(24*time.Hour))
	a, b, _ := twoMounts(t, clock, u.url, nil)
	for i := range 80 {
		a.addRole(fmt.Sprintf("r%02d", i), fmt.Sprintf("a%02d@example.com", i), "pw")
		b.addRole(fmt.Sprintf("r%02d", i), fmt.Sprintf("b%02d@example.com", i), "pw")
	}
	for i := range 60 {
		a.mustRead(fmt.Sprintf("creds/r%02d", i))
	}
	for i := range 30 {
		b.mustRead(fmt.Sprintf("creds/r%02d", i))
	}
	clock.Advance(10 * time.Second)

	limits := NewBudgets() // the new process
	a2 := newTestEnvWith(t, a.storage, clock, limits)
	newTestEnvWith(t, b.storage, clock, limits) // mounted, never read
	served := 0
	for i := 60; i < 80; i++ {
		if _, err := a2.read(fmt.Sprintf("creds/r%02d", i)); err == nil {
			served++
		} else {
			expectCodedError(t, err, http.StatusTooManyRequests, "login budget of the token host")
		}
	}
	if served != 10 {
		t.Fatalf("%d logins after the restart, want 10 (100 less the 90 of both mounts)", served)
	}
	u.wantCount(t, 100, "")
}

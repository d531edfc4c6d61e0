package iadvize

import (
	"net/http"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/hashicorp/vault/sdk/logical"
)

// A stored token's lifetime arithmetic (token_state.go): when it is fresh
// (refresh_before, capped at half the lifetime, never below the skew margin),
// the lease creds/ gives it and the ttl static-creds/ gives it in each state of
// the role, all on wall time.

func TestRefreshBeforeLongerThanLifetimeIsCappedAtHalfTheLifetime(t *testing.T) {
	for _, rb := range []string{"1h", "2h", "48h"} {
		t.Run("refresh_before="+rb, func(t *testing.T) {
			u := newUpstream(t, issuing(time.Hour))
			e := newTestEnv(t, nil, nil)
			e.configure(u, map[string]any{"refresh_before": rb})
			e.mustWrite("roles/cc", map[string]any{
				"grant_type": "client_credentials", "client_id": "cid", "client_secret": "cs-one",
			})
			first := accessToken(t, e.mustRead("creds/cc"))
			e.clock.Advance(time.Second)
			e.mustRead("creds/cc")
			e.clock.Advance(30*time.Minute - 2*time.Second) // 1 s before half the lifetime
			if got := accessToken(t, e.mustRead("creds/cc")); got != first {
				t.Fatal("a new token before half the lifetime")
			}
			s := e.mustRead("static-creds/cc")
			if s.Data["rotation_period"] != int64(1800) {
				t.Fatalf("rotation_period = %v, want 1800", s.Data["rotation_period"])
			}
			if u.count() != 1 {
				t.Fatalf("upstream requests = %d, want 1: refresh_before %s made reads log in", u.count(), rb)
			}
			e.clock.Advance(2 * time.Second)
			e.mustRead("creds/cc") // starts the login, served the cached token
			e.settle()
			if got := accessToken(t, e.mustRead("creds/cc")); got == first {
				t.Fatal("no new token past half the lifetime")
			}
			e.mustRead("creds/cc")
			u.wantCount(t, 2, "")
		})
	}
}

// Row 6 of the issue: refresh_before below the 30 s skew margin behaves as the
// margin. A read 20 s before expiry does not get a token it cannot use (a 1 s
// lease) with no login started: it waits for the login.
func TestRefreshBeforeBelowTheSkewMarginBehavesAsTheMargin(t *testing.T) {
	for _, rb := range []string{"0s", "10s", "29s"} {
		t.Run("refresh_before="+rb, func(t *testing.T) {
			e, u := newAppEnv(t, nil, issuing(24*time.Hour), "pw-skew")
			e.mustWrite("config", map[string]any{"refresh_before": rb})
			first := accessToken(t, e.mustRead("creds/app"))
			e.clock.Advance(24*time.Hour - 31*time.Second)
			if got := accessToken(t, e.mustRead("creds/app")); got != first {
				t.Fatal("a new token before the skew margin")
			}
			u.wantCount(t, 1, " (the token is fresh until the margin)")
			e.clock.Advance(11 * time.Second) // 20 s left
			resp := e.mustRead("creds/app")
			if accessToken(t, resp) == first || resp.Secret.TTL < time.Hour {
				t.Fatalf("20 s before expiry: the old token (%v) with a %s lease, want a new one", accessToken(t, resp) == first, resp.Secret.TTL)
			}
			s := e.mustRead("static-creds/app")
			if s.Data["rotation_period"] != int64(24*3600-30) {
				t.Fatalf("rotation_period = %v, want the lifetime less the margin", s.Data["rotation_period"])
			}
			u.wantCount(t, 2, "")
		})
	}
}

func TestCredsLeaseIsRemainingLifetimeMinusSkewCappedByRole(t *testing.T) {
	cases := []struct {
		name      string
		lifetime  time.Duration
		roleExtra map[string]any
		advance   time.Duration
		want      time.Duration
	}{
		{name: "24h token: lifetime minus 30s", lifetime: 24 * time.Hour, want: 24*time.Hour - 30*time.Second},
		{name: "24h token later: remaining minus 30s", lifetime: 24 * time.Hour, advance: 10 * time.Hour,
			want: 14*time.Hour - 30*time.Second},
		{name: "1h token: minus 30s", lifetime: time.Hour, want: time.Hour - 30*time.Second},
		{name: "5 min token: minus 30s", lifetime: 5 * time.Minute, want: 5*time.Minute - 30*time.Second},
		{name: "2 min token: minus a tenth", lifetime: 2 * time.Minute, want: 108 * time.Second},
		{name: "role ttl caps", lifetime: 24 * time.Hour, roleExtra: map[string]any{"ttl": "1h"}, want: time.Hour},
		{name: "role max_ttl caps", lifetime: 24 * time.Hour, roleExtra: map[string]any{"max_ttl": "2h"}, want: 2 * time.Hour},
		{name: "smaller of ttl and max_ttl", lifetime: 24 * time.Hour,
			roleExtra: map[string]any{"ttl": "1h", "max_ttl": "2h"}, want: time.Hour},
		{name: "cap above the remaining lifetime does not extend it", lifetime: time.Hour,
			roleExtra: map[string]any{"ttl": "48h"}, want: time.Hour - 30*time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := newUpstream(t, issuing(tc.lifetime))
			e := newTestEnv(t, nil, nil)
			e.configure(u, map[string]any{"refresh_before": 0})
			data := map[string]any{"username": "svc@example.com", "password": "pw-one"}
			for k, v := range tc.roleExtra {
				data[k] = v
			}
			e.mustWrite("roles/app", data)
			e.mustRead("creds/app") // log in at the start
			e.clock.Advance(tc.advance)
			resp := e.mustRead("creds/app")
			u.wantCount(t, 1, "")
			if resp.Secret.TTL != tc.want {
				t.Fatalf("lease TTL = %s, want %s", resp.Secret.TTL, tc.want)
			}
			if resp.Secret.MaxTTL > 0 && resp.Secret.MaxTTL < resp.Secret.TTL {
				t.Fatalf("lease MaxTTL %s below TTL %s", resp.Secret.MaxTTL, resp.Secret.TTL)
			}
			if resp.Secret.Renewable {
				t.Fatal("lease is renewable")
			}
		})
	}
}

// A token near its end is served with a lease of at least 1 s. refresh_before 0
// behaves as the 30 s skew margin: inside it a read logs in first, and serves
// the old token (with a warning) only when that login fails.
func TestCredsLeaseNeverBelowOneSecondNearExpiry(t *testing.T) {
	for _, left := range []time.Duration{31 * time.Second, 30 * time.Second, 10 * time.Second, 1500 * time.Millisecond, 200 * time.Millisecond} {
		t.Run(left.String(), func(t *testing.T) {
			u := newUpstream(t, issuing(24*time.Hour))
			e := newTestEnv(t, nil, nil)
			e.configure(u, map[string]any{"refresh_before": 0})
			e.addRole("app", "svc@example.com", "pw-one")
			e.mustRead("creds/app")
			u.setHandler(failWith(http.StatusServiceUnavailable, "application/json", `{"error":"temporarily_unavailable"}`))
			e.clock.Advance(24*time.Hour - left)
			resp := e.mustRead("creds/app")
			logins, warned := int64(1), false
			if left <= 30*time.Second {
				logins, warned = 2, true
			}
			u.wantCount(t, logins, " (a login inside the skew margin only)")
			if got := len(resp.Warnings) > 0; got != warned {
				t.Fatalf("warnings %q, want a warning: %v", resp.Warnings, warned)
			}
			want := max((left - 30*time.Second).Truncate(time.Second), time.Second)
			if resp.Secret.TTL != want {
				t.Fatalf("lease TTL with %s left = %s, want %s", left, resp.Secret.TTL, want)
			}
			if resp.Secret.TTL < time.Second {
				t.Fatalf("lease TTL %s below 1s: Vault would apply the mount default", resp.Secret.TTL)
			}
		})
	}
}

func TestStaticCredsTTLDecreasesAsClockMovesUntilRotation(t *testing.T) {
	u := newUpstream(t, issuing(24*time.Hour))
	e := newTestEnv(t, nil, nil)
	e.configure(u, map[string]any{"refresh_before": "1h"})
	e.addRole("app", "svc@example.com", "pw-one")
	first := accessToken(t, e.mustRead("static-creds/app"))

	steps := []struct {
		advance time.Duration
		ttl     int64
	}{
		{time.Hour, 79200},
		{10*time.Hour + 30*time.Second, 43170},
		{12*time.Hour - 31*time.Second, 1},
	}
	for _, st := range steps {
		e.clock.Advance(st.advance)
		s := e.mustRead("static-creds/app")
		if accessToken(t, s) != first {
			t.Fatalf("token rotated before the refresh window")
		}
		if s.Data["ttl"] != st.ttl {
			t.Fatalf("ttl = %v, want %d", s.Data["ttl"], st.ttl)
		}
		if s.Data["rotation_period"] != int64(82800) {
			t.Fatalf("rotation_period = %v, want 82800", s.Data["rotation_period"])
		}
	}
	// ttl + 1 s later (as Vault Agent sleeps), the token is in its refresh window:
	// the read gets it at once and starts the login; the next read gets the new
	// token with a full ttl.
	e.clock.Advance(2 * time.Second)
	if accessToken(t, e.mustRead("static-creds/app")) != first {
		t.Fatal("the first read in the window did not get the cached token at once")
	}
	e.settle()
	s := e.mustRead("static-creds/app")
	if accessToken(t, s) == first {
		t.Fatal("no new token after ttl elapsed")
	}
	if s.Data["ttl"] != int64(82800) {
		t.Fatalf("ttl right after rotation = %v, want 82800", s.Data["ttl"])
	}
	u.wantCount(t, 2, "")
}

// wantStaticTTL reads static-creds/<name> and fails the test unless its ttl is
// want seconds (an int64); why says what sets that ttl.
func (e *testEnv) wantStaticTTL(name string, want int64, why string) {
	e.t.Helper()
	resp := e.mustRead("static-creds/" + name)
	ttl, ok := resp.Data["ttl"].(int64)
	if !ok {
		e.t.Fatalf("static-creds ttl = %#v, want an int64", resp.Data["ttl"])
	}
	if ttl != want {
		e.t.Fatalf("ttl = %d, want %d (%s)", ttl, want, why)
	}
}

// failedRefresh puts a role with a 24-hour token into its refresh window and
// lets the login that a read starts there meet answer.
func failedRefresh(t *testing.T, answer http.HandlerFunc) (*testEnv, *upstream) {
	t.Helper()
	e, u := newAppEnv(t, nil, issuing(24*time.Hour), "pw-ttl")
	e.mustRead("creds/app")
	u.setHandler(answer)
	e.clock.Advance(23*time.Hour + time.Second) // 59m59s left
	e.mustRead("creds/app")                     // starts the login
	e.settle()
	u.wantCount(t, 2, "")
	return e, u
}

// static-creds/ ttl is the number of seconds until a read may get another token,
// in each state of the role: Vault Agent sleeps ttl + 1 s and must neither poll
// in a loop nor sleep past a change.
func TestStaticCredsTTLInEachState(t *testing.T) {
	t.Run("fresh: to the start of the refresh window", func(t *testing.T) {
		u := newUpstream(t, issuing(24*time.Hour))
		e := newTestEnv(t, nil, nil)
		e.configure(u, nil)
		e.addRole("app", "svc@example.com", "pw-ttl")
		e.mustRead("creds/app")
		e.clock.Advance(time.Hour + 500*time.Millisecond)
		e.wantStaticTTL("app", 79199, "22 h less the half second, whole seconds")
	})

	t.Run("in the window, a login in flight: 1", func(t *testing.T) {
		u := newHoldingUpstream(t)
		e := newHeldAppEnv(t, u.upstream, "svc@example.com", "pw-ttl")
		e.mustRead("creds/app")
		u.hold()
		e.clock.Advance(23*time.Hour + time.Second)
		e.mustRead("creds/app") // starts the login
		u.waitEntered(t)
		e.wantStaticTTL("app", 1, "a login is under way")
		u.release(u.issue)
		e.settle()
		e.wantStaticTTL("app", 23*3600, "after the login")
	})

	t.Run("in the window, transient backoff: to its end", func(t *testing.T) {
		e, u := failedRefresh(t, failWith(http.StatusServiceUnavailable, "application/json", `{"error":"server_error"}`))
		for _, backoff := range []int64{1, 2, 4, 8, 16} {
			e.wantStaticTTL("app", backoff, "the backoff")
			e.clock.Advance(time.Duration(backoff) * time.Second)
			e.mustRead("creds/app") // the next attempt
			e.settle()
		}
		u.wantCount(t, 7, "")
	})

	t.Run("in the window, login budget spent: until it frees", func(t *testing.T) {
		u := newUpstream(t, issuing(24*time.Hour))
		e := newTestEnv(t, nil, nil)
		e.configure(u, map[string]any{"user_logins_per_minute": 2})
		e.addRole("a", "shared@example.com", "pw-ttl")
		e.addRole("b", "shared@example.com", "pw-ttl")
		e.mustRead("creds/a")
		e.mustRead("creds/b")
		e.clock.Advance(23*time.Hour + time.Second)
		e.mustWrite("config", map[string]any{"user_logins_per_minute": 1})
		if resp, err := e.doRotate("a"); err != nil || resp.IsError() {
			t.Fatalf("rotate-role/a: %v %v", err, respErr(resp))
		}
		e.clock.Advance(11 * time.Second)
		e.wantStaticTTL("b", 50, "the user's login leaves the 61 s window then")
		e.settle()
		u.wantCount(t, 3, ": a read over budget started a login")
	})

	t.Run("in the window, upstream 429 block: to its end", func(t *testing.T) {
		e, _ := failedRefresh(t, rateLimited(func() string { return "300" }))
		e.wantStaticTTL("app", 300, "Retry-After")
		e.clock.Advance(100 * time.Second)
		e.wantStaticTTL("app", 200, "100 s later")
	})

	t.Run("credentials rejected: 60", func(t *testing.T) {
		e, u := failedRefresh(t, failWith(http.StatusUnauthorized, "application/json", `{"error":"invalid_grant"}`))
		for range 3 {
			e.wantStaticTTL("app", 60, "the credentials are rejected")
			e.clock.Advance(61 * time.Second)
		}
		e.settle()
		u.wantCount(t, 2, "")
	})

	t.Run("capped by the remaining life less the skew margin", func(t *testing.T) {
		e, _ := failedRefresh(t, rateLimited(func() string { return "3600" }))
		e.wantStaticTTL("app", 3569, "59m59s left less 30 s")
	})

	t.Run("at least 1 s", func(t *testing.T) {
		e, _ := failedRefresh(t, rateLimited(func() string { return "3600" }))
		e.clock.Advance(time.Hour - 11*time.Second) // 10 s left: served with a warning
		resp := e.mustRead("static-creds/app")
		if got := resp.Data["ttl"]; got != int64(1) || len(resp.Warnings) == 0 {
			t.Fatalf("ttl = %v with warnings %q, want 1 and a warning", got, resp.Warnings)
		}
	})
}

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

func TestSuspendedHostNeverServesAnExpiredToken(t *testing.T) {
	u := newUpstream(t, issuing(24*time.Hour))
	t0 := time.Now()
	clock := &monotonicClock{now: t0}
	e := mountEnv(t, nil, clock.Now, &logical.StaticSystemView{}, nil)
	b := e.b
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

package iadvize

import (
	"net/http"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// staticTTLOf reads static-creds/<name> and returns its ttl in seconds.
func (e *testEnv) staticTTLOf(name string) int64 {
	e.t.Helper()
	resp := e.mustRead("static-creds/" + name)
	ttl, ok := resp.Data["ttl"].(int64)
	if !ok {
		e.t.Fatalf("static-creds ttl = %#v, want an int64", resp.Data["ttl"])
	}
	return ttl
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
		if got := e.staticTTLOf("app"); got != 79199 {
			t.Fatalf("ttl = %d, want 79199 (22 h less the half second, whole seconds)", got)
		}
	})

	t.Run("in the window, a login in flight: 1", func(t *testing.T) {
		u := newHoldingUpstream(t)
		e := newTestEnv(t, nil, nil)
		e.configure(u.upstream, map[string]any{"request_timeout": "60s"})
		e.addRole("app", "svc@example.com", "pw-ttl")
		e.mustRead("creds/app")
		u.hold()
		e.clock.Advance(23*time.Hour + time.Second)
		e.mustRead("creds/app") // starts the login
		u.waitEntered(t)
		if got := e.staticTTLOf("app"); got != 1 {
			t.Fatalf("ttl = %d, want 1 (a login is under way)", got)
		}
		u.release(u.issue)
		e.settle()
		if got := e.staticTTLOf("app"); got != 23*3600 {
			t.Fatalf("ttl after the login = %d, want %d", got, 23*3600)
		}
	})

	t.Run("in the window, transient backoff: to its end", func(t *testing.T) {
		e, u := failedRefresh(t, failWith(http.StatusServiceUnavailable, "application/json", `{"error":"server_error"}`))
		for _, backoff := range []int64{1, 2, 4, 8, 16} {
			if got := e.staticTTLOf("app"); got != backoff {
				t.Fatalf("ttl = %d, want %d (the backoff)", got, backoff)
			}
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
		if resp, err := e.do(logical.UpdateOperation, "rotate-role/a", nil); err != nil || resp.IsError() {
			t.Fatalf("rotate-role/a: %v %v", err, respErr(resp))
		}
		e.clock.Advance(11 * time.Second)
		if got := e.staticTTLOf("b"); got != 50 {
			t.Fatalf("ttl = %d, want 50 (the user's login leaves the 61 s window then)", got)
		}
		e.settle()
		u.wantCount(t, 3, ": a read over budget started a login")
	})

	t.Run("in the window, upstream 429 block: to its end", func(t *testing.T) {
		e, _ := failedRefresh(t, rateLimited(func() string { return "300" }))
		if got := e.staticTTLOf("app"); got != 300 {
			t.Fatalf("ttl = %d, want 300 (Retry-After)", got)
		}
		e.clock.Advance(100 * time.Second)
		if got := e.staticTTLOf("app"); got != 200 {
			t.Fatalf("ttl = %d, want 200", got)
		}
	})

	t.Run("credentials rejected: 60", func(t *testing.T) {
		e, u := failedRefresh(t, failWith(http.StatusUnauthorized, "application/json", `{"error":"invalid_grant"}`))
		for range 3 {
			if got := e.staticTTLOf("app"); got != 60 {
				t.Fatalf("ttl = %d, want 60 while the credentials are rejected", got)
			}
			e.clock.Advance(61 * time.Second)
		}
		e.settle()
		u.wantCount(t, 2, "")
	})

	t.Run("capped by the remaining life less the skew margin", func(t *testing.T) {
		e, _ := failedRefresh(t, rateLimited(func() string { return "3600" }))
		if got := e.staticTTLOf("app"); got != 3569 {
			t.Fatalf("ttl = %d, want 3569 (59m59s left less 30 s)", got)
		}
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

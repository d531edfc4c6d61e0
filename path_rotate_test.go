package iadvize

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// rotate-role on a role whose credentials were rejected tries exactly once per
// call; when the password was fixed upstream, that one try recovers the role.
func TestRotateRoleOnRejectedCredentialsTriesExactlyOnce(t *testing.T) {
	rejecting := failWith(http.StatusUnauthorized, "application/json",
		`{"error":"invalid_grant","error_description":"invalid username or password"}`)
	e, u := newAppEnv(t, nil, rejecting, "pw-rejected")
	_, err := e.read("creds/app")
	expectCodedError(t, err, http.StatusBadGateway, `role "app"`, "rejected")
	u.wantCount(t, 1, "")

	e.clock.Advance(time.Minute)
	_, err = e.doRotate("app")
	msg := expectCodedError(t, err, http.StatusBadGateway, `role "app"`, "rejected", "rewrite them at roles/app")
	// The answer to rotate-role does not send the operator back to rotate-role.
	if strings.Contains(msg, "rotate-role is called") {
		t.Fatalf("rotate-role answered %q, which points back at the call just made", msg)
	}
	if u.count() != 2 {
		t.Fatalf("rotate-role of a rejected role made %d logins, want exactly 1", u.count()-1)
	}
	// Still rejected: reads do not try again.
	for range 10 {
		_, err := e.read("creds/app")
		expectCodedError(t, err, http.StatusBadGateway, "no login until")
	}
	if u.count() != 2 {
		t.Fatalf("reads after a failed rotate-role logged in: %d logins, want 2", u.count())
	}

	// The password was changed upstream to the one the role holds: one rotate-role
	// recovers.
	u.setHandler(issuing(24 * time.Hour))
	e.clock.Advance(time.Minute)
	if _, err := e.doRotate("app"); err != nil {
		t.Fatalf("rotate-role after the upstream fix: %v", err)
	}
	accessToken(t, e.mustRead("creds/app"))
	u.wantCount(t, 3, "")
	if st := e.mustRead("status/app").Data; st["credentials_rejected"] != false {
		t.Fatalf("status still says credentials_rejected after a successful rotate-role")
	}
}

func TestRotateRoleLogsInNowAndCredsServeTheNewToken(t *testing.T) {
	e, u := newAppEnv(t, nil, issuing(24*time.Hour), "pw-rotate")
	old := accessToken(t, e.mustRead("creds/app"))

	e.clock.Advance(time.Hour)
	resp, err := e.doRotate("app")
	if err != nil || resp == nil || resp.IsError() {
		t.Fatalf("rotate-role: %v", err)
	}
	u.wantCount(t, 2, "")
	// The answer never holds the token, old or new; it says when it was issued.
	now := rfc3339At(e.clock.Now())
	if resp.Data["issue_time"] != now || resp.Data["expire_time"] != rfc3339At(e.clock.Now().Add(24*time.Hour)) {
		t.Fatalf("rotate-role answered issue_time=%v expire_time=%v", resp.Data["issue_time"], resp.Data["expire_time"])
	}
	fresh := accessToken(t, e.mustRead("creds/app"))
	if fresh == old {
		t.Fatalf("creds/ still serves the old token after rotate-role")
	}
	if got := accessToken(t, e.mustRead("static-creds/app")); got != fresh {
		t.Fatalf("static-creds/ does not serve the rotated token")
	}
	if dump := fmt.Sprintf("%v %v", resp.Data, resp.Warnings); strings.Contains(dump, fresh) || strings.Contains(dump, old) {
		t.Fatalf("rotate-role's answer holds an access token")
	}
	if got := u.count(); got != 2 {
		t.Fatalf("reads after rotate-role logged in: %d logins, want 2", got)
	}
}

func TestRotateRoleCountsAgainstBudgetAndOverBudgetKeepsOldToken(t *testing.T) {
	u := newUpstream(t, issuing(24*time.Hour))
	e := newTestEnv(t, nil, nil)
	e.configure(u, map[string]any{"user_logins_per_minute": 2})
	e.addRole("app", "svc@example.com", "pw-rotate")
	accessToken(t, e.mustRead("creds/app")) // login 1

	if _, err := e.doRotate("app"); err != nil { // login 2
		t.Fatalf("rotate-role within the budget: %v", err)
	}
	kept := accessToken(t, e.mustRead("creds/app"))
	e.clock.Advance(10 * time.Second)
	_, err := e.doRotate("app")
	expectCodedError(t, err, http.StatusTooManyRequests, `role "app"`, "login budget", "not before")
	if got := u.count(); got != 2 {
		t.Fatalf("rotate-role over budget called upstream: %d logins, want 2", got)
	}
	if got := accessToken(t, e.mustRead("creds/app")); got != kept {
		t.Fatalf("creds/ no longer serves the token after a refused rotate-role")
	}
	// The budget is back a minute after the oldest login.
	e.clock.Advance(time.Minute)
	if _, err := e.doRotate("app"); err != nil {
		t.Fatalf("rotate-role after the budget freed: %v", err)
	}
	if got := accessToken(t, e.mustRead("creds/app")); got == kept || u.count() != 3 {
		t.Fatalf("rotate-role after the budget freed: same token or %d logins (want 3)", u.count())
	}
}

func TestRotateRoleUnknownRoleIs400(t *testing.T) {
	u := newUpstream(t, issuing(24*time.Hour))
	e := newTestEnv(t, nil, nil)
	e.configure(u, nil)
	resp, err := e.doRotate("nope")
	expectBadRequest(t, resp, err, `"nope"`, "does not exist")
	if u.count() != 0 {
		t.Fatalf("rotate-role of an unknown role called upstream")
	}
}

// rotate-role may not cut short an upstream 429 block: that would burn the
// username's budget upstream.
func TestRotateRoleDuringUpstream429WaitsOutRetryAfter(t *testing.T) {
	e, u := newAppEnv(t, nil, rateLimited(func() string { return "300" }), "pw-429")
	_, err := e.read("creds/app")
	retryAt := rfc3339At(e.clock.Now().Add(300 * time.Second))
	expectCodedError(t, err, http.StatusTooManyRequests, retryAt)

	e.clock.Advance(time.Minute)
	_, err = e.doRotate("app")
	expectCodedError(t, err, http.StatusTooManyRequests, `role "app"`, retryAt)
	if u.count() != 1 {
		t.Fatalf("rotate-role during a 429 block called upstream")
	}
	u.setHandler(issuing(24 * time.Hour))
	e.clock.Advance(4 * time.Minute)
	if _, err := e.doRotate("app"); err != nil {
		t.Fatalf("rotate-role after the block: %v", err)
	}
}

package iadvize

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestStatusFreshTokenReportsTimesWithoutTheToken(t *testing.T) {
	e, _ := newAppEnv(t, nil, issuing(24*time.Hour), statusPassword)

	// Before any login.
	st := statusOf(t, e, "app")
	expectStatus(t, st, map[string]any{
		"has_token": false, "issue_time": "", "expire_time": "", "last_attempt": "",
		"last_outcome": "", "last_error": "", "consecutive_failures": 0,
		"no_login_before": "", "credentials_rejected": false,
		"next_login": rfc3339At(e.clock.Now()), // on the next read
	})

	t0 := e.clock.Now()
	tok := accessToken(t, e.mustRead("creds/app"))
	e.clock.Advance(time.Hour)
	st = statusOf(t, e, "app", tok)
	expectStatus(t, st, map[string]any{
		"has_token":            true,
		"issue_time":           rfc3339At(t0),
		"expire_time":          rfc3339At(t0.Add(24 * time.Hour)),
		"next_login":           rfc3339At(t0.Add(23*time.Hour - backgroundLead)),
		"last_attempt":         rfc3339At(t0),
		"last_outcome":         outcomeSuccess,
		"last_error":           "",
		"consecutive_failures": 0,
		"no_login_before":      "",
		"credentials_rejected": false,
	})
}

// After a failed cold login, status reports the attempt, its outcome, the next
// login planned and a last_error naming the cause; then what clears it.
func TestStatusAfterFailedColdLogin(t *testing.T) {
	cases := []struct {
		name     string
		answer   http.HandlerFunc
		wait     time.Duration // between the read and the status read
		want     func(t0 time.Time) map[string]any
		errorHas string // in last_error
		clear    func(e *testEnv)
		cleared  map[string]any
	}{{
		name:   "429 reports the block and the retry time",
		answer: rateLimited(func() string { return "120" }),
		wait:   10 * time.Second,
		want: func(t0 time.Time) map[string]any {
			return map[string]any{
				"last_outcome":         outcomeRateLimited,
				"no_login_before":      rfc3339At(t0.Add(120 * time.Second)),
				"next_login":           rfc3339At(t0.Add(120 * time.Second)),
				"credentials_rejected": false,
			}
		},
		errorHas: "429",
		// Once the block is over, nothing stands in the way.
		clear:   func(e *testEnv) { e.clock.Advance(2 * time.Minute) },
		cleared: map[string]any{"no_login_before": ""},
	}, {
		name: "rejected credentials: no planned login",
		answer: failWith(http.StatusUnauthorized, "application/json",
			`{"error":"invalid_grant","error_description":"invalid username or password"}`),
		wait: time.Minute,
		want: func(time.Time) map[string]any {
			return map[string]any{
				"last_outcome":         outcomeRejected,
				"credentials_rejected": true,
				"next_login":           "", // none until the credentials are rewritten
				"no_login_before":      "",
			}
		},
		errorHas: "invalid_grant",
		// Rewriting the credentials clears the verdict.
		clear: func(e *testEnv) {
			e.mustWrite("roles/app", map[string]any{"password": statusPassword + "-new"})
		},
		cleared: map[string]any{"credentials_rejected": false, "last_outcome": ""},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := newAppEnv(t, nil, tc.answer, statusPassword)
			t0 := e.clock.Now()
			if _, err := e.read("creds/app"); err == nil {
				t.Fatalf("read through the failing login succeeded")
			}
			e.clock.Advance(tc.wait)
			st := statusOf(t, e, "app")
			want := tc.want(t0)
			want["has_token"] = false
			want["last_attempt"] = rfc3339At(t0)
			want["consecutive_failures"] = 1
			expectStatus(t, st, want)
			if le, _ := st["last_error"].(string); !strings.Contains(le, tc.errorHas) {
				t.Fatalf("status last_error = %q, want it to name %s", le, tc.errorHas)
			}
			tc.clear(e)
			expectStatus(t, statusOf(t, e, "app"), tc.cleared)
		})
	}
}

func TestStatusAfterTransientFailureWithTokenStillServed(t *testing.T) {
	ok := issuing(24 * time.Hour)
	e, u := newAppEnv(t, nil, ok, statusPassword)
	t0 := e.clock.Now()
	tok := accessToken(t, e.mustRead("creds/app"))

	u.setHandler(failWith(http.StatusServiceUnavailable, "application/json", `{"error":"server_error"}`))
	e.clock.Advance(23*time.Hour + time.Minute) // in the refresh window
	t1 := e.clock.Now()
	e.mustRead("creds/app") // served at once; the login it started fails
	e.settle()
	st := statusOf(t, e, "app", tok)
	expectStatus(t, st, map[string]any{
		"has_token":            true,
		"issue_time":           rfc3339At(t0),
		"expire_time":          rfc3339At(t0.Add(24 * time.Hour)),
		"last_attempt":         rfc3339At(t1),
		"last_outcome":         outcomeUpstream,
		"consecutive_failures": 1,
		"no_login_before":      rfc3339At(t1.Add(time.Second)),
		"next_login":           rfc3339At(t1.Add(time.Second)),
		"credentials_rejected": false,
	})
	if le, _ := st["last_error"].(string); !strings.Contains(le, "HTTP 503") {
		t.Fatalf("status last_error = %q, want it to name HTTP 503", le)
	}

	e.clock.Advance(time.Second)
	e.mustRead("creds/app") // second failure
	e.settle()
	t2 := e.clock.Now()
	expectStatus(t, statusOf(t, e, "app", tok), map[string]any{
		"last_attempt": rfc3339At(t2), "consecutive_failures": 2, "no_login_before": rfc3339At(t2.Add(2 * time.Second)),
	})

	// A success clears the failure bookkeeping.
	u.setHandler(ok)
	e.clock.Advance(2 * time.Second)
	e.mustRead("creds/app")
	e.settle()
	fresh := accessToken(t, e.mustRead("creds/app"))
	expectStatus(t, statusOf(t, e, "app", tok, fresh), map[string]any{
		"issue_time": rfc3339At(e.clock.Now()), "last_outcome": outcomeSuccess, "last_error": "",
		"consecutive_failures": 0, "no_login_before": "",
	})
}

func TestStatusUnknownRoleIs400(t *testing.T) {
	e := newTestEnv(t, nil, nil)
	resp, err := e.read("status/nope")
	expectBadRequest(t, resp, err, `"nope"`, "does not exist")
}

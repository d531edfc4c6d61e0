package iadvize

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeclock"
)

// ---- helpers shared by the login-policy tests (login, limits, periodic, rotate,
// verify, status) ----

// expectCodedError fails unless err is a logical.CodedError with the given status
// whose message holds every one of want. It returns the message (which, by
// design, never holds a secret).
func expectCodedError(t *testing.T, err error, status int, want ...string) string {
	t.Helper()
	var ce logical.HTTPCodedError
	if !errors.As(err, &ce) {
		t.Fatalf("error = %v, want a coded error with status %d", err, status)
	}
	if ce.Code() != status {
		t.Fatalf("status = %d (%v), want %d", ce.Code(), err, status)
	}
	msg := err.Error()
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Fatalf("error %q does not contain %q", msg, w)
		}
	}
	return msg
}

// expectBadRequest fails unless the answer is a clean 400 (an error response)
// holding every one of want.
func expectBadRequest(t *testing.T, resp *logical.Response, err error, want ...string) {
	t.Helper()
	if err != nil {
		t.Fatalf("err = %v, want an error response (400)", err)
	}
	if resp == nil || !resp.IsError() {
		t.Fatalf("resp = %v, want an error response (400)", resp)
	}
	msg := resp.Error().Error()
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Fatalf("error %q does not contain %q", msg, w)
		}
	}
}

// tokenIn returns the access_token of a creds/ or static-creds/ answer.
func tokenIn(t *testing.T, resp *logical.Response) string {
	t.Helper()
	tok, _ := resp.Data["access_token"].(string)
	if tok == "" {
		t.Fatalf("answer has no access_token")
	}
	return tok
}

// rfc3339At formats t as the plugin's answers do.
func rfc3339At(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// configureBase points the mount at an upstream served at base (the fake's URL
// layout: /oauth2/token and /_authenticated).
func (e *testEnv) configureBase(base string, extra map[string]any) {
	e.t.Helper()
	data := map[string]any{"token_url": base + "/oauth2/token", "verify_url": base + "/_authenticated"}
	for k, v := range extra {
		data[k] = v
	}
	e.mustWrite("config", data)
}

// runPeriodic runs the backend's periodic function as Vault's rollback manager
// does: a RollbackOperation on the empty path.
func (e *testEnv) runPeriodic() {
	e.t.Helper()
	if _, err := e.do(logical.RollbackOperation, "", nil); err != nil {
		e.t.Fatalf("periodic function: %v", err)
	}
}

// stepUntilUpstreamCall advances the clock by step and reads path after each
// step until upstream receives a request, and returns the time elapsed. Every
// read that makes no upstream call is handed to between. It fails the test
// after limit.
func (e *testEnv) stepUntilUpstreamCall(count func() int64, path string, step, limit time.Duration,
	between func(elapsed time.Duration, resp *logical.Response, err error)) (time.Duration, *logical.Response, error) {
	e.t.Helper()
	before := count()
	for elapsed := step; elapsed <= limit; elapsed += step {
		e.clock.Advance(step)
		resp, err := e.read(path)
		switch n := count() - before; {
		case n == 1:
			return elapsed, resp, err
		case n > 1:
			e.t.Fatalf("one read made %d upstream calls", n)
		}
		if between != nil {
			between(elapsed, resp, err)
		}
	}
	e.t.Fatalf("no upstream call within %v", limit)
	return 0, nil, nil
}

// ---- One login for concurrent readers ----

func TestLoginConcurrentColdReadersShareOneLogin(t *testing.T) {
	entered, release := make(chan struct{}, 1), make(chan struct{})
	ok := issuing(24 * time.Hour)
	u := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case entered <- struct{}{}:
		default: // a second login: the count below fails the test
		}
		<-release // hold the login while the other readers pile up
		ok(w, r)
	})
	e := newTestEnv(t, nil, nil)
	e.configure(u, nil)
	e.addRole("app", "svc@example.com", "pw-one")

	const readers = 200
	var wg sync.WaitGroup
	tokens := make([]string, readers)
	errs := make([]error, readers)
	for i := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := e.read("creds/app")
			if err == nil && resp != nil && !resp.IsError() {
				tokens[i], _ = resp.Data["access_token"].(string)
			} else {
				errs[i] = fmt.Errorf("read failed: %v", err)
			}
		}()
	}
	<-entered // the first login reached upstream
	close(release)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	u.wantCount(t, 1, "")
	for _, tok := range tokens[1:] {
		if tok != tokens[0] {
			t.Fatalf("readers got different tokens")
		}
	}
}

// ---- Rejected credentials ----

func TestLoginRejectedCredentialsTriedOnceUntilPasswordRewritten(t *testing.T) {
	const wrong, right = "wrong-pw-7f3a", "right-pw-9c1d"
	ok := issuing(24 * time.Hour)
	u := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil || r.PostForm.Get("password") != right {
			// A careless upstream echoes the password it refused.
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintf(w, `{"error":"invalid_grant","error_description":"bad password %s"}`, r.PostForm.Get("password"))
			return
		}
		ok(w, r)
	})
	e := newTestEnv(t, nil, nil)
	e.configure(u, nil)
	e.addRole("app", "svc@example.com", wrong)

	// 60 reads, half of them at once, the rest spread over an hour.
	var wg sync.WaitGroup
	errs := make([]error, 30)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = e.read("creds/app")
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil && strings.Contains(err.Error(), wrong) { // checked first: never print it
			t.Fatalf("the error message holds the password")
		}
		expectCodedError(t, err, http.StatusBadGateway, `role "app"`, "rejected the credentials",
			"no login until the role's credentials are rewritten")
	}
	for range 30 {
		e.clock.Advance(2 * time.Minute)
		_, err := e.read("creds/app")
		expectCodedError(t, err, http.StatusBadGateway, `role "app"`, "no login until the role's credentials are rewritten")
		_, err = e.read("static-creds/app")
		expectCodedError(t, err, http.StatusBadGateway, `role "app"`)
	}
	if got := u.count(); got != 1 {
		t.Fatalf("upstream logins after 60 reads with a wrong password = %d, want 1", got)
	}

	st := e.mustRead("status/app").Data
	if st["credentials_rejected"] != true {
		t.Fatalf("status credentials_rejected = %v, want true", st["credentials_rejected"])
	}
	if st["last_outcome"] != outcomeRejected {
		t.Fatalf("status last_outcome = %v, want %q", st["last_outcome"], outcomeRejected)
	}
	lastErr, _ := st["last_error"].(string)
	if !strings.Contains(lastErr, "invalid_grant") {
		t.Fatalf("status last_error = %q, want it to name invalid_grant", lastErr)
	}
	if strings.Contains(fmt.Sprint(st), wrong) {
		t.Fatalf("status holds the password")
	}
	// The background refresh does not retry it either.
	e.runPeriodic()
	if got := u.count(); got != 1 {
		t.Fatalf("upstream logins after a periodic run = %d, want 1", got)
	}

	// Writing the right password recovers on the next read, with one more login.
	e.mustWrite("roles/app", map[string]any{"password": right})
	resp := e.mustRead("creds/app")
	tokenIn(t, resp)
	if got := u.count(); got != 2 {
		t.Fatalf("upstream logins after rewriting the password = %d, want 2", got)
	}
	if st := e.mustRead("status/app").Data; st["credentials_rejected"] != false || st["last_outcome"] != outcomeSuccess {
		t.Fatalf("status after recovery: credentials_rejected=%v last_outcome=%v", st["credentials_rejected"], st["last_outcome"])
	}
}

// ---- Upstream 429 ----

func TestLoginUpstream429HonoursRetryAfter(t *testing.T) {
	for _, tc := range []struct {
		name  string
		wait  time.Duration
		value func(now time.Time) string
	}{
		{"seconds", 120 * time.Second, func(time.Time) string { return "120" }},
		{"http-date", 90 * time.Second, func(now time.Time) string { return now.Add(90 * time.Second).UTC().Format(http.TimeFormat) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := fakeclock.New()
			u := newUpstream(t, rateLimited(func() string { return tc.value(clock.Now()) }))
			e := newTestEnv(t, nil, clock)
			e.configure(u, nil)
			e.addRole("app", "svc@example.com", "pw-429")
			start := clock.Now()
			retryAt := rfc3339At(start.Add(tc.wait))

			_, err := e.read("creds/app")
			expectCodedError(t, err, http.StatusTooManyRequests, `role "app"`, "429", retryAt)
			u.setHandler(issuing(24 * time.Hour))

			gap, resp, err := e.stepUntilUpstreamCall(u.count, "creds/app", time.Second, time.Hour,
				func(elapsed time.Duration, _ *logical.Response, err error) {
					expectCodedError(t, err, http.StatusTooManyRequests, `role "app"`, "not before "+retryAt)
				})
			if gap != tc.wait {
				t.Fatalf("next upstream attempt %v after the 429, want %v (Retry-After)", gap, tc.wait)
			}
			if err != nil || resp == nil || resp.IsError() {
				t.Fatalf("read after the Retry-After delay failed: %v", err)
			}
			tokenIn(t, resp)
			u.wantCount(t, 2, "")
		})
	}
}

func TestLoginUpstream429WithoutRetryAfterBacksOffDoublingFrom60sTo30Min(t *testing.T) {
	e, u := newAppEnv(t, nil, rateLimited(nil), "pw-429")
	e.addRole("twin", "svc@example.com", "pw-429") // same username: same upstream budget

	_, err := e.read("creds/app")
	expectCodedError(t, err, http.StatusTooManyRequests, `role "app"`, "429")

	want := []time.Duration{60, 120, 240, 480, 960, 1800, 1800, 1800}
	for i, base := range want {
		base *= time.Second
		lastAttempt := e.clock.Now()
		checkedTwin := false
		gap, _, err := e.stepUntilUpstreamCall(u.count, "creds/app", time.Second, time.Hour,
			func(elapsed time.Duration, _ *logical.Response, err error) {
				expectCodedError(t, err, http.StatusTooManyRequests, `role "app"`, "not before")
				if !checkedTwin && elapsed >= base/2 {
					// The block holds for every role of the username.
					checkedTwin = true
					n := u.count()
					_, err := e.read("creds/twin")
					expectCodedError(t, err, http.StatusTooManyRequests, `role "twin"`, "429", "not before")
					if u.count() != n {
						t.Fatalf("a role of the blocked username called upstream %v after the 429", elapsed)
					}
				}
			})
		// Jitter adds at most a tenth and never shortens; the clock moves in
		// whole seconds, so the attempt shows within a second of the end.
		if gap < base || gap > base+base/10+time.Second {
			t.Fatalf("429 #%d: next attempt %v after the one at %s, want %v plus at most 10%% jitter",
				i+1, gap, rfc3339At(lastAttempt), base)
		}
		expectCodedError(t, err, http.StatusTooManyRequests, `role "app"`, "429")
	}
}

// The time a refused read names is the time a login may happen: a client that
// waits until then is served, and status/ names the same time.
func TestLoginRetryTimeNamedInTheErrorIsWhenTheNextAttemptMayHappen(t *testing.T) {
	u := newUpstream(t, rateLimited(nil)) // jittered backoff: not a whole second
	e := newTestEnv(t, nil, nil)
	e.configure(u, nil)
	e.addRole("app", "svc@example.com", "pw-429")
	_, err := e.read("creds/app")
	msg := expectCodedError(t, err, http.StatusTooManyRequests, "not before ")
	named, err := time.Parse(time.RFC3339, strings.Fields(msg[strings.Index(msg, "not before ")+len("not before "):])[0])
	if err != nil {
		t.Fatalf("no time in %q: %v", msg, err)
	}
	if got := e.mustRead("status/app").Data["no_login_before"]; got != rfc3339At(named) {
		t.Fatalf("status no_login_before = %v, the error named %s", got, rfc3339At(named))
	}
	u.setHandler(issuing(24 * time.Hour))
	e.clock.Advance(named.Sub(e.clock.Now()) - time.Second)
	if _, err := e.read("creds/app"); err == nil || u.count() != 1 {
		t.Fatalf("a login happened a second before the named time")
	}
	e.clock.Advance(time.Second)
	if _, err := e.read("creds/app"); err != nil {
		t.Fatalf("read at the named retry time %s failed: %v", rfc3339At(named), err)
	}
	u.wantCount(t, 2, "")
}

// ---- Transient failures and malformed answers ----

func TestLoginTransientFailuresBackOffDoublingFrom1sTo5Min(t *testing.T) {
	e, u := newAppEnv(t, nil, failWith(http.StatusServiceUnavailable, "application/json", `{"error":"server_error"}`), "pw-5xx")

	_, err := e.read("creds/app")
	expectCodedError(t, err, http.StatusBadGateway, `role "app"`, "HTTP 503", "not before "+rfc3339At(e.clock.Now().Add(time.Second)))

	want := []time.Duration{1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300}
	for i, w := range want {
		w *= time.Second
		gap, _, err := e.stepUntilUpstreamCall(u.count, "creds/app", time.Second, time.Hour,
			func(_ time.Duration, _ *logical.Response, err error) {
				expectCodedError(t, err, http.StatusTooManyRequests, `role "app"`, "backing off", "HTTP 503", "not before")
			})
		if gap != w {
			t.Fatalf("failure #%d: next attempt after %v, want %v", i+1, gap, w)
		}
		expectCodedError(t, err, http.StatusBadGateway, `role "app"`, "HTTP 503")
	}
}

func TestLoginTransientFailureKindsBackOffAndNeverCacheAnError(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		cause   string
	}{
		{"5xx-json", failWith(http.StatusInternalServerError, "application/json", `{"error":"server_error"}`), "HTTP 500"},
		{"5xx-plain", failWith(http.StatusServiceUnavailable, "text/plain", "Service Unavailable\n"), "HTTP 503"},
		{"html-502", failWith(http.StatusBadGateway, "text/html", "<html><body><h1>502 Bad Gateway</h1></body></html>"), "HTTP 502"},
		{"html-200", failWith(http.StatusOK, "text/html", "<!DOCTYPE html><html><body>Maintenance</body></html>"), "malformed"},
		{"no-access-token", failWith(http.StatusOK, "application/json", `{"expires_in":86400,"token_type":"Bearer"}`), "malformed"},
		{"zero-expires-in", failWith(http.StatusOK, "application/json", `{"access_token":"tok-zero","expires_in":0}`), "malformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := newUpstream(t, tc.handler)
			e := newTestEnv(t, nil, nil)
			e.configure(u, nil)
			e.addRole("app", "svc@example.com", "pw-transient")

			_, err := e.read("creds/app")
			expectCodedError(t, err, http.StatusBadGateway, `role "app"`, tc.cause)
			for i, w := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
				gap, _, err := e.stepUntilUpstreamCall(u.count, "creds/app", 250*time.Millisecond, time.Minute,
					func(_ time.Duration, _ *logical.Response, err error) {
						expectCodedError(t, err, http.StatusTooManyRequests, `role "app"`, "backing off")
					})
				if gap != w {
					t.Fatalf("failure #%d: next attempt after %v, want %v", i+1, gap, w)
				}
				expectCodedError(t, err, http.StatusBadGateway, `role "app"`, tc.cause)
			}
			if st := storedTokenState(t, e, "app"); st.AccessToken != "" {
				t.Fatalf("a failed login left a token in storage")
			}
			// Recovery after the backoff.
			u.setHandler(issuing(24 * time.Hour))
			e.clock.Advance(8 * time.Second)
			tokenIn(t, e.mustRead("creds/app"))
		})
	}
}

func TestLoginTimeoutIsTransientAndBacksOff(t *testing.T) {
	u := newHoldingUpstream(t)
	u.hold() // answer nothing until released or the client gives up
	e := newTestEnv(t, nil, nil)
	e.configure(u.upstream, map[string]any{"request_timeout": "1s"})
	e.addRole("app", "svc@example.com", "pw-timeout")

	began := time.Now()
	_, err := e.read("creds/app") // the one real-time wait: request_timeout
	if took := time.Since(began); took > 5*time.Second {
		t.Fatalf("a login was not bounded by request_timeout: %v", took)
	}
	expectCodedError(t, err, http.StatusBadGateway, `role "app"`, "request_timeout")
	u.release(u.issue)

	// Reads in the backoff do not call upstream.
	for range 5 {
		_, err := e.read("creds/app")
		expectCodedError(t, err, http.StatusTooManyRequests, `role "app"`, "backing off", "request_timeout")
	}
	u.wantCount(t, 1, " during the backoff")
	e.clock.Advance(time.Second)
	tokenIn(t, e.mustRead("creds/app"))
	u.wantCount(t, 2, "")
}

// ---- A token with time left is served while a refresh fails ----

func TestLoginTokenWithTimeLeftServedWithWarningWhileRefreshFails(t *testing.T) {
	ok := issuing(24 * time.Hour)
	e, u := newAppEnv(t, nil, ok, "pw-warn")
	first := tokenIn(t, e.mustRead("creds/app"))
	issued := e.clock.Now()

	u.setHandler(failWith(http.StatusBadGateway, "text/html", "<html>bad gateway</html>"))
	e.clock.Advance(23*time.Hour + time.Second) // inside the refresh window

	expectWarned := func(resp *logical.Response, want ...string) {
		t.Helper()
		if tokenIn(t, resp) != first {
			t.Fatalf("the cached token was not served")
		}
		all := strings.Join(resp.Warnings, "\n")
		for _, w := range append([]string{`role "app"`, rfc3339At(issued.Add(24 * time.Hour))}, want...) {
			if !strings.Contains(all, w) {
				t.Fatalf("warnings %q do not contain %q", resp.Warnings, w)
			}
		}
	}
	// The first read in the window is served at once, without a warning: its
	// refresh runs on its own and has not failed yet.
	if resp := e.mustRead("creds/app"); tokenIn(t, resp) != first || len(resp.Warnings) != 0 {
		t.Fatalf("first read in the window: another token, or warnings %q before the refresh failed", resp.Warnings)
	}
	e.settle()
	if got := u.count(); got != 2 {
		t.Fatalf("upstream calls = %d, want 2", got)
	}
	// In the backoff: served, warned, no upstream call.
	for range 10 {
		expectWarned(e.mustRead("creds/app"), "backing off", "HTTP 502")
		expectWarned(e.mustRead("static-creds/app"), "backing off")
	}
	if got := u.count(); got != 2 {
		t.Fatalf("upstream calls during the backoff = %d, want 2", got)
	}
	e.clock.Advance(time.Second)
	expectWarned(e.mustRead("creds/app"), "HTTP 502")
	e.settle()
	if got := u.count(); got != 3 {
		t.Fatalf("upstream calls = %d, want 3", got)
	}

	// Once the token is dead, reads fail.
	e.clock.Advance(time.Hour)
	_, err := e.read("creds/app")
	expectCodedError(t, err, http.StatusBadGateway, `role "app"`, "HTTP 502")

	// And recover once upstream does.
	u.setHandler(ok)
	e.clock.Advance(10 * time.Minute)
	resp := e.mustRead("creds/app")
	if tokenIn(t, resp) == first || len(resp.Warnings) != 0 {
		t.Fatalf("after recovery: same token or warnings %q", resp.Warnings)
	}
}

// storedTokenState reads a role's persisted token state, bypassing the cache.
func storedTokenState(t *testing.T, e *testEnv, name string) *tokenState {
	t.Helper()
	if st := storedToken(t, e.storage, name); st != nil {
		return st
	}
	return &tokenState{}
}

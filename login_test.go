package iadvize

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// The login policy (docs/login-policy.md; login.go): one login per role at a
// time, shared by every caller that needs it (its flight); rejected
// credentials tried once until rewritten; upstream 429s and transient failures
// backed off, the retry time named where it is.

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

// ---- one flight per role ----

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

	go func() {
		<-entered // the first login reached upstream: let it answer
		close(release)
	}()
	resps, errs := e.readAll(slices.Repeat([]string{"creds/app"}, 200))
	for i, err := range errs {
		if err != nil || resps[i] == nil || resps[i].IsError() {
			t.Fatalf("read failed: %v %v", err, respErr(resps[i]))
		}
	}
	u.wantCount(t, 1, "")
	first := accessToken(t, resps[0])
	for _, resp := range resps[1:] {
		if accessToken(t, resp) != first {
			t.Fatalf("readers got different tokens")
		}
	}
}

func TestThousandConcurrentColdReadsMakeOneLoginAndShareOneToken(t *testing.T) {
	u := newHoldingUpstream(t)
	u.hold() // the login waits until every reader has been started
	e := newTestEnv(t, nil, nil)
	e.configure(u.upstream, nil)
	e.addRole("app", "svc@example.com", "pw-one")

	const readers = 1000
	var started, done sync.WaitGroup
	tokens := make([]string, readers)
	errs := make([]error, readers)
	for i := range readers {
		started.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			started.Done()
			path := "creds/app"
			if i%2 == 1 {
				path = "static-creds/app"
			}
			resp, err := e.read(path)
			switch {
			case err != nil:
				errs[i] = err
			case resp == nil || resp.IsError():
				errs[i] = respErr(resp)
			default:
				tokens[i], _ = resp.Data["access_token"].(string)
			}
		}()
	}
	started.Wait()
	u.release(u.issue)
	done.Wait()

	u.wantCount(t, 1, "")
	for i := range readers {
		if errs[i] != nil {
			t.Fatalf("reader %d: %v", i, errs[i])
		}
		if tokens[i] == "" || tokens[i] != tokens[0] {
			t.Fatalf("reader %d got another token than reader 0", i)
		}
	}
}

// The background refresh shares a role's flight with reads: when it finds the
// role due while a read's login is in flight, it waits for that login instead
// of sending one of its own, and files the role under the token it brought.
func TestBackgroundRefreshJoinsTheLoginOfARead(t *testing.T) {
	e, u, first := newWindowEnv(t)

	u.hold()
	e.clock.Advance(23*time.Hour + time.Second) // in the refresh window: due for both
	if accessToken(t, e.mustRead("creds/app")) != first {
		t.Fatal("the read in the window did not get the cached token")
	}
	u.waitEntered(t) // the read's detached login
	run := e.startRun()
	waitJoinedFlight(t, u, "(*backend).refreshScheduled")
	u.release(u.issue)
	awaitNoError(t, run, "the periodic run, once the login answered,")
	e.settle()
	u.wantCount(t, 2, " (one login in the window, shared by the read and the background refresh)")

	tok := accessToken(t, e.mustRead("creds/app"))
	if tok == first {
		t.Fatal("the read after the shared login got the old token")
	}
	if st := storedToken(t, e.storage, "app"); st == nil || st.AccessToken != tok {
		t.Fatal("storage does not hold the token the reads are served")
	}
	e.runPeriodic()
	u.wantCount(t, 2, " (the background refresh saw the new token: nothing due)")
}

// rotate-role has a flight of its own: during a read's login it still logs in
// (the read's token may be the one it must replace), and the read is answered.
func TestRotateRoleDuringAReadsLoginSendsItsOwn(t *testing.T) {
	e, u := newHoldingAppEnv(t)

	u.hold()
	read := e.readAsync("creds/app") // cold: waits for its login
	u.waitEntered(t)
	rotate := e.doAsync(logical.UpdateOperation, "rotate-role/app", nil)
	u.waitEntered(t) // fails if rotate-role joined the read's login instead
	u.release(u.issue)
	awaitRead(t, rotate, "rotate-role")
	accessToken(t, awaitRead(t, read, "the cold read during rotate-role"))
	u.wantCount(t, 2, " (the read's login and rotate-role's)")
}

// ---- rejected credentials ----

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
	_, errs := e.readAll(slices.Repeat([]string{"creds/app"}, 30))
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
	accessToken(t, resp)
	if got := u.count(); got != 2 {
		t.Fatalf("upstream logins after rewriting the password = %d, want 2", got)
	}
	if st := e.mustRead("status/app").Data; st["credentials_rejected"] != false || st["last_outcome"] != outcomeSuccess {
		t.Fatalf("status after recovery: credentials_rejected=%v last_outcome=%v", st["credentials_rejected"], st["last_outcome"])
	}
}

// ---- upstream 429 ----

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
			e := newTestEnv(t, nil, nil)
			u := newUpstream(t, rateLimited(func() string { return tc.value(e.clock.Now()) }))
			e.configure(u, nil)
			e.addRole("app", "svc@example.com", "pw-429")
			start := e.clock.Now()
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
			accessToken(t, resp)
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

// ---- transient failures and malformed answers ----

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
			accessToken(t, e.mustRead("creds/app"))
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
	accessToken(t, e.mustRead("creds/app"))
	u.wantCount(t, 2, "")
}

// A reader that gives up while the role's login is in flight takes nothing from
// the readers that share it: the login is stored, every patient reader is
// served its token, and no second login follows.
func TestAReaderThatGivesUpLeavesTheSharedLoginToTheOthers(t *testing.T) {
	e, u := newHoldingAppEnv(t)
	u.hold()
	ctx, cancel := context.WithCancel(context.Background())
	gaveUp := make(chan error, 1)
	go func() {
		_, err := e.b.HandleRequest(ctx, &logical.Request{Operation: logical.ReadOperation, Path: "creds/app", Storage: e.storage})
		gaveUp <- err
	}()
	u.waitEntered(t)
	patient := e.readAsync("creds/app")
	waitJoinedFlight(t, u, "(*backend).serveOutcome")
	cancel()
	u.release(u.issue)
	<-gaveUp
	tok := accessToken(t, awaitRead(t, patient, "the patient reader"))
	if st := storedToken(t, e.storage, "app"); st == nil || st.AccessToken != tok {
		t.Fatal("the login's token was not stored")
	}
	e.mustRead("creds/app")
	u.wantCount(t, 1, " (one login, shared, kept)")
}

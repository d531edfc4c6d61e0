package iadvize

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
)

// verifyEnv is a mount over the fake upstream with one role, "app", whose user
// exists upstream.
func verifyEnv(t *testing.T) (*testEnv, *fakeiadvize.Server) {
	t.Helper()
	e, fake := newFakeAppEnv(t, "pw-verify")
	return e, fake.Server
}

func TestVerifyValidTokenReportsAuthenticatedWithCheckTime(t *testing.T) {
	e, fake := verifyEnv(t)
	tok := accessToken(t, e.mustRead("creds/app"))
	e.clock.Advance(time.Minute)

	resp := e.mustRead("verify/app")
	if resp.Data["authenticated"] != true || resp.Data["cached"] != false {
		t.Fatalf("verify: authenticated=%v cached=%v, want true, false", resp.Data["authenticated"], resp.Data["cached"])
	}
	if resp.Data["checked_at"] != rfc3339At(e.clock.Now()) {
		t.Fatalf("verify checked_at = %v, want %s", resp.Data["checked_at"], rfc3339At(e.clock.Now()))
	}
	if fake.Stats().VerifyCalls != 1 {
		t.Fatalf("upstream verify calls = %d, want 1", fake.Stats().VerifyCalls)
	}
	if strings.Contains(fmt.Sprint(resp.Data, resp.Warnings), tok) {
		t.Fatalf("verify's answer holds the access token")
	}
	if got := fake.Stats().LoginAttempts; got != 1 {
		t.Fatalf("logins = %d, want 1", got)
	}
}

func TestVerifyRevokedTokenReportsFalseDropsItAndNextReadLogsIn(t *testing.T) {
	e, fake := verifyEnv(t)
	old := accessToken(t, e.mustRead("creds/app"))
	fake.RevokeAll()

	resp := e.mustRead("verify/app")
	if resp.Data["authenticated"] != false {
		t.Fatalf("verify of a revoked token: authenticated = %v, want false", resp.Data["authenticated"])
	}
	if st := storedTokenState(t, e, "app"); st.AccessToken != "" {
		t.Fatalf("the revoked token is still in storage")
	}
	if c := e.b.cache.role("app"); c != nil && c.state.AccessToken != "" {
		t.Fatalf("the revoked token is still in memory")
	}
	if st := e.mustRead("status/app").Data; st["has_token"] != false {
		t.Fatalf("status has_token = %v after the token was dropped", st["has_token"])
	}
	// Within 5 s, a check gets the last answer (the token is gone), from memory.
	calls := fake.Stats().VerifyCalls
	resp = e.mustRead("verify/app")
	if resp.Data["authenticated"] != false || resp.Data["cached"] != true || fake.Stats().VerifyCalls != calls {
		t.Fatalf("verify within 5 s of the drop: %v, want the last answer, cached, no upstream call", resp.Data)
	}
	// After that, no token to verify; verify still does not log in.
	e.clock.Advance(verifyInterval)
	resp, err := e.read("verify/app")
	expectBadRequest(t, resp, err, `"app"`, "no cached token")
	if got := fake.Stats().LoginAttempts; got != 1 {
		t.Fatalf("verify logged in: %d logins, want 1", got)
	}

	fresh := accessToken(t, e.mustRead("creds/app"))
	if fresh == old {
		t.Fatalf("creds/ served the revoked token")
	}
	if got := fake.Stats().LoginAttempts; got != 2 {
		t.Fatalf("logins = %d, want 2 (the read after the drop)", got)
	}
	// A new token needs a new check, even within 5 s of the last.
	resp = e.mustRead("verify/app")
	if resp.Data["authenticated"] != true || resp.Data["cached"] != false {
		t.Fatalf("verify of the new token: authenticated=%v cached=%v", resp.Data["authenticated"], resp.Data["cached"])
	}
}

func TestVerifyNeverLogsIn(t *testing.T) {
	e, fake := verifyEnv(t)
	for range 5 {
		resp, err := e.read("verify/app")
		expectBadRequest(t, resp, err, `"app"`, "never logs in")
		e.clock.Advance(10 * time.Second)
	}
	resp, err := e.read("verify/nope")
	expectBadRequest(t, resp, err, `"nope"`, "does not exist")
	// An expired token is not verified either, nor replaced.
	accessToken(t, e.mustRead("creds/app"))
	e.clock.Advance(25 * time.Hour)
	resp, err = e.read("verify/app")
	expectBadRequest(t, resp, err, `"app"`)
	if s := fake.Stats(); s.LoginAttempts != 1 || s.VerifyCalls != 0 {
		t.Fatalf("verify made %d logins and %d checks, want 1 (the read) and 0", s.LoginAttempts, s.VerifyCalls)
	}
}

func TestVerifyAtMostOneUpstreamCheckPerRolePer5s(t *testing.T) {
	e, fake := verifyEnv(t)
	accessToken(t, e.mustRead("creds/app"))
	first := e.mustRead("verify/app")
	checkedAt := first.Data["checked_at"]

	for range 4 {
		e.clock.Advance(time.Second)
		for range 10 {
			resp := e.mustRead("verify/app")
			if resp.Data["cached"] != true || resp.Data["checked_at"] != checkedAt || resp.Data["authenticated"] != true {
				t.Fatalf("verify within 5 s: cached=%v checked_at=%v authenticated=%v, want the last answer",
					resp.Data["cached"], resp.Data["checked_at"], resp.Data["authenticated"])
			}
		}
	}
	if got := fake.Stats().VerifyCalls; got != 1 {
		t.Fatalf("upstream verify calls within 5 s = %d, want 1", got)
	}
	e.clock.Advance(time.Second) // 5 s after the check
	resp := e.mustRead("verify/app")
	if resp.Data["cached"] != false || resp.Data["checked_at"] != rfc3339At(e.clock.Now()) {
		t.Fatalf("verify 5 s later: cached=%v checked_at=%v, want a new check", resp.Data["cached"], resp.Data["checked_at"])
	}
	if got := fake.Stats().VerifyCalls; got != 2 {
		t.Fatalf("upstream verify calls = %d, want 2", got)
	}
}

func TestVerifyDisabledByEmptyVerifyURLIs400(t *testing.T) {
	e, fake := verifyEnv(t)
	accessToken(t, e.mustRead("creds/app"))
	e.mustWrite("config", map[string]any{"verify_url": ""})
	resp, err := e.read("verify/app")
	expectBadRequest(t, resp, err, "verify", "disabled")
	if got := fake.Stats().VerifyCalls; got != 0 {
		t.Fatalf("verify with an empty verify_url called upstream")
	}
}

// A check that fails (verify_url answers 5xx) is an error, not "authenticated:
// false": the token is kept, checks within 5 s get the same error without
// reaching upstream, and a check 5 s later goes up again.
func TestVerifyFailedCheckIsAnErrorNotFalseAndIsNotRepeatedWithin5s(t *testing.T) {
	var verifyDown sync.Mutex
	down := true
	ok := issuing(24 * time.Hour)
	var checks atomic.Int64
	u := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/_authenticated" {
			ok(w, r)
			return
		}
		checks.Add(1)
		verifyDown.Lock()
		d := down
		verifyDown.Unlock()
		if d {
			failWith(http.StatusServiceUnavailable, "text/html", "<html>down</html>")(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"authenticated": true}`)
	})
	e := newTestEnv(t, nil, nil)
	e.configure(u, nil)
	e.addRole("app", "svc@example.com", "pw-verify")
	tok := accessToken(t, e.mustRead("creds/app"))

	_, err := e.read("verify/app")
	expectCodedError(t, err, http.StatusBadGateway, `role "app"`)
	for range 4 {
		e.clock.Advance(time.Second)
		resp, err := e.read("verify/app")
		if err == nil && resp != nil && resp.Data["authenticated"] == false {
			t.Fatalf("a failed check is reported as authenticated: false")
		}
		expectCodedError(t, err, http.StatusBadGateway, `role "app"`)
	}
	if got := checks.Load(); got != 1 {
		t.Fatalf("upstream checks within 5 s = %d, want 1", got)
	}
	if got := accessToken(t, e.mustRead("creds/app")); got != tok || u.count() != 2 {
		t.Fatalf("a failed check dropped the token")
	}
	verifyDown.Lock()
	down = false
	verifyDown.Unlock()
	e.clock.Advance(time.Second)
	if resp := e.mustRead("verify/app"); resp.Data["authenticated"] != true || checks.Load() != 2 {
		t.Fatalf("check 5 s later: authenticated=%v, %d upstream checks", resp.Data["authenticated"], checks.Load())
	}
}

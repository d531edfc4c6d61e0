package iadvize

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeclock"
)

// The read path (docs/read-path.md; read_path.go): a fresh token is served from
// memory without asking Vault or storage anything; inside the refresh window a
// usable token is served at once while one login runs on its own, a warning
// coming only once it failed; only a read with no usable token waits, and never
// on another role's login.

// A read inside the refresh window never waits on upstream while the token has
// more than the skew margin to live: against an upstream that hangs, every reader
// gets the cached token at once and without a warning, the readers together start
// one login, and the first read after that login gets the new token.
func TestWindowReadAgainstHangingUpstreamAnswersAtOnceWithCachedToken(t *testing.T) {
	e, u, first := newWindowEnv(t)

	u.hold()
	e.clock.Advance(23*time.Hour + time.Second) // inside the refresh window
	const readers = 50
	results := make([]<-chan readResult, readers)
	for i := range readers {
		path := "creds/app"
		if i%2 == 1 {
			path = "static-creds/app"
		}
		results[i] = e.readAsync(path)
	}
	for i, done := range results {
		resp := awaitRead(t, done, "a read inside the refresh window")
		if accessToken(t, resp) != first {
			t.Fatalf("reader %d got another token than the cached one", i)
		}
		if len(resp.Warnings) != 0 {
			t.Fatalf("reader %d warned while the login was in flight: %q", i, resp.Warnings)
		}
	}
	u.waitEntered(t)
	if got := u.count(); got != 2 {
		t.Fatalf("upstream logins = %d, want 2 (%d concurrent readers in the window start one)", got, readers)
	}
	// While it hangs, reads keep answering at once and start nothing more.
	for range 10 {
		if resp := awaitRead(t, e.readAsync("creds/app"), "a read during the login"); accessToken(t, resp) != first || len(resp.Warnings) != 0 {
			t.Fatal("a read during the login got another token, or a warning")
		}
	}

	u.release(u.issue)
	e.settle()
	resp := e.mustRead("creds/app")
	if accessToken(t, resp) == first || len(resp.Warnings) != 0 {
		t.Fatalf("the read after the login: old token, or warnings %q", resp.Warnings)
	}
	u.wantCount(t, 2, "")
}

// A warning comes only once the refresh has failed; the cached token is served
// all along, and the failed login's backoff holds further logins back.
func TestWindowReadWarnsOnlyAfterTheRefreshFailed(t *testing.T) {
	e, u, first := newWindowEnv(t)

	u.hold()
	e.clock.Advance(23*time.Hour + time.Second)
	if resp := awaitRead(t, e.readAsync("creds/app"), "the first read in the window"); len(resp.Warnings) != 0 {
		t.Fatalf("warned before the refresh failed: %q", resp.Warnings)
	}
	u.waitEntered(t)
	if resp := awaitRead(t, e.readAsync("static-creds/app"), "a read during the login"); len(resp.Warnings) != 0 {
		t.Fatalf("warned while the login was in flight: %q", resp.Warnings)
	}

	u.release(failWith(http.StatusServiceUnavailable, "application/json", `{"error":"server_error"}`))
	e.settle()
	for _, path := range []string{"creds/app", "static-creds/app"} {
		resp := e.mustRead(path)
		if accessToken(t, resp) != first {
			t.Fatalf("%s after the failed refresh did not serve the cached token", path)
		}
		all := strings.Join(resp.Warnings, "\n")
		for _, w := range []string{`role "app"`, "HTTP 503", "serving the cached token"} {
			if !strings.Contains(all, w) {
				t.Fatalf("%s after the failed refresh: warnings %q do not contain %q", path, resp.Warnings, w)
			}
		}
	}
	e.settle()
	u.wantCount(t, 2, " (none during the backoff)")
}

func TestLoginTokenWithTimeLeftServedWithWarningWhileRefreshFails(t *testing.T) {
	ok := issuing(24 * time.Hour)
	e, u := newAppEnv(t, nil, ok, "pw-warn")
	first := accessToken(t, e.mustRead("creds/app"))
	issued := e.clock.Now()

	u.setHandler(failWith(http.StatusBadGateway, "text/html", "<html>bad gateway</html>"))
	e.clock.Advance(23*time.Hour + time.Second) // inside the refresh window

	expectWarned := func(resp *logical.Response, want ...string) {
		t.Helper()
		if accessToken(t, resp) != first {
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
	if resp := e.mustRead("creds/app"); accessToken(t, resp) != first || len(resp.Warnings) != 0 {
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
	if accessToken(t, resp) == first || len(resp.Warnings) != 0 {
		t.Fatalf("after recovery: same token or warnings %q", resp.Warnings)
	}
}

// Only a read with no usable token waits: within the skew margin of expiry, the
// read waits for the login and gets the new token.
func TestReadWithinSkewMarginWaitsForTheLogin(t *testing.T) {
	e, u, first := newWindowEnv(t)

	u.hold()
	e.clock.Advance(24*time.Hour - 29*time.Second) // 29 s left, the skew margin is 30 s
	done := e.readAsync("creds/app")
	u.waitEntered(t)
	u.release(u.issue)
	resp := awaitRead(t, done, "the read with no usable token")
	if accessToken(t, resp) == first {
		t.Fatal("the read with no usable token did not wait for the login")
	}
}

func TestNoLoginBeforeRefreshWindowExactlyOneLoginInsideIt(t *testing.T) {
	u := newUpstream(t, issuing(24*time.Hour))
	e := newTestEnv(t, nil, nil)
	e.configure(u, nil) // refresh_before: default 1h
	e.addRole("app", "svc@example.com", "pw-one")
	first := accessToken(t, e.mustRead("creds/app"))

	e.clock.Advance(23*time.Hour - time.Second)
	for range 3 {
		if got := accessToken(t, e.mustRead("creds/app")); got != first {
			t.Fatal("a new token before the refresh window")
		}
	}
	if u.count() != 1 {
		t.Fatalf("upstream requests before the window = %d, want 1", u.count())
	}

	e.clock.Advance(2 * time.Second)
	if got := accessToken(t, e.mustRead("creds/app")); got != first {
		t.Fatal("the first read inside the window did not get the cached token at once")
	}
	e.settle() // the login it started
	second := accessToken(t, e.mustRead("creds/app"))
	for range 3 {
		if got := accessToken(t, e.mustRead("creds/app")); got != second {
			t.Fatal("reads inside the window after the refresh served different tokens")
		}
	}
	if second == first {
		t.Fatal("no new token inside the refresh window")
	}
	if u.count() != 2 {
		t.Fatalf("upstream requests inside the window = %d, want 2", u.count())
	}
}

func TestReadOfCachedRoleAnswersWhileAnotherRolesLoginHangs(t *testing.T) {
	u := newHoldingUpstream(t)
	e := newTestEnv(t, nil, nil)
	e.configure(u.upstream, nil)
	e.addRole("fast", "fast@example.com", "pw-fast")
	e.addRole("slow", "slow@example.com", "pw-slow")
	fastTok := accessToken(t, e.mustRead("creds/fast"))

	u.hold() // every login from now on hangs until released
	slow := e.readAsync("creds/slow")
	u.waitEntered(t) // the slow role's login reached upstream

	fast := awaitResult(t, e.readAsync("creds/fast"), "the cached role's read, while another role's login hung,")
	if fast.err != nil || fast.resp == nil || fast.resp.IsError() || fast.resp.Data["access_token"] != fastTok {
		t.Fatal("the cached role's read failed or served another token while the other login hung")
	}
	select {
	case <-slow:
		t.Fatal("the slow login finished before it was released")
	default:
	}

	u.release(u.issue)
	awaitRead(t, slow, "the slow read, once its login was released,")
	u.wantCount(t, 2, "")
}

// A cache hit on creds/ or static-creds/ asks Vault nothing: no storage, no
// replication state.
func TestCredsCacheHitAsksVaultNoReplicationState(t *testing.T) {
	u := newUpstream(t, issuing(24*time.Hour))
	view := &countingSystemView{StaticSystemView: logical.StaticSystemView{DefaultLeaseTTLVal: time.Hour, MaxLeaseTTLVal: time.Hour}}
	e := mountEnv(t, nil, fakeclock.New().Now, view, nil)
	e.configure(u, nil)
	e.addRole("app", "svc@example.com", "pw")
	e.mustRead("creds/app") // the login
	before := view.calls.Load()
	for i := 0; i < 50; i++ {
		e.mustRead("creds/app")
		e.mustRead("static-creds/app")
	}
	if n := view.calls.Load() - before; n != 0 {
		t.Fatalf("100 cache hits made %d ReplicationState calls, want 0", n)
	}
	u.wantCount(t, 1, "")
}

package iadvize

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// newWindowEnv is a mount on a holding upstream with a request timeout long
// enough that a read waiting on upstream would show, and role "app" with its
// first token.
func newWindowEnv(t *testing.T) (e *testEnv, u *holdingUpstream, first string) {
	t.Helper()
	u = newHoldingUpstream(t)
	e = newTestEnv(t, nil, nil)
	e.configure(u.upstream, map[string]any{"request_timeout": "60s"})
	e.addRole("app", "svc@example.com", "pw-window")
	return e, u, tokenIn(t, e.mustRead("creds/app"))
}

// readAsync reads path in a goroutine; the channel yields the answer.
func (e *testEnv) readAsync(path string) <-chan readResult {
	done := make(chan readResult, 1)
	go func() {
		resp, err := e.b.HandleRequest(context.Background(), &logical.Request{
			Operation: logical.ReadOperation, Path: path, Storage: e.storage,
		})
		done <- readResult{resp, err}
	}()
	return done
}

type readResult struct {
	resp *logical.Response
	err  error
}

// awaitRead waits (in real time, bounded) for a read started by readAsync.
func awaitRead(t *testing.T, done <-chan readResult, what string) *logical.Response {
	t.Helper()
	select {
	case r := <-done:
		if r.err != nil || r.resp == nil || r.resp.IsError() {
			t.Fatalf("%s: err=%v resp=%v", what, r.err, errText(respErr(r.resp)))
		}
		return r.resp
	case <-time.After(waitFor):
		t.Fatalf("%s did not answer within %v: it waited on upstream", what, waitFor)
		return nil
	}
}

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
		if tokenIn(t, resp) != first {
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
		if resp := awaitRead(t, e.readAsync("creds/app"), "a read during the login"); tokenIn(t, resp) != first || len(resp.Warnings) != 0 {
			t.Fatal("a read during the login got another token, or a warning")
		}
	}

	u.release(u.issue)
	e.settle()
	resp := e.mustRead("creds/app")
	if tokenIn(t, resp) == first || len(resp.Warnings) != 0 {
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
		if tokenIn(t, resp) != first {
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
	if tokenIn(t, resp) == first {
		t.Fatal("the read with no usable token did not wait for the login")
	}
}

package iadvize

import (
	"context"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
)

// Tests of what a change landing in the middle of another operation may not
// undo: flights shared or not, credentials rewritten during a login, a cache
// drop during a fill, and a standby that starts no login.

// waitJoinedFlight waits until a goroutine running caller (a function name, as
// in a stack trace) waits on a flight that another goroutine runs: it is inside
// singleflight's Do, waiting, with no refreshRole of its own. It fails the test
// if a login reaches upstream meanwhile (caller sent one of its own) or after
// waitFor.
func waitJoinedFlight(t *testing.T, u *holdingUpstream, caller string) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for deadline := time.Now().Add(waitFor); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		select {
		case <-u.entered:
			t.Fatalf("%s sent a login of its own instead of joining the one in flight", caller)
		default:
		}
		n := runtime.Stack(buf, true)
		for _, g := range strings.Split(string(buf[:n]), "\n\n") {
			if strings.Contains(g, caller+"(") && strings.Contains(g, "singleflight.(*Group).Do(") &&
				strings.Contains(g, "sync.(*WaitGroup).Wait(") && !strings.Contains(g, ".refreshRole(") {
				return
			}
		}
	}
	t.Fatalf("%s did not join the flight in progress within %v", caller, waitFor)
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
	rotate := e.doAsync(logical.UpdateOperation, "rotate-role/app")
	u.waitEntered(t) // fails if rotate-role joined the read's login instead
	u.release(u.issue)
	awaitRead(t, rotate, "rotate-role")
	accessToken(t, awaitRead(t, read, "the cold read during rotate-role"))
	u.wantCount(t, 2, " (the read's login and rotate-role's)")
}

// A login sent under credentials that are rewritten before it answers is not
// recorded under the new ones: the read logs in again with them (or answers
// 409), and the old credentials' token is never served or stored.
func TestLoginAnsweredAfterCredentialsRewriteIsNotKept(t *testing.T) {
	const stale = "token-of-the-old-credentials"
	e, u := newHoldingAppEnv(t)

	u.hold()
	read := e.readAsync("creds/app")
	u.waitEntered(t) // sent with the old password
	e.mustWrite("roles/app", map[string]any{"password": "pw-rewritten"})
	u.release(jsonAnswer(http.StatusOK, map[string]any{"access_token": stale, "token_type": "Bearer", "expires_in": 86400}))

	if r := awaitResult(t, read, "the read during the rewrite"); r.err != nil {
		expectCodedError(t, r.err, http.StatusConflict, "rewritten")
	} else if accessToken(t, r.resp) == stale {
		t.Fatal("the read was served the old credentials' token")
	}
	e.settle()
	if accessToken(t, e.mustRead("creds/app")) == stale {
		t.Fatal("the next read was served the old credentials' token")
	}
	if st := storedToken(t, e.storage, "app"); st == nil || st.AccessToken == stale {
		t.Fatal("storage does not hold a token of the new credentials")
	}
	u.wantCount(t, 2, " (the login of the old credentials, then one with the new)")
}

// pausingStorage wraps a storage; once armed on a key, the next Get of that key
// reads the entry and then waits until the test resumes it, so that a change
// lands between a read of storage and the use of what it read.
type pausingStorage struct {
	logical.Storage
	mu             sync.Mutex
	key            string // "": not armed
	paused, resume chan struct{}
}

// pauseGet arms the next Get of key: paused is closed once it has read the
// entry, and it returns when the test closes resume.
func (s *pausingStorage) pauseGet(key string) (paused, resume chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.key, s.paused, s.resume = key, make(chan struct{}), make(chan struct{})
	return s.paused, s.resume
}

func (s *pausingStorage) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	entry, err := s.Storage.Get(ctx, key)
	s.mu.Lock()
	armed := key == s.key
	paused, resume := s.paused, s.resume
	if armed {
		s.key = ""
	}
	s.mu.Unlock()
	if armed {
		close(paused)
		<-resume
	}
	return entry, err
}

// A role's entry read from storage is not cached when the role was dropped
// while storage was read (its credentials rewritten, or another node's change
// invalidated): the next read goes to storage and never serves the stale token.
func TestCacheFillDuringADropIsNotKept(t *testing.T) {
	for _, tc := range []struct {
		name string
		drop func(e *testEnv)
	}{
		{"credentials rewritten", func(e *testEnv) {
			e.mustWrite("roles/app", map[string]any{"password": "pw-rewritten"})
		}},
		{"another node rotated the token", func(e *testEnv) {
			other := newTestEnv(e.t, e.storage, e.clock)
			if _, err := other.doRotate("app"); err != nil {
				e.t.Fatalf("rotate-role on the other node: %v", err)
			}
			e.b.Invalidate(context.Background(), tokensStoragePrefix+"app")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &pausingStorage{Storage: &logical.InmemStorage{}}
			e, u := newAppEnv(t, s, issuing(24*time.Hour), "pw-fill")
			old := accessToken(t, e.mustRead("creds/app"))
			e.b.Invalidate(context.Background(), tokensStoragePrefix+"app") // the next read fills

			paused, resume := s.pauseGet(tokensStoragePrefix + "app")
			read := e.readAsync("creds/app")
			select {
			case <-paused:
			case <-time.After(waitFor):
				t.Fatal("the read did not read the token state from storage")
			}
			tc.drop(e)
			close(resume)
			awaitRead(t, read, "the read whose fill was overtaken") // may serve old: it read first
			if accessToken(t, e.mustRead("creds/app")) == old {
				t.Fatal("the entry read before the drop was cached: the next read served the old token")
			}
			u.wantCount(t, 2, "")
		})
	}
}

// A performance standby serving a usable token inside its refresh window starts
// no login on its own: no upstream request, and so no failure to warn about, on
// that read or the next ones, and nothing logged at warn level.
func TestPerformanceStandbyInTheWindowStartsNoDetachedRefresh(t *testing.T) {
	e, u := newAppEnv(t, nil, issuing(24*time.Hour), "pw-standby")
	tok := accessToken(t, e.mustRead("creds/app"))

	e.system.ReplicationStateVal = consts.ReplicationPerformanceStandby
	e.clock.Advance(23*time.Hour + time.Second)
	for i, path := range []string{"creds/app", "static-creds/app", "creds/app"} {
		resp := e.mustRead(path)
		if accessToken(t, resp) != tok || len(resp.Warnings) != 0 {
			t.Fatalf("read %d (%s) on the standby: another token, or warnings %q", i, path, resp.Warnings)
		}
		e.settle()
	}
	u.wantCount(t, 1, " (the standby leaves the refresh to the active node)")
	if logs := e.logs.String(); strings.Contains(logs, "[WARN]") {
		t.Fatalf("the standby logged a warning:\n%s", logs)
	}
}

// Row 5 of the issue: the mount's Clean (unmount, reload, seal, step-down)
// cancels the logins in flight at once, a detached refresh's and a waiting
// reader's alike; it never waits out request_timeout (an hour here).
func TestCleanCancelsLoginsInFlightAtOnce(t *testing.T) {
	u := newHoldingUpstream(t)
	e := newTestEnv(t, nil, nil)
	e.configure(u.upstream, map[string]any{"request_timeout": "1h"})
	e.addRole("app", "svc@example.com", "pw-clean")
	e.addRole("cold", "cold@example.com", "pw-clean")
	e.mustRead("creds/app")

	u.hold()
	e.clock.Advance(23*time.Hour + time.Second)
	e.mustRead("creds/app") // starts a detached login, held
	u.waitEntered(t)
	cold := e.readAsync("creds/cold") // waits on its login, held
	u.waitEntered(t)

	cleaned := make(chan error, 1)
	go func() { e.b.Cleanup(context.Background()); cleaned <- nil }()
	awaitNoError(t, cleaned, "Clean, with two logins held upstream,")
	if r := awaitResult(t, cold, "the reader waiting on its login"); r.err == nil {
		t.Fatal("the reader waiting on a cancelled login was served")
	} else {
		expectCodedError(t, r.err, http.StatusServiceUnavailable, "closing")
	}
	if st := storedToken(t, e.storage, "cold"); st != nil && st.LastOutcome != "" {
		t.Fatalf("a login cancelled by Clean was recorded as %q", st.LastOutcome)
	}
}

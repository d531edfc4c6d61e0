package iadvize

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
)

// waitFor is the bound on a real-time wait for something that should happen at
// once; a test fails rather than hangs.
const waitFor = 5 * time.Second

// readAll reads each of paths on a goroutine of its own, all at once, and
// returns each read's answer and error once every read has returned.
func (e *testEnv) readAll(paths []string) ([]*logical.Response, []error) {
	resps, errs := make([]*logical.Response, len(paths)), make([]error, len(paths))
	var wg sync.WaitGroup
	for i, path := range paths {
		wg.Go(func() { resps[i], errs[i] = e.read(path) })
	}
	wg.Wait()
	return resps, errs
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

func TestReadOfCachedRoleAnswersWhileAnotherRolesLoginHangs(t *testing.T) {
	issue := issuing(24 * time.Hour)
	slowStarted := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	u := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			http.Error(w, "bad form", http.StatusBadRequest)
			return
		}
		if r.PostForm.Get("username") == "slow@example.com" {
			once.Do(func() { close(slowStarted) })
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		issue(w, r)
	})
	var released sync.Once
	releaseAll := func() { released.Do(func() { close(release) }) }
	t.Cleanup(releaseAll) // before the upstream closes (cleanups run last-in first-out)

	e := newTestEnv(t, nil, nil)
	e.configure(u, nil)
	e.addRole("fast", "fast@example.com", "pw-fast")
	e.addRole("slow", "slow@example.com", "pw-slow")
	fastTok := accessToken(t, e.mustRead("creds/fast"))

	slowDone := make(chan error, 1)
	go func() {
		resp, err := e.read("creds/slow")
		if err == nil && (resp == nil || resp.IsError()) {
			err = respErr(resp)
		}
		slowDone <- err
	}()
	select {
	case <-slowStarted:
	case <-time.After(waitFor):
		t.Fatal("the slow role's login never reached upstream")
	}

	fastDone := make(chan string, 1)
	go func() {
		resp, err := e.read("creds/fast")
		if err != nil || resp == nil || resp.IsError() {
			fastDone <- ""
			return
		}
		tok, _ := resp.Data["access_token"].(string)
		fastDone <- tok
	}()
	select {
	case tok := <-fastDone:
		if tok != fastTok {
			t.Fatal("the cached role's read failed or served another token while the other login hung")
		}
	case <-time.After(waitFor):
		t.Fatal("the cached role's read waited for another role's login")
	}
	select {
	case <-slowDone:
		t.Fatal("the slow login finished before it was released")
	default:
	}

	releaseAll()
	awaitNoError(t, slowDone, "the slow read, once its login was released,")
	u.wantCount(t, 2, "")
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

func TestSecondBackendOverSameStorageServesSameTokenWithoutLogin(t *testing.T) {
	e, u := newAppEnv(t, nil, issuing(24*time.Hour), "pw-one")
	tok := accessToken(t, e.mustRead("creds/app"))

	other := newTestEnv(t, e.storage, e.clock)
	other.wantServed(tok, "on the second backend", "creds/app", "static-creds/app", "creds/app")
	u.wantCount(t, 1, " (zero from the second backend)")
}

func TestPerformanceStandbyColdReadReturnsErrReadOnlyWithoutUpstreamCall(t *testing.T) {
	e, u := newAppEnv(t, nil, issuing(24*time.Hour), "pw-one")
	before := storageSnapshot(t, e.storage)

	e.system.ReplicationStateVal = consts.ReplicationPerformanceStandby
	e.wantReadOnly("on a performance standby", "creds/app", "static-creds/app")
	u.wantCount(t, 0, "")
	assertStorageUnchanged(t, e.storage, before)
}

func TestPerformanceStandbyServesFreshCachedTokenWithoutRequest(t *testing.T) {
	e, u := newAppEnv(t, nil, issuing(24*time.Hour), "pw-one")
	tok := accessToken(t, e.mustRead("creds/app"))

	// The same node, once it became a standby: served from memory.
	e.system.ReplicationStateVal = consts.ReplicationPerformanceStandby
	if got := accessToken(t, e.mustRead("creds/app")); got != tok {
		t.Fatal("standby served another token from memory")
	}
	// Another standby, with only storage: served from the persisted token.
	standby := newTestEnv(t, e.storage, e.clock)
	standby.system.ReplicationStateVal = consts.ReplicationPerformanceStandby
	e.clock.Advance(time.Hour)
	standby.wantServed(tok, "on a standby", "creds/app", "static-creds/app")
	u.wantCount(t, 1, "")

	// Inside the refresh window the token is still usable: the standby serves it
	// and starts no login (the active node refreshes it).
	e.clock.Advance(22*time.Hour + time.Second)
	standby.wantServed(tok, "on a standby inside the refresh window", "creds/app", "static-creds/app")
	standby.settle()
	u.wantCount(t, 1, "")
	// Within the skew margin of expiry the standby needs a login: ErrReadOnly, no request.
	e.clock.Advance(time.Hour - 30*time.Second - time.Second)
	standby.wantReadOnly("standby with no usable token", "creds/app")
	u.wantCount(t, 1, "")
}

func TestInvalidateMakesBackendServeTokenRotatedByAnotherNode(t *testing.T) {
	node1, u := newAppEnv(t, nil, issuing(24*time.Hour), "pw-one")
	old := accessToken(t, node1.mustRead("creds/app"))

	node2 := newTestEnv(t, node1.storage, node1.clock)
	if resp, err := node2.do(logical.UpdateOperation, "rotate-role/app", nil); err != nil || (resp != nil && resp.IsError()) {
		t.Fatalf("rotate-role on node 2: err=%v resp=%v", err, respErr(resp))
	}
	rotated := accessToken(t, node2.mustRead("creds/app"))
	if rotated == old {
		t.Fatal("rotate-role did not replace the token")
	}
	if st := storedToken(t, node1.storage, "app"); st == nil || st.AccessToken != rotated {
		t.Fatal("the rotated token is not in storage")
	}

	// Without invalidation, node 1's memory keeps the old token: a hit reads no storage.
	if got := accessToken(t, node1.mustRead("creds/app")); got != old {
		t.Fatal("node 1 served the rotated token without an invalidation; a hit should touch no storage")
	}

	node1.b.Invalidate(context.Background(), tokensStoragePrefix+"app")
	node1.wantServed(rotated, "after Invalidate node 1 (still the old token?)", "creds/app", "static-creds/app")
	u.wantCount(t, 2, " (node 1 must not log in after the invalidation)")
}

func TestInvalidateOfRoleKeyDropsCredentialsChangedByAnotherNode(t *testing.T) {
	node1, u := newAppEnv(t, nil, issuing(24*time.Hour), "pw-one")
	old := accessToken(t, node1.mustRead("creds/app"))

	node2 := newTestEnv(t, node1.storage, node1.clock)
	node2.mustWrite("roles/app", map[string]any{"password": "pw-two"})
	node1.b.Invalidate(context.Background(), rolesStoragePrefix+"app")
	node1.b.Invalidate(context.Background(), tokensStoragePrefix+"app")
	if got := accessToken(t, node1.mustRead("creds/app")); got == old {
		t.Fatal("node 1 kept serving the token of the old credentials after invalidation")
	}
	u.wantCount(t, 2, "")
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

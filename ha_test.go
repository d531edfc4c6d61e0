package iadvize

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
)

// What changes on a cluster (docs/ha.md): a node logs in only where it may
// write storage, and otherwise answers logical.ErrReadOnly before any upstream
// call (performance standbys, secondaries); it serves what another node stored;
// Invalidate brings it what another node changed.

// wantReadOnly fails the test unless each of paths, read on e, answers exactly
// logical.ErrReadOnly, the error that makes Vault forward the read to a node
// that may write; why says when.
func (e *testEnv) wantReadOnly(why string, paths ...string) {
	e.t.Helper()
	for _, path := range paths {
		resp, err := e.read(path)
		if err != logical.ErrReadOnly { //nolint:errorlint // exactly ErrReadOnly, so Vault forwards
			e.t.Fatalf("%s: %s: err=%v resp=%v, want exactly logical.ErrReadOnly", why, path, err, respErr(resp))
		}
	}
}

// wantColdReadsForwarded fails the test unless the reads of role app (which has
// no token) on e answer exactly logical.ErrReadOnly, with no request to u and
// nothing written to storage; why says where.
func (e *testEnv) wantColdReadsForwarded(u *upstream, why string) {
	e.t.Helper()
	before := storageSnapshot(e.t, e.storage)
	e.wantReadOnly(why, "creds/app", "static-creds/app")
	u.wantCount(e.t, 0, ": this node may not write storage")
	assertStorageUnchanged(e.t, e.storage, before)
}

// ---- where a node may log in ----

// TestColdReadLogsInOnlyWhereStorageIsWritable: a node logs in only where the
// SDK's framework.Backend.WriteSafeReplicationState lets it write storage
// (docs/ha.md). On a performance secondary a local mount is its own and logs in
// on a cold read; a replicated mount answers exactly logical.ErrReadOnly, so
// Vault forwards the read to the primary, before any upstream request. A DR
// secondary never logs in, local mount or not.
func TestColdReadLogsInOnlyWhereStorageIsWritable(t *testing.T) {
	for _, tc := range []struct {
		name   string
		state  consts.ReplicationState
		local  bool
		logsIn bool
	}{
		{"performance secondary, local mount", consts.ReplicationPerformanceSecondary, true, true},
		{"performance secondary, replicated mount", consts.ReplicationPerformanceSecondary, false, false},
		{"DR secondary, local mount", consts.ReplicationDRSecondary, true, false},
		{"DR secondary, replicated mount", consts.ReplicationDRSecondary, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, u := newAppEnv(t, nil, issuing(24*time.Hour), "pw-one")
			e.system.ReplicationStateVal = tc.state
			e.system.LocalMountVal = tc.local

			if tc.logsIn {
				tok := accessToken(t, e.mustRead("creds/app"))
				e.wantServed(tok, "after the cold read", "creds/app", "static-creds/app")
				u.wantCount(t, 1, ": the local mount logs in itself, once")
				if st := storedToken(t, e.storage, "app"); st == nil || st.AccessToken != tok {
					t.Fatal("the local mount did not persist the token it served")
				}
				return
			}
			e.wantColdReadsForwarded(u, "on a cold read")
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

// ---- performance standbys ----

func TestPerformanceStandbyColdReadReturnsErrReadOnlyWithoutUpstreamCall(t *testing.T) {
	e, u := newAppEnv(t, nil, issuing(24*time.Hour), "pw-one")
	e.system.ReplicationStateVal = consts.ReplicationPerformanceStandby
	e.wantColdReadsForwarded(u, "on a performance standby")
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

// On a performance standby the periodic function does nothing, and rotate-role
// and verify answer logical.ErrReadOnly (Vault forwards them) without calling
// upstream. A fresh token is still served locally.
func TestPeriodicRotateVerifyDoNothingUpstreamOnPerformanceStandby(t *testing.T) {
	e, fake := newFakeAppEnv(t, "pw-standby")
	clock := e.clock
	tok := accessToken(t, e.mustRead("creds/app"))
	clock.Advance(23*time.Hour - backgroundLead) // due for the background refresh

	e.system.ReplicationStateVal = consts.ReplicationPerformanceStandby
	e.runPeriodic()
	if got := fake.Stats().LoginAttempts; got != 1 {
		t.Fatalf("periodic function on a standby made %d logins, want none", got-1)
	}
	_, err := e.doRotate("app")
	if err != logical.ErrReadOnly {
		t.Fatalf("rotate-role on a standby: err = %v, want logical.ErrReadOnly", err)
	}
	_, err = e.read("verify/app")
	if err != logical.ErrReadOnly {
		t.Fatalf("verify on a standby: err = %v, want logical.ErrReadOnly", err)
	}
	if accessToken(t, e.mustRead("creds/app")) != tok {
		t.Fatalf("the standby did not serve the cached token")
	}
	// Inside the refresh window, the token is still served locally and no login
	// starts; a read with no usable token left is forwarded.
	clock.Advance(time.Hour)
	if accessToken(t, e.mustRead("creds/app")) != tok {
		t.Fatalf("the standby did not serve the cached token inside its refresh window")
	}
	e.settle()
	clock.Advance(3 * time.Minute) // the token expires
	if _, err := e.read("creds/app"); err != logical.ErrReadOnly {
		t.Fatalf("read needing a login on a standby: err = %v, want logical.ErrReadOnly", err)
	}
	if s := fake.Stats(); s.LoginAttempts != 1 || s.VerifyCalls != 0 {
		t.Fatalf("standby called upstream: %d logins, %d verify calls", s.LoginAttempts-1, s.VerifyCalls)
	}

	// Back on the active node, the periodic function does its job.
	e.system.ReplicationStateVal = 0
	clock.Advance(-time.Hour - 3*time.Minute)
	e.runPeriodic()
	if got := fake.Stats().LoginAttempts; got != 2 {
		t.Fatalf("periodic function on the active node made %d logins, want 1", got-1)
	}
}

func TestVerifyOnPerformanceStandbyIsReadOnlyWithoutUpstreamCall(t *testing.T) {
	e, fake := verifyEnv(t)
	accessToken(t, e.mustRead("creds/app"))
	e.system.ReplicationStateVal = consts.ReplicationPerformanceStandby
	_, err := e.read("verify/app")
	if err != logical.ErrReadOnly {
		t.Fatalf("verify on a performance standby: err = %v, want logical.ErrReadOnly", err)
	}
	if got := fake.Stats().VerifyCalls; got != 0 {
		t.Fatalf("verify on a standby called upstream")
	}
}

// A performance standby answers a stale report itself, and forwards one of the
// cached token before any upstream call.
func TestReportOnAPerformanceStandby(t *testing.T) {
	e, fake := newFakeAppEnv(t, "pw-report")
	tok := accessToken(t, e.mustRead("creds/app"))
	e.system.ReplicationStateVal = consts.ReplicationPerformanceStandby
	if got := accessToken(t, e.mustReport("creds/app", strings.Repeat("0", 64))); got != tok {
		t.Fatal("a standby did not serve the cached token for a stale report")
	}
	if _, err := e.report("creds/app", tokenSHA256(tok)); err != logical.ErrReadOnly {
		t.Fatalf("a standby's report of the cached token: %v, want logical.ErrReadOnly", err)
	}
	if logins(fake) != 1 || verifyCalls(fake) != 0 {
		t.Fatal("a standby called upstream")
	}
}

// ---- Invalidate ----

func TestInvalidateMakesBackendServeTokenRotatedByAnotherNode(t *testing.T) {
	node1, u := newAppEnv(t, nil, issuing(24*time.Hour), "pw-one")
	old := accessToken(t, node1.mustRead("creds/app"))

	node2 := newTestEnv(t, node1.storage, node1.clock)
	if resp, err := node2.doRotate("app"); err != nil || (resp != nil && resp.IsError()) {
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

// Another node's config write reaches this node's idea of the legacy host
// through Invalidate: a standby that cached "none stored" does not judge the
// old roles against the new config.
func TestLegacyHostFollowsInvalidate(t *testing.T) {
	clock, a, b, pw := twoHosts(t)
	s := &logical.InmemStorage{}
	putLegacyRecords(t, s, legacyConfig(a),
		map[string]map[string]any{"app": {"grant_type": "password", "username": "app@example.com", "password": pw, "generation": 1}}, nil)
	active, standby := newTestEnv(t, s, clock), newTestEnv(t, s, clock)
	if st := standby.mustRead("status/app").Data; st["token_host"] != a.origin {
		t.Fatalf("standby status/app token_host %v", st["token_host"])
	}
	active.mustWrite("config", map[string]any{"token_url": b.tokenURL(), "verify_url": b.verifyURL()})
	for _, key := range []string{configStoragePath, legacyTokenHostKey} {
		standby.b.invalidate(context.Background(), key)
	}
	st := standby.mustRead("status/app").Data
	if st["token_host"] != a.origin || st["waiting_for_credentials"] == "" {
		t.Fatalf("standby after the move: token_host %v, waiting %q", st["token_host"], st["waiting_for_credentials"])
	}
	_, err := standby.read("creds/app")
	expectCodedError(t, err, 409, a.origin, b.origin)
	b.wantNothing(t, "after the move", map[string]string{"the password": pw})
}

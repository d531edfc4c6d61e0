package ha

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/vaulttest"
)

// TestHAStandbyReadsShareOneLogin: reads through the standbys (each client pinned
// to its standby's address, so the standby itself forwards the request) and
// through the active node all get the one token of one login.
func TestHAStandbyReadsShareOneLogin(t *testing.T) {
	e := newEnv(t, nil)
	active := e.active()
	standbys := e.cluster.Standbys()
	if len(standbys) != 2 {
		t.Fatalf("want 2 standbys, got %d", len(standbys))
	}
	for _, s := range standbys {
		mustBeStandby(t, s)
	}

	// Cold cache: the first read goes through a standby; it forwards the read and
	// the active node logs in.
	want := e.token(standbys[0])
	e.wantLogins(1, "first read, through a standby")

	// Concurrent reads through every node, leased and lease-free.
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []string
		got  = map[string]int{}
	)
	for i := 0; i < 8; i++ {
		for _, n := range e.cluster.Nodes {
			for _, path := range []string{"creds/" + roleName, "static-creds/" + roleName} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					tok, err := readToken(t.Context(), e.client(n), path)
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						errs = append(errs, fmt.Sprintf("%s via %s: %v", path, n.ID, err))
						return
					}
					got[fmt.Sprintf("%s via %s", fp(tok), n.ID)]++
					if tok != want {
						errs = append(errs, fmt.Sprintf("%s via %s served %s, want %s", path, n.ID, fp(tok), fp(want)))
					}
				}()
			}
		}
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d of %d reads went wrong:\n%v", len(errs), 8*len(e.cluster.Nodes)*2, errs)
	}
	t.Logf("tokens served: %v", got)
	e.wantLogins(1, "48 reads through three nodes")

	// A lease taken through a standby can be revoked through it (forwarded; the
	// plugin's revoke does nothing upstream).
	s, err := e.client(standbys[1]).Logical().Read(mountPath + "/creds/" + roleName)
	if err != nil || s == nil || s.LeaseID == "" {
		t.Fatalf("leased read through %s: %v (secret %v)", standbys[1].ID, err, s != nil)
	}
	if err := e.client(standbys[1]).Sys().Revoke(s.LeaseID); err != nil {
		t.Fatalf("revoking the lease through %s: %v", standbys[1].ID, err)
	}
	if tok := e.token(active); tok != want {
		t.Fatalf("after a revoke, the active node serves %s, want %s", fp(tok), fp(want))
	}
	e.wantLogins(1, "after a lease revoke")

	// Nothing moved under the test: the standbys were standbys throughout.
	for _, s := range standbys {
		mustBeStandby(t, s)
	}
	if !active.IsActive() {
		t.Fatalf("%s is no longer active: leadership changed during the test", active.ID)
	}
}

// TestHAFailoverKeepsToken: after kill -9 of the active node a standby takes over
// and serves the same token with no new login, and so does the killed node once
// restarted and unsealed.
func TestHAFailoverKeepsToken(t *testing.T) {
	e := newEnv(t, nil)
	old := e.active()
	want := e.token(old)
	for _, s := range e.cluster.Standbys() {
		if tok := e.token(s); tok != want {
			t.Fatalf("%s serves %s, want %s", s.ID, fp(tok), fp(want))
		}
	}
	issued := e.status(old)["issue_time"]
	e.wantLogins(1, "before the failover")

	killedAt := time.Now()
	old.Kill()
	next := e.cluster.WaitActive(2*time.Minute, old)
	t.Logf("%s killed; %s active %s later", old.ID, next.ID, time.Since(killedAt).Round(100*time.Millisecond))

	if got := e.status(next)["issue_time"]; got != issued {
		t.Fatalf("status on the new active node: issue_time %v, want %v (the persisted token)", got, issued)
	}
	if tok := e.token(next); tok != want {
		t.Fatalf("new active %s serves %s, want %s", next.ID, fp(tok), fp(want))
	}
	for _, s := range otherThan(e.cluster.Running(), next) {
		mustBeStandby(t, s)
		if tok := e.token(s); tok != want {
			t.Fatalf("standby %s serves %s after the failover, want %s", s.ID, fp(tok), fp(want))
		}
	}
	e.wantLogins(1, "after the failover")

	// The killed node comes back sealed; unsealed, it rejoins as a standby.
	e.cluster.RestartNode(old)
	mustBeStandby(t, old)
	if tok := e.token(old); tok != want {
		t.Fatalf("restarted %s serves %s, want %s", old.ID, fp(tok), fp(want))
	}
	e.wantLogins(1, "after the killed node rejoined")
}

// TestHARotationsAcrossFailover: with 20-second tokens refreshed 8 s before
// expiry, readers on every node see a rotation about every 12 s. The active node
// is killed; rotations go on under the new one and through the restarted node.
// Each rotation is one login cluster-wide, and reads fail only while the cluster
// elects a new active node.
func TestHARotationsAcrossFailover(t *testing.T) {
	const (
		lifetime      = 20 * time.Second
		refreshBefore = 8 * time.Second
		// minLoginGap: a token is fresh for lifetime-refreshBefore (12 s) and the
		// background refresh leads by a tenth of the lifetime (2 s), so logins
		// are 10 s apart or more: two logins closer than this would be two
		// logins for one rotation (say, one more at the failover).
		minLoginGap = 8 * time.Second
		// maxOutage bounds the longest stretch without a good read on a surviving
		// node: the election and the new active node's setup, on a busy machine.
		maxOutage = 30 * time.Second
	)
	e := newEnv(t, map[string]any{"refresh_before": int(refreshBefore.Seconds())})
	e.fake.SetTokenLifetime(lifetime)

	r := newReaders(t, e, "static-creds/"+roleName, 250*time.Millisecond)
	for _, n := range e.cluster.Nodes {
		r.start(n, n.ID)
	}
	old := e.active()

	// Kill the active node right after a rotation: the next login is 10 s or more
	// away, so none is in flight (TestHALoginInFlightAtFailover covers that).
	r.waitDistinct(2, 2*time.Minute)
	if l := e.logins(); l != 2 {
		t.Fatalf("%d logins for the first two tokens, want 2", l)
	}
	r.stop(old.ID)
	killedAt := time.Now()
	old.Kill()
	next := e.cluster.WaitActive(2*time.Minute, old)
	elected := time.Since(killedAt)
	t.Logf("%s killed; %s active %s later", old.ID, next.ID, elected.Round(100*time.Millisecond))

	// Two rotations by the new active node.
	r.waitDistinct(4, 2*time.Minute)

	// The killed node comes back sealed, is unsealed, rejoins, and serves a token
	// issued after its return.
	e.cluster.RestartNode(old)
	mustBeStandby(t, old)
	rejoined := old.ID + "-rejoined"
	r.start(old, rejoined)
	r.waitServedBy(rejoined, r.distinct(), 2*time.Minute)
	r.stopAll()

	st := e.fake.Stats()
	served := r.distinct()
	t.Logf("%d distinct tokens served, %d logins at the fake (%d successful)", served, st.LoginAttempts, st.LoginSuccesses)
	stats := r.stats()
	ids := make([]string, 0, len(stats))
	for id := range stats {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		t.Logf("%s: %v", id, stats[id])
	}

	if st.LoginAttempts != served || st.LoginSuccesses != served {
		t.Errorf("%d login attempts (%d successful) for %d distinct tokens served: want one login per token",
			st.LoginAttempts, st.LoginSuccesses, served)
	}
	times := e.fake.LoginTimes()
	for i := 1; i < len(times); i++ {
		if gap := times[i].Sub(times[i-1]); gap < minLoginGap {
			t.Errorf("logins %d and %d only %s apart: two logins for one rotation", i, i+1, gap.Round(time.Millisecond))
		}
	}
	if rot := served - 2; rot < 2 {
		t.Errorf("only %d rotations after the failover", rot)
	}
	for _, id := range ids {
		s := stats[id]
		if s.backwards > 0 {
			t.Errorf("%s served an older token after a newer one %d times", id, s.backwards)
		}
		if id == old.ID || id == rejoined {
			// Never read through a dead node: healthy throughout.
			if s.failures > 0 {
				t.Errorf("%s: %d reads failed while it was healthy", id, s.failures)
			}
			continue
		}
		if s.longestGap >= maxOutage {
			t.Errorf("%s: %s without a good read (bound %s; election took %s)", id, s.longestGap.Round(100*time.Millisecond), maxOutage, elected.Round(100*time.Millisecond))
		}
	}
}

// TestHALoginInFlightAtFailover: the fake holds a token request while the active
// node that sent it is killed. The role and the last persisted token are intact
// on the new active node, and the lost login costs at most one more.
func TestHALoginInFlightAtFailover(t *testing.T) {
	e := newEnv(t, map[string]any{
		"refresh_before": 8,
		// Longer than the test holds the request: the login is still in flight
		// when its node dies.
		"request_timeout": 120,
	})

	// Phase 1: rotate-role in flight while the token is fresh. (Phases, not
	// subtests: the cluster's helpers fail the test that started it.)
	{
		old := e.active()
		tokA := e.token(old)
		before := e.status(old)
		e.wantLogins(1, "first token")

		hangAndKill(t, e, old, func(via *vaulttest.Node) error {
			_, err := e.client(via).Logical().Write(mountPath+"/rotate-role/"+roleName, nil)
			return err
		})
		next := e.cluster.WaitActive(2*time.Minute, old)

		checkRoleIntact(t, e, next)
		after := e.status(next)
		for _, k := range []string{"issue_time", "expire_time", "last_outcome", "has_token"} {
			if after[k] != before[k] {
				t.Errorf("status %s on %s: %v, want %v (the last persisted token)", k, next.ID, after[k], before[k])
			}
		}
		for _, n := range e.cluster.Running() {
			if tok := e.token(n); tok != tokA {
				t.Fatalf("%s serves %s, want the persisted %s", n.ID, fp(tok), fp(tokA))
			}
		}
		st := e.fake.Stats()
		if st.LoginAttempts != 2 || st.LoginSuccesses != 1 {
			t.Fatalf("fake saw %d login attempts (%d successful), want 2 (1): the first token and the lost one",
				st.LoginAttempts, st.LoginSuccesses)
		}

		// The role works on the new active node: a rotation is one login.
		e.write(next, mountPath+"/rotate-role/"+roleName, nil)
		tokB := e.token(next)
		if tokB == tokA {
			t.Fatalf("rotate-role on %s did not replace the token", next.ID)
		}
		if st := e.fake.Stats(); st.LoginAttempts != 3 || st.LoginSuccesses != 2 {
			t.Fatalf("after rotate-role: %d login attempts (%d successful), want 3 (2)", st.LoginAttempts, st.LoginSuccesses)
		}
		e.cluster.RestartNode(old)
		mustBeStandby(t, old)
		if tok := e.token(old); tok != tokB {
			t.Fatalf("restarted %s serves %s, want %s", old.ID, fp(tok), fp(tokB))
		}
	}

	// Phase 2: a read-triggered login in flight while the token is due.
	{
		old := e.active()
		// A 16-second token: fresh for 8 s, then the next read logs in.
		e.fake.SetTokenLifetime(16 * time.Second)
		e.write(old, mountPath+"/rotate-role/"+roleName, nil)
		e.fake.SetTokenLifetime(fakeiadvize.DefaultTokenLifetime)
		tokC := e.token(old)
		before := e.status(old)
		base, baseOK := e.logins(), e.fake.Stats().LoginSuccesses

		hangAndKill(t, e, old, func(via *vaulttest.Node) error {
			// Read until the token is due: that read's login hangs.
			tick := time.NewTicker(200 * time.Millisecond)
			defer tick.Stop()
			for {
				if _, err := readToken(t.Context(), e.client(via), "static-creds/"+roleName); err != nil {
					return err
				}
				if e.fake.Stats().Hanging > 0 {
					return nil // a background refresh got there first
				}
				<-tick.C
			}
		})
		next := e.cluster.WaitActive(2*time.Minute, old)

		checkRoleIntact(t, e, next)
		// Its periodic refresh may log in on its own (the token is due); until it
		// has, status shows the persisted token.
		n0 := e.logins()
		after := e.status(next)
		if n0 == base+1 && e.logins() == n0 {
			for _, k := range []string{"issue_time", "expire_time"} {
				if after[k] != before[k] {
					t.Errorf("status %s on %s: %v, want %v (the last persisted token)", k, next.ID, after[k], before[k])
				}
			}
		} else {
			t.Logf("the new active node logged in before status was read (%d logins since the hang)", e.logins()-base-1)
		}

		// A read while tokC is still usable gets it at once and starts the login
		// on its own; the reads after that login get the new token.
		var tokD string
		vaulttest.WaitFor(t, 30*time.Second, "a new token after the failover", func() error {
			if tokD = e.token(next); tokD == tokC {
				return fmt.Errorf("%s still serves the due token", next.ID)
			}
			return nil
		})
		for _, n := range e.cluster.Running() {
			if tok := e.token(n); tok != tokD {
				t.Fatalf("%s serves %s, want %s", n.ID, fp(tok), fp(tokD))
			}
		}
		st := e.fake.Stats()
		// base logins, the lost one, and one to replace it.
		if st.LoginAttempts != base+2 {
			t.Fatalf("fake saw %d login attempts, want %d: the lost login and exactly one to replace it", st.LoginAttempts, base+2)
		}
		if failed := (st.LoginAttempts - st.LoginSuccesses) - (base - baseOK); failed != 1 {
			t.Fatalf("%d failed logins since the hang, want 1 (the lost one)", failed)
		}
	}
}

// hangAndKill makes the fake hold the next token request, runs trigger through a
// standby (which forwards it to the active node) until that request hangs, kills
// the active node, then releases the request. It returns once trigger has
// returned and the fake holds nothing.
func hangAndKill(t *testing.T, e *env, active *vaulttest.Node, trigger func(via *vaulttest.Node) error) {
	t.Helper()
	standbys := e.cluster.Standbys()
	if len(standbys) == 0 {
		t.Fatal("no standby")
	}
	via := standbys[0]
	if err := e.fake.InjectFault(fakeiadvize.Fault{Mode: fakeiadvize.FaultHang, Count: 1}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- trigger(via) }()
	vaulttest.WaitFor(t, 2*time.Minute, "a login held by the fake", func() error {
		if h := e.fake.Stats().Hanging; h == 1 {
			return nil
		}
		select {
		case err := <-done:
			done <- err
			return fmt.Errorf("trigger returned before a login was held: %v", shortErrOrNil(err))
		default:
			return errors.New("no request held yet")
		}
	})
	before := e.fake.Stats()
	active.Kill()
	// The held request dies with the plugin process that sent it: the fake sees
	// its client go. Then the fault is released, for the logins to come.
	vaulttest.WaitFor(t, time.Minute, "the held request to end with its client", func() error {
		if h := e.fake.Stats().Hanging; h != 0 {
			return fmt.Errorf("%d requests still held", h)
		}
		return nil
	})
	e.fake.ClearFault()
	select {
	case err := <-done:
		t.Logf("the request through %s that triggered the login ended with: %s", via.ID, shortErrOrNil(err))
	case <-time.After(2 * time.Minute):
		t.Fatal("the triggering request did not end after the kill")
	}
	if after := e.fake.Stats(); after.LoginSuccesses != before.LoginSuccesses || after.LoginAttempts != before.LoginAttempts {
		t.Fatalf("the fake saw %d logins (%d successful) after the kill, was %d (%d)",
			after.LoginAttempts, after.LoginSuccesses, before.LoginAttempts, before.LoginSuccesses)
	}
}

func shortErrOrNil(err error) string {
	if err == nil {
		return "success"
	}
	return shortErr(err)
}

// checkRoleIntact reads the role through n: same user, no password shown.
func checkRoleIntact(t *testing.T, e *env, n *vaulttest.Node) {
	t.Helper()
	role := e.read(n, mountPath+"/roles/"+roleName).Data
	if role["username"] != upstreamUser {
		t.Fatalf("role on %s: username %v, want %q", n.ID, role["username"], upstreamUser)
	}
	if _, ok := role["password"]; ok {
		t.Fatalf("role read on %s shows the password field", n.ID)
	}
}

// TestHALoginBudgetAcrossFailover: the README ("When the plugin logs in", budgets) says the plugin never sends more
// than user_logins_per_minute logins for one username. The active node spends the
// budget (10 logins in a few seconds) and refuses the 11th itself; then it dies.
// Still within the same minute, the new active node must refuse as well: the
// upstream would answer the 11th login with 429 and block the user.
func TestHALoginBudgetAcrossFailover(t *testing.T) {
	const budget = 10 // the default user_logins_per_minute, also the fake's limit
	e := newEnv(t, nil)
	old := e.active()
	rotate := mountPath + "/rotate-role/" + roleName

	e.token(old)
	for i := 1; i < budget; i++ {
		e.write(old, rotate, nil)
	}
	e.wantLogins(budget, "spending the budget")
	if _, err := e.client(old).Logical().Write(rotate, nil); err == nil {
		t.Fatalf("login %d within a minute was allowed on %s", budget+1, old.ID)
	} else {
		t.Logf("login %d refused by %s: %s", budget+1, old.ID, shortErr(err))
	}
	e.wantLogins(budget, "after the refused login")
	want := e.token(old)

	old.Kill()
	next := e.cluster.WaitActive(2*time.Minute, old)
	first := e.fake.LoginTimes()[0]

	_, err := e.client(next).Logical().Write(rotate, nil)
	if since := time.Since(first); since >= time.Minute {
		t.Skipf("inconclusive: the failover took the budget's minute (%s since the first login)", since.Round(time.Second))
	}
	st := e.fake.Stats()
	if st.LoginAttempts > budget {
		t.Errorf("the new active node %s sent login %d for %q within a minute of the first (%d attempts in any minute at the fake, limit %d; rotate-role answered: %s): "+
			"the login budget is in memory only and starts empty after a failover",
			next.ID, st.LoginAttempts, upstreamUser, st.MaxAttemptsInWindow, budget, shortErrOrNil(err))
	}
	if tok := e.token(next); tok != want {
		t.Errorf("%s serves %s after the failover, want the last token %s", next.ID, fp(tok), fp(want))
	}
}

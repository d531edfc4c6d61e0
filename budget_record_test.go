package iadvize

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeclock"
)

// The stored copy of the login budgets (budget_record.go): restored after a
// restart, failover or process restart, kept small, saved once per burst.

// The stored budget holds only the last minute, in per-second buckets: a mount
// allowed 10,000 logins a minute writes a record whose total has at most 62
// buckets, and which empties once a minute passes without logins.
func TestBudgetRecordStaysSmallAtHighVolume(t *testing.T) {
	l := newHostBudget()
	start := time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC)
	for i := 0; i < 10000; i++ {
		now := start.Add(time.Duration(i) * 5 * time.Millisecond) // 50 s of logins
		if _, _, ok := l.reserve("user:u"+itoa(int64(i)), now, 10, 100000); !ok {
			t.Fatalf("login %d refused", i)
		}
	}
	m := l.snapshot(start.Add(50 * time.Second))
	if len(m.Logins) > 62 {
		t.Fatalf("mount record has %d buckets, want at most 62", len(m.Logins))
	}
	total := int64(0)
	for _, b := range m.Logins {
		total += b[1]
	}
	if total != 10000 {
		t.Fatalf("mount record counts %d logins, want 10000", total)
	}
	// Restored, it refuses exactly as the original does, or later, never earlier.
	restored := newHostBudget()
	restored.restore(m)
	now := start.Add(50 * time.Second)
	origAt, _, _ := l.reserve("user:x", now, 10, 10000)
	gotAt, _, _ := restored.reserve("user:x", now, 10, 10000)
	if gotAt.Before(origAt) {
		t.Fatalf("restored budget frees a login at %v, before the original's %v", gotAt, origAt)
	}
	if rec := l.snapshot(start.Add(2 * time.Minute)); len(rec.Logins) != 0 || len(rec.Principals) != 0 {
		t.Fatalf("a minute after the last login the record still holds %d buckets and %d principals",
			len(rec.Logins), len(rec.Principals))
	}
}

// A restart, plugin reload or HA failover builds a new backend over the same
// storage: the logins of the current minute must still count against the budget.
func TestBudgetSpentBeforeARestartStillHoldsAfterIt(t *testing.T) {
	u := newUpstream(t, issuing(24*time.Hour))
	e := newTestEnv(t, nil, nil)
	e.configure(u, map[string]any{"user_logins_per_minute": 3})
	e.addRole("app", "svc@example.com", "pw")
	for i := 0; i < 3; i++ {
		if resp, err := e.doRotate("app"); err != nil || resp.IsError() {
			t.Fatalf("rotate %d: %v %v", i, err, respErr(resp))
		}
		e.clock.Advance(10 * time.Second)
	}

	after := newTestEnv(t, e.storage, e.clock) // the new active node
	_, err := after.doRotate("app")
	expectCodedError(t, err, http.StatusTooManyRequests, `role "app"`, "login budget")
	u.wantCount(t, 3, ": the restarted backend forgot the budget")

	// The first login leaves the window 61 s after it (counted at the whole
	// second after it was sent): then one more login fits.
	after.clock.Advance(32 * time.Second)
	if resp, err := after.doRotate("app"); err != nil || resp.IsError() {
		t.Fatalf("rotate once the first login left the window: %v %v", err, respErr(resp))
	}
	u.wantCount(t, 4, "")
}

// An upstream 429 blocks the username on the node that follows, for every role
// that logs in as that user.
func TestBudgetUpstream429BlockHoldsAfterARestartForEveryRoleOfTheUser(t *testing.T) {
	u := newUpstream(t, rateLimited(func() string { return "300" }))
	e := newTestEnv(t, nil, nil)
	e.configure(u, nil)
	e.addRole("a", "shared@example.com", "pw")
	e.addRole("b", "shared@example.com", "pw")
	_, err := e.read("creds/a")
	expectCodedError(t, err, http.StatusTooManyRequests, `role "a"`)

	u.setHandler(issuing(24 * time.Hour))
	after := newTestEnv(t, e.storage, e.clock)
	after.clock.Advance(2 * time.Minute)
	_, err = after.read("creds/b")
	expectCodedError(t, err, http.StatusTooManyRequests, `role "b"`, "429")
	u.wantCount(t, 1, ": role b was sent during the user's 429 block")
	after.clock.Advance(3*time.Minute + time.Second)
	after.mustRead("creds/b")
}

// After the plugin process restarts (new budgets, every mount restored from its
// own storage), the logins of the last minute of both mounts count exactly once:
// 60 + 30 before, so 10 more fit, not more (a mount forgot) and not fewer (a
// mount counted another's logins as well as its own).
func TestBudgetSharedAcrossMountsRestoredExactlyAfterAProcessRestart(t *testing.T) {
	clock := fakeclock.New()
	u := newUpstream(t, issuing(24*time.Hour))
	a, b, _ := twoMounts(t, clock, u.url, nil)
	for i := range 80 {
		a.addRole(fmt.Sprintf("r%02d", i), fmt.Sprintf("a%02d@example.com", i), "pw")
		b.addRole(fmt.Sprintf("r%02d", i), fmt.Sprintf("b%02d@example.com", i), "pw")
	}
	for i := range 60 {
		a.mustRead(fmt.Sprintf("creds/r%02d", i))
	}
	for i := range 30 {
		b.mustRead(fmt.Sprintf("creds/r%02d", i))
	}
	clock.Advance(10 * time.Second)

	limits := NewBudgets() // the new process
	a2 := newTestEnvWith(t, a.storage, clock, limits)
	newTestEnvWith(t, b.storage, clock, limits) // mounted, never read
	served := 0
	for i := 60; i < 80; i++ {
		if _, err := a2.read(fmt.Sprintf("creds/r%02d", i)); err == nil {
			served++
		} else {
			expectCodedError(t, err, http.StatusTooManyRequests, "login budget of the token host")
		}
	}
	if served != 10 {
		t.Fatalf("%d logins after the restart, want 10 (100 less the 90 of both mounts)", served)
	}
	u.wantCount(t, 100, "")
}

// A budget that cannot be read refuses the login rather than guessing.
func TestBudgetUnreadableRefusesTheLogin(t *testing.T) {
	s, e, u := newFaultyAppEnv(t, "pw")
	e.mustRead("roles/app") // the role is readable
	s.failGets(budgetsStoragePrefix, true)
	_, err := e.read("creds/app")
	expectCodedError(t, err, http.StatusInternalServerError, `role "app"`, "login budget")
	u.wantCount(t, 0, "")
	s.failGets("", false)
	e.mustRead("creds/app")
}

// Logins saved while a write of the budget record is in progress share the
// next write: a burst of N logins costs two writes, not N records of up to N
// principals each, and the record stored last holds every login.
func TestBudgetSavesDuringAWriteShareTheNextWrite(t *testing.T) {
	const burst = 20
	e := newTestEnv(t, nil, nil)
	s := &heldPutStorage{Storage: e.storage, key: recentBudgetKey, entered: make(chan struct{}), release: make(chan struct{})}
	ctx := context.Background()
	errs := make(chan error, burst+1)
	save := func(i int) {
		if _, _, ok := e.b.budgets.reserve(fmt.Sprintf("user:u%d", i), e.clock.Now(), 10, 1000); !ok {
			t.Fatalf("login %d was refused by the budget", i)
		}
		go func() { errs <- e.b.saveBudgets(ctx, s) }()
	}

	save(0)
	<-s.entered // the first write is under way
	for i := 1; i <= burst; i++ {
		save(i)
	}
	for deadline := time.Now().Add(waitFor); e.b.budgets.saveAsked.Load() < burst+1; runtime.Gosched() {
		if time.Now().After(deadline) {
			t.Fatal("the saves did not all start")
		}
	}
	close(s.release)
	for range burst + 1 {
		if err := <-errs; err != nil {
			t.Fatalf("saving the budget: %v", err)
		}
	}

	if n := s.puts.Load(); n != 2 {
		t.Fatalf("%d writes of the budget record, want 2 (the one in progress, then one for the burst)", n)
	}
	rec, err := readBudget(ctx, e.storage, recentBudgetKey)
	if err != nil || rec == nil {
		t.Fatalf("reading the stored record: %v", err)
	}
	if len(rec.Principals) != burst+1 {
		t.Fatalf("the stored record holds %d principals, want %d", len(rec.Principals), burst+1)
	}
}

package iadvize

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"golang.org/x/sync/errgroup"
)

const (
	// periodicConcurrency bounds the logins one periodic run has in flight, so a
	// slow upstream (2 s a login) still gets a minute's budget of roles refreshed
	// in one run.
	periodicConcurrency = 8
	// periodicRunBudget: a run starts no login, and reads no more for the
	// schedule, after this long, so that it ends (its last logins bounded by
	// request_timeout, 10 s by default) before Vault's next tick, a minute after
	// it began: a run still in flight at a tick makes Vault skip it. Vault cancels
	// a periodic function after 90 s.
	periodicRunBudget = 45 * time.Second
	// buildConcurrency bounds the storage reads a schedule build has in flight:
	// each is a round trip to Vault, whose latency overlaps.
	buildConcurrency = 8
)

// periodicRefresh is the backend's PeriodicFunc (README, "When the plugin logs
// in"; docs/login-policy.md). Vault runs it about once a minute on the active node. It logs in for the
// roles whose token enters its refresh window before the next runs, so reads
// find fresh tokens, up to periodicConcurrency at once. When the token host's
// login budget is spent, it waits for the budget to have room if that comes
// before periodicRunBudget, and otherwise leaves the rest to the next run: logins
// are spread under logins_per_minute, and a run can use all of it (a run that
// stopped at a spent budget would find it spent again a minute later, as the
// budget counts over 61 s, and use half). Due roles come from the in-memory
// schedule, so a run costs in proportion to the roles due; the first run after a
// start, a reload or a config change builds the schedule from storage.
func (b *backend) periodicRefresh(ctx context.Context, req *logical.Request) error {
	if !b.WriteSafeReplicationState() {
		return nil
	}
	cfg, err := b.cachedConfig(ctx, req.Storage)
	if err != nil {
		return err
	}
	start := b.now()
	due := 0
	// One debug line a run, no secret: its time, the roles it found due, and the
	// roles scheduled at its end (0 while the schedule is not built).
	defer func() {
		b.Logger().Debug("background refresh run", "took", b.now().Sub(start).String(), "due", due, "scheduled", b.sched.len())
	}()
	b.budgets.forgetIdle(start)
	over := func() bool { return ctx.Err() != nil || b.now().Sub(start) >= periodicRunBudget }
	if err := b.buildSchedule(ctx, req.Storage, cfg, over); err != nil {
		return err
	}
	ready, refreshBefore := b.sched.ready()
	if !ready {
		return nil // a config change came in between: the next run builds again
	}

	queue := b.sched.takeDue(start)
	due = len(queue)
	b.refreshDue(ctx, req.Storage, cfg, &dueQueue{items: queue}, refreshBefore, start, over)
	return nil
}

// dueQueue is what a run has left to refresh: the due roles, earliest first,
// and those a spent host budget turned away, which wait for a slot of the run.
// Safe for the run's concurrent tasks.
type dueQueue struct {
	mu    sync.Mutex // guards items and retry: a leaf, not held while a role is refreshed
	items []scheduleItem
	retry []scheduleItem
}

// next takes a role to refresh: one turned away first.
func (q *dueQueue) next() (scheduleItem, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if n := len(q.retry); n > 0 {
		item := q.retry[n-1]
		q.retry = q.retry[:n-1]
		return item, true
	}
	if len(q.items) == 0 {
		return scheduleItem{}, false
	}
	item := q.items[0]
	q.items = q.items[1:]
	return item, true
}

// turnedAway files a role the host's spent budget turned away.
func (q *dueQueue) turnedAway(item scheduleItem) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.retry = append(q.retry, item)
}

// waiting reports whether roles were turned away since next last took one.
func (q *dueQueue) waiting() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.retry) > 0
}

// refreshDue refreshes the run's due roles, periodicConcurrency at once, while
// the host's budget has room within the run (waitForHostBudget), and files back
// on the schedule the roles it did not get to.
func (b *backend) refreshDue(ctx context.Context, s logical.Storage, cfg *configEntry, q *dueQueue,
	refreshBefore time.Duration, start time.Time, over func() bool) {
	var stop atomic.Bool // the node cannot write
	var g errgroup.Group
	g.SetLimit(periodicConcurrency)
	for {
		item, ok := q.next()
		if !ok {
			if g.Wait(); q.waiting() { // turned away while this loop was done
				continue
			}
			break
		}
		if stop.Load() || !b.waitForHostBudget(ctx, cfg, start, over, func() { _ = g.Wait() }) {
			b.sched.putBack(item)
			break
		}
		g.Go(func() error { // waits for a free slot of the periodicConcurrency
			if stop.Load() || over() {
				b.sched.putBack(item)
				return nil
			}
			if b.refreshScheduled(ctx, s, item, refreshBefore, &stop) {
				q.turnedAway(item)
			}
			return nil
		})
	}
	_ = g.Wait() // the tasks report through the schedule and the log
	for item, ok := q.next(); ok; item, ok = q.next() {
		b.sched.putBack(item)
	}
}

// waitForHostBudget waits until the token host's login budget has room, if that
// comes before the run's end. It reports whether a login may be started. Before
// waiting, it lets the logins in flight end (drain): they hold their slots
// already, and none is sent while it waits.
func (b *backend) waitForHostBudget(ctx context.Context, cfg *configEntry, start time.Time, over func() bool, drain func()) bool {
	drained := false
	for !over() {
		now := b.now()
		at := b.budgets.totalNextFree(now, cfg.LoginsPerMinute)
		switch {
		case !at.After(now):
			return true
		case at.Sub(start) >= periodicRunBudget:
			return false
		case !drained:
			drain()
			drained = true
			continue
		}
		if b.sleep(ctx, at.Sub(now)) != nil {
			return false
		}
	}
	return false
}

// refreshScheduled runs the background refresh of one due role and files it again
// under what came of it. It reports whether the host's spent budget turned the
// login away (the caller tries again once the budget has room).
func (b *backend) refreshScheduled(ctx context.Context, s logical.Storage, item scheduleItem, refreshBefore time.Duration, stop *atomic.Bool) (turnedAway bool) {
	name := item.name
	res, err := b.refreshOnce(ctx, s, name, modeBackground)
	notBefore := time.Time{}
	switch {
	case errors.Is(err, errRoleNotFound):
		b.sched.remove(name)
		return false
	case errors.Is(err, logical.ErrReadOnly):
		stop.Store(true)
		b.sched.putBack(item)
		return false
	case err != nil:
		b.Logger().Warn("background refresh failed", "role", name, "error", err)
		notBefore = b.now().Add(time.Second) // the next run
	case res.refusal != nil && res.refusal.hostFull:
		return true
	case res.refusal != nil && res.refusal.retryAt.IsZero():
		// No login until the credentials are written again (rejected, or bound
		// to another token host): the write files the role again.
		b.sched.remove(name)
		return false
	case res.refusal != nil:
		notBefore = res.refusal.retryAt
	}
	e := b.cache.role(name)
	if e == nil {
		b.sched.touch(name) // dropped meanwhile: the next run reads it
		return false
	}
	if at, ok := backgroundDue(e.state, refreshBefore); ok {
		b.sched.putBack(scheduleItem{name: name, due: latest(at, notBefore)})
	} else {
		b.sched.remove(name)
	}
	return false
}

// buildSchedule fills the schedule from storage when it is not built. The due
// times depend on the token states alone, so it lists tokens/ and reads each
// state (one storage read a role, buildConcurrency at a time), not the roles
// and not through the cache: a start over 100,000 roles must build it within one
// run (BENCHMARKS.md). A state of retired credentials or of a role bound to
// another token host is filed all the same: the refresh finds nothing to do, and
// drops it. A build cut short by the run's end keeps what it read, and the next
// run goes on from there.
func (b *backend) buildSchedule(ctx context.Context, s logical.Storage, cfg *configEntry, over func() bool) error {
	build, bld, ok := b.sched.beginBuild(cfg.RefreshBefore)
	if !ok {
		return nil
	}
	if bld == nil {
		names, err := listTokenStates(ctx, s)
		if err != nil {
			b.sched.finishBuild(build, nil, false)
			return err
		}
		bld = &scheduleBuild{names: names, due: make(map[string]time.Time, len(names))}
	}
	var (
		mu sync.Mutex // guards bld.due: a leaf
		g  errgroup.Group
	)
	g.SetLimit(buildConcurrency)
	for ; bld.next < len(bld.names) && !over(); bld.next++ {
		name := bld.names[bld.next]
		g.Go(func() error {
			st, err := readTokenState(ctx, s, name)
			if err != nil {
				b.Logger().Warn("background refresh: reading a token state failed", "role", name, "error", err)
			}
			at, due := time.Time{}, err != nil // a failed read is tried again by the next run
			if err == nil {
				at, due = backgroundDue(st, cfg.RefreshBefore)
			}
			if due {
				mu.Lock()
				bld.due[name] = at
				mu.Unlock()
			}
			return nil
		})
	}
	_ = g.Wait() // the tasks report through bld.due and the log
	if bld.next < len(bld.names) {
		b.sched.suspendBuild(build, bld)
		b.Logger().Warn("background refresh: the run ended before every token state was read; the next run goes on",
			"read", bld.next, "roles", len(bld.names))
		return nil
	}
	b.sched.finishBuild(build, bld.due, true)
	return nil
}

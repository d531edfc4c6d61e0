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
	// periodicRunBudget: a run starts no login after this long. Vault cancels a
	// periodic function after 90 s; a login started at the limit still ends in
	// time (request_timeout, 10 s by default).
	periodicRunBudget = 60 * time.Second
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
	cfg, err := b.getConfig(ctx, req.Storage)
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
	b.limits.forgetIdle(start)
	over := func() bool { return ctx.Err() != nil || b.now().Sub(start) >= periodicRunBudget }
	if err := b.buildSchedule(ctx, req.Storage, cfg, over); err != nil {
		return err
	}
	ready, refreshBefore := b.sched.ready()
	if !ready {
		return nil // a config change came in between: the next run builds again
	}

	// Due roles, earliest first; those a spent host budget turned away wait in
	// retry for a slot of this run.
	queue := b.sched.takeDue(start)
	due = len(queue)
	var (
		stop atomic.Bool // the node cannot write
		// mu guards queue and retry: a leaf, not held while a role is refreshed.
		mu    sync.Mutex
		retry []scheduleItem
	)
	next := func() (scheduleItem, bool) {
		mu.Lock()
		defer mu.Unlock()
		if n := len(retry); n > 0 {
			item := retry[n-1]
			retry = retry[:n-1]
			return item, true
		}
		if len(queue) == 0 {
			return scheduleItem{}, false
		}
		item := queue[0]
		queue = queue[1:]
		return item, true
	}
	var g errgroup.Group
	g.SetLimit(periodicConcurrency)
	for {
		item, ok := next()
		if !ok {
			if g.Wait(); len(retry) > 0 { // turned away while this loop was done
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
			if b.refreshScheduled(ctx, req.Storage, item, refreshBefore, &stop) {
				mu.Lock()
				retry = append(retry, item)
				mu.Unlock()
			}
			return nil
		})
	}
	_ = g.Wait() // the tasks report through the schedule and the log
	for item, ok := next(); ok; item, ok = next() {
		b.sched.putBack(item)
	}
	return nil
}

// waitForHostBudget waits until the token host's login budget has room, if that
// comes before the run's end. It reports whether a login may be started. Before
// waiting, it lets the logins in flight end (drain): they hold their slots
// already, and none is sent while it waits.
func (b *backend) waitForHostBudget(ctx context.Context, cfg *configEntry, start time.Time, over func() bool, drain func()) bool {
	drained := false
	for !over() {
		now := b.now()
		at := b.limits.totalNextFree(now, cfg.LoginsPerMinute)
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

// buildSchedule fills the schedule from storage when it is not built: every role,
// read through the cache (so a build cut short by over is resumed by the next run
// mostly from memory).
func (b *backend) buildSchedule(ctx context.Context, s logical.Storage, cfg *configEntry, over func() bool) error {
	build, ok := b.sched.beginBuild(cfg.RefreshBefore)
	if !ok {
		return nil
	}
	names, err := listRoles(ctx, s)
	if err != nil {
		b.sched.finishBuild(build, nil, false)
		return err
	}
	due := make(map[string]time.Time, len(names))
	for _, name := range names {
		if over() {
			b.sched.finishBuild(build, nil, false)
			b.Logger().Warn("background refresh: the run ended before every role was read; the next run goes on",
				"roles", len(names))
			return nil
		}
		e, err := b.loadEntry(ctx, s, name)
		switch {
		case err != nil:
			b.Logger().Warn("background refresh: reading role failed", "role", name, "error", err)
			due[name] = time.Time{} // tried again by the next run
		case e != nil:
			if at, ok := backgroundDue(e.state, cfg.RefreshBefore); ok {
				due[name] = at
			}
		}
	}
	b.sched.finishBuild(build, due, true)
	return nil
}

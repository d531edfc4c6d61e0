package iadvize

import (
	"context"
	"errors"
	"fmt"
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
// in"). Vault runs it about once a minute on the active node. It logs in for the
// roles whose token enters its refresh window before the next runs, so reads
// find fresh tokens, and stops for this run once the token host's login budget is
// spent: the rest wait for the next run, which spreads logins under
// logins_per_minute. Due roles come from the in-memory schedule, so a run costs
// in proportion to the roles due; the first run after a start, a reload or a
// config change builds the schedule from storage.
func (b *backend) periodicRefresh(ctx context.Context, req *logical.Request) error {
	if !b.canWrite() {
		return nil
	}
	cfg, err := b.getConfig(ctx, req.Storage)
	if err != nil {
		return err
	}
	start := b.now()
	b.limits.forgetIdle(start)
	over := func() bool { return ctx.Err() != nil || b.now().Sub(start) >= periodicRunBudget }
	if err := b.buildSchedule(ctx, req.Storage, cfg, over); err != nil {
		return err
	}
	ready, refreshBefore := b.sched.ready()
	if !ready {
		return nil // a config change came in between: the next run builds again
	}

	var stop atomic.Bool // the host's budget is spent, or the node cannot write
	due := b.sched.takeDue(start)
	var g errgroup.Group
	g.SetLimit(periodicConcurrency)
	for i, item := range due {
		if stop.Load() || over() {
			for _, rest := range due[i:] {
				b.sched.putBack(rest)
			}
			break
		}
		g.Go(func() error {
			if stop.Load() || over() {
				b.sched.putBack(item)
				return nil
			}
			b.refreshScheduled(ctx, req.Storage, item, refreshBefore, &stop)
			return nil
		})
	}
	_ = g.Wait() // the tasks report through the schedule and the log
	return nil
}

// refreshScheduled runs the background refresh of one due role and files it again
// under what came of it.
func (b *backend) refreshScheduled(ctx context.Context, s logical.Storage, item scheduleItem, refreshBefore time.Duration, stop *atomic.Bool) {
	name := item.name
	res, err := b.shared(ctx, s, name, modeBackground)
	notBefore := time.Time{}
	switch {
	case errors.Is(err, errRoleNotFound):
		b.sched.remove(name)
		return
	case errors.Is(err, logical.ErrReadOnly):
		stop.Store(true)
		b.sched.putBack(item)
		return
	case err != nil:
		b.Logger().Warn("background refresh failed", "role", name, "error", err)
		notBefore = b.now().Add(time.Second) // the next run
	case res.failed != nil && res.failed.hostFull:
		b.Logger().Debug("background refresh: the token host's login budget is spent; the rest wait for the next run")
		stop.Store(true)
		b.sched.putBack(item)
		return
	case res.failed != nil:
		notBefore = res.failed.retryAt
	}
	e := b.cached(name)
	if e == nil {
		b.sched.touch(name) // dropped meanwhile: the next run reads it
		return
	}
	if at, ok := backgroundDue(e.state, refreshBefore); ok {
		b.sched.putBack(scheduleItem{name: name, due: latest(at, notBefore)})
	} else {
		b.sched.remove(name)
	}
}

// buildSchedule fills the schedule from storage when it is not built: every role,
// read through the cache (so a build cut short by over is resumed by the next run
// mostly from memory).
func (b *backend) buildSchedule(ctx context.Context, s logical.Storage, cfg *configEntry, over func() bool) error {
	build, ok := b.sched.beginBuild(cfg.RefreshBefore)
	if !ok {
		return nil
	}
	names, err := s.List(ctx, rolesStoragePrefix)
	if err != nil {
		b.sched.finishBuild(build, nil, false)
		return fmt.Errorf("listing roles: %w", err)
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

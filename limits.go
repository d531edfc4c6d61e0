package iadvize

import (
	"sync"
	"time"
)

// budgetWindow is the span over which login budgets count: a minute, plus a second
// of margin for clock differences with upstream, so that "at most N a minute"
// holds whichever way upstream counts its minute.
const budgetWindow = time.Minute + time.Second

// loginLimiter enforces SPEC 3 items 4 and 6 before any upstream call: at most
// user_logins_per_minute logins per principal and logins_per_minute per mount in
// any minute, and no login for a principal that upstream answered 429 until its
// block ends. A sliding window (not a token bucket, which would let through up to
// twice the budget in one minute) keeps "at most N in any minute" exact. State is
// in memory: after a restart the windows start empty.
type loginLimiter struct {
	mu         sync.Mutex
	mount      slidingWindow
	principals map[string]*principalBudget
}

// principalBudget is one username's (or client ID's) window and 429 block.
type principalBudget struct {
	window       slidingWindow
	blockedUntil time.Time
}

// slidingWindow holds the times of the logins of the last budgetWindow, oldest first.
type slidingWindow struct {
	times []time.Time
}

func newLoginLimiter() *loginLimiter {
	return &loginLimiter{principals: make(map[string]*principalBudget)}
}

// prune drops the logins older than the window.
func (w *slidingWindow) prune(now time.Time) {
	cut := 0
	for cut < len(w.times) && !w.times[cut].After(now.Add(-budgetWindow)) {
		cut++
	}
	if cut > 0 {
		w.times = append(w.times[:0], w.times[cut:]...)
	}
}

// nextFree is the earliest time a login fits in a budget of limit per window.
func (w *slidingWindow) nextFree(now time.Time, limit int) time.Time {
	w.prune(now)
	if len(w.times) < limit {
		return now
	}
	return w.times[len(w.times)-limit].Add(budgetWindow)
}

// reserve takes one login from both budgets when both have room and the principal
// is not blocked. Otherwise it takes nothing and returns the earliest time a login
// may happen, and whether the mount budget (rather than the principal's) is what
// stands in the way.
func (l *loginLimiter) reserve(principal string, now time.Time, perPrincipal, perMount int) (retryAt time.Time, mountFull bool, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.principals[principal]
	if p == nil {
		p = &principalBudget{}
		l.principals[principal] = p
	}
	mountAt := l.mount.nextFree(now, perMount)
	at := latest(p.blockedUntil, p.window.nextFree(now, perPrincipal), mountAt)
	if at.After(now) {
		return at, mountAt.After(now), false
	}
	p.window.times = append(p.window.times, now)
	l.mount.times = append(l.mount.times, now)
	return now, false, true
}

// block stops logins for a principal until the given time (upstream said 429).
func (l *loginLimiter) block(principal string, until time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.principals[principal]
	if p == nil {
		p = &principalBudget{}
		l.principals[principal] = p
	}
	if until.After(p.blockedUntil) {
		p.blockedUntil = until
	}
}

// blockedUntil is when the principal's upstream 429 block ends, or the zero time
// when it is not blocked at now.
func (l *loginLimiter) blockedUntil(principal string, now time.Time) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	if p := l.principals[principal]; p != nil && p.blockedUntil.After(now) {
		return p.blockedUntil
	}
	return time.Time{}
}

// nextAllowed is the earliest time a login for the principal may happen.
func (l *loginLimiter) nextAllowed(principal string, now time.Time, perPrincipal, perMount int) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	at := l.mount.nextFree(now, perMount)
	if p := l.principals[principal]; p != nil {
		at = latest(at, p.blockedUntil, p.window.nextFree(now, perPrincipal))
	}
	return at
}

// mountHasRoom reports whether the mount budget allows a login now.
func (l *loginLimiter) mountHasRoom(now time.Time, perMount int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.mount.nextFree(now, perMount).After(now)
}

// forgetIdle drops principals with no recent login and no block, so the map does
// not grow with every username ever seen.
func (l *loginLimiter) forgetIdle(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, p := range l.principals {
		p.window.prune(now)
		if len(p.window.times) == 0 && !p.blockedUntil.After(now) {
			delete(l.principals, k)
		}
	}
}

func latest(ts ...time.Time) time.Time {
	var m time.Time
	for _, t := range ts {
		if t.After(m) {
			m = t
		}
	}
	return m
}

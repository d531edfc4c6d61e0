package iadvize

import (
	"slices"
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
// twice the budget in one minute) keeps "at most N in any minute" exact. Memory
// serves the decisions; storage keeps a copy (budget_store.go) so that a restart
// or failover does not reset the minute.
type loginLimiter struct {
	mu          sync.Mutex
	mount       slidingWindow
	mountLoaded bool // merged with storage (budget_store.go)
	principals  map[string]*principalBudget
}

// principalBudget is one username's (or client ID's) window and 429 block.
type principalBudget struct {
	window       slidingWindow
	blockedUntil time.Time
	loaded       bool // merged with storage (budget_store.go)
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
	p := l.principal(principal)
	mountAt := l.mount.nextFree(now, perMount)
	at := latest(p.blockedUntil, p.window.nextFree(now, perPrincipal), mountAt)
	if at.After(now) {
		return at, mountAt.After(now), false
	}
	p.window.times = append(p.window.times, now)
	l.mount.times = append(l.mount.times, now)
	return now, false, true
}

// principal returns a principal's budget, creating it. Callers hold l.mu.
func (l *loginLimiter) principal(name string) *principalBudget {
	p := l.principals[name]
	if p == nil {
		p = &principalBudget{}
		l.principals[name] = p
	}
	return p
}

// needsLoad reports which budgets have not been merged with storage yet.
func (l *loginLimiter) needsLoad(principal string) (needPrincipal, needMount bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.principal(principal).loaded, !l.mountLoaded
}

// merge adds stored budgets (nil: not read) to memory, once.
func (l *loginLimiter) merge(principal string, p, m *budgetRecord) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if pb := l.principal(principal); p != nil && !pb.loaded {
		pb.window.merge(p.times())
		pb.blockedUntil = latest(pb.blockedUntil, p.BlockedUntil)
		pb.loaded = true
	}
	if m != nil && !l.mountLoaded {
		l.mount.merge(m.times())
		l.mountLoaded = true
	}
}

// snapshot copies a principal's and the mount's budgets for storage.
func (l *loginLimiter) snapshot(principal string) (p, m *budgetRecord) {
	l.mu.Lock()
	defer l.mu.Unlock()
	pb := l.principal(principal)
	return newBudgetRecord(pb.window.times, pb.blockedUntil), newBudgetRecord(l.mount.times, time.Time{})
}

// merge adds logins to the window, keeping it in time order.
func (w *slidingWindow) merge(ts []time.Time) {
	w.times = append(w.times, ts...)
	slices.SortFunc(w.times, time.Time.Compare)
}

// block stops logins for a principal until the given time (upstream said 429).
func (l *loginLimiter) block(principal string, until time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.principal(principal)
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

package iadvize

import (
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// budgetWindow is the span over which login budgets count: a minute, plus a second
// of margin for clock differences with upstream, so that "at most N a minute"
// holds whichever way upstream counts its minute.
const budgetWindow = time.Minute + time.Second

// Budgets holds the login budgets of every mount one plugin process serves, one
// hostBudget per upstream token host. Upstream counts logins per user and per
// source IP, and every mount of a Vault node is one IP: mounts that log in to the
// same token host share its windows (README, "When the plugin logs in"). Build one
// in main and hand it to FactoryWith; tests build their own. Safe for concurrent
// use.
type Budgets struct {
	// mu guards hosts, the map only (order: docs/locks.md).
	mu    sync.Mutex
	hosts map[string]*hostBudget
}

// NewBudgets returns budgets with no login counted.
func NewBudgets() *Budgets {
	return &Budgets{hosts: make(map[string]*hostBudget)}
}

// host returns the budget of a token host (upstreamHost), creating it.
func (l *Budgets) host(key string) *hostBudget {
	l.mu.Lock()
	defer l.mu.Unlock()
	h := l.hosts[key]
	if h == nil {
		h = newHostBudget()
		l.hosts[key] = h
	}
	return h
}

// forgetIdle runs hostBudget.forgetIdle on every host.
func (l *Budgets) forgetIdle(now time.Time) {
	l.mu.Lock()
	hosts := make([]*hostBudget, 0, len(l.hosts))
	for _, h := range l.hosts {
		hosts = append(hosts, h)
	}
	l.mu.Unlock()
	for _, h := range hosts {
		h.forgetIdle(now)
	}
}

// mountBudgets is one mount's view of the process's budgets: the budget of the
// token host its config names (set by use), and a copy of its own logins to that
// host, which is what the mount stores (budget_record.go). Principals are keyed by
// principalHash, as in storage.
type mountBudgets struct {
	shared  *Budgets
	own     *Budgets // this mount's logins only
	current atomic.Pointer[hostBudgets]

	// restoreMu guards restored, and makes the stored record's merge happen once
	// per host (restoreBudgets): held across the storage read of budgets/ and the
	// merge (order: docs/locks.md).
	restoreMu sync.Mutex
	restored  map[string]bool // token host -> this mount's record was merged
	// saveMu orders the writes of budgets/recent (saveBudgets), so an older
	// snapshot never overwrites a newer one: held across the snapshot and the
	// storage write (order: docs/locks.md). It guards saveCovered and saveErr:
	// the count of saveBudgets calls the last write holds (saveAsked as it
	// began), and that write's error.
	saveMu      sync.Mutex
	saveAsked   atomic.Uint64 // saveBudgets calls so far
	saveCovered uint64
	saveErr     error
}

// hostBudgets is one token host's shared budget and this mount's own logins to it.
type hostBudgets struct {
	host   string
	shared *hostBudget
	own    *hostBudget
}

func newMountBudgets(shared *Budgets) *mountBudgets {
	m := &mountBudgets{shared: shared, own: NewBudgets(), restored: make(map[string]bool)}
	m.use(upstreamHost(defaultTokenURL))
	return m
}

// use makes the mount count its logins against a token host (upstreamHost).
func (m *mountBudgets) use(host string) {
	if cur := m.current.Load(); cur != nil && cur.host == host {
		return
	}
	m.current.Store(&hostBudgets{host: host, shared: m.shared.host(host), own: m.own.host(host)})
}

// reserve takes one login from the shared budgets of the current host (see
// hostBudget.reserve) and, when it did, counts it in the mount's own logins.
func (m *mountBudgets) reserve(principal string, now time.Time, perPrincipal, total int) (retryAt time.Time, hostFull bool, ok bool) {
	h, key := m.current.Load(), principalHash(principal)
	retryAt, hostFull, ok = h.shared.reserve(key, now, perPrincipal, total)
	if ok {
		h.own.record(key, now)
	}
	return retryAt, hostFull, ok
}

// block stops logins for a principal to the current host until the given time.
func (m *mountBudgets) block(principal string, until time.Time) {
	h, key := m.current.Load(), principalHash(principal)
	h.shared.block(key, until)
	h.own.block(key, until)
}

func (m *mountBudgets) blockedUntil(principal string, now time.Time) time.Time {
	return m.current.Load().shared.blockedUntil(principalHash(principal), now)
}

func (m *mountBudgets) nextAllowed(principal string, now time.Time, perPrincipal, total int) time.Time {
	return m.current.Load().shared.nextAllowed(principalHash(principal), now, perPrincipal, total)
}

// totalNextFree is the earliest time the current host's total budget has room.
func (m *mountBudgets) totalNextFree(now time.Time, total int) time.Time {
	l := m.current.Load().shared
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total.nextFree(now, total)
}

// host is the token host the mount counts against.
func (m *mountBudgets) host() string { return m.current.Load().host }

func (m *mountBudgets) forgetIdle(now time.Time) {
	m.shared.forgetIdle(now)
	m.own.forgetIdle(now)
}

// upstreamHost names the token host a mount's budgets count against: host:port of
// token_url, lower-cased, the port from the scheme when the URL names none, so
// that every spelling of one host shares one budget.
func upstreamHost(tokenURL string) string {
	u, err := url.Parse(tokenURL)
	if err != nil || u.Hostname() == "" {
		return strings.ToLower(tokenURL)
	}
	port := u.Port()
	if port == "" {
		port = "443"
		if strings.EqualFold(u.Scheme, "http") {
			port = "80"
		}
	}
	return net.JoinHostPort(strings.TrimSuffix(strings.ToLower(u.Hostname()), "."), port)
}

// hostBudget enforces the login budgets of one token host before any upstream
// call: at most user_logins_per_minute logins per principal and logins_per_minute
// in all in any minute, and no login for a principal that upstream answered 429
// until its block ends. Each mount applies its own configured numbers to the
// shared counts. A sliding window (not a token bucket, which would let through up
// to twice the budget in one minute) keeps "at most N in any minute" exact. Memory
// serves the decisions; each mount keeps a copy of its own logins in storage
// (budget_record.go) so that a restart or failover does not reset the minute.
type hostBudget struct {
	// mu guards the windows and blocks, for in-memory work only (order:
	// docs/locks.md).
	mu         sync.Mutex
	total      slidingWindow
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

func newHostBudget() *hostBudget {
	return &hostBudget{principals: make(map[string]*principalBudget)}
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
// may happen, and whether the host's total budget (rather than the principal's)
// is what stands in the way.
func (l *hostBudget) reserve(principal string, now time.Time, perPrincipal, total int) (retryAt time.Time, hostFull bool, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.principal(principal)
	totalAt := l.total.nextFree(now, total)
	at := latest(p.blockedUntil, p.window.nextFree(now, perPrincipal), totalAt)
	if at.After(now) {
		return at, totalAt.After(now), false
	}
	l.add(p, now)
	return now, false, true
}

// record counts a login without judging it: a mount's own copy of its logins,
// for storage.
func (l *hostBudget) record(principal string, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.add(l.principal(principal), at)
}

func (l *hostBudget) add(p *principalBudget, at time.Time) {
	p.window.times = append(p.window.times, at)
	l.total.times = append(l.total.times, at)
}

// principal returns a principal's budget, creating it. Callers hold l.mu.
func (l *hostBudget) principal(name string) *principalBudget {
	p := l.principals[name]
	if p == nil {
		p = &principalBudget{}
		l.principals[name] = p
	}
	return p
}

// restore adds a stored record's logins and 429 blocks to the windows. Adding
// never drops a count: what other mounts counted stays, and a login counted twice
// only makes the window stricter.
func (l *hostBudget) restore(rec *budgetRecord) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total.merge(bucketTimes(rec.Logins))
	for key, buckets := range rec.Principals {
		l.principal(key).window.merge(bucketTimes(buckets))
	}
	for key, until := range rec.Blocked {
		p := l.principal(key)
		p.blockedUntil = latest(p.blockedUntil, until)
	}
}

// snapshot copies the windows of the last budgetWindow, and the blocks not over
// at now, for storage.
func (l *hostBudget) snapshot(now time.Time) *budgetRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total.prune(now)
	rec := &budgetRecord{Logins: secondBuckets(l.total.times)}
	for key, p := range l.principals {
		p.window.prune(now)
		if len(p.window.times) > 0 {
			if rec.Principals == nil {
				rec.Principals = make(map[string][][2]int64)
			}
			rec.Principals[key] = secondBuckets(p.window.times)
		}
		if p.blockedUntil.After(now) {
			if rec.Blocked == nil {
				rec.Blocked = make(map[string]time.Time)
			}
			rec.Blocked[key] = p.blockedUntil
		}
	}
	return rec
}

// merge adds logins to the window, keeping it in time order.
func (w *slidingWindow) merge(ts []time.Time) {
	w.times = append(w.times, ts...)
	slices.SortFunc(w.times, time.Time.Compare)
}

// block stops logins for a principal until the given time (upstream said 429).
func (l *hostBudget) block(principal string, until time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.principal(principal)
	if until.After(p.blockedUntil) {
		p.blockedUntil = until
	}
}

// blockedUntil is when the principal's upstream 429 block ends, or the zero time
// when it is not blocked at now.
func (l *hostBudget) blockedUntil(principal string, now time.Time) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	if p := l.principals[principal]; p != nil && p.blockedUntil.After(now) {
		return p.blockedUntil
	}
	return time.Time{}
}

// nextAllowed is the earliest time a login for the principal may happen.
func (l *hostBudget) nextAllowed(principal string, now time.Time, perPrincipal, total int) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	at := l.total.nextFree(now, total)
	if p := l.principals[principal]; p != nil {
		at = latest(at, p.blockedUntil, p.window.nextFree(now, perPrincipal))
	}
	return at
}

// forgetIdle drops principals with no recent login and no block, so the map does
// not grow with every username ever seen.
func (l *hostBudget) forgetIdle(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total.prune(now)
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

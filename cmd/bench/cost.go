package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/vaulttest"
)

// leaseSnapshot is what the server holds at one moment (or, summed, the
// deltas over a path's reads): leases, the file storage and its sys/expire
// directory, Vault's RSS and live heap.
type leaseSnapshot struct {
	leases          int
	storage, expire dirUsage
	rss, heap       int64
}

func (l *leaseSnapshot) addDelta(after, before leaseSnapshot) {
	l.leases, l.rss, l.heap = l.leases+after.leases-before.leases, l.rss+after.rss-before.rss, l.heap+after.heap-before.heap
	l.storage.addDelta(after.storage, before.storage)
	l.expire.addDelta(after.expire, before.expire)
}

// leasePhase reads creds/ and static-creds/ the same number of times on a
// server with file storage, in interleaved chunks, and reports what each left
// behind: leases, storage files and bytes, and Vault's memory.
func leasePhase(t *vaulttest.Program, opts options) section {
	sc := vaulttest.NewScope(t)
	defer sc.Close()
	logf("leases: starting a Vault server with file storage")
	v := startVault(sc, true)
	v.mountIadvize(sc, "iadvize", startFake(sc, fakeiadvize.Options{}), nil, "app")
	ld := newLoader(v.Addr, v.benchToken(sc, "iadvize/*"), 64)
	if r := ld.attack(attack{paths: []string{"iadvize/static-creds/app"}, conc: 1, n: 1}); r.Errors > 0 { // the login
		sc.Fatalf("first read: %s", r.FirstErr)
	}
	expireDir := filepath.Join(v.dataDir, "sys", "expire")
	snap := func() leaseSnapshot {
		return leaseSnapshot{v.leaseCount(sc, "iadvize/creds/app/"), usage(v.dataDir), usage(expireDir), rss(v.Pid()), v.liveHeap()}
	}
	// acc is one path's reads and sum of the chunks' deltas.
	type acc struct {
		path          string
		reads, errors int
		leaseSnapshot
		rates rounds
	}
	accs := []*acc{{path: "iadvize/creds/app"}, {path: "iadvize/static-creds/app"}}
	const chunks = 5
	per := max(opts.leaseReads/chunks, 1)
	first := snap()
	before := first
	interleave("leases", chunks, accs, func(a *acc) loadResult {
		r := ld.attack(attack{paths: []string{a.path}, conc: 8, n: per})
		after := snap()
		a.reads, a.errors = a.reads+r.Reads, a.errors+r.Errors
		a.addDelta(after, before)
		a.rates, before = append(a.rates, r), after
		return r
	})
	c, s := accs[0], accs[1]

	var b strings.Builder
	fmt.Fprintf(&b, "`storage \"file\"`, one role, a non-root token; %s reads of each path by 8 clients, %d interleaved chunks. Live heap:\n"+
		"HeapAlloc after a forced GC (`sys/pprof/heap?gc=1`). A lease is a file under `sys/expire/id/` (the answer encrypted,\n"+
		"token included) and one under `sys/expire/token/`, until it expires (24 h less 30 s here) or is revoked.\n\n", fmtInt(per*chunks), chunks)
	var rows [][]string
	for _, a := range accs {
		rows = append(rows, []string{"`" + a.path + "`", fmtInt(a.reads), fmtInt(a.leases), fmtInt(a.storage.Files), fmtBytes(a.storage.Bytes),
			fmtBytes(a.storage.DiskBytes), fmtBytes(a.expire.Bytes), fmtBytes(a.heap), fmtBytes(a.rss), f0(a.rates.med(loadResult.rate))})
	}
	b.WriteString(table([]string{"path", "reads", "new leases", "new storage files", "storage bytes", "on disk", "of which sys/expire",
		"Vault live heap Δ", "Vault RSS Δ", "reads/s (median chunk)"}, rows))
	perRead := func(n int64) float64 { return float64(n) / float64(max(c.reads, 1)) }
	fmt.Fprintf(&b, "\nPer creds/ read: %.2f leases, %.2f files, %s of storage (%s on disk), %s of Vault live heap\n"+
		"(static-creds/: %s per read, i.e. noise).\n", perRead(int64(c.leases)), perRead(c.storage.Files), fmtBytes(int64(perRead(c.storage.Bytes))),
		fmtBytes(int64(perRead(c.storage.DiskBytes))), fmtBytes(int64(perRead(c.heap))), fmtBytes(s.heap/int64(max(s.reads, 1))))
	fmt.Fprintf(&b, "creds/ reads/s ÷ static-creds/ reads/s on file storage, median of the chunks' ratios: %.2f.\n", c.rates.vs(s.rates))

	const leaseLife = 24*3600 - 30 // seconds: a lease lives as long as the token, less the 30 s margin
	fmt.Fprintf(&b, "\nAt a steady rate of creds/ reads with 24-hour tokens, Vault holds rate × %s leases at any time\n"+
		"(Vault warns above 256,000). From the per-read figures above:\n\n", fmtInt(leaseLife))
	rows = nil
	for _, rate := range []float64{0.1, 1, 10} {
		n := rate * leaseLife
		rows = append(rows, []string{fmt.Sprint(rate), fmtInt(int64(n)), fmtBytes(int64(n * perRead(c.storage.Bytes))),
			fmtBytes(int64(n * perRead(c.storage.DiskBytes))), fmtBytes(int64(n * perRead(c.heap)))})
	}
	b.WriteString(table([]string{"creds/ reads per second (all clients)", "live leases", "storage", "on disk (file storage)", "Vault heap"}, rows))
	fmt.Fprintf(&b, "\nLive leases under `iadvize/creds/app/`: %s before, %s after. `sys/expire` after the run:\n\n", fmtInt(first.leases), fmtInt(before.leases))
	rows = nil
	subs, _ := os.ReadDir(expireDir) // sorted by name
	for _, sub := range subs {
		u := usage(filepath.Join(expireDir, sub.Name()))
		rows = append(rows, []string{"`sys/expire/" + sub.Name() + "/`", fmtInt(u.Files), fmtBytes(u.Bytes), fmtBytes(u.DiskBytes)})
	}
	b.WriteString(table([]string{"directory", "files", "bytes", "on disk"}, rows))
	if c.errors+s.errors > 0 {
		fmt.Fprintf(&b, "\nErrors: %d on creds/, %d on static-creds/.\n", c.errors, s.errors)
	}
	return section{order: 20, title: "What leases cost", body: b.String()}
}

// scaleSmallRoles is the size of the reference mount of the memory run.
const scaleSmallRoles = 10

// names are prefix + "r0" … "r{n-1}": role names, or paths to them.
func names(prefix string, n int) (ns []string) {
	for i := range n {
		ns = append(ns, fmt.Sprintf("%sr%d", prefix, i))
	}
	return ns
}

type memSnap struct{ plugin, vault, vaultHeap int64 }

// scalePhase puts opts.roles roles holding tokens into one mount of one plugin
// process and reports its memory, the cost of writing roles, and the read cost
// at that size against a mount of 10 roles.
func scalePhase(t *vaulttest.Program, opts options) section {
	sc := vaulttest.NewScope(t)
	defer sc.Close()
	logf("scale: starting a Vault dev server for %s roles", fmtInt(opts.roles))
	v := startVault(sc, false)
	f := startFake(sc, fakeiadvize.Options{})
	f.SetLimits(0, 0) // no upstream limits: this run logs in once per role
	cfg := map[string]any{"logins_per_minute": 1_000_000, "user_logins_per_minute": 10}
	v.mountIadvize(sc, "small", f, cfg, names("", scaleSmallRoles)...)
	v.mountIadvize(sc, "big", f, cfg)
	ld := newLoader(v.Addr, v.benchToken(sc, "small/*", "big/*"), 128)
	if r := ld.attack(attack{paths: names("small/static-creds/", scaleSmallRoles), conc: 1, n: scaleSmallRoles}); r.Errors > 0 {
		sc.Fatalf("first reads of the small mount: %s", r.FirstErr)
	}
	pid := v.pluginPid(vaulttest.PluginName)
	if pid == 0 {
		sc.Fatalf("no plugin process under the Vault process")
	}
	snap := func() memSnap { return memSnap{plugin: rss(pid), vault: rss(v.Pid()), vaultHeap: v.liveHeap()} }
	time.Sleep(2 * time.Second) // let the mounts settle before the baseline
	base := snap()

	logf("scale: writing %s roles", fmtInt(opts.roles))
	writeTime, lat := v.writeRoles(sc, "big", f, opts.roles)
	written := snap()

	logf("scale: reading every role once (%s logins)", fmtInt(opts.roles))
	before := f.Stats().LoginAttempts
	warm := ld.attack(attack{paths: names("big/static-creds/", opts.roles), conc: 64, n: opts.roles})
	if warm.Errors > 0 {
		sc.Fatalf("first reads of the roles: %d failed (first: %s)", warm.Errors, warm.FirstErr)
	}
	logins := f.Stats().LoginAttempts - before
	time.Sleep(2 * time.Second)
	holding := snap()

	logf("scale: read cost at %s roles against %d", fmtInt(opts.roles), scaleSmallRoles)
	type set struct {
		kind, label string
		paths       []string
	}
	var sets []set
	for _, kind := range []string{"static-creds", "creds"} {
		sets = append(sets, set{kind + "/", fmt.Sprintf("%d roles in 1 mount", scaleSmallRoles), names("small/"+kind+"/", scaleSmallRoles)},
			set{kind + "/", fmtInt(opts.roles) + " roles in 1 mount", names("big/"+kind+"/", opts.roles)})
	}
	res := interleave("scale", opts.rounds, sets, func(s set) loadResult {
		return ld.attack(attack{paths: s.paths, conc: 8, d: opts.cell, vaultPid: v.Pid(), pluginPid: pid})
	})
	after := snap()

	var b strings.Builder
	fmt.Fprintf(&b, "One Vault dev server, one plugin process serving a mount of %s roles and a mount of %d; each role has its own\n"+
		"service user and, after one read, its own cached 24-hour token. Plugin process: the Vault process's child.\n\n",
		fmtInt(opts.roles), scaleSmallRoles)
	perRole := func(a, b int64) string { return fmtBytes((a - b) / int64(opts.roles)) }
	row := func(label string, s memSnap) []string {
		return []string{label, fmtBytes(s.plugin), fmtBytes(s.vault), fmtBytes(s.vaultHeap)}
	}
	b.WriteString(table([]string{"state", "plugin RSS", "Vault RSS", "Vault live heap"}, [][]string{
		row(fmt.Sprintf("2 mounts, %d roles holding tokens", scaleSmallRoles), base),
		row(fmt.Sprintf("+ %s roles written, no token yet", fmtInt(opts.roles)), written),
		row(fmt.Sprintf("+ each read once: %s roles holding tokens", fmtInt(opts.roles)), holding),
		row("after the read-cost rounds below (creds/ leases included)", after),
		{"**per role holding a token** (Δ ÷ roles, from the baseline)", "**" + perRole(holding.plugin, base.plugin) + "**",
			perRole(holding.vault, base.vault), perRole(holding.vaultHeap, base.vaultHeap)},
	}))
	fmt.Fprintf(&b, "\nLogins for the first reads: %s for %s roles (64 clients; %s).\n", fmtInt(logins), fmtInt(opts.roles), fmtDur(warm.Elapsed))

	fmt.Fprintf(&b, "\n**Cost of a role write by the number of roles its mount already holds** (%d writers); %s for all:\n\n",
		roleWriters, fmtDur(writeTime))
	b.WriteString(writeCostTable(lat))

	fmt.Fprintf(&b, "\n**Read cost at %s roles against %d roles**, same server and plugin process, 8 clients each reading a random\n"+
		"role of the set, %d interleaved rounds of %s; ratio = reads/s ÷ reads/s of the %d-role set, within a round:\n\n",
		fmtInt(opts.roles), scaleSmallRoles, opts.rounds, opts.cell, scaleSmallRoles)
	var rows [][]string
	for i, s := range sets {
		rs := res[i]
		rows = append(rows, []string{s.kind, s.label, f0(rs.med(loadResult.rate)), f2(rs.vs(res[i-i%2])), rs.dur(loadResult.p50),
			f0(rs.med(loadResult.vaultCPU)), f0(rs.med(loadResult.pluginCPU))})
	}
	b.WriteString(table([]string{"path", "roles read", "reads/s", "ratio", "p50", "Vault CPU µs/read", "plugin CPU µs/read"}, rows))
	return section{order: 40, title: fmt.Sprintf("Plugin memory and read cost with %s roles", fmtInt(opts.roles)), body: b.String()}
}

// roleWriters is how many clients write roles at once (writeRoles).
const roleWriters = 8

// writeRoles creates roles r0 … r{n-1} in mount, roleWriters at a time, each
// with its own service user at f. It returns the time they all took and each
// write's latency, indexed by role (so by the number of roles written before it,
// give or take the writers in flight).
func (v *vault) writeRoles(t vaulttest.TB, mount string, f *fake, n int) (time.Duration, []float64) {
	lat := make([]float64, n)
	var g errgroup.Group
	g.SetLimit(roleWriters)
	t0 := time.Now()
	for i := range n {
		g.Go(func() error {
			start := time.Now()
			defer func() { lat[i] = float64(time.Since(start)) }()
			return v.addRole(mount, fmt.Sprintf("r%d", i), f)
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatalf("writing roles: %v", err)
	}
	return time.Since(t0), lat
}

// writeCostTable is the median latency of role writes (writeRoles' latencies)
// in ten buckets by the number of roles already in the mount, and the last
// bucket's median ÷ the first's.
func writeCostTable(lat []float64) string {
	const buckets = 10
	var rows [][]string
	meds := make([]float64, buckets)
	for i := range buckets {
		lo, hi := i*len(lat)/buckets, (i+1)*len(lat)/buckets
		meds[i] = median(lat[lo:hi])
		rows = append(rows, []string{fmt.Sprintf("%s–%s", fmtInt(lo), fmtInt(hi-1)), fmtInt(hi - lo), fmtDur(time.Duration(meds[i]))})
	}
	return table([]string{"roles already in the mount", "writes", "median latency"}, rows) +
		fmt.Sprintf("\nLast row ÷ first row: %.1f×.\n", meds[buckets-1]/meds[0])
}

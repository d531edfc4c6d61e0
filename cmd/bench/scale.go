package main

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/vaulttest"
)

// scaleSmallRoles is the size of the reference mount of the memory run.
const scaleSmallRoles = 10

type memSnap struct {
	plugin, vault, vaultHeap int64
}

// scalePhase puts opts.roles roles holding tokens into one plugin process and
// reports its memory, the cost of writing roles, and the read cost at that size
// against a mount of 10 roles.
func scalePhase(t *vaulttest.Program, bins binaries, opts options) section {
	sc := vaulttest.NewScope(t)
	defer sc.Close()
	logf("scale: starting a Vault dev server for %s roles", fmtInt(opts.roles))
	v := startDev(sc, bins)
	f := startFake(sc, fakeiadvize.Options{}, opts.upstreamLatency)
	f.SetLimits(0, 0) // no upstream limits: this run logs in once per role
	cfg := map[string]any{"logins_per_minute": 1_000_000, "user_logins_per_minute": 10}

	mounts := (opts.roles + opts.rolesPerMount - 1) / opts.rolesPerMount
	bigMount := func(i int) string { return fmt.Sprintf("big-%03d", i) }
	var small, smallPaths []string
	for i := range scaleSmallRoles {
		small, smallPaths = append(small, fmt.Sprintf("r%d", i)), append(smallPaths, fmt.Sprintf("small/static-creds/r%d", i))
	}
	v.mountIadvize(sc, "small", f, cfg, small...)
	for i := range mounts {
		v.mountIadvize(sc, bigMount(i), f, cfg)
	}
	ld := newLoader(v.Addr, v.benchToken(sc, "small/*", "big-*"), 128)
	if r := ld.runN(smallPaths, 1, len(smallPaths)); r.Errors > 0 {
		sc.Fatalf("first reads of the small mount: %s", r.FirstErr)
	}
	pid := v.pluginPid(vaulttest.PluginName)
	if pid == 0 {
		sc.Fatalf("no plugin process under the Vault process")
	}
	snap := func() memSnap { return memSnap{plugin: rss(pid), vault: rss(v.Pid()), vaultHeap: v.liveHeap()} }
	time.Sleep(2 * time.Second) // let the mounts settle before the baseline
	base := snap()

	// Roles, the n-th of every mount before the (n+1)-th of any, so that all
	// mounts fill together and a write's latency shows the cost at that fill.
	type job struct {
		mount, name string
		ordinal     int
	}
	var jobs []job
	for n := range opts.rolesPerMount {
		for i := range mounts {
			if i*opts.rolesPerMount+n < opts.roles {
				jobs = append(jobs, job{bigMount(i), fmt.Sprintf("r%d", n), n})
			}
		}
	}
	logf("scale: writing %s roles over %d mount(s)", fmtInt(len(jobs)), mounts)
	const buckets = 10
	writeLat := make([][]time.Duration, buckets)
	ok := make([]bool, len(jobs))
	var mu sync.Mutex
	var next atomic.Int64
	var g errgroup.Group
	t0 := time.Now()
	for range 8 {
		g.Go(func() error {
			for i := int(next.Add(1) - 1); i < len(jobs) && time.Since(t0) < opts.writeBudget; i = int(next.Add(1) - 1) {
				j := jobs[i]
				f.AddUser(userOf(j.mount, j.name), "pw-"+j.name)
				start := time.Now()
				if _, err := v.Client.Logical().Write(j.mount+"/roles/"+j.name, map[string]any{"username": userOf(j.mount, j.name), "password": "pw-" + j.name}); err != nil {
					return err
				}
				mu.Lock()
				ok[i] = true
				writeLat[j.ordinal*buckets/opts.rolesPerMount] = append(writeLat[j.ordinal*buckets/opts.rolesPerMount], time.Since(start))
				mu.Unlock()
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		sc.Fatalf("writing roles: %v", err)
	}
	writeTime := time.Since(t0)
	var done []job
	for i, j := range jobs {
		if ok[i] {
			done = append(done, j)
		}
	}
	cut := len(done) < len(jobs)
	if cut {
		logf("scale: the role writes took longer than %s: going on with the %s roles written", opts.writeBudget, fmtInt(len(done)))
	}
	jobs = done
	written := snap()

	logf("scale: reading every role once (%s logins)", fmtInt(len(jobs)))
	var bigPaths []string
	for _, j := range jobs {
		bigPaths = append(bigPaths, j.mount+"/static-creds/"+j.name)
	}
	before := f.Stats().LoginAttempts
	warm := ld.runN(bigPaths, 64, len(bigPaths))
	if warm.Errors > 0 {
		sc.Fatalf("first reads of the roles: %d failed (first: %s)", warm.Errors, warm.FirstErr)
	}
	logins := f.Stats().LoginAttempts - before
	time.Sleep(2 * time.Second)
	holding := snap()

	logf("scale: read cost at %s roles against %d", fmtInt(len(jobs)), scaleSmallRoles)
	credsOf := func(ps []string) []string {
		out := make([]string, len(ps))
		for i, p := range ps {
			out[i] = strings.Replace(p, "/static-creds/", "/creds/", 1)
		}
		return out
	}
	type cell struct {
		key, path, set string
		paths          []string
	}
	inMounts := func(n int) string {
		if n == 1 {
			return "1 mount"
		}
		return fmt.Sprintf("%d mounts", n)
	}
	cells := []cell{
		{"static-small", "static-creds/", fmt.Sprintf("%d roles in 1 mount", scaleSmallRoles), smallPaths},
		{"static-big", "static-creds/", fmt.Sprintf("%s roles in %s", fmtInt(len(jobs)), inMounts(mounts)), bigPaths},
		{"creds-small", "creds/", fmt.Sprintf("%d roles in 1 mount", scaleSmallRoles), credsOf(smallPaths)},
		{"creds-big", "creds/", fmt.Sprintf("%s roles in %s", fmtInt(len(jobs)), inMounts(mounts)), credsOf(bigPaths)},
	}
	if mounts > 1 {
		// One role in each big mount: as many mounts as the big set, few roles,
		// to tell the number of roles from the number of mounts.
		var spread []string
		for i := range mounts {
			spread = append(spread, bigMount(i)+"/static-creds/r0")
		}
		cells = slices.Insert(cells, 1, cell{"static-spread", "static-creds/", fmt.Sprintf("%d roles, 1 in each of %d mounts", mounts, mounts), spread})
	}
	res := map[string][]loadResult{}
	for round := range opts.rounds {
		for i := range cells {
			c := cells[(i+round)%len(cells)]
			res[c.key] = append(res[c.key], ld.run(c.paths, 8, opts.cell, v.Pid(), pid))
		}
	}
	after := snap()

	var b strings.Builder
	fmt.Fprintf(&b, "One Vault dev server, one plugin process serving %s of up to %s roles (%s roles in all, `-roles-per-mount`)\n"+
		"and a mount of %d roles; each role has its own service user and, after one read, its own cached 24-hour token.\n"+
		"The plugin process is the child of the Vault process running the plugin binary.\n",
		inMounts(mounts), fmtInt(opts.rolesPerMount), fmtInt(len(jobs)), scaleSmallRoles)
	if cut {
		fmt.Fprintf(&b, "\n**Only %s of the %s roles were written**: the writes took longer than their %s budget (see the write\n"+
			"latencies below).\n", fmtInt(len(jobs)), fmtInt(opts.roles), opts.writeBudget)
	}
	b.WriteString("\n")
	perRole := func(a, b int64) string { return fmtBytes((a - b) / int64(len(jobs))) }
	row := func(label string, s memSnap) []string {
		return []string{label, fmtBytes(s.plugin), fmtBytes(s.vault), fmtBytes(s.vaultHeap)}
	}
	b.WriteString(table([]string{"state", "plugin RSS", "Vault RSS", "Vault live heap"}, [][]string{
		row(fmt.Sprintf("%d mounts, %d roles holding tokens", mounts+1, scaleSmallRoles), base),
		row(fmt.Sprintf("+ %s roles written, no token yet", fmtInt(len(jobs))), written),
		row(fmt.Sprintf("+ each read once: %s roles holding tokens", fmtInt(len(jobs))), holding),
		row("after the read-cost rounds below (creds/ leases included)", after),
		{"**per role holding a token** (Δ ÷ roles, from the baseline)", "**" + perRole(holding.plugin, base.plugin) + "**",
			perRole(holding.vault, base.vault), perRole(holding.vaultHeap, base.vaultHeap)},
	}))
	fmt.Fprintf(&b, "\nLogins for the first reads: %s for %s roles (%d clients; %s).\n", fmtInt(logins), fmtInt(len(jobs)), 64, fmtDur(warm.Elapsed))

	together := ""
	if mounts > 1 {
		together = ", the mounts filling together"
	}
	fmt.Fprintf(&b, "\n**Cost of a role write by the number of roles its mount already holds** (8 writers%s); %s for all:\n\n",
		together, fmtDur(writeTime))
	var wrows [][]string
	var firstMed, lastMed time.Duration
	firstIdx, lastIdx := -1, -1
	for i, lats := range writeLat {
		if len(lats) == 0 {
			continue
		}
		md := medianDur(lats)
		if firstIdx < 0 {
			firstMed, firstIdx = md, i
		}
		lastMed, lastIdx = md, i
		wrows = append(wrows, []string{fmt.Sprintf("%d–%d", i*opts.rolesPerMount/buckets, (i+1)*opts.rolesPerMount/buckets-1), fmt.Sprint(len(lats)), fmtDur(md)})
	}
	b.WriteString(table([]string{"roles already in the mount", "writes", "median latency"}, wrows))
	if lastIdx > firstIdx && lastMed > 2*firstMed {
		// Growing with the roles present: extrapolate linearly to one mount of opts.roles.
		slope := float64(lastMed-firstMed) / (float64(lastIdx-firstIdx) * float64(opts.rolesPerMount) / float64(buckets))
		at := time.Duration(float64(firstMed) + slope*float64(opts.roles))
		total := time.Duration(float64(firstMed)*float64(opts.roles) + slope*float64(opts.roles)*float64(opts.roles)/2)
		fmt.Fprintf(&b, "\nA role write costs more the more roles its mount holds (%.1f× from the first to the last row). Linear\n"+
			"extrapolation to one mount of %s roles: about %s per role write at the end, about %s to write\n"+
			"them all (8 writers, this machine).\n", float64(lastMed)/float64(firstMed), fmtInt(opts.roles), fmtDur(at), total.Round(time.Second))
	} else if lastIdx > firstIdx {
		fmt.Fprintf(&b, "\nRole writes do not grow with the mount's size (%.1f× from the first to the last row).\n", float64(lastMed)/float64(firstMed))
	}

	fmt.Fprintf(&b, "\n**Read cost at %s roles against %d roles**, same server, same plugin process, 8 clients each reading a\n"+
		"random role of the set, %d interleaved rounds of %s; ratio = reads/s ÷ reads/s of the %d-role set, within a round:\n\n",
		fmtInt(len(jobs)), scaleSmallRoles, opts.rounds, opts.cell, scaleSmallRoles)
	var rrows [][]string
	for _, c := range cells {
		ref := res[strings.Split(c.key, "-")[0]+"-small"]
		var rate, ratio, vc, pc []float64
		var p50 []time.Duration
		for i, r := range res[c.key] {
			rate = append(rate, r.rate())
			ratio = append(ratio, r.rate()/ref[i].rate())
			vc = append(vc, r.perRead(r.VaultCPU))
			pc = append(pc, r.perRead(r.PluginCPU))
			p50 = append(p50, r.pct(0.5))
		}
		rrows = append(rrows, []string{c.path, c.set, fmt.Sprintf("%.0f", median(rate)), fmt.Sprintf("%.2f", median(ratio)),
			fmtDur(medianDur(p50)), fmt.Sprintf("%.0f", median(vc)), fmt.Sprintf("%.0f", median(pc))})
	}
	b.WriteString(table([]string{"path", "roles read", "reads/s", "ratio", "p50", "Vault CPU µs/read", "plugin CPU µs/read"}, rrows))
	return section{order: 40, title: fmt.Sprintf("Plugin memory and read cost with %s roles", fmtInt(len(jobs))), body: b.String()}
}

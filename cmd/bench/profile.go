package main

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/pprof/profile"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/vaulttest"
)

// profilePhase measures the plugin's read path in process (sdk framework and
// backend over logical.InmemStorage, no Vault, no gRPC): time and allocations
// per read against the do-nothing backend, contention, size, a CPU profile and
// an allocation profile, read with github.com/google/pprof/profile.
func profilePhase(t *vaulttest.Program, opts options) section {
	logf("profile: in-process benchmarks of the read path")
	small, err := newInproc(64, false)
	if err != nil {
		t.Fatalf("in-process mount: %v", err)
	}
	defer small.close()
	noop, err := newNoopInproc()
	if err != nil {
		t.Fatalf("in-process noop mount: %v", err)
	}
	big, err := newInproc(opts.roles, true)
	if err != nil {
		t.Fatalf("in-process mount of %d roles: %v", opts.roles, err)
	}
	defer big.close()

	cases := inprocCases(small, noop, big, opts.roles)
	results := make([][]testing.BenchmarkResult, len(cases))
	ops0, reads := small.storage.ops.Load()+big.storage.ops.Load(), 0
	for round := range opts.rounds {
		for i := range cases {
			j := (i + round) % len(cases)
			r := testing.Benchmark(cases[j].f)
			if r.N == 0 {
				t.Fatalf("benchmark %q failed", cases[j].name)
			}
			if results[j] = append(results[j], r); j != noopCase {
				reads += r.N
			}
		}
		logf("profile: benchmark round %d/%d done", round+1, opts.rounds)
	}
	storageOps := small.storage.ops.Load() + big.storage.ops.Load() - ops0

	var b strings.Builder
	fmt.Fprintf(&b, "The plugin's backend in this process (`iadvize.Factory`, sdk framework, `logical.InmemStorage`), without\n"+
		"Vault and without the gRPC hop: what the plugin itself costs per read. `testing.Benchmark`, %d interleaved\n"+
		"rounds, median ns/op; allocations are exact. `go test -run '^$' -bench . -benchmem ./cmd/bench/` runs the same\n"+
		"benchmarks.\n\n", opts.rounds)
	var rows [][]string
	ns := func(r testing.BenchmarkResult) float64 { return float64(r.T.Nanoseconds()) / float64(r.N) }
	med := make([]float64, len(cases))
	for i, c := range cases {
		var xs, vsNoop []float64
		for k, r := range results[i] {
			xs, vsNoop = append(xs, ns(r)), append(vsNoop, ns(r)/ns(results[noopCase][k]))
		}
		med[i] = median(xs)
		r := results[i][0]
		rows = append(rows, []string{c.name, f0(med[i]), f2(median(vsNoop)), fmt.Sprint(r.AllocsPerOp()), fmt.Sprint(r.AllocedBytesPerOp())})
	}
	b.WriteString(table([]string{"in-process read", "ns/op", "time ÷ noop's (same round)", "allocs/op", "B/op"}, rows))
	fmt.Fprintf(&b, "\nParallel rows: ns/op is wall time per read with 64 goroutines on the machine's %d cores; one role against\n"+
		"64 roles shows whether readers of one role contend (per-role locks would make the first slower).\n", runtime.GOMAXPROCS(0))
	fmt.Fprintf(&b, "\ncreds/ costs %.0f ns and %d allocations more than the do-nothing backend's read (%.1f× its time).\n"+
		"Storage operations during the %s benchmark reads of cached tokens: %d (a hit touches no storage).\n"+
		"Heap held per role holding a token, one mount of %s roles: **%s** (live heap after GC, Δ over reading every\n"+
		"role once; includes the role's decoded credentials, the token state, the cache entry, and the login limiter's\n"+
		"per-user window, which the periodic function drops after a minute).\n",
		med[0]-med[noopCase], results[0][0].AllocsPerOp()-results[noopCase][0].AllocsPerOp(), med[0]/med[noopCase],
		fmtInt(reads), storageOps, fmtInt(opts.roles), fmtBytes(big.heapPerRole))

	// Mutex profile: every contention event of the two parallel benchmarks.
	old := runtime.SetMutexProfileFraction(1)
	n := testing.Benchmark(cases[5].f).N + testing.Benchmark(cases[6].f).N
	runtime.SetMutexProfileFraction(old)
	mutex, err := lookup("mutex")
	b.WriteString("\n**Lock contention**, mutex profile of the two parallel benchmarks (every contention event recorded), the\n" +
		"read path's share (stacks under `framework.(*Backend).HandleRequest`)")
	if err == nil {
		all := mutex.tally(1, "")
		fmt.Fprintf(&b, ": %s reads; delay in the whole process: %s.\n\n", fmtInt(n), mutex.unit(1, all.total))
		b.WriteString(mutex.top(mutex.tally(1, "framework.(*Backend).HandleRequest"), all.total, 12, true))
	} else {
		fmt.Fprintf(&b, ": not available (%v).\n", err)
	}

	cpu, err := cpuProfile(small, 4*time.Second)
	b.WriteString("\n**CPU profile**, one goroutine reading `creds/r0` for 4 s")
	if err == nil {
		tl := cpu.tally(1, "")
		b.WriteString(". Share of the read's CPU time under each function (cumulative):\n\n")
		b.WriteString(focusTable(tl, "share of CPU", func(v int64) string { return fmt.Sprintf("%.1f%%", 100*float64(v)/float64(tl.total)) }))
		b.WriteString("\nWhat `pathCredsRead` calls (its callees' cumulative time):\n\n")
		b.WriteString(cpu.top(cpu.callees(1, "iadvize.(*backend).pathCredsRead"), tl.total, 10, true))
		b.WriteString("\nTop functions by own (flat) time:\n\n" + cpu.top(tl, tl.total, 20, false))
	} else {
		fmt.Fprintf(&b, ": not available (%v).\n", err)
	}

	const nAlloc = 20000
	allocs, err := allocProfile(small, nAlloc)
	fmt.Fprintf(&b, "\n**Allocation profile**, every allocation of %s reads of `creds/r0` (runtime.MemProfileRate = 1)", fmtInt(nAlloc))
	if err == nil {
		tl := allocs.tally(0, "") // alloc_objects
		b.WriteString(". Allocations per read under each function (cumulative):\n\n")
		b.WriteString(focusTable(tl, "allocations per read", func(v int64) string { return f2(float64(v) / nAlloc) }))
		b.WriteString("\nWhere they are made (flat, allocations over all reads):\n\n" + allocs.top(tl, tl.total, 20, false))
	} else {
		fmt.Fprintf(&b, ": not available (%v).\n", err)
	}
	return section{order: 50, title: profileTitle, body: b.String(), profile: true}
}

// cpuFocus are the functions whose share the report shows, in call order.
var cpuFocus = []struct{ label, name string }{
	{"`framework.(*Backend).HandleRequest` (everything)", "framework.(*Backend).HandleRequest"},
	{"`framework.(*Backend).route` (path regexps)", "framework.(*Backend).route"},
	{"`framework.(*FieldData).Validate`", "framework.(*FieldData).Validate"},
	{"`iadvize.(*backend).pathCredsRead` (the plugin's handler)", "iadvize.(*backend).pathCredsRead"},
	{"`iadvize.(*backend).readToken`", "iadvize.(*backend).readToken"},
	{"`framework.(*FieldData).Get` (the role name, twice)", "framework.(*FieldData).Get"},
	{"`iadvize.(*backend).token` (the cache lookup)", "iadvize.(*backend).token"},
	{"`iadvize.(*backend).cached`", "iadvize.(*backend).cached"},
	{"`iadvize.tokenData` (the answer's map)", "iadvize.tokenData"},
	{"`time.Time.Format` (expire_time)", "time.Time.Format"},
	{"`framework.(*Secret).Response`", "framework.(*Secret).Response"},
	{"`framework.(*Backend).Secret` (lease type lookup)", "framework.(*Backend).Secret"},
	{"`iadvize.leaseTTL`", "iadvize.leaseTTL"},
	{"`runtime.mallocgc` (allocation)", "runtime.mallocgc"},
	{"garbage collection (`runtime.gcBgMarkWorker`)", "runtime.gcBgMarkWorker"},
}

// focusTable renders the cumulative values of the cpuFocus functions found.
func focusTable(tl tally, column string, format func(int64) string) string {
	var rows [][]string
	for _, fc := range cpuFocus {
		for name, v := range tl.cum {
			if name == fc.name || strings.HasSuffix(name, "/"+fc.name) {
				rows = append(rows, []string{fc.label, format(v)})
			}
		}
	}
	return table([]string{"function", column}, rows)
}

// prof is a parsed profile.
type prof struct{ *profile.Profile }

// tally is a profile's values summed by function: flat (the function is the
// leaf) and cum (the function is on the stack), over total.
type tally struct {
	flat, cum map[string]int64
	total     int64
	idx       int // the value's index in the profile's samples
}

// shortName is a function's name with the plugin's and the sdk's package paths
// shortened.
var shortName = strings.NewReplacer("github.com/iadvize/vault-plugin-secrets-iadvize.", "iadvize.", "github.com/hashicorp/vault/sdk/", "sdk/")

// stack is a sample's functions, leaf first (inlined frames included).
func stack(s *profile.Sample) []string {
	var names []string
	for _, loc := range s.Location {
		for _, l := range loc.Line {
			names = append(names, shortName.Replace(l.Function.Name))
		}
	}
	return names
}

// tally sums value index idx of the samples whose stack holds a function
// whose name contains focus ("" for all).
func (p prof) tally(idx int, focus string) tally {
	t := tally{flat: map[string]int64{}, cum: map[string]int64{}, idx: idx}
	for _, s := range p.Sample {
		names := stack(s)
		if len(names) == 0 || !slices.ContainsFunc(names, func(n string) bool { return strings.Contains(n, focus) }) {
			continue
		}
		v := s.Value[idx]
		t.total += v
		t.flat[names[0]] += v
		seen := map[string]bool{}
		for _, n := range names {
			if !seen[n] {
				seen[n] = true
				t.cum[n] += v
			}
		}
	}
	return t
}

// callees sums value idx by the function that fn calls directly (its cum) and
// fn's own (flat) time.
func (p prof) callees(idx int, fn string) tally {
	t := tally{flat: map[string]int64{}, cum: map[string]int64{}, idx: idx}
	for _, s := range p.Sample {
		names := stack(s)
		if i := slices.Index(names, fn); i > 0 {
			t.cum[names[i-1]] += s.Value[idx]
		} else if i == 0 {
			t.flat[fn] += s.Value[idx]
			t.cum[fn] += s.Value[idx]
		}
	}
	return t
}

// unit prints a value of the profile's sample type idx: a duration for
// nanoseconds, else a count.
func (p prof) unit(idx int, v int64) string {
	if p.SampleType[idx].Unit == "nanoseconds" {
		return time.Duration(v).Round(10 * time.Microsecond).String()
	}
	return fmtInt(v)
}

// top renders the n functions of most cum (byCum) or flat value, as pprof -top.
func (p prof) top(t tally, total int64, n int, byCum bool) string {
	names := make([]string, 0, len(t.cum))
	for name := range t.cum {
		names = append(names, name)
	}
	key := t.flat
	if byCum {
		key = t.cum
	}
	slices.SortFunc(names, func(a, b string) int { return cmp.Or(cmp.Compare(key[b], key[a]), strings.Compare(a, b)) })
	pct := func(v int64) string { return fmt.Sprintf("%.2f%%", 100*float64(v)/float64(max(total, 1))) }
	var rows [][]string
	for _, name := range names[:min(n, len(names))] {
		rows = append(rows, []string{"`" + name + "`", p.unit(t.idx, t.flat[name]), pct(t.flat[name]), p.unit(t.idx, t.cum[name]), pct(t.cum[name])})
	}
	return table([]string{"function", "flat", "flat%", "cum", "cum%"}, rows)
}

// lookup writes and parses one of the runtime's profiles.
func lookup(name string) (prof, error) {
	var buf bytes.Buffer
	if err := pprof.Lookup(name).WriteTo(&buf, 0); err != nil {
		return prof{}, err
	}
	p, err := profile.Parse(&buf)
	return prof{p}, err
}

// cpuProfile profiles one goroutine reading creds/r0 for d.
func cpuProfile(ip *inproc, d time.Duration) (prof, error) {
	var buf bytes.Buffer
	if err := pprof.StartCPUProfile(&buf); err != nil {
		return prof{}, err
	}
	req := logical.Request{Operation: logical.ReadOperation, Path: "creds/r0", Storage: ip.storage}
	for deadline := time.Now().Add(d); time.Now().Before(deadline); {
		for range 1000 {
			r := req
			_, _ = ip.b.HandleRequest(context.Background(), &r)
		}
	}
	pprof.StopCPUProfile()
	p, err := profile.Parse(&buf)
	return prof{p}, err
}

// allocProfile records every allocation of n reads of creds/r0: the allocs
// profile after them less the one before.
func allocProfile(ip *inproc, n int) (prof, error) {
	old := runtime.MemProfileRate
	runtime.MemProfileRate = 1
	defer func() { runtime.MemProfileRate = old }()
	runtime.GC() // the profile is as of the last GC
	base, err := lookup("allocs")
	if err != nil {
		return prof{}, err
	}
	for range n {
		if err := ip.handle(logical.ReadOperation, "creds/r0", nil); err != nil {
			return prof{}, err
		}
	}
	runtime.GC()
	after, err := lookup("allocs")
	if err != nil {
		return prof{}, err
	}
	base.Scale(-1)
	p, err := profile.Merge([]*profile.Profile{base.Profile, after.Profile})
	return prof{p}, err
}

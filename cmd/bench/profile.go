package main

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"

	"golang.org/x/perf/benchfmt"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/vaulttest"
)

// bigRoles is the number of roles of the large in-process mount.
const bigRoles = 10000

// benchCase is a sub-benchmark of BenchmarkRead (bench_test.go) and its row
// in the report: reads of prefix + "r0", or of a random one of roles roles,
// from a mount of mount roles (0: the do-nothing backend), from par goroutines
// (0: one, else each on its own path).
type benchCase struct {
	name, label, prefix string
	mount, roles, par   int
}

var benchCases = []benchCase{
	{"creds", "creds/ (one role)", "creds/", 64, 1, 0},
	{"static-creds", "static-creds/ (one role)", "static-creds/", 64, 1, 0},
	{"noop", "noop data/ (do-nothing backend)", "data/", 0, 1, 0},
	{"static-creds-10-roles", "static-creds/, random of 10 roles", "static-creds/", bigRoles, 10, 0},
	{"static-creds-10000-roles", "static-creds/, random of 10,000 roles", "static-creds/", bigRoles, bigRoles, 0},
	{"parallel-creds-one-role", "creds/, 64 goroutines on one role", "creds/", 64, 1, 64},
	{"parallel-creds-64-roles", "creds/, 64 goroutines on 64 roles", "creds/", 64, 64, 64},
}

// cpuFocus are the functions whose cumulative share the profiles show.
const cpuFocus = `framework\.\(\*Backend\)\.(HandleRequest|route)$|framework\.\(\*FieldData\)\.(Validate|Get)$|framework\.\(\*Secret\)\.Response$|` +
	`iadvize\.\(\*backend\)\.(pathCredsRead|readRoleToken|serveToken)$|iadvize\.tokenData$|runtime\.(mallocgc|gcBgMarkWorker)$`

// shortNames shortens the package paths of the plugin, the sdk and this command.
var shortNames = strings.NewReplacer("github.com/iadvize/vault-plugin-secrets-iadvize/cmd/bench.", "bench.",
	"github.com/iadvize/vault-plugin-secrets-iadvize.", "iadvize.", "github.com/hashicorp/vault/sdk/", "sdk/")

// roundSuffix is the end of a sub-benchmark's name: "#01" for its second run,
// "-2" for GOMAXPROCS.
var roundSuffix = regexp.MustCompile(`(#\d+)?(-\d+)?$`)

// profilePhase runs the in-process benchmarks of bench_test.go (one test
// binary, opts.rounds runs of all of them, then one run of some with a
// profile on) and quotes `go tool pprof` on the profiles.
func profilePhase(t *vaulttest.Program, opts options) section {
	logf("profile: building and running the in-process benchmarks")
	dir := t.TempDir()
	run := func(name string, args ...string) []byte {
		cmd := exec.Command(name, args...)
		cmd.Dir = vaulttest.RepoRoot(t)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return out
	}
	run("go", "test", "-c", "-o", filepath.Join(dir, "bench.test"), "./cmd/bench")
	// bench runs the benchmarks matching re and returns their results by
	// sub-benchmark name, one per round ("creds#01" is the second "creds").
	bench := func(re string, flags ...string) map[string][]*benchfmt.Result {
		res := map[string][]*benchfmt.Result{}
		out := run(filepath.Join(dir, "bench.test"), append([]string{"-test.run=^$", "-test.bench=" + re, "-test.benchmem"}, flags...)...)
		for r := benchfmt.NewReader(bytes.NewReader(out), "bench"); r.Scan(); {
			if br, ok := r.Result().(*benchfmt.Result); ok {
				name := roundSuffix.ReplaceAllString(strings.TrimPrefix(string(br.Name.Full()), "Read/"), "")
				res[name] = append(res[name], br.Clone())
			}
		}
		return res
	}
	res := bench("Read", fmt.Sprintf("-rounds=%d", opts.rounds))
	var reads, ops float64
	for name, rs := range res {
		for _, r := range rs {
			if o, _ := r.Value("storage-ops"); name != "noop" {
				reads, ops = reads+float64(r.Iters), ops+o
			}
		}
	}
	val := func(round int, name, unit string) float64 { v, _ := res[name][round].Value(unit); return v }
	var rows [][]string
	med := map[string]float64{}
	for _, c := range benchCases {
		var ns, vsNoop []float64
		for i := range opts.rounds {
			ns, vsNoop = append(ns, val(i, c.name, "sec/op")*1e9), append(vsNoop, val(i, c.name, "sec/op")/val(i, "noop", "sec/op"))
		}
		med[c.name] = median(ns)
		rows = append(rows, []string{c.label, f0(med[c.name]), f2(median(vsNoop)), f0(val(0, c.name, "allocs/op")), f0(val(0, c.name, "B/op"))})
	}
	var b strings.Builder
	fmt.Fprintf(&b, "The plugin's backend in a test process (`iadvize.Factory`, sdk framework, `logical.InmemStorage`), without\n"+
		"Vault and without the gRPC hop: `BenchmarkRead` of `cmd/bench/bench_test.go`, %d interleaved rounds, median ns/op; allocations\n"+
		"are exact. Parallel rows: wall time per read with 64 goroutines on %d cores.\n\n", opts.rounds, runtime.GOMAXPROCS(0))
	b.WriteString(table([]string{"in-process read", "ns/op", "time ÷ noop's (same round)", "allocs/op", "B/op"}, rows))
	fmt.Fprintf(&b, "\ncreds/ costs %.0f ns and %.0f allocations more than the do-nothing backend's read (%.1f× its time).\n"+
		"Storage operations during the %s benchmark reads of cached tokens: %.0f.\n"+
		"Heap held per role holding a token, one mount of %s roles: **%s** (live heap after GC, Δ over reading every role once;\n"+
		"the role's decoded credentials, its token state and cache entry, and the login limiter's per-user window).\n",
		med["creds"]-med["noop"], val(0, "creds", "allocs/op")-val(0, "noop", "allocs/op"), med["creds"]/med["noop"],
		fmtInt(int64(reads)), ops, fmtInt(bigRoles), fmtBytes(int64(val(0, "static-creds-10000-roles", "heap-B/role"))))

	pprof := func(file string, args ...string) string {
		out := string(run("go", append(append([]string{"tool", "pprof"}, args...), filepath.Join(dir, file))...))
		if i := strings.Index(out, "Showing nodes"); i >= 0 {
			out = out[i:]
		}
		return "```\n" + shortNames.Replace(strings.TrimRight(out, "\n")) + "\n```\n"
	}
	par := bench("Read/^parallel", "-test.mutexprofile="+filepath.Join(dir, "mutex.prof"), "-test.mutexprofilefraction=1")
	fmt.Fprintf(&b, "\n**Lock contention**, mutex profile of the two parallel benchmarks (%s reads, every contention event),\n"+
		"the read path's share (`-focus HandleRequest`) of the whole process's delay:\n\n",
		fmtInt(par["parallel-creds-one-role"][0].Iters+par["parallel-creds-64-roles"][0].Iters))
	b.WriteString(pprof("mutex.prof", "-top", "-cum", "-nodecount=12", `-focus=framework\.\(\*Backend\)\.HandleRequest`))

	bench("Read/^creds$", "-test.benchtime=4s", "-test.cpuprofile="+filepath.Join(dir, "cpu.prof"))
	b.WriteString("\n**CPU profile**, one goroutine reading `creds/r0` for 4 s (the 64-role mount's setup included). " +
		"The read path's functions, cumulative share of all CPU time:\n\n")
	b.WriteString(pprof("cpu.prof", "-top", "-cum", "-show="+cpuFocus))
	b.WriteString("\nWhat `pathCredsRead` calls (pprof -peek):\n\n" + pprof("cpu.prof", "-peek", `pathCredsRead$`))
	b.WriteString("\nTop functions by own (flat) time:\n\n" + pprof("cpu.prof", "-top", "-nodecount=20"))

	const nAlloc = 20000
	al := bench("Read/^creds$", fmt.Sprintf("-test.benchtime=%dx", nAlloc), "-test.memprofile="+filepath.Join(dir, "mem.prof"), "-test.memprofilerate=1")
	fmt.Fprintf(&b, "\n**Allocation profile**, every allocation of %s reads of `creds/r0` (`-memprofilerate 1`, `-focus readOnce`,\n"+
		"allocations over all reads). Under the read path's functions (cumulative):\n\n", fmtInt(al["creds"][0].Iters))
	b.WriteString(pprof("mem.prof", "-sample_index=alloc_objects", "-focus=readOnce", "-top", "-cum", "-show="+cpuFocus))
	b.WriteString("\nWhere they are made (flat):\n\n" + pprof("mem.prof", "-sample_index=alloc_objects", "-focus=readOnce", "-top", "-nodecount=20"))
	return section{order: 50, title: profileTitle, body: b.String()}
}

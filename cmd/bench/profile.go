package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/vaulttest"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// inprocCase is one in-process benchmark.
type inprocCase struct {
	name string
	f    func(*testing.B)
}

// profilePhase measures the plugin's read path in process (sdk framework and
// backend over logical.InmemStorage, no Vault, no gRPC): time and allocations
// per read against the do-nothing backend, contention, size, a CPU profile and
// an allocation profile.
func profilePhase(t *vaulttest.Program, opts options) section {
	logf("profile: in-process benchmarks of the read path")
	small, err := newInproc(64)
	if err != nil {
		t.Fatalf("in-process mount: %v", err)
	}
	defer small.close()
	noop, err := newNoopInproc()
	if err != nil {
		t.Fatalf("in-process noop mount: %v", err)
	}

	// One mount of opts.roles roles, for size and memory. Its upstream keeps
	// nothing, so the heap growth is the plugin's.
	big, perRole, err := bigInproc(opts.roles)
	if err != nil {
		t.Fatalf("in-process mount of %d roles: %v", opts.roles, err)
	}
	defer big.close()

	cases := []inprocCase{
		{"creds/ (one role)", readBench(small, "creds/", 1)},
		{"static-creds/ (one role)", readBench(small, "static-creds/", 1)},
		{"noop data/ (do-nothing backend)", readBench(noop, "data/", 1)},
		{"static-creds/, random of 10 roles", readBench(big, "static-creds/", 10)},
		{fmt.Sprintf("static-creds/, random of %s roles", fmtInt(opts.roles)), readBench(big, "static-creds/", opts.roles)},
		{"creds/, 64 goroutines on one role", parallelReadBench(small, "creds/", 32, false)},
		{"creds/, 64 goroutines on 64 roles", parallelReadBench(small, "creds/", 32, true)},
	}
	const noopCase = 2
	results := make([][]testing.BenchmarkResult, len(cases))
	ops0 := small.storage.ops() + big.storage.ops()
	var reads int
	for round := range opts.rounds {
		for i := range cases {
			j := (i + round) % len(cases)
			r := testing.Benchmark(cases[j].f)
			if r.N == 0 {
				t.Fatalf("benchmark %q failed", cases[j].name)
			}
			results[j] = append(results[j], r)
			if j != noopCase {
				reads += r.N
			}
		}
		logf("profile: benchmark round %d/%d done", round+1, opts.rounds)
	}
	storageOps := small.storage.ops() + big.storage.ops() - ops0

	dir := t.TempDir()
	cpuTop, cpuPeek, cpuCum, cpuErr := cpuProfile(small, dir)
	allocTop, allocCum, nAlloc, allocErr := allocProfile(small, dir)
	mutexTop, mutexErr := mutexProfile(small, dir)

	var b strings.Builder
	fmt.Fprintf(&b, "The plugin's backend in this process (`iadvize.Factory`, sdk framework, `logical.InmemStorage`), without\n"+
		"Vault and without the gRPC hop: what the plugin itself costs per read. `testing.Benchmark`, %d interleaved\n"+
		"rounds, median ns/op; allocations are exact. `go test -run '^$' -bench . -benchmem ./cmd/bench/` runs the same\n"+
		"benchmarks.\n\n", opts.rounds)
	var rows [][]string
	var nsCreds, nsNoop float64
	var allocCreds, allocNoop int64
	for i, c := range cases {
		var ns, vsNoop []float64
		for k, r := range results[i] {
			ns = append(ns, nsPerOp(r))
			vsNoop = append(vsNoop, nsPerOp(r)/nsPerOp(results[noopCase][k]))
		}
		r := results[i][0]
		rows = append(rows, []string{c.name, fmt.Sprintf("%.0f", median(ns)), fmt.Sprintf("%.2f", median(vsNoop)),
			fmt.Sprint(r.AllocsPerOp()), fmt.Sprint(r.AllocedBytesPerOp())})
		switch i {
		case 0:
			nsCreds, allocCreds = median(ns), r.AllocsPerOp()
		case noopCase:
			nsNoop, allocNoop = median(ns), r.AllocsPerOp()
		}
	}
	b.WriteString(table([]string{"in-process read", "ns/op", "time ÷ noop's (same round)", "allocs/op", "B/op"}, rows))
	fmt.Fprintf(&b, "\nParallel rows: ns/op is wall time per read with 64 goroutines on the machine's %d cores; one role against\n"+
		"64 roles shows whether readers of one role contend (per-role locks would make the first slower).\n", runtime.GOMAXPROCS(0))
	fmt.Fprintf(&b, "\ncreds/ costs %.0f ns and %d allocations more than the do-nothing backend's read (%.1f× its time).\n"+
		"Storage operations during the %s benchmark reads of cached tokens: %d (a hit touches no storage).\n"+
		"Heap held per role holding a token, one mount of %s roles: **%s** (live heap after GC, Δ over reading every\n"+
		"role once; includes the role's decoded credentials, the token state, the cache entry, and the login limiter's\n"+
		"per-user window, which the periodic function drops after a minute).\n",
		nsCreds-nsNoop, allocCreds-allocNoop, nsCreds/nsNoop, fmtInt(reads), storageOps, fmtInt(opts.roles), fmtBytes(perRole))

	b.WriteString("\n**Lock contention**, mutex profile of the two parallel benchmarks (every contention event recorded), the\n" +
		"read path's share (stacks under `framework.(*Backend).HandleRequest`)")
	if mutexErr != nil {
		fmt.Fprintf(&b, ": not available (%v).\n", mutexErr)
	} else {
		b.WriteString(":\n\n```\n" + mutexTop + "```\n")
	}
	b.WriteString("\n**CPU profile**, one goroutine reading `creds/r0` for 4 s")
	if cpuErr != nil {
		fmt.Fprintf(&b, ": not available (%v).\n", cpuErr)
	} else {
		b.WriteString(". Share of the read's CPU time under each function (cumulative):\n\n")
		b.WriteString(selected(cpuCum, 1, cpuFocus))
		b.WriteString("\nWhat `pathCredsRead` calls (pprof -peek):\n\n```\n" + cpuPeek + "```\n")
		b.WriteString("\nTop functions by own (flat) time:\n\n```\n" + cpuTop + "```\n")
	}
	fmt.Fprintf(&b, "\n**Allocation profile**, every allocation of %s reads of `creds/r0` (runtime.MemProfileRate = 1)", fmtInt(nAlloc))
	if allocErr != nil {
		fmt.Fprintf(&b, ": not available (%v).\n", allocErr)
	} else {
		b.WriteString(". Allocations per read under each function (cumulative):\n\n")
		b.WriteString(selected(allocCum, float64(nAlloc), cpuFocus))
		b.WriteString("\nWhere they are made (flat, allocations over all reads):\n\n```\n" + allocTop + "```\n")
	}
	return section{order: 50, title: profileTitle, body: b.String(), profile: true}
}

// bigInproc builds one mount of n roles and measures the heap that holding
// their tokens takes.
func bigInproc(n int) (*inproc, int64, error) {
	ip, err := newInproc(0)
	if err != nil {
		return nil, 0, err
	}
	// A stateless upstream: the tokens it issues are kept by the plugin only.
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw := make([]byte, 32)
		_, _ = rand.Read(raw)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"access_token": base64.RawURLEncoding.EncodeToString(raw), "expires_in": 86400, "token_type": "Bearer",
		})
	}))
	closeFake := ip.close
	ip.close = func() { up.Close(); closeFake() }
	if err := ip.write("config", map[string]any{"token_url": up.URL + "/oauth2/token"}); err != nil {
		ip.close()
		return nil, 0, err
	}
	ip.storage.hideRoles.Store(true)
	for i := range n {
		name := fmt.Sprintf("r%d", i)
		if err := ip.write("roles/"+name, map[string]any{"username": "svc-" + name + "@bench.example", "password": "pw-" + name}); err != nil {
			ip.close()
			return nil, 0, err
		}
	}
	ip.storage.hideRoles.Store(false)
	h0 := liveHeap()
	ip.storage.dropTokens.Store(true)
	for i := range n {
		if _, err := ip.read(fmt.Sprintf("static-creds/r%d", i)); err != nil {
			ip.close()
			return nil, 0, err
		}
	}
	ip.storage.dropTokens.Store(false)
	h1 := liveHeap()
	return ip, (h1 - h0) / int64(n), nil
}

func liveHeap() int64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// cpuFocus are the functions whose share the report shows, in call order.
var cpuFocus = []struct{ label, re string }{
	{"`framework.(*Backend).HandleRequest` (everything)", `framework\.\(\*Backend\)\.HandleRequest$`},
	{"`framework.(*Backend).route` (path regexps)", `framework\.\(\*Backend\)\.route$`},
	{"`framework.(*FieldData).Validate`", `framework\.\(\*FieldData\)\.Validate$`},
	{"`iadvize.(*backend).pathCredsRead` (the plugin's handler)", `iadvize\.\(\*backend\)\.pathCredsRead$`},
	{"`iadvize.(*backend).readToken`", `iadvize\.\(\*backend\)\.readToken$`},
	{"`framework.(*FieldData).Get` (the role name, twice)", `framework\.\(\*FieldData\)\.Get$`},
	{"`iadvize.(*backend).token` (the cache lookup)", `iadvize\.\(\*backend\)\.token$`},
	{"`iadvize.(*backend).cached`", `iadvize\.\(\*backend\)\.cached$`},
	{"`iadvize.tokenData` (the answer's map)", `iadvize\.tokenData$`},
	{"`time.Time.Format` (expire_time)", `time\.Time\.Format$`},
	{"`framework.(*Secret).Response`", `framework\.\(\*Secret\)\.Response$`},
	{"`framework.(*Backend).Secret` (lease type lookup)", `framework\.\(\*Backend\)\.Secret$`},
	{"`iadvize.leaseTTL`", `iadvize\.leaseTTL$`},
	{"`runtime.mallocgc` (allocation)", `runtime\.mallocgc$`},
	{"garbage collection (`runtime.gcBgMarkWorker`)", `runtime\.gcBgMarkWorker$`},
}

// pprofLine is one line of `go tool pprof -top`.
type pprofLine struct {
	flat, cum       string
	flatPct, cumPct float64
	name            string
}

func parsePprof(out string) []pprofLine {
	var lines []pprofLine
	started := false
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= 5 && f[0] == "flat" {
			started = true
			continue
		}
		if !started || len(f) < 6 {
			continue
		}
		fp, _ := strconv.ParseFloat(strings.TrimSuffix(f[1], "%"), 64)
		cp, _ := strconv.ParseFloat(strings.TrimSuffix(f[4], "%"), 64)
		lines = append(lines, pprofLine{flat: f[0], flatPct: fp, cum: f[3], cumPct: cp, name: strings.Join(f[5:], " ")})
	}
	return lines
}

// selected renders the focus functions' cumulative shares (CPU: per = 1, the
// percentage) or counts per read (allocations: per = reads).
func selected(lines []pprofLine, per float64, focus []struct{ label, re string }) string {
	var rows [][]string
	for _, fc := range focus {
		re := regexp.MustCompile(fc.re)
		for _, l := range lines {
			if !re.MatchString(l.name) {
				continue
			}
			if per == 1 {
				rows = append(rows, []string{fc.label, fmt.Sprintf("%.1f%%", l.cumPct)})
			} else {
				n, err := strconv.ParseFloat(l.cum, 64)
				if err != nil {
					continue
				}
				rows = append(rows, []string{fc.label, fmt.Sprintf("%.2f", n/per)})
			}
			break
		}
	}
	head := []string{"function", "share of CPU"}
	if per != 1 {
		head = []string{"function", "allocations per read"}
	}
	return table(head, rows)
}

// pprofTop runs `go tool pprof` on a profile.
func pprofTop(args ...string) (string, error) {
	cmd := exec.Command("go", append([]string{"tool", "pprof"}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go tool pprof: %v: %s", err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// cpuProfile profiles one goroutine reading creds/r0 and returns pprof's flat
// top and the parsed cumulative listing.
func cpuProfile(ip *inproc, dir string) (top, peek string, cum []pprofLine, err error) {
	path := filepath.Join(dir, "cpu.prof")
	f, err := os.Create(path)
	if err != nil {
		return "", "", nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return "", "", nil, err
	}
	ctx := context.Background()
	deadline := time.Now().Add(4 * time.Second)
	for time.Now().Before(deadline) {
		for range 1000 {
			if _, err := ip.b.HandleRequest(ctx, &logical.Request{Operation: logical.ReadOperation, Path: "creds/r0", Storage: ip.storage}); err != nil {
				break
			}
		}
	}
	pprof.StopCPUProfile()
	f.Close()
	if top, err = pprofTop("-top", "-nodecount=20", path); err != nil {
		return "", "", nil, err
	}
	if peek, err = pprofTop("-peek", `iadvize\.\(\*backend\)\.pathCredsRead$`, path); err != nil {
		return "", "", nil, err
	}
	cumOut, err := pprofTop("-top", "-cum", "-nodecount=300", path)
	if err != nil {
		return "", "", nil, err
	}
	return trimPprof(top), trimPeek(peek), parsePprof(cumOut), nil
}

// trimPeek keeps pprof -peek's table.
func trimPeek(out string) string {
	if i := strings.Index(out, "----------"); i >= 0 {
		if j := strings.LastIndex(out[:i], "\n"); j >= 0 {
			out = out[j+1:]
		}
	}
	return trimPprof2(out)
}

// mutexProfile records every contention event of the parallel benchmarks.
func mutexProfile(ip *inproc, dir string) (string, error) {
	path := filepath.Join(dir, "mutex.prof")
	old := runtime.SetMutexProfileFraction(1)
	reads := testing.Benchmark(parallelReadBench(ip, "creds/", 32, false)).N
	reads += testing.Benchmark(parallelReadBench(ip, "creds/", 32, true)).N
	runtime.SetMutexProfileFraction(old)
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	err = pprof.Lookup("mutex").WriteTo(f, 0)
	f.Close()
	if err != nil {
		return "", err
	}
	all, err := pprofTop("-top", "-nodecount=1", path)
	if err != nil {
		return "", err
	}
	top, err := pprofTop("-top", "-cum", "-nodecount=12", `-focus=framework\.\(\*Backend\)\.HandleRequest`, path)
	if err != nil {
		return "", err
	}
	total := "unknown"
	if m := regexp.MustCompile(`of ([^ ]+) total`).FindStringSubmatch(all); m != nil {
		total = m[1]
	}
	if len(parsePprof(top)) == 0 {
		return fmt.Sprintf("no contention event under framework.(*Backend).HandleRequest in %s reads (delay in the whole process: %s)\n",
			fmtInt(reads), total), nil
	}
	return fmt.Sprintf("%s reads; delay in the whole process: %s\n", fmtInt(reads), total) + trimPprof(top), nil
}

func nsPerOp(r testing.BenchmarkResult) float64 {
	if r.N == 0 {
		return 0
	}
	return float64(r.T.Nanoseconds()) / float64(r.N)
}

// allocProfile records every allocation of n reads of creds/r0.
func allocProfile(ip *inproc, dir string) (string, []pprofLine, int, error) {
	const n = 20000
	basePath, path := filepath.Join(dir, "allocs-base.prof"), filepath.Join(dir, "allocs.prof")
	old := runtime.MemProfileRate
	runtime.MemProfileRate = 1
	defer func() { runtime.MemProfileRate = old }()
	write := func(p string) error {
		runtime.GC() // the profile is as of the last GC
		f, err := os.Create(p)
		if err != nil {
			return err
		}
		defer f.Close()
		return pprof.Lookup("allocs").WriteTo(f, 0)
	}
	if err := write(basePath); err != nil {
		return "", nil, 0, err
	}
	ctx := context.Background()
	for range n {
		if _, err := ip.b.HandleRequest(ctx, &logical.Request{Operation: logical.ReadOperation, Path: "creds/r0", Storage: ip.storage}); err != nil {
			return "", nil, 0, err
		}
	}
	if err := write(path); err != nil {
		return "", nil, 0, err
	}
	top, err := pprofTop("-sample_index=alloc_objects", "-base", basePath, "-top", "-nodecount=20", path)
	if err != nil {
		return "", nil, 0, err
	}
	cum, err := pprofTop("-sample_index=alloc_objects", "-base", basePath, "-top", "-cum", "-nodecount=300", path)
	if err != nil {
		return "", nil, 0, err
	}
	return trimPprof(top), parsePprof(cum), n, nil
}

// trimPprof keeps pprof's table (from the "flat" header), with the package
// path of the plugin shortened.
func trimPprof(out string) string {
	if i := strings.Index(out, "      flat"); i >= 0 {
		out = out[i:]
	} else if i := strings.Index(out, "flat  flat%"); i >= 0 {
		out = out[i:]
	}
	return trimPprof2(out)
}

func trimPprof2(out string) string {
	out = strings.ReplaceAll(out, "github.com/iadvize/vault-plugin-secrets-iadvize.", "iadvize.")
	out = strings.ReplaceAll(out, "github.com/hashicorp/vault/sdk/", "sdk/")
	return out
}

package main

import (
	"cmp"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/montanaflynn/stats"
	"github.com/prometheus/procfs"
	vegeta "github.com/tsenart/vegeta/v12/lib"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/vaulttest"
)

// noopPluginName is the name the do-nothing plugin is registered under.
const noopPluginName = "bench-noop-plugin"

// pluginDir holds both plugins, copied once at the start (pluginDirOf): every
// server of the run gets the plugins as they were then.
var pluginDir string

func pluginDirOf(t *vaulttest.Program) string {
	dir := vaulttest.PluginDir(t, vaulttest.PluginBin(t))
	noop := vaulttest.Binary(t, "NOOP_PLUGIN_BIN", "./cmd/bench-noop-plugin")
	if err := exec.Command("cp", noop, filepath.Join(dir, noopPluginName)).Run(); err != nil {
		t.Fatalf("copying %s: %v", noop, err)
	}
	return dir
}

// sourceState names the commit of the working tree, and whether the plugin's
// files (the root package and its command, tests aside) differ from it.
func sourceState(t *vaulttest.Program) string {
	head, err := exec.Command("git", "-C", vaulttest.RepoRoot(t), "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown (not a git checkout)"
	}
	dirty, _ := exec.Command("git", "-C", vaulttest.RepoRoot(t), "status", "--porcelain", "--", "*.go", ":!:*_test.go", ":!:*/*", "go.mod",
		"cmd/vault-plugin-secrets-iadvize").Output()
	if len(dirty) > 0 {
		return "commit " + strings.TrimSpace(string(head)) + " with uncommitted changes"
	}
	return "commit " + strings.TrimSpace(string(head))
}

// vault is one Vault server of the benchmark; its Client carries the root
// token (never printed).
type vault struct {
	*vaulttest.Server
	dataDir string // file storage directory, "" for a dev server
}

// startVault starts a dev server (which registers both plugins), or with
// fileStorage an unsealed file-storage server with the iadvize plugin registered.
func startVault(t vaulttest.TB, fileStorage bool) *vault {
	if !fileStorage {
		return &vault{Server: vaulttest.Start(t, vaulttest.Options{Dev: true, PluginDir: pluginDir, LogLevel: "warn"})}
	}
	s, data := vaulttest.StartFileStorage(t, vaulttest.Options{PluginDir: pluginDir, LogLevel: "warn"})
	s.InitAndUnseal()
	s.RegisterPlugin()
	return &vault{Server: s, dataDir: data}
}

// must fails the benchmark on error (Vault's error messages never hold a token).
func must(t vaulttest.TB, err error) {
	if err != nil {
		t.Fatalf("%v", err)
	}
}

// median is the median of xs (0 when empty).
func median(xs []float64) float64 {
	m, _ := stats.Median(xs)
	return m
}

// pluginPid is the pid of the plugin process named name that this server
// runs, 0 when none.
func (v *vault) pluginPid(name string) int {
	procs, _ := procfs.AllProcs()
	for _, p := range procs {
		st, err := p.Stat()
		exe, _ := p.Executable()
		if err == nil && st.PPID == v.Pid() && filepath.Base(strings.TrimSuffix(exe, " (deleted)")) == name {
			return p.PID
		}
	}
	return 0
}

// benchToken creates a token for the clients: a policy that reads the given
// path globs, the default policy, 24 hours. It is never printed.
func (v *vault) benchToken(t vaulttest.TB, globs ...string) string {
	var pol strings.Builder
	for _, g := range globs {
		fmt.Fprintf(&pol, "path %q {\n  capabilities = [\"read\", \"list\"]\n}\n", g)
	}
	must(t, v.Client.Sys().PutPolicy("bench", pol.String()))
	s, err := v.Client.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"bench"}, TTL: "24h", NoParent: true, DisplayName: "bench"})
	if err != nil || s.Auth == nil || s.Auth.ClientToken == "" {
		t.Fatalf("auth/token/create returned no token: %v", err)
	}
	return s.Auth.ClientToken
}

// liveHeap is the Vault process's live heap right after a garbage collection
// (sys/pprof/heap?gc=1, HeapAlloc), 0 when it cannot be had.
func (v *vault) liveHeap() int64 {
	resp, err := v.Client.Logical().ReadRawWithData("sys/pprof/heap", map[string][]string{"gc": {"1"}, "debug": {"1"}})
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	_, rest, _ := strings.Cut(string(b), "# HeapAlloc = ")
	n, _ := strconv.ParseInt(strings.Fields(rest + " 0")[0], 10, 64)
	return n
}

// leaseCount lists the leases under prefix (e.g. "iadvize/creds/app/").
func (v *vault) leaseCount(t vaulttest.TB, prefix string) int {
	s, err := v.Client.Logical().List("sys/leases/lookup/" + prefix)
	must(t, err)
	if s == nil {
		return 0
	}
	keys, _ := s.Data["keys"].([]any)
	return len(keys)
}

// fake is an in-process fake iAdvize upstream on loopback whose logins take
// upstreamLatency, as a real upstream's do, so that readers overlap a login in
// flight. It records a login when it answers it.
type fake struct {
	*fakeiadvize.Server
	url string
}

func startFake(t vaulttest.TB, opts fakeiadvize.Options) *fake {
	f := fakeiadvize.New(opts)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/oauth2/token" {
			select {
			case <-time.After(upstreamLatency):
			case <-r.Context().Done():
			}
		}
		f.ServeHTTP(w, r)
	}))
	t.Cleanup(func() { f.Close(); srv.Close() })
	return &fake{Server: f, url: srv.URL}
}

// mountIadvize mounts the plugin at mount, points it at the fake with extra
// config fields, and creates the given roles (each with its own service user).
func (v *vault) mountIadvize(t vaulttest.TB, mount string, f *fake, extra map[string]any, roles ...string) {
	must(t, v.Client.Sys().Mount(mount, &api.MountInput{Type: vaulttest.PluginName}))
	cfg := map[string]any{"token_url": f.url + "/oauth2/token", "verify_url": f.url + "/_authenticated"}
	maps.Copy(cfg, extra)
	_, err := v.Client.Logical().Write(mount+"/config", cfg)
	must(t, err)
	for _, r := range roles {
		must(t, v.addRole(mount, r, f))
	}
}

// addRole creates a role with its own service user at the fake.
func (v *vault) addRole(mount, name string, f *fake) error {
	user := "svc-" + mount + "-" + name + "@bench.example"
	f.AddUser(user, "pw-"+name)
	_, err := v.Client.Logical().Write(mount+"/roles/"+name, map[string]any{"username": user, "password": "pw-" + name})
	return err
}

// procStat reads a process's /proc/PID/stat; the zero value when it is gone.
func procStat(pid int) procfs.ProcStat {
	var st procfs.ProcStat
	if p, err := procfs.NewProc(pid); pid != 0 && err == nil {
		st, _ = p.Stat()
	}
	return st
}

// rss is a process's resident set size in bytes, 0 when it is gone.
func rss(pid int) int64 { return int64(procStat(pid).ResidentMemory()) }

// cpuTime is a process's CPU time so far (user + system, all threads; 10 ms
// ticks), 0 when it is gone.
func cpuTime(pid int) time.Duration {
	return time.Duration(procStat(pid).CPUTime() * float64(time.Second))
}

// dirUsage is what a directory tree holds: files, their bytes, and the disk
// space they occupy (allocated blocks).
type dirUsage struct{ Files, Bytes, DiskBytes int64 }

func usage(dir string) (u dirUsage) {
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if info, err := d.Info(); err == nil {
			u.Files, u.Bytes, u.DiskBytes = u.Files+1, u.Bytes+info.Size(), u.DiskBytes+info.Sys().(*syscall.Stat_t).Blocks*512
		}
		return nil
	})
	return u
}

// addDelta adds after − before to u.
func (u *dirUsage) addDelta(after, before dirUsage) {
	u.Files, u.Bytes, u.DiskBytes = u.Files+after.Files-before.Files, u.Bytes+after.Bytes-before.Bytes, u.DiskBytes+after.DiskBytes-before.DiskBytes
}

// loadResult is one measurement: reads made by conc clients.
type loadResult struct {
	Reads, Errors int
	FirstErr      string
	Elapsed       time.Duration
	Lat           vegeta.LatencyMetrics // t-digest quantiles
	Bytes         uint64                // response bytes, all reads
	// CPU time the Vault process and the plugin process spent during the run.
	VaultCPU, PluginCPU time.Duration
}

func (r loadResult) rate() float64 { return float64(r.Reads) / max(r.Elapsed.Seconds(), 1e-9) }
func (r loadResult) p50() float64  { return float64(r.Lat.Quantile(0.50)) }
func (r loadResult) p99() float64  { return float64(r.Lat.Quantile(0.99)) }

// vaultCPU and pluginCPU are the processes' CPU time per read, in µs.
func (r loadResult) vaultCPU() float64     { return usPer(r.VaultCPU, r.Reads) }
func (r loadResult) pluginCPU() float64    { return usPer(r.PluginCPU, r.Reads) }
func usPer(d time.Duration, n int) float64 { return float64(d.Microseconds()) / float64(max(n, 1)) }

// rounds are one measurement's results, one per interleaved round.
type rounds []loadResult

// med is the median of f over the rounds.
func (rs rounds) med(f func(loadResult) float64) float64 {
	xs := make([]float64, len(rs))
	for i, r := range rs {
		xs[i] = f(r)
	}
	return median(xs)
}

// dur is the median of a latency f over the rounds, printed.
func (rs rounds) dur(f func(loadResult) float64) string { return fmtDur(time.Duration(rs.med(f))) }

// vs is the median over the rounds of reads/s ÷ ref's reads/s in the same round.
func (rs rounds) vs(ref rounds) float64 {
	xs := make([]float64, len(rs))
	for i, r := range rs {
		xs[i] = r.rate() / ref[i].rate()
	}
	return median(xs)
}

// interleave measures every cell once per round, the first cell rotating
// from round to round, so that none always runs first.
func interleave[C any](what string, n int, cells []C, measure func(C) loadResult) []rounds {
	out := make([]rounds, len(cells))
	for round := range n {
		for i := range cells {
			j := (i + round) % len(cells)
			out[j] = append(out[j], measure(cells[j]))
		}
		logf("%s: round %d/%d done", what, round+1, n)
	}
	return out
}

// loader sends GET requests with the X-Vault-Token header to a Vault server
// with vegeta's attacker, over keep-alive connections.
type loader struct {
	client      *http.Client
	addr, token string
}

func newLoader(addr, token string, conns int) *loader {
	return &loader{addr: addr, token: token, client: &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{
		MaxIdleConns: conns, MaxIdleConnsPerHost: conns, IdleConnTimeout: 5 * time.Minute, DisableCompression: true,
	}}}
}

// attack is one measurement: conc clients read paths for d (at random) or n
// reads (in turn), again once answered unless pace is set; CPU time of the
// non-zero pids is sampled; each, when set, sees every answer.
type attack struct {
	paths               []string
	conc, n             int
	d                   time.Duration
	pace                vegeta.Pacer
	vaultPid, pluginPid int
	each                func(*vegeta.Result)
}

func (l *loader) attack(a attack) loadResult {
	var next atomic.Int64
	hdr := http.Header{"X-Vault-Token": {l.token}}
	targets := func(t *vegeta.Target) error {
		i := int(next.Add(1) - 1)
		if a.n > 0 && i >= a.n {
			return vegeta.ErrNoTargets
		}
		p := a.paths[i%len(a.paths)]
		if a.n == 0 {
			p = a.paths[rand.IntN(len(a.paths))]
		}
		*t = vegeta.Target{Method: http.MethodGet, URL: l.addr + "/v1/" + p, Header: hdr}
		return nil
	}
	a.pace = cmp.Or(a.pace, vegeta.Pacer(vegeta.ConstantPacer{})) // unbounded by default
	atk := vegeta.NewAttacker(vegeta.Client(l.client), vegeta.Workers(uint64(a.conc)), vegeta.MaxWorkers(uint64(a.conc)))
	var res loadResult
	v0, p0, t0 := cpuTime(a.vaultPid), cpuTime(a.pluginPid), time.Now()
	for r := range atk.Attack(targets, a.pace, a.d, "") {
		switch {
		case r.Error == vegeta.ErrNoTargets.Error():
			continue
		case r.Error != "":
			res.Errors++
			if res.FirstErr == "" {
				res.FirstErr = r.Error // a status or a transport error: no secret
			}
		default:
			res.Reads++
		}
		res.Lat.Add(r.Latency)
		res.Bytes += r.BytesIn
		if a.each != nil {
			a.each(r)
		}
	}
	res.Elapsed = time.Since(t0)
	res.VaultCPU, res.PluginCPU = cpuTime(a.vaultPid)-v0, cpuTime(a.pluginPid)-p0
	return res
}

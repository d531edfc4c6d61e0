package main

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/prometheus/procfs"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/vaulttest"
)

// noopPluginName is the name the do-nothing plugin is registered under.
const noopPluginName = "bench-noop-plugin"

// binaries are the programs the benchmark runs. pluginDir holds both plugins,
// copied once at the start: every server of the run gets the plugins as they
// were then, even if the build directory is rebuilt meanwhile.
type binaries struct{ vault, pluginDir string }

func findBinaries(t *vaulttest.Program) binaries {
	dir := vaulttest.PluginDir(t, vaulttest.PluginBin(t))
	noop := vaulttest.Binary(t, "NOOP_PLUGIN_BIN", "./cmd/bench-noop-plugin")
	if err := exec.Command("cp", noop, filepath.Join(dir, noopPluginName)).Run(); err != nil {
		t.Fatalf("copying %s: %v", noop, err)
	}
	return binaries{vault: vaulttest.VaultBin(t), pluginDir: dir}
}

// sourceState names the commit of the working tree, and whether the plugin's
// files (the root package and its command, tests aside) differ from it.
func sourceState(t *vaulttest.Program) string {
	git := func(args ...string) string {
		out, _ := exec.Command("git", append([]string{"-C", vaulttest.RepoRoot(t)}, args...)...).Output()
		return strings.TrimSpace(string(out))
	}
	head := git("rev-parse", "--short", "HEAD")
	if head == "" {
		return "unknown (not a git checkout)"
	}
	if git("status", "--porcelain", "--", "*.go", ":!:*_test.go", ":!:*/*", "go.mod", "cmd/vault-plugin-secrets-iadvize") != "" {
		return "commit " + head + " with uncommitted changes"
	}
	return "commit " + head
}

// vault is one Vault server of the benchmark; its Client carries the root
// token (never printed).
type vault struct {
	*vaulttest.Server
	dataDir string // file storage directory, "" for a dev server
}

// startDev starts a dev server (in-memory storage); dev mode registers both
// plugins under their file names.
func startDev(t vaulttest.TB, bins binaries) *vault {
	return &vault{Server: vaulttest.Start(t, vaulttest.Options{Dev: true, PluginDir: bins.pluginDir, LogLevel: "warn"})}
}

// startFileServer starts a server with file storage, initialises and unseals it
// and registers the iadvize plugin.
func startFileServer(t vaulttest.TB, bins binaries) *vault {
	data, port := filepath.Join(t.TempDir(), "data"), vaulttest.FreePort(t)
	hcl := fmt.Sprintf(`storage "file" { path = %q }
listener "tcp" {
  address     = "127.0.0.1:%d"
  tls_disable = true
}
plugin_directory = %q
api_addr         = "http://127.0.0.1:%d"
disable_mlock    = true
`, data, port, bins.pluginDir, port)
	s := vaulttest.Start(t, vaulttest.Options{ConfigHCL: hcl, PluginDir: bins.pluginDir, Port: port, LogLevel: "warn"})
	s.InitAndUnseal()
	s.RegisterPlugin()
	return &vault{Server: s, dataDir: data}
}

// write writes as root and fails the benchmark on error (Vault's error
// messages never hold a token).
func (v *vault) write(t vaulttest.TB, path string, data map[string]any) *api.Secret {
	s, err := v.Client.Logical().Write(path, data)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return s
}

// mount enables a plugin (or a built-in engine) at path.
func (v *vault) mount(t vaulttest.TB, path, plugin string, options map[string]string) {
	if err := v.Client.Sys().Mount(path, &api.MountInput{Type: plugin, Options: options}); err != nil {
		t.Fatalf("mounting %s at %s: %v", plugin, path, err)
	}
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
	if err := v.Client.Sys().PutPolicy("bench", pol.String()); err != nil {
		t.Fatalf("%v", err)
	}
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
	if err != nil {
		t.Fatalf("%v", err)
	}
	if s == nil {
		return 0
	}
	keys, _ := s.Data["keys"].([]any)
	return len(keys)
}

// fake is an in-process fake iAdvize upstream on a loopback port whose logins
// take latency, as a real upstream's do (so that concurrent readers really
// overlap with a login in flight).
type fake struct {
	*fakeiadvize.Server
	url string
}

func startFake(t vaulttest.TB, opts fakeiadvize.Options, latency time.Duration) *fake {
	f := fakeiadvize.New(opts)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("%v", err)
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/oauth2/token" {
			select {
			case <-time.After(latency):
			case <-r.Context().Done():
			}
		}
		f.ServeHTTP(w, r)
	})}
	go srv.Serve(l)
	t.Cleanup(func() {
		f.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return &fake{Server: f, url: "http://" + l.Addr().String()}
}

// mountIadvize mounts the plugin at mount, points it at the fake with extra
// config fields, and creates the given roles (each with its own service user).
func (v *vault) mountIadvize(t vaulttest.TB, mount string, f *fake, extra map[string]any, roles ...string) {
	v.mount(t, mount, vaulttest.PluginName, nil)
	cfg := map[string]any{"token_url": f.url + "/oauth2/token", "verify_url": f.url + "/_authenticated"}
	for k, x := range extra {
		cfg[k] = x
	}
	v.write(t, mount+"/config", cfg)
	for _, r := range roles {
		v.addRole(t, mount, r, f)
	}
}

// addRole creates a role with its own service user at the fake.
func (v *vault) addRole(t vaulttest.TB, mount, name string, f *fake) {
	f.AddUser(userOf(mount, name), "pw-"+name)
	v.write(t, mount+"/roles/"+name, map[string]any{"username": userOf(mount, name), "password": "pw-" + name})
}

// userOf is the fake's username of a role made by addRole.
func userOf(mount, name string) string { return "svc-" + mount + "-" + name + "@bench.example" }

// rss is a process's resident set size in bytes, 0 when it is gone.
func rss(pid int) int64 {
	st, err := procStat(pid)
	if err != nil {
		return 0
	}
	return int64(st.ResidentMemory())
}

// cpuTime is a process's CPU time so far (user + system, all threads; 10 ms
// ticks), 0 when it is gone.
func cpuTime(pid int) time.Duration {
	st, err := procStat(pid)
	if err != nil {
		return 0
	}
	return time.Duration(st.CPUTime() * float64(time.Second))
}

func procStat(pid int) (procfs.ProcStat, error) {
	if pid == 0 {
		return procfs.ProcStat{}, fs.ErrNotExist
	}
	p, err := procfs.NewProc(pid)
	if err != nil {
		return procfs.ProcStat{}, err
	}
	return p.Stat()
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
			u.Files++
			u.Bytes += info.Size()
			if st, ok := info.Sys().(*syscall.Stat_t); ok {
				u.DiskBytes += st.Blocks * 512
			}
		}
		return nil
	})
	return u
}

// add returns u + sign × w.
func (u dirUsage) add(w dirUsage, sign int64) dirUsage {
	return dirUsage{u.Files + sign*w.Files, u.Bytes + sign*w.Bytes, u.DiskBytes + sign*w.DiskBytes}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/vaulttest"
)

// noopPluginName is the name the do-nothing plugin is registered under.
const noopPluginName = "bench-noop-plugin"

// binaries are the programs the benchmark runs.
type binaries struct {
	vault, plugin, noop string
}

// findBinaries takes $VAULT_BIN, $PLUGIN_BIN and $NOOP_PLUGIN_BIN, building the
// plugins (into a directory removed at the end) when they are not set.
func findBinaries(t *vaulttest.Program) binaries {
	var bins binaries
	bins.vault = vaulttest.VaultBin(t)
	var dir string
	build := func(envVar, pkg, name string) string {
		if bin := os.Getenv(envVar); bin != "" {
			if _, err := os.Stat(bin); err != nil {
				t.Fatalf("%s=%s: %v", envVar, bin, err)
			}
			return bin
		}
		if dir == "" {
			dir = t.TempDir()
		}
		out := filepath.Join(dir, name)
		logf("building %s", pkg)
		cmd := exec.Command("go", "build", "-trimpath", "-o", out, pkg)
		cmd.Dir = vaulttest.RepoRoot(t)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, b)
		}
		return out
	}
	bins.plugin = build("PLUGIN_BIN", "./cmd/vault-plugin-secrets-iadvize", vaulttest.PluginName)
	bins.noop = build("NOOP_PLUGIN_BIN", "./cmd/bench-noop-plugin", noopPluginName)
	// Every server of the run gets the plugin as it is now, even if the build
	// directory is rebuilt meanwhile (make test, make demo).
	snap := t.TempDir()
	for _, b := range []*string{&bins.plugin, &bins.noop} {
		dst := filepath.Join(snap, filepath.Base(*b))
		if err := copyExecutable(*b, dst); err != nil {
			t.Fatalf("copying %s: %v", *b, err)
		}
		*b = dst
	}
	return bins
}

// sourceState names the commit of the working tree and the plugin's files that
// differ from it, for the report's header.
func sourceState(t *vaulttest.Program) string {
	root := vaulttest.RepoRoot(t)
	out, err := exec.Command("git", "-C", root, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown (not a git checkout)"
	}
	state := "commit " + strings.TrimSpace(string(out))
	st, err := exec.Command("git", "-C", root, "status", "--porcelain", "--", "*.go", "go.mod", "cmd/vault-plugin-secrets-iadvize").Output()
	if err != nil {
		return state
	}
	var changed []string
	for _, line := range strings.Split(strings.TrimSpace(string(st)), "\n") {
		if len(line) < 4 {
			continue
		}
		f := strings.TrimSpace(line[3:])
		// The plugin is the root package and its command; tests do not change it.
		if (!strings.Contains(f, "/") || strings.HasPrefix(f, "cmd/vault-plugin-secrets-iadvize/")) && !strings.HasSuffix(f, "_test.go") {
			changed = append(changed, f)
		}
	}
	if len(changed) > 0 {
		state += " with uncommitted changes to " + strings.Join(changed, ", ")
	}
	return state
}

// vault is one Vault server of the benchmark, with the plain HTTP client the
// measurements use.
type vault struct {
	*vaulttest.Server
	root    string // root token: never printed
	dataDir string // file storage directory, "" for a dev server
	http    *http.Client
}

// newHTTPClient is a keep-alive client with room for conns idle connections,
// for loopback only.
func newHTTPClient(conns int) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        conns,
			MaxIdleConnsPerHost: conns,
			IdleConnTimeout:     5 * time.Minute,
			DisableCompression:  true,
			ForceAttemptHTTP2:   false,
		},
		Timeout: 2 * time.Minute,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// pluginDir is a plugin directory holding the iadvize plugin and, when noop is
// set, the do-nothing plugin.
func pluginDir(t vaulttest.TB, bins binaries, noop bool) string {
	dir := vaulttest.PluginDir(t, bins.plugin)
	if noop {
		if err := copyExecutable(bins.noop, filepath.Join(dir, noopPluginName)); err != nil {
			t.Fatalf("copying the noop plugin: %v", err)
		}
	}
	return dir
}

func copyExecutable(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o755)
}

// startDev starts a dev server (in-memory storage) with both plugins in its
// plugin directory; dev mode registers them under their file names.
func startDev(t vaulttest.TB, bins binaries) *vault {
	s := vaulttest.Start(t, vaulttest.Options{Dev: true, PluginDir: pluginDir(t, bins, true), LogLevel: "warn"})
	return &vault{Server: s, root: vaulttest.RootToken, http: newHTTPClient(256)}
}

// startFileServer starts a server with file storage, initialises and unseals it
// and registers the iadvize plugin.
func startFileServer(t vaulttest.TB, bins binaries) *vault {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	port := vaulttest.FreePort(t)
	plugins := pluginDir(t, bins, false)
	hcl := fmt.Sprintf(`
storage "file" {
  path = %q
}
listener "tcp" {
  address     = "127.0.0.1:%d"
  tls_disable = true
}
plugin_directory = %q
api_addr         = "http://127.0.0.1:%d"
disable_mlock    = true
ui               = false
`, data, port, plugins, port)
	s := vaulttest.Start(t, vaulttest.Options{ConfigHCL: hcl, PluginDir: plugins, Port: port, LogLevel: "warn"})
	_, root := s.InitAndUnseal()
	s.RegisterPlugin()
	return &vault{Server: s, root: root, dataDir: data, http: newHTTPClient(256)}
}

// call sends one request with the given token and decodes a JSON answer into
// out (when not nil). A status other than 200 or 204 is an error that carries
// Vault's error messages (which never hold a token).
func (v *vault) call(method, path, token string, body any, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, v.Addr+"/v1/"+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("X-Vault-Token", token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := v.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNoContent {
		var e struct {
			Errors []string `json:"errors"`
		}
		_ = json.Unmarshal(b, &e)
		return &httpError{status: resp.StatusCode, msg: fmt.Sprintf("%s %s: %d %s", method, path, resp.StatusCode, strings.Join(e.Errors, "; "))}
	}
	if out != nil && len(b) > 0 {
		return json.Unmarshal(b, out)
	}
	return nil
}

type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func isStatus(err error, status int) bool {
	var he *httpError
	return errors.As(err, &he) && he.status == status
}

// must runs call as root and fails the benchmark on error.
func (v *vault) must(t vaulttest.TB, method, path string, body any, out any) {
	if err := v.call(method, path, v.root, body, out); err != nil {
		t.Fatalf("%v", err)
	}
}

// mountPlugin enables a plugin at path.
func (v *vault) mountPlugin(t vaulttest.TB, path, plugin string) {
	v.must(t, "POST", "sys/mounts/"+path, map[string]any{"type": plugin}, nil)
}

// pid of the plugin process named name that this server runs, 0 when none.
func (v *vault) pluginPid(name string) int {
	return childByName(v.Pid(), name)
}

// benchToken creates a token for the clients: a policy that reads the given
// path globs, the default policy, 24 hours. It is never printed.
func (v *vault) benchToken(t vaulttest.TB, globs ...string) string {
	var pol strings.Builder
	for _, g := range globs {
		fmt.Fprintf(&pol, "path %q {\n  capabilities = [\"read\", \"list\"]\n}\n", g)
	}
	v.must(t, "PUT", "sys/policies/acl/bench", map[string]any{"policy": pol.String()}, nil)
	var out struct {
		Auth struct {
			ClientToken string `json:"client_token"`
		} `json:"auth"`
	}
	v.must(t, "POST", "auth/token/create", map[string]any{
		"policies": []string{"bench"}, "ttl": "24h", "no_parent": true, "display_name": "bench",
	}, &out)
	if out.Auth.ClientToken == "" {
		t.Fatalf("auth/token/create returned no token")
	}
	return out.Auth.ClientToken
}

// liveHeap is the Vault process's live heap right after a garbage collection
// (sys/pprof/heap?gc=1, HeapAlloc), 0 when it cannot be had.
func (v *vault) liveHeap() int64 {
	req, err := http.NewRequest(http.MethodGet, v.Addr+"/v1/sys/pprof/heap?gc=1&debug=1", nil)
	if err != nil {
		return 0
	}
	req.Header.Set("X-Vault-Token", v.root)
	resp, err := v.http.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "# HeapAlloc = "); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(rest), 10, 64)
			return n
		}
	}
	return 0
}

// leaseCount lists the leases under prefix (e.g. "iadvize/creds/app/").
func (v *vault) leaseCount(t vaulttest.TB, prefix string) int {
	var out struct {
		Data struct {
			Keys []string `json:"keys"`
		} `json:"data"`
	}
	err := v.call("LIST", "sys/leases/lookup/"+prefix, v.root, nil, &out)
	if isStatus(err, http.StatusNotFound) {
		return 0
	}
	if err != nil {
		t.Fatalf("%v", err)
	}
	return len(out.Data.Keys)
}

// fake is an in-process fake iAdvize upstream on a loopback port. Logins take
// latency, as a real upstream's do (so that concurrent readers really overlap
// with a login in flight).
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
	h := http.Handler(f)
	if latency > 0 {
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/oauth2/token" {
				select {
				case <-time.After(latency):
				case <-r.Context().Done():
				}
			}
			f.ServeHTTP(w, r)
		})
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	t.Cleanup(func() {
		f.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return &fake{Server: f, url: "http://" + l.Addr().String()}
}

// configure points a mount at the fake, with extra config fields.
func (v *vault) configure(t vaulttest.TB, mount string, f *fake, extra map[string]any) {
	cfg := map[string]any{
		"token_url":  f.url + "/oauth2/token",
		"verify_url": f.url + "/_authenticated",
	}
	for k, x := range extra {
		cfg[k] = x
	}
	v.must(t, "POST", mount+"/config", cfg, nil)
}

// addRole creates a role with its own service user at the fake.
func (v *vault) addRole(t vaulttest.TB, mount, name string, f *fake) {
	user, pass := "svc-"+mount+"-"+name+"@bench.example", "pw-"+name
	f.AddUser(user, pass)
	v.must(t, "POST", mount+"/roles/"+name, map[string]any{"username": user, "password": pass}, nil)
}

// userOf is the fake's username of a role made by addRole.
func userOf(mount, name string) string { return "svc-" + mount + "-" + name + "@bench.example" }

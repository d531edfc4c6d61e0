// Package vaulttest runs real Vault servers with the plugin registered, for the
// end-to-end tests, the HA tests and the benchmarks. Servers listen on loopback
// only and are stopped when the test (or the caller) ends.
package vaulttest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// PluginName is the name the plugin is registered under, as in the README.
const PluginName = "vault-plugin-secrets-iadvize"

// RootToken is the root token of dev servers.
const RootToken = "root"

// TB is the part of testing.TB the harness needs; the benchmark program passes its
// own implementation.
type TB interface {
	Helper()
	Logf(format string, args ...any)
	Fatalf(format string, args ...any)
	Skipf(format string, args ...any)
	Cleanup(func())
	TempDir() string
}

var _ TB = (testing.TB)(nil)

// VaultBin returns the Vault binary: $VAULT_BIN, else the one scripts/vault.sh
// has cached. It skips the test, saying so, when none can be had.
func VaultBin(t TB) string {
	t.Helper()
	if bin := os.Getenv("VAULT_BIN"); bin != "" {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("VAULT_BIN=%s: %v", bin, err)
		}
		return bin
	}
	out, err := exec.Command("bash", filepath.Join(RepoRoot(t), "scripts", "vault.sh"), "--cached-only").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" {
		t.Skipf("no Vault binary: set VAULT_BIN or run `make test`, which builds one (%v)", err)
	}
	return strings.TrimSpace(string(out))
}

// RepoRoot is the repository's top directory.
func RepoRoot(t TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

var (
	buildOnce sync.Map // package path -> *builtBinary
)

type builtBinary struct {
	once sync.Once
	path string
	err  error
}

// Binary returns $envVar when set, else builds the Go package (relative to the
// repository root, e.g. "./cmd/fake-iadvize") once per process.
func Binary(t TB, envVar, pkg string) string {
	t.Helper()
	if bin := os.Getenv(envVar); bin != "" {
		return bin
	}
	v, _ := buildOnce.LoadOrStore(pkg, &builtBinary{})
	bb := v.(*builtBinary)
	bb.once.Do(func() {
		dir, err := os.MkdirTemp("", "vaulttest-bin-")
		if err != nil {
			bb.err = err
			return
		}
		bb.path = filepath.Join(dir, filepath.Base(pkg))
		cmd := exec.Command("go", "build", "-o", bb.path, pkg)
		cmd.Dir = RepoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			bb.err = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	})
	if bb.err != nil {
		t.Fatalf("%v", bb.err)
	}
	return bb.path
}

// PluginBin is the plugin binary: $PLUGIN_BIN or a fresh build.
func PluginBin(t TB) string {
	return Binary(t, "PLUGIN_BIN", "./cmd/vault-plugin-secrets-iadvize")
}

// SHA256 is the hex sha256 of a file, as `vault plugin register` wants it.
func SHA256(t TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("%v", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatalf("%v", err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// PluginDir makes a directory holding a copy of the plugin binary under
// PluginName (Vault refuses symlinks out of its plugin directory).
func PluginDir(t TB, pluginBin string) string {
	t.Helper()
	dir := t.TempDir()
	if err := CopyFile(pluginBin, filepath.Join(dir, PluginName), 0o755); err != nil {
		t.Fatalf("copying the plugin: %v", err)
	}
	return dir
}

// CopyFile copies src to dst (created with perm, or truncated), making dst's
// directory first.
func CopyFile(src, dst string, perm os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// FreePort returns a free TCP port on 127.0.0.1.
func FreePort(t TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("%v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Options describe one Vault server.
type Options struct {
	// Dev runs `vault server -dev` (in-memory storage, unsealed, root token
	// DevRootToken). Otherwise ConfigHCL is written to a file and passed with -config.
	Dev       bool
	ConfigHCL string
	// DevRootToken is a dev server's root token (RootToken when empty).
	DevRootToken string
	// PluginDir is the plugin directory (PluginDir(t, PluginBin(t)) when empty).
	PluginDir string
	// Port is the API port (a free one when 0).
	Port int
	// LogLevel of the server (default "info").
	LogLevel string
	// Env is added to the server's environment.
	Env []string
}

// Server is one running Vault process.
type Server struct {
	t       TB
	opts    Options
	Addr    string // http://127.0.0.1:PORT
	Port    int
	LogPath string // the server's combined output, appended across restarts
	Client  *api.Client

	mu  sync.Mutex
	cmd *exec.Cmd
	log *os.File
}

// Start starts a server and waits until it answers. It is stopped at cleanup.
func Start(t TB, opts Options) *Server {
	t.Helper()
	if opts.PluginDir == "" {
		opts.PluginDir = PluginDir(t, PluginBin(t))
	}
	if opts.Port == 0 {
		opts.Port = FreePort(t)
	}
	if opts.LogLevel == "" {
		opts.LogLevel = "info"
	}
	if opts.DevRootToken == "" {
		opts.DevRootToken = RootToken
	}
	s := &Server{
		t:       t,
		opts:    opts,
		Port:    opts.Port,
		Addr:    fmt.Sprintf("http://127.0.0.1:%d", opts.Port),
		LogPath: filepath.Join(t.TempDir(), "vault.log"),
	}
	cfg := api.DefaultConfig()
	cfg.Address = s.Addr
	cfg.Timeout = 60 * time.Second
	client, err := api.NewClient(cfg)
	if err != nil {
		t.Fatalf("%v", err)
	}
	if opts.Dev {
		client.SetToken(opts.DevRootToken)
	}
	s.Client = client
	t.Cleanup(s.Stop)
	s.Restart()
	return s
}

// Restart starts the process (again, after Stop or Kill) and waits until it
// answers on /v1/sys/health (sealed or not).
func (s *Server) Restart() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	vault := VaultBin(s.t)
	args := []string{"server", "-log-level=" + s.opts.LogLevel}
	if s.opts.Dev {
		args = append(args, "-dev", "-dev-root-token-id="+s.opts.DevRootToken,
			fmt.Sprintf("-dev-listen-address=127.0.0.1:%d", s.opts.Port),
			"-dev-plugin-dir="+s.opts.PluginDir, "-dev-no-store-token")
	} else {
		path := filepath.Join(filepath.Dir(s.LogPath), "config.hcl")
		if err := os.WriteFile(path, []byte(s.opts.ConfigHCL), 0o600); err != nil {
			s.t.Fatalf("%v", err)
		}
		args = append(args, "-config="+path)
	}
	logf, err := os.OpenFile(s.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		s.t.Fatalf("%v", err)
	}
	cmd := exec.Command(vault, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "VAULT_ADDR="+s.Addr, "HOME="+filepath.Dir(s.LogPath))
	cmd.Env = append(cmd.Env, s.opts.Env...)
	// A session of its own (and so a process group: Kill ends the plugins too),
	// so that a Ctrl-C in the terminal reaches the program that started it, and
	// a server left running by `make dev` outlives the terminal.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		s.t.Fatalf("starting vault: %v", err)
	}
	s.cmd, s.log = cmd, logf
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()

	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-done:
			s.cmd = nil
			s.t.Fatalf("vault exited at start; its log:\n%s", tail(s.LogPath, 4000))
		default:
		}
		if _, err := s.Client.Sys().Health(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("vault did not answer within 60s; its log:\n%s", tail(s.LogPath, 4000))
		}
		time.Sleep(100 * time.Millisecond) // polling a starting process, not timing a test
	}
}

// Stop ends the process gracefully (SIGTERM, then SIGKILL after 20 s).
func (s *Server) Stop() { s.signal(syscall.SIGTERM) }

// Kill ends the process at once (kill -9), as a crash would.
func (s *Server) Kill() { s.signal(syscall.SIGKILL) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	cmd := s.cmd
	s.cmd = nil
	_ = syscall.Kill(-cmd.Process.Pid, sig)
	waited := make(chan struct{})
	go func() { cmd.Process.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-waited
	}
	if s.log != nil {
		s.log.Close()
		s.log = nil
	}
}

// Pid is the server's process id, 0 when stopped.
func (s *Server) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Log returns the server's output so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.LogPath)
	return string(b)
}

// InitAndUnseal initialises a non-dev server with one key share, unseals it and
// sets the root token on its client. It returns the unseal key and root token.
func (s *Server) InitAndUnseal() (unsealKey, rootToken string) {
	s.t.Helper()
	resp, err := s.Client.Sys().Init(&api.InitRequest{SecretShares: 1, SecretThreshold: 1})
	if err != nil {
		s.t.Fatalf("vault operator init: %v", err)
	}
	s.Unseal(resp.Keys[0])
	s.Client.SetToken(resp.RootToken)
	return resp.Keys[0], resp.RootToken
}

// Unseal unseals the server and waits until it is active or a standby.
func (s *Server) Unseal(key string) {
	s.t.Helper()
	if _, err := s.Client.Sys().Unseal(key); err != nil {
		s.t.Fatalf("vault operator unseal: %v", err)
	}
	WaitFor(s.t, 60*time.Second, "vault unsealed", func() error {
		st, err := s.Client.Sys().SealStatus()
		if err != nil {
			return err
		}
		if st.Sealed {
			return errors.New("still sealed")
		}
		return nil
	})
}

// RegisterPlugin registers the plugin binary of PluginDir with its sha256 (for
// servers started with a config file; dev servers register it themselves).
func (s *Server) RegisterPlugin() {
	s.t.Helper()
	sum := SHA256(s.t, filepath.Join(s.opts.PluginDir, PluginName))
	err := s.Client.Sys().RegisterPlugin(&api.RegisterPluginInput{
		Name: PluginName, Type: api.PluginTypeSecrets, Command: PluginName, SHA256: sum,
	})
	if err != nil {
		s.t.Fatalf("vault plugin register: %v", err)
	}
}

// Mount enables the plugin at path (e.g. "iadvize").
func (s *Server) Mount(path string) {
	s.t.Helper()
	if err := s.Client.Sys().Mount(path, &api.MountInput{Type: PluginName}); err != nil {
		s.t.Fatalf("vault secrets enable -path=%s %s: %v", path, PluginName, err)
	}
}

// StartDev starts a dev server with the plugin enabled at iadvize/.
func StartDev(t TB, opts Options) *Server {
	t.Helper()
	opts.Dev = true
	s := Start(t, opts)
	s.Mount("iadvize")
	return s
}

// WaitFor polls check every 100 ms until it returns nil, failing after timeout.
// For conditions of real processes (a server starting, an election), never to
// time a unit under test.
func WaitFor(t TB, timeout time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Context returns a context bounded by d, cancelled at cleanup.
func Context(t TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(bytes.TrimSpace(b))
}

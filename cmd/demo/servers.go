package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/vaulttest"
)

// step prints a heading.
func step(format string, args ...any) { fmt.Printf("\n==> "+format+"\n", args...) }

// mask is a fingerprint that tells tokens apart without showing any of one: the
// first 12 hex digits of its SHA-256, never the token or a piece of it.
func mask(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return "sha256:" + hex.EncodeToString(sum[:])[:12]
}

// randomHex is n random bytes in hex.
func randomHex(t vaulttest.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("%v", err)
	}
	return hex.EncodeToString(b)
}

// upstream starts the fake iAdvize with the demo user and, when clientSecret is
// not empty, the demo client.
func upstream(t vaulttest.TB, password, clientSecret string) *vaulttest.Fake {
	step("Starting the fake iAdvize upstream")
	f := vaulttest.StartFake(t, "")
	f.AddUser(t, demoUser, password)
	if clientSecret != "" {
		f.AddClient(t, demoClient, clientSecret)
	}
	return f
}

// devServer starts a Vault dev server whose plugin directory is o.pluginDir
// (so the plugin is registered, not mounted), with a random root token.
func devServer(t vaulttest.TB, o options) *vaulttest.Server {
	step("Starting a Vault dev server with the plugin")
	s := vaulttest.Start(t, vaulttest.Options{Dev: true, PluginDir: o.pluginDir, DevRootToken: "demo-" + randomHex(t, 12)})
	h, err := s.Client.Sys().Health()
	if err != nil {
		t.Fatalf("sys/health: %v", err)
	}
	fmt.Printf("    Vault v%s dev server on %s\n", h.Version, s.Addr)
	return s
}

// vaultCLI runs the vault command line against one server, as a person would.
type vaultCLI struct {
	bin, addr, token string
	home             string // HOME of the CLI, so it neither reads nor writes ~/.vault-token
}

// run runs vault args with stdin, its output indented on stdout; it stops the
// program when the command fails.
func (c vaultCLI) run(t vaulttest.TB, stdin io.Reader, args ...string) {
	out := c.output(t, stdin, args...)
	if out != "" {
		fmt.Print(indent(out))
	}
}

// output runs vault args and returns their standard output.
func (c vaultCLI) output(t vaulttest.TB, stdin io.Reader, args ...string) string {
	cmd := exec.Command(c.bin, args...)
	cmd.Stdin = stdin
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VAULT_") && !strings.HasPrefix(kv, "HOME=") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, "VAULT_ADDR="+c.addr, "VAULT_TOKEN="+c.token, "HOME="+c.home)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("vault %s: %v\n%s", args[0], err, strings.TrimSpace(stderr.String()))
	}
	return string(out)
}

// indent indents every line of s by four spaces.
func indent(s string) string {
	lines := strings.SplitAfter(s, "\n")
	var b strings.Builder
	for _, l := range lines {
		if l != "" {
			b.WriteString("    " + l)
		}
	}
	return b.String()
}

// writeSecret writes a random secret (no newline: vault's key=@FILE sends a
// file as is) to a file of dir, readable by the owner only, and returns it.
func writeSecret(t vaulttest.TB, dir, name string) string {
	secret := randomHex(t, 16)
	if err := os.WriteFile(filepath.Join(dir, name), []byte(secret), 0o600); err != nil {
		t.Fatalf("%v", err)
	}
	return secret
}

// withLogs is a Program whose Fatalf adds the last lines of the servers' logs.
type withLogs struct {
	*vaulttest.Program
	logs map[string]string // name -> path
}

func (t *withLogs) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	names := make([]string, 0, len(t.logs))
	for name := range t.logs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if b, err := os.ReadFile(t.logs[name]); err == nil && len(b) > 0 {
			msg += fmt.Sprintf("\n--- last lines of %s ---\n%s", name, lastLines(string(b), 20))
		}
	}
	t.Program.Fatalf("%s", msg)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/vaulttest"
)

// readmeBlock returns the shell commands of the README's fenced ```sh block
// between the lines <!-- name:begin --> and <!-- name:end -->. The tests run
// these very lines, so the README and the tests cannot drift apart.
func readmeBlock(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(vaulttest.RepoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	begin, end := "<!-- "+name+":begin -->", "<!-- "+name+":end -->"
	s := string(b)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i < 0 || j < i || strings.Count(s, begin) != 1 {
		t.Fatalf("README.md has no single %s ... %s section", begin, end)
	}
	section := strings.TrimSpace(s[i+len(begin) : j])
	if !strings.HasPrefix(section, "```sh\n") || !strings.HasSuffix(section, "\n```") {
		t.Fatalf("README.md section %s is not one ```sh block", name)
	}
	return strings.TrimSuffix(strings.TrimPrefix(section, "```sh\n"), "```")
}

// script is a README block run by bash (errexit, nounset, pipefail) in dir.
type script struct {
	dir string
	env []string // added to the base environment
	// ownGroup runs the commands in a process group of their own, which is
	// sent SIGTERM once they end: what they left running in the background
	// (a server a README block starts) ends with them.
	ownGroup bool
}

// run runs the commands and returns their combined output, failing the test
// (with the output redacted by sec) when they fail.
func (s script) run(t *testing.T, sec *secrets, name, commands string) string {
	t.Helper()
	started := time.Now()
	text, err := s.try(t, sec, name, commands)
	if err != nil {
		t.Fatalf("README %s block failed (%v) after %s; its output (redacted):\n%s",
			name, err, time.Since(started).Round(time.Millisecond), sec.redact(text))
	}
	t.Logf("README %s block ran in %s", name, time.Since(started).Round(time.Millisecond))
	return text
}

// try runs the commands and returns their combined output and how they ended,
// for blocks expected to fail. The access tokens they print are added to sec.
func (s script) try(t *testing.T, sec *secrets, name, commands string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", commands)
	cmd.Dir = s.dir
	cmd.Env = append(scriptEnv(), s.env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if s.ownGroup {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	}
	err := cmd.Run()
	if s.ownGroup && cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	}
	text := out.String()
	sec.add(accessTokensIn(text)...)
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("README %s block: no end within 5 minutes: %w", name, err)
	}
	return text, err
}

// scriptEnv is the test's environment without VAULT_* (as for the CLI) and
// without make's own variables (a make run by the test is not a sub-make of
// the one that may have started go test). The Go caches are named explicitly,
// so that a test may give the commands a HOME of its own and still build with
// the warm caches.
func scriptEnv() []string {
	var env []string
	for _, kv := range cleanEnv() {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "MAKEFLAGS", "MAKELEVEL", "MFLAGS":
			continue
		}
		env = append(env, kv)
	}
	goEnvOnce.Do(func() {
		out, err := exec.Command("go", "env", "GOCACHE", "GOMODCACHE", "GOPATH").Output()
		if err != nil {
			return
		}
		for i, k := range []string{"GOCACHE", "GOMODCACHE", "GOPATH"} {
			if v := strings.Split(string(out), "\n"); i < len(v) && v[i] != "" {
				goEnv = append(goEnv, k+"="+v[i])
			}
		}
	})
	return append(env, goEnv...)
}

var (
	goEnvOnce sync.Once
	goEnv     []string
)

var accessTokenLine = regexp.MustCompile(`(?m)^access_token\s+(\S+)`)

// accessTokensIn returns the access tokens the vault CLI printed in out.
func accessTokensIn(out string) []string {
	var toks []string
	for _, m := range accessTokenLine.FindAllStringSubmatch(out, -1) {
		toks = append(toks, m[1])
	}
	return toks
}

// vaultOnPath returns a directory holding `vault`, the Vault binary under test,
// for the PATH of README commands.
func vaultOnPath(t *testing.T, bin string) string {
	t.Helper()
	dir := t.TempDir()
	abs, err := filepath.Abs(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(abs, filepath.Join(dir, "vault")); err != nil {
		t.Fatal(err)
	}
	return dir
}

// copySource copies the repository's files (tracked and untracked, not
// ignored; no .git, no build/) into a new directory and returns it: a clean
// checkout of the working tree, for commands that write build/.
func copySource(t *testing.T) string {
	t.Helper()
	root := vaulttest.RepoRoot(t)
	out, err := exec.Command("git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard").Output()
	if err != nil {
		t.Skipf("copying the source needs git and a checkout: %v", err)
	}
	dst := filepath.Join(t.TempDir(), "src")
	for _, rel := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		src := filepath.Join(root, rel)
		info, err := os.Lstat(src)
		if err != nil || !info.Mode().IsRegular() {
			continue // deleted in the working tree, or not a file
		}
		if err := vaulttest.CopyFile(src, filepath.Join(dst, rel), info.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// TestQuickstartAsWritten runs the README's Quickstart, block by block, as a
// newcomer would from a clean checkout: make dev, the commands against the fake
// iAdvize, the client-credentials mount, a rebuild and reload, and the stop.
// Each read gets a token the fake accepts; there is one login per role, and
// none for the rebuild and reload.
func TestQuickstartAsWritten(t *testing.T) {
	t.Parallel()
	bin := needVault(t)
	sec := &secrets{}
	src := copySource(t)
	sh := script{dir: src, env: []string{"HOME=" + t.TempDir(), "VAULT_BIN=" + bin}}

	// make dev leaves servers running: stop them whatever happens.
	devEnv := filepath.Join(src, "build", "dev.env")
	t.Cleanup(func() {
		if _, err := os.Stat(devEnv); err == nil {
			out, err := exec.Command("bash", "-c", `. build/dev.env && "$DEV_STOP"`).CombinedOutput()
			if err != nil {
				t.Logf("stopping make dev's servers: %v: %s", err, out)
			}
		}
	})

	out := sh.run(t, sec, "quickstart", readmeBlock(t, "quickstart"))
	dev := readDevEnv(t, devEnv)
	fake := vaulttest.FakeAt(dev["FAKE_URL"])
	for _, f := range []string{"DEMO_PASSWORD_FILE", "DEMO_CLIENT_SECRET_FILE"} {
		b, err := os.ReadFile(dev[f])
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		sec.add(string(b))
	}
	if toks := accessTokensIn(out); len(toks) != 2 || toks[0] != toks[1] {
		t.Fatalf("quickstart: creds/ and static-creds/ printed %d access tokens, want the same one twice", len(toks))
	}
	token := accessTokensIn(out)[0]
	if !fake.Accepts(t, token) {
		t.Fatal("quickstart: the token read is not one the fake accepts")
	}
	for _, want := range []string{"Success! Enabled the vault-plugin-secrets-iadvize secrets engine at: iadvize/",
		"credentials_rejected", "login_attempts", dev["PLUGIN_VERSION"]} {
		if !strings.Contains(out, want) {
			t.Errorf("quickstart output lacks %q; output (redacted):\n%s", want, sec.redact(out))
		}
	}
	if st := fake.Stats(t); st.LoginAttempts != 1 {
		t.Fatalf("fake: %d logins after the quickstart, want 1", st.LoginAttempts)
	}

	out = sh.run(t, sec, "quickstart-client-credentials", ". build/dev.env\n"+readmeBlock(t, "quickstart-client-credentials"))
	if toks := accessTokensIn(out); len(toks) != 1 || !fake.Accepts(t, toks[0]) {
		t.Fatalf("client credentials: no token the fake accepts; output (redacted):\n%s", sec.redact(out))
	}
	st := fake.Stats(t)
	if st.LoginAttempts != 2 || st.UserSuccesses["demo-user"] != 1 || st.UserSuccesses["demo-client"] != 1 {
		t.Fatalf("fake: %d logins (%v), want one for demo-user and one for demo-client", st.LoginAttempts, st.UserSuccesses)
	}

	// A code change: an init function the linker keeps, so the binary differs.
	marker := "package main\n\nimport \"os\"\n\nfunc init() { _ = os.Setenv(\"IADVIZE_QUICKSTART_REBUILD\", \"1\") }\n"
	if err := os.WriteFile(filepath.Join(src, "cmd", "vault-plugin-secrets-iadvize", "zz_rebuild.go"), []byte(marker), 0o644); err != nil {
		t.Fatal(err)
	}
	oldSHA := runningSHA(t, sh, sec)
	sh.run(t, sec, "quickstart-rebuild", ". build/dev.env\n"+readmeBlock(t, "quickstart-rebuild"))
	newSHA := runningSHA(t, sh, sec)
	wantSHA := vaulttest.SHA256(t, filepath.Join(src, "build", "plugins", vaulttest.PluginName))
	if newSHA == oldSHA || newSHA != wantSHA {
		t.Fatalf("after the rebuild block, iadvize/ runs sha256 %s (before %s), want the rebuilt binary's %s", newSHA, oldSHA, wantSHA)
	}
	out = sh.run(t, sec, "read after the rebuild", ". build/dev.env\nvault read -field=access_token iadvize/creds/crm-sync; echo")
	if strings.TrimSpace(out) != token {
		t.Fatal("after the rebuild and reload, creds/crm-sync returns another token (mismatch)")
	}
	if st := fake.Stats(t); st.LoginAttempts != 2 {
		t.Fatalf("fake: %d logins after the rebuild and reload, want still 2", st.LoginAttempts)
	}

	sh.run(t, sec, "quickstart-stop", ". build/dev.env\n"+readmeBlock(t, "quickstart-stop"))
	if _, err := os.Stat(devEnv); !os.IsNotExist(err) {
		t.Errorf("build/dev.env is still there after the stop block (%v)", err)
	}
	if _, err := http.Get(dev["VAULT_ADDR"] + "/v1/sys/health"); err == nil {
		t.Errorf("Vault still answers after the stop block")
	}
}

// readDevEnv parses the export lines of build/dev.env.
func readDevEnv(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("make dev wrote no %s: %v", path, err)
	}
	env := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		env[k] = strings.Trim(v, "'")
	}
	for _, k := range []string{"VAULT_ADDR", "VAULT_TOKEN", "FAKE_URL", "DEMO_PASSWORD_FILE", "DEMO_CLIENT_SECRET_FILE", "PLUGIN_VERSION", "DEV_STOP"} {
		if env[k] == "" {
			t.Fatalf("%s sets no %s", path, k)
		}
	}
	return env
}

// runningSHA is the sha256 of the binary that serves the iadvize/ mount.
func runningSHA(t *testing.T, sh script, sec *secrets) string {
	t.Helper()
	out := sh.run(t, sec, "sys/mounts", ". build/dev.env\nvault read -format=json sys/mounts/iadvize")
	var m struct {
		Data struct {
			RunningSHA256 string `json:"running_sha256"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(out), &m); err != nil || m.Data.RunningSHA256 == "" {
		t.Fatalf("sys/mounts/iadvize: no running_sha256 (%v): %s", err, out)
	}
	return m.Data.RunningSHA256
}

// TestRefusedTokenShellAsWritten runs the README's shell integration of "When
// the API refuses the token" as written, with a token holding the example
// policy (examples/policies/crm-sync.hcl): the token it reads was revoked at
// the fake after the plugin cached it, so the API answers 401; the block
// reports it with its sha256sum and gets a token the API accepts (200), for
// one login, and status/ says the report dropped the token.
func TestRefusedTokenShellAsWritten(t *testing.T) {
	e, fake := newProcessEnv(t, true)
	pw := distinctive("pw-crm-sync")
	e.secrets.add(pw)
	fake.AddUser(t, "svc-crm", pw)
	e.write("iadvize/roles/crm-sync", map[string]any{"username": "svc-crm", "password": pw})
	token := e.policyClient("crm-sync", "crm-sync.hcl", false).Token()
	e.secrets.add(token)
	revoked := accessToken(e.read("iadvize/creds/crm-sync"))
	e.secrets.add(revoked)
	fake.RevokeAll(t)

	sh := script{dir: t.TempDir(), env: []string{
		"HOME=" + t.TempDir(), "PATH=" + vaultOnPath(t, e.bin) + string(os.PathListSeparator) + os.Getenv("PATH"),
		"VAULT_ADDR=" + e.vault.Addr, "VAULT_TOKEN=" + token, "API_URL=" + fake.URL + "/api/me",
	}}
	out := sh.run(t, e.secrets, "refused-token-shell", readmeBlock(t, "refused-token-shell"))
	current := accessToken(e.read("iadvize/static-creds/crm-sync"))
	e.secrets.add(current)
	if found := e.secrets.found(out); len(found) > 0 {
		e.errorf("the block printed secrets %v", found)
	}
	if got := strings.Fields(out); len(got) != 2 || got[0] != "401" || got[1] != "200" {
		e.fatalf("the block printed %q, want the API's 401 for the revoked token, then 200 for the new one", e.secrets.redact(out))
	}
	if current == revoked || !fake.Accepts(t, current) {
		e.fatalf("after the report, the cached token is not a new one the fake accepts")
	}
	st := fake.Stats(t)
	if st.LoginAttempts != 2 || st.LoginSuccesses != 2 || st.VerifyCalls != 2 { // the report's check, and Accepts
		e.fatalf("fake: %d login attempts (%d succeeded), %d verify calls; want 2, 2 and 2", st.LoginAttempts, st.LoginSuccesses, st.VerifyCalls)
	}
	if s := e.read("iadvize/status/crm-sync").Data; s["last_report_outcome"] != "dropped" {
		e.errorf("status/crm-sync: last_report_outcome=%v, want dropped", s["last_report_outcome"])
	}
}

// TestReadmeServerConfigIsTheExample: the Vault server configuration the
// README's Install shows is examples/vault/server.hcl, the file the upgrade
// test starts Vault from, less its comments (and alignment).
func TestReadmeServerConfigIsTheExample(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join(vaulttest.RepoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	const begin, end = "<!-- server-config:begin -->", "<!-- server-config:end -->"
	s := string(b)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i < 0 || j < i {
		t.Fatalf("README.md has no %s ... %s section", begin, end)
	}
	section := strings.TrimSpace(s[i+len(begin) : j])
	shown, ok := strings.CutPrefix(section, "```hcl\n")
	if !ok || !strings.HasSuffix(shown, "\n```") {
		t.Fatalf("README.md section %s is not one ```hcl block", begin)
	}
	if got, want := hclLines(strings.TrimSuffix(shown, "```")), hclLines(example(t, "vault/server.hcl")); got != want {
		t.Errorf("the README's server configuration is not examples/vault/server.hcl:\nREADME:\n%s\nfile:\n%s", got, want)
	}
}

// hclLines is an HCL text without comments, blank lines or alignment.
func hclLines(text string) string {
	var lines []string
	for _, line := range strings.Split(text, "\n") {
		if f := strings.Fields(line); len(f) > 0 && !strings.HasPrefix(f[0], "#") {
			lines = append(lines, strings.Join(f, " "))
		}
	}
	return strings.Join(lines, "\n")
}

// TestReadmeFakeUpstreamAgainstOwnVault runs the README's "The fake upstream
// against your own Vault" blocks as written, in one shell, on a Vault with the
// plugin registered (a dev server standing for the reader's own) and
// build/fake-iadvize the built fake: a mount of its own gets a token from the
// fake for one login, the stop block disables the mount and stops the fake,
// and the reader's iadvize/ mount is left alone.
func TestReadmeFakeUpstreamAgainstOwnVault(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakeiadvize.Options{}, vaulttest.Options{})
	e.configure(nil)
	before := e.read("iadvize/config").Data["token_url"]

	dir := t.TempDir()
	fake := vaulttest.FakeBin(t)
	if err := os.MkdirAll(filepath.Join(dir, "build"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(fake, filepath.Join(dir, "build", "fake-iadvize")); err != nil {
		t.Fatal(err)
	}
	// The fake runs in the block's process group: stopped with it whatever
	// happens to the block.
	s := script{dir: dir, ownGroup: true, env: []string{
		"HOME=" + t.TempDir(), "PATH=" + vaultOnPath(t, e.bin) + string(os.PathListSeparator) + os.Getenv("PATH"),
		"VAULT_ADDR=" + e.vault.Addr, "VAULT_TOKEN=" + vaulttest.RootToken,
	}}
	addrFile := filepath.Join(dir, "build", "fake.addr")
	commands := readmeBlock(t, "fake-upstream") + "echo '--- stop'\n" + readmeBlock(t, "fake-upstream-stop") +
		`for i in $(seq 50); do [ -e build/fake.addr ] || exit 0; sleep 0.2; done; echo "fake still running"; exit 1` + "\n"
	out := s.run(t, e.secrets, "fake-upstream", commands)
	started, stopped, _ := strings.Cut(out, "--- stop")
	toks := accessTokensIn(started)
	if len(toks) != 1 {
		t.Fatalf("the block printed %d access tokens, want the one of creds/demo; output (redacted):\n%s", len(toks), e.secrets.redact(out))
	}
	for _, want := range []string{"Success! Enabled the vault-plugin-secrets-iadvize secrets engine at: iadvize-fake/",
		`"login_attempts":1,`} {
		if !strings.Contains(started, want) {
			t.Errorf("the block's output lacks %q; output (redacted):\n%s", want, e.secrets.redact(out))
		}
	}
	if !strings.Contains(stopped, "Success! Disabled the secrets engine (if it existed) at: iadvize-fake/") {
		t.Errorf("the stop block did not disable iadvize-fake/; output (redacted):\n%s", e.secrets.redact(stopped))
	}
	if _, err := os.Stat(addrFile); !os.IsNotExist(err) {
		t.Errorf("build/fake.addr is still there after the stop block: the fake did not stop (%v)", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "build", "demo.password")); !os.IsNotExist(err) {
		t.Errorf("the stop block left build/demo.password (%v)", err)
	}
	if got := e.read("iadvize/config").Data["token_url"]; got != before {
		t.Errorf("iadvize/config token_url = %v after the blocks, was %v", got, before)
	}
	if n := e.up.Stats().LoginAttempts; n != 0 {
		t.Errorf("the test's own upstream saw %d logins from the blocks", n)
	}
}

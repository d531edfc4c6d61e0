package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/vaulttest"
)

// TestUpgradeAndDowngradeKeepTokens runs the README's Install, Upgrade and
// deregister commands on a Vault started from examples/vault/server.hcl (file
// storage), in the one directory into which scripts/release.sh built two
// releases, one after the other (v0.2.0 and v0.3.0: different bytes, different
// sha256), as two runs of make release fill build/release.
// After the upgrade and after the downgrade, sys/mounts reports the new running
// version and sha256, reads return the token read before, no login reaches
// upstream, and status/ keeps its bookkeeping: a role whose credentials were
// rejected stays rejected, with the same last attempt.
func TestUpgradeAndDowngradeKeepTokens(t *testing.T) {
	t.Parallel()
	e := newEnvNoVault(t, fakeiadvize.Options{})
	oldV, newV := testVersions[0], testVersions[1]
	rel := releaseDir(t)
	sums := map[string]string{}
	for _, v := range testVersions {
		sums[v] = releaseSum(t, rel, hostPlatform+"/"+vaulttest.PluginName+"_"+v)
	}
	if sums[oldV] == sums[newV] {
		t.Fatal("the two releases have the same sha256")
	}

	// The README's server configuration, with an empty plugin directory: the
	// README's install puts the binary there.
	pluginDir := t.TempDir()
	rootToken := e.startExampleVault(pluginDir)
	e.secrets.add(rootToken)

	// sh runs a README block in the release directory, for version.
	vaultDir := vaultOnPath(t, e.bin)
	sh := func(block, version string, extra ...string) string {
		t.Helper()
		s := script{dir: rel, env: append([]string{
			"HOME=" + t.TempDir(), "PATH=" + vaultDir + string(os.PathListSeparator) + os.Getenv("PATH"),
			"VAULT_ADDR=" + e.vault.Addr, "VAULT_TOKEN=" + rootToken,
			"VERSION=" + version, "PLATFORM=" + hostPlatform, "PLUGIN_DIR=" + pluginDir,
		}, extra...)}
		return s.run(t, e.secrets, block+" "+version, readmeBlock(t, block))
	}

	out := sh("install", oldV)
	if !strings.Contains(out, "Version") || !strings.Contains(out, oldV) {
		e.fatalf("install: the output names no plugin version %s:\n%s", oldV, out)
	}
	e.checkMount(oldV, sums[oldV])

	e.configure(nil)
	e.addRole("app", "svc-upgrade")
	e.up.AddUser("svc-rejected", distinctive("pw-right"))
	wrong := distinctive("pw-wrong")
	e.secrets.add(wrong)
	e.write("iadvize/roles/rejected", map[string]any{"username": "svc-rejected", "password": wrong})

	token := accessToken(e.read("iadvize/creds/app"))
	if !e.up.wasIssued(token) {
		e.fatalf("creds/app: not a token the fake issued")
	}
	if _, err := e.vault.Client.Logical().Read("iadvize/creds/rejected"); statusCode(err) != http.StatusBadGateway {
		e.fatalf("creds/rejected with a wrong password: %s, want 502", brief(err))
	}
	before := map[string]map[string]any{
		"app":      e.read("iadvize/status/app").Data,
		"rejected": e.read("iadvize/status/rejected").Data,
	}
	if before["rejected"]["credentials_rejected"] != true {
		e.fatalf("status/rejected = %v, want credentials_rejected", before["rejected"])
	}
	logins := e.up.Stats().LoginAttempts
	if logins != 2 {
		e.fatalf("%d logins before the upgrade, want 2 (app, rejected)", logins)
	}

	same := func(when string) {
		t.Helper()
		if got := accessToken(e.read("iadvize/creds/app")); got != token {
			e.errorf("%s: creds/app returned another token (mismatch)", when)
		}
		if got := accessToken(e.read("iadvize/static-creds/app")); got != token {
			e.errorf("%s: static-creds/app returned another token (mismatch)", when)
		}
		if _, err := e.vault.Client.Logical().Read("iadvize/creds/rejected"); statusCode(err) != http.StatusBadGateway {
			e.errorf("%s: creds/rejected: %s, want 502 (still rejected)", when, brief(err))
		}
		for role, was := range before {
			now := e.read("iadvize/status/" + role).Data
			for _, k := range []string{"issue_time", "expire_time", "last_attempt", "last_outcome", "last_error",
				"credentials_rejected", "consecutive_failures", "has_token"} {
				if fmt.Sprint(now[k]) != fmt.Sprint(was[k]) {
					e.errorf("%s: status/%s %s = %v, was %v", when, role, k, now[k], was[k])
				}
			}
		}
		if n := e.up.Stats().LoginAttempts; n != logins {
			e.errorf("%s: %d logins upstream, want still %d", when, n, logins)
		}
	}

	out = sh("upgrade", newV)
	if !strings.Contains(out, newV) {
		e.errorf("upgrade: secrets list -detailed does not show %s:\n%s", newV, out)
	}
	e.checkMount(newV, sums[newV])
	same("after the upgrade to " + newV)

	sh("upgrade", oldV) // a downgrade: the same commands, the older version
	e.checkMount(oldV, sums[oldV])
	same("after the downgrade to " + oldV)

	sh("deregister", oldV, "OLD="+newV)
	if _, err := os.Stat(filepath.Join(pluginDir, vaulttest.PluginName+"_"+newV)); !os.IsNotExist(err) {
		t.Errorf("the deregister block left the %s binary (%v)", newV, err)
	}
	if _, _, err := e.cli(rootToken, "plugin", "info", "-version="+newV, "secret", vaulttest.PluginName); err == nil {
		t.Errorf("vault plugin info -version=%s still answers after the deregister block", newV)
	}
	same("after deregistering " + newV)

	// Each move started a plugin process from the version's own binary.
	log := e.vault.Log()
	for _, v := range []string{oldV, newV} {
		if !strings.Contains(log, "plugin started: path="+filepath.Join(pluginDir, vaulttest.PluginName+"_"+v)) {
			t.Errorf("the vault log shows no plugin process started from the %s binary", v)
		}
	}
	if pids := pluginPids(log); len(pids) < 3 {
		t.Errorf("vault log shows %d plugin processes, want at least 3 (install, upgrade, downgrade): %v", len(pids), pids)
	}
}

// checkMount checks that sys/mounts shows iadvize/ pinned to and running
// version, from the binary with sha256 sum.
func (e *env) checkMount(version, sum string) {
	e.t.Helper()
	e.waitFor(vaulttestTimeout, "iadvize/ to run "+version, func() error {
		s, err := e.vault.Client.Logical().Read("sys/mounts/iadvize")
		if err != nil {
			return err
		}
		got := fmt.Sprintf("%v %v %v", s.Data["plugin_version"], s.Data["running_plugin_version"], s.Data["running_sha256"])
		if want := fmt.Sprintf("%s %s %s", version, version, sum); got != want {
			return fmt.Errorf("plugin_version, running_plugin_version, running_sha256 = %s, want %s", got, want)
		}
		return nil
	})
}

// startExampleVault starts e.vault from examples/vault/server.hcl, the
// README's Install configuration, its data path, address and plugin directory
// moved to the test's (each must occur in the file), initialises and unseals
// it, and returns the root token. Its log is shown, redacted, when the test
// fails.
func (e *env) startExampleVault(pluginDir string) (rootToken string) {
	t := e.t
	t.Helper()
	port := vaulttest.FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cfg := localize(t, example(t, "vault/server.hcl"),
		"/opt/vault/data", filepath.Join(t.TempDir(), "data"),
		"127.0.0.1:8200", addr,
		"/etc/vault/plugins", pluginDir)
	for _, want := range []string{`storage "file"`, `listener "tcp"`, "api_addr", "plugin_directory"} {
		if !strings.Contains(cfg, want) {
			t.Fatalf("examples/vault/server.hcl has no %s", want)
		}
	}
	e.vault = vaulttest.Start(t, vaulttest.Options{ConfigHCL: cfg, PluginDir: pluginDir, Port: port, LogLevel: "debug"})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("vault log (tail, redacted):\n%s", tail(e.secrets.redact(e.vault.Log()), 6000))
		}
	})
	_, rootToken = e.vault.InitAndUnseal()
	e.vault.Client.SetMaxRetries(0)
	return rootToken
}

// TestInstallAndUpgradeStopWithoutArchiveOrSum: the README's Install and
// Upgrade blocks, run where the archive, SHA256SUMS or the binary's line in it
// is missing, or for a version that was not built, fail with a message that
// says which file is missing and where a release is written, and run no vault
// command (a `vault` on PATH that records its calls: an empty -sha256 would
// make Vault look for an "extracted artifact directory").
func TestInstallAndUpgradeStopWithoutArchiveOrSum(t *testing.T) {
	t.Parallel()
	rel := releaseDir(t)
	version := testVersions[0]
	archive := fmt.Sprintf("%s_%s_%s.tar.gz", vaulttest.PluginName, version, hostPlatform)
	binary := hostPlatform + "/" + vaulttest.PluginName + "_" + version
	sums, err := os.ReadFile(filepath.Join(rel, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	var sumsWithoutBinary []string
	for _, line := range strings.Split(strings.TrimSpace(string(sums)), "\n") {
		if !strings.HasSuffix(line, "  "+binary) {
			sumsWithoutBinary = append(sumsWithoutBinary, line)
		}
	}

	tools := t.TempDir()
	calls := filepath.Join(tools, "vault-calls")
	stub := writeFile(t, tools, "vault", "#!/usr/bin/env bash\necho \"$*\" >>"+shellQuote(calls)+"\n")
	if err := os.Chmod(stub, 0o755); err != nil {
		t.Fatal(err)
	}
	copyTo := func(dir, name string) {
		t.Helper()
		if err := vaulttest.CopyFile(filepath.Join(rel, name), filepath.Join(dir, name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name, version string
		files         func(dir string)
	}{
		{"no archive", version, func(dir string) { copyTo(dir, "SHA256SUMS") }},
		{"no SHA256SUMS", version, func(dir string) { copyTo(dir, archive) }},
		{"no sum for the binary", version, func(dir string) {
			copyTo(dir, archive)
			writeFile(t, dir, "SHA256SUMS", strings.Join(sumsWithoutBinary, "\n")+"\n")
		}},
		{"a version not built", "v9.9.9", func(dir string) { copyTo(dir, archive); copyTo(dir, "SHA256SUMS") }},
	}
	sec := &secrets{}
	for _, block := range []string{"install", "upgrade"} {
		for _, c := range cases {
			dir, pluginDir := t.TempDir(), t.TempDir()
			c.files(dir)
			s := script{dir: dir, env: []string{
				"HOME=" + t.TempDir(), "PATH=" + tools + string(os.PathListSeparator) + os.Getenv("PATH"),
				"VERSION=" + c.version, "PLATFORM=" + hostPlatform, "PLUGIN_DIR=" + pluginDir,
			}}
			out, err := s.try(t, sec, block+" with "+c.name, readmeBlock(t, block))
			wantArchive := fmt.Sprintf("%s_%s_%s.tar.gz", vaulttest.PluginName, c.version, hostPlatform)
			switch {
			case err == nil:
				t.Errorf("%s block with %s: succeeded, want a failure; output:\n%s", block, c.name, out)
			case !strings.Contains(out, "holds no "+wantArchive) || !strings.Contains(out, "make release VERSION="+c.version):
				t.Errorf("%s block with %s: the output does not name the missing file and make release:\n%s", block, c.name, out)
			}
			if entries, _ := os.ReadDir(pluginDir); len(entries) != 0 {
				t.Errorf("%s block with %s: something was extracted into the plugin directory", block, c.name)
			}
		}
	}
	if b, err := os.ReadFile(calls); err == nil {
		t.Errorf("the blocks ran vault commands after stopping:\n%s", b)
	}
}

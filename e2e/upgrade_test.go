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
// deregister commands on a Vault with file storage, with two releases built by
// scripts/release.sh (v0.2.0 and v0.3.0: different bytes, different sha256).
// After the upgrade and after the downgrade, sys/mounts reports the new running
// version and sha256, reads return the token read before, no login reaches
// upstream, and status/ keeps its bookkeeping: a role whose credentials were
// rejected stays rejected, with the same last attempt.
func TestUpgradeAndDowngradeKeepTokens(t *testing.T) {
	t.Parallel()
	e := newEnvNoVault(t, fakeiadvize.Options{})
	const oldV, newV = "v0.2.0", "v0.3.0"
	rel := map[string]string{oldV: release(t, oldV), newV: release(t, newV)}
	sums := map[string]string{}
	for v, dir := range rel {
		sums[v] = releaseSum(t, dir, hostPlatform+"/"+vaulttest.PluginName+"_"+v)
	}
	if sums[oldV] == sums[newV] {
		t.Fatal("the two releases have the same sha256")
	}

	// A Vault with file storage and an empty plugin directory: the README's
	// install puts the binary there.
	pluginDir := t.TempDir()
	_, rootToken := e.startFileVault(pluginDir)
	e.secrets.add(rootToken)

	// sh runs a README block in the release directory of version.
	vaultDir := vaultOnPath(t, e.bin)
	sh := func(block, version string, extra ...string) string {
		t.Helper()
		s := script{dir: rel[version], env: append([]string{
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

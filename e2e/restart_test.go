package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/vaulttest"
)

// TestRestartAndReloadKeepToken: on a Vault with file storage (initialised,
// unsealed, plugin registered with its sha256), a restart, a plugin reload and a
// crash drop the plugin's memory but not its stored token: reads after each
// return the same token and cause no login (README "When the plugin logs in": restarts).
func TestRestartAndReloadKeepToken(t *testing.T) {
	t.Parallel()
	e := newEnvNoVault(t, fakeiadvize.Options{})

	pluginDir := vaulttest.PluginDir(t, vaulttest.PluginBin(t))
	unsealKey, rootToken := e.startFileVault(pluginDir)
	e.vault.RegisterPlugin()
	e.vault.Mount("iadvize")
	e.configure(nil)
	e.addRole("app", "svc-restart")

	first := accessToken(e.read("iadvize/creds/app"))
	if !e.up.wasIssued(first) {
		e.fatalf("creds/app: %s is not a token the fake issued", mask(first))
	}

	checkSame := func(when string) {
		t.Helper()
		got := accessToken(e.read("iadvize/creds/app"))
		if got != first {
			t.Errorf("%s: creds/app returned %s, want the token read before, %s", when, mask(got), mask(first))
		}
		st := e.read("iadvize/static-creds/app")
		if tok := accessToken(st); tok != first {
			t.Errorf("%s: static-creds/app returned %s, want %s", when, mask(tok), mask(first))
		}
		if n := e.up.Stats().LoginAttempts; n != 1 {
			t.Errorf("%s: %d login attempts upstream, want 1", when, n)
		}
	}

	restart := func(stop func(), when string) {
		t.Helper()
		stop()
		e.vault.Restart()
		e.vault.Unseal(unsealKey)
		e.waitFor(vaulttestTimeout, "the iadvize mount to answer "+when, func() error {
			_, err := e.vault.Client.Logical().Read("iadvize/config")
			return err
		})
		checkSame(when)
	}

	// Restart: stop gracefully, start, unseal again.
	restart(e.vault.Stop, "after a restart")

	// Plugin reload, as an operator would run it.
	out, stderr, err := runVault(t, e.bin, e.vault.Addr, rootToken, "plugin", "reload", "-plugin", vaulttest.PluginName)
	if err != nil {
		e.fatalf("vault plugin reload: %v\n%s%s", err, out, stderr)
	}
	e.logf("vault plugin reload: %s", strings.TrimSpace(out))
	checkSame("after a plugin reload")

	// A crash (kill -9) loses nothing either: the token was stored when issued.
	restart(e.vault.Kill, "after a crash")

	// The plugin process really was replaced each time.
	pids := pluginPids(e.vault.Log())
	e.logf("plugin processes seen in the vault log (start, restart, reload, crash restart): %v", pids)
	if len(pids) < 4 {
		t.Errorf("vault log shows %d plugin processes, want 4 (start, restart, reload, crash restart): %v", len(pids), pids)
	}
}

// vaulttestTimeout bounds waits on a real Vault server.
const vaulttestTimeout = time.Minute

// pluginPids lists the pids of the plugin processes Vault started, from its log
// ("plugin started: path=.../vault-plugin-secrets-iadvize pid=N").
func pluginPids(log string) []string {
	var pids []string
	seen := map[string]bool{}
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, "plugin started:") || !strings.Contains(line, vaulttest.PluginName) {
			continue
		}
		i := strings.LastIndex(line, "pid=")
		if i < 0 {
			continue
		}
		pid := strings.Fields(line[i+len("pid="):])[0]
		if !seen[pid] {
			seen[pid] = true
			pids = append(pids, pid)
		}
	}
	return pids
}

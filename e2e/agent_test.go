package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/vaulttest"
)

// Short-lived tokens keep this test's real time short: with 20 s tokens and an
// 8 s refresh window, creds/ leases last 18 s (20 s less a tenth), Agent re-reads
// after 85-95% of that, by when the plugin has a new token to hand out.
const (
	agentTokenLifetime = 20 * time.Second
	agentRefreshBefore = "8s"
	agentDeadline      = 90 * time.Second
)

// TestAgentRendersRotatedToken: a real Vault Agent renders creds/x into a file,
// then renders the new token after the plugin rotates it, with no failed read in
// between (clients only read the token; Agent sleeps ttl + 1 s, README "Vault Agent").
func TestAgentRendersRotatedToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakeiadvize.Options{TokenLifetime: agentTokenLifetime}, vaulttest.Options{LogLevel: "debug"})
	e.configure(map[string]any{"refresh_before": agentRefreshBefore})
	e.addRole("x", "svc-agent")

	clientToken := e.tokenWithPolicy("agent-x", `path "iadvize/creds/x" { capabilities = ["read"] }`, false)

	dir := t.TempDir()
	tokenFile := writeFile(t, dir, "vault-token", clientToken)
	rendered := filepath.Join(dir, "rendered", "token.txt")
	cfg := fmt.Sprintf(`
vault {
  address = %q
}
auto_auth {
  method {
    type = "token_file"
    config = {
      token_file_path = %q
    }
  }
}
template {
  contents    = "{{ with secret \"iadvize/creds/x\" }}{{ .Data.access_token }}{{ end }}"
  destination = %q
  perms       = "0600"
}
`, e.vault.Addr, tokenFile, rendered)
	cfgPath := writeFile(t, dir, "agent.hcl", cfg)
	agentLog := filepath.Join(dir, "agent.log")
	stopAgent := startAgent(t, e.bin, cfgPath, agentLog, dir)
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(agentLog)
			t.Logf("agent log (tail, redacted):\n%s", tail(e.secrets.redact(string(b)), 6000))
		}
	})

	// Watch the file until it has held two distinct tokens.
	var seen []string
	started := time.Now()
	e.waitFor(agentDeadline, "Agent to render two distinct tokens", func() error {
		b, err := os.ReadFile(rendered)
		if err != nil {
			return fmt.Errorf("nothing rendered yet (%v)", err)
		}
		cur := strings.TrimSpace(string(b))
		if cur == "" {
			return fmt.Errorf("rendered file is empty")
		}
		if len(seen) == 0 || seen[len(seen)-1] != cur {
			seen = append(seen, cur)
			e.logf("after %s: Agent rendered token #%d %s", time.Since(started).Round(time.Second), len(seen), mask(cur))
		}
		if n := distinctCount(seen); n < 2 {
			return fmt.Errorf("%d distinct token(s) rendered", n)
		}
		return nil
	})
	stopAgent()

	for i, tok := range seen {
		if !e.up.wasIssued(tok) {
			t.Errorf("rendered token #%d (%s) is not one the fake issued", i+1, mask(tok))
		}
	}
	if err := e.up.noFailures(); err != nil {
		t.Error(err)
	}
	st := e.up.Stats()
	e.logf("fake: %d logins, %d tokens issued", st.LoginAttempts, st.TokensIssued)

	// No error for the role in Vault's log, and no error or warning (a failed
	// read is a "[WARN] (view) ... retry attempt") in Agent's. The counts of
	// logins and renders check that these are the logs we think.
	logins := 0
	for _, line := range strings.Split(e.vault.Log(), "\n") {
		if !strings.Contains(line, "iadvize") {
			continue
		}
		if strings.Contains(line, "[ERROR]") || strings.Contains(line, "[WARN]") {
			e.errorf("vault log: %s", line)
		}
		if strings.Contains(line, "logged in") && strings.Contains(line, "role=x") {
			logins++
		}
	}
	if logins < 2 {
		t.Errorf("vault log shows %d logins of role x, want at least 2", logins)
	}
	b, err := os.ReadFile(agentLog)
	if err != nil {
		t.Fatal(err)
	}
	renders := 0
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "[ERROR]") || strings.Contains(line, "[WARN]") {
			e.errorf("agent log: %s", line)
		}
		if strings.Contains(line, "(runner) rendered") {
			renders++
		}
	}
	if renders < 2 {
		t.Errorf("agent log shows %d renders, want at least 2", renders)
	}
	e.logf("vault log: %d logins of role x; agent log: %d renders", logins, renders)
}

func distinctCount(v []string) int {
	m := map[string]bool{}
	for _, s := range v {
		m[s] = true
	}
	return len(m)
}

// startAgent runs `vault agent -config=cfg` with its output in logPath and
// returns a function that stops it (also run at cleanup).
func startAgent(t *testing.T, bin, cfg, logPath, home string) func() {
	t.Helper()
	return startAgentEnv(t, bin, cfg, logPath, home)
}

// startAgentEnv is startAgent with env added to the Agent's environment.
func startAgentEnv(t *testing.T, bin, cfg, logPath, home string, env ...string) func() {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "agent", "-config="+cfg, "-log-level=debug")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(append(cleanEnv(), "HOME="+home), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("starting vault agent: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		select {
		case <-done:
		case <-ctx.Done():
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		logf.Close()
	}
	t.Cleanup(stop)
	return stop
}

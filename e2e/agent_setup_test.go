package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/vaulttest"
)

// agentSetup returns the setup commands of an Agent example: the indented
// comment lines ("#   ") of the first block after its "# Setup" paragraph.
func agentSetup(t *testing.T, file, text string) string {
	t.Helper()
	var cmds []string
	inSetup := false
	for _, line := range strings.Split(text, "\n") {
		switch {
		case strings.HasPrefix(line, "# Setup"):
			inSetup = true
		case inSetup && strings.HasPrefix(line, "#   "):
			cmds = append(cmds, strings.TrimPrefix(line, "#   "))
		case inSetup && len(cmds) > 0:
			return strings.Join(cmds, "\n") + "\n"
		}
	}
	t.Fatalf("examples/%s has no setup commands after a \"# Setup\" paragraph", file)
	return ""
}

// TestExampleAgentSetupAsWritten runs the setup commands in the comments of
// examples/agent/template.hcl and exec.hcl as written, from the repository's
// root with an operator's (root) token, their paths moved to a temporary
// directory: the token they leave in the file Agent reads holds the crm-sync
// policy and Vault's default one, is periodic, reads crm-sync's token and
// nothing else; the token's directory is private; for exec.hcl the worker is
// built where the config runs it, and its log directory exists.
func TestExampleAgentSetupAsWritten(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakeiadvize.Options{}, vaulttest.Options{})
	e.configure(nil)
	e.addRole("crm-sync", "svc-setup")
	e.addRole("other", "svc-other")
	vaultDir := vaultOnPath(t, e.bin)

	for _, file := range []string{"agent/template.hcl", "agent/exec.hcl"} {
		dir := t.TempDir()
		run := filepath.Join(dir, "run", "crm-sync")
		logDir := filepath.Join(dir, "log", "crm-sync")
		worker := filepath.Join(dir, "bin", "crm-sync-worker")
		if err := os.MkdirAll(filepath.Dir(worker), 0o755); err != nil {
			t.Fatal(err)
		}
		pairs := []string{"/run/crm-sync", run}
		if file == "agent/exec.hcl" {
			pairs = append(pairs, "/var/log/crm-sync", logDir, "/usr/local/bin/crm-sync-worker", worker)
		}
		cmds := localize(t, agentSetup(t, file, example(t, file)), pairs...)
		s := script{dir: vaulttest.RepoRoot(t), env: []string{
			"HOME=" + t.TempDir(), "PATH=" + vaultDir + string(os.PathListSeparator) + os.Getenv("PATH"),
			"VAULT_ADDR=" + e.vault.Addr, "VAULT_TOKEN=" + vaulttest.RootToken,
		}}
		s.run(t, e.secrets, file+" setup", cmds)

		if info, err := os.Stat(run); err != nil || info.Mode().Perm() != 0o700 {
			t.Errorf("%s: the token's directory: %v (%v), want mode 0700", file, info.Mode().Perm(), err)
		}
		b, err := os.ReadFile(filepath.Join(run, "vault-token"))
		if err != nil {
			t.Fatalf("%s: the setup left no token file: %v", file, err)
		}
		token := strings.TrimSpace(string(b))
		e.secrets.add(token)
		c, err := e.vault.Client.Clone()
		if err != nil {
			t.Fatal(err)
		}
		c.SetToken(token)
		c.SetMaxRetries(0)
		self, err := c.Auth().Token().LookupSelf()
		if err != nil {
			t.Fatalf("%s: the setup's token cannot look itself up, as Agent does: %s", file, brief(err))
		}
		policies, _ := self.TokenPolicies()
		period, _ := self.Data["period"].(interface{ String() string })
		if strings.Join(policies, ",") != "crm-sync,default" || period == nil || period.String() != "86400" {
			t.Errorf("%s: the setup's token has policies %v and period %v, want crm-sync and default, 24h", file, policies, self.Data["period"])
		}
		if s, err := c.Logical().Read("iadvize/static-creds/crm-sync"); err != nil || !e.up.wasIssued(accessToken(s)) {
			t.Errorf("%s: the setup's token cannot read static-creds/crm-sync: %s", file, brief(err))
		}
		if _, err := c.Logical().Read("iadvize/static-creds/other"); statusCode(err) != http.StatusForbidden {
			t.Errorf("%s: the setup's token reading static-creds/other: %s, want 403", file, brief(err))
		}
		if file == "agent/exec.hcl" {
			if info, err := os.Stat(worker); err != nil || info.Mode().Perm()&0o111 == 0 {
				t.Errorf("%s: no executable worker at the config's command (%v)", file, err)
			}
			if info, err := os.Stat(logDir); err != nil || !info.IsDir() {
				t.Errorf("%s: no log directory for the worker (%v)", file, err)
			}
		}
	}
}

package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/vaulttest"
)

// example returns the text of a file under examples/.
func example(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(vaulttest.RepoRoot(t), "examples", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// localize rewrites the example paths of an Agent config (each must occur)
// to the test's own.
func localize(t *testing.T, cfg string, pairs ...string) string {
	t.Helper()
	for i := 0; i+1 < len(pairs); i += 2 {
		if !strings.Contains(cfg, pairs[i]) {
			t.Fatalf("the example config no longer mentions %s", pairs[i])
		}
		cfg = strings.ReplaceAll(cfg, pairs[i], pairs[i+1])
	}
	return cfg
}

// policyClient writes the example policy file as policy name with the vault
// CLI, as the file's comment says, and returns a client whose token has that
// policy, and Vault's "default" policy (what a token needs to look itself up,
// as Agent does) only when withDefault.
func (e *env) policyClient(name, file string, withDefault bool) *api.Client {
	e.t.Helper()
	path := filepath.Join(vaulttest.RepoRoot(e.t), "examples", "policies", file)
	if out, stderr, err := e.cli(vaulttest.RootToken, "policy", "write", name, path); err != nil {
		e.fatalf("vault policy write %s %s: %v\n%s%s", name, path, err, out, stderr)
	}
	tok, err := e.vault.Client.Auth().Token().Create(&api.TokenCreateRequest{
		Policies: []string{name}, NoDefaultPolicy: !withDefault, TTL: "1h",
	})
	if err != nil {
		e.t.Fatal(err)
	}
	c, err := e.vault.Client.Clone()
	if err != nil {
		e.t.Fatal(err)
	}
	c.SetToken(tok.Auth.ClientToken)
	c.SetMaxRetries(0)
	return c
}

// TestExamplePolicies: a token with examples/policies/crm-sync.hcl reads its
// role's token (creds/ and static-creds/) and reports a refused one there
// (update with refused_token_sha256), and nothing else; a token with
// iadvize-operator.hcl manages config and roles, rotates, reads status/ and
// verify/, and never reads a token (nor gets one by a report).
func TestExamplePolicies(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakeiadvize.Options{}, vaulttest.Options{})
	e.configure(nil)
	e.addRole("crm-sync", "svc-crm")
	e.addRole("other", "svc-other")

	type call struct {
		op, path string
		data     map[string]any
	}
	do := func(c *api.Client, k call) error {
		var err error
		switch k.op {
		case "read":
			_, err = c.Logical().Read(k.path)
		case "list":
			_, err = c.Logical().List(k.path)
		case "write":
			_, err = c.Logical().Write(k.path, k.data)
		case "delete":
			_, err = c.Logical().Delete(k.path)
		}
		return err
	}
	check := func(who string, c *api.Client, allowed, denied []call) {
		t.Helper()
		for _, k := range allowed {
			if err := do(c, k); err != nil {
				e.errorf("%s: %s %s: %s, want allowed", who, k.op, k.path, brief(err))
			}
		}
		for _, k := range denied {
			if err := do(c, k); statusCode(err) != http.StatusForbidden {
				e.errorf("%s: %s %s: %s, want 403", who, k.op, k.path, brief(err))
			}
		}
	}

	integration := e.policyClient("crm-sync", "crm-sync.hcl", false)
	s, err := integration.Logical().Read("iadvize/creds/crm-sync")
	if err != nil || !e.up.wasIssued(accessToken(s)) {
		e.fatalf("crm-sync policy: creds/crm-sync: %s, or not a token of the fake", brief(err))
	}
	// A report of a token that is not the cached one is answered with the
	// cached token and costs no login: what a policy check needs.
	stale := sha256.Sum256([]byte("a token replaced already"))
	report := map[string]any{"refused_token_sha256": hex.EncodeToString(stale[:])}
	check("crm-sync policy", integration,
		[]call{
			{"read", "iadvize/static-creds/crm-sync", nil},
			{"write", "iadvize/creds/crm-sync", report}, {"write", "iadvize/static-creds/crm-sync", report},
		},
		[]call{
			{"read", "iadvize/creds/other", nil}, {"read", "iadvize/static-creds/other", nil},
			{"write", "iadvize/creds/other", report}, {"write", "iadvize/static-creds/other", report},
			{"read", "iadvize/roles/crm-sync", nil}, {"list", "iadvize/roles/", nil},
			{"write", "iadvize/roles/crm-sync", map[string]any{"ttl": "1h"}},
			{"read", "iadvize/config", nil}, {"write", "iadvize/config", map[string]any{"refresh_before": "2h"}},
			{"write", "iadvize/rotate-role/crm-sync", nil},
			{"read", "iadvize/status/crm-sync", nil}, {"read", "iadvize/verify/crm-sync", nil},
		})
	if s, err := integration.Logical().Write("iadvize/creds/crm-sync", report); err != nil || accessToken(s) != accessToken(e.read("iadvize/static-creds/crm-sync")) {
		e.errorf("crm-sync policy: a report of another token: %s, or not the cached token", brief(err))
	}
	if st := e.up.Stats(); st.LoginAttempts != 1 {
		t.Errorf("%d logins after the integration's reads and reports, want 1", st.LoginAttempts)
	}

	operator := e.policyClient("iadvize-operator", "iadvize-operator.hcl", false)
	pw := distinctive("pw-new")
	e.secrets.add(pw)
	e.up.AddUser("svc-new", pw)
	check("operator policy", operator,
		[]call{
			{"read", "iadvize/config", nil},
			{"write", "iadvize/config", map[string]any{"refresh_before": "2h"}},
			{"write", "iadvize/roles/new", map[string]any{"username": "svc-new", "password": pw}}, // create
			{"write", "iadvize/roles/new", map[string]any{"ttl": "1h"}},                           // update
			{"read", "iadvize/roles/new", nil}, {"list", "iadvize/roles/", nil},
			{"write", "iadvize/rotate-role/crm-sync", nil},
			{"read", "iadvize/status/crm-sync", nil}, {"read", "iadvize/verify/crm-sync", nil},
			{"delete", "iadvize/roles/new", nil},
		},
		[]call{
			{"read", "iadvize/creds/crm-sync", nil}, {"read", "iadvize/static-creds/crm-sync", nil},
			{"write", "iadvize/creds/crm-sync", report}, {"write", "iadvize/static-creds/crm-sync", report},
			{"read", "iadvize/creds/other", nil},
			{"write", "sys/mounts/other", map[string]any{"type": vaulttest.PluginName}},
		})
	if st := e.up.Stats(); st.UserAttempts["svc-other"] != 0 || st.UserAttempts["svc-new"] != 0 {
		t.Errorf("denied reads logged in upstream: %v", st.UserAttempts)
	}
}

// TestExampleAgentTemplate: a real Vault Agent runs examples/agent/template.hcl
// (its paths moved to a temporary directory) with a token holding the crm-sync
// policy, and renders the role's token into the file, mode 0600.
func TestExampleAgentTemplate(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakeiadvize.Options{}, vaulttest.Options{})
	e.configure(nil)
	e.addRole("crm-sync", "svc-template")
	c := e.policyClient("crm-sync", "crm-sync.hcl", true)

	dir := t.TempDir()
	writeFile(t, dir, "vault-token", c.Token())
	cfg := localize(t, example(t, "agent/template.hcl"), "/run/crm-sync", dir)
	agentLog := filepath.Join(dir, "agent.log")
	startAgentEnv(t, e.bin, writeFile(t, dir, "agent.hcl", cfg), agentLog, dir, "VAULT_ADDR="+e.vault.Addr)
	e.logAgentOnFailure(agentLog)

	rendered := filepath.Join(dir, "iadvize-token")
	e.waitFor(30*time.Second, "Agent to render the token", func() error {
		b, err := os.ReadFile(rendered)
		if err != nil || len(b) == 0 {
			return fmt.Errorf("nothing rendered yet (%v)", err)
		}
		if !e.up.wasIssued(string(b)) {
			return fmt.Errorf("the rendered file does not hold a token of the fake")
		}
		return nil
	})
	if info, err := os.Stat(rendered); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("rendered file mode %v (%v), want 0600", info.Mode().Perm(), err)
	}
	if st := e.up.Stats(); st.LoginAttempts != 1 {
		t.Errorf("%d logins, want 1", st.LoginAttempts)
	}
}

// The exec test's tokens live 20 s; the plugin refreshes them 8 s before expiry,
// so static-creds/ tells Agent to re-read 13 s after each login.
const (
	execTokenLifetime = 20 * time.Second
	execRefreshBefore = "8s"
	execStarts        = 4 // the first start and three restarts, one per rotation
	execDeadline      = 100 * time.Second
)

var workerLine = regexp.MustCompile(`^worker (started|stopping) pid=(\d+)(?: token=sha256:([0-9a-f]{12}))?$`)

// workerStart is one start of the example worker, from its own log.
type workerStart struct {
	pid, fingerprint string
	stopped          bool // it logged "worker stopping" before the next start
}

// parseWorkerLog reads the worker's log lines: one "started" per start, a
// "stopping" before each restart.
func parseWorkerLog(t *testing.T, path string) ([]workerStart, error) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var starts []workerStart
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		m := workerLine.FindStringSubmatch(line)
		switch {
		case m == nil:
			return starts, fmt.Errorf("unexpected worker log line %q", line)
		case m[1] == "started":
			starts = append(starts, workerStart{pid: m[2], fingerprint: m[3]})
		case len(starts) == 0 || starts[len(starts)-1].pid != m[2] || starts[len(starts)-1].stopped:
			return starts, fmt.Errorf("worker pid %s stopping, but it is not the running one", m[2])
		default:
			starts[len(starts)-1].stopped = true
		}
	}
	return starts, nil
}

// fingerprint is the example worker's fingerprint of a token.
func fingerprint(tok string) string {
	s := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(s[:6])
}

// TestExampleAgentExecRestartsWorkerOncePerRotation: a real Vault Agent runs
// examples/agent/exec.hcl, supervising the example worker with the token in its
// environment. With 20 s tokens it sees a rotation about every 13 s: each start
// of the worker (counted from the worker's own log) has a token the fake issued,
// newer than the last start's; no token starts the worker twice; each restart
// follows a rotation (the previous process logs its stop first), and each
// rotation leads to a restart.
func TestExampleAgentExecRestartsWorkerOncePerRotation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakeiadvize.Options{TokenLifetime: execTokenLifetime}, vaulttest.Options{LogLevel: "debug"})
	e.configure(map[string]any{"refresh_before": execRefreshBefore})
	e.addRole("crm-sync", "svc-exec")
	c := e.policyClient("crm-sync", "crm-sync.hcl", true)
	worker := vaulttest.Binary(t, "", "./examples/worker")

	dir := t.TempDir()
	writeFile(t, dir, "vault-token", c.Token())
	cfg := localize(t, example(t, "agent/exec.hcl"),
		"/usr/local/bin/crm-sync-worker", worker, "/run/crm-sync", dir, "/var/log/crm-sync", dir)
	agentLog := filepath.Join(dir, "agent.log")
	workerLog := filepath.Join(dir, "worker.log")
	stop := startAgentEnv(t, e.bin, writeFile(t, dir, "agent.hcl", cfg), agentLog, dir, "VAULT_ADDR="+e.vault.Addr)
	e.logAgentOnFailure(agentLog)

	started := time.Now()
	e.waitFor(execDeadline, fmt.Sprintf("%d starts of the worker", execStarts), func() error {
		starts, err := parseWorkerLog(t, workerLog)
		if err != nil {
			return err
		}
		if len(starts) < execStarts {
			return fmt.Errorf("%d start(s) so far", len(starts))
		}
		return nil
	})
	elapsed := time.Since(started)
	stop()

	starts, err := parseWorkerLog(t, workerLog)
	if err != nil {
		t.Fatal(err)
	}
	issued := e.up.tokens()
	index := map[string]int{}
	for i, tok := range issued {
		index[fingerprint(tok)] = i
	}
	last := -1
	for i, s := range starts {
		n, ok := index[s.fingerprint]
		switch {
		case !ok:
			t.Errorf("start %d (pid %s): the worker's token is not one the fake issued", i+1, s.pid)
		case n <= last:
			t.Errorf("start %d (pid %s): token #%d, after token #%d: a token seen again, or an older one", i+1, s.pid, n+1, last+1)
		}
		last = n
		if i > 0 && starts[i-1].pid == s.pid {
			t.Errorf("start %d: the same process (pid %s) as the start before", i+1, s.pid)
		}
		if i < len(starts)-1 && !s.stopped {
			t.Errorf("start %d (pid %s) was not stopped before the next start", i+1, s.pid)
		}
	}
	e.logf("after %s: %d worker starts (%d restarts) for %d tokens issued", elapsed.Round(time.Second),
		len(starts), len(starts)-1, len(issued))
	// Every rotation restarts the worker: the tokens up to the last one it got
	// were each seen by a start. One may be missed: the periodic refresh (once
	// a minute) can log in again in the second between a read's own login and
	// Agent's next read, so Agent never sees the token in between.
	if missed := last + 1 - len(starts); missed > 1 {
		t.Errorf("%d of the first %d tokens issued never reached the worker: rotations without a restart", missed, last+1)
	}
	if err := e.up.noFailures(); err != nil {
		t.Error(err)
	}
	b, _ := os.ReadFile(agentLog)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "[ERROR]") {
			e.errorf("agent log: %s", line)
		}
	}
}

// logAgentOnFailure prints the Agent's log, redacted, when the test fails.
func (e *env) logAgentOnFailure(path string) {
	e.t.Cleanup(func() {
		if e.t.Failed() {
			b, _ := os.ReadFile(path)
			e.t.Logf("agent log (tail, redacted):\n%s", tail(e.secrets.redact(string(b)), 6000))
		}
	})
}

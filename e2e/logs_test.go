package e2e

import (
	"bytes"
	"encoding/json"
	"log"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/vault/api"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/logbuf"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/vaulttest"
)

// TestNoSecretsInLogs drives every path, good and bad (reads, role writes and
// updates, a typo, a 401 for a wrong password, a 5xx, a 429, a token that
// verify/ finds revoked), on a Vault logging at trace level, then checks that no
// password, client secret or access token of the run appears in Vault's log, in
// any answer other than the access_token field of creds/ and static-creds/, in
// the CLI's output, in the fake's log, or in what the test itself printed
// (README "When the plugin logs in": upstream error text never carries a secret; roles: write-only secrets).
func TestNoSecretsInLogs(t *testing.T) {
	t.Parallel()
	var fakeLog logbuf.Buffer
	e := newEnv(t, fakeiadvize.Options{Logger: log.New(&fakeLog, "fake: ", 0)},
		vaulttest.Options{LogLevel: "trace"})
	c := e.vault.Client.Logical()

	// answers collects every answer but the access_token fields creds/ and static-creds/ return.
	var answers []string
	keep := func(what string, s *api.Secret, err error) {
		t.Helper()
		if err != nil {
			answers = append(answers, what+": "+err.Error())
			e.logf("%s: %s", what, brief(err))
			return
		}
		if s == nil {
			return
		}
		clean := *s
		if s.Data != nil {
			clean.Data = map[string]any{}
			for k, v := range s.Data {
				if k != "access_token" {
					clean.Data[k] = v
				}
			}
		}
		b, _ := json.Marshal(clean)
		answers = append(answers, what+": "+string(b))
		if len(s.Warnings) > 0 {
			e.logf("%s: warnings %v", what, s.Warnings)
		}
	}
	read := func(path string) *api.Secret {
		t.Helper()
		s, err := c.Read(path)
		keep("read "+path, s, err)
		return s
	}
	write := func(path string, data map[string]any) error {
		t.Helper()
		s, err := c.Write(path, data)
		keep("write "+path, s, err)
		return err
	}
	wantStatus := func(what string, err error, codes ...int) {
		t.Helper()
		got := statusCode(err)
		for _, c := range codes {
			if got == c {
				return
			}
		}
		e.errorf("%s: %s, want status %v", what, brief(err), codes)
	}

	// An audit device too: Vault HMACs request and response strings there, and
	// nothing in the plugin should undo that.
	auditPath := filepath.Join(t.TempDir(), "audit.log")
	if err := e.vault.Client.Sys().EnableAuditWithOptions("file", &api.EnableAuditOptions{
		Type: "file", Options: map[string]string{"file_path": auditPath},
	}); err != nil {
		t.Fatal(err)
	}
	e.configure(nil)

	// A password-grant role, read every way.
	pw := e.addRole("pw", "svc-logs")
	first := accessToken(read("iadvize/creds/pw"))
	read("iadvize/static-creds/pw")
	read("iadvize/roles/pw")
	s, err := c.List("iadvize/roles")
	keep("list roles", s, err)
	read("iadvize/status/pw")
	read("iadvize/verify/pw")
	s, err = c.Write("iadvize/rotate-role/pw", nil)
	keep("rotate-role pw", s, err)
	if tok := accessToken(read("iadvize/creds/pw")); tok == first || tok == "" {
		t.Errorf("creds/pw after rotate-role: got the old token or none")
	}

	// The fake revokes its tokens: verify/ finds out, the next read logs in.
	e.up.RevokeAll()
	read("iadvize/verify/pw")
	read("iadvize/creds/pw")

	// A typo (pasword=) and a bad grant, both carrying a secret: refused, not echoed.
	typoSecret := distinctive("pw-typo")
	e.secrets.add(typoSecret)
	wantStatus("typo pasword=", write("iadvize/roles/pw", map[string]any{"pasword": typoSecret}), 400)
	badGrantSecret := distinctive("cs-badgrant")
	e.secrets.add(badGrantSecret)
	wantStatus("grant_type=bogus", write("iadvize/roles/bogus", map[string]any{
		"grant_type": "bogus", "client_id": "c", "client_secret": badGrantSecret}), 400)
	// A password change (update naming only the password).
	pw2 := distinctive("pw-rotated")
	e.secrets.add(pw2)
	e.up.AddUser("svc-logs", pw2)
	if err := write("iadvize/roles/pw", map[string]any{"password": pw2}); err != nil {
		e.errorf("updating the password: %v", brief(err))
	}
	read("iadvize/creds/pw")

	// A client-credentials role.
	cs := distinctive("cs-client")
	e.secrets.add(cs)
	e.up.AddClient("client-logs", cs)
	if err := write("iadvize/roles/cc", map[string]any{
		"grant_type": "client_credentials", "client_id": "client-logs", "client_secret": cs}); err != nil {
		e.fatalf("client-credentials role: %v", brief(err))
	}
	read("iadvize/creds/cc")
	read("iadvize/roles/cc")

	// A wrong password: upstream 401, the read fails (502), and the next read
	// does not log in again.
	wrong := distinctive("pw-wrong")
	e.secrets.add(wrong)
	e.up.AddUser("svc-wrong", distinctive("pw-right-unused"))
	if err := write("iadvize/roles/wrong", map[string]any{"username": "svc-wrong", "password": wrong}); err != nil {
		e.fatalf("role wrong: %v", brief(err))
	}
	_, err = c.Read("iadvize/creds/wrong")
	keep("read creds/wrong", nil, err)
	wantStatus("creds/wrong (401 upstream)", err, 502)
	_, err = c.Read("iadvize/creds/wrong")
	keep("read creds/wrong again", nil, err)
	wantStatus("creds/wrong again", err, 502, 429)
	read("iadvize/status/wrong")
	// The same through the client-credentials grant.
	wrongCS := distinctive("cs-wrong")
	e.secrets.add(wrongCS)
	if err := write("iadvize/roles/wrongcc", map[string]any{
		"grant_type": "client_credentials", "client_id": "client-logs", "client_secret": wrongCS}); err != nil {
		e.fatalf("role wrongcc: %v", brief(err))
	}
	_, err = c.Read("iadvize/creds/wrongcc")
	keep("read creds/wrongcc", nil, err)
	wantStatus("creds/wrongcc (401 upstream)", err, 502)

	// Upstream 5xx, in JSON then in plain text, then a 429.
	e.addRole("flaky", "svc-flaky")
	if err := e.up.InjectFault(fakeiadvize.Fault{Mode: fakeiadvize.FaultServerError, Count: 1}); err != nil {
		t.Fatal(err)
	}
	_, err = c.Read("iadvize/creds/flaky")
	keep("read creds/flaky (5xx)", nil, err)
	wantStatus("creds/flaky (5xx upstream)", err, 502)
	read("iadvize/status/flaky")
	e.addRole("plain", "svc-plain")
	if err := e.up.InjectFault(fakeiadvize.Fault{Mode: fakeiadvize.FaultServerError, Count: 1, Status: 500, PlainText: true}); err != nil {
		t.Fatal(err)
	}
	_, err = c.Read("iadvize/creds/plain")
	keep("read creds/plain (5xx)", nil, err)
	wantStatus("creds/plain (plain 5xx upstream)", err, 502)
	e.addRole("limited", "svc-limited")
	if err := e.up.InjectFault(fakeiadvize.Fault{Mode: fakeiadvize.FaultRateLimit, Count: 1, RetryAfter: 120}); err != nil {
		t.Fatal(err)
	}
	_, err = c.Read("iadvize/creds/limited")
	keep("read creds/limited (429)", nil, err)
	wantStatus("creds/limited (429 upstream)", err, 429)
	read("iadvize/status/limited")

	// The CLI, as an operator would use it, password on the command line.
	cliPw := distinctive("pw-cli")
	e.secrets.add(cliPw)
	e.up.AddUser("svc-cli", cliPw)
	var cliOut strings.Builder
	for _, args := range [][]string{
		{"write", "iadvize/roles/cli", "username=svc-cli", "password=" + cliPw},
		{"read", "iadvize/roles/cli"},
		{"list", "iadvize/roles"},
		{"read", "iadvize/creds/cli"},
		{"read", "iadvize/status/cli"},
		{"write", "iadvize/roles/cli", "pasword=" + cliPw},
		{"path-help", "iadvize/roles/cli"},
	} {
		out, stderr, err := e.cli(vaulttest.RootToken, args...)
		for _, line := range strings.Split(out+stderr, "\n") {
			// The one place a token may be shown: creds/'s access_token row.
			if !(args[1] == "iadvize/creds/cli" && strings.HasPrefix(line, "access_token ")) {
				cliOut.WriteString(line + "\n")
			}
		}
		// args[2:] may hold the password: never printed.
		// The output of creds/ holds the token: check it, print only its size.
		e.logf("vault %s %s: exit %v, %d bytes of output", args[0], args[1], err, len(out+stderr))
	}
	answers = append(answers, "cli: "+cliOut.String())

	// Every secret of the run, now that all tokens are issued.
	all := e.secrets.all()
	if len(all) < 12 {
		t.Fatalf("only %d secrets recorded; the run did less than it should", len(all))
	}
	if !strings.Contains(strings.Join(all, " "), pw) {
		t.Fatal("the first password is not among the recorded secrets")
	}
	st := e.up.Stats()
	e.logf("run: %d secrets watched (%d access tokens), fake: %d logins, %d failed credentials, %d injected faults, %d injected 429, %d verify calls",
		len(all), len(e.up.tokens()), st.LoginAttempts, st.FailedCredentials, st.InjectedFaults, st.InjectedRateLimited, st.VerifyCalls)

	// Let Vault flush its log: stop it.
	e.vault.Stop()
	vaultLog := e.vault.Log()
	if !strings.Contains(vaultLog, "[TRACE]") {
		t.Errorf("the vault log has no trace line: was it at trace level?")
	}
	check := func(where, text string) {
		t.Helper()
		if leaked := e.secrets.found(text); len(leaked) > 0 {
			var lines []string
			for _, l := range strings.Split(text, "\n") {
				if len(e.secrets.found(l)) > 0 {
					lines = append(lines, e.secrets.redact(l))
				}
			}
			t.Errorf("%s holds %d secret(s) %v, in:\n%s", where, len(leaked), leaked, strings.Join(lines, "\n"))
		}
	}
	check("the vault server log", vaultLog)
	check("the fake's log", fakeLog.String())
	audit, err := os.ReadFile(auditPath)
	if err != nil || !bytes.Contains(audit, []byte("iadvize/creds/pw")) {
		t.Errorf("the audit log has no read of creds/pw (%v)", err)
	}
	check("the audit log", string(audit))
	for _, a := range answers {
		check("an answer", a)
	}
	e.mu.Lock()
	printed := strings.Join(e.printed, "\n")
	e.mu.Unlock()
	check("the test's own output", printed)
}

package e2e

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/vaulttest"
)

// The example consumer (examples/consumer) against a real Vault and the fake
// iAdvize as a process (cmd/fake-iadvize): several copies per role call the
// fake's API in a loop; the fake revokes every token; each copy gets a 401,
// reports the token once (refused_token_sha256, with the example policy of its
// role) and goes on with the answer's token (README, "When the API refuses the
// token").

const (
	consumersPerRole = 4
	consumerInterval = 200 * time.Millisecond
	// recoveryBound: a consumer calls the API successfully again within this
	// time of a revocation (its next call after it, one report, one login).
	recoveryBound = 5 * time.Second
)

// consumerRoles are the roles of the consumer tests; crm-sync's consumers use
// examples/policies/crm-sync.hcl as written, the others the same file with
// their role's name.
var consumerRoles = []struct{ name, username string }{
	{"crm-sync", "svc-crm"},
	{"billing-export", "svc-billing"},
	{"chat-archive", "svc-chat"},
}

var (
	consumerDoneLine = regexp.MustCompile(`^consumer done: calls=(\d+) ok=(\d+) failed=(\d+) refused=(\d+) reported=(\d+) reads=(\d+)$`)
	consumerReported = regexp.MustCompile(`^reported token sha256:([0-9a-f]{12}) to (\S+), got sha256:([0-9a-f]{12})$`)
	consumerReportNo = regexp.MustCompile(`^report of token sha256:([0-9a-f]{12}) failed: `)
	consumerCallNo   = regexp.MustCompile(`^call \d+ failed: `)
)

// stampedLine is a line of a consumer's output and when the test read it.
type stampedLine struct {
	at   time.Time
	text string
}

// consumerProc is one running copy of the example consumer.
type consumerProc struct {
	name, role, path string
	cmd              *exec.Cmd
	done             chan struct{} // closed once it exited and its output is read
	exitErr          error

	mu    sync.Mutex
	lines []stampedLine
}

// startConsumer runs the consumer binary with the Vault address and token in
// its environment (and no other VAULT_* variable), reading its output (stdout
// and stderr) line by line as it comes. It is killed at cleanup if still running.
func startConsumer(t *testing.T, bin, name, role, path string, env []string, args ...string) *consumerProc {
	t.Helper()
	c := &consumerProc{name: name, role: role, path: path, done: make(chan struct{})}
	c.cmd = exec.Command(bin, append([]string{"-path", path}, args...)...)
	c.cmd.Env = append(cleanEnv(), env...)
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	c.cmd.Stdout, c.cmd.Stderr = w, w
	if err := c.cmd.Start(); err != nil {
		r.Close()
		w.Close()
		t.Fatalf("starting the consumer: %v", err)
	}
	w.Close() // the child has its own copy: EOF once it exits
	go func() {
		defer close(c.done)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			c.mu.Lock()
			c.lines = append(c.lines, stampedLine{time.Now(), sc.Text()})
			c.mu.Unlock()
		}
		r.Close()
		c.exitErr = c.cmd.Wait()
	}()
	t.Cleanup(func() {
		select {
		case <-c.done:
		default:
			_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
			<-c.done
		}
	})
	return c
}

// output is the lines read so far.
func (c *consumerProc) output() []stampedLine {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.lines)
}

// text is the output so far, one string.
func (c *consumerProc) text() string {
	var b strings.Builder
	for _, l := range c.output() {
		b.WriteString(l.text)
		b.WriteByte('\n')
	}
	return b.String()
}

// linesAfter is the output lines read at or after since that match re.
func (c *consumerProc) linesAfter(since time.Time, re *regexp.Regexp) []stampedLine {
	var out []stampedLine
	for _, l := range c.output() {
		if !l.at.Before(since) && re.MatchString(l.text) {
			out = append(out, l)
		}
	}
	return out
}

// consumerCounts is the consumer's final line.
type consumerCounts struct{ calls, ok, failed, refused, reported, reads int }

// counts parses the final line; ok is false when there is none.
func (c *consumerProc) counts() (consumerCounts, bool) {
	for _, l := range c.output() {
		if m := consumerDoneLine.FindStringSubmatch(l.text); m != nil {
			n := make([]int, 6)
			for i := range n {
				n[i], _ = strconv.Atoi(m[i+1])
			}
			return consumerCounts{n[0], n[1], n[2], n[3], n[4], n[5]}, true
		}
	}
	return consumerCounts{}, false
}

// newProcessEnv starts a fake-iadvize process and a Vault dev server with the
// plugin at iadvize/, configured for the fake: verify_url on the fake's token
// host, or "" when !verify. e.up is nil: the fake is driven through its admin
// API. Both logs are shown, redacted, when the test fails.
func newProcessEnv(t *testing.T, verify bool) (*env, *vaulttest.Fake) {
	t.Helper()
	e := &env{t: t, bin: needVault(t), secrets: &secrets{}}
	fake := vaulttest.StartFake(t, "")
	e.vault = vaulttest.StartDev(t, vaulttest.Options{})
	e.vault.Client.SetMaxRetries(0)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("vault log (tail, redacted):\n%s", e.secrets.withhold(tail(e.vault.Log(), 6000)))
			b, _ := os.ReadFile(fake.LogPath)
			t.Logf("fake-iadvize log (tail, redacted):\n%s", e.secrets.withhold(tail(string(b), 3000)))
		}
	})
	verifyURL := ""
	if verify {
		verifyURL = fake.URL + "/_authenticated"
	}
	e.write("iadvize/config", map[string]any{"token_url": fake.URL + "/oauth2/token", "verify_url": verifyURL})
	return e, fake
}

// consumerFleet is a Vault dev server with the roles of consumerRoles pointed at
// a fake-iadvize process, a Vault token per role holding that role's example
// policy, and the consumers started.
type consumerFleet struct {
	e      *env
	fake   *vaulttest.Fake
	bin    string
	tokens map[string]string // role -> Vault token with its policy
	procs  []*consumerProc
}

// newConsumerFleet starts the fake and Vault, configures iadvize/ (verify_url
// on the fake's token host, or "" when !verify) and writes the roles and
// their policies.
func newConsumerFleet(t *testing.T, verify bool) *consumerFleet {
	t.Helper()
	e, fake := newProcessEnv(t, verify)
	f := &consumerFleet{e: e, fake: fake, tokens: map[string]string{}}
	t.Cleanup(func() {
		if t.Failed() {
			for _, c := range f.procs {
				t.Logf("consumer %s output (tail, redacted):\n%s", c.name, e.secrets.withhold(tail(c.text(), 1500)))
			}
		}
	})
	policy := example(t, "policies/crm-sync.hcl")
	for _, r := range consumerRoles {
		pw := distinctive("pw-" + r.name)
		e.secrets.add(pw)
		fake.AddUser(t, r.username, pw)
		e.write("iadvize/roles/"+r.name, map[string]any{"username": r.username, "password": pw})
		if r.name == "crm-sync" {
			f.tokens[r.name] = e.policyClient(r.name, "crm-sync.hcl", false).Token()
		} else {
			f.tokens[r.name] = e.tokenWithPolicy(r.name, strings.ReplaceAll(policy, "crm-sync", r.name), true)
		}
		e.secrets.add(f.tokens[r.name])
	}
	f.bin = vaulttest.Binary(t, "", "./examples/consumer")
	return f
}

// start runs consumersPerRole consumers per role, half on creds/, half on
// static-creds/, with the flags given (besides -path and -api).
func (f *consumerFleet) start(args ...string) {
	f.e.t.Helper()
	for _, r := range consumerRoles {
		for i := range consumersPerRole {
			path := "iadvize/creds/" + r.name
			if i%2 == 1 {
				path = "iadvize/static-creds/" + r.name
			}
			env := []string{"VAULT_ADDR=" + f.e.vault.Addr, "VAULT_TOKEN=" + f.tokens[r.name], "HOME=" + f.e.t.TempDir()}
			f.procs = append(f.procs, startConsumer(f.e.t, f.bin, fmt.Sprintf("%s#%d", r.name, i+1), r.name, path, env,
				append([]string{"-api", f.fake.URL + "/api/me", "-interval", consumerInterval.String()}, args...)...))
		}
	}
}

// collectTokens adds each role's cached token to the secrets, so that nothing
// printed can hold one (a read of a cached token logs in nowhere).
func (f *consumerFleet) collectTokens() {
	f.e.t.Helper()
	for _, r := range consumerRoles {
		f.e.secrets.add(accessToken(f.e.read("iadvize/static-creds/" + r.name)))
	}
}

// waitAPICalls waits until the fake has answered n API calls in all.
func (f *consumerFleet) waitAPICalls(n int) {
	f.e.t.Helper()
	f.e.waitFor(60*time.Second, fmt.Sprintf("%d API calls", n), func() error {
		if got := f.fake.Stats(f.e.t).APICalls; got < n {
			return fmt.Errorf("%d API calls so far", got)
		}
		return nil
	})
}

// wantLogins checks the fake's successful logins per service user, and that it
// saw no other login attempt.
func (f *consumerFleet) wantLogins(when string, perUser int) {
	f.e.t.Helper()
	st := f.fake.Stats(f.e.t)
	for _, r := range consumerRoles {
		if n := st.UserSuccesses[r.username]; n != perUser {
			f.e.errorf("%s: %d logins of %s (role %s), want %d", when, n, r.username, r.name, perUser)
		}
	}
	if want := perUser * len(consumerRoles); st.LoginAttempts != want {
		f.e.errorf("%s: %d login attempts in all, want %d", when, st.LoginAttempts, want)
	}
}

// recoveries waits until every consumer has reported the token revoked at
// revokedAt and got another, and returns how long after revokedAt each did:
// its report line comes right before its next API call with the new token.
func (f *consumerFleet) recoveries(revokedAt time.Time) []time.Duration {
	f.e.t.Helper()
	f.e.waitFor(30*time.Second, "every consumer to report the revoked token", func() error {
		n := 0
		for _, c := range f.procs {
			if len(c.linesAfter(revokedAt, consumerReported)) > 0 {
				n++
			}
		}
		if n < len(f.procs) {
			return fmt.Errorf("%d of %d consumers reported", n, len(f.procs))
		}
		return nil
	})
	var out []time.Duration
	for _, c := range f.procs {
		lines := c.linesAfter(revokedAt, consumerReported)
		m := consumerReported.FindStringSubmatch(lines[0].text)
		if len(lines) != 1 || m[1] == m[3] || m[2] != c.path {
			var texts []string
			for _, l := range lines {
				texts = append(texts, l.text)
			}
			f.e.errorf("consumer %s: report lines %q, want one, to %s, answered with another token", c.name, texts, c.path)
		}
		d := lines[0].at.Sub(revokedAt)
		if d > recoveryBound {
			f.e.errorf("consumer %s got a working token %s after the revocation, want within %s", c.name, d, recoveryBound)
		}
		out = append(out, d)
	}
	return out
}

// summary is the least, median and largest of ds.
func summary(ds []time.Duration) string {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return "none"
	}
	r := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	return fmt.Sprintf("min %s, median %s, max %s over %d consumers", r(s[0]), r(s[len(s)/2]), r(s[len(s)-1]), len(s))
}

// wantReportOutcome checks each role's status/ last_report_outcome.
func (f *consumerFleet) wantReportOutcome(outcome string) {
	f.e.t.Helper()
	for _, r := range consumerRoles {
		st := f.e.read("iadvize/status/" + r.name).Data
		if st["last_report_outcome"] != outcome || st["last_report"] == "" || st["has_token"] != true {
			f.e.errorf("status/%s: last_report=%v last_report_outcome=%v has_token=%v, want a report time, %s and a token",
				r.name, st["last_report"], st["last_report_outcome"], st["has_token"], outcome)
		}
	}
}

// noTokensPrinted checks that no consumer printed a token or password.
func (f *consumerFleet) noTokensPrinted() {
	f.e.t.Helper()
	for _, c := range f.procs {
		if found := f.e.secrets.found(c.text()); len(found) > 0 {
			f.e.errorf("consumer %s printed secrets %v", c.name, found)
		}
	}
}

// TestExampleConsumersRecoverFromRevocation: 3 roles, 4 example consumers each
// (half on creds/, half on static-creds/), each with its role's example policy,
// call the fake's API every 200 ms. The fake revokes every token: each consumer
// gets one 401, reports the token once and calls on with a new one within a
// few seconds; the plugin checks each role's token once at verify_url and logs
// in once per role, however many consumers report; every call of every
// consumer succeeds (exit 0).
func TestExampleConsumersRecoverFromRevocation(t *testing.T) {
	f := newConsumerFleet(t, true)
	e := f.e
	const calls = 50
	f.start("-calls", strconv.Itoa(calls), "-tries", "5")
	f.waitAPICalls(3 * len(f.procs))
	f.wantLogins("before the revocation", 1)
	f.collectTokens()
	before := f.fake.Stats(t)
	if before.APIRefusals != 0 {
		e.fatalf("%d API refusals before any revocation", before.APIRefusals)
	}

	revokedAt := time.Now()
	f.fake.RevokeAll(t)
	rec := f.recoveries(revokedAt)
	e.logf("verify_url set: consumers working again after the revocation: %s", summary(rec))

	for _, c := range f.procs {
		select {
		case <-c.done:
		case <-time.After(60 * time.Second):
			e.fatalf("consumer %s still running 60 s after the revocation", c.name)
		}
		n, ok := c.counts()
		switch {
		case !ok:
			e.errorf("consumer %s: no final line (exit %v)", c.name, c.exitErr)
		case c.exitErr != nil || n.ok != calls || n.failed != 0 || n.refused != 1 || n.reported != 1:
			e.errorf("consumer %s: exit %v, %+v; want exit 0, %d calls ok, one refused and reported", c.name, c.exitErr, n, calls)
		}
	}
	f.collectTokens()
	f.noTokensPrinted()
	f.wantLogins("after the revocation", 2)
	st := f.fake.Stats(t)
	if got := st.APIRefusals - before.APIRefusals; got != len(f.procs) {
		e.errorf("%d API refusals after the revocation, want %d (one per consumer)", got, len(f.procs))
	}
	if st.VerifyCalls != len(consumerRoles) {
		e.errorf("%d checks at verify_url, want %d (one per role)", st.VerifyCalls, len(consumerRoles))
	}
	f.wantReportOutcome("dropped")
	e.logf("%d consumers, %d API calls, %d refused; logins per role: 1 + 1 after the revocation", len(f.procs), st.APICalls, st.APIRefusals)
}

// TestExampleConsumersWithoutVerifyURL: the same consumers on a mount with no
// verify_url. A revocation: each consumer reports once, the plugin drops each
// role's token and logs in once per role, and the consumers recover. A second
// revocation within 5 minutes: the reports are answered 429 naming when a
// report may act again, with no login; each consumer prints the error, never
// reports that token again and keeps calling (and failing, as nothing can get a
// new token before then without verify_url). At most one login per role in
// those 5 minutes, however often the consumers report.
func TestExampleConsumersWithoutVerifyURL(t *testing.T) {
	f := newConsumerFleet(t, false)
	e := f.e
	f.start("-calls", "100000", "-tries", "2")
	f.waitAPICalls(3 * len(f.procs))
	f.wantLogins("before the revocations", 1)
	f.collectTokens()

	revokedAt := time.Now()
	f.fake.RevokeAll(t)
	rec := f.recoveries(revokedAt)
	e.logf("no verify_url: consumers working again after the revocation: %s", summary(rec))
	f.collectTokens()
	f.wantLogins("after the first revocation", 1+1)
	f.wantReportOutcome("dropped")
	recovered := f.fake.Stats(t)
	f.waitAPICalls(recovered.APICalls + 2*len(f.procs)) // calls go on with the new tokens
	if st := f.fake.Stats(t); st.APIRefusals != recovered.APIRefusals {
		e.errorf("%d API refusals after every consumer recovered, want none", st.APIRefusals-recovered.APIRefusals)
	}

	again := time.Now()
	f.fake.RevokeAll(t)
	e.waitFor(30*time.Second, "every consumer to be refused its report, then to call on", func() error {
		for _, c := range f.procs {
			refused := c.linesAfter(again, consumerReportNo)
			if len(refused) == 0 || len(c.linesAfter(refused[0].at, consumerCallNo)) < 2 {
				return fmt.Errorf("consumer %s not yet refused and called on", c.name)
			}
		}
		return nil
	})
	for _, c := range f.procs {
		_ = syscall.Kill(c.cmd.Process.Pid, syscall.SIGTERM)
	}
	for _, c := range f.procs {
		select {
		case <-c.done:
		case <-time.After(30 * time.Second):
			e.fatalf("consumer %s still running 30 s after SIGTERM", c.name)
		}
		out := c.text()
		n, ok := c.counts()
		switch {
		case !ok:
			e.errorf("consumer %s: no final line after SIGTERM (exit %v)", c.name, c.exitErr)
		case n.reported != 2 || n.refused < 3 || n.failed < 1:
			e.errorf("consumer %s: %+v; want 2 tokens reported, and the calls after the second refused", c.name, n)
		}
		if k := len(c.linesAfter(again, consumerReportNo)); k != 1 ||
			!strings.Contains(out, "Code: 429") || !strings.Contains(out, "a report may act again at") {
			e.errorf("consumer %s: %d refused reports, want one answered 429 naming when a report may act again; output (redacted):\n%s",
				c.name, k, e.secrets.withhold(tail(out, 1500)))
		}
		if k := len(c.linesAfter(again, consumerReported)); k != 0 {
			e.errorf("consumer %s: %d reports answered after the second revocation, want none", c.name, k)
		}
	}
	f.noTokensPrinted()
	f.wantLogins("after the second revocation", 1+1)
	f.wantReportOutcome("throttled")
	st := f.fake.Stats(t)
	e.logf("%d consumers, %d API calls (%d refused), %d login attempts in all; %s after the second revocation",
		len(f.procs), st.APICalls, st.APIRefusals, st.LoginAttempts, time.Since(again).Round(time.Millisecond))
}

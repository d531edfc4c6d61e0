// Package e2e runs the plugin inside real Vault servers (and a real Vault Agent)
// against the in-process fake iAdvize upstream. The tests skip under -short and
// when no Vault binary can be had; `make test` provides one.
package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/vaulttest"
)

// needVault skips the test under -short, and returns the Vault binary (skipping, with
// the reason, when there is none).
func needVault(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test against a real Vault: skipped with -short")
	}
	return vaulttest.VaultBin(t)
}

// secrets is what a test must never see printed: the passwords and client
// secrets it configures and every access token the fake issues. Everything the
// tests log goes through redact.
type secrets struct {
	mu   sync.Mutex
	list []string
}

func (s *secrets) add(v ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, x := range v {
		if x != "" {
			s.list = append(s.list, x)
		}
	}
}

func (s *secrets) all() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.list...)
}

// redact replaces every known secret in text.
func (s *secrets) redact(text string) string {
	for _, v := range s.all() {
		text = strings.ReplaceAll(text, v, "[REDACTED]")
	}
	return text
}

// withhold is text fit to print: each line that holds a fragment of a secret
// (any 6 consecutive characters of it, raw or encoded: see leakedForm) is
// withheld whole, and whole secrets are redacted from the rest.
func (s *secrets) withhold(text string) string {
	all := s.all()
	lines := strings.Split(text, "\n")
	for i, line := range lines {
		for _, v := range all {
			if leakedForm(line, v) != "" {
				lines[i] = "[line withheld: it holds a fragment of a secret]"
				break
			}
		}
	}
	return s.redact(strings.Join(lines, "\n"))
}

// found lists the (masked) secrets that text contains.
func (s *secrets) found(text string) []string {
	var out []string
	for _, v := range s.all() {
		if strings.Contains(text, v) {
			out = append(out, mask(v))
		}
	}
	return out
}

// mask names a secret in test output by a fingerprint (the first 12 hex digits
// of its SHA-256), so that output tells secrets apart without showing any part
// of one.
func mask(v string) string {
	sum := sha256.Sum256([]byte(v))
	return "sha256:" + hex.EncodeToString(sum[:6])
}

// distinctive returns a secret that no log line would hold by chance.
func distinctive(prefix string) string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// upstream is the fake iAdvize on 127.0.0.1, with a record of every access token
// it issued and an optional gate that holds logins.
type upstream struct {
	*fakeiadvize.Server
	URL     string // http://127.0.0.1:PORT
	secrets *secrets

	mu     sync.Mutex
	issued map[string]bool
	order  []string
	gate   chan struct{} // when non-nil, logins wait until it is closed
	held   int           // logins that reached a gate
}

func newUpstream(t *testing.T, opts fakeiadvize.Options, sec *secrets) *upstream {
	t.Helper()
	u := &upstream{Server: fakeiadvize.New(opts), secrets: sec, issued: map[string]bool{}}
	ts := httptest.NewServer(http.HandlerFunc(u.serve))
	u.URL = ts.URL
	t.Cleanup(ts.Close)
	t.Cleanup(u.Server.Close) // runs first: releases held requests
	t.Cleanup(u.openGate)
	return u
}

// serve passes requests to the fake, recording the access tokens it issues.
func (u *upstream) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/oauth2/token" {
		u.Server.ServeHTTP(w, r)
		return
	}
	u.mu.Lock()
	gate := u.gate
	if gate != nil {
		u.held++
	}
	u.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-r.Context().Done():
		}
	}
	rec := httptest.NewRecorder()
	u.Server.ServeHTTP(rec, r)
	if tok := answerToken(rec.Body.Bytes()); rec.Code == http.StatusOK && tok != "" {
		u.secrets.add(tok)
		u.mu.Lock()
		u.issued[tok] = true
		u.order = append(u.order, tok)
		u.mu.Unlock()
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

// answerToken is the access token of a token answer in any shape the fake
// sends (JSON, JSON after a byte-order mark, form-encoded), "" for none.
func answerToken(body []byte) string {
	var m struct {
		AccessToken string `json:"access_token"`
	}
	if json.Unmarshal(bytes.TrimPrefix(body, []byte("\xEF\xBB\xBF")), &m) == nil {
		return m.AccessToken
	}
	if v, err := url.ParseQuery(string(body)); err == nil {
		return v.Get("access_token")
	}
	return ""
}

// holdLogins makes logins wait until openGate.
func (u *upstream) holdLogins() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.gate == nil {
		u.gate = make(chan struct{})
	}
}

func (u *upstream) openGate() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.gate != nil {
		close(u.gate)
		u.gate = nil
	}
}

func (u *upstream) heldLogins() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.held
}

// wasIssued reports whether the fake issued tok.
func (u *upstream) wasIssued(tok string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.issued[tok]
}

// tokens returns the issued tokens in order.
func (u *upstream) tokens() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.order...)
}

// noFailures checks that every login attempt the fake saw succeeded.
func (u *upstream) noFailures() error {
	st := u.Stats()
	if st.LoginAttempts != st.LoginSuccesses || st.RateLimited+st.InjectedRateLimited+st.FailedCredentials+
		st.BadRequests+st.InjectedFaults != 0 {
		return fmt.Errorf("fake saw failed logins: %+v", st)
	}
	return nil
}

// env is one test's world: a fake upstream, a Vault server, and the secrets that
// must never be printed.
type env struct {
	t       *testing.T
	bin     string
	secrets *secrets
	up      *upstream
	vault   *vaulttest.Server

	mu      sync.Mutex
	printed []string // messages the test printed, before redaction
}

// logf logs with every secret redacted.
func (e *env) logf(format string, args ...any) {
	e.t.Helper()
	e.t.Log(e.print(format, args...))
}

// fatalf fails with every secret redacted.
func (e *env) fatalf(format string, args ...any) {
	e.t.Helper()
	e.t.Fatal(e.print(format, args...))
}

// errorf reports an error with every secret redacted.
func (e *env) errorf(format string, args ...any) {
	e.t.Helper()
	e.t.Error(e.print(format, args...))
}

// print formats a message for the test's output, remembering it as it was before
// redaction (TestNoSecretsInLogs checks that redaction had nothing to do).
func (e *env) print(format string, args ...any) string {
	msg := fmt.Sprintf(format, args...)
	e.mu.Lock()
	e.printed = append(e.printed, msg)
	e.mu.Unlock()
	return e.secrets.redact(msg)
}

// newEnvNoVault starts the fake; the test starts e.vault (see startFileVault).
func newEnvNoVault(t *testing.T, fopts fakeiadvize.Options) *env {
	t.Helper()
	e := &env{t: t, bin: needVault(t), secrets: &secrets{}}
	e.up = newUpstream(t, fopts, e.secrets)
	return e
}

// newEnv starts the fake and a Vault dev server with the plugin at iadvize/.
func newEnv(t *testing.T, fopts fakeiadvize.Options, vopts vaulttest.Options) *env {
	t.Helper()
	e := newEnvNoVault(t, fopts)
	e.vault = vaulttest.StartDev(t, vopts)
	e.vault.Client.SetMaxRetries(0) // a 5xx is an answer to check, not to retry
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("vault log (tail, redacted):\n%s", e.secrets.withhold(tail(e.vault.Log(), 6000)))
		}
	})
	return e
}

// write writes to Vault, failing the test on error.
func (e *env) write(path string, data map[string]any) *api.Secret {
	e.t.Helper()
	s, err := e.vault.Client.Logical().Write(path, data)
	if err != nil {
		e.fatalf("write %s: %v", path, brief(err))
	}
	return s
}

// read reads from Vault, failing the test on error.
func (e *env) read(path string) *api.Secret {
	e.t.Helper()
	s, err := e.vault.Client.Logical().Read(path)
	if err != nil {
		e.fatalf("read %s: %v", path, brief(err))
	}
	if s == nil {
		e.fatalf("read %s: no data", path)
	}
	return s
}

// configure points the iadvize/ mount at the fake, with extra settings.
func (e *env) configure(extra map[string]any) {
	e.t.Helper()
	e.configureMount("iadvize", extra)
}

// configureMount points a mount of the plugin at the fake, with extra settings.
func (e *env) configureMount(mount string, extra map[string]any) {
	e.t.Helper()
	data := map[string]any{
		"token_url":  e.up.URL + "/oauth2/token",
		"verify_url": e.up.URL + "/_authenticated",
	}
	for k, v := range extra {
		data[k] = v
	}
	e.write(mount+"/config", data)
}

// addRole creates a fake user with a distinctive password and a password-grant
// role for it on iadvize/; it returns the password.
func (e *env) addRole(name, username string) string {
	e.t.Helper()
	return e.addRoleAt("iadvize", name, username)
}

// addRoleAt is addRole on another mount.
func (e *env) addRoleAt(mount, name, username string) string {
	e.t.Helper()
	pw := distinctive("pw-" + name)
	e.secrets.add(pw)
	e.up.AddUser(username, pw)
	e.write(mount+"/roles/"+name, map[string]any{"username": username, "password": pw})
	return pw
}

// tokenWithPolicy writes the policy name (HCL rules) and returns a new 1-hour
// Vault token holding it, and the default policy unless noDefault.
func (e *env) tokenWithPolicy(name, rules string, noDefault bool) string {
	e.t.Helper()
	if err := e.vault.Client.Sys().PutPolicy(name, rules); err != nil {
		e.t.Fatal(err)
	}
	tok, err := e.vault.Client.Auth().Token().Create(&api.TokenCreateRequest{
		Policies: []string{name}, NoDefaultPolicy: noDefault, TTL: "1h",
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return tok.Auth.ClientToken
}

// startFileVault starts e.vault: a server with file storage and pluginDir as its
// plugin directory, initialised and unsealed, its client not retrying, its log
// shown (redacted) when the test fails. It returns the unseal key and root token.
func (e *env) startFileVault(pluginDir string) (unsealKey, rootToken string) {
	t := e.t
	t.Helper()
	e.vault, _ = vaulttest.StartFileStorage(t, vaulttest.Options{PluginDir: pluginDir, LogLevel: "debug"})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("vault log (tail, redacted):\n%s", tail(e.secrets.redact(e.vault.Log()), 6000))
		}
	})
	unsealKey, rootToken = e.vault.InitAndUnseal()
	e.vault.Client.SetMaxRetries(0)
	return unsealKey, rootToken
}

// coldReads reads every path (creds/ of roles with no token yet) at once and
// returns those refused with a 429 saying when the next login attempt is; any
// other failure fails the test.
func (e *env) coldReads(paths []string) (refused []string) {
	e.t.Helper()
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for _, path := range paths {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := e.vault.Client.Logical().Read(path)
			if err == nil {
				return
			}
			if statusCode(err) != http.StatusTooManyRequests || !strings.Contains(err.Error(), "next login attempt") {
				e.errorf("cold read of %s: %s, want 200 or a 429 with a retry time", path, brief(err))
			}
			mu.Lock()
			refused = append(refused, path)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if e.t.Failed() {
		e.t.FailNow()
	}
	return refused
}

// waitServed waits until every path reads without error.
func (e *env) waitServed(timeout time.Duration, paths []string) {
	e.t.Helper()
	e.waitFor(timeout, "every role served", func() error {
		var still []string
		for _, path := range paths {
			if _, err := e.vault.Client.Logical().Read(path); err != nil {
				still = append(still, path)
			}
		}
		paths = still
		if len(still) > 0 {
			return fmt.Errorf("%d roles not served yet", len(still))
		}
		return nil
	})
}

// accessToken is the access_token of a creds/ or static-creds/ answer.
func accessToken(s *api.Secret) string {
	if s == nil || s.Data == nil {
		return ""
	}
	tok, _ := s.Data["access_token"].(string)
	return tok
}

// statusCode is the HTTP status of a Vault API error, 0 if it is not one.
func statusCode(err error) int {
	var re *api.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode
	}
	return 0
}

// brief is an error on one line: a Vault API error's messages without the
// request boilerplate.
func brief(err error) string {
	if err == nil {
		return "<nil>"
	}
	var re *api.ResponseError
	msg := err.Error()
	if errors.As(err, &re) {
		msg = fmt.Sprintf("%d: %s", re.StatusCode, strings.Join(re.Errors, "; "))
	}
	return strings.Join(strings.Fields(msg), " ")
}

// cli runs the vault CLI against the env's server with token.
func (e *env) cli(token string, args ...string) (stdout, stderr string, err error) {
	e.t.Helper()
	return runVault(e.t, e.bin, e.vault.Addr, token, args...)
}

func runVault(t *testing.T, bin, addr, token string, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	home := t.TempDir() // no ~/.vault-token read or written
	cmd.Env = append(cleanEnv(), "VAULT_ADDR="+addr, "VAULT_TOKEN="+token, "HOME="+home)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// waitFor is vaulttest.WaitFor with the last error redacted.
func (e *env) waitFor(timeout time.Duration, what string, check func() error) {
	e.t.Helper()
	vaulttest.WaitFor(redacting{e.t, e}, timeout, what, check)
}

// redacting is the test as a vaulttest.TB whose Fatalf redacts every secret.
type redacting struct {
	*testing.T
	e *env
}

func (r redacting) Fatalf(format string, args ...any) {
	r.T.Helper()
	r.e.fatalf(format, args...)
}

// cleanEnv is the environment without VAULT_* variables (an empty one is not the
// same as an unset one to the vault CLI and Agent).
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VAULT_") {
			env = append(env, kv)
		}
	}
	return env
}

func tail(s string, n int) string {
	if len(s) > n {
		s = "..." + s[len(s)-n:]
	}
	return strings.TrimSpace(s)
}

// writeFile writes a file in dir and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/vaulttest"
)

// runDemo is make demo: one login upstream for a burst of cold readers.
func runDemo(p *vaulttest.Program, o options) int {
	work := p.TempDir()
	password := writeSecret(p, work, "demo-password")
	f := upstream(p, password, "")
	fmt.Printf("    fake iAdvize on %s: service user '%s' (random password, not shown)\n", f.URL, demoUser)
	s := devServer(p, o)
	// t adds the end of both servers' logs to a failure.
	t := &withLogs{Program: p, logs: map[string]string{"fake.log": f.LogPath, "vault.log": s.LogPath}}
	vault := vaultCLI{bin: vaulttest.VaultBin(t), addr: s.Addr, token: s.Client.Token(), home: work}

	step("vault secrets enable -path=iadvize %s", vaulttest.PluginName)
	vault.run(t, nil, "secrets", "enable", "-path=iadvize", vaulttest.PluginName)
	step("vault write iadvize/config token_url=%s/oauth2/token verify_url=%s/_authenticated", f.URL, f.URL)
	vault.run(t, nil, "write", "iadvize/config", "token_url="+f.URL+"/oauth2/token", "verify_url="+f.URL+"/_authenticated")
	pwFile := filepath.Join(work, "demo-password")
	step("vault write iadvize/roles/%s username=%s password=@%s", role, demoUser, pwFile)
	vault.run(t, nil, "write", "iadvize/roles/"+role, "username="+demoUser, "password=@"+pwFile)

	step("%d clients read iadvize/creds/%s at the same time (cold: the plugin has no token yet)", o.burst, role)
	started := time.Now()
	toks, failures := burst(s.Addr+"/v1/iadvize/creds/"+role, s.Client.Token(), o.burst)
	elapsed := time.Since(started)
	ok := o.burst - len(failures)
	fmt.Printf("    %d of %d answered HTTP 200 within %d ms, with %d distinct token(s): %s\n",
		ok, o.burst, elapsed.Milliseconds(), len(toks), masks(toks))
	if len(failures) > 0 {
		t.Fatalf("%d reads failed (%s)", len(failures), strings.Join(firstDistinct(failures, 3), "; "))
	}
	if len(toks) != 1 {
		t.Fatalf("the readers got %d different tokens, want one", len(toks))
	}
	token1 := toks[0]

	step("vault read iadvize/creds/%s   (one more read, with the CLI: served from the cache)", role)
	out := vault.output(t, nil, "read", "iadvize/creds/"+role)
	m := accessTokenLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("creds/%s returned no access_token", role)
	}
	token2 := m[2]
	fmt.Print(indent(accessTokenLine.ReplaceAllString(out, "${1}"+mask(token2))))

	logins := f.Stats(t).LoginAttempts
	step("Result")
	if token1 != token2 {
		t.Fatalf("the CLI read returned another token (%s, not %s)", mask(token2), mask(token1))
	}
	fmt.Printf("    %d reads, one token (%s), and the fake iAdvize saw %d login(s)\n", o.burst+1, mask(token1), logins)
	fmt.Printf("    (GET %s/_fake/stats: login_attempts=%d).\n", f.URL, logins)
	if logins != 1 {
		t.Fatalf("expected exactly one login upstream, the fake saw %d", logins)
	}
	step("Next: make dev leaves a Vault and the fake running for the README's Quickstart.")
	fmt.Println()
	fmt.Println("Stopping the servers and removing their temporary directories.")
	return 0
}

// accessTokenLine is the access_token line of `vault read`, the token in group 2.
var accessTokenLine = regexp.MustCompile(`(?m)^(access_token\s+)(\S+)$`)

// writeSecret writes a random secret (no newline: vault's key=@FILE sends a
// file as is) to a file of dir, readable by the owner only, and returns it.
func writeSecret(t vaulttest.TB, dir, name string) string {
	secret := randomHex(t, 16)
	if err := os.WriteFile(filepath.Join(dir, name), []byte(secret), 0o600); err != nil {
		t.Fatalf("%v", err)
	}
	return secret
}

// burst has n clients GET url with the token at the same time. It returns the
// distinct access tokens of the answers and the failures (never a token).
func burst(url, token string, n int) (tokens, failures []string) {
	var (
		mu       sync.Mutex
		distinct = map[string]bool{}
		wg       sync.WaitGroup
		start    = make(chan struct{})
	)
	client := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: n}}
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			tok, err := readToken(client, url, token)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failures = append(failures, err.Error())
				return
			}
			distinct[tok] = true
		}()
	}
	close(start)
	wg.Wait()
	for tok := range distinct {
		tokens = append(tokens, tok)
	}
	sort.Strings(tokens)
	return tokens, failures
}

// readToken reads the access token of a creds/ answer.
func readToken(client *http.Client, url, token string) (string, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("X-Vault-Token", token)
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	var body struct {
		Data struct {
			AccessToken string `json:"access_token"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Data.AccessToken == "" {
		return "", fmt.Errorf("no access_token in the answer (%v)", err)
	}
	return body.Data.AccessToken, nil
}

// masks is the fingerprints of toks.
func masks(toks []string) string {
	out := make([]string, len(toks))
	for i, tok := range toks {
		out[i] = mask(tok)
	}
	return strings.Join(out, " ")
}

// firstDistinct returns up to n distinct values of vs, sorted.
func firstDistinct(vs []string, n int) []string {
	set := map[string]bool{}
	for _, v := range vs {
		set[v] = true
	}
	var out []string
	for v := range set {
		out = append(out, v)
	}
	sort.Strings(out)
	return out[:min(n, len(out))]
}

// withLogs is a Program whose Fatalf adds the last lines of the servers' logs.
type withLogs struct {
	*vaulttest.Program
	logs map[string]string // name -> path
}

func (t *withLogs) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	names := make([]string, 0, len(t.logs))
	for name := range t.logs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if b, err := os.ReadFile(t.logs[name]); err == nil && len(b) > 0 {
			msg += fmt.Sprintf("\n--- last lines of %s ---\n%s", name, lastLines(string(b), 20))
		}
	}
	t.Program.Fatalf("%s", msg)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// runDev is make dev: the servers of the README's Quickstart, left running.
func runDev(p *vaulttest.Program, o options) int {
	if o.devEnv == "" || o.pluginVersion == "" {
		p.Fatalf("dev needs -dev-env and -plugin-version (run: make dev)")
	}
	stopPrevious(o.devEnv)
	work, err := os.MkdirTemp("", "iadvize-demo.")
	if err != nil {
		p.Fatalf("%v", err)
	}
	t := newKeeper(p, work)
	password := writeSecret(t, work, "demo-password")
	clientSecret := writeSecret(t, work, "demo-client-secret")
	f := upstream(t, password, clientSecret)
	fmt.Printf("    fake iAdvize on %s: service user '%s', client '%s' (random secrets, not shown)\n", f.URL, demoUser, demoClient)
	s := devServer(t, o)
	_, err = s.Client.Sys().GetPlugin(&api.GetPluginInput{Name: vaulttest.PluginName, Type: api.PluginTypeSecrets, Version: o.pluginVersion})
	if err != nil {
		t.Fatalf("the dev server did not register %s at version %s: %v", vaulttest.PluginName, o.pluginVersion, err)
	}

	stop := filepath.Join(work, "stop.sh")
	script := fmt.Sprintf(`#!/usr/bin/env bash
# Stops the Vault and fake iAdvize of make dev and removes %[3]s.
kill -TERM -- -%[1]d -%[2]d 2>/dev/null || true
for i in $(seq 200); do kill -0 %[1]d 2>/dev/null || kill -0 %[2]d 2>/dev/null || break; sleep 0.1; done
rm -rf '%[3]s'
rm -f '%[4]s'
echo "make dev: servers stopped"
`, s.Pid(), f.Pid(), work, o.devEnv)
	if err := os.WriteFile(stop, []byte(script), 0o700); err != nil {
		t.Fatalf("%v", err)
	}
	if err := os.MkdirAll(filepath.Dir(o.devEnv), 0o755); err != nil {
		t.Fatalf("%v", err)
	}
	env := fmt.Sprintf(`# Written by make dev (cmd/demo dev). In your shell: . %s
export VAULT_ADDR='%s'
export VAULT_TOKEN='%s'
export PATH='%s':"$PATH"
export FAKE_URL='%s'
export DEMO_PASSWORD_FILE='%s'
export DEMO_CLIENT_SECRET_FILE='%s'
export PLUGIN_VERSION='%s'
export DEV_STOP='%s'
`, o.devEnv, s.Addr, s.Client.Token(), filepath.Dir(vaulttest.VaultBin(t)), f.URL,
		filepath.Join(work, "demo-password"), filepath.Join(work, "demo-client-secret"), o.pluginVersion, stop)
	if err := os.WriteFile(o.devEnv+".tmp", []byte(env), 0o600); err != nil {
		t.Fatalf("%v", err)
	}
	if err := os.Rename(o.devEnv+".tmp", o.devEnv); err != nil {
		t.Fatalf("%v", err)
	}
	t.keep()

	step("Vault and the fake iAdvize keep running")
	fmt.Printf("    Vault        %s  (pid %d, log %s)\n", s.Addr, s.Pid(), s.LogPath)
	fmt.Printf("                 %s %s is registered; no mount is enabled yet\n", vaulttest.PluginName, o.pluginVersion)
	fmt.Printf("    fake iAdvize %s  (pid %d, log %s)\n", f.URL, f.Pid(), f.LogPath)
	fmt.Printf("                 user '%s' and client '%s', secrets in %s\n", demoUser, demoClient, work)
	fmt.Println()
	fmt.Printf("    In your shell:   . %s\n", o.devEnv)
	fmt.Println(`    then follow the README's Quickstart. To stop both servers: "$DEV_STOP"`)
	return 0
}

// stopPrevious stops the servers of a previous make dev named in devEnv, which
// would be lost otherwise, and removes devEnv.
func stopPrevious(devEnv string) {
	b, err := os.ReadFile(devEnv)
	if err != nil {
		return
	}
	m := regexp.MustCompile(`(?m)^export DEV_STOP='(.*)'$`).FindSubmatch(b)
	if m != nil {
		if st, err := os.Stat(string(m[1])); err == nil && st.Mode()&0o100 != 0 {
			step("Stopping the servers of the previous make dev (%s)", m[1])
			cmd := exec.Command(string(m[1]))
			cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
			_ = cmd.Run()
		}
	}
	os.Remove(devEnv)
}

// keeper is the TB of make dev: the servers' cleanups (and the removal of the
// work directory) run if the program fails or is interrupted, and are dropped
// once keep is called, so the servers outlive the program.
type keeper struct {
	*vaulttest.Program
	work string

	mu   sync.Mutex
	fns  []func()
	kept bool
}

func newKeeper(p *vaulttest.Program, work string) *keeper {
	k := &keeper{Program: p, work: work}
	p.Cleanup(k.cleanup)
	return k
}

// Cleanup registers f to run unless keep is called.
func (k *keeper) Cleanup(f func()) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.fns = append(k.fns, f)
}

// TempDir returns a new directory inside the work directory.
func (k *keeper) TempDir() string {
	dir, err := os.MkdirTemp(k.work, "")
	if err != nil {
		k.Fatalf("%v", err)
	}
	return dir
}

func (k *keeper) keep() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.kept = true
}

func (k *keeper) cleanup() {
	k.mu.Lock()
	fns, kept := k.fns, k.kept
	k.fns = nil
	k.mu.Unlock()
	if kept {
		return
	}
	for i := len(fns) - 1; i >= 0; i-- {
		fns[i]()
	}
	os.RemoveAll(k.work)
}

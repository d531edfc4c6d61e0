package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

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

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/vaulttest"
)

// cliSecret is the part of `vault read -format=json` the tests look at.
type cliSecret struct {
	LeaseID       string `json:"lease_id"`
	LeaseDuration int    `json:"lease_duration"`
	Renewable     bool   `json:"renewable"`
	Data          struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		ExpireTime  string `json:"expire_time"`
	} `json:"data"`
}

// TestCLIReadTwiceOneLogin: two `vault read iadvize/creds/<role>` with the CLI
// log in once, return the same token, with a lease close to the token's life less
// the 30 s margin, not renewable (README "creds and static-creds").
func TestCLIReadTwiceOneLogin(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakeiadvize.Options{}, vaulttest.Options{})
	e.configure(nil)
	e.addRole("app", "svc-app")

	var reads []cliSecret
	for i := 0; i < 2; i++ {
		out, stderr, err := e.cli(vaulttest.RootToken, "read", "-format=json", "iadvize/creds/app")
		if err != nil {
			e.fatalf("vault read #%d: %v\nstderr: %s\nstdout: %s", i+1, err, stderr, out)
		}
		var s cliSecret
		if err := json.Unmarshal([]byte(out), &s); err != nil {
			e.fatalf("vault read #%d: not JSON (%v): %s", i+1, err, out)
		}
		e.logf("read #%d: lease_id=%s lease_duration=%ds renewable=%v token_type=%s expire_time=%s token=%s",
			i+1, s.LeaseID, s.LeaseDuration, s.Renewable, s.Data.TokenType, s.Data.ExpireTime, mask(s.Data.AccessToken))
		reads = append(reads, s)
	}

	if got := e.up.Stats().LoginAttempts; got != 1 {
		t.Errorf("login attempts upstream = %d, want 1", got)
	}
	for i, s := range reads {
		if s.Data.AccessToken == "" || !e.up.wasIssued(s.Data.AccessToken) {
			t.Errorf("read #%d: access_token %s is not one the fake issued", i+1, mask(s.Data.AccessToken))
		}
		if s.Data.AccessToken != reads[0].Data.AccessToken {
			t.Errorf("read #%d returned another token than read #1", i+1)
		}
		if s.LeaseID == "" {
			t.Errorf("read #%d: no lease", i+1)
		}
		want := int((24*time.Hour - 30*time.Second).Seconds())
		if d := s.LeaseDuration - want; d > 0 || d < -60 {
			t.Errorf("read #%d: lease_duration = %ds, want within 60 s below %ds", i+1, s.LeaseDuration, want)
		}
		if s.Renewable {
			t.Errorf("read #%d: lease is renewable; the token cannot be extended", i+1)
		}
		exp, err := time.Parse(time.RFC3339, s.Data.ExpireTime)
		if err != nil {
			t.Errorf("read #%d: expire_time %q is not RFC 3339: %v", i+1, s.Data.ExpireTime, err)
		} else if d := time.Until(exp) - 24*time.Hour; d > 5*time.Second || d < -5*time.Minute {
			t.Errorf("read #%d: expire_time %s is not about 24 h from now", i+1, s.Data.ExpireTime)
		}
	}
}

// TestConcurrentColdReadsOneLogin: 300 concurrent HTTP reads of a role that has
// no token yet share one login and all get the same token (README "When the plugin logs in"). The fake
// holds the login until every request has been sent to Vault, so all 300 are in
// flight while it runs.
func TestConcurrentColdReadsOneLogin(t *testing.T) {
	t.Parallel()
	const readers = 300
	e := newEnv(t, fakeiadvize.Options{}, vaulttest.Options{})
	// The login is held on purpose: give it room.
	e.configure(map[string]any{"request_timeout": "120s"})
	e.addRole("cold", "svc-cold")

	client, err := e.vault.Client.Clone()
	if err != nil {
		t.Fatal(err)
	}
	client.SetToken(vaulttest.RootToken)
	client.SetMaxRetries(0)
	client.SetClientTimeout(3 * time.Minute)

	e.up.holdLogins()
	var wrote atomic.Int64
	trace := &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { wrote.Add(1) }}
	ctx := httptrace.WithClientTrace(context.Background(), trace)

	start := make(chan struct{})
	tokens := make([]string, readers)
	errs := make([]error, readers)
	var wg sync.WaitGroup
	for i := 0; i < readers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			s, err := client.Logical().ReadWithContext(ctx, "iadvize/creds/cold")
			if err != nil {
				errs[i] = err
				return
			}
			tokens[i] = accessToken(s)
		}()
	}
	close(start)
	// Every read has reached Vault and the (one) login is waiting at the gate.
	e.waitFor(2*time.Minute, fmt.Sprintf("%d requests sent and a login held", readers), func() error {
		if n := wrote.Load(); n < readers || e.up.heldLogins() == 0 {
			return fmt.Errorf("%d/%d requests sent, %d logins held", n, readers, e.up.heldLogins())
		}
		return nil
	})
	e.up.openGate()
	wg.Wait()

	failed := 0
	for i, err := range errs {
		if err != nil {
			failed++
			if failed <= 3 {
				e.errorf("read #%d: %v", i, brief(err))
			}
		}
	}
	if failed > 0 {
		t.Errorf("%d of %d reads failed", failed, readers)
	}
	distinct := map[string]int{}
	for _, tok := range tokens {
		if tok != "" {
			distinct[tok]++
		}
	}
	st := e.up.Stats()
	e.logf("%d reads: %d distinct tokens, %d login attempts upstream, %d logins reached the fake while held",
		readers, len(distinct), st.LoginAttempts, e.up.heldLogins())
	if st.LoginAttempts != 1 {
		t.Errorf("login attempts upstream = %d, want 1", st.LoginAttempts)
	}
	if len(distinct) != 1 {
		t.Errorf("%d distinct tokens served, want 1", len(distinct))
	}
	for tok := range distinct {
		if !e.up.wasIssued(tok) {
			t.Errorf("served token %s is not one the fake issued", mask(tok))
		}
	}
}

// TestPolicyLimitsToOneRole: a token whose policy allows only read on
// iadvize/creds/a reads it, and is denied creds/b and roles/a (403).
func TestPolicyLimitsToOneRole(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakeiadvize.Options{}, vaulttest.Options{})
	e.configure(nil)
	e.addRole("a", "svc-a")
	e.addRole("b", "svc-b")

	tok := e.tokenWithPolicy("creds-a", `path "iadvize/creds/a" { capabilities = ["read"] }`, true)
	client, err := e.vault.Client.Clone()
	if err != nil {
		t.Fatal(err)
	}
	client.SetToken(tok)
	client.SetMaxRetries(0)

	s, err := client.Logical().Read("iadvize/creds/a")
	if err != nil {
		e.fatalf("read creds/a with the creds-a policy: %v", brief(err))
	}
	if got := accessToken(s); !e.up.wasIssued(got) {
		t.Errorf("creds/a: access_token %s is not one the fake issued", mask(got))
	}

	for _, denied := range []string{"iadvize/creds/b", "iadvize/roles/a", "iadvize/static-creds/a", "iadvize/status/a", "iadvize/config"} {
		s, err := client.Logical().Read(denied)
		if code := statusCode(err); code != 403 {
			e.errorf("read %s with the creds-a policy: status %d (%s, data %v), want 403", denied, code, brief(err), s)
		}
	}
	for _, denied := range []string{"iadvize/roles/a", "iadvize/rotate-role/a"} {
		_, err := client.Logical().Write(denied, map[string]any{"username": "x"})
		if code := statusCode(err); code != 403 {
			e.errorf("write %s with the creds-a policy: status %d (%s), want 403", denied, code, brief(err))
		}
	}
	// The denied read of creds/b logged nobody in.
	if st := e.up.Stats(); st.LoginAttempts != 1 || st.UserAttempts["svc-b"] != 0 {
		t.Errorf("logins upstream: %d attempts, per user %v; want one, for svc-a", st.LoginAttempts, st.UserAttempts)
	}
}

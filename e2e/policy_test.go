package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/vaulttest"
)

// Upstream answers 429 with Retry-After: reads in between are answered 429 by
// the plugin without reaching upstream; after the wait, one login serves them.
func TestUpstream429FlowThroughVault(t *testing.T) {
	e := newEnv(t, fakeiadvize.Options{}, vaulttest.Options{})
	e.configure(nil)
	e.addRole("app", "svc@example.com")
	if err := e.up.InjectFault(fakeiadvize.Fault{Mode: fakeiadvize.FaultRateLimit, Count: 1, RetryAfter: 3}); err != nil {
		t.Fatal(err)
	}
	_, err := e.vault.Client.Logical().Read("iadvize/creds/app")
	if statusCode(err) != http.StatusTooManyRequests || !strings.Contains(err.Error(), `role "app"`) ||
		!strings.Contains(err.Error(), "next login attempt") {
		e.fatalf("first read: %s, want a 429 naming the role and the next attempt", brief(err))
	}
	for i := 0; i < 20; i++ {
		if _, err := e.vault.Client.Logical().Read("iadvize/creds/app"); statusCode(err) != http.StatusTooManyRequests {
			e.fatalf("read during Retry-After: %s, want 429", brief(err))
		}
	}
	if n := e.up.Stats().LoginAttempts; n != 1 {
		e.fatalf("login attempts during Retry-After = %d, want 1", n)
	}
	e.waitFor(30*time.Second, "the read after Retry-After", func() error {
		_, err := e.vault.Client.Logical().Read("iadvize/creds/app")
		return err
	})
	if st := e.up.Stats(); st.LoginAttempts != 2 || st.LoginSuccesses != 1 {
		e.fatalf("attempts=%d successes=%d, want 2 and 1", st.LoginAttempts, st.LoginSuccesses)
	}
}

// A wrong password costs one login attempt, however many reads follow; status
// says why; the right password recovers on the next read.
func TestRejectedCredentialsFlowThroughVault(t *testing.T) {
	e := newEnv(t, fakeiadvize.Options{}, vaulttest.Options{})
	e.configure(nil)
	e.addRole("app", "svc@example.com")
	wrong := distinctive("wrong-pw")
	e.secrets.add(wrong)
	e.write("iadvize/roles/app", map[string]any{"password": wrong})

	for i := 0; i < 30; i++ {
		_, err := e.vault.Client.Logical().Read("iadvize/creds/app")
		if statusCode(err) != http.StatusBadGateway || !strings.Contains(err.Error(), "rewritten") {
			e.fatalf("read %d with a wrong password: %s, want a 502 saying to rewrite the credentials", i, brief(err))
		}
	}
	if n := e.up.Stats().LoginAttempts; n != 1 {
		e.fatalf("login attempts = %d for 30 reads with a wrong password, want 1", n)
	}
	status := e.read("iadvize/status/app")
	if status.Data["credentials_rejected"] != true || status.Data["last_outcome"] != "credentials_rejected" {
		e.fatalf("status = %v, want credentials_rejected", status.Data)
	}

	right := distinctive("right-pw")
	e.secrets.add(right)
	e.up.AddUser("svc@example.com", right)
	e.write("iadvize/roles/app", map[string]any{"password": right})
	if tok := accessToken(e.read("iadvize/creds/app")); !e.up.wasIssued(tok) {
		e.fatalf("after the right password: not a token of the fake")
	}
	if st := e.up.Stats(); st.LoginAttempts != 2 || st.LoginSuccesses != 1 {
		e.fatalf("attempts=%d successes=%d, want 2 and 1", st.LoginAttempts, st.LoginSuccesses)
	}
}

// verify reports a token revoked upstream as invalid, drops it so the next read
// logs in, and never reaches upstream twice for the same answer within 5 s.
func TestVerifyFlowThroughVault(t *testing.T) {
	e := newEnv(t, fakeiadvize.Options{}, vaulttest.Options{})
	e.configure(nil)
	e.addRole("app", "svc@example.com")
	first := accessToken(e.read("iadvize/creds/app"))

	e.up.RevokeAll()
	v := e.read("iadvize/verify/app")
	if v.Data["authenticated"] != false || v.Data["cached"] != false {
		e.fatalf("verify of a revoked token = %v, want authenticated false from upstream", v.Data)
	}
	again := e.read("iadvize/verify/app")
	if again.Data["authenticated"] != false || again.Data["cached"] != true {
		e.fatalf("second verify within 5 s = %v, want the last answer, cached", again.Data)
	}
	if n := e.up.Stats().VerifyCalls; n != 1 {
		e.fatalf("verify calls upstream = %d, want 1", n)
	}
	second := accessToken(e.read("iadvize/creds/app"))
	if second == first || !e.up.wasIssued(second) {
		e.fatalf("the read after verify dropped the token did not log in anew")
	}
	if v := e.read("iadvize/verify/app"); v.Data["authenticated"] != true {
		e.fatalf("verify of the new token = %v, want true", v.Data)
	}
	if st := e.up.Stats(); st.LoginSuccesses != 2 || st.VerifyCalls != 2 {
		e.fatalf("logins=%d verify calls=%d, want 2 and 2", st.LoginSuccesses, st.VerifyCalls)
	}
}

// 130 roles of distinct users read cold at once, against an upstream that
// enforces 100 logins a minute per IP: the plugin sends at most 100 in any
// minute, upstream never answers 429, the rest are told when to retry, and all
// are served within two minutes.
func TestBurstOf130ColdRolesThroughVault(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	e := newEnv(t, fakeiadvize.Options{}, vaulttest.Options{})
	e.configure(nil)
	const roles = 130
	for i := 0; i < roles; i++ {
		e.addRole(fmt.Sprintf("r%03d", i), fmt.Sprintf("user%03d@example.com", i))
	}

	paths := make([]string, roles)
	for i := range paths {
		paths[i] = fmt.Sprintf("iadvize/creds/r%03d", i)
	}
	start := time.Now()
	pending := e.coldReads(paths)
	if len(pending) != roles-100 {
		e.fatalf("%d cold reads were refused, want %d (the mount's 100 a minute)", len(pending), roles-100)
	}
	e.waitServed(2*time.Minute-time.Since(start), pending)
	st := e.up.Stats()
	if st.RateLimited != 0 {
		e.fatalf("upstream answered %d logins with 429", st.RateLimited)
	}
	if n := e.up.MaxAttemptsInWindow(time.Minute); n > 100 {
		e.fatalf("%d logins in one minute, want at most 100", n)
	}
	if st.LoginSuccesses != roles {
		e.fatalf("logins = %d, want %d", st.LoginSuccesses, roles)
	}
	e.logf("130 roles served in %s", time.Since(start).Round(time.Second))
}

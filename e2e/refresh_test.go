package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/vaulttest"
)

// Two mounts of the plugin (one plugin process, one source IP) over one upstream
// that enforces iAdvize's limits (100 logins a minute per IP, 10 per user), 75
// cold roles each: together they send at most 100 logins in any minute, upstream
// never answers 429, and every role is served within two minutes.
func TestTwoMountsShareTheUpstreamBudget(t *testing.T) {
	e := newEnv(t, fakeiadvize.Options{}, vaulttest.Options{})
	e.vault.Mount("iadvize-us")
	mounts := []string{"iadvize", "iadvize-us"}
	const perMount = 75
	var paths []string // creds/ of every role
	for _, m := range mounts {
		e.configureMount(m, nil)
		for i := 0; i < perMount; i++ {
			name := fmt.Sprintf("r%02d", i)
			e.addRoleAt(m, name, fmt.Sprintf("%s-user%02d@example.com", m, i))
			paths = append(paths, m+"/creds/"+name)
		}
	}

	start := time.Now()
	pending := e.coldReads(paths)
	if len(pending) != len(paths)-100 {
		e.fatalf("%d of %d cold reads over two mounts were refused, want %d (100 a minute to the host, all mounts together)",
			len(pending), len(paths), len(paths)-100)
	}
	e.waitServed(2*time.Minute-time.Since(start), pending)
	st := e.up.Stats()
	if st.RateLimited != 0 || st.InjectedRateLimited != 0 {
		e.fatalf("upstream answered %d logins with 429", st.RateLimited+st.InjectedRateLimited)
	}
	if n := e.up.MaxAttemptsInWindow(time.Minute); n > 100 {
		e.fatalf("%d logins in one minute from the two mounts, want at most 100", n)
	}
	if st.LoginSuccesses != len(paths) {
		e.fatalf("logins = %d, want %d", st.LoginSuccesses, len(paths))
	}
	e.logf("%d roles over two mounts served in %s", len(paths), time.Since(start).Round(time.Second))
}

// A read while the token's refresh takes 4 s (the fake holds the login) answers
// in under a second with the cached token, without a warning; the first read
// after the login gets the new token.
func TestReadDuringSlowLoginGetsCachedTokenAtOnce(t *testing.T) {
	// 30 s tokens: refresh window 15 s (half the life), skew margin 3 s, so the
	// token is in its window, and usable, from 15 s to 27 s after its login.
	const lifetime = 30 * time.Second
	e := newEnv(t, fakeiadvize.Options{TokenLifetime: lifetime}, vaulttest.Options{})
	e.configure(map[string]any{"refresh_before": "1h", "request_timeout": "10s"})
	e.addRole("app", "svc-slow@example.com")
	issued := time.Now()
	old := accessToken(e.read("iadvize/creds/app"))
	if !e.up.wasIssued(old) {
		e.fatalf("the first read did not log in")
	}

	// The next login, whoever starts it (a read, or the background refresh from
	// 12 s on), is held until released.
	if err := e.up.InjectFault(fakeiadvize.Fault{Mode: fakeiadvize.FaultHang, Count: 1}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(issued.Add(lifetime/2 + time.Second))) // into the refresh window
	readFast := func(what string) {
		t.Helper()
		began := time.Now()
		s, err := e.vault.Client.Logical().Read("iadvize/creds/app")
		took := time.Since(began)
		if err != nil {
			e.fatalf("%s: %s", what, brief(err))
		}
		if accessToken(s) != old {
			e.fatalf("%s: got another token than the cached one", what)
		}
		if len(s.Warnings) != 0 {
			e.fatalf("%s: warnings %q while the login is under way", what, s.Warnings)
		}
		if took >= time.Second {
			e.fatalf("%s took %s, want under 1 s: it waited on the login", what, took.Round(time.Millisecond))
		}
		e.logf("%s: cached token in %s", what, took.Round(time.Millisecond))
	}
	readFast("the first read in the refresh window")
	e.waitFor(5*time.Second, "the login held by the fake", func() error {
		if h := e.up.Stats().Hanging; h != 1 {
			return fmt.Errorf("%d logins held", h)
		}
		return nil
	})
	held := time.Now()
	readFast("a read during the login")
	time.Sleep(time.Until(held.Add(2 * time.Second)))
	readFast("a read 2 s into the login")

	time.Sleep(time.Until(held.Add(4 * time.Second))) // the login takes 4 s
	e.up.ClearFault()
	e.waitFor(5*time.Second, "the new token", func() error {
		s, err := e.vault.Client.Logical().Read("iadvize/creds/app")
		if err != nil {
			return fmt.Errorf("read: %s", brief(err))
		}
		if tok := accessToken(s); tok == old || !e.up.wasIssued(tok) {
			return fmt.Errorf("still the old token")
		}
		return nil
	})
	if st := e.up.Stats(); st.LoginAttempts != 2 {
		e.fatalf("login attempts = %d, want 2 (the reads in the window shared one)", st.LoginAttempts)
	}
}

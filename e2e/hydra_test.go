package e2e

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/hydratest"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/vaulttest"
)

// TestHydra runs client-credentials roles against a real OAuth2 server, Ory Hydra,
// through a real Vault: one mount per client_auth style, Hydra clients registered
// with client_secret_basic and client_secret_post, a secret holding + / = : (which
// Basic must form-encode, RFC 6749 §2.3.1), a scope, a wrong secret, and a token
// lifetime set by Hydra. A counting proxy in front of Hydra tells how many token
// requests reached it.
func TestHydra(t *testing.T) {
	hydratest.Bin(t) // skipped with -short; no binary is a failure (make test builds it)
	started := time.Now()
	e := &env{t: t, bin: needVault(t), secrets: &secrets{}}
	h := hydratest.Start(t)
	h.Redact = e.secrets.redact
	t.Logf("hydra ready after %s", h.StartTime.Round(time.Millisecond))
	p := h.NewProxy(t)
	e.vault = vaulttest.StartDev(t, vaulttest.Options{})
	e.vault.Client.SetMaxRetries(0) // a 5xx is an answer to check, not to retry
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("vault log (tail, redacted):\n%s", tail(e.secrets.redact(e.vault.Log()), 6000))
		}
	})
	t.Cleanup(func() { t.Logf("hydra e2e: %s in all", time.Since(started).Round(time.Millisecond)) })

	// A distinctive secret holding every character that form-encoding changes in
	// Basic credentials, and an alphanumeric one, which it leaves alone.
	special := "Sp3c+/=:" + strings.TrimPrefix(distinctive("x"), "x-") + "+/=:Z9"
	plain := "Alnum" + strings.TrimPrefix(distinctive("x"), "x-")
	e.secrets.add(special, plain)

	// mount enables the plugin at path with the token endpoint behind the
	// proxy, no verify endpoint and the given client_auth. refresh_before is
	// short so that no token of this test (7 min and more) is refreshed during it.
	mount := func(path, clientAuth string) {
		e.vault.Mount(path)
		if _, err := e.vault.Client.Logical().Write(path+"/config", map[string]any{
			"token_url":      p.TokenURL,
			"verify_url":     "",
			"refresh_before": "1m",
			"client_auth":    clientAuth,
		}); err != nil {
			e.fatalf("configuring %s with client_auth=%s: %s", path, clientAuth, brief(err))
		}
	}
	mount("hydra-urlenc", "basic_urlencoded")
	mount("hydra-post", "post")
	mount("hydra-basic", "basic")

	t.Run("client_secret_basic, secret with + / = :, client_auth=basic_urlencoded: served, Bearer, Hydra's lifetime", func(t *testing.T) {
		s := e.sub(t)
		h.CreateClient(t, hydratest.Client{ID: "cc-urlenc", Secret: special, AuthMethod: hydratest.AuthBasic,
			AccessTokenLifespan: 7 * time.Minute})
		s.write("hydra-urlenc/roles/app", ccRole("cc-urlenc", special, ""))
		before := time.Now()
		creds := s.read("hydra-urlenc/creds/app")
		after := time.Now()
		tok := s.issuedBy(h, creds, "cc-urlenc")
		if tt := creds.Data["token_type"]; tt != "Bearer" {
			s.errorf("token_type = %v, want Bearer (Hydra answers bearer)", tt)
		}
		// Hydra gives this client 7-minute tokens: expire_time is 7 min after the
		// login, the lease that less the 30 s skew margin.
		exp, err := time.Parse(time.RFC3339, fmt.Sprint(creds.Data["expire_time"]))
		if err != nil {
			s.fatalf("expire_time %v: %v", creds.Data["expire_time"], err)
		}
		if exp.Before(before.Add(7*time.Minute-3*time.Second)) || exp.After(after.Add(7*time.Minute+3*time.Second)) {
			s.errorf("expire_time %s is not 7 min after the read (%s)", exp.Format(time.RFC3339), before.Format(time.RFC3339))
		}
		if l := creds.LeaseDuration; l < 7*60-30-10 || l > 7*60-30 {
			s.errorf("lease = %d s, want about %d s (7 min less the 30 s skew margin)", l, 7*60-30)
		}
		if again := accessToken(s.read("hydra-urlenc/creds/app")); again != tok {
			s.errorf("second read: another token, want the cached one")
		}
		if n := p.Count("cc-urlenc"); n != 1 {
			s.errorf("token requests to Hydra = %d for two reads, want 1", n)
		}
	})

	t.Run("client_secret_post, client_auth=post: served", func(t *testing.T) {
		s := e.sub(t)
		h.CreateClient(t, hydratest.Client{ID: "cc-post", Secret: special, AuthMethod: hydratest.AuthPost})
		s.write("hydra-post/roles/app", ccRole("cc-post", special, ""))
		creds := s.read("hydra-post/creds/app")
		s.issuedBy(h, creds, "cc-post")
		if tt := creds.Data["token_type"]; tt != "Bearer" {
			s.errorf("token_type = %v, want Bearer", tt)
		}
		if n := p.Count("cc-post"); n != 1 {
			s.errorf("token requests to Hydra = %d, want 1", n)
		}
	})

	// Raw Basic (the default, which ICEYE-style servers decode: README, "Upstreams")
	// differs from Hydra's RFC 6749 decoding when the secret holds a character
	// that form-encoding changes: Hydra rejects it, and one request is all it
	// costs. With an alphanumeric secret the two agree.
	t.Run("client_secret_basic, secret with + / = :, client_auth=basic: Hydra rejects it, one request", func(t *testing.T) {
		s := e.sub(t)
		h.CreateClient(t, hydratest.Client{ID: "cc-raw", Secret: special, AuthMethod: hydratest.AuthBasic})
		s.write("hydra-basic/roles/special", ccRole("cc-raw", special, ""))
		for i := 0; i < 5; i++ {
			_, err := e.vault.Client.Logical().Read("hydra-basic/creds/special")
			s.wantRejected(err, "special", i)
		}
		if n := p.Count("cc-raw"); n != 1 {
			s.errorf("token requests to Hydra = %d for 5 reads, want 1 (rejected credentials are not retried)", n)
		}
		s.wantStatusRejected("hydra-basic/status/special")
	})
	t.Run("client_secret_basic, alphanumeric secret, client_auth=basic: served", func(t *testing.T) {
		s := e.sub(t)
		h.CreateClient(t, hydratest.Client{ID: "cc-raw-plain", Secret: plain, AuthMethod: hydratest.AuthBasic})
		s.write("hydra-basic/roles/plain", ccRole("cc-raw-plain", plain, ""))
		creds := s.read("hydra-basic/creds/plain")
		s.issuedBy(h, creds, "cc-raw-plain")
		if tt := creds.Data["token_type"]; tt != "Bearer" {
			s.errorf("token_type = %v, want Bearer", tt)
		}
	})

	t.Run("a scope the client is allowed: served, and granted", func(t *testing.T) {
		s := e.sub(t)
		h.CreateClient(t, hydratest.Client{ID: "cc-scoped", Secret: special, AuthMethod: hydratest.AuthBasic,
			Scopes: []string{"api.read", "api.write"}})
		s.write("hydra-urlenc/roles/scoped", ccRole("cc-scoped", special, "api.read"))
		creds := s.read("hydra-urlenc/creds/scoped")
		tok := s.issuedBy(h, creds, "cc-scoped")
		if in := h.Introspect(t, tok); in.Scope != "api.read" {
			s.errorf("Hydra granted scope %q, want api.read", in.Scope)
		}
	})

	t.Run("a wrong secret: one request, credentials rejected, no retry", func(t *testing.T) {
		s := e.sub(t)
		h.CreateClient(t, hydratest.Client{ID: "cc-wrong", Secret: plain, AuthMethod: hydratest.AuthBasic})
		wrong := "Wrong" + strings.TrimPrefix(distinctive("x"), "x-")
		e.secrets.add(wrong)
		s.write("hydra-urlenc/roles/wrong", ccRole("cc-wrong", wrong, ""))
		for i := 0; i < 5; i++ {
			_, err := e.vault.Client.Logical().Read("hydra-urlenc/creds/wrong")
			s.wantRejected(err, "wrong", i)
		}
		if n := p.Count("cc-wrong"); n != 1 {
			s.errorf("token requests to Hydra = %d for 5 reads, want 1", n)
		}
		s.wantStatusRejected("hydra-urlenc/status/wrong")
		// Rewriting the credentials clears the verdict: the next read logs in.
		s.write("hydra-urlenc/roles/wrong", map[string]any{"client_secret": plain})
		s.issuedBy(h, s.read("hydra-urlenc/creds/wrong"), "cc-wrong")
		if n := p.Count("cc-wrong"); n != 2 {
			s.errorf("token requests to Hydra = %d, want 2", n)
		}
	})
}

// sub is the env for a subtest: the same servers and secrets, reporting to t.
func (e *env) sub(t *testing.T) *env {
	return &env{t: t, bin: e.bin, secrets: e.secrets, up: e.up, vault: e.vault}
}

// ccRole is a client-credentials role.
func ccRole(clientID, secret, scope string) map[string]any {
	r := map[string]any{"grant_type": "client_credentials", "client_id": clientID, "client_secret": secret}
	if scope != "" {
		r["scope"] = scope
	}
	return r
}

// issuedBy checks that a creds/ answer holds an access token that Hydra issued to
// clientID and still holds active; it returns the token (never printed).
func (e *env) issuedBy(h *hydratest.Server, creds *api.Secret, clientID string) string {
	e.t.Helper()
	tok := accessToken(creds)
	if tok == "" {
		e.fatalf("no access_token in the answer")
	}
	e.secrets.add(tok)
	if in := h.Introspect(e.t, tok); !in.Active || in.ClientID != clientID {
		e.fatalf("Hydra's introspection of the served token: active %v client %q, want an active token of %s", in.Active, in.ClientID, clientID)
	}
	return tok
}

// wantRejected checks that a creds/ read failed with a 502 naming the role and
// saying its credentials were rejected, with no secret in the message.
func (e *env) wantRejected(err error, role string, i int) {
	e.t.Helper()
	if err == nil {
		e.fatalf("read %d of %s: served, want credentials rejected", i, role)
	}
	if statusCode(err) != http.StatusBadGateway || !strings.Contains(err.Error(), fmt.Sprintf("role %q", role)) ||
		!strings.Contains(err.Error(), "rejected") {
		e.fatalf("read %d of %s: %s, want a 502 naming the role and saying the credentials were rejected", i, role, brief(err))
	}
	var re *api.ResponseError
	if errors.As(err, &re) {
		if f := e.secrets.found(strings.Join(re.Errors, "\n")); len(f) > 0 {
			e.fatalf("read %d of %s: the error holds a secret (%v)", i, role, f)
		}
	}
}

// wantStatusRejected checks that status/ says the credentials were rejected.
func (e *env) wantStatusRejected(path string) {
	e.t.Helper()
	st := e.read(path)
	if st.Data["credentials_rejected"] != true || st.Data["last_outcome"] != "credentials_rejected" {
		e.errorf("%s = %v, want credentials_rejected", path, st.Data)
	}
	if f := e.secrets.found(fmt.Sprint(st.Data)); len(f) > 0 {
		e.errorf("%s holds a secret (%v)", path, f)
	}
}

package hydratest

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// tokenAnswer is what the token endpoint said, without the token in any printable
// field.
type tokenAnswer struct {
	status    int
	tokenType string
	expiresIn float64
	scope     string
	errCode   string
	token     string // never printed
}

func requestToken(t *testing.T, tokenURL, authorization string, form url.Values) tokenAnswer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("token request: %v", err)
	}
	defer resp.Body.Close()
	var body struct {
		AccessToken string  `json:"access_token"`
		TokenType   string  `json:"token_type"`
		ExpiresIn   float64 `json:"expires_in"`
		Scope       string  `json:"scope"`
		Error       string  `json:"error"`
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err := json.Unmarshal(b, &body); err != nil {
		t.Fatalf("token answer (HTTP %d) is not JSON", resp.StatusCode)
	}
	return tokenAnswer{resp.StatusCode, body.TokenType, body.ExpiresIn, body.Scope, body.Error, body.AccessToken}
}

// The facts about Hydra that the end-to-end suite and the README rely on, checked
// against Hydra itself with hand-built requests: which client authentication it
// accepts for a secret that needs form-encoding, the token type it answers, the
// per-client lifetime, scopes, and the counting proxy.
func TestHydraFacts(t *testing.T) {
	h := Start(t)
	t.Logf("hydra ready after %s", h.StartTime.Round(time.Millisecond))
	p := h.NewProxy(t)

	const special = "s3cr/t+K3y=:x9Q"
	const plain = "Alnum0secret9Z"
	h.CreateClient(t, Client{ID: "basic-special", Secret: special, AuthMethod: AuthBasic,
		Scopes: []string{"read", "write"}, AccessTokenLifespan: 7 * time.Minute})
	h.CreateClient(t, Client{ID: "basic-plain", Secret: plain, AuthMethod: AuthBasic})
	h.CreateClient(t, Client{ID: "post-special", Secret: special, AuthMethod: AuthPost})
	cc := url.Values{"grant_type": {"client_credentials"}}

	t.Run("form-encoded Basic with + / = : is accepted, token_type bearer, client lifespan", func(t *testing.T) {
		a := requestToken(t, p.TokenURL, BasicFormEncoded("basic-special", special), cc)
		if a.status != http.StatusOK || a.token == "" {
			t.Fatalf("HTTP %d error %q, want a token", a.status, a.errCode)
		}
		if a.tokenType != "bearer" {
			t.Errorf("token_type = %q, want Hydra's lower-case bearer", a.tokenType)
		}
		if a.expiresIn < 7*60-5 || a.expiresIn > 7*60 {
			t.Errorf("expires_in = %v, want the client's 7m (420 s)", a.expiresIn)
		}
		in := h.Introspect(t, a.token)
		if !in.Active || in.ClientID != "basic-special" || in.Scope != "" {
			t.Errorf("introspection = active %v client %q scope %q, want active, basic-special, no scope", in.Active, in.ClientID, in.Scope)
		}
	})
	t.Run("raw Basic with + / = : is rejected", func(t *testing.T) {
		a := requestToken(t, p.TokenURL, BasicRaw("basic-special", special), cc)
		if a.status != http.StatusUnauthorized || a.errCode != "invalid_client" || a.token != "" {
			t.Fatalf("HTTP %d error %q, want 401 invalid_client", a.status, a.errCode)
		}
	})
	t.Run("raw and form-encoded Basic agree on an alphanumeric secret", func(t *testing.T) {
		for _, auth := range []string{BasicRaw("basic-plain", plain), BasicFormEncoded("basic-plain", plain)} {
			if a := requestToken(t, p.TokenURL, auth, cc); a.status != http.StatusOK || a.token == "" {
				t.Fatalf("HTTP %d error %q, want a token", a.status, a.errCode)
			}
		}
	})
	t.Run("client_secret_post client in the body is accepted; in Basic it is not", func(t *testing.T) {
		form := url.Values{"grant_type": {"client_credentials"}, "client_id": {"post-special"}, "client_secret": {special}}
		a := requestToken(t, p.TokenURL, "", form)
		if a.status != http.StatusOK || a.token == "" || a.tokenType != "bearer" {
			t.Fatalf("HTTP %d error %q token_type %q, want a bearer token", a.status, a.errCode, a.tokenType)
		}
		if a.expiresIn < 3600-5 || a.expiresIn > 3600 {
			t.Errorf("expires_in = %v, want Hydra's default 1h", a.expiresIn)
		}
		if a := requestToken(t, p.TokenURL, BasicFormEncoded("post-special", special), cc); a.status != http.StatusUnauthorized {
			t.Errorf("Basic for a client_secret_post client: HTTP %d, want 401", a.status)
		}
	})
	t.Run("an allowed scope is granted; another is refused", func(t *testing.T) {
		form := url.Values{"grant_type": {"client_credentials"}, "scope": {"read"}}
		a := requestToken(t, p.TokenURL, BasicFormEncoded("basic-special", special), form)
		if a.status != http.StatusOK || a.scope != "read" {
			t.Fatalf("HTTP %d error %q scope %q, want a token with scope read", a.status, a.errCode, a.scope)
		}
		if in := h.Introspect(t, a.token); !in.Active || in.Scope != "read" {
			t.Errorf("introspection: active %v scope %q, want read", in.Active, in.Scope)
		}
		form.Set("scope", "admin")
		if a := requestToken(t, p.TokenURL, BasicFormEncoded("basic-special", special), form); a.status == http.StatusOK {
			t.Errorf("scope admin, not allowed to the client: HTTP 200, want a refusal")
		}
	})
	t.Run("a wrong secret is invalid_client", func(t *testing.T) {
		a := requestToken(t, p.TokenURL, BasicFormEncoded("basic-plain", "wrong"+plain), cc)
		if a.status != http.StatusUnauthorized || a.errCode != "invalid_client" {
			t.Fatalf("HTTP %d error %q, want 401 invalid_client", a.status, a.errCode)
		}
	})
	t.Run("the proxy counted every token request by client", func(t *testing.T) {
		for id, want := range map[string]int{"basic-special": 4, "basic-plain": 3, "post-special": 2} {
			if n := p.Count(id); n != want {
				t.Errorf("requests of %s = %d, want %d (all: %+v)", id, n, want, p.Requests())
			}
		}
	})
}

// Package hydratest runs a real OAuth2 server, Ory Hydra, for the end-to-end tests:
// `hydra serve all --dev` with in-memory storage on loopback ports, clients
// registered through its admin API, and a counting reverse proxy in front of its
// public port so that a test can tell how many token requests reached it.
// scripts/hydra.sh builds and caches the binary.
package hydratest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/vaulttest"
)

// Version is the Hydra release scripts/hydra.sh builds by default.
const Version = "v2.3.0"

// Token endpoint authentication methods of a client (OpenID Connect Dynamic Client
// Registration 1.0 §2, token_endpoint_auth_method).
const (
	// AuthBasic: HTTP Basic with the client ID and secret form-encoded first
	// (RFC 6749 §2.3.1).
	AuthBasic = "client_secret_basic"
	// AuthPost: client_id and client_secret in the form body (RFC 6749 §2.3.1).
	AuthPost = "client_secret_post"
)

// Bin returns the Hydra binary: $HYDRA_BIN, else the one scripts/hydra.sh has
// cached. It skips the test under -short; with no binary it fails the test, saying
// how to get one (`make test` builds it).
func Bin(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test against a real Ory Hydra: skipped with -short")
	}
	if bin := os.Getenv("HYDRA_BIN"); bin != "" {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("HYDRA_BIN=%s: %v", bin, err)
		}
		return bin
	}
	out, err := exec.Command("bash", filepath.Join(vaulttest.RepoRoot(t), "scripts", "hydra.sh"), "--cached-only").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" {
		t.Fatalf("no Ory Hydra binary: run `make test`, or scripts/hydra.sh (which builds and caches %s) and set HYDRA_BIN to the path it prints", Version)
	}
	return strings.TrimSpace(string(out))
}

// Server is one running `hydra serve all --dev` with in-memory storage.
type Server struct {
	PublicURL string // http://127.0.0.1:PORT, the OAuth2 endpoints
	AdminURL  string // http://127.0.0.1:PORT, the admin API
	// TokenURL is the public token endpoint (RFC 6749 §3.2).
	TokenURL string
	// StartTime is how long the server took to answer ready.
	StartTime time.Duration
	// Redact, when set, is applied to the log printed when the test failed (for
	// the test's own secrets; Hydra's system secret is always withheld).
	Redact func(string) string

	logPath string
	secret  string // SECRETS_SYSTEM: never printed
	http    *http.Client
	cmd     *exec.Cmd
	done    chan struct{}
	mu      sync.Mutex
	stopped bool
}

// Start starts Hydra on two free loopback ports and waits (up to 90 s) until both
// its public and admin listeners answer /health/ready. It is stopped at cleanup;
// when the test failed, the tail of its log is printed then.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := Bin(t)
	publicPort, adminPort := vaulttest.FreePort(t), vaulttest.FreePort(t)
	s := &Server{
		PublicURL: fmt.Sprintf("http://127.0.0.1:%d", publicPort),
		AdminURL:  fmt.Sprintf("http://127.0.0.1:%d", adminPort),
		logPath:   filepath.Join(t.TempDir(), "hydra.log"),
		secret:    randomHex(24), // 48 characters: Hydra wants at least 16 (32 here, as advised)
		http:      &http.Client{Timeout: 10 * time.Second},
		done:      make(chan struct{}),
	}
	s.TokenURL = s.PublicURL + "/oauth2/token"
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatalf("%v", err)
	}
	cmd := exec.Command(bin, "serve", "all", "--dev", "--sqa-opt-out")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(),
		"DSN=memory",
		"SECRETS_SYSTEM="+s.secret,
		"SERVE_PUBLIC_HOST=127.0.0.1", fmt.Sprintf("SERVE_PUBLIC_PORT=%d", publicPort),
		"SERVE_ADMIN_HOST=127.0.0.1", fmt.Sprintf("SERVE_ADMIN_PORT=%d", adminPort),
		"URLS_SELF_ISSUER="+s.PublicURL,
		"LOG_LEVEL=info",
		"SQA_OPT_OUT=true",
		"HOME="+filepath.Dir(s.logPath),
	)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	started := time.Now()
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("starting hydra: %v", err)
	}
	s.cmd = cmd
	go func() { _ = cmd.Wait(); logf.Close(); close(s.done) }()
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			l := s.logTail(6000)
			if s.Redact != nil {
				l = s.Redact(l)
			}
			t.Logf("hydra log (tail):\n%s", l)
		}
	})

	deadline := time.Now().Add(90 * time.Second)
	for {
		select {
		case <-s.done:
			t.Fatalf("hydra exited at start; its log:\n%s", s.logTail(4000))
		default:
		}
		if s.ready(s.PublicURL) == nil && s.ready(s.AdminURL) == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hydra was not ready within 90s; its log:\n%s", s.logTail(4000))
		}
		time.Sleep(100 * time.Millisecond) // polling a starting process, not timing a test
	}
	s.StartTime = time.Since(started)
	return s
}

func (s *Server) ready(base string) error {
	resp, err := s.http.Get(base + "/health/ready")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s/health/ready: HTTP %d", base, resp.StatusCode)
	}
	return nil
}

// Stop ends the process (SIGTERM, then SIGKILL after 10 s). It is idempotent.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped || s.cmd == nil {
		return
	}
	s.stopped = true
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
	}
}

// Log returns Hydra's output so far (its system secret withheld).
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.logPath)
	return strings.ReplaceAll(string(b), s.secret, "[SECRETS_SYSTEM]")
}

func (s *Server) logTail(n int) string {
	l := s.Log()
	if len(l) > n {
		l = "..." + l[len(l)-n:]
	}
	return strings.TrimSpace(l)
}

// Client is an OAuth2 client to register with CreateClient.
type Client struct {
	ID     string
	Secret string
	// AuthMethod is AuthBasic or AuthPost.
	AuthMethod string
	// Scopes the client may ask for (none when empty).
	Scopes []string
	// AccessTokenLifespan, when non-zero, is the lifetime of the access tokens
	// Hydra issues to this client with the client-credentials grant (whole
	// seconds; Hydra's default is 1 h).
	AccessTokenLifespan time.Duration
}

// CreateClient registers a client for the client-credentials grant on the admin
// API (POST /admin/clients), failing the test on error. The secret is not printed.
func (s *Server) CreateClient(t testing.TB, c Client) {
	t.Helper()
	body := map[string]any{
		"client_id":                  c.ID,
		"client_secret":              c.Secret,
		"token_endpoint_auth_method": c.AuthMethod,
		"grant_types":                []string{"client_credentials"},
		"response_types":             []string{"token"},
		"scope":                      strings.Join(c.Scopes, " "),
	}
	if c.AccessTokenLifespan > 0 {
		body["client_credentials_grant_access_token_lifespan"] = fmt.Sprintf("%ds", int64(c.AccessTokenLifespan/time.Second))
	}
	b, _ := json.Marshal(body)
	resp, err := s.http.Post(s.AdminURL+"/admin/clients", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatalf("creating hydra client %q: %v", c.ID, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("creating hydra client %q: HTTP %d: %s", c.ID, resp.StatusCode,
			strings.ReplaceAll(string(out), c.Secret, "[SECRET]"))
	}
}

// Introspection is Hydra's answer to token introspection (RFC 7662 §2.2).
type Introspection struct {
	Active    bool   `json:"active"`
	ClientID  string `json:"client_id"`
	Scope     string `json:"scope"`
	ExpiresAt int64  `json:"exp"`
	IssuedAt  int64  `json:"iat"`
	TokenType string `json:"token_type"`
}

// Introspect asks the admin API (POST /admin/oauth2/introspect) about an access
// token, failing the test on error. The token is not printed.
func (s *Server) Introspect(t testing.TB, token string) Introspection {
	t.Helper()
	resp, err := s.http.PostForm(s.AdminURL+"/admin/oauth2/introspect", url.Values{"token": {token}})
	if err != nil {
		t.Fatalf("introspecting a token: %v", err)
	}
	defer resp.Body.Close()
	var in Introspection
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("introspecting a token: HTTP %d", resp.StatusCode)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&in); err != nil {
		t.Fatalf("introspecting a token: %v", err)
	}
	return in
}

// TokenRequest is one request to the token endpoint that went through a Proxy.
type TokenRequest struct {
	// ClientID is the client the request named: the user part of its Basic
	// credentials (form-decoded when it decodes) or its client_id form field.
	ClientID string
	// Status is Hydra's HTTP status.
	Status int
}

// Proxy is a reverse proxy on 127.0.0.1 in front of a Server's public port that
// records every request to the token endpoint.
type Proxy struct {
	// URL is the proxy's base URL; TokenURL its token endpoint.
	URL      string
	TokenURL string

	mu       sync.Mutex
	requests []TokenRequest
}

// NewProxy starts a counting proxy in front of s's public listener; it is closed
// at cleanup.
func (s *Server) NewProxy(t testing.TB) *Proxy {
	t.Helper()
	target, err := url.Parse(s.PublicURL)
	if err != nil {
		t.Fatalf("%v", err)
	}
	p := &Proxy{}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.URL.Path == "/oauth2/token" {
			p.record(resp.Request, resp.StatusCode)
		}
		return nil
	}
	rp.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
		if r.URL.Path == "/oauth2/token" {
			p.record(r, http.StatusBadGateway)
		}
		w.WriteHeader(http.StatusBadGateway)
	}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/oauth2/token" && r.Body != nil {
			// Read the form here (and hand Hydra the same bytes) to learn the client.
			b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
			r.Body.Close()
			if err != nil {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(b))
			r.ContentLength = int64(len(b))
			r = r.WithContext(context.WithValue(r.Context(), formKey{}, string(b)))
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	p.URL = ts.URL
	p.TokenURL = ts.URL + "/oauth2/token"
	return p
}

type formKey struct{}

func (p *Proxy) record(r *http.Request, status int) {
	id := ""
	if user, _, ok := r.BasicAuth(); ok {
		id = user
		if u, err := url.QueryUnescape(user); err == nil {
			id = u
		}
	} else if form, ok := r.Context().Value(formKey{}).(string); ok {
		if v, err := url.ParseQuery(form); err == nil {
			id = v.Get("client_id")
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.requests = append(p.requests, TokenRequest{ClientID: id, Status: status})
}

// Requests returns the token requests so far, in order.
func (p *Proxy) Requests() []TokenRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]TokenRequest(nil), p.requests...)
}

// Count is the number of token requests so far that named clientID.
func (p *Proxy) Count(clientID string) int {
	n := 0
	for _, r := range p.Requests() {
		if r.ClientID == clientID {
			n++
		}
	}
	return n
}

// BasicRaw is an Authorization header value with the client ID and secret as
// written (RFC 7617 §2), which is what some servers decode.
func BasicRaw(id, secret string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(id+":"+secret))
}

// BasicFormEncoded is an Authorization header value with the client ID and secret
// form-encoded first (RFC 6749 §2.3.1), which is what Hydra decodes.
func BasicFormEncoded(id, secret string) string {
	return BasicRaw(url.QueryEscape(id), url.QueryEscape(secret))
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

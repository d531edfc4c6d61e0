package iadvize

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeclock"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
)

// upstream is the fake iAdvize upstream (internal/fakeiadvize) behind an
// httptest server: the one fake upstream of the unit tests.
type upstream struct {
	*fakeiadvize.Server
	url string // base URL: the token endpoint is url+"/oauth2/token"
}

// startFakeIAdvize serves the fake iAdvize upstream on clock (nil: a clock of
// its own), with its own token and verify endpoints.
func startFakeIAdvize(t *testing.T, clock *fakeclock.Clock, opts fakeiadvize.Options) *upstream {
	t.Helper()
	if clock == nil {
		clock = fakeclock.New()
	}
	opts.Now = clock.Now
	fake := fakeiadvize.New(opts)
	ts := httptest.NewServer(fake)
	t.Cleanup(ts.Close)
	t.Cleanup(fake.Close) // runs first: releases any held request
	return &upstream{Server: fake, url: ts.URL}
}

// newUpstream starts the fake upstream with every request answered by handler.
func newUpstream(t *testing.T, handler http.HandlerFunc) *upstream {
	return newUpstreamOn(t, nil, handler)
}

// newUpstreamOn is newUpstream on clock, the time LoginTimes reports.
func newUpstreamOn(t *testing.T, clock *fakeclock.Clock, handler http.HandlerFunc) *upstream {
	t.Helper()
	u := startFakeIAdvize(t, clock, fakeiadvize.Options{})
	u.SetHandler(handler)
	return u
}

// setHandler makes handler answer every request from now on.
func (u *upstream) setHandler(handler http.HandlerFunc) { u.SetHandler(handler) }

// count is the number of requests the upstream received, on any path.
func (u *upstream) count() int64 {
	st := u.Stats()
	return int64(st.Handled + st.LoginAttempts + st.VerifyCalls)
}

// tokenURL is the upstream's token endpoint.
func (u *upstream) tokenURL() string { return u.url + "/oauth2/token" }

// wantCount fails the test unless the upstream received n requests in all;
// why, if not empty, follows the figures in the failure message.
func (u *upstream) wantCount(t *testing.T, n int64, why string) {
	t.Helper()
	if got := u.count(); got != n {
		t.Fatalf("upstream requests = %d, want %d%s", got, n, why)
	}
}

// issuing answers every login with a new token "tok-N" of the given lifetime.
func issuing(lifetime time.Duration) http.HandlerFunc {
	var n atomic.Int64
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"access_token":  "tok-" + itoa(n.Add(1)),
			"expires_in":    int(lifetime.Seconds()),
			"token_type":    "Bearer",
			"refresh_token": "none",
		})
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// newAppEnv is the usual start of a test: an upstream answering with handler,
// a mount over storage (nil: a new one) configured on it, and role "app"
// logging in as svc@example.com with password.
func newAppEnv(t *testing.T, storage logical.Storage, handler http.HandlerFunc, password string) (*testEnv, *upstream) {
	t.Helper()
	u := newUpstream(t, handler)
	e := newTestEnv(t, storage, nil)
	e.configure(u, nil)
	e.addRole("app", "svc@example.com", password)
	return e, u
}

// newFakeEnv is a mount configured on the fake upstream's own endpoints, both
// on one new fake clock (e.clock).
func newFakeEnv(t *testing.T, opts fakeiadvize.Options) (*testEnv, *upstream) {
	t.Helper()
	clock := fakeclock.New()
	fake := startFakeIAdvize(t, clock, opts)
	e := newTestEnv(t, nil, clock)
	e.configure(fake, nil)
	return e, fake
}

// newFakeAppEnv is newFakeEnv with role "app", logging in as svc@example.com
// with password, a user the fake knows.
func newFakeAppEnv(t *testing.T, password string) (*testEnv, *upstream) {
	t.Helper()
	e, fake := newFakeEnv(t, fakeiadvize.Options{})
	fake.AddUser("svc@example.com", password)
	e.addRole("app", "svc@example.com", password)
	return e, fake
}

// addFakeRoles adds n roles to e, named prefix-000 and on, each logging in as
// its own user of the fake, and returns their names.
func addFakeRoles(e *testEnv, fake *upstream, prefix string, n int) []string {
	names := make([]string, n)
	for i := range n {
		names[i] = fmt.Sprintf("%s-%03d", prefix, i)
		fake.AddUser(names[i]+"@example.com", "pw-"+names[i])
		e.addRole(names[i], names[i]+"@example.com", "pw-"+names[i])
	}
	return names
}

// failWith answers every request with status, content type and body.
func failWith(status int, contentType, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

// rateLimited answers 429, with the Retry-After header when retryAfter is set.
func rateLimited(retryAfter func() string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		if retryAfter != nil {
			w.Header().Set("Retry-After", retryAfter())
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTooManyRequests)
		io.WriteString(w, `{"error":"too_many_requests","error_description":"retry later"}`)
	}
}

// holdingUpstream issues 24-hour tokens until hold is called; from then on each
// login waits until the test answers them all with release. entered receives one
// value per login that arrived while held.
type holdingUpstream struct {
	*upstream
	entered chan struct{}
	issue   http.HandlerFunc // the normal answer: a new token

	mu     sync.Mutex
	gate   chan struct{} // nil: not holding
	answer http.HandlerFunc
}

func newHoldingUpstream(t *testing.T) *holdingUpstream {
	h := &holdingUpstream{entered: make(chan struct{}, 100), issue: issuing(24 * time.Hour)}
	h.upstream = newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		gate := h.gate
		h.mu.Unlock()
		if gate == nil {
			h.issue(w, r)
			return
		}
		h.entered <- struct{}{}
		select {
		case <-gate:
			h.mu.Lock()
			answer := h.answer
			h.mu.Unlock()
			answer(w, r)
		case <-r.Context().Done():
		}
	})
	t.Cleanup(func() { h.release(nil) }) // before the server closes (cleanups run last-in first-out)
	return h
}

func (h *holdingUpstream) hold() {
	h.mu.Lock()
	h.gate = make(chan struct{})
	h.mu.Unlock()
}

// release answers the held logins with answer (nil: 503) and stops holding.
func (h *holdingUpstream) release(answer http.HandlerFunc) {
	if answer == nil {
		answer = func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) }
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.gate != nil {
		h.answer = answer
		close(h.gate)
		h.gate = nil
	}
}

// waitEntered waits until a held login reached upstream.
func (h *holdingUpstream) waitEntered(t *testing.T) {
	t.Helper()
	select {
	case <-h.entered:
	case <-time.After(waitFor):
		t.Fatal("no login reached upstream")
	}
}

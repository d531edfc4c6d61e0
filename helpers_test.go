package iadvize

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeclock"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
)

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// testEnv is one mount of the plugin over in-memory storage, on a fake clock, with
// its log captured at trace level.
type testEnv struct {
	t       *testing.T
	b       *backend
	storage logical.Storage
	clock   *fakeclock.Clock
	logs    *syncBuffer
	system  *logical.StaticSystemView
}

// newTestEnv builds a backend. Pass a storage to share it with another backend
// (a restart, another node), or nil for a new one.
func newTestEnv(t *testing.T, storage logical.Storage, clock *fakeclock.Clock) *testEnv {
	t.Helper()
	return newTestEnvWith(t, storage, clock, nil)
}

// newTestEnvWith builds a backend that counts its logins in limits, shared with
// the other backends built with it (mounts of one plugin process); nil gives it
// budgets of its own. It is initialised as Vault does after mounting it.
func newTestEnvWith(t *testing.T, storage logical.Storage, clock *fakeclock.Clock, limits *Limits) *testEnv {
	t.Helper()
	if storage == nil {
		storage = &logical.InmemStorage{}
	}
	if clock == nil {
		clock = fakeclock.New()
	}
	logs := &syncBuffer{}
	system := &logical.StaticSystemView{DefaultLeaseTTLVal: 768 * time.Hour, MaxLeaseTTLVal: 768 * time.Hour}
	b := newBackend(clock.Now, limits)
	b.sleep = clock.Sleep
	conf := &logical.BackendConfig{
		Logger:      hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Trace}),
		System:      system,
		StorageView: storage,
	}
	if err := b.Setup(context.Background(), conf); err != nil {
		t.Fatal(err)
	}
	if err := b.Initialize(context.Background(), &logical.InitializationRequest{Storage: storage}); err != nil {
		t.Fatal(err)
	}
	return &testEnv{t: t, b: b, storage: storage, clock: clock, logs: logs, system: system}
}

// do runs one request against the backend.
func (e *testEnv) do(op logical.Operation, path string, data map[string]any) (*logical.Response, error) {
	e.t.Helper()
	return e.b.HandleRequest(context.Background(), &logical.Request{
		Operation: op,
		Path:      path,
		Data:      data,
		Storage:   e.storage,
	})
}

// write creates or updates, as Vault does: create when the existence check says
// the item is missing.
func (e *testEnv) write(path string, data map[string]any) (*logical.Response, error) {
	e.t.Helper()
	var op logical.Operation = logical.UpdateOperation
	req := &logical.Request{Operation: op, Path: path, Data: data, Storage: e.storage}
	if _, exists, err := e.b.HandleExistenceCheck(context.Background(), req); err == nil && !exists {
		op = logical.CreateOperation
	}
	return e.do(op, path, data)
}

// mustWrite writes and fails the test on any error.
func (e *testEnv) mustWrite(path string, data map[string]any) *logical.Response {
	e.t.Helper()
	resp, err := e.write(path, data)
	if err != nil || (resp != nil && resp.IsError()) {
		e.t.Fatalf("write %s: err=%v resp=%v", path, err, errText(respErr(resp)))
	}
	return resp
}

func (e *testEnv) read(path string) (*logical.Response, error) {
	e.t.Helper()
	return e.do(logical.ReadOperation, path, nil)
}

// mustRead reads and fails the test on any error.
func (e *testEnv) mustRead(path string) *logical.Response {
	e.t.Helper()
	resp, err := e.read(path)
	if err != nil || resp == nil || resp.IsError() {
		e.t.Fatalf("read %s: err=%v resp=%v", path, err, errText(respErr(resp)))
	}
	return resp
}

func respErr(resp *logical.Response) error {
	if resp == nil {
		return nil
	}
	return resp.Error()
}

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

// configure points the mount at an upstream.
func (e *testEnv) configure(u *upstream, extra map[string]any) {
	e.t.Helper()
	e.configureBase(u.url, extra)
}

// addRole writes a password-grant role.
func (e *testEnv) addRole(name, username, password string) {
	e.t.Helper()
	e.mustWrite("roles/"+name, map[string]any{"username": username, "password": password})
}

// settle waits until the logins that reads started on their own (inside the
// refresh window) have finished, so the test can judge their outcome.
func (e *testEnv) settle() {
	e.t.Helper()
	e.b.detachedWG.Wait()
}

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

// wantCount fails the test unless the upstream received n requests in all;
// why, if not empty, follows the figures in the failure message.
func (u *upstream) wantCount(t *testing.T, n int64, why string) {
	t.Helper()
	if got := u.count(); got != n {
		t.Fatalf("upstream requests = %d, want %d%s", got, n, why)
	}
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

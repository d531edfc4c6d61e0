package iadvize

import (
	"context"
	"testing"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeclock"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/logbuf"
)

// testEnv is one mount of the plugin over in-memory storage, on a fake clock, with
// its log captured at trace level.
type testEnv struct {
	t       *testing.T
	b       *backend
	storage logical.Storage
	clock   *fakeclock.Clock
	logs    *logbuf.Buffer
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
func newTestEnvWith(t *testing.T, storage logical.Storage, clock *fakeclock.Clock, limits *Budgets) *testEnv {
	t.Helper()
	if storage == nil {
		storage = &logical.InmemStorage{}
	}
	if clock == nil {
		clock = fakeclock.New()
	}
	logs := &logbuf.Buffer{}
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

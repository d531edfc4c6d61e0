package iadvize

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	mathrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeclock"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/logbuf"
)

// The helpers every test of the package shares: a mount on a fake clock and
// the usual ways to set one up, requests as Vault sends them, assertions on
// answers and on storage, and bounded waits for work done on goroutines. The
// fakes these run against (upstreams, storages) are in fakes_test.go.

// ---- a mount ----

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
	if clock == nil {
		clock = fakeclock.New()
	}
	system := &logical.StaticSystemView{DefaultLeaseTTLVal: 768 * time.Hour, MaxLeaseTTLVal: 768 * time.Hour}
	e := mountEnv(t, storage, clock.Now, system, limits)
	e.b.sleep = clock.Sleep
	e.clock, e.system = clock, system
	return e
}

// mountEnv is a mount over storage (nil: a new one) that reads the time from now
// and asks Vault's system view system, with budgets as newTestEnvWith's; it has
// no fake clock to move (e.clock) and sleeps in real time. Most tests want
// newTestEnv.
func mountEnv(t *testing.T, storage logical.Storage, now func() time.Time, system logical.SystemView, limits *Budgets) *testEnv {
	t.Helper()
	if storage == nil {
		storage = &logical.InmemStorage{}
	}
	logs := &logbuf.Buffer{}
	b := startBackend(t, now, &logical.BackendConfig{
		Logger:      hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Trace}),
		System:      system,
		StorageView: storage,
	}, limits)
	return &testEnv{t: t, b: b, storage: storage, logs: logs}
}

// startBackend builds a backend on conf as Vault does: set up, then initialised
// once mounted.
func startBackend(tb testing.TB, now func() time.Time, conf *logical.BackendConfig, limits *Budgets) *backend {
	tb.Helper()
	b := newBackend(now, limits)
	if err := b.Setup(context.Background(), conf); err != nil {
		tb.Fatal(err)
	}
	if err := b.Initialize(context.Background(), &logical.InitializationRequest{Storage: conf.StorageView}); err != nil {
		tb.Fatal(err)
	}
	return b
}

// benchMount is one mount on a fake clock, driven without a *testing.T.
type benchMount struct {
	b       *backend
	storage logical.Storage
	clock   *fakeclock.Clock
}

func newBenchMount(tb testing.TB, clock *fakeclock.Clock, storage logical.Storage) *benchMount {
	tb.Helper()
	b := startBackend(tb, clock.Now, &logical.BackendConfig{
		Logger:      hclog.NewNullLogger(),
		System:      &logical.StaticSystemView{DefaultLeaseTTLVal: 768 * time.Hour, MaxLeaseTTLVal: 768 * time.Hour},
		StorageView: storage,
	}, nil)
	b.sleep = clock.Sleep
	return &benchMount{b: b, storage: storage, clock: clock}
}

func (m *benchMount) do(op logical.Operation, path string, data map[string]any) (*logical.Response, error) {
	return m.b.HandleRequest(context.Background(), &logical.Request{Operation: op, Path: path, Data: data, Storage: m.storage})
}

func (m *benchMount) mustDo(tb testing.TB, op logical.Operation, path string, data map[string]any) {
	tb.Helper()
	if resp, err := m.do(op, path, data); err != nil || (resp != nil && resp.IsError()) {
		tb.Fatalf("%s %s: %v %v", op, path, err, respErr(resp))
	}
}

// configure points the mount at an upstream.
func (e *testEnv) configure(u *upstream, extra map[string]any) {
	e.t.Helper()
	e.configureBase(u.url, extra)
}

// configureBase points the mount at an upstream served at base (the fake's URL
// layout: /oauth2/token and /_authenticated).
func (e *testEnv) configureBase(base string, extra map[string]any) {
	e.t.Helper()
	data := map[string]any{"token_url": base + "/oauth2/token", "verify_url": base + "/_authenticated"}
	for k, v := range extra {
		data[k] = v
	}
	e.mustWrite("config", data)
}

// addRole writes a password-grant role.
func (e *testEnv) addRole(name, username, password string) {
	e.t.Helper()
	e.mustWrite("roles/"+name, map[string]any{"username": username, "password": password})
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

// newHeldAppEnv is a mount on u, an upstream that holds logins, with a request
// timeout long enough that a read waiting on upstream would show, and role "app"
// logging in as username with password (no token yet).
func newHeldAppEnv(t *testing.T, u *upstream, username, password string) *testEnv {
	t.Helper()
	e := newTestEnv(t, nil, nil)
	e.configure(u, map[string]any{"request_timeout": "60s"})
	e.addRole("app", username, password)
	return e
}

// newHoldingAppEnv is newHeldAppEnv on a holding upstream.
func newHoldingAppEnv(t *testing.T) (*testEnv, *holdingUpstream) {
	t.Helper()
	u := newHoldingUpstream(t)
	return newHeldAppEnv(t, u.upstream, "svc@example.com", "pw-window"), u
}

// newWindowEnv is newHoldingAppEnv with role "app"'s first token.
func newWindowEnv(t *testing.T) (e *testEnv, u *holdingUpstream, first string) {
	t.Helper()
	e, u = newHoldingAppEnv(t)
	return e, u, accessToken(t, e.mustRead("creds/app"))
}

// newFaultyAppEnv is newAppEnv (an upstream issuing day-long tokens, role "app"
// with password) over a faultyStorage, returned to switch faults on and off.
func newFaultyAppEnv(t *testing.T, password string) (*faultyStorage, *testEnv, *upstream) {
	t.Helper()
	s := newFaultyStorage()
	e, u := newAppEnv(t, s, issuing(24*time.Hour), password)
	return s, e, u
}

// twoHosts is two token hosts on one new fake clock, both knowing user
// app@example.com with one new password.
func twoHosts(t *testing.T) (clock *fakeclock.Clock, a, b *tokenHost, pw string) {
	t.Helper()
	clock = fakeclock.New()
	a, b = startTokenHost(t, clock), startTokenHost(t, clock)
	pw = secretValue("pw-app")
	a.AddUser("app@example.com", pw)
	b.AddUser("app@example.com", pw)
	return clock, a, b, pw
}

// putLoggedInRole stores password role name (user name@example.com), bound to
// the token host host (tokenOrigin), with the day-long token tok it logged in
// for at issued, as a node that served it left them: a start over this storage
// finds both.
func putLoggedInRole(tb testing.TB, s logical.Storage, host, name, tok string, issued time.Time) {
	tb.Helper()
	id := "id-" + name
	r := &role{GrantType: grantPassword, Username: name + "@example.com", Password: "pw-" + name,
		CredentialsID: id, TokenHost: host}
	st := &tokenState{AccessToken: tok, TokenType: "Bearer", IssuedAt: issued, Issuer: host,
		ExpiresAt: issued.Add(24 * time.Hour), LastAttempt: issued, LastOutcome: outcomeSuccess, CredentialsID: id}
	for key, v := range map[string]any{rolesStoragePrefix + name: r, tokensStoragePrefix + name: st} {
		entry, err := logical.StorageEntryJSON(key, v)
		if err != nil {
			tb.Fatal(err)
		}
		if err := s.Put(context.Background(), entry); err != nil {
			tb.Fatal(err)
		}
	}
}

// putLegacyRecords stores config, roles and token state as the version before
// bindings wrote them: config with every field, roles and token state with a
// "generation" and no credentials_id, token_host or issuer, and no
// bindings/legacy.
func putLegacyRecords(t *testing.T, s logical.Storage, cfg map[string]any, roles map[string]map[string]any, tokens map[string]map[string]any) {
	t.Helper()
	put := func(key string, v any) {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Put(context.Background(), &logical.StorageEntry{Key: key, Value: b}); err != nil {
			t.Fatal(err)
		}
	}
	if cfg != nil {
		put(configStoragePath, cfg)
	}
	for name, r := range roles {
		put(rolesStoragePrefix+name, r)
	}
	for name, st := range tokens {
		put(tokensStoragePrefix+name, st)
	}
}

// legacyConfig is a config record of the version before bindings, on h.
func legacyConfig(h *tokenHost) map[string]any {
	return map[string]any{"token_url": h.tokenURL(), "verify_url": h.verifyURL(),
		"refresh_before": int64(time.Hour), "user_logins_per_minute": 10, "logins_per_minute": 100,
		"request_timeout": int64(10 * time.Second), "ca_pem": ""}
}

// ---- values ----

// secretValue is a distinctive secret: letters, digits and '-', so that it
// reads the same raw and form-encoded.
func secretValue(prefix string) string {
	b := make([]byte, 10)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// randomText is n bytes of printable characters that a secret may hold
// (separators, escapable and base64 characters among them), the same for a seed:
// a value whose every 6-byte window differs, as a wrong file's bytes do.
func randomText(n int, seed uint64) string {
	return seededText("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/+=@%& -_.~!", n, seed)
}

// tokenText is an access token of n bytes in the alphabet of a JWT (base64url and
// dots), the same for a seed.
func tokenText(n int, seed uint64) string {
	return seededText("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.", n, seed)
}

// seededText is n bytes drawn from alphabet, the same for a seed.
func seededText(alphabet string, n int, seed uint64) string {
	r := mathrand.New(mathrand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[r.IntN(len(alphabet))]
	}
	return string(b)
}

// testCAPEM is a PEM certificate, from an httptest TLS server.
func testCAPEM(t *testing.T) string {
	t.Helper()
	srv := httptest.NewTLSServer(nil)
	defer srv.Close()
	cert := srv.Certificate()
	if _, err := x509.ParseCertificate(cert.Raw); err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}))
}

// ---- requests ----

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

// do2 runs a request that must not fail, and returns its answer.
func (e *testEnv) do2(op logical.Operation, path string) *logical.Response {
	e.t.Helper()
	resp, err := e.do(op, path, nil)
	if err != nil || (resp != nil && resp.IsError()) {
		e.t.Fatalf("%s %s: %v %v", op, path, err, respErr(resp))
	}
	return resp
}

// doRotate runs rotate-role/<name> as Vault does (an update: the path has no
// existence check).
func (e *testEnv) doRotate(name string) (*logical.Response, error) {
	e.t.Helper()
	return e.do(logical.UpdateOperation, "rotate-role/"+name, nil)
}

// report writes refused_token_sha256 to path (creds/<role> or
// static-creds/<role>).
func (e *testEnv) report(path, hash string) (*logical.Response, error) {
	e.t.Helper()
	return e.do(logical.UpdateOperation, path, map[string]any{fieldRefusedTokenSHA256: hash})
}

// mustReport reports and fails the test unless a token is served.
func (e *testEnv) mustReport(path, hash string) *logical.Response {
	e.t.Helper()
	resp, err := e.report(path, hash)
	if err != nil || resp == nil || resp.IsError() {
		e.t.Fatalf("report to %s: err=%v resp=%v", path, err, errText(respErr(resp)))
	}
	return resp
}

// runPeriodic runs the backend's periodic function as Vault's rollback manager
// does: a RollbackOperation on the empty path.
func (e *testEnv) runPeriodic() {
	e.t.Helper()
	if _, err := e.do(logical.RollbackOperation, "", nil); err != nil {
		e.t.Fatalf("periodic function: %v", err)
	}
}

// startRun runs the periodic function in the background.
func (e *testEnv) startRun() <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := e.b.HandleRequest(context.Background(), &logical.Request{
			Operation: logical.RollbackOperation, Storage: e.storage,
		})
		done <- err
	}()
	return done
}

// readAll reads each of paths on a goroutine of its own, all at once, and
// returns each read's answer and error once every read has returned.
func (e *testEnv) readAll(paths []string) ([]*logical.Response, []error) {
	resps, errs := make([]*logical.Response, len(paths)), make([]error, len(paths))
	var wg sync.WaitGroup
	for i, path := range paths {
		wg.Go(func() { resps[i], errs[i] = e.read(path) })
	}
	wg.Wait()
	return resps, errs
}

// readAsync reads path in a goroutine; the channel yields the answer.
func (e *testEnv) readAsync(path string) <-chan readResult {
	return e.doAsync(logical.ReadOperation, path, nil)
}

// doAsync runs one request in a goroutine; the channel yields the answer.
func (e *testEnv) doAsync(op logical.Operation, path string, data map[string]any) <-chan readResult {
	done := make(chan readResult, 1)
	go func() {
		resp, err := e.b.HandleRequest(context.Background(), &logical.Request{
			Operation: op, Path: path, Data: data, Storage: e.storage,
		})
		done <- readResult{resp, err}
	}()
	return done
}

type readResult struct {
	resp *logical.Response
	err  error
}

// refusedWrite writes data to path and fails the test unless the write is
// refused with a 400 whose message names names, storage left unchanged. It
// returns the message.
func (e *testEnv) refusedWrite(path string, data map[string]any, names string) string {
	t := e.t
	t.Helper()
	before := storageSnapshot(t, e.storage)
	resp, err := e.write(path, data)
	if err != nil {
		t.Fatalf("error %v, want a 400 response", err)
	}
	msg := errorMessage(resp, err)
	if msg == "" {
		t.Fatal("bad input accepted")
	}
	if !strings.Contains(msg, names) {
		t.Errorf("message %q does not name %q", msg, names)
	}
	assertStorageUnchanged(t, e.storage, before)
	return msg
}

// respErr is the error of an error response; nil for any other answer.
func respErr(resp *logical.Response) error {
	if resp == nil {
		return nil
	}
	return resp.Error()
}

// errorMessage is the message of a 400 answer, or "" when the answer is no 400.
func errorMessage(resp *logical.Response, err error) string {
	if err != nil || resp == nil || !resp.IsError() {
		return ""
	}
	return resp.Error().Error()
}

// ---- assertions ----

// expectCodedError fails unless err is a logical.CodedError with the given status
// whose message holds every one of want. It returns the message (which, by
// design, never holds a secret).
func expectCodedError(t *testing.T, err error, status int, want ...string) string {
	t.Helper()
	var ce logical.HTTPCodedError
	if !errors.As(err, &ce) {
		t.Fatalf("error = %v, want a coded error with status %d", err, status)
	}
	if ce.Code() != status {
		t.Fatalf("status = %d (%v), want %d", ce.Code(), err, status)
	}
	msg := err.Error()
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Fatalf("error %q does not contain %q", msg, w)
		}
	}
	return msg
}

// expectBadRequest fails unless the answer is a clean 400 (an error response)
// holding every one of want.
func expectBadRequest(t *testing.T, resp *logical.Response, err error, want ...string) {
	t.Helper()
	if err != nil {
		t.Fatalf("err = %v, want an error response (400)", err)
	}
	if resp == nil || !resp.IsError() {
		t.Fatalf("resp = %v, want an error response (400)", resp)
	}
	msg := resp.Error().Error()
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Fatalf("error %q does not contain %q", msg, w)
		}
	}
}

// accessToken is the access_token of a creds/ or static-creds/ answer.
func accessToken(t *testing.T, resp *logical.Response) string {
	t.Helper()
	tok, _ := resp.Data["access_token"].(string)
	if tok == "" {
		t.Fatal("answer holds no access_token")
	}
	return tok
}

// wantServed fails the test unless each of paths, read on e, answers with the
// access token tok; why says when (the message names the path, never a token).
func (e *testEnv) wantServed(tok, why string, paths ...string) {
	e.t.Helper()
	for _, path := range paths {
		if got := accessToken(e.t, e.mustRead(path)); got != tok {
			e.t.Fatalf("%s: %s served another token", why, path)
		}
	}
}

// wantWarning fails unless one of resp's warnings holds every one of want.
func wantWarning(t *testing.T, resp *logical.Response, want ...string) {
	t.Helper()
	if resp == nil {
		t.Fatalf("no response, want a warning holding %q", want)
	}
	for _, w := range resp.Warnings {
		all := true
		for _, s := range want {
			all = all && strings.Contains(w, s)
		}
		if all {
			return
		}
	}
	t.Fatalf("warnings %q: none holds all of %q", resp.Warnings, want)
}

// noWarnings fails unless resp carries no warning.
func noWarnings(t *testing.T, resp *logical.Response, what string) {
	t.Helper()
	if resp != nil && len(resp.Warnings) > 0 {
		t.Fatalf("%s: warnings %q, want none", what, resp.Warnings)
	}
}

const statusPassword = "pw-status-4b2e"

// statusOf reads status/<name> and checks that it never holds the role's
// password or any token the upstream handed out.
func statusOf(t *testing.T, e *testEnv, name string, tokens ...string) map[string]any {
	t.Helper()
	st := e.mustRead("status/" + name).Data
	dump := fmt.Sprint(st)
	for _, secret := range append([]string{statusPassword}, tokens...) {
		if secret != "" && strings.Contains(dump, secret) {
			t.Fatalf("status/%s holds a secret", name)
		}
	}
	for _, k := range []string{"access_token", "password", "token"} {
		if _, ok := st[k]; ok {
			t.Fatalf("status/%s has a %q field", name, k)
		}
	}
	return st
}

// expectStatus compares the named fields of a status answer.
func expectStatus(t *testing.T, st map[string]any, want map[string]any) {
	t.Helper()
	for k, w := range want {
		if got, ok := st[k]; !ok || got != w {
			t.Fatalf("status %s = %v (%T), want %v (%T)", k, got, got, w, w)
		}
	}
}

// rfc3339At formats t as the plugin's answers do.
func rfc3339At(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// storageSnapshot returns every key of s with its raw value.
func storageSnapshot(t *testing.T, s logical.Storage) map[string]string {
	t.Helper()
	keys, err := logical.CollectKeys(context.Background(), s)
	if err != nil {
		t.Fatalf("listing storage: %v", err)
	}
	snap := make(map[string]string, len(keys))
	for _, k := range keys {
		entry, err := s.Get(context.Background(), k)
		if err != nil {
			t.Fatalf("reading storage key %s: %v", k, err)
		}
		if entry != nil {
			snap[k] = string(entry.Value)
		}
	}
	return snap
}

// assertStorageUnchanged fails when s differs from before. It prints keys only:
// values hold secrets.
func assertStorageUnchanged(t *testing.T, s logical.Storage, before map[string]string) {
	t.Helper()
	after := storageSnapshot(t, s)
	if reflect.DeepEqual(before, after) {
		return
	}
	var changed []string
	for k, v := range before {
		if av, ok := after[k]; !ok || av != v {
			changed = append(changed, k)
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			changed = append(changed, k+" (new)")
		}
	}
	t.Errorf("stored state changed: keys %v", changed)
}

// storedToken decodes tokens/<name>; nil when absent.
func storedToken(t *testing.T, s logical.Storage, name string) *tokenState {
	return storedJSON[tokenState](t, s, tokensStoragePrefix+name)
}

// storedTokenState reads a role's persisted token state, bypassing the cache.
func storedTokenState(t *testing.T, e *testEnv, name string) *tokenState {
	t.Helper()
	if st := storedToken(t, e.storage, name); st != nil {
		return st
	}
	return &tokenState{}
}

// storedRole decodes roles/<name>; nil when absent.
func storedRole(t *testing.T, s logical.Storage, name string) *role {
	return storedJSON[role](t, s, rolesStoragePrefix+name)
}

// storedJSON decodes a storage entry; nil when absent.
func storedJSON[T any](t *testing.T, s logical.Storage, key string) *T {
	t.Helper()
	entry, err := s.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("reading %s: %v", key, err)
	}
	if entry == nil {
		return nil
	}
	v := new(T)
	if err := json.Unmarshal(entry.Value, v); err != nil {
		t.Fatalf("decoding %s: %v", key, err)
	}
	return v
}

// storageKeys lists every key under prefix, recursively.
func storageKeys(t *testing.T, s logical.Storage, prefix string) []string {
	t.Helper()
	keys, err := logical.CollectKeysWithPrefix(t.Context(), s, prefix)
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// ---- waits ----

// waitFor is the bound on a real-time wait for something that should happen at
// once; a test fails rather than hangs.
const waitFor = 5 * time.Second

// settle waits until the logins that reads started on their own (inside the
// refresh window) have finished, so the test can judge their outcome.
func (e *testEnv) settle() {
	e.t.Helper()
	e.b.detachedWG.Wait()
}

// awaitRead waits (in real time, bounded) for a read started by readAsync.
func awaitRead(t *testing.T, done <-chan readResult, what string) *logical.Response {
	t.Helper()
	r := awaitResult(t, done, what)
	if r.err != nil || r.resp == nil || r.resp.IsError() {
		t.Fatalf("%s: err=%v resp=%v", what, r.err, errText(respErr(r.resp)))
	}
	return r.resp
}

// awaitResult waits (in real time, bounded) for a request started by doAsync,
// and returns its answer whatever it is.
func awaitResult(t *testing.T, done <-chan readResult, what string) readResult {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(waitFor):
		t.Fatalf("%s did not answer within %v: it waited on upstream", what, waitFor)
		return readResult{}
	}
}

// awaitNoError waits (in real time, bounded) for the error of work done in a
// goroutine, and fails the test unless it is nil.
func awaitNoError(t *testing.T, done <-chan error, what string) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(waitFor):
		t.Fatalf("%s did not end within %v", what, waitFor)
	}
}

// waitJoinedFlight waits until a goroutine running caller (a function name, as
// in a stack trace) waits on a flight that another goroutine runs: it is inside
// singleflight's Do, waiting, with no refreshRole of its own. It fails the test
// if a login reaches upstream meanwhile (caller sent one of its own) or after
// waitFor.
func waitJoinedFlight(t *testing.T, u *holdingUpstream, caller string) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for deadline := time.Now().Add(waitFor); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		select {
		case <-u.entered:
			t.Fatalf("%s sent a login of its own instead of joining the one in flight", caller)
		default:
		}
		n := runtime.Stack(buf, true)
		for _, g := range strings.Split(string(buf[:n]), "\n\n") {
			if strings.Contains(g, caller+"(") && strings.Contains(g, "singleflight.(*Group).Do(") &&
				strings.Contains(g, "sync.(*WaitGroup).Wait(") && !strings.Contains(g, ".refreshRole(") {
				return
			}
		}
	}
	t.Fatalf("%s did not join the flight in progress within %v", caller, waitFor)
}

// reportAsync reports tok refused (its hex SHA-256) on path in a goroutine; the
// channel yields the answer.
func (e *testEnv) reportAsync(path, tok string) <-chan readResult {
	return e.doAsync(logical.UpdateOperation, path, map[string]any{fieldRefusedTokenSHA256: tokenSHA256(tok)})
}

// awaitSignal waits (in real time, bounded) for a value on ch, and fails the
// test naming what did not happen.
func awaitSignal(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(waitFor):
		t.Fatalf("%s did not happen within %v", what, waitFor)
	}
}

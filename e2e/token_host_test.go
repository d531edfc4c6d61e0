package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/vaulttest"
)

// Where secrets may go (README, "Where secrets may go"; docs/security.md): a
// real Vault, the plugin, and two fake upstreams. After config moves token_url
// (or verify_url) to the second, that host receives nothing through any path
// (creds/, static-creds/, rotate-role/, verify/, status/, refused-token
// reports, the background refresh) until the role's secrets are written
// again; then exactly one login.

// hostRecorder is a fake upstream (its issued tokens join the test's secrets)
// behind a server that keeps every request it receives: method, path,
// headers, body, Basic credentials decoded. What it keeps is never printed.
type hostRecorder struct {
	*upstream
	URL    string // http://127.0.0.1:PORT, the recording server
	origin string // scheme://host:port, as the plugin names hosts

	mu   sync.Mutex
	reqs []string
}

func newHostRecorder(t *testing.T, opts fakeiadvize.Options, sec *secrets) *hostRecorder {
	t.Helper()
	h := &hostRecorder{upstream: newUpstream(t, opts, sec)}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		var rec strings.Builder
		fmt.Fprintf(&rec, "%s %s\n", r.Method, r.URL)
		for k, v := range r.Header {
			fmt.Fprintf(&rec, "%s: %s\n", k, strings.Join(v, ", "))
		}
		if id, secret, ok := r.BasicAuth(); ok {
			fmt.Fprintf(&rec, "basic: %s:%s\n", id, secret)
		}
		rec.Write(body)
		if form, err := url.ParseQuery(string(body)); err == nil {
			fmt.Fprintf(&rec, "\n%v", form)
		}
		h.mu.Lock()
		h.reqs = append(h.reqs, rec.String())
		h.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		h.upstream.serve(w, r)
	}))
	t.Cleanup(ts.Close)
	h.URL = ts.URL
	h.origin = originOf(t, ts.URL)
	return h
}

// originOf is the plugin's name of the host of rawURL: scheme://host:port.
func originOf(t *testing.T, rawURL string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil || u.Port() == "" {
		t.Fatalf("no host:port in %q", rawURL)
	}
	return u.Scheme + "://" + u.Host
}

func (h *hostRecorder) requests() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.reqs)
}

// saw reports whether a request the host received held secret, as sent,
// form-encoded or base64-encoded.
func (h *hostRecorder) saw(secret string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	forms := []string{secret, url.QueryEscape(secret), base64.StdEncoding.EncodeToString([]byte(secret))}
	for _, r := range h.reqs {
		for _, f := range forms {
			if strings.Contains(r, f) {
				return true
			}
		}
	}
	return false
}

// wantNever fails the test if the host received any of secrets (named by
// what, never shown).
func (h *hostRecorder) wantNever(e *env, when string, secrets map[string]string) {
	e.t.Helper()
	for what, v := range secrets {
		if h.saw(v) {
			e.errorf("%s: the second host received %s", when, what)
		}
	}
}

// wantNothing fails the test unless the host received no request at all.
func (h *hostRecorder) wantNothing(e *env, when string, secrets map[string]string) {
	e.t.Helper()
	if n := h.requests(); n != 0 {
		st := h.Stats()
		e.fatalf("%s: the second host received %d request(s) (%d logins, %d verify calls), want none",
			when, n, st.LoginAttempts, st.VerifyCalls)
	}
	h.wantNever(e, when, secrets)
}

// pointAt writes a mount's config: token_url on tokenBase, verify_url on
// verifyBase (the fake's URL layout).
func pointAt(e *env, mount, tokenBase, verifyBase string) *api.Secret {
	e.t.Helper()
	return e.write(mount+"/config", map[string]any{"token_url": tokenBase + "/oauth2/token", "verify_url": verifyBase + "/_authenticated"})
}

// wantWarning fails unless one of s's warnings holds every one of want.
func (e *env) wantWarning(what string, s *api.Secret, want ...string) {
	e.t.Helper()
	var warnings []string
	if s != nil {
		warnings = s.Warnings
	}
	for _, w := range warnings {
		all := true
		for _, x := range want {
			all = all && strings.Contains(w, x)
		}
		if all {
			return
		}
	}
	e.fatalf("%s: warnings %q, none holds all of %q", what, warnings, want)
}

// wantRefused fails unless err is a Vault API error with status whose
// messages hold every one of want.
func (e *env) wantRefused(what string, err error, status int, want ...string) {
	e.t.Helper()
	if statusCode(err) != status {
		e.fatalf("%s: %s, want HTTP %d", what, brief(err), status)
	}
	for _, x := range want {
		if !strings.Contains(err.Error(), x) {
			e.fatalf("%s: %s, does not name %q", what, brief(err), x)
		}
	}
}

// hexSHA256 is the refused_token_sha256 of a token.
func hexSHA256(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}

// configWriterPolicy is an operator's who may write config and roles, but
// not the roles' secrets (docs/security.md, "The example policies").
const configWriterPolicy = `
path "iadvize/config" {
  capabilities = ["create", "read", "update", "delete"]
}
path "iadvize/roles/*" {
  capabilities      = ["create", "read", "update", "list"]
  denied_parameters = { "password" = [], "client_secret" = [] }
}
path "iadvize/rotate-role/*" {
  capabilities = ["update"]
}
path "iadvize/status/*" {
  capabilities = ["read"]
}
path "iadvize/verify/*" {
  capabilities = ["read"]
}
`

// TestSecretsGoOnlyToTheirTokenHost moves token_url, then verify_url, to a
// second upstream and goes through every path.
func TestSecretsGoOnlyToTheirTokenHost(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakeiadvize.Options{}, vaulttest.Options{})
	a, aOrigin := e.up, originOf(t, e.up.URL)
	b := newHostRecorder(t, fakeiadvize.Options{}, e.secrets)
	pw, cs := distinctive("pw-app"), distinctive("cs-cc")
	e.secrets.add(pw, cs)
	for _, u := range []*upstream{a, b.upstream} { // both would accept the credentials
		u.AddUser("app@example.com", pw)
		u.AddClient("cc-client", cs)
	}

	pointAt(e, "iadvize", a.URL, a.URL)
	e.write("iadvize/roles/app", map[string]any{"username": "app@example.com", "password": pw})
	e.write("iadvize/roles/cc", map[string]any{"grant_type": "client_credentials", "client_id": "cc-client", "client_secret": cs})
	tokApp, tokCC := accessToken(e.read("iadvize/creds/app")), accessToken(e.read("iadvize/creds/cc"))
	if !a.wasIssued(tokApp) || !a.wasIssued(tokCC) {
		e.fatalf("the first reads were not served tokens of the first host")
	}
	if got := e.read("iadvize/verify/app").Data["authenticated"]; got != true {
		e.fatalf("verify/app at the first host: authenticated = %v", got)
	}
	aLogins := a.Stats().LoginAttempts
	never := map[string]string{"app's password": pw, "cc's client secret": cs, "app's token": tokApp, "cc's token": tokCC}

	// An operator who may write config and roles but not the roles' secrets
	// (docs/security.md) moves token_url (and verify_url) to the second host.
	op, err := e.vault.Client.Clone()
	if err != nil {
		t.Fatal(err)
	}
	op.SetToken(e.tokenWithPolicy("config-writer", configWriterPolicy, true))
	moved, err := op.Logical().Write("iadvize/config", map[string]any{
		"token_url": b.URL + "/oauth2/token", "verify_url": b.URL + "/_authenticated"})
	if err != nil {
		e.fatalf("the operator's config write: %s", brief(err))
	}
	e.wantWarning("config write moving token_url", moved, "token_url moved to "+b.origin, "2 role(s)")

	for _, c := range []struct{ path, tok, field string }{
		{"iadvize/creds/app", tokApp, "password"},
		{"iadvize/static-creds/app", tokApp, "password"},
		{"iadvize/creds/cc", tokCC, "client_secret"},
	} {
		s := e.read(c.path)
		if accessToken(s) != c.tok {
			e.fatalf("%s after the move: another token", c.path)
		}
		e.wantWarning(c.path+" after the move", s, aOrigin, b.origin, c.field, "roles/")
	}
	for role, field := range map[string]string{"app": "password", "cc": "client_secret"} {
		_, err := op.Logical().Write("iadvize/rotate-role/"+role, nil)
		e.wantRefused("rotate-role/"+role, err, http.StatusConflict, aOrigin, b.origin, "token_url", field)

		_, err = op.Logical().Read("iadvize/verify/" + role)
		e.wantRefused("verify/"+role, err, http.StatusBadRequest, "verify_url", b.origin, aOrigin)

		s, err := op.Logical().Read("iadvize/status/" + role)
		if err != nil || s == nil {
			e.fatalf("the operator's status/%s: %s", role, brief(err))
		}
		st := s.Data
		if st["token_host"] != aOrigin {
			e.fatalf("status/%s token_host = %v, want %s", role, st["token_host"], aOrigin)
		}
		if w, _ := st["waiting_for_credentials"].(string); !strings.Contains(w, b.origin) || !strings.Contains(w, field) {
			e.fatalf("status/%s waiting_for_credentials = %q, want it to name %s and %s", role, w, b.origin, field)
		}
	}
	// Refused-token reports: no verify_url to use (not the token's issuer), and
	// no login may follow: the reporter learns why, and the token stays.
	_, err = e.vault.Client.Logical().Write("iadvize/creds/cc", map[string]any{"refused_token_sha256": hexSHA256(tokCC)})
	e.wantRefused("report of cc's token on creds/", err, http.StatusConflict, aOrigin, b.origin, "client_secret")
	_, err = e.vault.Client.Logical().Write("iadvize/static-creds/app", map[string]any{"refused_token_sha256": hexSHA256(tokApp)})
	e.wantRefused("report of app's token on static-creds/", err, http.StatusConflict, aOrigin, b.origin, "password")
	for _, c := range []struct{ path, tok string }{
		{"iadvize/creds/app", tokApp}, {"iadvize/static-creds/app", tokApp}, {"iadvize/creds/cc", tokCC},
	} {
		s := e.read(c.path)
		if accessToken(s) != c.tok {
			e.fatalf("%s after the reports: another token", c.path)
		}
		e.wantWarning(c.path+" after the reports", s, aOrigin, b.origin)
	}
	// The operator's role writes: without the secret, no rebinding; with it,
	// Vault refuses.
	if _, err := op.Logical().Write("iadvize/roles/app", map[string]any{"username": "app@example.com", "scope": "chat"}); err != nil {
		e.fatalf("the operator's write of app's username and scope: %s", brief(err))
	}
	if _, err := op.Logical().Write("iadvize/roles/cc", map[string]any{"client_id": "cc-client"}); err != nil {
		e.fatalf("the operator's write of cc's client_id: %s", brief(err))
	}
	_, err = op.Logical().Write("iadvize/roles/app", map[string]any{"password": "guessed"})
	e.wantRefused("the operator's write of a password", err, http.StatusForbidden)
	_, err = e.vault.Client.Logical().Read("iadvize/creds/app")
	e.wantRefused("creds/app after a write without the password", err, http.StatusConflict, aOrigin, b.origin)
	_, err = op.Logical().Write("iadvize/rotate-role/cc", nil)
	e.wantRefused("rotate-role/cc after a write without the client_secret", err, http.StatusConflict, aOrigin, b.origin)
	b.wantNothing(e, "after every path with token_url moved", never)
	if n := a.Stats().LoginAttempts; n != aLogins {
		e.fatalf("%d login(s) at the first host after the move, want none", n-aLogins)
	}

	// verify_url alone on the second host: the roles are bound to the first
	// again and log in there; verify/ refuses, and a report acts as with no
	// verify_url (one login at the token host), never a check at the second.
	moved = pointAt(e, "iadvize", a.URL, b.URL)
	e.wantWarning("config write with verify_url elsewhere", moved, "verify_url is on "+b.origin, "not on the token host "+aOrigin)
	tokApp = accessToken(e.read("iadvize/creds/app"))
	if !a.wasIssued(tokApp) {
		e.fatalf("creds/app on the first host again: not a token of the first host")
	}
	_, err = e.vault.Client.Logical().Read("iadvize/verify/app")
	e.wantRefused("verify/app with verify_url elsewhere", err, http.StatusBadRequest, "verify_url", b.origin, aOrigin)
	s, err := e.vault.Client.Logical().Write("iadvize/creds/app", map[string]any{"refused_token_sha256": hexSHA256(tokApp)})
	if err != nil {
		e.fatalf("report of app's token with verify_url elsewhere: %s", brief(err))
	}
	if next := accessToken(s); next == tokApp || !a.wasIssued(next) {
		e.fatalf("report with verify_url elsewhere: not a new token of the first host")
	}
	never["app's second token"], never["app's third token"] = tokApp, accessToken(s)
	if n := a.Stats().LoginAttempts; n != aLogins+2 {
		e.fatalf("%d login(s) at the first host, want 2 (a read, a report)", n-aLogins)
	}
	b.wantNothing(e, "after verify/ and a report with verify_url moved", never)

	// Both move again; writing app's password binds it to the second host:
	// exactly one login there, and its own token may be checked there.
	pointAt(e, "iadvize", b.URL, b.URL)
	e.write("iadvize/roles/app", map[string]any{"password": pw})
	if st := e.read("iadvize/status/app").Data; st["token_host"] != b.origin || st["waiting_for_credentials"] != "" {
		e.fatalf("status/app after its password was written: token_host %v, waiting %q", st["token_host"], st["waiting_for_credentials"])
	}
	for _, path := range []string{"iadvize/creds/app", "iadvize/static-creds/app", "iadvize/creds/app"} {
		s := e.read(path)
		if !b.wasIssued(accessToken(s)) || len(s.Warnings) > 0 {
			e.fatalf("%s after the rewrite: a token of the second host %v, warnings %q", path, b.wasIssued(accessToken(s)), s.Warnings)
		}
	}
	if got := e.read("iadvize/verify/app").Data["authenticated"]; got != true {
		e.fatalf("verify/app of the second host's token: authenticated = %v", got)
	}
	st := b.Stats()
	if st.LoginAttempts != 1 || st.UserAttempts["app@example.com"] != 1 || st.VerifyCalls != 1 {
		e.fatalf("the second host: %d logins (%v), %d verify calls; want app's one login and one check",
			st.LoginAttempts, st.UserAttempts, st.VerifyCalls)
	}
	delete(never, "app's password")
	b.wantNever(e, "after app's rewrite", never)
	_, err = e.vault.Client.Logical().Write("iadvize/rotate-role/cc", nil)
	e.wantRefused("rotate-role/cc, still bound to the first host", err, http.StatusConflict, aOrigin, b.origin)
	b.wantNever(e, "at the end", never)
}

// TestMovedRoleBackgroundRefreshSendsNothing: Vault's periodic function, about
// once a minute, refreshes a role bound to the config's host and never the one
// that waits for its credentials, on the same mount in the same runs.
func TestMovedRoleBackgroundRefreshSendsNothing(t *testing.T) {
	t.Parallel()
	// 60 s tokens: refresh window 30 s, the background refresh due from 24 s.
	opts := fakeiadvize.Options{TokenLifetime: time.Minute}
	e := newEnv(t, opts, vaulttest.Options{})
	a, aOrigin := e.up, originOf(t, e.up.URL)
	b := newHostRecorder(t, opts, e.secrets)
	pw, pwFresh := distinctive("pw-app"), distinctive("pw-fresh")
	e.secrets.add(pw, pwFresh)
	a.AddUser("app@example.com", pw)
	b.AddUser("app@example.com", pw)
	b.AddUser("fresh@example.com", pwFresh)

	pointAt(e, "iadvize", a.URL, a.URL)
	e.write("iadvize/roles/app", map[string]any{"username": "app@example.com", "password": pw})
	tokApp := accessToken(e.read("iadvize/creds/app"))
	pointAt(e, "iadvize", b.URL, b.URL)
	e.write("iadvize/roles/fresh", map[string]any{"username": "fresh@example.com", "password": pwFresh})
	e.read("iadvize/creds/fresh") // app is due before fresh: both in the run that refreshes fresh
	started := time.Now()

	e.waitFor(3*time.Minute, "a background login of the role bound to the second host", func() error {
		if n := b.Stats().UserAttempts["fresh@example.com"]; n < 2 {
			return fmt.Errorf("%d login(s) of fresh", n)
		}
		return nil
	})
	time.Sleep(2 * time.Second) // the run's other logins, had there been any
	st := b.Stats()
	if n := st.UserAttempts["app@example.com"]; n != 0 {
		e.fatalf("the background refresh sent %d login(s) of the waiting role to the second host", n)
	}
	if n := a.Stats().LoginAttempts; n != 1 {
		e.fatalf("%d logins at the first host, want the first read's", n)
	}
	b.wantNever(e, "after the background refresh", map[string]string{"app's password": pw, "app's token": tokApp})
	if st := e.read("iadvize/status/app").Data; st["token_host"] != aOrigin || st["waiting_for_credentials"] == "" {
		e.fatalf("status/app: token_host %v, waiting %q", st["token_host"], st["waiting_for_credentials"])
	}
	e.logf("background refresh of the bound role after %s; none of the waiting one", time.Since(started).Round(time.Second))
}

// previousCommit is the last commit before credentials were bound to their
// token host (the first parent of the commit that added token_host.go): the
// release an upgrade comes from.
const previousCommit = "1a175a2eaaaeeffabd796ccdef9e45fbf5e92aca"

// buildPluginAt builds the plugin of the source tree src (a module root) as
// dir/<name>_<version>, reporting version, and returns the file name.
func buildPluginAt(t *testing.T, src, dir, version string) string {
	t.Helper()
	name := vaulttest.PluginName + "_" + version
	cmd := exec.Command("go", "build", "-trimpath",
		"-ldflags", "-X github.com/iadvize/vault-plugin-secrets-iadvize.Version="+version,
		"-o", filepath.Join(dir, name), "./cmd/vault-plugin-secrets-iadvize")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false")
	started := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the plugin at %s: %v\n%s", src, err, out)
	}
	t.Logf("built %s in %s", name, time.Since(started).Round(time.Second))
	return name
}

// previousSource extracts previousCommit's tree into a temporary directory
// (git archive: no worktree is registered), or skips the test when the
// repository does not hold it (a shallow clone, a source archive).
func previousSource(t *testing.T) string {
	t.Helper()
	root := vaulttest.RepoRoot(t)
	if err := exec.Command("git", "-C", root, "cat-file", "-e", previousCommit+"^{commit}").Run(); err != nil {
		t.Skipf("the repository does not hold commit %s, the release before bindings (a shallow clone?): "+
			"git fetch --unshallow to run the upgrade test", previousCommit[:12])
	}
	dir := t.TempDir()
	tarball := filepath.Join(t.TempDir(), "previous.tar")
	for _, args := range [][]string{
		{"git", "-C", root, "archive", "--format=tar", "-o", tarball, previousCommit},
		{"tar", "-xf", tarball, "-C", dir},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return dir
}

// TestUpgradeFromPreviousCommitBindsRolesWithoutLogin: the release before
// bindings serves roles on a Vault with file storage; the mount moves to this
// tree's build (register, tune, reload: the README's Upgrade). The same tokens
// are served with no login and no operator step, status/ names the config's
// host as the roles' token host, and a later move of token_url leaves them
// waiting: the new host receives nothing.
func TestUpgradeFromPreviousCommitBindsRolesWithoutLogin(t *testing.T) {
	t.Parallel()
	e := newEnvNoVault(t, fakeiadvize.Options{})
	old := previousSource(t)
	pluginDir := t.TempDir()
	const oldV, newV = "v0.1.1", "v0.1.2"
	names := map[string]string{
		oldV: buildPluginAt(t, old, pluginDir, oldV),
		newV: buildPluginAt(t, vaulttest.RepoRoot(t), pluginDir, newV),
	}
	_, root := e.startFileVault(pluginDir)
	e.secrets.add(root)
	sys := e.vault.Client.Sys()
	register := func(v string) string {
		t.Helper()
		sum := vaulttest.SHA256(t, filepath.Join(pluginDir, names[v]))
		if err := sys.RegisterPlugin(&api.RegisterPluginInput{Name: vaulttest.PluginName, Type: api.PluginTypeSecrets,
			Command: names[v], SHA256: sum, Version: v}); err != nil {
			e.fatalf("registering %s: %v", v, err)
		}
		return sum
	}
	sumOld := register(oldV)
	if err := sys.Mount("iadvize", &api.MountInput{Type: vaulttest.PluginName, Config: api.MountConfigInput{PluginVersion: oldV}}); err != nil {
		e.fatalf("enabling iadvize/ at %s: %v", oldV, err)
	}
	e.checkMount(oldV, sumOld)

	a, aOrigin := e.up, originOf(t, e.up.URL)
	b := newHostRecorder(t, fakeiadvize.Options{}, e.secrets)
	pw, cs := distinctive("pw-app"), distinctive("cs-cc")
	e.secrets.add(pw, cs)
	for _, u := range []*upstream{a, b.upstream} {
		u.AddUser("app@example.com", pw)
		u.AddClient("cc-client", cs)
	}
	pointAt(e, "iadvize", a.URL, a.URL)
	e.write("iadvize/roles/app", map[string]any{"username": "app@example.com", "password": pw})
	e.write("iadvize/roles/cc", map[string]any{"grant_type": "client_credentials", "client_id": "cc-client", "client_secret": cs})
	tokens := map[string]string{
		"iadvize/creds/app": accessToken(e.read("iadvize/creds/app")),
		"iadvize/creds/cc":  accessToken(e.read("iadvize/creds/cc")),
	}
	tokens["iadvize/static-creds/app"] = tokens["iadvize/creds/app"]
	logins := a.Stats().LoginAttempts
	if logins != 2 {
		e.fatalf("%d logins on %s, want 2", logins, oldV)
	}

	// The README's Upgrade: register, tune, reload.
	sumNew := register(newV)
	if err := sys.TuneMountAllowNil("iadvize", api.TuneMountConfigInput{PluginVersion: new(newV)}); err != nil {
		e.fatalf("tuning iadvize/ to %s: %v", newV, err)
	}
	if _, err := sys.ReloadPlugin(&api.ReloadPluginInput{Plugin: vaulttest.PluginName}); err != nil {
		e.fatalf("reloading the plugin: %v", err)
	}
	e.checkMount(newV, sumNew)

	for path, tok := range tokens {
		s := e.read(path)
		if accessToken(s) != tok {
			e.fatalf("%s after the upgrade: another token", path)
		}
		if len(s.Warnings) > 0 {
			e.fatalf("%s after the upgrade: warnings %q", path, s.Warnings)
		}
	}
	for _, role := range []string{"app", "cc"} {
		st := e.read("iadvize/status/" + role).Data
		if st["token_host"] != aOrigin || st["waiting_for_credentials"] != "" || st["has_token"] != true {
			e.fatalf("status/%s after the upgrade: token_host %v, waiting %q, has_token %v", role,
				st["token_host"], st["waiting_for_credentials"], st["has_token"])
		}
	}
	if n := a.Stats().LoginAttempts; n != logins {
		e.fatalf("the upgrade logged in %d time(s), want none", n-logins)
	}

	// A later move of token_url leaves the upgraded roles waiting.
	moved := pointAt(e, "iadvize", b.URL, b.URL)
	e.wantWarning("config write moving token_url after the upgrade", moved, "2 role(s)")
	s := e.read("iadvize/creds/app")
	e.wantWarning("creds/app after the move", s, aOrigin, b.origin, "password")
	for _, role := range []string{"app", "cc"} {
		_, err := e.vault.Client.Logical().Write("iadvize/rotate-role/"+role, nil)
		e.wantRefused("rotate-role/"+role+" after the move", err, http.StatusConflict, aOrigin, b.origin)
	}
	_, err := e.vault.Client.Logical().Write("iadvize/creds/cc", map[string]any{"refused_token_sha256": hexSHA256(tokens["iadvize/creds/cc"])})
	e.wantRefused("report of cc's token after the move", err, http.StatusConflict, aOrigin, b.origin)
	b.wantNothing(e, "after the move", map[string]string{"app's password": pw, "cc's client secret": cs,
		"app's token": tokens["iadvize/creds/app"], "cc's token": tokens["iadvize/creds/cc"]})
	if n := a.Stats().LoginAttempts; n != logins {
		e.fatalf("%d login(s) at the first host after the upgrade", n-logins)
	}
}

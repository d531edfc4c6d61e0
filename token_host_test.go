package iadvize

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeclock"
)

// Where secrets may go (README, "Where secrets may go"; docs/security.md;
// README, "Where secrets may go"; token_host.go): a role's password and client secret only to
// the token host its credentials were written for, an access token only to the
// host that issued it. The tests run one mount against two fake upstreams on one
// fake clock: host A, where the credentials were written, and host B, where
// config is moved. B must receive nothing (no request at all, so no password,
// client secret or token) through any path until the role's secrets are written
// again.

// boundEnv is one mount and two token hosts: config on a (token_url and
// verify_url), role "app" (password grant, user app@example.com) and role "cc"
// (client credentials, client cc-client), each logged in once at a. Both hosts
// know both principals, so that a login sent to b would succeed: only the
// plugin keeps it from happening.
type boundEnv struct {
	*testEnv
	a, b          *tokenHost
	pw, cs        string // app's password, cc's client secret
	tokApp, tokCC string
}

func newBoundEnv(t *testing.T) *boundEnv {
	t.Helper()
	clock := fakeclock.New()
	m := &boundEnv{testEnv: newTestEnv(t, nil, clock), a: startTokenHost(t, clock), b: startTokenHost(t, clock),
		pw: secretValue("pw-app"), cs: secretValue("cs-cc")}
	for _, h := range []*tokenHost{m.a, m.b} {
		h.AddUser("app@example.com", m.pw)
		h.AddClient("cc-client", m.cs)
	}
	m.point(m.a, m.a)
	m.addRole("app", "app@example.com", m.pw)
	m.mustWrite("roles/cc", map[string]any{"grant_type": "client_credentials", "client_id": "cc-client", "client_secret": m.cs})
	m.tokApp = accessToken(t, m.mustRead("creds/app"))
	m.tokCC = accessToken(t, m.mustRead("creds/cc"))
	if m.a.logins("app@example.com") != 1 || m.a.logins("cc-client") != 1 {
		t.Fatalf("setup: logins at the first host = %v, want one per role", m.a.Stats().UserAttempts)
	}
	return m
}

// point writes config token_url on tok and verify_url on verify, and returns
// the answer (its warnings).
func (m *boundEnv) point(tok, verify *tokenHost) *logical.Response {
	m.t.Helper()
	return m.mustWrite("config", map[string]any{"token_url": tok.tokenURL(), "verify_url": verify.verifyURL()})
}

// secrets are what b must never receive.
func (m *boundEnv) secrets() map[string]string {
	return map[string]string{"app's password": m.pw, "cc's client secret": m.cs,
		"app's token": m.tokApp, "cc's token": m.tokCC}
}

// report writes a refused-token report of tok to path (creds/<role> or
// static-creds/<role>).
func (m *boundEnv) report(path, tok string) (*logical.Response, error) {
	m.t.Helper()
	return m.do(logical.UpdateOperation, path, map[string]any{fieldRefusedTokenSHA256: tokenSHA256(tok)})
}

// ---- the token host: scheme, host, port ----

func TestTokenOriginIsSchemeHostPort(t *testing.T) {
	same := [][2]string{
		{"https://api.iadvize.com/oauth2/token", "https://api.iadvize.com/other/path?tenant=x#frag"},
		{"https://api.iadvize.com/oauth2/token", "https://API.iAdvize.com:443/oauth2/token"},
		{"https://api.iadvize.com/oauth2/token", "HTTPS://api.iadvize.com./oauth2/token"},
		{"http://localhost/t", "http://localhost:80/u"},
		{"http://[::1]:8200/t", "http://[::1]:8200/u?v=1"},
	}
	for _, c := range same {
		if a, b := tokenOrigin(c[0]), tokenOrigin(c[1]); a == "" || a != b {
			t.Errorf("tokenOrigin(%q) = %q, tokenOrigin(%q) = %q: want one host", c[0], a, c[1], b)
		}
	}
	other := [][2]string{
		{"https://api.iadvize.com/oauth2/token", "https://api.iadvize.com.evil.example/oauth2/token"},
		{"https://api.iadvize.com/oauth2/token", "https://api.iadvize.com:8443/oauth2/token"},
		{"https://127.0.0.1/t", "http://127.0.0.1:443/t"},
		{"http://127.0.0.1:8200/t", "http://localhost:8200/t"},
		{"http://127.0.0.1:8200/t", "http://127.0.0.1:8201/t"},
	}
	for _, c := range other {
		if a, b := tokenOrigin(c[0]), tokenOrigin(c[1]); a == b {
			t.Errorf("tokenOrigin(%q) = tokenOrigin(%q) = %q: want two hosts", c[0], c[1], a)
		}
	}
	if got := tokenOrigin("https://API.iadvize.com/oauth2/token"); got != "https://api.iadvize.com:443" {
		t.Errorf("tokenOrigin = %q, want https://api.iadvize.com:443", got)
	}
	if got := tokenOrigin("not a url"); got != "" {
		t.Errorf("tokenOrigin of a URL with no host = %q, want empty", got)
	}
}

// ---- a config write that moves token_url ----

// The move is accepted, and its warning counts the roles that now wait for
// their credentials; status/ names the bound host and what to write.
func TestTokenURLMoveWarnsAndStatusNamesTheWait(t *testing.T) {
	m := newBoundEnv(t)
	resp := m.point(m.b, m.b)
	wantWarning(t, resp, "token_url moved to "+m.b.origin, "2 role(s)", "password or client_secret")

	for role, field := range map[string]string{"app": "password", "cc": "client_secret"} {
		st := m.mustRead("status/" + role).Data
		if st["token_host"] != m.a.origin {
			t.Errorf("status/%s token_host = %v, want %s", role, st["token_host"], m.a.origin)
		}
		msg, _ := st["waiting_for_credentials"].(string)
		for _, want := range []string{role, m.a.origin, m.b.origin, "token_url", field, "roles/"} {
			if !strings.Contains(msg, want) {
				t.Errorf("status/%s waiting_for_credentials = %q, does not name %q", role, msg, want)
			}
		}
		if st["next_login"] != "" {
			t.Errorf("status/%s next_login = %v, want none while the role waits", role, st["next_login"])
		}
		if st["has_token"] != true {
			t.Errorf("status/%s has_token = %v: the token from the first host is kept", role, st["has_token"])
		}
	}

	// Moving back ends the wait: the roles were never rebound.
	resp = m.point(m.a, m.a)
	noWarnings(t, resp, "config back on the first host")
	for _, role := range []string{"app", "cc"} {
		st := m.mustRead("status/" + role).Data
		if st["waiting_for_credentials"] != "" || st["token_host"] != m.a.origin {
			t.Errorf("status/%s after moving back: token_host %v, waiting_for_credentials %q", role,
				st["token_host"], st["waiting_for_credentials"])
		}
	}
	m.b.wantNothing(t, "after the moves", m.secrets())
}

// Roles bound elsewhere are counted, roles bound to the new host are not, and
// a write that does not move token_url warns of nothing.
func TestTokenURLMoveWarningCountsOnlyRolesBoundElsewhere(t *testing.T) {
	m := newBoundEnv(t)
	noWarnings(t, m.mustWrite("config", map[string]any{"refresh_before": "2h"}), "a write that keeps token_url")
	wantWarning(t, m.point(m.b, m.b), "2 role(s)")
	// app written again: bound to b. Moving back to a leaves app waiting, not cc.
	m.mustWrite("roles/app", map[string]any{"password": m.pw})
	wantWarning(t, m.point(m.a, m.a), "token_url moved to "+m.a.origin, "1 role(s)")
	// Moving to a third host: both wait.
	clock := m.clock
	c := startTokenHost(t, clock)
	wantWarning(t, m.point(c, c), "token_url moved to "+c.origin, "2 role(s)")
	if c.requests() != 0 {
		t.Fatalf("the third host received %d requests", c.requests())
	}
}

// A path or query change on the same host (and the host spelled in another
// case) is not a move: no warning, no wait, and the next login goes there.
func TestTokenURLPathOrQueryChangeIsNoMove(t *testing.T) {
	m := newBoundEnv(t)
	for _, tokenURL := range []string{
		m.a.tokenURL() + "?tenant=eu",
		strings.Replace(m.a.url, "http://", "HTTP://", 1) + "/oauth2/token?tenant=us",
	} {
		resp := m.mustWrite("config", map[string]any{"token_url": tokenURL})
		if resp != nil {
			for _, w := range resp.Warnings {
				if strings.Contains(w, "moved") {
					t.Fatalf("token_url %s: warning %q, want no move", tokenURL, w)
				}
			}
		}
		if st := m.mustRead("status/app").Data; st["waiting_for_credentials"] != "" || st["token_host"] != m.a.origin {
			t.Fatalf("token_url %s: status/app token_host %v, waiting_for_credentials %q", tokenURL,
				st["token_host"], st["waiting_for_credentials"])
		}
		before := m.a.logins("app@example.com")
		if _, err := m.doRotate("app"); err != nil {
			t.Fatalf("token_url %s: rotate-role/app: %v", tokenURL, err)
		}
		if got := m.a.logins("app@example.com"); got != before+1 {
			t.Fatalf("token_url %s: %d logins at the host, want %d", tokenURL, got, before+1)
		}
	}
	// Another path on the host: still no move (the fake serves no token there,
	// so the login fails upstream, not for want of a binding).
	m.mustWrite("config", map[string]any{"token_url": m.a.url + "/v2/token"})
	if st := m.mustRead("status/app").Data; st["waiting_for_credentials"] != "" {
		t.Fatalf("token_url on another path: waiting_for_credentials %q", st["waiting_for_credentials"])
	}
	_, err := m.doRotate("app")
	if s := codedStatus(err); s == 409 || s == 0 {
		t.Fatalf("rotate-role/app with token_url on another path: %v, want an upstream failure", err)
	}
	m.b.wantNothing(t, "after path changes", m.secrets())
}

// ---- every path of a login, after a move ----

// Reads serve a token with time left, with a warning naming both hosts and the
// field to write (fresh, and inside the refresh window where no login starts);
// once it is dead, a read is a 409 saying the same.
func TestTokenURLMoveReadsServeLiveTokenWithWarningThen409(t *testing.T) {
	m := newBoundEnv(t)
	m.point(m.b, m.b)
	aLogins := m.a.Stats().LoginAttempts

	check := func(when string) {
		t.Helper()
		for _, path := range []string{"creds/app", "static-creds/app"} {
			resp := m.mustRead(path)
			if accessToken(t, resp) != m.tokApp {
				t.Fatalf("%s: %s served another token", when, path)
			}
			wantWarning(t, resp, `role "app"`, m.a.origin, m.b.origin, "password", "roles/app")
		}
		resp := m.mustRead("creds/cc")
		if accessToken(t, resp) != m.tokCC {
			t.Fatalf("%s: creds/cc served another token", when)
		}
		wantWarning(t, resp, `role "cc"`, m.a.origin, m.b.origin, "client_secret")
		m.settle()
	}
	check("fresh token")
	m.clock.Advance(23*time.Hour + 10*time.Minute) // inside the 1 h refresh window, far from the skew margin
	check("inside the refresh window")
	for i := 0; i < 3; i++ { // a detached refresh would start here
		m.mustRead("creds/app")
		m.settle()
	}

	m.clock.Advance(time.Hour) // dead
	for _, path := range []string{"creds/app", "static-creds/app"} {
		_, err := m.read(path)
		expectCodedError(t, err, 409, `role "app"`, m.a.origin, m.b.origin, "token_url", "password", "roles/app")
	}
	_, err := m.read("creds/cc")
	expectCodedError(t, err, 409, `role "cc"`, "client_secret")

	if got := m.a.Stats().LoginAttempts; got != aLogins {
		t.Fatalf("%d logins at the first host after the move, want none", got-aLogins)
	}
	m.b.wantNothing(t, "after reads", m.secrets())
}

// A client-credentials role is not the only holder of a client secret: a
// password role with a confidential client waits for both.
func TestTokenURLMoveNamesEverySecretOfTheRole(t *testing.T) {
	m := newBoundEnv(t)
	pcSecret := secretValue("cs-pc")
	m.a.AddUser("pc@example.com", m.pw)
	m.a.AddClient("pc-client", pcSecret)
	m.mustWrite("roles/pc", map[string]any{"username": "pc@example.com", "password": m.pw,
		"client_id": "pc-client", "client_secret": pcSecret})
	m.point(m.b, m.b)
	_, err := m.doRotate("pc")
	expectCodedError(t, err, 409, "password and client_secret")
	m.b.wantNothing(t, "after rotate-role", map[string]string{"pc's client secret": pcSecret})
}

// rotate-role logs in nowhere: 409 naming both hosts and the field, and the
// cached token stays.
func TestTokenURLMoveRotateRoleIs409(t *testing.T) {
	m := newBoundEnv(t)
	m.point(m.b, m.b)
	for role, field := range map[string]string{"app": "password", "cc": "client_secret"} {
		_, err := m.doRotate(role)
		expectCodedError(t, err, 409, fmt.Sprintf("role %q", role), m.a.origin, m.b.origin, "token_url", field)
	}
	if accessToken(t, m.mustRead("creds/app")) != m.tokApp {
		t.Fatal("creds/app after a refused rotate-role: another token")
	}
	if m.a.Stats().LoginAttempts != 2 {
		t.Fatalf("logins at the first host = %d, want the 2 of the setup", m.a.Stats().LoginAttempts)
	}
	m.b.wantNothing(t, "after rotate-role", m.secrets())
}

// The background refresh logs in nowhere for a role that waits; once config is
// back on the role's host, the same run logs it in there.
func TestTokenURLMoveBackgroundRefreshSendsNothing(t *testing.T) {
	m := newBoundEnv(t)
	m.point(m.b, m.b)
	m.clock.Advance(23*time.Hour - 2*time.Minute) // due: the window starts before the run after next
	for i := 0; i < 3; i++ {
		m.runPeriodic()
		m.clock.Advance(time.Minute)
	}
	m.b.wantNothing(t, "after background runs", m.secrets())
	if got := m.a.Stats().LoginAttempts; got != 2 {
		t.Fatalf("logins at the first host = %d, want the 2 of the setup", got)
	}
	if n := m.testEnv.b.sched.len(); n != 0 {
		t.Fatalf("%d waiting roles still on the schedule: each run would take them up again", n)
	}

	// The runs did find the roles due: back on their host, one run refreshes both.
	m.point(m.a, m.a)
	m.runPeriodic()
	if m.a.logins("app@example.com") != 2 || m.a.logins("cc-client") != 2 {
		t.Fatalf("logins at the first host after moving back = %v, want 2 per role", m.a.Stats().UserAttempts)
	}
	m.b.wantNothing(t, "after moving back", m.secrets())
}

// A refused-token report (creds/ or static-creds/ update with the token's hex
// SHA-256) sends nothing to the new host: not the token to its verify_url, not
// the credentials to its token_url.
func TestTokenURLMoveRefusedReportSendsNothing(t *testing.T) {
	for _, prefix := range []string{"creds/", "static-creds/"} {
		t.Run(strings.TrimSuffix(prefix, "/"), func(t *testing.T) {
			m := newBoundEnv(t)
			m.point(m.b, m.b)
			_, err := m.report(prefix+"app", m.tokApp)
			expectCodedError(t, err, 409, m.a.origin, m.b.origin, "password")
			_, err = m.report(prefix+"cc", m.tokCC)
			if s := codedStatus(err); s != 409 {
				t.Fatalf("report of cc's token: %v, want 409", err)
			}
			m.clock.Advance(reportLoginInterval + time.Second)
			_, err = m.report(prefix+"app", m.tokApp) // the token was dropped: a read's answer
			expectCodedError(t, err, 409, "password")
			m.b.wantNothing(t, "after reports", m.secrets())
			if got := m.a.Stats().LoginAttempts; got != 2 {
				t.Fatalf("logins at the first host = %d, want the 2 of the setup", got)
			}
		})
	}
}

// ---- rebinding: only a write that names every secret the role holds ----

func TestOnlyAWriteNamingEverySecretRebinds(t *testing.T) {
	m := newBoundEnv(t)
	pcSecret := secretValue("cs-pc")
	for _, h := range []*tokenHost{m.a, m.b} {
		h.AddUser("pc@example.com", m.pw)
		h.AddClient("pc-client", pcSecret)
		h.AddUser("app2@example.com", m.pw)
	}
	m.mustWrite("roles/pc", map[string]any{"username": "pc@example.com", "password": m.pw,
		"client_id": "pc-client", "client_secret": pcSecret})
	m.point(m.b, m.b)

	stillBound := func(role, when string) {
		t.Helper()
		if st := m.mustRead("status/" + role).Data; st["token_host"] != m.a.origin {
			t.Fatalf("%s: status/%s token_host = %v, want still %s", when, role, st["token_host"], m.a.origin)
		}
		_, err := m.doRotate(role)
		expectCodedError(t, err, 409)
	}
	// Writes that name no secret, or not all of them, keep the binding: a
	// policy that denies the secret fields cannot send them elsewhere.
	m.mustWrite("roles/app", map[string]any{"username": "app2@example.com"})
	stillBound("app", "username alone")
	m.mustWrite("roles/app", map[string]any{"scope": "chat", "ttl": 600})
	stillBound("app", "scope and ttl")
	m.mustWrite("roles/cc", map[string]any{"client_id": "cc-client"})
	stillBound("cc", "client_id alone")
	m.mustWrite("roles/pc", map[string]any{"password": m.pw})
	stillBound("pc", "password without the client_secret")
	m.mustWrite("roles/pc", map[string]any{"client_secret": pcSecret})
	stillBound("pc", "client_secret without the password")
	m.b.wantNothing(t, "before any rebinding write", map[string]string{"app's password": m.pw,
		"cc's client secret": m.cs, "pc's client secret": pcSecret})

	// Naming every secret rebinds to the stored config's host: then exactly one
	// login there, on the next read.
	for role, data := range map[string]map[string]any{
		"app": {"password": m.pw},
		"cc":  {"client_secret": m.cs},
		"pc":  {"password": m.pw, "client_secret": pcSecret},
	} {
		m.mustWrite("roles/"+role, data)
		st := m.mustRead("status/" + role).Data
		if st["token_host"] != m.b.origin || st["waiting_for_credentials"] != "" {
			t.Fatalf("status/%s after writing its secrets: token_host %v, waiting_for_credentials %q", role,
				st["token_host"], st["waiting_for_credentials"])
		}
		resp := m.mustRead("creds/" + role)
		noWarnings(t, resp, "creds/"+role+" after the rewrite")
		m.mustRead("creds/" + role)
	}
	st := m.b.Stats()
	for user, want := range map[string]int{"app2@example.com": 1, "cc-client": 1, "pc@example.com": 1} {
		if st.UserAttempts[user] != want {
			t.Fatalf("logins at the new host = %v, want one per rewritten role", st.UserAttempts)
		}
	}
	if st.LoginAttempts != 3 || st.VerifyCalls != 0 {
		t.Fatalf("the new host received %d logins and %d verify calls, want 3 and 0", st.LoginAttempts, st.VerifyCalls)
	}
}

// Writing the same secrets again on the same host (Terraform re-applying a
// role) keeps the token: no login.
func TestSameSecretsOnSameHostKeepTheToken(t *testing.T) {
	m := newBoundEnv(t)
	m.mustWrite("roles/app", map[string]any{"username": "app@example.com", "password": m.pw})
	m.mustWrite("roles/cc", map[string]any{"grant_type": "client_credentials", "client_id": "cc-client", "client_secret": m.cs})
	if accessToken(t, m.mustRead("creds/app")) != m.tokApp || accessToken(t, m.mustRead("creds/cc")) != m.tokCC {
		t.Fatal("a re-applied role lost its token")
	}
	if got := m.a.Stats().LoginAttempts; got != 2 {
		t.Fatalf("logins = %d, want the 2 of the setup", got)
	}
}

// ---- no config stored: the first login binds ----

func TestRoleWrittenWithoutConfigIsBoundByItsFirstLogin(t *testing.T) {
	clock, a, b, pw := twoHosts(t)
	e := newTestEnv(t, nil, clock)

	e.addRole("app", "app@example.com", pw) // Terraform: roles before config
	if st := e.mustRead("status/app").Data; st["token_host"] != "" || st["waiting_for_credentials"] != "" {
		t.Fatalf("status/app before any config: token_host %v, waiting %q, want both empty", st["token_host"], st["waiting_for_credentials"])
	}
	resp := e.mustWrite("config", map[string]any{"token_url": a.tokenURL(), "verify_url": a.verifyURL()})
	noWarnings(t, resp, "the first config: no role is bound yet")
	tok := accessToken(t, e.mustRead("creds/app"))
	if a.logins("app@example.com") != 1 {
		t.Fatalf("logins at the first host = %d, want 1", a.logins("app@example.com"))
	}
	if st := e.mustRead("status/app").Data; st["token_host"] != a.origin {
		t.Fatalf("status/app after the first login: token_host %v, want %s", st["token_host"], a.origin)
	}

	resp = e.mustWrite("config", map[string]any{"token_url": b.tokenURL(), "verify_url": b.verifyURL()})
	wantWarning(t, resp, "1 role(s)")
	_, err := e.doRotate("app")
	expectCodedError(t, err, 409, a.origin, b.origin)
	e.clock.Advance(25 * time.Hour)
	_, err = e.read("creds/app")
	expectCodedError(t, err, 409, a.origin, b.origin)
	b.wantNothing(t, "after the move", map[string]string{"the password": pw, "the token": tok})
}

// A role written with no config stored is bound by its first login only: a
// flight that read it before another login bound it (under another config)
// judges it again rather than send the credentials to a second host.
func TestFirstLoginBindingIsNotRacedToASecondHost(t *testing.T) {
	clock, a, b, pw := twoHosts(t)
	e := newTestEnv(t, nil, clock)

	e.addRole("app", "app@example.com", pw)
	e.mustWrite("config", map[string]any{"token_url": a.tokenURL(), "verify_url": a.verifyURL()})
	e.mustRead("status/app") // caches the role as written: not bound yet
	stale := e.b.cache.role("app")
	if stale == nil || !stale.role.BindOnLogin {
		t.Fatal("setup: the cached role is not waiting for its first login")
	}
	e.mustRead("creds/app") // the first login: bound to a
	e.mustWrite("config", map[string]any{"token_url": b.tokenURL(), "verify_url": b.verifyURL()})

	// A flight that read the role before the binding, under the new config.
	e.b.cache.setRole("app", stale)
	_, err := e.doRotate("app")
	expectCodedError(t, err, 409, a.origin, b.origin)
	b.wantNothing(t, "after a login on a stale view", map[string]string{"the password": pw})
	if st := e.mustRead("status/app").Data; st["token_host"] != a.origin {
		t.Fatalf("status/app token_host = %v, want %s", st["token_host"], a.origin)
	}
}

// ---- roles stored by a version before bindings ----

// legacyToken is a token state record of the version before bindings.
func legacyToken(tok string, issued time.Time, generation uint64) map[string]any {
	return map[string]any{"access_token": tok, "token_type": "Bearer", "issued_at": issued,
		"expires_at": issued.Add(24 * time.Hour), "last_attempt": issued, "last_outcome": "success",
		"generation": generation}
}

// loginAt logs in at h directly, as the old version did, and returns the token.
func loginAt(t *testing.T, h *tokenHost, form url.Values) string {
	t.Helper()
	resp, err := http.PostForm(h.tokenURL(), form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ans struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&ans); err != nil || ans.AccessToken == "" {
		t.Fatalf("direct login: status %d, no token (%v)", resp.StatusCode, err)
	}
	return ans.AccessToken
}

// An upgrade keeps every role served with no login and no operator step; the
// roles are bound to the config in force then, which a later move of token_url
// does not carry along.
func TestLegacyRolesAreServedAndBoundToTheConfigInForce(t *testing.T) {
	clock := fakeclock.New()
	a, b := startTokenHost(t, clock), startTokenHost(t, clock)
	pw, cs := secretValue("pw-app"), secretValue("cs-cc")
	for _, h := range []*tokenHost{a, b} {
		h.AddUser("app@example.com", pw)
		h.AddClient("cc-client", cs)
	}
	tokApp := loginAt(t, a, url.Values{"grant_type": {"password"}, "username": {"app@example.com"}, "password": {pw}})
	tokCC := loginAt(t, a, url.Values{"grant_type": {"client_credentials"}, "client_id": {"cc-client"}, "client_secret": {cs}})
	issued := clock.Now()
	clock.Advance(time.Hour)
	s := &logical.InmemStorage{}
	putLegacyRecords(t, s, legacyConfig(a),
		map[string]map[string]any{
			"app": {"grant_type": "password", "username": "app@example.com", "password": pw, "generation": 3},
			"cc":  {"grant_type": "client_credentials", "client_id": "cc-client", "client_secret": cs, "generation": 1},
		},
		map[string]map[string]any{"app": legacyToken(tokApp, issued, 3), "cc": legacyToken(tokCC, issued, 1)})
	aLogins := a.Stats().LoginAttempts
	secrets := map[string]string{"app's password": pw, "cc's client secret": cs, "app's token": tokApp, "cc's token": tokCC}

	// The upgrade: a new version's mount over the old storage.
	e := newTestEnv(t, s, clock)
	for path, tok := range map[string]string{"creds/app": tokApp, "static-creds/app": tokApp, "creds/cc": tokCC} {
		resp := e.mustRead(path)
		if accessToken(t, resp) != tok {
			t.Fatalf("after the upgrade, %s served another token", path)
		}
		noWarnings(t, resp, path+" after the upgrade")
	}
	for _, role := range []string{"app", "cc"} {
		if st := e.mustRead("status/" + role).Data; st["token_host"] != a.origin || st["waiting_for_credentials"] != "" {
			t.Fatalf("status/%s after the upgrade: token_host %v, waiting %q", role, st["token_host"], st["waiting_for_credentials"])
		}
	}
	// verify/ of a token the old version stored: to its host (the role's).
	if got := e.mustRead("verify/app").Data["authenticated"]; got != true {
		t.Fatalf("verify/app after the upgrade: authenticated = %v", got)
	}
	if a.Stats().LoginAttempts != aLogins {
		t.Fatalf("the upgrade logged in %d time(s)", a.Stats().LoginAttempts-aLogins)
	}

	// A config write that keeps the host records it for the old roles; a restart
	// then a move: the roles wait, bound to the config in force at the upgrade.
	noWarnings(t, e.mustWrite("config", map[string]any{"refresh_before": "2h"}), "a config write on the same host")
	e = newTestEnv(t, s, clock)
	resp := e.mustWrite("config", map[string]any{"token_url": b.tokenURL(), "verify_url": b.verifyURL()})
	wantWarning(t, resp, "2 role(s)")
	for role, field := range map[string]string{"app": "password", "cc": "client_secret"} {
		st := e.mustRead("status/" + role).Data
		if st["token_host"] != a.origin {
			t.Fatalf("status/%s after the move: token_host %v, want %s", role, st["token_host"], a.origin)
		}
		_, err := e.doRotate(role)
		expectCodedError(t, err, 409, a.origin, b.origin, field)
	}
	r, err := e.read("verify/app") // a token of the first host, verify_url on the second
	expectBadRequest(t, r, err, "verify_url", b.origin, a.origin)
	clock.Advance(24 * time.Hour)
	_, err = e.read("creds/app")
	expectCodedError(t, err, 409, a.origin, b.origin)
	e.runPeriodic()

	// Another restart: the binding is in storage, not in memory.
	e = newTestEnv(t, s, clock)
	_, err = e.read("creds/cc")
	expectCodedError(t, err, 409, a.origin, b.origin, "client_secret")
	b.wantNothing(t, "after the move", secrets)
	if a.Stats().LoginAttempts != aLogins {
		t.Fatalf("%d login(s) at the first host after the upgrade", a.Stats().LoginAttempts-aLogins)
	}

	// Writing the password binds app to b: one login there.
	e.mustWrite("roles/app", map[string]any{"password": pw})
	e.mustRead("creds/app")
	e.mustRead("creds/app")
	if got := b.Stats(); got.LoginAttempts != 1 || got.UserAttempts["app@example.com"] != 1 {
		t.Fatalf("the new host after app's rewrite: %d logins (%v), want 1 of app", got.LoginAttempts, got.UserAttempts)
	}
	if b.saw(cs) || b.saw(tokApp) || b.saw(tokCC) {
		t.Fatal("the new host received cc's client secret or a token of the first host")
	}
}

// The first config write after an upgrade records the host of the config it
// replaces, even when it is the first to move token_url: legacy roles wait.
func TestLegacyRolesWaitAfterTheFirstConfigWriteMovesTokenURL(t *testing.T) {
	clock, a, b, pw := twoHosts(t)
	tok := loginAt(t, a, url.Values{"grant_type": {"password"}, "username": {"app@example.com"}, "password": {pw}})
	s := &logical.InmemStorage{}
	putLegacyRecords(t, s, legacyConfig(a),
		map[string]map[string]any{"app": {"grant_type": "password", "username": "app@example.com", "password": pw, "generation": 1}},
		map[string]map[string]any{"app": legacyToken(tok, clock.Now(), 1)})

	e := newTestEnv(t, s, clock)
	resp := e.mustWrite("config", map[string]any{"token_url": b.tokenURL()})
	wantWarning(t, resp, "1 role(s)")
	wantWarning(t, resp, "verify_url", a.origin, "not on the token host "+b.origin)
	resp = e.mustRead("creds/app")
	if accessToken(t, resp) != tok {
		t.Fatal("creds/app served another token")
	}
	wantWarning(t, resp, a.origin, b.origin, "password")
	_, err := e.doRotate("app")
	expectCodedError(t, err, 409, a.origin, b.origin)
	b.wantNothing(t, "after the move", map[string]string{"the password": pw, "the token": tok})
}

// A mount of the version before bindings that never stored a config used the
// defaults (api.iadvize.com): its roles are bound there, and the first config
// naming another host (or a config delete after a move) leaves them waiting.
func TestLegacyRolesWithoutConfigAreBoundToTheDefaultHost(t *testing.T) {
	clock := fakeclock.New()
	a := startTokenHost(t, clock)
	pw := secretValue("pw-app")
	a.AddUser("app@example.com", pw)
	s := &logical.InmemStorage{}
	putLegacyRecords(t, s, nil,
		map[string]map[string]any{"app": {"grant_type": "password", "username": "app@example.com", "password": pw, "generation": 1}}, nil)
	e := newTestEnv(t, s, clock)
	const iadvize = "https://api.iadvize.com:443"
	if st := e.mustRead("status/app").Data; st["token_host"] != iadvize {
		t.Fatalf("status/app token_host = %v, want %s", st["token_host"], iadvize)
	}
	resp := e.mustWrite("config", map[string]any{"token_url": a.tokenURL(), "verify_url": a.verifyURL()})
	wantWarning(t, resp, "1 role(s)")
	_, err := e.read("creds/app")
	expectCodedError(t, err, 409, iadvize, a.origin, "password")
	a.wantNothing(t, "after the first config", map[string]string{"the password": pw})

	// A config delete restores the defaults: the role may log in there again
	// (nothing is sent in this test: the status says so).
	noWarnings(t, e.do2(logical.DeleteOperation, "config"), "config delete back to the defaults")
	if st := e.mustRead("status/app").Data; st["waiting_for_credentials"] != "" {
		t.Fatalf("status/app on the default config: waiting %q", st["waiting_for_credentials"])
	}
}

// A config delete is a move like a write: it records the legacy host first, and
// counts the roles that wait.
func TestConfigDeleteMovesLikeAWrite(t *testing.T) {
	m := newBoundEnv(t)
	resp := m.do2(logical.DeleteOperation, "config")
	wantWarning(t, resp, "token_url moved to https://api.iadvize.com:443", "2 role(s)")
	_, err := m.doRotate("app")
	expectCodedError(t, err, 409, m.a.origin, "https://api.iadvize.com:443")

	// The first config change after an upgrade may be a delete: roles of the
	// version before bindings stay bound to the config it removed.
	clock := fakeclock.New()
	a := startTokenHost(t, clock)
	s := &logical.InmemStorage{}
	putLegacyRecords(t, s, legacyConfig(a),
		map[string]map[string]any{"app": {"grant_type": "password", "username": "app@example.com", "password": "pw", "generation": 1}}, nil)
	e := newTestEnv(t, s, clock)
	wantWarning(t, e.do2(logical.DeleteOperation, "config"), "1 role(s)")
	if st := e.mustRead("status/app").Data; st["token_host"] != a.origin || st["waiting_for_credentials"] == "" {
		t.Fatalf("legacy role after a config delete: token_host %v, waiting %q", st["token_host"], st["waiting_for_credentials"])
	}
	_, err = e.doRotate("app")
	expectCodedError(t, err, 409, a.origin, "https://api.iadvize.com:443")
}

// ---- tokens only to their issuer ----

// verify_url on another host than token_url: the config write warns, verify/
// answers 400 saying why, and the verify host receives nothing.
func TestVerifyURLOnAnotherHostIsNotUsed(t *testing.T) {
	clock, a, v, pw := twoHosts(t)
	e := newTestEnv(t, nil, clock)
	resp := e.mustWrite("config", map[string]any{"token_url": a.tokenURL(), "verify_url": v.verifyURL()})
	wantWarning(t, resp, "verify_url is on "+v.origin, "not on the token host "+a.origin)
	e.addRole("app", "app@example.com", pw)
	tok := accessToken(t, e.mustRead("creds/app"))
	r, err := e.read("verify/app")
	expectBadRequest(t, r, err, `role "app"`, "verify_url", v.origin, a.origin, "issued")
	v.wantNothing(t, "after verify/", map[string]string{"the token": tok, "the password": pw})

	// Same host, another path: used.
	noWarnings(t, e.mustWrite("config", map[string]any{"verify_url": a.url + "/_authenticated?x=1"}), "verify_url on the token host")
	if got := e.mustRead("verify/app").Data["authenticated"]; got != true {
		t.Fatalf("verify/app on the token host: authenticated = %v", got)
	}
	if a.Stats().VerifyCalls != 1 {
		t.Fatalf("verify calls at the token host = %d, want 1", a.Stats().VerifyCalls)
	}
}

// The default verify_url is iAdvize's: with token_url on another server, the
// config write warns and verify/ answers 400 rather than send that server's
// token to iAdvize.
func TestDefaultVerifyURLWithAnotherTokenHostIsNotUsed(t *testing.T) {
	clock := fakeclock.New()
	e := newTestEnv(t, nil, clock)
	a := startTokenHost(t, clock)
	a.AddClient("cc-client", "cs")
	resp := e.mustWrite("config", map[string]any{"token_url": a.tokenURL()})
	wantWarning(t, resp, "verify_url is on https://api.iadvize.com:443", "not on the token host "+a.origin)
	e.mustWrite("roles/cc", map[string]any{"grant_type": "client_credentials", "client_id": "cc-client", "client_secret": "cs"})
	e.mustRead("creds/cc")
	r, err := e.read("verify/cc")
	expectBadRequest(t, r, err, "https://api.iadvize.com:443", a.origin)
	if a.Stats().VerifyCalls != 0 {
		t.Fatalf("verify calls = %d", a.Stats().VerifyCalls)
	}
	// An empty verify_url silences the warning.
	noWarnings(t, e.mustWrite("config", map[string]any{"verify_url": ""}), "verify_url emptied")
}

// A refused-token report with verify_url on another host acts as with no
// verify_url: no check there, the token dropped and one login at the token
// host, at most once per 5 minutes.
func TestRefusedReportWithVerifyURLOnAnotherHostDoesNotVerify(t *testing.T) {
	clock, a, v, pw := twoHosts(t)
	e := newTestEnv(t, nil, clock)
	e.mustWrite("config", map[string]any{"token_url": a.tokenURL(), "verify_url": v.verifyURL()})
	e.addRole("app", "app@example.com", pw)
	tok := accessToken(t, e.mustRead("creds/app"))
	resp, err := e.do(logical.UpdateOperation, "creds/app", map[string]any{fieldRefusedTokenSHA256: tokenSHA256(tok)})
	if err != nil || resp.IsError() {
		t.Fatalf("report: %v %v", err, respErr(resp))
	}
	next := accessToken(t, resp)
	if next == tok || a.logins("app@example.com") != 2 {
		t.Fatalf("report: same token %v, %d logins at the token host, want a new token from a second login", next == tok, a.logins("app@example.com"))
	}
	_, err = e.do(logical.UpdateOperation, "creds/app", map[string]any{fieldRefusedTokenSHA256: tokenSHA256(next)})
	expectCodedError(t, err, 429, "verify_url")
	v.wantNothing(t, "after reports", map[string]string{"the first token": tok, "the second token": next, "the password": pw})
}

// After token_url and verify_url move to another host, a token the first host
// issued is never sent to the new verify_url (verify/, reports); the token of a
// login at the new host (after the password is written again) is.
func TestTokenFromOldHostIsNeverVerifiedAtTheNewHost(t *testing.T) {
	m := newBoundEnv(t)
	m.point(m.b, m.b)
	for role, tok := range map[string]string{"app": m.tokApp, "cc": m.tokCC} {
		r, err := m.read("verify/" + role)
		expectBadRequest(t, r, err, "verify_url", m.b.origin, m.a.origin)
		_, err = m.report("creds/"+role, tok)
		expectCodedError(t, err, 409)
	}
	m.b.wantNothing(t, "after verify/ and reports", m.secrets())

	m.mustWrite("roles/app", map[string]any{"password": m.pw})
	m.mustRead("creds/app")
	if got := m.mustRead("verify/app").Data["authenticated"]; got != true {
		t.Fatalf("verify/app of the new host's token: authenticated = %v", got)
	}
	if st := m.b.Stats(); st.LoginAttempts != 1 || st.VerifyCalls != 1 {
		t.Fatalf("the new host: %d logins, %d verify calls, want 1 and 1", st.LoginAttempts, st.VerifyCalls)
	}
	if m.b.saw(m.tokApp) || m.b.saw(m.tokCC) || m.b.saw(m.cs) {
		t.Fatal("the new host received a token of the first host, or cc's client secret")
	}
}

// token_url moved, verify_url left on the first host: a token of the first host
// is still checked there (its issuer), and the new host receives nothing.
func TestTokenFromOldHostIsVerifiedAtItsIssuerAfterAMove(t *testing.T) {
	m := newBoundEnv(t)
	resp := m.point(m.b, m.a)
	wantWarning(t, resp, "verify_url is on "+m.a.origin, "not on the token host "+m.b.origin)
	if got := m.mustRead("verify/app").Data["authenticated"]; got != true {
		t.Fatalf("verify/app at the issuer: authenticated = %v", got)
	}
	if m.a.Stats().VerifyCalls != 1 {
		t.Fatalf("verify calls at the issuer = %d, want 1", m.a.Stats().VerifyCalls)
	}
	m.b.wantNothing(t, "after verify/", m.secrets())
}

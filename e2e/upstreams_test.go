package e2e

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/vaulttest"
)

// Upstream answers, as real token endpoints send them (README "Upstreams"):
// one Vault with the plugin, one fake upstream, and one row per answer. Each
// row has its own mount (its own config), role, user and secret; the fake
// sends the row's answer to that user's first login only.

// windowLen is the length of a secret fragment that must never show: any 6
// consecutive characters of a secret, raw or encoded.
const windowLen = 6

// secretForm is a form a secret can be echoed in, and that form's
// windowLen-character windows.
type secretForm struct {
	name    string
	windows []string
}

// secretForms lists every windowLen-character window of secret in each form
// an upstream could echo it in: as written, form-encoded (url.QueryEscape),
// URL path-encoded, JSON-escaped, and base64 (standard and URL alphabets, at
// each of the three byte alignments a secret can have inside a longer
// encoded text).
func secretForms(secret string) []secretForm {
	encodings := []struct {
		name string
		encs []string
	}{
		{"raw", []string{secret}},
		{"form-encoded", []string{url.QueryEscape(secret)}},
		{"URL path", []string{url.PathEscape(secret)}},
		{"JSON", []string{jsonString(secret)}},
		{"base64", nil},
		{"base64 (URL alphabet)", nil},
	}
	for i := 0; i < 3 && i < len(secret); i++ {
		encodings[4].encs = append(encodings[4].encs, base64.StdEncoding.EncodeToString([]byte(secret[i:])))
		encodings[5].encs = append(encodings[5].encs, base64.URLEncoding.EncodeToString([]byte(secret[i:])))
	}
	var forms []secretForm
	for _, e := range encodings {
		f := secretForm{name: e.name}
		for _, enc := range e.encs {
			for i := 0; i+windowLen <= len(enc); i++ {
				f.windows = append(f.windows, enc[i:i+windowLen])
			}
		}
		forms = append(forms, f)
	}
	return forms
}

// jsonString is s as a JSON string, without the quotes (with Go's default
// HTML escaping: '&' is \u0026).
func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b[1 : len(b)-1])
}

// leakedForm names the first form of secret (raw first) a windowLen-character
// window of which text holds, "" when it holds none.
func leakedForm(text, secret string) string {
	for _, f := range secretForms(secret) {
		for _, w := range f.windows {
			if strings.Contains(text, w) {
				return f.name
			}
		}
	}
	return ""
}

func TestSecretWindows(t *testing.T) {
	const secret = "Ab+/=:Cd3&fGh~~~??>"
	for _, tc := range []struct {
		text string
		want string // the form found, "" for none
	}{
		{"error: ...Ab+/=:...", "raw"},
		{"cut after: ...3&fGh", ""},
		{"cut after: ...d3&fGh", "raw"},
		{"description " + url.QueryEscape(secret)[4:12] + " cut", "form-encoded"},
		{"in JSON: " + jsonString(secret)[7:16], "JSON"},
		{"b64: " + base64.StdEncoding.EncodeToString([]byte("xx" + secret))[3:15], "base64"},
		{"b64 url: " + base64.URLEncoding.EncodeToString([]byte("y" + secret))[19:25], "base64 (URL alphabet)"},
		{"five only: Ab+/=", ""},
		{"nothing here", ""},
	} {
		if got := leakedForm(tc.text, secret); got != tc.want {
			t.Errorf("leakedForm(%q) = %q, want %q", tc.text, got, tc.want)
		}
	}
}

// rowSecret is a random secret of n characters from letters and digits, with
// + / = : and & in it when special is set: characters that form, URL, JSON
// and base64 encodings each change.
func rowSecret(n int, special bool) string {
	const alphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
	b := make([]byte, n)
	for i := range b {
		k, _ := rand.Int(rand.Reader, big.NewInt(int64(len(alphabet))))
		b[i] = alphabet[k.Int64()]
	}
	s := string(b)
	if special {
		s = s[:4] + "+" + s[4:8] + "/" + s[8:11] + "=:" + s[11:14] + "&" + s[14:]
	}
	return s
}

// upstreamRow is one answer a real token endpoint sends, and what the plugin
// must make of it.
type upstreamRow struct {
	name   string
	cc     bool              // a client-credentials role; else a password-grant role
	client string            // password grant: "confidential" or "public" client on the role, "" for none
	config map[string]any    // the row mount's config, besides the URLs and refresh_before
	fault  fakeiadvize.Fault // sent to the role's first login; Mode "" for none
	// special puts + / = : & in the role's secret.
	special bool
	// fake sets switches of the fake for the row; they are reset after it.
	fake func(u *upstream)
	// echo marks a row whose upstream echoes the secret: the Vault log is
	// checked for fragments of its secret at the end.
	echo bool
	want func(t *testing.T, c *rowCase)
}

// rowCase is one row under way.
type rowCase struct {
	e                      *env
	row                    upstreamRow
	mount, role            string
	identity               string // the user or client the fake counts the role's logins under
	secret                 string // the password, or the client secret of a client-credentials role
	clientID, clientSecret string // the client of a password-grant role
	before, after          time.Time
	first                  *api.Secret // the first read of creds/
	firstErr               error
}

func (c *rowCase) path(kind string) string { return c.mount + "/" + kind + "/" + c.role }

func (c *rowCase) read() (*api.Secret, error) {
	return c.e.vault.Client.Logical().Read(c.path("creds"))
}

// attempts is how many logins the fake saw for the role's user or client.
func (c *rowCase) attempts() int { return c.e.up.Stats().UserAttempts[c.identity] }

// say is text fit to print: lines holding a fragment of a secret withheld,
// every known secret and token redacted.
func (c *rowCase) say(format string, args ...any) string {
	return c.e.secrets.withhold(fmt.Sprintf(format, args...))
}

// status reads the role's status/.
func (c *rowCase) status(t *testing.T) map[string]any {
	t.Helper()
	s, err := c.e.vault.Client.Logical().Read(c.path("status"))
	if err != nil || s == nil {
		t.Fatal(c.say("read %s: %v", c.path("status"), brief(err)))
	}
	return s.Data
}

// TestUpstreamAnswers runs every row against one real Vault.
func TestUpstreamAnswers(t *testing.T) {
	e := newEnv(t, fakeiadvize.Options{IPLoginsPerMinute: -1}, vaulttest.Options{LogLevel: "trace"})

	// Another loopback host, the target of the redirects: it must never be asked.
	var otherHits atomic.Int64
	other := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		otherHits.Add(1)
		http.Error(w, "the redirect was followed", http.StatusTeapot)
	}))
	otherHost := "127.0.0.2"
	if ln, err := net.Listen("tcp", "127.0.0.2:0"); err == nil {
		other.Listener.Close()
		other.Listener = ln
	} else {
		otherHost = "localhost" // no 127.0.0.2 here: the same loopback, under another name
	}
	other.Start()
	t.Cleanup(other.Close)
	_, otherPort, _ := net.SplitHostPort(other.Listener.Addr().String())
	otherTokenURL := "http://" + net.JoinHostPort(otherHost, otherPort) + "/oauth2/token"

	const day = 24 * time.Hour
	rows := []upstreamRow{
		// Valid token answers (README "Upstreams"): served.
		{name: "json-text-plain", fault: fault(fakeiadvize.FaultJSONTextPlain), want: served(day)},
		{name: "json-text-html", fault: fault(fakeiadvize.FaultJSONTextHTML), want: served(day)},
		{name: "json-no-content-type", fault: fault(fakeiadvize.FaultJSONNoContentType), want: served(day)},
		{name: "json-charset", fault: fault(fakeiadvize.FaultJSONCharset), want: served(day)},
		{name: "json-bom", fault: fault(fakeiadvize.FaultJSONBOM), want: served(day)},
		{name: "form-token", fault: fault(fakeiadvize.FaultFormToken), want: served(day)},
		{name: "expires-decimal", fault: fault(fakeiadvize.FaultDecimalExpiresIn), want: served(3599500 * time.Millisecond)},
		{name: "expires-string", fault: fault(fakeiadvize.FaultStringExpiresIn), want: served(time.Hour)},
		{name: "expires-huge", fault: fault(fakeiadvize.FaultHugeExpiresIn), want: servedOneYear},
		{name: "type-lowercase", fault: fault(fakeiadvize.FaultLowercaseTokenType), want: served(day)},
		{name: "type-uppercase", fault: fault(fakeiadvize.FaultUppercaseTokenType), want: served(day)},
		{name: "type-absent", fault: fault(fakeiadvize.FaultNoTokenType), want: served(day)},
		{name: "no-expires-default", config: map[string]any{"default_expires_in": "2h"},
			fault: fault(fakeiadvize.FaultNoExpiresIn), want: served(2 * time.Hour)},
		{name: "no-expires-malformed", fault: fault(fakeiadvize.FaultNoExpiresIn), want: malformed},

		// Errors in a 200 (RFC 6749 §5.2 codes): rejected unless the code says temporary.
		{name: "error200-rejected", cc: true, fault: fault(fakeiadvize.FaultError200Credentials), want: rejected},
		{name: "error200-temporary", fault: fault(fakeiadvize.FaultError200Temporary), want: transient},

		// Upstream echoes the secret: never shown, in any form.
		{name: "echo-raw", special: true, echo: true, fault: fault(fakeiadvize.FaultEchoSecret), want: rejectedScrubbed},
		{name: "echo-urlencoded", special: true, echo: true, fault: fault(fakeiadvize.FaultEchoSecretURLEncoded), want: rejectedScrubbed},
		{name: "echo-base64", special: true, echo: true, fault: fault(fakeiadvize.FaultEchoSecretBase64), want: rejectedScrubbed},
		{name: "echo-form-body", special: true, echo: true, fault: fault(fakeiadvize.FaultEchoSecretForm), want: rejectedScrubbed},
		{name: "echo-cc", cc: true, special: true, echo: true, fault: fault(fakeiadvize.FaultEchoSecret), want: rejectedScrubbed},

		// Retry-After: honoured up to one hour.
		{name: "retry-after-year-429", fault: fakeiadvize.Fault{Mode: fakeiadvize.FaultRateLimit, RetryAfter: 31536000},
			want: retryAfterCapped(http.StatusTooManyRequests)},
		{name: "retry-after-year-503", fault: fakeiadvize.Fault{Mode: fakeiadvize.FaultUnavailableRetryAfter, RetryAfter: 31536000},
			want: retryAfterCapped(http.StatusBadGateway, http.StatusTooManyRequests)},
		{name: "retry-after-503", fault: fakeiadvize.Fault{Mode: fakeiadvize.FaultUnavailableRetryAfter, RetryAfter: 4},
			want: retryAfterHonoured(4 * time.Second)},

		// Redirects: never followed.
		{name: "redirect-302", fault: fakeiadvize.Fault{Mode: fakeiadvize.FaultRedirect, Location: otherTokenURL},
			want: notFollowed(&otherHits)},
		{name: "redirect-307", fault: fakeiadvize.Fault{Mode: fakeiadvize.FaultRedirect, Status: http.StatusTemporaryRedirect, Location: otherTokenURL},
			want: notFollowed(&otherHits)},

		// Client authentication (RFC 6749 §2.3.1; README, "Upstreams").
		{name: "auth-basic-raw", cc: true, special: true, config: map[string]any{"client_auth": "basic"},
			fake: func(u *upstream) { _ = u.SetBasicAuth(fakeiadvize.BasicAuthRaw) },
			want: all(served(day), sentClient(fakeiadvize.ClientAuthBasic, nil))},
		{name: "auth-basic-default", cc: true, special: true,
			fake: func(u *upstream) { _ = u.SetBasicAuth(fakeiadvize.BasicAuthRaw) },
			want: all(served(day), sentClient(fakeiadvize.ClientAuthBasic, nil))},
		{name: "auth-basic-urlencoded", cc: true, special: true, config: map[string]any{"client_auth": "basic_urlencoded"},
			fake: func(u *upstream) { _ = u.SetBasicAuth(fakeiadvize.BasicAuthURLEncoded) },
			want: all(served(day), sentClient(fakeiadvize.ClientAuthBasic, nil))},
		{name: "auth-post", cc: true, special: true, config: map[string]any{"client_auth": "post"},
			want: all(served(day), sentClient(fakeiadvize.ClientAuthPost, ptr(true)))},
		{name: "password-client-basic", client: "confidential", special: true,
			fake: func(u *upstream) { u.SetRequireClient(true) },
			want: all(served(day), sentClient(fakeiadvize.ClientAuthBasic, nil))},
		{name: "password-client-post", client: "confidential", special: true, config: map[string]any{"client_auth": "post"},
			fake: func(u *upstream) { u.SetRequireClient(true) },
			want: all(served(day), sentClient(fakeiadvize.ClientAuthPost, ptr(true)))},
		{name: "password-public-client", client: "public",
			fake: func(u *upstream) { u.SetRequireClient(true) },
			want: all(served(day), sentClient(fakeiadvize.ClientAuthNone, ptr(true)))},
	}

	var cases []*rowCase
	for _, row := range rows {
		c := &rowCase{e: e, row: row, mount: "up-" + row.name, role: row.name}
		cases = append(cases, c)
		t.Run(row.name, func(t *testing.T) { runRow(t, c) })
	}

	// Vault's own log, at trace level: no fragment of an echoed secret, no
	// whole secret or token of any row.
	t.Run("vault-log", func(t *testing.T) {
		e.vault.Stop() // flushes the log
		vaultLog := e.vault.Log()
		if !strings.Contains(vaultLog, "[TRACE]") {
			t.Errorf("the vault log has no trace line: was it at trace level?")
		}
		for _, c := range cases {
			if !c.row.echo || c.secret == "" {
				continue
			}
			if form := leakedForm(vaultLog, c.secret); form != "" {
				t.Errorf("the vault log holds a %d-character fragment of the secret of row %s (%s form)", windowLen, c.row.name, form)
			}
		}
		if leaked := e.secrets.found(vaultLog); len(leaked) > 0 {
			t.Errorf("the vault log holds %d whole secret(s) or token(s)", len(leaked))
		}
	})
}

// runRow sets up a row (mount, config, upstream user or client, role),
// injects its fault, reads creds/ once and hands over to the row's checks.
func runRow(t *testing.T, c *rowCase) {
	e, row := c.e, c.row
	if err := e.vault.Client.Sys().Mount(c.mount, &api.MountInput{Type: vaulttest.PluginName}); err != nil {
		t.Fatalf("vault secrets enable -path=%s: %v", c.mount, brief(err))
	}
	cfg := map[string]any{
		"token_url":  e.up.URL + "/oauth2/token",
		"verify_url": e.up.URL + "/_authenticated",
		// No refresh of these tokens during the run (the shortest lives 1 h).
		"refresh_before": "1m",
	}
	for k, v := range row.config {
		cfg[k] = v
	}
	if _, err := e.vault.Client.Logical().Write(c.mount+"/config", cfg); err != nil {
		t.Fatalf("write %s/config %v: %v", c.mount, row.config, brief(err))
	}
	if row.fake != nil {
		row.fake(e.up)
		t.Cleanup(func() {
			_ = e.up.SetBasicAuth(fakeiadvize.BasicAuthRaw)
			e.up.SetRequireClient(false)
		})
	}

	c.secret = rowSecret(16, row.special)
	e.secrets.add(c.secret)
	var role map[string]any
	if row.cc {
		c.identity = "client-" + row.name
		e.up.AddClient(c.identity, c.secret)
		role = map[string]any{"grant_type": "client_credentials", "client_id": c.identity, "client_secret": c.secret}
	} else {
		c.identity = "svc-" + row.name
		e.up.AddUser(c.identity, c.secret)
		role = map[string]any{"username": c.identity, "password": c.secret}
		switch row.client {
		case "confidential":
			c.clientID, c.clientSecret = "app-"+row.name, rowSecret(16, row.special)
			e.secrets.add(c.clientSecret)
			e.up.AddClient(c.clientID, c.clientSecret)
			role["client_id"], role["client_secret"] = c.clientID, c.clientSecret
		case "public":
			c.clientID = "app-" + row.name
			e.up.AddPublicClient(c.clientID)
			role["client_id"] = c.clientID
		}
	}
	if _, err := e.vault.Client.Logical().Write(c.path("roles"), role); err != nil {
		t.Fatal(c.say("write %s: %v", c.path("roles"), brief(err)))
	}
	if row.fault.Mode != "" {
		f := row.fault
		f.Count, f.User = 1, c.identity
		if err := e.up.InjectFault(f); err != nil {
			t.Fatalf("inject %s: %v", f.Mode, err)
		}
		// Whatever happens, the next row starts without this fault.
		t.Cleanup(func() {
			if st := e.up.Stats(); st.Fault.User == c.identity {
				e.up.ClearFault()
			}
		})
	}

	c.before = time.Now()
	c.first, c.firstErr = c.read()
	c.after = time.Now()
	if c.firstErr != nil {
		t.Log(c.say("first read of %s: %s", c.path("creds"), brief(c.firstErr)))
	}
	// Whatever the row, no fragment of its secrets in the answer or status/.
	st := c.status(t)
	for _, s := range []string{c.secret, c.clientSecret} {
		if s == "" {
			continue
		}
		if c.firstErr != nil {
			if form := leakedForm(c.firstErr.Error(), s); form != "" {
				t.Errorf("the read's error holds a %d-character fragment of the secret (%s form)", windowLen, form)
			}
		}
		for k, v := range st {
			if form := leakedForm(fmt.Sprint(v), s); form != "" {
				t.Errorf("status/ %s holds a %d-character fragment of the secret (%s form)", k, windowLen, form)
			}
		}
	}
	row.want(t, c)
}

func fault(mode fakeiadvize.FaultMode) fakeiadvize.Fault { return fakeiadvize.Fault{Mode: mode} }

func ptr[T any](v T) *T { return &v }

func all(checks ...func(*testing.T, *rowCase)) func(*testing.T, *rowCase) {
	return func(t *testing.T, c *rowCase) {
		t.Helper()
		for _, check := range checks {
			check(t, c)
		}
	}
}

// served: the first read gives the fake's token as Bearer, expiring lifetime
// after the login, after one login.
func served(lifetime time.Duration) func(*testing.T, *rowCase) {
	return func(t *testing.T, c *rowCase) {
		t.Helper()
		checkServed(t, c, lifetime, lifetime)
	}
}

// servedOneYear: an expires_in above a year counts as one year.
func servedOneYear(t *testing.T, c *rowCase) {
	t.Helper()
	checkServed(t, c, 365*24*time.Hour, 366*24*time.Hour)
}

func checkServed(t *testing.T, c *rowCase, minLife, maxLife time.Duration) {
	t.Helper()
	if c.firstErr != nil {
		t.Fatal(c.say("read %s: %s, want a token", c.path("creds"), brief(c.firstErr)))
	}
	if tok := accessToken(c.first); tok == "" || !c.e.up.wasIssued(tok) {
		t.Errorf("access_token is not one the fake issued")
	}
	if tt := c.first.Data["token_type"]; tt != "Bearer" {
		t.Errorf("token_type = %v, want Bearer", tt)
	}
	raw, _ := c.first.Data["expire_time"].(string)
	exp, err := time.Parse(time.RFC3339, raw)
	// expire_time is RFC 3339, to the second at least: one second of slack.
	lo, hi := c.before.Add(minLife-time.Second), c.after.Add(maxLife+time.Second)
	switch {
	case err != nil:
		t.Errorf("expire_time %q is not RFC 3339: %v", raw, err)
	case exp.Before(lo) || exp.After(hi):
		t.Errorf("expire_time %s is %s after the read, want %s to %s", raw,
			exp.Sub(c.before).Round(time.Second), minLife, maxLife)
	}
	if n := c.attempts(); n != 1 {
		t.Errorf("logins upstream = %d, want 1", n)
	}
}

// failedRead checks that the first read failed with one of codes (any when
// none) and names the role.
func failedRead(t *testing.T, c *rowCase, codes ...int) {
	t.Helper()
	if c.firstErr == nil {
		t.Fatalf("read %s: served a token, want an error", c.path("creds"))
	}
	if len(codes) > 0 {
		code, ok := statusCode(c.firstErr), false
		for _, want := range codes {
			ok = ok || code == want
		}
		if !ok {
			t.Errorf("%s", c.say("read %s: %s, want HTTP %v", c.path("creds"), brief(c.firstErr), codes))
		}
	}
	if !strings.Contains(c.firstErr.Error(), c.role) {
		t.Errorf("%s", c.say("the error does not name the role: %s", brief(c.firstErr)))
	}
}

// rejected: one attempt, "credentials rejected" in status/, no further
// upstream attempt on the next reads.
func rejected(t *testing.T, c *rowCase) {
	t.Helper()
	failedRead(t, c, http.StatusBadGateway)
	for i := 0; i < 3; i++ {
		if _, err := c.read(); err == nil {
			t.Fatalf("read %d after the rejection served a token", i+2)
		}
	}
	if n := c.attempts(); n != 1 {
		t.Errorf("logins upstream = %d after 4 reads, want 1", n)
	}
	if st := c.status(t); st["credentials_rejected"] != true {
		t.Errorf("%s", c.say("status credentials_rejected = %v (last_outcome %v), want true", st["credentials_rejected"], st["last_outcome"]))
	}
}

// rejectedScrubbed: rejected, and (checked for every row by runRow, and for
// the Vault log at the end) no fragment of the echoed secret anywhere.
func rejectedScrubbed(t *testing.T, c *rowCase) {
	t.Helper()
	rejected(t, c)
	st := c.status(t)
	if le, _ := st["last_error"].(string); le == "" {
		t.Errorf("status last_error is empty: the failure should still be described")
	}
}

// notRejectedThenServed: the failure is not taken as a rejection, nothing is
// cached, and once the plugin's wait is over a read logs in again and is served.
func notRejectedThenServed(t *testing.T, c *rowCase) {
	t.Helper()
	st := c.status(t)
	if st["credentials_rejected"] != false {
		t.Errorf("%s", c.say("status credentials_rejected = %v (last_error %v), want false", st["credentials_rejected"], st["last_error"]))
	}
	if st["has_token"] != false {
		t.Errorf("status has_token = %v after a failed first login, want false", st["has_token"])
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		// The backoff starts at 1 s: a read within half of that after the
		// failure (jitter allowed for) must not reach upstream.
		early := time.Since(c.before) < 500*time.Millisecond
		s, err := c.read()
		if early && c.attempts() > 1 {
			t.Errorf("a read %s after the failure logged in again, before any backoff", time.Since(c.before).Round(time.Millisecond))
		}
		if err == nil {
			if tok := accessToken(s); !c.e.up.wasIssued(tok) {
				t.Errorf("after the backoff: access_token is not one the fake issued")
			}
			if n := c.attempts(); n != 2 {
				t.Errorf("logins upstream = %d, want 2 (the failed one, then one after the backoff)", n)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(c.say("no token 60 s after a transient failure: %s", brief(err)))
		}
		time.Sleep(200 * time.Millisecond) // polling a real Vault until its backoff ends
	}
}

// transient: an upstream failure (HTTP 502 to the reader), backed off, not a rejection.
func transient(t *testing.T, c *rowCase) {
	t.Helper()
	failedRead(t, c, http.StatusBadGateway)
	notRejectedThenServed(t, c)
}

// malformed: refused, never cached, backed off like a transient failure.
func malformed(t *testing.T, c *rowCase) {
	t.Helper()
	failedRead(t, c, http.StatusBadGateway)
	notRejectedThenServed(t, c)
}

// notFollowed: a redirect to another host is not followed (that host gets
// no request) and is a transient failure.
func notFollowed(hits *atomic.Int64) func(*testing.T, *rowCase) {
	return func(t *testing.T, c *rowCase) {
		t.Helper()
		failedRead(t, c, http.StatusBadGateway)
		if n := hits.Load(); n != 0 {
			t.Errorf("the redirect target got %d request(s), want none", n)
		}
		notRejectedThenServed(t, c)
		if n := hits.Load(); n != 0 {
			t.Errorf("the redirect target got %d request(s), want none", n)
		}
	}
}

// The times a message names: RFC 3339 instants, and Go durations after "in ".
var (
	rfc3339Re  = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)`)
	durationRe = regexp.MustCompile(`\bin ((?:\d+h)?(?:\d+m)?(?:\d+(?:\.\d+)?s)?)\b`)
)

// retryAfterCapped: a Retry-After of a year is honoured for one hour at most:
// neither status/ no_login_before nor any time or wait in the read's error is
// more than an hour away.
func retryAfterCapped(codes ...int) func(*testing.T, *rowCase) {
	return func(t *testing.T, c *rowCase) {
		t.Helper()
		failedRead(t, c, codes...)
		limit := c.after.Add(time.Hour + 2*time.Second) // the status rounds up to the second
		st := c.status(t)
		raw, _ := st["no_login_before"].(string)
		nlb, err := time.Parse(time.RFC3339, raw)
		switch {
		case err != nil:
			t.Errorf("status no_login_before %q: %v, want a time at most 1 h away", raw, err)
		case nlb.After(limit):
			t.Errorf("status no_login_before %s is %s away, want at most 1 h", raw, nlb.Sub(c.after).Round(time.Second))
		}
		msg := c.firstErr.Error()
		for _, m := range rfc3339Re.FindAllString(msg, -1) {
			if ts, err := time.Parse(time.RFC3339, m); err == nil && ts.After(limit) {
				t.Errorf("the read's error names %s, more than 1 h away", m)
			}
		}
		for _, m := range durationRe.FindAllStringSubmatch(msg, -1) {
			if d, err := time.ParseDuration(m[1]); err == nil && d > time.Hour+2*time.Second {
				t.Errorf("the read's error names a wait of %s, more than 1 h", m[1])
			}
		}
		// A read now does not reach upstream.
		if _, err := c.read(); err == nil {
			t.Errorf("a read during the wait served a token")
		}
		if n := c.attempts(); n != 1 {
			t.Errorf("logins upstream = %d during the wait, want 1", n)
		}
	}
}

// retryAfterHonoured: no login before the Retry-After of a 503 has passed,
// then one login serves.
func retryAfterHonoured(wait time.Duration) func(*testing.T, *rowCase) {
	return func(t *testing.T, c *rowCase) {
		t.Helper()
		failedRead(t, c, http.StatusBadGateway, http.StatusTooManyRequests)
		if st := c.status(t); st["credentials_rejected"] != false {
			t.Errorf("status credentials_rejected = %v, want false", st["credentials_rejected"])
		}
		deadline := c.after.Add(wait + 60*time.Second)
		for {
			// The answer came before c.after; a second of slack for rounding.
			early := time.Since(c.before) < wait-time.Second
			s, err := c.read()
			n := c.attempts()
			if early && n > 1 {
				t.Fatalf("a login %s after a 503 with Retry-After %s", time.Since(c.before).Round(100*time.Millisecond), wait)
			}
			if err == nil {
				if tok := accessToken(s); !c.e.up.wasIssued(tok) {
					t.Errorf("access_token is not one the fake issued")
				}
				if n != 2 {
					t.Errorf("logins upstream = %d, want 2", n)
				}
				return
			}
			if time.Now().After(deadline) {
				t.Fatal(c.say("no token %s after a 503 with Retry-After %s: %s", wait+60*time.Second, wait, brief(err)))
			}
			time.Sleep(200 * time.Millisecond) // polling a real Vault through the wait
		}
	}
}

// sentClient: the last token request authenticated its client as auth, with
// the role's client, and (when inForm is set) with client_id in the form body
// or not.
func sentClient(auth string, inForm *bool) func(*testing.T, *rowCase) {
	return func(t *testing.T, c *rowCase) {
		t.Helper()
		st := c.e.up.Stats()
		wantID := c.clientID
		if c.row.cc {
			wantID = c.identity
		}
		if st.LastClientAuth != auth || st.LastClientID != wantID {
			t.Errorf("the login authenticated its client as %q with client_id %q, want %q with %q",
				st.LastClientAuth, st.LastClientID, auth, wantID)
		}
		if inForm != nil && st.LastClientIDInForm != *inForm {
			t.Errorf("client_id in the form body: %v, want %v", st.LastClientIDInForm, *inForm)
		}
	}
}

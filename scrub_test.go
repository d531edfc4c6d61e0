package iadvize

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// secretFragments is the test's own statement of what may never be repeated: every
// 6-character piece of a secret as written, URL/form-encoded, JSON-encoded and
// base64-encoded (at each alignment, alone or after "id:" as HTTP Basic carries
// it), compared without regard to case. It is written independently of the
// redactor so that each can check the other.
func secretFragments(secret string) []string {
	forms := []string{secret, url.QueryEscape(secret), url.PathEscape(secret)}
	if j, err := json.Marshal(secret); err == nil {
		forms = append(forms, strings.Trim(string(j), `"`))
	}
	for _, prefix := range []string{"", "x", "xy", "client:", "id:"} {
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
			full := enc.EncodeToString([]byte(prefix + secret))
			// Drop the characters that mix in the prefix or the padding.
			from := (len(prefix)*8 + 5) / 6
			to := (len(prefix) + len(secret)) * 8 / 6
			if from < to && to <= len(full) {
				forms = append(forms, full[from:to])
			}
		}
	}
	var frags []string
	for _, f := range forms {
		for i := 0; i+secretWindow <= len(f); i++ {
			frags = append(frags, strings.ToLower(f[i:i+secretWindow]))
		}
	}
	return frags
}

// leaked names the first fragment of a secret found in text, "" when none.
func leaked(text, secret string) string {
	lower := strings.ToLower(text)
	for _, f := range secretFragments(secret) {
		if strings.Contains(lower, f) {
			return f
		}
	}
	return ""
}

func everyBytePercent(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		fmt.Fprintf(&b, "%%%02X", s[i])
	}
	return b.String()
}

func TestRedactorWithholdsEveryEncodingOfASecret(t *testing.T) {
	const secret = "s3cr/t+K3y=Pa55:w0rd é"
	r := newRedactor("other-secret", secret)
	filler := strings.Repeat("the server says no. ", 10) // 200 characters
	b64 := base64.StdEncoding.EncodeToString([]byte("client:" + secret))
	for name, text := range map[string]string{
		"raw":                     filler + secret,
		"raw, 6 characters":       filler + secret[5:11] + filler,
		"other case":              filler + strings.ToUpper(secret[:8]),
		"form-encoded":            filler + url.QueryEscape(secret),
		"form-encoded tail":       filler + "w0rd+%C3",
		"percent-encoded":         filler + url.PathEscape(secret),
		"percent-encoded tail":    filler + "w0rd%20%C3%A9",
		"lower-case percent hex":  filler + strings.ToLower(url.QueryEscape(secret)),
		"form-decoded by mistake": filler + strings.ReplaceAll(secret, "+", " "),
		"JSON":                    filler + jsonString(secret, true),
		"JSON, ASCII only":        filler + asciiJSONString(secret),
		"base64 of Basic":         filler + b64,
		"base64, 6 characters":    filler + b64[12:18],
		"base64 URL alphabet":     filler + base64.RawURLEncoding.EncodeToString([]byte("xy"+secret)),
		"the other secret":        "other-secret",
		// Encodings the secret's forms do not list, undone by a decoder of the text.
		"JSON with escaped slashes":   filler + strings.ReplaceAll(jsonString(secret, false), "/", `\/`),
		"every byte percent-encoded":  filler + everyBytePercent(secret),
		"hex":                         filler + hex.EncodeToString([]byte(secret)),
		"hex, upper case":             filler + strings.ToUpper(hex.EncodeToString([]byte(secret))),
		"HTML character references":   filler + "Pa55&#58;w0rd&#x20;&eacute;",
		"ISO 8859-1 percent-encoded":  filler + "w0rd%20%E9",
		"mojibake":                    filler + "w0rd Ã©",
		"cut into 5-character pieces": filler + "s3cr/ t+K3y =Pa55 :w0rd",
	} {
		if got := r.clean(text); got != withheld {
			t.Errorf("%s: not withheld", name)
		}
	}
	for _, text := range []string{"", filler, "invalid_grant", "s3cr/", "Pa55:"} {
		if got := r.clean(text); got != text {
			t.Errorf("%q withheld, though it holds no 6 characters of a secret", text)
		}
	}
	if got := newRedactor().clean("anything " + secret); got != "anything "+secret {
		t.Error("a redactor without secrets withheld text")
	}
}

// TestSecretEchoesNeverLeaveThePlugin: upstream error text that echoes a secret
// (raw, cut, encoded, in any field) reaches no read error, status/ field, stored
// entry or log line; the rest of the failure is still reported.
func TestSecretEchoesNeverLeaveThePlugin(t *testing.T) {
	const password = "p@ss/W0rd+Echo=1"
	const clientSecret = "cl!ent-S3cret/+="
	padding := strings.Repeat("x", 185)
	cases := []struct {
		name string
		body func(secret string) string
		ct   string
	}{
		{"description echoes it after 185 characters", func(s string) string {
			return `{"error":"invalid_grant","error_description":"` + padding + ` password ` + s + ` is wrong"}`
		}, jsonType},
		{"description echoes it form-encoded", func(s string) string {
			return `{"error":"invalid_grant","error_description":"bad credentials: password=` + url.QueryEscape(s) + `"}`
		}, jsonType},
		{"description echoes it JSON-escaped", func(s string) string {
			return `{"error":"invalid_grant","error_description":"got ` + strings.ReplaceAll(asciiJSONString(s), "/", `\/`) + `"}`
		}, jsonType},
		{"description echoes 7 characters of it", func(s string) string {
			return `{"error":"invalid_grant","error_description":"password starts with ` + s[:7] + `"}`
		}, jsonType},
		{"description echoes the Basic header", func(s string) string {
			return `{"error":"invalid_client","error_description":"Authorization: Basic ` +
				base64.StdEncoding.EncodeToString([]byte("svc@example.com:"+s)) + `"}`
		}, jsonType},
		{"error code echoes it", func(s string) string {
			return `{"error":"` + s + `"}`
		}, jsonType},
		{"form-encoded error body", func(s string) string {
			return "error=invalid_grant&error_description=" + url.QueryEscape(padding+" "+s)
		}, formType},
		{"200 with an error that echoes it", func(s string) string {
			return `{"error":"bad_password","error_description":"` + s + `"}`
		}, jsonType},
		{"description echoes it with JSON-escaped slashes", func(s string) string {
			return `{"error":"invalid_request","error_description":"bad request {\"password\":\"` +
				strings.ReplaceAll(s, "/", `\\/`) + `\"}"}`
		}, jsonType},
		{"split between error and error_description", func(s string) string {
			return `{"error":"x_` + s[:5] + `","error_description":"` + s[5:] + `"}`
		}, jsonType},
	}
	for _, tc := range cases {
		for _, role := range []struct {
			name   string
			data   map[string]any
			secret string
		}{
			{"password", map[string]any{"username": "svc@example.com", "password": password}, password},
			{"client secret", map[string]any{"grant_type": "client_credentials", "client_id": "svc", "client_secret": clientSecret}, clientSecret},
			{"client secret of a password role", map[string]any{"username": "svc@example.com", "password": password,
				"client_id": "svc", "client_secret": clientSecret}, clientSecret},
		} {
			t.Run(tc.name+"/"+role.name, func(t *testing.T) {
				status := 400
				if strings.HasPrefix(tc.name, "200") {
					status = 200
				}
				u := newUpstream(t, rawAnswer(status, tc.ct, nil, tc.body(role.secret)))
				e := newTestEnv(t, nil, nil)
				e.configure(u, nil)
				e.mustWrite("roles/app", role.data)

				_, readErr := e.read("creds/app")
				if readErr == nil {
					t.Fatal("the read succeeded")
				}
				_, rotateErr := e.write("rotate-role/app", nil)
				if rotateErr == nil {
					t.Fatal("rotate-role succeeded")
				}
				if !strings.Contains(readErr.Error(), "rejected") || !strings.Contains(readErr.Error(), "HTTP") {
					t.Errorf("the read's error no longer says what happened: %q", readErr)
				}
				status1 := e.mustRead("status/app")
				surfaces := map[string]string{
					"read error":   readErr.Error(),
					"rotate error": rotateErr.Error(),
					"status/":      fmt.Sprint(status1.Data),
					"log":          e.logs.String(),
				}
				for k, v := range storageSnapshot(t, e.storage) {
					if !strings.HasPrefix(k, rolesStoragePrefix) { // the role holds its secret
						surfaces["storage "+k] = v
					}
				}
				for where, text := range surfaces {
					if leaked(text, password) != "" || leaked(text, clientSecret) != "" {
						t.Errorf("%s holds a fragment of a secret", where)
					}
				}
				if !strings.Contains(readErr.Error(), withheld) {
					t.Errorf("the read's error does not say upstream text was withheld")
				}
			})
		}
	}
}

// TestSecretWithSlashesEchoedAsJSONIsWithheld: a password cut by slashes every two
// characters, echoed inside nested JSON as PHP writes it ("\/"), reaches neither
// the read's error, status/ nor the log.
func TestSecretWithSlashesEchoedAsJSONIsWithheld(t *testing.T) {
	const password = "Pa/ss/wo/rd/12/34"
	u := newUpstream(t, rawAnswer(400, jsonType, nil,
		`{"error":"invalid_request","error_description":"bad request {\"password\":\"Pa\\/ss\\/wo\\/rd\\/12\\/34\"}"}`))
	e := newTestEnv(t, nil, nil)
	e.configure(u, nil)
	e.addRole("app", "svc@example.com", password)
	_, err := e.read("creds/app")
	if err == nil {
		t.Fatal("the read succeeded")
	}
	for where, text := range map[string]string{
		"error": err.Error(), "status/": fmt.Sprint(e.mustRead("status/app").Data), "log": e.logs.String(),
	} {
		if strings.Contains(text, `Pa\/ss`) || leaked(text, password) != "" {
			t.Errorf("%s holds the password", where)
		}
	}
}

// TestVerifyErrorsNeverEchoTheToken: verify/ reports a failed check without
// upstream text that could hold the token or a secret.
func TestVerifyErrorsNeverEchoTheToken(t *testing.T) {
	const tok = "tok-Q7zX9wL2mK4pR8"
	u := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/_authenticated" {
			rawAnswer(500, jsonType, nil, `{"error":"server_error","error_description":"token `+tok+` unknown"}`)(w, r)
			return
		}
		rawAnswer(200, jsonType, nil, `{"access_token":"`+tok+`","expires_in":3600}`)(w, r)
	})
	e := newTestEnv(t, nil, nil)
	e.configure(u, nil)
	e.addRole("app", "svc@example.com", "pw-Secret-42")
	e.mustRead("creds/app")
	_, err := e.read("verify/app")
	if err == nil {
		t.Fatal("verify succeeded against a 500")
	}
	for where, text := range map[string]string{"error": err.Error(), "log": e.logs.String()} {
		if leaked(text, tok) != "" {
			t.Errorf("verify's %s holds a fragment of the token", where)
		}
	}
}

// secretSink gathers everything a caller or an operator can see: responses,
// warnings, errors.
type secretSink struct{ b strings.Builder }

func (s *secretSink) add(resp *logical.Response, err error) {
	if err != nil {
		s.b.WriteString(err.Error())
		s.b.WriteByte('\n')
	}
	if resp != nil {
		raw, jerr := json.Marshal(resp)
		if jerr != nil {
			s.b.WriteString("unencodable response")
		}
		s.b.Write(raw)
		s.b.WriteString(strings.Join(resp.Warnings, "\n"))
		if resp.IsError() {
			s.b.WriteString(resp.Error().Error())
		}
		s.b.WriteByte('\n')
	}
}

func TestSecretsNeverAppearInResponsesErrorsWarningsOrLogs(t *testing.T) {
	const (
		pwGood    = "PW-good-7Hq2"
		pwWrong   = "PW-wrong-9Zx4"
		pwBoom    = "PW-boom-3Kd8"
		csGood    = "CS-good-5Mv1"
		csWrong   = "CS-wrong-2Lp6"
		pwNew     = "PW-new-8Rt3"
		tokPrefix = "AT-x7c2-"
	)
	secrets := []string{pwGood, pwWrong, pwBoom, csGood, csWrong, pwNew}
	var n atomic.Int64
	issue := func(w http.ResponseWriter, lifetime int) {
		jsonAnswer(200, map[string]any{
			"access_token": tokPrefix + itoa(n.Add(1)), "expires_in": lifetime, "token_type": "Bearer",
		})(w, nil)
	}
	u := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/_authenticated" {
			jsonAnswer(200, map[string]any{"authenticated": true})(w, r)
			return
		}
		_ = r.ParseForm()
		f := r.PostForm
		// Upstream that echoes what it was sent, the worst case for the plugin.
		if f.Get("grant_type") == "client_credentials" {
			id, secret, _ := r.BasicAuth()
			if secret != csGood {
				jsonAnswer(http.StatusUnauthorized, map[string]any{
					"error": "invalid_client", "error_description": "bad secret " + secret + " for " + id,
				})(w, r)
				return
			}
			issue(w, 3600)
			return
		}
		switch f.Get("password") {
		case pwGood, pwNew:
			issue(w, 86400)
		case pwBoom:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte(`{"error":"server_error","error_description":"crashed on password ` + f.Get("password") + `"}`))
		default:
			jsonAnswer(http.StatusUnauthorized, map[string]any{
				"error": "invalid_grant", "error_description": "wrong password " + f.Get("password") + " for " + f.Get("username"),
			})(w, r)
		}
	})
	e := newTestEnv(t, nil, nil)
	sink := &secretSink{}  // everything but the token answers
	creds := &secretSink{} // creds/ and static-creds/ answers, which carry the token
	wr := func(path string, data map[string]any) {
		sink.add(e.write(path, data))
	}
	rd := func(path string) {
		resp, err := e.read(path)
		if strings.HasPrefix(path, "creds/") || strings.HasPrefix(path, "static-creds/") {
			if resp != nil && !resp.IsError() {
				d := map[string]any{}
				for k, v := range resp.Data {
					if k != "access_token" {
						d[k] = v
					}
				}
				sink.add(&logical.Response{Data: d, Warnings: resp.Warnings}, err)
				creds.add(resp, err)
				return
			}
		}
		sink.add(resp, err)
	}

	// Config, roles, lists.
	e.configure(u, nil)
	rd("config")
	wr("roles/good", map[string]any{"username": "good@example.com", "password": pwGood, "scope": "all"})
	wr("roles/wrong", map[string]any{"username": "wrong@example.com", "password": pwWrong})
	wr("roles/boom", map[string]any{"username": "boom@example.com", "password": pwBoom})
	wr("roles/shared", map[string]any{"username": "good@example.com", "password": pwGood}) // warning
	wr("roles/cc", map[string]any{"grant_type": "client_credentials", "client_id": "cid", "client_secret": csGood})
	wr("roles/ccwrong", map[string]any{"grant_type": "client_credentials", "client_id": "cid2", "client_secret": csWrong})
	sink.add(e.do(logical.ListOperation, "roles/", nil))
	for _, name := range []string{"good", "wrong", "boom", "shared", "cc", "ccwrong", "ghost"} {
		rd("roles/" + name)
	}

	// Bad input that carries a secret.
	wr("roles/typo", map[string]any{"username": "typo@example.com", "pasword": pwNew})
	wr("roles/good", map[string]any{"pasword": pwNew})
	wr("roles/good", map[string]any{"password": pwNew, "ttl": "2h", "max_ttl": "1h"})
	wr("roles/good", map[string]any{"password": pwNew, "client_id": "x"})
	wr("roles/Bad Name", map[string]any{"username": "u", "password": pwNew})
	wr("roles/cc", map[string]any{"client_secret": csWrong, "username": "u"})
	wr("roles/good", map[string]any{"password": pwNew, "ttl": "forever"})
	wr("roles/good", map[string]any{"password": []any{pwNew}})
	wr("roles/good", map[string]any{"password": map[string]any{"v": pwNew}})
	wr("roles/cc", map[string]any{"client_secret": []any{csWrong}})
	wr("config", map[string]any{"token_url": "http://svc:" + pwNew + "@example.com/token"})
	sink.add(e.do(logical.HelpOperation, "roles/good", nil))

	// Reads, failures and retries.
	for range 2 {
		for _, name := range []string{"good", "wrong", "boom", "shared", "cc", "ccwrong", "ghost"} {
			rd("creds/" + name)
			rd("static-creds/" + name)
			rd("status/" + name)
			rd("verify/" + name)
		}
	}
	for _, name := range []string{"good", "wrong", "boom", "ccwrong"} {
		sink.add(e.doRotate(name))
	}
	e.clock.Advance(10 * time.Minute)
	rd("creds/boom")
	wr("roles/wrong", map[string]any{"password": pwNew}) // fixes it
	rd("creds/wrong")
	e.clock.Advance(23*time.Hour + time.Minute) // refresh window
	rd("creds/good")
	rd("static-creds/cc")
	sink.add(e.do(logical.DeleteOperation, "roles/shared", nil))
	rd("creds/shared")

	seen := sink.b.String()
	logs := e.logs.String()
	for _, s := range secrets {
		if strings.Contains(seen, s) {
			t.Errorf("a password or client secret (%s...) appears in a response, error or warning", s[:7])
		}
		if strings.Contains(creds.b.String(), s) {
			t.Errorf("a password or client secret (%s...) appears in a creds answer", s[:7])
		}
		if strings.Contains(logs, s) {
			t.Errorf("a password or client secret (%s...) appears in the log", s[:7])
		}
	}
	if strings.Contains(seen, tokPrefix) {
		t.Error("an access token appears outside the access_token field of creds/ and static-creds/")
	}
	if strings.Contains(logs, tokPrefix) {
		t.Error("an access token appears in the log")
	}
	// Sanity: the drive did serve tokens and did log failures.
	if !strings.Contains(creds.b.String(), tokPrefix) {
		t.Fatal("no token was ever served: the test drove nothing")
	}
	if !strings.Contains(logs, "login failed") {
		t.Fatal("no login failure was logged: the test drove no failure")
	}
}

// holdsWindowOf reports whether text holds secretWindow consecutive bytes of
// secret, in any case: leaked's check, cheap for a long secret whose every
// encoded form is the raw one (a token in a JWT's alphabet needs no escaping).
func holdsWindowOf(text, secret string) bool {
	text, secret = strings.ToLower(text), strings.ToLower(secret)
	windows := map[string]bool{}
	for i := 0; i+secretWindow <= len(text); i++ {
		windows[text[i:i+secretWindow]] = true
	}
	for i := 0; i+secretWindow <= len(secret); i++ {
		if windows[secret[i:i+secretWindow]] {
			return true
		}
	}
	return false
}

// TestRedactorDerivesNothingUntilItJudgesText: building a redactor costs the
// same for the largest secrets a role accepts as for short ones, and classifying
// a token answer (a login that succeeds) costs the same with the largest secrets
// as with no redactor at all: the redactor's work is done only for upstream text.
func TestRedactorDerivesNothingUntilItJudgesText(t *testing.T) {
	password, clientSecret := randomText(maxPasswordBytes, 1), randomText(maxClientSecretBytes, 2)
	short := testing.AllocsPerRun(50, func() { newRedactor("pw-Short-1", "cs-Short-2") })
	largest := testing.AllocsPerRun(50, func() { newRedactor(password, clientSecret) })
	if largest != short || largest > 2 {
		t.Errorf("newRedactor: %.0f allocations for the largest secrets, %.0f for short ones; want the same, at most 2", largest, short)
	}

	answer := tokenAnswer{status: 200, header: http.Header{"Content-Type": {jsonType}},
		body: []byte(`{"access_token":"tok-1","expires_in":3600,"token_type":"Bearer"}`)}
	classify := func(redact *redactor) float64 {
		rules := answerRules{now: func() time.Time { return fuzzNow }, redact: redact}
		return testing.AllocsPerRun(50, func() {
			if _, le := classifyAnswer(answer, rules); le != nil {
				t.Fatal(le)
			}
		})
	}
	if without, with := classify(nil), classify(newRedactor(password, clientSecret)); with != without {
		t.Errorf("a successful answer costs %.0f allocations with the largest secrets, %.0f without a redactor", with, without)
	}
}

// TestRedactorJudgesSecretsUpToItsBoundAndWithholdsAllTextBeyond: a secret of
// maxJudgedSecretBytes is judged like any other (harmless text passes, a fragment
// is withheld); with one a byte longer, every non-empty text is withheld.
func TestRedactorJudgesSecretsUpToItsBoundAndWithholdsAllTextBeyond(t *testing.T) {
	const harmless = "invalid_grant: the credentials are not valid"
	atBound := tokenText(maxJudgedSecretBytes, 3)
	r := newRedactor("pw-Short-1", atBound)
	if got := r.clean(harmless); got != harmless {
		t.Error("harmless text withheld for a secret of exactly the bound")
	}
	if got := r.clean("token " + atBound[40000:40006] + " unknown"); got != withheld {
		t.Error("6 bytes of a secret of exactly the bound were repeated")
	}
	over := newRedactor("pw-Short-1", tokenText(maxJudgedSecretBytes+1, 3))
	for _, text := range []string{harmless, "x"} {
		if got := over.clean(text); got != withheld {
			t.Errorf("%q repeated though a secret is over the bound", text)
		}
	}
	if got := over.clean(""); got != "" {
		t.Error("empty text changed")
	}
}

// TestTokenOverTheJudgedBoundIsServedAndVerifyWithholdsItsUpstreamText: a token
// longer than the redactor judges is a valid token (servers and APIs set their own
// header limits), served whole; when verify/ cannot reach upstream, its error
// names the cause in the plugin's words and holds nothing of the token. (Upstream
// text beyond the bound is withheld: TestRedactorJudgesSecretsUpToItsBoundAndWithholdsAllTextBeyond.)
func TestTokenOverTheJudgedBoundIsServedAndVerifyWithholdsItsUpstreamText(t *testing.T) {
	for _, n := range []int{maxJudgedSecretBytes, maxJudgedSecretBytes + 1} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			tok := tokenText(n, 4)
			ts := httptest.NewServer(rawAnswer(200, jsonType, nil, `{"access_token":"`+tok+`","expires_in":3600}`))
			defer ts.Close()
			e := newTestEnv(t, nil, nil)
			e.configureBase(ts.URL, nil)
			e.addRole("app", "svc@example.com", "pw-Secret-42")
			if got := accessToken(t, e.mustRead("creds/app")); got != tok {
				t.Fatalf("served a token of %d bytes, want the %d issued", len(got), n)
			}
			ts.Close()
			_, err := e.read("verify/app")
			switch {
			case err == nil:
				t.Fatal("verify succeeded with upstream gone")
			case holdsWindowOf(err.Error(), tok) || holdsWindowOf(e.logs.String(), tok):
				t.Fatal("verify's error or the log holds a fragment of the token")
			case !strings.Contains(err.Error(), "refused the connection") && !strings.Contains(err.Error(), "closed the connection"):
				t.Errorf("verify's error %q does not name the cause", err)
			}
		})
	}
}

package iadvize

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

// fuzzNow is the fixed clock of the fuzz tests.
var fuzzNow = time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC)

// answerSeeds are token answers real servers send, or that the plugin must
// refuse: each row of the README's "Upstreams" table and of the failure rules,
// as (status, Content-Type, Retry-After, body). The fuzzers start from them.
var answerSeeds = []struct {
	status      int
	contentType string
	retryAfter  string
	body        string
}{
	{200, "application/json", "", `{"access_token":"tok-1","expires_in":86400,"token_type":"Bearer","refresh_token":"none"}`},
	{200, "text/plain", "", `{"access_token":"tok-1","expires_in":3600,"token_type":"Bearer"}`},
	{200, "text/html", "", `{"access_token":"tok-1","expires_in":3600}`},
	{200, "", "", `{"access_token":"tok-1","expires_in":3600}`},
	{200, "application/json; charset=utf-8", "", `{"access_token":"tok-1","expires_in":3600}`},
	{200, "application/json", "", "\xef\xbb\xbf{\"access_token\":\"tok-1\",\"expires_in\":3600}"},
	{200, "application/x-www-form-urlencoded", "", "access_token=tok-1&expires_in=3600&token_type=bearer"},
	{200, "application/json", "", `{"access_token":"tok-1","expires_in":3599.5}`},
	{200, "application/json", "", `{"access_token":"tok-1","expires_in":"3600"}`},
	{200, "application/json", "", `{"access_token":"tok-1","expires_in":2147483647}`},
	{200, "application/json", "", `{"access_token":"tok-1","expires_in":3600,"token_type":"bearer"}`},
	{200, "application/json", "", `{"access_token":"tok-1","expires_in":3600,"token_type":"BEARER"}`},
	{200, "application/json", "", `{"access_token":"tok-1","expires_in":3600}`},
	{200, "application/json", "", `{"access_token":"tok-1"}`},
	{200, "application/json", "", `{"access_token":"tok-1","expires_in":null}`},
	{200, "application/json", "", `{"access_token":"tok-1","expires_in":0}`},
	{200, "application/json", "", `{"access_token":"tok-1","expires_in":-5}`},
	{200, "application/json", "", `{"access_token":"tok-1","expires_in":"NaN"}`},
	{200, "application/json", "", `{"access_token":"tok-1","expires_in":1e400}`},
	{200, "application/json", "", `{"expires_in":3600}`},
	{200, "application/json", "", `{"access_token":"tok-1","expires_in":0.0001}`},
	{200, "application/json", "", `{"access_token":"tok-1","expires_in":"Infinity"}`},
	{200, "application/json", "", `{"access_token":"tok-1","expires_in":"0x1p10"}`},
	{200, "application/json", "", `{"access_token":"tok\r\nX-Evil: 1","expires_in":3600}`},
	{200, "application/json", "", `{"access_token":"tok-1","expires_in":3600,"token_type":"Bearer\u0000"}`},
	{400, "application/json", "", `{"error":"invalid_request","error_description":"{\"password\":\"s3cr\\/t+K3y=\"}"}`},
	{400, "application/json", "", `{"error":"x_s3cr/","error_description":"t+K3y="}`},
	{200, "application/json", "", `{"access_token":7,"expires_in":3600}`},
	{200, "application/json", "", `{"error":"incorrect_client_credentials"}`},
	{200, "application/json", "", `{"error":"temporarily_unavailable"}`},
	{200, "application/json", "", `{"error":"slow_down"}`},
	{200, "application/json", "", `{"error":"invalid_client","access_token":"tok-1","expires_in":3600}`},
	{200, "application/json", "", `{"error":{"code":401,"message":"bad client"},"access_token":"tok-1","expires_in":3600}`},
	{200, "application/json", "", `{"error":null,"access_token":"tok-1","expires_in":3600}`},
	{200, "text/html", "", `<html><body>Maintenance</body></html>`},
	{200, "application/json", "", `[{"access_token":"tok-1"}]`},
	{200, "application/json", "", `{"access_token":"tok-1","expires_in":36`},
	{400, "application/json", "", `{"error":"invalid_grant","error_description":"` + strings.Repeat("x", 185) + ` password s3cr/t+K3y= is wrong"}`},
	{400, "application/json", "", `{"error":"invalid_grant","error_description":"password=s3cr%2Ft%2BK3y%3D"}`},
	{400, "application/x-www-form-urlencoded", "", `error=invalid_grant&error_description=s3cr%2Ft%2BK3y%3D`},
	{401, "application/json", "", `{"error":"invalid_client","error_description":"Basic ` + base64.StdEncoding.EncodeToString([]byte("id:s3cr/t+K3y=")) + `"}`},
	{401, "application/json", "", `{"error":"s3cr/t+K3y="}`},
	{403, "text/html", "", `<html>Forbidden</html>`},
	{429, "application/json", "31536000", `{"error":"too_many_requests"}`},
	{429, "", "Mon, 12 Jan 2026 09:00:00 GMT", ``},
	{429, "", "120", ``},
	{503, "text/plain", "120", `Service Unavailable`},
	{503, "text/plain", "31536000", ``},
	{500, "application/json", "", `{"error":"invalid_grant"}`},
	{502, "text/html", "", `<html>Bad Gateway</html>`},
	{302, "text/html", "", `<a href="http://127.0.0.2/token">Found</a>`},
	{404, "text/plain", "", `not found`},
}

// ownWords are the messages the plugin writes itself around upstream text.
var ownWords = regexp.MustCompile(`^(upstream rate limit \(HTTP -?\d+\)` +
	`|upstream answered a redirect \(HTTP \d+\), which is not followed` +
	`|upstream is temporarily unable to log in \(HTTP -?\d+\)` +
	`|upstream rejected the credentials \(HTTP -?\d+\)` +
	`|upstream answered HTTP -?\d+` +
	`|malformed answer from upstream: [A-Za-z0-9_ ,()-]+)$`)

// FuzzClassifyAnswer: whatever a token endpoint answers, the classifier does not
// panic; it serves a token only from a 2xx answer with an access_token and no
// error code, with a lifetime in (0, 1 year]; a failure waits at most an hour for
// Retry-After; and no message holds a fragment of the role's secret.
func FuzzClassifyAnswer(f *testing.F) {
	for _, s := range answerSeeds {
		f.Add(s.status, s.contentType, s.retryAfter, []byte(s.body), "s3cr/t+K3y=", int64(0))
		f.Add(s.status, s.contentType, s.retryAfter, []byte(s.body), "another-Secret-9", int64(3600))
	}
	f.Fuzz(func(t *testing.T, status int, contentType, retryAfter string, body []byte, secret string, defaultSeconds int64) {
		if len(secret) < secretWindow || len(body) > maxBodyBytes {
			t.Skip()
		}
		defaultExpiresIn := time.Duration(defaultSeconds%(400*24*3600)) * time.Second
		header := http.Header{}
		header.Set("Content-Type", contentType)
		header.Set("Retry-After", retryAfter)
		tok, le := classifyAnswer(tokenAnswer{status: status, header: header, body: body}, answerRules{
			now:              func() time.Time { return fuzzNow },
			defaultExpiresIn: defaultExpiresIn,
			redact:           newRedactor(secret),
		})
		if (tok == nil) == (le == nil) {
			t.Fatalf("token %v and error %v: want exactly one", tok != nil, le != nil)
		}
		if tok != nil {
			fields, _ := parseAnswerBody(body)
			member := fields["error"]
			hasError := strings.TrimSpace(stringField(fields, "error")) != "" ||
				member != nil && member != false && !isString(member)
			switch {
			case status < 200 || status > 299:
				t.Fatalf("token from an HTTP %d answer", status)
			case hasError:
				t.Fatal("token from an answer with an error member")
			case tok.accessToken == "" || tok.accessToken != stringField(fields, "access_token"):
				t.Fatal("served access_token is not the answer's")
			case strings.ContainsAny(tok.accessToken+tok.tokenType, "\r\n\x00"):
				t.Fatal("a token or token type with a control character was served")
			case tok.expiresIn < time.Second:
				t.Fatalf("lifetime %s under a second", tok.expiresIn)
			case tok.expiresIn <= 0 || tok.expiresIn > maxTokenLifetime:
				t.Fatalf("lifetime %s outside (0, 1 year]", tok.expiresIn)
			case tok.tokenType == "" || strings.EqualFold(tok.tokenType, "bearer") && tok.tokenType != "Bearer":
				t.Fatalf("token_type %q not normalised", tok.tokenType)
			}
			return
		}
		if le.kind != kindTransient && le.kind != kindRateLimited && le.kind != kindRejected {
			t.Fatalf("unknown kind %d", le.kind)
		}
		if le.retryAfter < 0 || le.retryAfter > maxRetryAfter {
			t.Fatalf("retryAfter %s outside [0, 1 h]", le.retryAfter)
		}
		if !ownWords.MatchString(le.msg) {
			t.Fatalf("message %q is not in the plugin's own words", le.msg)
		}
		if f := leaked(le.detail, secret); f != "" {
			t.Fatal("the message holds a fragment of the secret")
		}
	})
}

func isString(v any) bool {
	_, ok := v.(string)
	return ok
}

// FuzzRedactor: the redactor withholds every text that holds a fragment of a
// secret (as the test's independent statement, secretFragments, defines it),
// and otherwise repeats the text unchanged.
func FuzzRedactor(f *testing.F) {
	f.Add("s3cr/t+K3y=", "error: ", " is wrong", uint8(0), uint8(0), uint8(6))
	f.Add("s3cr/t+K3y=", strings.Repeat("x", 185), "", uint8(1), uint8(3), uint8(9))
	f.Add("p@ss W0rd é", "Basic ", "", uint8(5), uint8(2), uint8(8))
	f.Add("Pa55:w0rd\"<>&", "{\"d\":\"", "\"}", uint8(3), uint8(0), uint8(20))
	f.Add("short", "the short answer", "", uint8(0), uint8(0), uint8(5))
	f.Add("\xff\xfe-invalid-utf8", "", "", uint8(3), uint8(1), uint8(7))
	// A JWT as verify/ judges it, and a secret that lower-casing makes longer.
	f.Add("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzdmMifQ.c2lnbmF0dXJlLWJ5dGVz", "Bearer ", " expired", uint8(0), uint8(20), uint8(9))
	f.Add("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzdmMifQ.c2lnbmF0dXJlLWJ5dGVz", "", "", uint8(5), uint8(30), uint8(6))
	f.Add("İstanbul-Şifre-1", "ERROR ", "", uint8(0), uint8(2), uint8(8))
	f.Fuzz(func(t *testing.T, secret, before, after string, form, start, n uint8) {
		if secret == "" {
			t.Skip()
		}
		r := newRedactor(secret)
		forms := []string{secret, url.QueryEscape(secret), url.PathEscape(secret), jsonString(secret, false),
			base64.StdEncoding.EncodeToString([]byte("client:" + secret)), base64.RawURLEncoding.EncodeToString([]byte(secret))}
		echo := forms[int(form)%len(forms)]
		from := min(int(start), len(echo))
		piece := echo[from:min(from+int(n), len(echo))]
		text := before + piece + after

		got := r.clean(text)
		if got != text && got != withheld {
			t.Fatal("clean changed the text instead of repeating or withholding it whole")
		}
		if leaked(text, secret) != "" && got != withheld {
			t.Fatal("text holding a fragment of the secret was repeated")
		}
		if got := r.clean(before); leaked(before, secret) == "" && !r.leaks(before) && got != before {
			t.Fatal("clean withheld text that it says does not leak")
		}
	})
}

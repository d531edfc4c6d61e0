package iadvize

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestTokenAnswersRealServersSendAreServed: every answer of this table is a valid
// token as real servers send it (README "Upstreams"); each is served with the
// lifetime and token type it stands for.
func TestTokenAnswersRealServersSendAreServed(t *testing.T) {
	const tok = "tok-real-server-1"
	cases := []struct {
		name      string
		handler   http.HandlerFunc
		config    map[string]any
		tokenType string
		lifetime  time.Duration
	}{
		{"JSON as text/plain", rawAnswer(200, "text/plain",
			nil, `{"access_token":"`+tok+`","expires_in":3600,"token_type":"Bearer"}`), nil, "Bearer", time.Hour},
		{"JSON as text/html", rawAnswer(200, "text/html; charset=iso-8859-1",
			nil, `{"access_token":"`+tok+`","expires_in":3600,"token_type":"Bearer"}`), nil, "Bearer", time.Hour},
		{"JSON with no Content-Type", rawAnswer(200, "-",
			nil, `{"access_token":"`+tok+`","expires_in":3600,"token_type":"Bearer"}`), nil, "Bearer", time.Hour},
		{"JSON with a charset", rawAnswer(200, "application/json; charset=utf-8",
			nil, `{"access_token":"`+tok+`","expires_in":3600,"token_type":"Bearer"}`), nil, "Bearer", time.Hour},
		{"JSON with a byte-order mark", rawAnswer(200, jsonType,
			nil, "\xef\xbb\xbf"+`{"access_token":"`+tok+`","expires_in":3600,"token_type":"Bearer"}`), nil, "Bearer", time.Hour},
		{"JSON with white space around", rawAnswer(200, jsonType,
			nil, "\r\n  {\"access_token\":\""+tok+"\",\"expires_in\":3600}\n\n"), nil, "Bearer", time.Hour},
		{"form-encoded answer", rawAnswer(200, formType,
			nil, "access_token="+tok+"&expires_in=3600&token_type=bearer"), nil, "Bearer", time.Hour},
		{"form-encoded answer labelled text/plain", rawAnswer(200, "text/plain",
			nil, "access_token="+tok+"&token_type=Bearer&expires_in=7200"), nil, "Bearer", 2 * time.Hour},
		{"expires_in a decimal", rawAnswer(200, jsonType,
			nil, `{"access_token":"`+tok+`","expires_in":3599.5,"token_type":"Bearer"}`), nil, "Bearer", 3599500 * time.Millisecond},
		{"expires_in a numeric string", rawAnswer(200, jsonType,
			nil, `{"access_token":"`+tok+`","expires_in":"3600","token_type":"Bearer"}`), nil, "Bearer", time.Hour},
		{"expires_in a decimal string", rawAnswer(200, jsonType,
			nil, `{"access_token":"`+tok+`","expires_in":" 86399.75 "}`), nil, "Bearer", 86399750 * time.Millisecond},
		{"expires_in a string in exponent form", rawAnswer(200, jsonType,
			nil, `{"access_token":"`+tok+`","expires_in":"1e3"}`), nil, "Bearer", 1000 * time.Second},
		{"expires_in of one second", rawAnswer(200, jsonType,
			nil, `{"access_token":"`+tok+`","expires_in":1}`), nil, "Bearer", time.Second},
		{"expires_in in exponent form", rawAnswer(200, jsonType,
			nil, `{"access_token":"`+tok+`","expires_in":3.6e3}`), nil, "Bearer", time.Hour},
		{"expires_in 2147483647", rawAnswer(200, jsonType,
			nil, `{"access_token":"`+tok+`","expires_in":2147483647,"token_type":"Bearer"}`), nil, "Bearer", maxTokenLifetime},
		{"expires_in beyond int64", rawAnswer(200, jsonType,
			nil, `{"access_token":"`+tok+`","expires_in":1e400}`), nil, "Bearer", maxTokenLifetime},
		{"token_type bearer", rawAnswer(200, jsonType,
			nil, `{"access_token":"`+tok+`","expires_in":3600,"token_type":"bearer"}`), nil, "Bearer", time.Hour},
		{"token_type BEARER", rawAnswer(200, jsonType,
			nil, `{"access_token":"`+tok+`","expires_in":3600,"token_type":"BEARER"}`), nil, "Bearer", time.Hour},
		{"no token_type", rawAnswer(200, jsonType,
			nil, `{"access_token":"`+tok+`","expires_in":3600}`), nil, "Bearer", time.Hour},
		{"another token_type kept as sent", rawAnswer(200, jsonType,
			nil, `{"access_token":"`+tok+`","expires_in":3600,"token_type":"DPoP"}`), nil, "DPoP", time.Hour},
		{"no expires_in with default_expires_in", rawAnswer(200, jsonType,
			nil, `{"access_token":"`+tok+`","token_type":"Bearer"}`), map[string]any{"default_expires_in": "45m"}, "Bearer", 45 * time.Minute},
		{"null expires_in with default_expires_in", rawAnswer(200, jsonType,
			nil, `{"access_token":"`+tok+`","expires_in":null}`), map[string]any{"default_expires_in": "2h"}, "Bearer", 2 * time.Hour},
		{"expires_in wins over default_expires_in", rawAnswer(200, jsonType,
			nil, `{"access_token":"`+tok+`","expires_in":600}`), map[string]any{"default_expires_in": "2h"}, "Bearer", 10 * time.Minute},
		{"201 Created", rawAnswer(201, jsonType,
			nil, `{"access_token":"`+tok+`","expires_in":3600}`), nil, "Bearer", time.Hour},
		{"extra fields and a refresh_token", rawAnswer(200, jsonType,
			nil, `{"access_token":"`+tok+`","expires_in":86400,"token_type":"Bearer","refresh_token":"none","scope":"a b","id_token":null,"not-before-policy":0}`), nil, "Bearer", 24 * time.Hour},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := newUpstream(t, tc.handler)
			e := newTestEnv(t, nil, nil)
			e.configure(u, tc.config)
			e.addRole("app", "svc@example.com", "pw-Secret-42")
			sent := e.clock.Now()

			resp := e.mustRead("creds/app")
			if accessToken(t, resp) != tok {
				t.Fatal("the served access_token is not the one upstream sent")
			}
			if got := resp.Data["token_type"]; got != tc.tokenType {
				t.Errorf("token_type = %v, want %s", got, tc.tokenType)
			}
			st := storedToken(t, e.storage, "app")
			if got := st.ExpiresAt.Sub(sent); got != tc.lifetime {
				t.Errorf("lifetime = %s, want %s", got, tc.lifetime)
			}
			if want := sent.Add(tc.lifetime).UTC().Format(time.RFC3339); resp.Data["expire_time"] != want {
				t.Errorf("expire_time = %v, want %s", resp.Data["expire_time"], want)
			}
			if len(resp.Warnings) != 0 {
				t.Errorf("warnings on a valid token: %v", resp.Warnings)
			}
			e.mustRead("creds/app")
			if u.count() != 1 {
				t.Errorf("upstream requests = %d, want 1 (the token is cached)", u.count())
			}
		})
	}
}

// TestTokenAnswerFailuresAreClassified: each failure answer gets the policy of
// its kind (README "Login policy"): rejected credentials stop logins after one
// attempt; rate limits and temporary failures wait, Retry-After honoured up to an
// hour; malformed answers back off. None is cached.
func TestTokenAnswerFailuresAreClassified(t *testing.T) {
	const tok = "tok-must-not-be-served"
	cases := []struct {
		name     string
		handler  http.HandlerFunc
		outcome  string        // stored last_outcome
		status   int           // HTTP status of the failed read
		cause    string        // in the read's error
		minWait  time.Duration // 0: transientBackoffMin, or no later attempt if rejected
		maxWait  time.Duration // 0: minWait
		rejected bool
	}{
		{name: "200 with an error code", outcome: outcomeRejected, status: 502, cause: "incorrect_client_credentials", rejected: true,
			handler: rawAnswer(200, jsonType, nil, `{"error":"incorrect_client_credentials"}`)},
		{name: "200 with invalid_client and a token", outcome: outcomeRejected, status: 502, cause: "invalid_client", rejected: true,
			handler: rawAnswer(200, jsonType, nil, `{"error":"invalid_client","access_token":"`+tok+`","expires_in":3600}`)},
		{name: "200 form body with an error code", outcome: outcomeRejected, status: 502, cause: "access_denied", rejected: true,
			handler: rawAnswer(200, formType, nil, `error=access_denied&error_description=user+disabled`)},
		{name: "401 invalid_client", outcome: outcomeRejected, status: 502, cause: "invalid_client", rejected: true,
			handler: rawAnswer(401, jsonType, nil, `{"error":"invalid_client"}`)},
		{name: "400 without a body", outcome: outcomeRejected, status: 502, cause: "HTTP 400", rejected: true,
			handler: rawAnswer(400, "text/plain", nil, ``)},
		{name: "403 HTML", outcome: outcomeRejected, status: 502, cause: "HTTP 403", rejected: true,
			handler: rawAnswer(403, "text/html", nil, `<html>Forbidden</html>`)},
		{name: "500 with invalid_grant", outcome: outcomeRejected, status: 502, cause: "invalid_grant", rejected: true,
			handler: rawAnswer(500, jsonType, nil, `{"error":"invalid_grant"}`)},
		{name: "200 temporarily_unavailable", outcome: outcomeUpstream, status: 502, cause: "temporarily_unavailable",
			handler: rawAnswer(200, jsonType, nil, `{"error":"temporarily_unavailable"}`)},
		{name: "400 server_error", outcome: outcomeUpstream, status: 502, cause: "server_error",
			handler: rawAnswer(400, jsonType, nil, `{"error":"server_error"}`)},
		{name: "503 with Retry-After 120", outcome: outcomeUpstream, status: 502, cause: "HTTP 503",
			minWait: 2 * time.Minute,
			handler: rawAnswer(503, "text/plain", map[string]string{"Retry-After": "120"}, "Service Unavailable")},
		{name: "503 with Retry-After a year", outcome: outcomeUpstream, status: 502, cause: "HTTP 503",
			minWait: time.Hour,
			handler: rawAnswer(503, "text/plain", map[string]string{"Retry-After": "31536000"}, "")},
		{name: "503 with a past Retry-After date", outcome: outcomeUpstream, status: 502, cause: "HTTP 503",
			handler: rawAnswer(503, "text/plain", map[string]string{"Retry-After": "Mon, 05 Jan 2026 08:00:00 GMT"}, "")},
		{name: "404", outcome: outcomeUpstream, status: 502, cause: "HTTP 404",
			handler: rawAnswer(404, "text/plain", nil, "not found")},
		{name: "429 with Retry-After a year", outcome: outcomeRateLimited, status: 429, cause: "HTTP 429",
			minWait: time.Hour,
			handler: rawAnswer(429, jsonType, map[string]string{"Retry-After": "31536000"}, `{"error":"too_many_requests"}`)},
		{name: "429 with Retry-After as an HTTP date a week away", outcome: outcomeRateLimited, status: 429, cause: "HTTP 429",
			minWait: time.Hour,
			handler: rawAnswer(429, jsonType, map[string]string{"Retry-After": "Mon, 12 Jan 2026 09:00:00 GMT"}, ``)},
		{name: "429 with Retry-After 90", outcome: outcomeRateLimited, status: 429, cause: "HTTP 429",
			minWait: 90 * time.Second,
			handler: rawAnswer(429, jsonType, map[string]string{"Retry-After": "90"}, ``)},
		{name: "200 slow_down", outcome: outcomeRateLimited, status: 429, cause: "slow_down",
			minWait: rateLimitBackoffMin, maxWait: rateLimitBackoffMin + rateLimitBackoffMin/10,
			handler: rawAnswer(200, jsonType, nil, `{"error":"slow_down"}`)},
		{name: "no expires_in and no default_expires_in", outcome: outcomeUpstream, status: 502, cause: "default_expires_in",
			handler: rawAnswer(200, jsonType, nil, `{"access_token":"`+tok+`"}`)},
		{name: "neither JSON nor a form", outcome: outcomeUpstream, status: 502, cause: "neither JSON nor form-encoded",
			handler: rawAnswer(200, "text/plain", nil, `<html>hello</html>`)},
		{name: "expires_in under a second", outcome: outcomeUpstream, status: 502, cause: "at least 1",
			handler: rawAnswer(200, jsonType, nil, `{"access_token":"`+tok+`","expires_in":0.0001}`)},
		{name: "expires_in Infinity", outcome: outcomeUpstream, status: 502, cause: "expires_in is not a number",
			handler: rawAnswer(200, jsonType, nil, `{"access_token":"`+tok+`","expires_in":"Infinity"}`)},
		{name: "expires_in a hex float", outcome: outcomeUpstream, status: 502, cause: "expires_in is not a number",
			handler: rawAnswer(200, jsonType, nil, `{"access_token":"`+tok+`","expires_in":"0x1p10"}`)},
		{name: "access_token of spaces", outcome: outcomeUpstream, status: 502, cause: "access_token is empty",
			handler: rawAnswer(200, jsonType, nil, `{"access_token":"   ","expires_in":3600}`)},
		{name: "access_token with a line break", outcome: outcomeUpstream, status: 502, cause: "control characters",
			handler: rawAnswer(200, jsonType, nil, `{"access_token":"tok\r\nX-Evil: 1","expires_in":3600}`)},
		{name: "token_type with a NUL", outcome: outcomeUpstream, status: 502, cause: "control characters",
			handler: rawAnswer(200, jsonType, nil, `{"access_token":"`+tok+`","expires_in":3600,"token_type":"Bearer\u0000"}`)},
		{name: "truncated JSON", outcome: outcomeUpstream, status: 502, cause: "neither JSON nor form-encoded",
			handler: rawAnswer(200, jsonType, nil, `{"access_token":"`+tok+`","expires_in":36`)},
	}
	for _, tc := range cases {
		if tc.minWait == 0 && !tc.rejected {
			tc.minWait = transientBackoffMin
		}
		if tc.maxWait == 0 {
			tc.maxWait = tc.minWait
		}
		t.Run(tc.name, func(t *testing.T) {
			u := newUpstream(t, tc.handler)
			e := newTestEnv(t, nil, nil)
			e.configure(u, nil)
			e.addRole("app", "svc@example.com", "pw-Secret-42")
			failedAt := e.clock.Now()

			_, err := e.read("creds/app")
			if err == nil {
				t.Fatal("the read succeeded")
			}
			if got := codedStatus(err); got != tc.status {
				t.Errorf("status = %d, want %d (%v)", got, tc.status, err)
			}
			if !strings.Contains(err.Error(), tc.cause) || !strings.Contains(err.Error(), `"app"`) {
				t.Errorf("message %q does not name the role and %q", err, tc.cause)
			}
			st := storedToken(t, e.storage, "app")
			if st.AccessToken != "" {
				t.Fatal("a failed answer was cached")
			}
			if st.LastOutcome != tc.outcome || st.CredentialsRejected != tc.rejected {
				t.Errorf("outcome %q rejected=%v, want %q rejected=%v", st.LastOutcome, st.CredentialsRejected, tc.outcome, tc.rejected)
			}
			wait := st.NextAttempt.Sub(failedAt)
			if tc.rejected {
				wait = 0
			}
			if wait < tc.minWait || wait > tc.maxWait {
				t.Errorf("next attempt in %s, want between %s and %s", wait, tc.minWait, tc.maxWait)
			}

			// Reads in between make no attempt; after the wait one more is made,
			// except for rejected credentials, which wait for new credentials.
			e.clock.Advance(tc.minWait - time.Second)
			if tc.minWait > time.Second {
				if _, err := e.read("creds/app"); err == nil || u.count() != 1 {
					t.Fatalf("read before the wait ended: err=%v requests=%d, want an error and no request", err, u.count())
				}
			}
			e.clock.Advance(tc.maxWait - tc.minWait + 2*time.Second)
			_, _ = e.read("creds/app")
			want := int64(2)
			if tc.rejected {
				want = 1
			}
			if u.count() != want {
				t.Errorf("upstream requests after the wait = %d, want %d", u.count(), want)
			}
		})
	}
}

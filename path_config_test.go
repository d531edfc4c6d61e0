package iadvize

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

var defaultConfigRead = map[string]any{
	"token_url":              "https://api.iadvize.com/oauth2/token",
	"verify_url":             "https://api.iadvize.com/_authenticated",
	"refresh_before":         int64(3600),
	"user_logins_per_minute": 10,
	"logins_per_minute":      100,
	"request_timeout":        int64(10),
	"ca_pem":                 "",
	"client_auth":            "basic",
	"default_expires_in":     int64(0),
}

func TestConfigReadWithoutWriteReturnsDefaults(t *testing.T) {
	e := newTestEnv(t, nil, nil)
	if got := e.mustRead("config").Data; !reflect.DeepEqual(got, defaultConfigRead) {
		t.Fatalf("config read without a write = %v, want %v", got, defaultConfigRead)
	}
	if keys := storageSnapshot(t, e.storage); len(keys) != 0 {
		t.Fatalf("a config read wrote storage: %d keys", len(keys))
	}
}

func TestConfigDeleteRestoresDefaults(t *testing.T) {
	e := newTestEnv(t, nil, nil)
	e.mustWrite("config", map[string]any{"token_url": "https://auth.example.com/token", "refresh_before": "2h"})
	if resp, err := e.do(logical.DeleteOperation, "config", nil); err != nil || (resp != nil && resp.IsError()) {
		t.Fatalf("delete: %v %v", err, respErr(resp))
	}
	if got := e.mustRead("config").Data; !reflect.DeepEqual(got, defaultConfigRead) {
		t.Fatalf("config after delete = %v, want the defaults", got)
	}
}

func TestConfigPartialUpdateChangesOnlyNamedFields(t *testing.T) {
	e := newTestEnv(t, nil, nil)
	e.mustWrite("config", map[string]any{
		"token_url": "https://auth.example.com/token", "verify_url": "", "refresh_before": "2h",
		"user_logins_per_minute": 5, "logins_per_minute": 50, "request_timeout": "3s",
	})
	want := map[string]any{
		"token_url": "https://auth.example.com/token", "verify_url": "", "refresh_before": int64(7200),
		"user_logins_per_minute": 5, "logins_per_minute": 50, "request_timeout": int64(3), "ca_pem": "",
		"client_auth": "basic", "default_expires_in": int64(0),
	}
	if got := e.mustRead("config").Data; !reflect.DeepEqual(got, want) {
		t.Fatalf("config = %v, want %v", got, want)
	}
	for _, step := range []struct {
		data  map[string]any
		field string
		value any
	}{
		{map[string]any{"request_timeout": "20s"}, "request_timeout", int64(20)},
		{map[string]any{"refresh_before": "5m"}, "refresh_before", int64(300)},
		{map[string]any{"refresh_before": 0}, "refresh_before", int64(0)},
		{map[string]any{"logins_per_minute": 60}, "logins_per_minute", 60},
		{map[string]any{"verify_url": "https://auth.example.com/check"}, "verify_url", "https://auth.example.com/check"},
		{map[string]any{"token_url": "https://auth2.example.com/token"}, "token_url", "https://auth2.example.com/token"},
		{map[string]any{"client_auth": "post"}, "client_auth", "post"},
		{map[string]any{"client_auth": "basic_urlencoded"}, "client_auth", "basic_urlencoded"},
		{map[string]any{"default_expires_in": "1h"}, "default_expires_in", int64(3600)},
		{map[string]any{"default_expires_in": 0}, "default_expires_in", int64(0)},
	} {
		e.mustWrite("config", step.data)
		want[step.field] = step.value
		if got := e.mustRead("config").Data; !reflect.DeepEqual(got, want) {
			t.Fatalf("after updating %s: %v, want %v", step.field, got, want)
		}
	}
}

func TestConfigAcceptsHTTPSAndLoopbackHTTPAndCAPEM(t *testing.T) {
	for _, url := range []string{
		"https://api.iadvize.com/oauth2/token",
		"https://10.0.0.5:8443/token",
		"http://127.0.0.1:8080/token",
		"http://127.8.9.10/token",
		"http://localhost:9000/token",
		"http://localhost.:9000/token",
		"http://LOCALHOST/token",
		"http://[::1]:8080/token",
	} {
		e := newTestEnv(t, nil, nil)
		if resp, err := e.write("config", map[string]any{"token_url": url, "verify_url": url}); err != nil || (resp != nil && resp.IsError()) {
			t.Errorf("%s refused: %v %v", url, err, respErr(resp))
		}
	}
	e := newTestEnv(t, nil, nil)
	e.mustWrite("config", map[string]any{"ca_pem": testCAPEM(t)})
	if got, _ := e.mustRead("config").Data["ca_pem"].(string); !strings.Contains(got, "BEGIN CERTIFICATE") {
		t.Fatal("ca_pem not kept")
	}
}

func TestConfigBadInputIs400NamingFieldAndLeavesStorageUnchanged(t *testing.T) {
	cases := []struct {
		name  string
		data  map[string]any
		names string
	}{
		{"http to a non-loopback host", map[string]any{"token_url": "http://api.iadvize.com/oauth2/token"}, "token_url"},
		{"http to a host that only starts like loopback", map[string]any{"token_url": "http://127.0.0.1.evil.example/token"}, "token_url"},
		{"http to localhost-like host", map[string]any{"token_url": "http://localhost.evil.example/token"}, "token_url"},
		{"http to a private address", map[string]any{"token_url": "http://10.0.0.1/token"}, "token_url"},
		{"ftp scheme", map[string]any{"token_url": "ftp://api.iadvize.com/token"}, "token_url"},
		{"file scheme", map[string]any{"token_url": "file:///etc/passwd"}, "token_url"},
		{"no scheme", map[string]any{"token_url": "api.iadvize.com/oauth2/token"}, "token_url"},
		{"no host", map[string]any{"token_url": "https:///oauth2/token"}, "token_url"},
		{"URL with user info", map[string]any{"token_url": "https://user:pass@api.iadvize.com/oauth2/token"}, "token_url"},
		{"empty token_url", map[string]any{"token_url": ""}, "token_url"},
		{"verify_url over http to a non-loopback host", map[string]any{"verify_url": "http://api.iadvize.com/_authenticated"}, "verify_url"},
		{"verify_url with user info", map[string]any{"verify_url": "https://u@api.iadvize.com/_authenticated"}, "verify_url"},
		{"bad ca_pem", map[string]any{"ca_pem": "not a certificate"}, "ca_pem"},
		{"ca_pem with a bad block", map[string]any{"ca_pem": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"}, "ca_pem"},
		{"logins_per_minute 0", map[string]any{"logins_per_minute": 0}, "logins_per_minute"},
		{"logins_per_minute negative", map[string]any{"logins_per_minute": -1}, "logins_per_minute"},
		{"user_logins_per_minute 0", map[string]any{"user_logins_per_minute": 0}, "user_logins_per_minute"},
		{"negative refresh_before", map[string]any{"refresh_before": "-5m"}, "refresh_before"},
		{"negative request_timeout", map[string]any{"request_timeout": "-1s"}, "request_timeout"},
		{"zero request_timeout", map[string]any{"request_timeout": 0}, "request_timeout"},
		{"refresh_before not a duration", map[string]any{"refresh_before": "later"}, "refresh_before"},
		{"unknown field", map[string]any{"token_uri": "https://auth.example.com/token"}, "token_uri"},
		{"unknown field next to a valid one", map[string]any{"refresh_before": "2h", "refresh_befor": "3h"}, "refresh_befor"},
		{"valid field then a bad one", map[string]any{"refresh_before": "2h", "request_timeout": "-1s"}, "request_timeout"},
		{"unknown client_auth", map[string]any{"client_auth": "client_secret_jwt"}, "client_auth"},
		{"empty client_auth", map[string]any{"client_auth": ""}, "client_auth"},
		{"client_auth in another case", map[string]any{"client_auth": "Basic"}, "client_auth"},
		{"negative default_expires_in", map[string]any{"default_expires_in": "-1h"}, "default_expires_in"},
		{"default_expires_in not a duration", map[string]any{"default_expires_in": "forever"}, "default_expires_in"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := newUpstream(t, issuing(24*time.Hour))
			e := newTestEnv(t, nil, nil)
			e.configure(u, map[string]any{"refresh_before": "30m"})
			e.addRole("app", "svc@example.com", "pw-good")
			tok := accessToken(t, e.mustRead("creds/app"))
			cfgBefore := e.mustRead("config").Data

			if msg := e.refusedWrite("config", tc.data, tc.names); strings.Contains(msg, "pass@") {
				t.Errorf("message %q echoes the URL's user info", msg)
			}
			if got := e.mustRead("config").Data; !reflect.DeepEqual(got, cfgBefore) {
				t.Fatalf("config read changed after a refused write: %v", got)
			}
			if accessToken(t, e.mustRead("creds/app")) != tok || u.count() != 1 {
				t.Fatal("a refused config write changed what is served")
			}
		})
	}
}

// An empty config write is a create that stores the defaults; the existence check
// tells create from update.
func TestConfigExistenceCheckTellsCreateFromUpdate(t *testing.T) {
	e := newTestEnv(t, nil, nil)
	req := &logical.Request{Operation: logical.UpdateOperation, Path: "config", Storage: e.storage}
	if found, exists, err := e.b.HandleExistenceCheck(t.Context(), req); err != nil || !found || exists {
		t.Fatalf("before a write: found=%v exists=%v err=%v, want found and missing", found, exists, err)
	}
	e.mustWrite("config", map[string]any{"refresh_before": "2h"})
	if found, exists, err := e.b.HandleExistenceCheck(t.Context(), req); err != nil || !found || !exists {
		t.Fatalf("after a write: found=%v exists=%v err=%v, want it to exist", found, exists, err)
	}
}

// A config change applies at once: the cached client and settings are rebuilt.
// A role whose credentials were written for the old token host logs in at the
// new one once they are written again (TestTokenURLMoveHoldsCredentialsBack).
func TestConfigChangeAppliesToNextLogin(t *testing.T) {
	u1 := newUpstream(t, issuing(24*time.Hour))
	u2 := newUpstream(t, issuing(24*time.Hour))
	e := newTestEnv(t, nil, nil)
	e.configure(u1, nil)
	e.addRole("app", "svc@example.com", "pw-good")
	e.mustRead("creds/app")
	e.mustWrite("config", map[string]any{"token_url": u2.tokenURL(), "refresh_before": "2h"})
	e.mustWrite("roles/app", map[string]any{"password": "pw-good"})
	e.mustRead("creds/app")
	e.clock.Advance(22*time.Hour + time.Second) // inside the new 2h window, outside the old 1h
	e.mustRead("creds/app")
	e.settle()
	if u1.count() != 1 || u2.count() != 2 {
		t.Fatalf("requests: old upstream %d, new upstream %d, want 1 and 2", u1.count(), u2.count())
	}
}

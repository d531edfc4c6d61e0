package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/logbuf"
)

// urlWriter hands the base URL of the "listening on" line to a channel.
type urlWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	urls chan string
}

func (u *urlWriter) Write(p []byte) (int, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.buf.Write(p)
	if _, rest, ok := strings.Cut(u.buf.String(), "listening on "); ok && strings.HasSuffix(rest, "\n") {
		u.urls <- strings.TrimSpace(rest)
		u.buf.Reset()
	}
	return len(p), nil
}

func TestHelp(t *testing.T) {
	var stdout, stderr logbuf.Buffer
	err := run(context.Background(), []string{"-h"}, &stdout, &stderr)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("run -h: %v, want flag.ErrHelp", err)
	}
	help := stderr.String()
	want := []string{
		"-basic-auth", "-require-client", "-public-client", "-user", "-client", "-listen",
		"vault write iadvize/config token_url=http://127.0.0.1:PORT/oauth2/token verify_url=http://127.0.0.1:PORT/_authenticated",
	}
	for _, ep := range fakeiadvize.Endpoints() {
		want = append(want, ep.Path, ep.Description)
	}
	for _, m := range fakeiadvize.KnownFaultModes() {
		want = append(want, " "+string(m))
	}
	for _, w := range want {
		if !strings.Contains(help, w) {
			t.Errorf("-h does not show %q", w)
		}
	}
	for _, ep := range []string{"POST /oauth2/token", "GET  /_authenticated", "GET  /api/me", "POST /_fake/fault", "POST /_fake/revoke", "GET  /_fake/stats"} {
		if !strings.Contains(help, ep) {
			t.Errorf("-h does not list %q", ep)
		}
	}
}

// TestBadFlagsDoNotEchoSecrets: a malformed credential flag, an unknown
// flag carrying a secret, or a bad mode is refused without the secret.
func TestBadFlagsDoNotEchoSecrets(t *testing.T) {
	const secret = "Sup3r-s3cret/+="
	for _, args := range [][]string{
		{"-user", "alice:"},
		{"-user", secret},
		{"-client", ":" + secret},
		{"-pasword=" + secret},
		{"-user", "alice:" + secret, "-basic-auth", "plain"},
		{"-user", "alice:" + secret, "extra"},
		{"-user", "alice:" + secret, "-listen", "0.0.0.0:0"},
	} {
		var stdout, stderr logbuf.Buffer
		err := run(context.Background(), args, &stdout, &stderr)
		if err == nil {
			t.Errorf("run %d: accepted bad flags", len(args))
			continue
		}
		out := err.Error() + stderr.String() + stdout.String()
		if strings.Contains(out, secret) || strings.Contains(out, "Sup3r") {
			t.Errorf("the error or usage for bad flags shows the secret (flag %s)", strings.SplitN(args[0], "=", 2)[0])
		}
	}
}

// TestServe runs the command with the client-authentication flags and talks
// to it over HTTP.
func TestServe(t *testing.T) {
	const secret = "s3cr/t+K3y=:x"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &urlWriter{urls: make(chan string, 1)}
	var stderr logbuf.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-user", "alice:alice-pw", "-client", "svc:" + secret, "-public-client", "app",
			"-basic-auth", "urlencoded", "-require-client"}, out, &stderr)
	}()
	var base string
	select {
	case base = <-out.urls:
	case err := <-done:
		t.Fatalf("run ended before listening: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("not listening after 30 s")
	}

	post := func(form url.Values, authorization string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, base+"/oauth2/token", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if authorization != "" {
			req.Header.Set("Authorization", authorization)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	basic := func(id, s string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(id+":"+s))
	}
	cc := url.Values{"grant_type": {"client_credentials"}}
	pw := url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"alice-pw"}}
	if code := post(cc, basic("svc", url.QueryEscape(secret))); code != 200 {
		t.Errorf("urlencoded basic: %d, want 200", code)
	}
	if code := post(cc, basic("svc", secret)); code != 401 {
		t.Errorf("raw basic in urlencoded mode: %d, want 401", code)
	}
	if code := post(pw, ""); code != 401 {
		t.Errorf("password grant without the required client: %d, want 401", code)
	}
	pw.Set("client_id", "app")
	if code := post(pw, ""); code != 200 {
		t.Errorf("password grant with the public client: %d, want 200", code)
	}
	resp, err := http.Post(base+"/_fake/revoke", "application/json", strings.NewReader(`{"username":"alice"}`))
	if err != nil {
		t.Fatal(err)
	}
	var revoked struct{ Revoked int }
	err = json.NewDecoder(resp.Body).Decode(&revoked)
	resp.Body.Close()
	if resp.StatusCode != 200 || err != nil || revoked.Revoked != 1 {
		t.Errorf("revoke alice: %d, %v, revoked %d; want 200, 1", resp.StatusCode, err, revoked.Revoked)
	}
	resp, err = http.Get(base + "/api/me")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("GET /api/me without a token: %d, want 401", resp.StatusCode)
	}
	resp, err = http.Get(base + "/_fake/stats")
	if err != nil {
		t.Fatal(err)
	}
	var st fakeiadvize.Stats
	err = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if err != nil || st.LastClientAuth != fakeiadvize.ClientAuthNone || st.LastClientID != "app" || !st.LastClientIDInForm ||
		st.APICalls != 1 || st.APIRefusals != 1 {
		t.Errorf("stats: %v, last client auth %q, client %q, in form %v", err, st.LastClientAuth, st.LastClientID, st.LastClientIDInForm)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run after cancel: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not stop after cancel")
	}
	if log := stderr.String(); strings.Contains(log, secret) || strings.Contains(log, url.QueryEscape(secret)) ||
		strings.Contains(log, "alice-pw") || !strings.Contains(log, "basic auth urlencoded, require client true") {
		t.Errorf("the log shows a secret, or not the settings")
	}
}

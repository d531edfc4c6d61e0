package iadvize

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

func TestCredsTwoReadsMakeOneLoginAndServeOneToken(t *testing.T) {
	e, u := newAppEnv(t, nil, issuing(24*time.Hour), "pw-one")

	r1 := e.mustRead("creds/app")
	r2 := e.mustRead("creds/app")
	u.wantCount(t, 1, "")
	if accessToken(t, r1) != accessToken(t, r2) {
		t.Fatal("two reads served different tokens")
	}
	if r1.Data["token_type"] != "Bearer" {
		t.Errorf("token_type = %v, want Bearer", r1.Data["token_type"])
	}
	want := e.clock.Now().Add(24 * time.Hour).UTC().Format(time.RFC3339)
	if r1.Data["expire_time"] != want {
		t.Errorf("expire_time = %v, want %s", r1.Data["expire_time"], want)
	}
	if r1.Secret == nil || r2.Secret == nil {
		t.Fatal("creds/ answered without a lease")
	}
}

// Inside the refresh window, with upstream failing, the old token is served with a
// warning, and its lease is still at least 1 s.
func TestCredsNearExpiryTokenServedWithWarningWhileRefreshFails(t *testing.T) {
	e, u := newAppEnv(t, nil, issuing(24*time.Hour), "pw-one")
	tok := accessToken(t, e.mustRead("creds/app"))

	u.setHandler(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "unavailable", http.StatusServiceUnavailable)
	})
	e.clock.Advance(24*time.Hour - 5*time.Second)
	resp := e.mustRead("creds/app")
	u.wantCount(t, 2, "")
	if accessToken(t, resp) != tok {
		t.Fatal("the still-valid token was not served while the refresh failed")
	}
	if len(resp.Warnings) == 0 || !strings.Contains(strings.Join(resp.Warnings, " "), `"app"`) {
		t.Fatal("no warning naming the role while serving a token whose refresh failed")
	}
	if resp.Secret.TTL != time.Second {
		t.Fatalf("lease TTL = %s, want 1s", resp.Secret.TTL)
	}

	// Once expired, nothing can be served: 429 while backing off.
	e.clock.Advance(10 * time.Second)
	_, err := e.read("creds/app")
	if err == nil {
		t.Fatal("an expired token was served")
	}
	if st := codedStatus(err); st != http.StatusTooManyRequests && st != http.StatusBadGateway {
		t.Fatalf("status = %d (%v), want 429 or 502", st, err)
	}
}

func TestCredsLeaseIsNotRenewable(t *testing.T) {
	e, u := newAppEnv(t, nil, issuing(24*time.Hour), "pw-one")
	resp := e.mustRead("creds/app")
	if resp.Secret.Renewable {
		t.Fatal("creds/ lease is renewable")
	}
	_, err := e.b.HandleRequest(context.Background(), &logical.Request{
		Operation: logical.RenewOperation, Secret: resp.Secret, Data: resp.Data, Storage: e.storage,
	})
	if err == nil {
		t.Fatal("renewing the lease succeeded; the token cannot be extended")
	}
	u.wantCount(t, 1, "")
}

func TestCredsRevokeSucceedsAndLeavesSharedTokenServed(t *testing.T) {
	e, u := newAppEnv(t, nil, issuing(24*time.Hour), "pw-one")
	resp := e.mustRead("creds/app")
	tok := accessToken(t, resp)
	before := storageSnapshot(t, e.storage)

	rresp, err := e.b.HandleRequest(context.Background(), &logical.Request{
		Operation: logical.RevokeOperation, Secret: resp.Secret, Data: resp.Data, Storage: e.storage,
	})
	if err != nil || (rresp != nil && rresp.IsError()) {
		t.Fatalf("revoke: err=%v resp=%v", err, respErr(rresp))
	}
	assertStorageUnchanged(t, e.storage, before)
	e.wantServed(tok, "after a revoke", "creds/app", "static-creds/app")
	u.wantCount(t, 1, ": revoking does nothing upstream")
}

func TestStaticCredsHasNoLeaseAndIntegerTTLs(t *testing.T) {
	u := newUpstream(t, issuing(24*time.Hour))
	e := newTestEnv(t, nil, nil)
	e.configure(u, nil) // refresh_before defaults to 1h
	e.addRole("app", "svc@example.com", "pw-one")

	s := e.mustRead("static-creds/app")
	if s.Secret != nil {
		t.Fatal("static-creds answered with a lease")
	}
	ttl, ok := s.Data["ttl"].(int64)
	if !ok {
		t.Fatalf("ttl has type %T, want int64", s.Data["ttl"])
	}
	period, ok := s.Data["rotation_period"].(int64)
	if !ok {
		t.Fatalf("rotation_period has type %T, want int64", s.Data["rotation_period"])
	}
	if period != 82800 || ttl != 82800 {
		t.Fatalf("rotation_period=%d ttl=%d, want 82800 and 82800", period, ttl)
	}
	// Vault Agent reads them as json.Number: they must encode as JSON integers.
	raw, err := json.Marshal(map[string]any{"ttl": s.Data["ttl"], "rotation_period": s.Data["rotation_period"]})
	if err != nil {
		t.Fatal(err)
	}
	if string(raw) != `{"rotation_period":82800,"ttl":82800}` {
		t.Fatalf("JSON encoding %s, want integers", raw)
	}

	c := e.mustRead("creds/app")
	if accessToken(t, c) != accessToken(t, s) {
		t.Fatal("static-creds and creds served different tokens")
	}
	if c.Data["expire_time"] != s.Data["expire_time"] || s.Data["token_type"] != "Bearer" {
		t.Fatal("static-creds data differs from creds data")
	}
	u.wantCount(t, 1, "")
}

func TestReadsOfUnknownRoleAre400NamingTheRole(t *testing.T) {
	e, u := newAppEnv(t, nil, issuing(24*time.Hour), "pw-one")
	before := storageSnapshot(t, e.storage)
	for _, path := range []string{"creds/", "static-creds/", "status/"} {
		for _, name := range []string{"ghost", "App", "no such role"} {
			resp, err := e.read(path + name)
			if err != nil {
				t.Errorf("%s%s: error %v, want a 400", path, name, err)
				continue
			}
			if resp == nil || !resp.IsError() {
				t.Errorf("%s%s: no error response", path, name)
				continue
			}
			if msg := resp.Error().Error(); !strings.Contains(msg, `"`+name+`"`) {
				t.Errorf("%s%s: message %q does not name the role", path, name, msg)
			}
		}
	}
	u.wantCount(t, 0, "")
	assertStorageUnchanged(t, e.storage, before)
}

// last_vault_rotation is what Vault Secrets Operator follows rotations by
// (README, "Kubernetes"): the time the login that got the token was sent, the
// same on every read of that token (a restart included), and different as soon
// as access_token is, even for a login sent in the same instant.
func TestStaticCredsLastVaultRotationFollowsTheToken(t *testing.T) {
	u := newUpstream(t, issuing(24*time.Hour))
	e := newTestEnv(t, nil, nil)
	e.configure(u, nil)
	e.addRole("app", "svc@example.com", "pw-one")
	sentAt := e.clock.Now()

	rotation := func(s *logical.Response) string {
		t.Helper()
		v, ok := s.Data["last_vault_rotation"].(string)
		if !ok {
			t.Fatalf("last_vault_rotation = %#v, want a string", s.Data["last_vault_rotation"])
		}
		if _, err := time.Parse(time.RFC3339Nano, v); err != nil {
			t.Fatalf("last_vault_rotation %q is not RFC 3339: %v", v, err)
		}
		return v
	}
	first := e.mustRead("static-creds/app")
	r1 := rotation(first)
	if got, _ := time.Parse(time.RFC3339Nano, r1); !got.Equal(sentAt) {
		t.Fatalf("last_vault_rotation = %s, want the login's send time %s", r1, sentAt.UTC().Format(time.RFC3339Nano))
	}
	e.clock.Advance(time.Hour)
	if r := rotation(e.mustRead("static-creds/app")); r != r1 {
		t.Fatalf("last_vault_rotation moved from %s to %s with the same token", r1, r)
	}
	restarted := newTestEnv(t, e.storage, e.clock)
	if r := rotation(restarted.mustRead("static-creds/app")); r != r1 {
		t.Fatalf("after a restart, last_vault_rotation = %s, want %s", r, r1)
	}

	// Two rotations in the same instant still give two values.
	seen := map[string]string{accessToken(t, first): r1}
	for range 2 {
		if resp, err := restarted.doRotate("app"); err != nil || resp.IsError() {
			t.Fatalf("rotate-role: %v %v", err, respErr(resp))
		}
		s := restarted.mustRead("static-creds/app")
		tok, r := accessToken(t, s), rotation(s)
		for otherTok, otherR := range seen {
			if otherTok != tok && otherR == r {
				t.Fatalf("two tokens share last_vault_rotation %s", r)
			}
		}
		seen[tok] = r
	}
	if len(seen) != 3 {
		t.Fatalf("%d distinct tokens, want 3", len(seen))
	}
}

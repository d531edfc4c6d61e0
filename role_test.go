package iadvize

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// A role's identity (role.go): its credentials ID, and the principal upstream
// counts its logins against.

// Row 11 of the issue: Svc@Example.com and svc@example.com (or one name in NFC
// and NFD) are one user to upstream: the second role warns, and both share one
// login budget.
func TestPrincipalsFoldCaseAndUnicodeForm(t *testing.T) {
	for _, pair := range [][2]string{
		{"Svc@Example.com", "svc@example.com"},
		{"jos\u00e9@example.com", "jose\u0301@example.com"}, // é precomposed (NFC) and decomposed (NFD)
		{"STRASSE@example.com", "stra\u00dfe@example.com"},
	} {
		t.Run(pair[1], func(t *testing.T) {
			u := newUpstream(t, issuing(24*time.Hour))
			e := newTestEnv(t, nil, nil)
			e.configure(u, map[string]any{"user_logins_per_minute": 1})
			e.addRole("first", pair[0], "pw-1")
			resp := e.mustWrite("roles/second", map[string]any{"username": pair[1], "password": "pw-2"})
			if resp == nil || len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "first") {
				t.Fatalf("warnings %v, want one naming role first", resp)
			}
			e.mustRead("creds/first")
			if _, err := e.read("creds/second"); codedStatus(err) != http.StatusTooManyRequests {
				t.Fatalf("the second spelling's login: %v, want 429 (one budget for one user)", err)
			}
			u.wantCount(t, 1, "")
		})
	}
}

// A CredentialsID never repeats: a role deleted and created again with the same
// values gets another, so no answer of the old role can pass for the new one.
func TestCredentialsIDNeverRepeats(t *testing.T) {
	e := newTestEnv(t, nil, nil)
	seen := map[string]bool{}
	for range 20 {
		e.addRole("app", "svc@example.com", "pw-one")
		r, err := readRole(t.Context(), e.storage, "app")
		if err != nil || r == nil {
			t.Fatal(err)
		}
		if seen[r.CredentialsID] || len(r.CredentialsID) != 32 {
			t.Fatalf("credentials ID %q repeated or malformed", r.CredentialsID)
		}
		seen[r.CredentialsID] = true
		if resp, err := e.do(logical.DeleteOperation, "roles/app", nil); err != nil || resp.IsError() {
			t.Fatal(err)
		}
	}
	if strings.Contains(e.logs.String(), "pw-one") {
		t.Fatal("the password reached the log")
	}
}

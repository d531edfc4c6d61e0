package iadvize

import (
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// A login's answer is kept only for the exact credentials and token it was sent
// against (README, "When the plugin logs in"; docs/login-policy.md, "After the
// answer"): not after the role was deleted and created again under its name,
// its credentials rewritten, or a newer token stored by another login.

// ticketUpstream holds every login until the test answers it, one by one and in
// any order: login i (in arrival order) waits on tickets[i].
type ticketUpstream struct {
	*upstream
	mu      sync.Mutex
	arrived chan int
	tickets []chan http.HandlerFunc
	users   []string // the username each login was sent with
}

func newTicketUpstream(t *testing.T) *ticketUpstream {
	tu := &ticketUpstream{arrived: make(chan int, 100)}
	tu.upstream = newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		answer := make(chan http.HandlerFunc, 1)
		tu.mu.Lock()
		i := len(tu.tickets)
		tu.tickets = append(tu.tickets, answer)
		tu.users = append(tu.users, r.PostForm.Get("username"))
		tu.mu.Unlock()
		tu.arrived <- i
		select {
		case h := <-answer:
			h(w, r)
		case <-r.Context().Done():
		}
	})
	t.Cleanup(func() { // release whatever is still held, before the server closes
		tu.mu.Lock()
		defer tu.mu.Unlock()
		for _, c := range tu.tickets {
			select {
			case c <- func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) }:
			default:
			}
		}
	})
	return tu
}

// next waits for the next login to arrive and returns its number.
func (tu *ticketUpstream) next(t *testing.T) int {
	t.Helper()
	select {
	case i := <-tu.arrived:
		return i
	case <-time.After(waitFor):
		t.Fatal("no login reached upstream")
		return -1
	}
}

// answer answers login i with h.
func (tu *ticketUpstream) answer(i int, h http.HandlerFunc) {
	tu.mu.Lock()
	c := tu.tickets[i]
	tu.mu.Unlock()
	c <- h
}

// user is the username login i was sent with.
func (tu *ticketUpstream) user(i int) string {
	tu.mu.Lock()
	defer tu.mu.Unlock()
	return tu.users[i]
}

// tokenFor answers a login with a day-long token named after its username.
func tokenFor(w http.ResponseWriter, r *http.Request) {
	jsonAnswer(http.StatusOK, map[string]any{"access_token": "tok-for-" + url.QueryEscape(r.PostForm.Get("username")),
		"token_type": "Bearer", "expires_in": 86400})(w, r)
}

// namedToken answers a login with the given day-long token.
func namedToken(tok string) http.HandlerFunc {
	return jsonAnswer(http.StatusOK, map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": 86400})
}

// Rows 1 and 2 of the issue: a role deleted and created again under its name
// (Terraform's replace) while a read's login for the old role is in flight. The
// old answer, a token or a refusal, is dropped; the new role logs in as itself.
func TestRoleReplacedDuringALoginNeverGetsTheOldAnswer(t *testing.T) {
	for _, tc := range []struct {
		name string
		old  http.HandlerFunc
	}{
		{"the old login brings a token", tokenFor},
		{"the old login is refused", failWith(http.StatusUnauthorized, "application/json", `{"error":"invalid_grant"}`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := newTicketUpstream(t)
			e := newTestEnv(t, nil, nil)
			e.configure(u.upstream, map[string]any{"request_timeout": "60s"})
			e.addRole("app", "old@example.com", "pw-old")

			read := e.readAsync("creds/app")
			first := u.next(t)
			if resp, err := e.do(logical.DeleteOperation, "roles/app", nil); err != nil || resp.IsError() {
				t.Fatalf("delete: %v %v", err, respErr(resp))
			}
			e.addRole("app", "new@example.com", "pw-new")
			u.answer(first, tc.old)
			second := u.next(t) // the read judges again, as the new role
			if u.user(first) != "old@example.com" || u.user(second) != "new@example.com" {
				t.Fatalf("logins sent as %q then %q", u.user(first), u.user(second))
			}
			u.answer(second, tokenFor)
			want := "tok-for-" + url.QueryEscape("new@example.com")
			if got := accessToken(t, awaitRead(t, read, "the read")); got != want {
				t.Fatalf("the read got %q, want the new role's token", got)
			}
			st := e.mustRead("status/app")
			if st.Data["credentials_rejected"] != false || st.Data["last_outcome"] != outcomeSuccess {
				t.Fatalf("status after the replace: %v", st.Data)
			}
			if stored := storedToken(t, e.storage, "app"); stored == nil || stored.AccessToken != want {
				t.Fatal("storage does not hold the new role's token")
			}
		})
	}
}

// Row 4: a read's login that answers after a rotate-role login sent later never
// replaces rotate-role's token (an older answer never replaces a newer token),
// and its failure does not judge the role either.
func TestAnOlderLoginNeverReplacesANewerToken(t *testing.T) {
	for _, tc := range []struct {
		name  string
		older http.HandlerFunc
	}{
		{"the older login brings a token", namedToken("tok-older")},
		{"the older login fails", failWith(http.StatusServiceUnavailable, "application/json", `{"error":"server_error"}`)},
		{"the older login is refused", failWith(http.StatusUnauthorized, "application/json", `{"error":"invalid_grant"}`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := newTicketUpstream(t)
			e := newTestEnv(t, nil, nil)
			e.configure(u.upstream, map[string]any{"request_timeout": "60s"})
			e.addRole("app", "svc@example.com", "pw-one")

			read := e.readAsync("creds/app") // cold: its login is sent first
			older := u.next(t)
			e.clock.Advance(time.Second)
			rotate := e.doAsync(logical.UpdateOperation, "rotate-role/app")
			newer := u.next(t)
			u.answer(newer, namedToken("tok-newer"))
			rotated := awaitRead(t, rotate, "rotate-role")
			u.answer(older, tc.older)
			if got := accessToken(t, awaitRead(t, read, "the read")); got != "tok-newer" {
				t.Fatalf("the read got %q, want rotate-role's newer token", got)
			}
			if got := accessToken(t, e.mustRead("creds/app")); got != "tok-newer" {
				t.Fatalf("the next read got %q, want rotate-role's token", got)
			}
			st := e.mustRead("status/app")
			if st.Data["issue_time"] != rotated.Data["issue_time"] || st.Data["last_outcome"] != outcomeSuccess ||
				st.Data["credentials_rejected"] != false || st.Data["no_login_before"] != "" {
				t.Fatalf("status %v after rotate-role answered %v: the older login judged the role", st.Data, rotated.Data)
			}
			if stored := storedToken(t, e.storage, "app"); stored == nil || stored.AccessToken != "tok-newer" {
				t.Fatal("storage does not hold the newer token")
			}
		})
	}
}

// Row 12: a role re-applied with the values it has (Terraform, Ansible, CI)
// keeps its token and its bookkeeping, costs no login, and warns about a shared
// username once, when the sharing begins; any change to what a login sends
// retires the token.
func TestRoleReappliedUnchangedKeepsItsToken(t *testing.T) {
	u := newUpstream(t, issuing(24*time.Hour))
	e := newTestEnv(t, nil, nil)
	e.configure(u, nil)
	data := map[string]any{"username": "svc@example.com", "password": "pw-one", "scope": "read write", "ttl": "1h"}
	e.mustWrite("roles/app", data)
	tok := accessToken(t, e.mustRead("creds/app"))
	before := storedToken(t, e.storage, "app")

	for range 3 {
		if resp := e.mustWrite("roles/app", data); resp != nil && len(resp.Warnings) > 0 {
			t.Fatalf("re-applying the role warned: %q", resp.Warnings)
		}
	}
	e.mustWrite("roles/app", map[string]any{"password": "pw-one", "ttl": "2h"}) // only a lease cap changes
	if got := accessToken(t, e.mustRead("creds/app")); got != tok {
		t.Fatal("re-applying unchanged credentials retired the token")
	}
	if after := storedToken(t, e.storage, "app"); after.LastAttempt != before.LastAttempt || after.CredentialsID != before.CredentialsID {
		t.Fatal("re-applying unchanged credentials changed the token's bookkeeping")
	}
	u.wantCount(t, 1, " (re-applies cost no login)")

	// The sharing warning comes when it begins, and not on re-applies.
	other := map[string]any{"username": "SVC@example.com", "password": "pw-other"}
	if resp := e.mustWrite("roles/other", other); resp == nil || len(resp.Warnings) != 1 {
		t.Fatal("no warning when a second role began to share the username")
	}
	if resp := e.mustWrite("roles/other", other); resp != nil && len(resp.Warnings) > 0 {
		t.Fatalf("re-applying a role that shares a username warned again: %q", resp.Warnings)
	}

	// Each value a login sends retires the token.
	for _, change := range []map[string]any{
		{"scope": "read"}, {"password": "pw-two"}, {"username": "svc2@example.com"},
		{"client_id": "a-client"}, {"grant_type": "client_credentials", "client_id": "c", "client_secret": "s"},
	} {
		last := accessToken(t, e.mustRead("creds/app"))
		e.mustWrite("roles/app", change)
		if accessToken(t, e.mustRead("creds/app")) == last {
			t.Fatalf("writing %v kept the token of the old values", keysOf(change))
		}
	}
}

func keysOf(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
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

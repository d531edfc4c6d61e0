package iadvize

import (
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// A login's answer is kept only for the exact credentials and token it was sent
// against (README, "When the plugin logs in"; docs/login-policy.md, "After the
// answer"; login_outcome.go): not after the role was deleted and created again
// under its name, its credentials rewritten, or a newer token stored by another
// login.

// A login sent under credentials that are rewritten before it answers is not
// recorded under the new ones: the read logs in again with them (or answers
// 409), and the old credentials' token is never served or stored.
func TestLoginAnsweredAfterCredentialsRewriteIsNotKept(t *testing.T) {
	const stale = "token-of-the-old-credentials"
	e, u := newHoldingAppEnv(t)

	u.hold()
	read := e.readAsync("creds/app")
	u.waitEntered(t) // sent with the old password
	e.mustWrite("roles/app", map[string]any{"password": "pw-rewritten"})
	u.release(jsonAnswer(http.StatusOK, map[string]any{"access_token": stale, "token_type": "Bearer", "expires_in": 86400}))

	if r := awaitResult(t, read, "the read during the rewrite"); r.err != nil {
		expectCodedError(t, r.err, http.StatusConflict, "rewritten")
	} else if accessToken(t, r.resp) == stale {
		t.Fatal("the read was served the old credentials' token")
	}
	e.settle()
	if accessToken(t, e.mustRead("creds/app")) == stale {
		t.Fatal("the next read was served the old credentials' token")
	}
	if st := storedToken(t, e.storage, "app"); st == nil || st.AccessToken == stale {
		t.Fatal("storage does not hold a token of the new credentials")
	}
	u.wantCount(t, 2, " (the login of the old credentials, then one with the new)")
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
			e := newHeldAppEnv(t, u.upstream, "old@example.com", "pw-old")

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
			e := newHeldAppEnv(t, u.upstream, "svc@example.com", "pw-one")

			read := e.readAsync("creds/app") // cold: its login is sent first
			older := u.next(t)
			e.clock.Advance(time.Second)
			rotate := e.doAsync(logical.UpdateOperation, "rotate-role/app", nil)
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

// A read whose login is overtaken by a rewrite of the role's credentials judges
// again, once, under the new credentials (a second login); a second rewrite
// during that login answers 409 (docs/read-path.md): two logins, never a third.
func TestCredentialsRewrittenDuringTheLoginTwiceRunningIs409(t *testing.T) {
	for _, rewrites := range []int{1, 2} {
		t.Run(fmt.Sprintf("%d rewrite(s)", rewrites), func(t *testing.T) {
			u := newTicketUpstream(t)
			e := newHeldAppEnv(t, u.upstream, "svc@example.com", "pw-0")
			read := e.readAsync("creds/app")
			for i := range 2 {
				login := u.next(t)
				if i < rewrites {
					e.mustWrite("roles/app", map[string]any{"password": fmt.Sprintf("pw-%d", i+1)})
				}
				u.answer(login, tokenFor)
				if i+1 > rewrites {
					break
				}
			}
			r := awaitResult(t, read, "the read")
			switch rewrites {
			case 1:
				if r.err != nil || accessToken(t, r.resp) == "" {
					t.Fatalf("one rewrite: %v, want the token of the new credentials", r.err)
				}
			case 2:
				expectCodedError(t, r.err, http.StatusConflict, "rewritten during the login, twice running")
			}
			u.mu.Lock()
			n := len(u.tickets)
			u.mu.Unlock()
			if n != 2 {
				t.Fatalf("%d logins, want 2", n)
			}
		})
	}
}

// An older login's token that answers after a newer login was rejected is kept
// (it is newer than the stored token), but the newer attempt's bookkeeping
// stands: the credentials stay rejected.
func TestAnOlderTokenAfterANewerRejectionKeepsTheVerdict(t *testing.T) {
	u := newTicketUpstream(t)
	e := newHeldAppEnv(t, u.upstream, "svc@example.com", "pw-one")
	read := e.readAsync("creds/app")
	older := u.next(t)
	e.clock.Advance(time.Second)
	rotate := e.doAsync(logical.UpdateOperation, "rotate-role/app", nil)
	newer := u.next(t)
	u.answer(newer, jsonAnswer(http.StatusUnauthorized, map[string]any{"error": "invalid_grant"}))
	if r := awaitResult(t, rotate, "rotate-role"); r.err == nil {
		t.Fatal("rotate-role was not refused")
	}
	u.answer(older, namedToken("tok-older"))
	if got := accessToken(t, awaitRead(t, read, "the read")); got != "tok-older" {
		t.Fatalf("the read got %q, want the older login's token", got)
	}
	st := e.mustRead("status/app").Data
	if st["credentials_rejected"] != true || st["last_outcome"] != outcomeRejected || st["has_token"] != true {
		t.Fatalf("status %v: the older login's success undid the newer verdict", st)
	}
}

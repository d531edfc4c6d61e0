package iadvize

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
)

// Refused-token reports (README, "When the API refuses the token";
// refused_token.go): one test per rule, on the fake clock, then the reports that
// meet a read's login or a rotation.

// logins is the number of token requests the fake received.
func logins(u *upstream) int { return u.Stats().LoginAttempts }

// verifyCalls is the number of token checks the fake received.
func verifyCalls(u *upstream) int { return u.Stats().VerifyCalls }

// wantStatusReport fails the test unless status/ names the last report's time
// and outcome.
func (e *testEnv) wantStatusReport(name string, at time.Time, outcome string) {
	e.t.Helper()
	st := e.mustRead("status/" + name)
	if st.Data["last_report"] != rfc3339(at) || st.Data["last_report_outcome"] != outcome {
		e.t.Fatalf("status last_report %v %v, want %s %s", st.Data["last_report"], st.Data["last_report_outcome"], rfc3339(at), outcome)
	}
}

// errOr is err, or else alt.
func errOr(err, alt error) error {
	if err != nil {
		return err
	}
	return alt
}

// Rule 1: a hash that is not the cached token's (it was replaced already) gets
// the current token, with no upstream call and no storage write.
func TestReportOfAReplacedTokenCostsNothing(t *testing.T) {
	e, fake := newFakeAppEnv(t, "pw-report")
	old := accessToken(t, e.mustRead("creds/app"))
	e.clock.Advance(time.Minute)
	if resp, err := e.doRotate("app"); err != nil || resp.IsError() {
		t.Fatalf("rotate-role: %v %v", err, respErr(resp))
	}
	current := accessToken(t, e.mustRead("creds/app"))
	before, stats := storageSnapshot(t, e.storage), fake.Stats()
	for _, path := range []string{"creds/app", "static-creds/app"} {
		for _, hash := range []string{tokenSHA256(old), strings.Repeat("ab", 32)} {
			if got := accessToken(t, e.mustReport(path, hash)); got != current {
				t.Fatalf("%s: a report of another token did not get the current token", path)
			}
		}
	}
	if after := fake.Stats(); after.LoginAttempts != stats.LoginAttempts || after.VerifyCalls != stats.VerifyCalls {
		t.Fatalf("stale reports reached upstream: %d logins, %d checks more", after.LoginAttempts-stats.LoginAttempts, after.VerifyCalls-stats.VerifyCalls)
	}
	assertStorageUnchanged(t, e.storage, before)
	e.wantStatusReport("app", time.Time{}, "")
}

// Rule 2: the cached token's hash is checked at verify_url first. Valid: the
// same token, no login, a warning; the check is throttled as verify/'s is.
// Invalid: dropped, and one login.
func TestReportIsCheckedAtVerifyURLFirst(t *testing.T) {
	t.Run("valid there: same token, no login, a warning", func(t *testing.T) {
		e, fake := newFakeAppEnv(t, "pw-report")
		tok := accessToken(t, e.mustRead("creds/app"))
		resp := e.mustReport("creds/app", tokenSHA256(tok))
		if accessToken(t, resp) != tok {
			t.Fatal("a report of a valid token changed the token")
		}
		if len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "another reason (scope, permission)") {
			t.Fatalf("warnings %q, want one saying the refusal has another cause", resp.Warnings)
		}
		if logins(fake) != 1 || verifyCalls(fake) != 1 {
			t.Fatalf("%d logins and %d checks, want 1 and 1", logins(fake), verifyCalls(fake))
		}
		e.wantStatusReport("app", e.clock.Now(), reportVerifiedValid)
		// Within verifyInterval, reports (and verify/) get the same answer
		// without a check.
		e.clock.Advance(verifyInterval - time.Second)
		e.mustReport("static-creds/app", tokenSHA256(tok))
		if v := e.mustRead("verify/app"); v.Data["cached"] != true {
			t.Fatalf("verify/ after a report's check: %v, want the cached answer", v.Data)
		}
		if verifyCalls(fake) != 1 {
			t.Fatalf("%d checks within %s, want 1", verifyCalls(fake), verifyInterval)
		}
		e.clock.Advance(time.Second)
		e.mustReport("creds/app", tokenSHA256(tok))
		if verifyCalls(fake) != 2 || logins(fake) != 1 {
			t.Fatalf("after the interval: %d checks and %d logins, want 2 and 1", verifyCalls(fake), logins(fake))
		}
	})

	t.Run("invalid there: dropped, one login", func(t *testing.T) {
		e, fake := newFakeAppEnv(t, "pw-report")
		tok := accessToken(t, e.mustRead("creds/app"))
		fake.RevokeAll()
		e.clock.Advance(time.Minute)
		resp := e.mustReport("creds/app", tokenSHA256(tok))
		fresh := accessToken(t, resp)
		if fresh == tok {
			t.Fatal("a token verify_url refused was served again")
		}
		if resp.Secret == nil || resp.Secret.TTL <= 0 {
			t.Fatal("a report of creds/ got no lease")
		}
		if logins(fake) != 2 || verifyCalls(fake) != 1 {
			t.Fatalf("%d logins and %d checks, want 2 and 1", logins(fake), verifyCalls(fake))
		}
		if accessToken(t, e.mustRead("creds/app")) != fresh {
			t.Fatal("readers do not get the new token")
		}
		e.wantStatusReport("app", e.clock.Now(), reportDropped)
	})
}

// Rule 3: with no verify_url, or one not on the token host (it cannot be used:
// tokens go only to their issuer), a report drops the token and logs in once,
// then no more than once per role per 5 minutes: a report inside that time gets
// 429 naming when a report may act again.
func TestReportWithoutVerifyURLForcesOneLoginPerFiveMinutes(t *testing.T) {
	for name, verifyURL := range map[string]string{
		"no verify_url":              "",
		"verify_url on another host": "https://api.iadvize.com/_authenticated",
	} {
		t.Run(name, func(t *testing.T) {
			e, fake := newFakeEnv(t, fakeiadvize.Options{})
			fake.AddUser("svc@example.com", "pw-report")
			e.mustWrite("config", map[string]any{"verify_url": verifyURL})
			e.addRole("app", "svc@example.com", "pw-report")
			first := accessToken(t, e.mustRead("creds/app"))

			e.clock.Advance(time.Minute)
			reportedAt := e.clock.Now()
			second := accessToken(t, e.mustReport("static-creds/app", tokenSHA256(first)))
			if second == first || logins(fake) != 2 || verifyCalls(fake) != 0 {
				t.Fatalf("first report: new token %v, %d logins, %d checks; want a new token, 2, 0", second != first, logins(fake), verifyCalls(fake))
			}
			e.wantStatusReport("app", reportedAt, reportDropped)

			// A consumer that reports every token it gets: the next report inside
			// the interval is refused, naming when a report may act again.
			e.clock.Advance(reportLoginInterval - time.Second)
			_, err := e.report("creds/app", tokenSHA256(second))
			again := reportedAt.Add(reportLoginInterval).UTC().Format(time.RFC3339)
			if codedStatus(err) != http.StatusTooManyRequests || !strings.Contains(errText(err), "a report may act again at "+again) {
				t.Fatalf("report inside %s: %v, want 429 naming %s", reportLoginInterval, err, again)
			}
			if logins(fake) != 2 {
				t.Fatalf("%d logins, want 2: a throttled report logged in", logins(fake))
			}
			e.wantStatusReport("app", e.clock.Now(), reportThrottled)
			if accessToken(t, e.mustRead("creds/app")) != second {
				t.Fatal("a throttled report changed what readers get")
			}

			e.clock.Advance(time.Second)
			if third := accessToken(t, e.mustReport("creds/app", tokenSHA256(second))); third == second || logins(fake) != 3 {
				t.Fatalf("after %s: new token %v, %d logins; want a new token and 3", reportLoginInterval, third != second, logins(fake))
			}
		})
	}
}

// The 5-minute rule survives a restart: it is stored with the token state.
func TestReportIntervalSurvivesARestart(t *testing.T) {
	e, fake := newFakeEnv(t, fakeiadvize.Options{})
	fake.AddUser("svc@example.com", "pw-report")
	e.mustWrite("config", map[string]any{"verify_url": ""})
	e.addRole("app", "svc@example.com", "pw-report")
	first := accessToken(t, e.mustRead("creds/app"))
	second := accessToken(t, e.mustReport("creds/app", tokenSHA256(first)))

	restarted := newTestEnv(t, e.storage, e.clock)
	if _, err := restarted.report("creds/app", tokenSHA256(second)); codedStatus(err) != http.StatusTooManyRequests {
		t.Fatalf("report after a restart: %v, want 429", err)
	}
	if logins(fake) != 2 {
		t.Fatalf("%d logins, want 2", logins(fake))
	}
}

// Rule 4: concurrent reports share the one login, and share it with reads;
// every login counts against the budgets, and is refused when they are spent.
func TestConcurrentReportsShareOneLogin(t *testing.T) {
	u := newHoldingUpstream(t)
	e := newTestEnv(t, nil, nil)
	e.configure(u.upstream, map[string]any{"verify_url": "", "request_timeout": "60s"})
	e.addRole("app", "svc@example.com", "pw-report")
	first := accessToken(t, e.mustRead("creds/app"))
	hash := tokenSHA256(first)

	u.hold()
	const reporters, readers = 20, 5
	var wg sync.WaitGroup
	got := make(chan string, reporters+readers)
	errs := make(chan error, reporters+readers)
	answer := func(resp *logical.Response, err error) {
		if err != nil || resp == nil || resp.IsError() {
			errs <- errOr(err, respErr(resp))
			return
		}
		got <- resp.Data["access_token"].(string)
	}
	wg.Add(1)
	go func() { defer wg.Done(); answer(e.report("creds/app", hash)) }()
	u.waitEntered(t) // the first report's login, held
	for range reporters - 1 {
		wg.Add(1)
		go func() { defer wg.Done(); answer(e.report("static-creds/app", hash)) }()
	}
	for range readers {
		wg.Add(1)
		go func() { defer wg.Done(); answer(e.read("creds/app")) }()
	}
	waitJoinedFlight(t, u, "(*backend).serveOutcome")
	u.release(u.issue)
	wg.Wait()
	close(got)
	close(errs)
	for err := range errs {
		t.Fatalf("a reporter or reader failed: %v", err)
	}
	tokens := map[string]int{}
	for tok := range got {
		tokens[tok]++
	}
	if len(tokens) != 1 || tokens[first] != 0 {
		t.Fatalf("%d distinct tokens served (the refused one %d times), want one new token for all", len(tokens), tokens[first])
	}
	u.wantCount(t, 2, " (the first read's login and one for every report and reader)")
}

func TestReportLoginCountsAgainstTheBudget(t *testing.T) {
	e, fake := newFakeEnv(t, fakeiadvize.Options{})
	fake.AddUser("svc@example.com", "pw-report")
	e.mustWrite("config", map[string]any{"verify_url": "", "user_logins_per_minute": 1})
	e.addRole("app", "svc@example.com", "pw-report")
	first := accessToken(t, e.mustRead("creds/app"))
	_, err := e.report("creds/app", tokenSHA256(first))
	if codedStatus(err) != http.StatusTooManyRequests || !strings.Contains(errText(err), "login budget") {
		t.Fatalf("report with the user's budget spent: %v, want 429 naming the budget", err)
	}
	if logins(fake) != 1 {
		t.Fatalf("%d logins, want 1", logins(fake))
	}
	// No login could happen: the token stays for readers, and the report
	// interval has not started.
	if accessToken(t, e.mustRead("creds/app")) != first {
		t.Fatal("a report that could not log in dropped the token")
	}
	e.clock.Advance(budgetWindow)
	if got := accessToken(t, e.mustReport("creds/app", tokenSHA256(first))); got == first || logins(fake) != 2 {
		t.Fatalf("once the budget had room: a new token %v, %d logins; want a new token and 2", got != first, logins(fake))
	}
}

// Rule 5: a hash that is not 64 hex digits is a 400 naming the field, and costs
// nothing; the hex digits may be upper-case. Unknown fields are refused.
func TestReportHashMustBe64HexDigits(t *testing.T) {
	e, fake := newFakeAppEnv(t, "pw-report")
	tok := accessToken(t, e.mustRead("creds/app"))
	before := storageSnapshot(t, e.storage)
	for _, bad := range []any{"", "abc", strings.Repeat("g", 64), strings.Repeat("a", 63), strings.Repeat("a", 65), tok} {
		for _, path := range []string{"creds/app", "static-creds/app"} {
			resp, err := e.report(path, bad.(string))
			if err != nil || resp == nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), fieldRefusedTokenSHA256) {
				t.Fatalf("%s with a bad hash: err=%v resp=%v, want a 400 naming %s", path, err, respErr(resp), fieldRefusedTokenSHA256)
			}
			if strings.Contains(resp.Error().Error(), tok) {
				t.Fatal("the 400 echoes the token")
			}
		}
	}
	resp, err := e.do(logical.UpdateOperation, "creds/app", nil)
	if err != nil || !resp.IsError() {
		t.Fatalf("an update with no hash: %v %v, want a 400", err, respErr(resp))
	}
	resp, err = e.do(logical.UpdateOperation, "creds/app", map[string]any{fieldRefusedTokenSHA256: tokenSHA256(tok), "token": tok})
	if err != nil || !resp.IsError() || strings.Contains(resp.Error().Error(), tok) {
		t.Fatalf("an update with an unknown field: %v %v, want a 400 that does not echo it", err, respErr(resp))
	}
	assertStorageUnchanged(t, e.storage, before)
	if logins(fake) != 1 || verifyCalls(fake) != 0 {
		t.Fatalf("bad reports reached upstream")
	}
	if got := accessToken(t, e.mustReport("creds/app", strings.ToUpper(tokenSHA256(tok)))); got != tok {
		t.Fatal("an upper-case hash of a valid token changed the token")
	}
	if verifyCalls(fake) != 1 {
		t.Fatal("an upper-case hash was not taken as the cached token's")
	}
}

// A report is answered as a read: a lease from creds/, the static fields from
// static-creds/; a role that does not exist is a 400.
func TestReportIsAnsweredAsARead(t *testing.T) {
	e, fake := newFakeAppEnv(t, "pw-report")
	tok := accessToken(t, e.mustRead("creds/app"))
	fake.RevokeAll()
	s := e.mustReport("static-creds/app", tokenSHA256(tok))
	if s.Secret != nil {
		t.Fatal("a report of static-creds/ got a lease")
	}
	for _, f := range []string{"ttl", "rotation_period", "last_vault_rotation", "expire_time", "token_type"} {
		if _, ok := s.Data[f]; !ok {
			t.Fatalf("a report of static-creds/ lacks %s", f)
		}
	}
	resp, err := e.report("creds/ghost", tokenSHA256(tok))
	if err != nil || resp == nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), `"ghost"`) {
		t.Fatalf("a report of a missing role: %v %v, want a 400 naming it", err, respErr(resp))
	}
}

// A read that needs a login (its token is within the skew margin of expiry)
// and joins the flight of a refused-token report that ends without a login
// (verify_url says the token is valid) gets neither the reporter's verdict (its
// warning, or its 429) nor the dying token: it runs a flight of its own and
// logs in (README, "creds and static-creds": a read never gets a token it cannot use without a
// login having started). The reporter gets the same token with the warning.
func TestReadJoiningAReportFlightLogsInAndGetsNoVerdict(t *testing.T) {
	e, u := newHoldingAppEnv(t)
	tokens := u.issue
	valid := jsonAnswer(http.StatusOK, map[string]any{"authenticated": true})
	u.issue = func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/_authenticated" {
			valid(w, r)
			return
		}
		tokens(w, r)
	}
	first := accessToken(t, e.mustRead("creds/app"))
	e.clock.Advance(24*time.Hour - 10*time.Second) // alive, but within the 30 s skew margin

	u.hold()
	report := e.doAsync(logical.UpdateOperation, "creds/app", map[string]any{fieldRefusedTokenSHA256: tokenSHA256(first)})
	u.waitEntered(t) // the report's check at verify_url
	read := e.readAsync("creds/app")
	waitJoinedFlight(t, u, "(*backend).serveToken")
	u.release(valid)

	rep := awaitRead(t, report, "the report")
	if accessToken(t, rep) != first || !strings.Contains(strings.Join(rep.Warnings, " "), "verify_url says the reported token is valid") {
		t.Fatalf("the report got another token, or no warning that verify_url takes it (warnings %q)", rep.Warnings)
	}
	resp := awaitRead(t, read, "the read that joined the report's flight")
	if len(resp.Warnings) > 0 {
		t.Errorf("the read got warnings %q: the reporter's verdict is for the reporter alone", resp.Warnings)
	}
	if accessToken(t, resp) == first {
		t.Error("the read was served the token within its skew margin, with no login started")
	}
	if st := u.Stats(); st.Handled != 3 { // the first login, the check, the read's login
		t.Errorf("upstream requests = %d, want 3", st.Handled)
	}
}

// A report whose token is replaced while its check at verify_url is in flight
// (rotate-role has a flight of its own), and which verify_url then finds
// invalid, is answered with the new token, not the refused one.
func TestReportOvertakenByARotationGetsTheNewToken(t *testing.T) {
	entered, gate := make(chan struct{}, 10), make(chan struct{})
	tokens := issuing(24 * time.Hour)
	invalid := jsonAnswer(http.StatusUnauthorized, map[string]any{"error": "invalid_token"})
	e, _ := newAppEnv(t, nil, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/_authenticated" {
			tokens(w, r)
			return
		}
		entered <- struct{}{}
		select {
		case <-gate:
			invalid(w, r)
		case <-r.Context().Done():
		}
	}, "pw-overtaken")
	var once sync.Once
	open := func() { once.Do(func() { close(gate) }) }
	t.Cleanup(open)
	first := accessToken(t, e.mustRead("creds/app"))

	report := e.reportAsync("creds/app", first)
	awaitSignal(t, entered, "the report's check at verify_url")
	if _, err := e.doRotate("app"); err != nil {
		t.Fatalf("rotate-role: %v", err)
	}
	current := accessToken(t, e.mustRead("creds/app"))
	if current == first {
		t.Fatal("rotate-role did not replace the token")
	}
	open()
	if got := accessToken(t, awaitRead(t, report, "the report")); got != current {
		t.Fatalf("the report was answered with the refused token (%v) or another, want the one rotate-role stored", got == first)
	}
}

// refused_token_sha256 on a read (vault read ... refused_token_sha256=...) reports
// nothing, and the answer says so.
func TestReportFieldOnAReadIsNamedAsIgnored(t *testing.T) {
	e, fake := newFakeAppEnv(t, "pw-report")
	tok := accessToken(t, e.mustRead("creds/app"))
	for _, path := range []string{"creds/app", "static-creds/app"} {
		resp, err := e.do(logical.ReadOperation, path, map[string]any{fieldRefusedTokenSHA256: tokenSHA256(tok)})
		if err != nil || resp == nil || resp.IsError() || accessToken(t, resp) != tok {
			t.Fatalf("%s read: %v %v", path, err, respErr(resp))
		}
		if len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "ignored") {
			t.Fatalf("%s read with %s: warnings %q, want one saying it was ignored", path, fieldRefusedTokenSHA256, resp.Warnings)
		}
	}
	if logins(fake) != 1 || verifyCalls(fake) != 0 {
		t.Fatal("a read with the report's field reached upstream")
	}
}

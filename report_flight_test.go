package iadvize

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// A read that needs a login (its token is within the skew margin of expiry)
// and joins the flight of a refused-token report that ends without a login
// (verify_url says the token is valid) gets neither the reporter's verdict (its
// warning, or its 429) nor the dying token: it runs a flight of its own and
// logs in (SPEC 3 item 14: a read never gets a token it cannot use without a
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
	report := make(chan readResult, 1)
	go func() {
		resp, err := e.b.HandleRequest(context.Background(), &logical.Request{
			Operation: logical.UpdateOperation, Path: "creds/app", Storage: e.storage,
			Data: map[string]any{fieldRefusedTokenSHA256: tokenSHA256(first)},
		})
		report <- readResult{resp, err}
	}()
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

	report := make(chan readResult, 1)
	go func() {
		resp, err := e.b.HandleRequest(context.Background(), &logical.Request{
			Operation: logical.UpdateOperation, Path: "creds/app", Storage: e.storage,
			Data: map[string]any{fieldRefusedTokenSHA256: tokenSHA256(first)},
		})
		report <- readResult{resp, err}
	}()
	select {
	case <-entered:
	case <-time.After(waitFor):
		t.Fatal("the report did not check the token at verify_url")
	}
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

package iadvize

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The mount's wiring (backend.go): Clean.

// Row 5 of the issue: the mount's Clean (unmount, reload, seal, step-down)
// cancels the logins in flight at once, a detached refresh's and a waiting
// reader's alike; it never waits out request_timeout (an hour here).
func TestCleanCancelsLoginsInFlightAtOnce(t *testing.T) {
	u := newHoldingUpstream(t)
	e := newTestEnv(t, nil, nil)
	e.configure(u.upstream, map[string]any{"request_timeout": "1h"})
	e.addRole("app", "svc@example.com", "pw-clean")
	e.addRole("cold", "cold@example.com", "pw-clean")
	e.mustRead("creds/app")

	u.hold()
	e.clock.Advance(23*time.Hour + time.Second)
	e.mustRead("creds/app") // starts a detached login, held
	u.waitEntered(t)
	cold := e.readAsync("creds/cold") // waits on its login, held
	u.waitEntered(t)

	cleaned := make(chan error, 1)
	go func() { e.b.Cleanup(context.Background()); cleaned <- nil }()
	awaitNoError(t, cleaned, "Clean, with two logins held upstream,")
	if r := awaitResult(t, cold, "the reader waiting on its login"); r.err == nil {
		t.Fatal("the reader waiting on a cancelled login was served")
	} else {
		expectCodedError(t, r.err, http.StatusServiceUnavailable, "closing")
	}
	if st := storedToken(t, e.storage, "cold"); st != nil && st.LastOutcome != "" {
		t.Fatalf("a login cancelled by Clean was recorded as %q", st.LastOutcome)
	}
}

// Clean during a refused-token report's check at verify_url cancels it: the
// report fails 503 and does not act as with no verify_url (no budget taken, the
// token kept, the report interval not started).
func TestCleanDuringAReportsVerifyKeepsTheToken(t *testing.T) {
	var logins atomic.Int64
	entered := make(chan struct{}, 10)
	issue := issuing(24 * time.Hour)
	u := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/_authenticated") {
			entered <- struct{}{}
			<-r.Context().Done() // held until Clean cancels it
			return
		}
		logins.Add(1)
		issue(w, r)
	})
	e := newTestEnv(t, nil, nil)
	e.configure(u, map[string]any{"request_timeout": "1h"})
	e.addRole("app", "svc@example.com", "pw-clean")
	tok := accessToken(t, e.mustRead("creds/app"))
	done := e.reportAsync("creds/app", tok)
	awaitSignal(t, entered, "the report's check at verify_url")
	e.b.Cleanup(context.Background())
	r := awaitResult(t, done, "the report")
	expectCodedError(t, r.err, http.StatusServiceUnavailable, "closing")
	st := storedToken(t, e.storage, "app")
	if st == nil || st.AccessToken != tok || !st.ForcedLoginAt.IsZero() || logins.Load() != 1 {
		t.Fatalf("after Clean: token kept %v, report interval started %v, %d logins; want kept, not started, 1",
			st != nil && st.AccessToken == tok, st != nil && !st.ForcedLoginAt.IsZero(), logins.Load())
	}
}

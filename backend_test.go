package iadvize

import (
	"context"
	"net/http"
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

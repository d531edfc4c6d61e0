package iadvize

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// Refused-token reports (README, "When the API refuses the token"): a consumer
// that the API answered 401 with a token it read writes the token's SHA-256 to
// creds/<role> or static-creds/<role>, and gets a read's answer. It is one more
// reason to log in, through the role's login flight (modeReport), never a login
// loop: a report of a token that is no longer the cached one costs nothing; the
// cached token is checked at verify_url first; without a usable verify_url a
// report forces at most one login per role per reportLoginInterval; every login
// counts against the budgets.

// reportLoginInterval: with no usable verify_url, a report forces at most one
// login per role in this time (README, "When the API refuses the token": a
// client that logs in again on every 401 burns the user's budget in seconds).
const reportLoginInterval = 5 * time.Minute

// What a report of the cached token led to, as status/ last_report_outcome says.
const (
	// reportVerifiedValid: verify_url says the token is valid; no login.
	reportVerifiedValid = "verified_valid"
	// reportDropped: the token was dropped (refused at verify_url, or with no
	// usable verify_url) and a login followed: its result is last_outcome.
	reportDropped = "dropped"
	// reportThrottled: with no usable verify_url, a report forced a login less
	// than reportLoginInterval ago: answered 429, no login.
	reportThrottled = "throttled"
)

// reportVerdict is what a report flight tells the reporter beyond the token: a
// warning (the token is valid at verify_url), or a refusal (throttled).
type reportVerdict struct {
	warning string
	refusal *loginRefusal
}

// reportNote is a report remembered in memory for status/ (backend.reports).
type reportNote struct {
	at      time.Time
	outcome string
}

// tokenSHA256 is the hex SHA-256 of an access token, as a report names it.
func tokenSHA256(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// holds reports whether the state's cached token is the one whose hex SHA-256
// is refusedHash.
func (st *tokenState) holds(refusedHash string) bool {
	return st.AccessToken != "" && tokenSHA256(st.AccessToken) == refusedHash
}

// refusedHash reads the report's field: 64 hex digits (either case), lower-cased;
// a 400 naming the field otherwise.
func refusedHash(d *framework.FieldData) (string, *logical.Response) {
	v, ok := d.GetOk(fieldRefusedTokenSHA256)
	hash := ""
	if ok {
		hash = strings.ToLower(strings.TrimSpace(v.(string)))
	}
	if _, err := hex.DecodeString(hash); err != nil || len(hash) != 2*sha256.Size {
		return "", logical.ErrorResponse("%s must be the hex SHA-256 of the refused access token (64 hex digits), "+
			"for example from: printf %%s \"$TOKEN\" | sha256sum", fieldRefusedTokenSHA256)
	}
	return hash, nil
}

// serveReport answers a report of the token whose hex SHA-256 is hash as a read
// of the role: at once with the current token when the reported one is not the
// cached one any more (another report or login replaced it), otherwise through
// the role's login flight in modeReport (judgeReport).
func (b *backend) serveReport(ctx context.Context, s logical.Storage, name, hash string) (servedToken, error) {
	e, err := b.cachedRole(ctx, s, name)
	if err != nil {
		return servedToken{}, err
	}
	if e == nil {
		return servedToken{}, errRoleNotFound
	}
	if !e.state.holds(hash) {
		return b.serveToken(ctx, s, name)
	}
	return b.serveOutcome(ctx, s, name, modeReport, hash)
}

// judgeReport decides, inside the role's login flight, what a report of the
// cached token (e) leads to. With a verify_url on the token's issuer, the token
// is checked there (verify/'s throttle applies): valid, no login (a warning says
// the refusal has another cause); invalid, it is dropped and the caller logs in
// (next). Without one, or when verify_url fails, the caller logs in (next, with
// force: it drops the token once mayLogin lets the login happen), at most once
// per reportLoginInterval per role; a report inside that time is refused with
// 429. next is nil when no login follows; so are next and verdict when the token
// was replaced meanwhile.
func (b *backend) judgeReport(ctx context.Context, s logical.Storage, name string, e *cacheEntry, cfg *configEntry,
	now time.Time) (verdict *reportVerdict, next *cacheEntry, force bool, err error) {
	issuer, err := b.tokenIssuer(ctx, s, e)
	if err != nil {
		return nil, nil, false, err
	}
	usable, why := verifyUsable(cfg.config, issuer)
	if usable {
		res, err := b.checkToken(ctx, s, name, cfg, e, true)
		switch {
		case err == nil && res.authenticated:
			b.noteReport(name, now, reportVerifiedValid)
			return &reportVerdict{warning: fmt.Sprintf("role %q: verify_url says the reported token is valid (checked at %s): "+
				"the API refused it for another reason (scope, permission); the same token is served", name,
				res.checkedAt.UTC().Format(time.RFC3339))}, nil, false, nil
		case err == nil: // checkToken dropped the token, if still cached
			next, err := b.cachedRole(ctx, s, name)
			if err != nil || next == nil || next.state.AccessToken != "" {
				return nil, nil, false, err // replaced meanwhile: nothing to log in for
			}
			return nil, next, false, nil
		case codedStatus(err) != http.StatusBadGateway:
			return nil, nil, false, err // storage, or a node that may not write
		}
		// verify_url could not answer: act as without one.
		why = "checking the token at verify_url failed: " + err.Error()
	}
	st := e.state
	if again := st.ForcedLoginAt.Add(reportLoginInterval); now.Before(again) {
		b.noteReport(name, now, reportThrottled)
		return &reportVerdict{refusal: &loginRefusal{status: http.StatusTooManyRequests,
			cause: fmt.Sprintf("a refused-token report forced a login at %s already, and with no usable verify_url (%s) "+
				"reports force at most one login per role per %s", rfc3339(st.ForcedLoginAt), why, reportLoginInterval),
			until: "a report may act again at " + ceilSecond(again).UTC().Format(time.RFC3339)}}, nil, false, nil
	}
	return nil, e, true, nil
}

// judgeReportInFlight is the report's step of a login flight (refreshRole):
// what judgeReport decided, as the flight answers it. answered: the flight ends
// here (the token is valid at verify_url, the report was throttled, or the
// token was replaced meanwhile). Otherwise the caller logs in, with done.entry
// the role after the token was dropped, or, forced, still holding the token,
// which goes once mayLogin lets the login happen (dropReported).
func (b *backend) judgeReportInFlight(ctx context.Context, s logical.Storage, name string, done refreshOutcome,
	now time.Time) (res refreshOutcome, forced, answered bool, err error) {
	verdict, next, force, err := b.judgeReport(ctx, s, name, done.entry, done.cfg, now)
	switch {
	case err != nil:
		return refreshOutcome{}, false, true, err
	case next == nil && verdict == nil:
		// The reported token was replaced meanwhile (rotate-role, which has a
		// flight of its own): the reporter gets the current one.
		e, err := b.cachedRole(ctx, s, name)
		if err == nil && e == nil {
			err = errRoleNotFound
		}
		done.entry = e
		return done, false, true, err
	case next == nil:
		done.report = verdict // the same token: valid at verify_url, or throttled
		return done, false, true, nil
	}
	done.entry = next
	return done, force, false, nil
}

// dropReported drops the reported token once the login that replaces it may
// happen: the report interval starts now (README, "When the API refuses the
// token"). It returns the role's entry after: still holding a token when the
// reported one was replaced meanwhile (nothing to log in for).
func (b *backend) dropReported(ctx context.Context, s logical.Storage, name string, e *cacheEntry, now time.Time) (*cacheEntry, error) {
	next, err := b.dropToken(ctx, s, name, e.state.AccessToken, func(st *tokenState) {
		st.ForcedLoginAt = now
		markReport(st, now)
	})
	if err != nil {
		return nil, err
	}
	if next == nil {
		next, err = b.cachedRole(ctx, s, name)
		if err == nil && next == nil {
			err = errRoleNotFound
		}
		return next, err
	}
	b.Logger().Info("token reported refused by the API; dropped, logging in", "role", name)
	return next, nil
}

// markReport records in a token state that a report of its token dropped it.
func markReport(st *tokenState, at time.Time) {
	st.LastReport, st.LastReportOutcome = at, reportDropped
}

// codedStatus is the HTTP status a logical.CodedError carries, or 0.
func codedStatus(err error) int {
	var ce logical.HTTPCodedError
	if errors.As(err, &ce) {
		return ce.Code()
	}
	return 0
}

// noteReport remembers a report that changed nothing in storage, for status/.
func (b *backend) noteReport(name string, at time.Time, outcome string) {
	b.reports.Store(name, &reportNote{at: at, outcome: outcome})
}

// lastReport is the role's last report of its cached token and what it led to:
// the later of the one remembered in memory and the one stored.
func (b *backend) lastReport(name string, st *tokenState) (time.Time, string) {
	at, outcome := st.LastReport, st.LastReportOutcome
	if v, ok := b.reports.Load(name); ok {
		if n := v.(*reportNote); n.at.After(at) {
			at, outcome = n.at, n.outcome
		}
	}
	return at, outcome
}

package iadvize

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// verifyInterval: at most one check per role reaches upstream in this time (seed
// 000: the check endpoint is not for polling).
const verifyInterval = 5 * time.Second

// verifyResult is the last answer of verify_url for one role's token, kept in
// memory so checks in between get it without reaching upstream.
type verifyResult struct {
	token         string // the token checked; a new token needs a new check
	checkedAt     time.Time
	err           error // the check failed: checks in between get this error again
	authenticated bool
	cached        bool // a remembered answer (verify/ reports cached: true)
}

func (b *backend) pathVerifyRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name, cfg, e, resp, err := b.pathRole(ctx, req, d)
	if resp != nil || err != nil {
		return resp, err
	}
	if !e.state.alive(b.now()) {
		// The token a recent check found invalid was dropped: checks in between
		// still get that answer.
		if res := b.lastVerify(name, ""); res != nil && res.err == nil {
			return verifyResponse(res, e.state, true), nil
		}
		if cfg.VerifyURL == "" {
			return logical.ErrorResponse("verify is disabled: config has an empty %s", fieldVerifyURL), nil
		}
		return logical.ErrorResponse("role %q has no cached token to verify; verify never logs in", name), nil
	}
	issuer, err := b.tokenIssuer(ctx, req.Storage, e)
	if err != nil {
		return nil, err
	}
	if ok, why := verifyUsable(cfg.config, issuer); !ok {
		return logical.ErrorResponse("verify is disabled for role %q: %s", name, why), nil
	}
	res, err := b.checkToken(ctx, req.Storage, name, cfg, e, false)
	if err != nil {
		return nil, err
	}
	return verifyResponse(res, e.state, res.cached), nil
}

// checkToken asks verify_url about the role's cached token (e), at most once per
// verifyInterval per role, whoever asks (verify/, a refused-token report): the
// last answer while recent (cached), else one check shared by concurrent callers
// (verifyFlights). A token upstream says is invalid is dropped, so the next read
// logs in; report marks that drop as a report's. Callers have checked
// verifyUsable. A node that may not write lets the active node check.
func (b *backend) checkToken(ctx context.Context, s logical.Storage, name string, cfg *configEntry, e *cacheEntry, report bool) (*verifyResult, error) {
	if res := b.lastVerify(name, e.state.AccessToken); res != nil {
		switch {
		case res.err != nil:
			return nil, res.err
		case !res.authenticated && b.WriteSafeReplicationState():
			// Found invalid, and still cached: its drop failed (storage).
			if err := b.dropRefused(ctx, s, name, e.state.AccessToken, res.checkedAt, report); err != nil {
				return nil, err
			}
		}
		return res.asCached(), nil
	}
	if !b.WriteSafeReplicationState() {
		// A rejected token must be dropped from storage: let the active node check.
		return nil, logical.ErrReadOnly
	}
	v, err, _ := b.verifyFlights.Do(name, func() (any, error) {
		if res := b.lastVerify(name, e.state.AccessToken); res != nil {
			if res.err != nil {
				return nil, res.err
			}
			return res.asCached(), nil
		}
		ctx, cancel := b.detach(ctx, 0) // shared by every caller, as a login flight is
		defer cancel()
		return b.verify(ctx, s, name, cfg, e, report)
	})
	if err != nil {
		return nil, err
	}
	return v.(*verifyResult), nil
}

// asCached is a remembered answer, as a later check gets it.
func (r *verifyResult) asCached() *verifyResult {
	c := *r
	c.cached = true
	return &c
}

// lastVerify returns the last check of this token if it is recent enough; with
// an empty accessToken, the last check of whichever token.
func (b *backend) lastVerify(name, accessToken string) *verifyResult {
	v, ok := b.verifies.Load(name)
	if !ok {
		return nil
	}
	res := v.(*verifyResult)
	if (accessToken != "" && res.token != accessToken) || b.now().Sub(res.checkedAt) >= verifyInterval {
		return nil
	}
	return res
}

// verify checks the token upstream and drops it when upstream says it is invalid.
func (b *backend) verify(ctx context.Context, s logical.Storage, name string, cfg *configEntry, e *cacheEntry, report bool) (*verifyResult, error) {
	checkedAt := b.now()
	vctx, cancel := b.detach(ctx, cfg.RequestTimeout)
	defer cancel()
	ok, err := cfg.client.verify(vctx, cfg.VerifyURL, e.state.AccessToken, newRedactor(append(e.role.secrets(), e.state.AccessToken)...))
	res := &verifyResult{token: e.state.AccessToken, checkedAt: checkedAt, authenticated: ok}
	if b.lifetime.Err() != nil {
		return nil, errMountClosing // cancelled by Clean: verify_url did not answer, nor fail
	}
	if err != nil {
		// Remember the failed check too: upstream sees at most one a role per interval.
		failed := logical.CodedError(http.StatusBadGateway, "role \""+name+"\": checking the token failed: "+err.Error())
		b.verifies.Store(name, &verifyResult{token: e.state.AccessToken, checkedAt: checkedAt, err: failed})
		return nil, failed
	}
	b.verifies.Store(name, res)
	if !ok {
		if err := b.dropRefused(ctx, s, name, e.state.AccessToken, checkedAt, report); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// dropRefused drops a token verify_url found invalid at checkedAt, if it is still
// the cached one; report marks the drop as a refused-token report's.
func (b *backend) dropRefused(ctx context.Context, s logical.Storage, name, accessToken string, checkedAt time.Time, report bool) error {
	e, err := b.dropToken(ctx, s, name, accessToken, func(st *tokenState) {
		if report {
			markReport(st, checkedAt)
		}
	})
	if err == nil && e != nil {
		b.Logger().Info("token reported invalid by verify_url; dropped", "role", name)
	}
	return err
}

// dropToken forgets a role's token that upstream no longer accepts, if it is
// still the cached one, so the next read logs in; mark adds to the state what
// led to it. It returns the role's entry after the drop, or nil when the token
// was not the cached one any more (nothing done).
func (b *backend) dropToken(ctx context.Context, s logical.Storage, name, accessToken string, mark func(*tokenState)) (*cacheEntry, error) {
	defer b.lockRole(name).Unlock()
	r, err := readRole(ctx, s, name)
	if err != nil || r == nil {
		return nil, err
	}
	cur, err := b.currentState(ctx, s, name, r)
	if err != nil {
		return nil, err
	}
	if cur.AccessToken != accessToken {
		return nil, nil // already replaced
	}
	st := cloneState(cur)
	st.AccessToken, st.TokenType, st.Issuer = "", "", ""
	st.IssuedAt, st.ExpiresAt = time.Time{}, time.Time{}
	mark(st)
	if err := writeTokenState(ctx, s, name, st); err != nil {
		return nil, err
	}
	e := newCacheEntry(r, st)
	b.rememberRole(name, e)
	return e, nil
}

func verifyResponse(res *verifyResult, st *tokenState, cached bool) *logical.Response {
	return &logical.Response{Data: map[string]any{
		"authenticated": res.authenticated,
		"checked_at":    res.checkedAt.UTC().Format(time.RFC3339),
		"cached":        cached,
		fieldExpireTime: rfc3339(st.ExpiresAt),
	}}
}

// errVerifyAnswer: verify_url answered something that is neither yes nor no.
var errVerifyAnswer = errors.New("unexpected answer from verify_url")

const pathVerifyHelpSynopsis = `Check the role's cached token against verify_url.`

const pathVerifyHelpDescription = `
Reports authenticated (true or false) and checked_at. Never logs in. When upstream
says the token is invalid, the cached token is dropped so the next read logs in.
Not for polling: at most one check per role per 5 seconds reaches upstream; checks
in between get the last answer (cached: true) and its time.
`

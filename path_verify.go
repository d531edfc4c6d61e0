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
}

func pathVerify(b *backend) *framework.Path {
	return rolePath("verify/", "verify", "token", logical.ReadOperation, b.pathVerifyRead, pathVerifyHelpSynopsis, pathVerifyHelpDescription)
}

func (b *backend) pathVerifyRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get(fieldName).(string)
	cfg, err := b.getConfig(ctx, req.Storage)
	switch {
	case err != nil:
		return nil, err
	case cfg.VerifyURL == "":
		return logical.ErrorResponse("verify is disabled: config has an empty %s", fieldVerifyURL), nil
	}
	e, resp, err := b.loadRoleEntry(ctx, req.Storage, name)
	if resp != nil || err != nil {
		return resp, err
	}
	if !e.state.alive(b.now()) {
		// The token a recent check found invalid was dropped: checks in between
		// still get that answer.
		if res := b.lastVerify(name, ""); res != nil && res.err == nil {
			return verifyResponse(res, e.state, true), nil
		}
		return logical.ErrorResponse("role %q has no cached token to verify; verify never logs in", name), nil
	}
	if res := b.lastVerify(name, e.state.AccessToken); res != nil {
		if res.err != nil {
			return nil, res.err
		}
		return verifyResponse(res, e.state, true), nil
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
			return res, nil
		}
		return b.verify(ctx, req.Storage, name, cfg, e)
	})
	if err != nil {
		return nil, err
	}
	return verifyResponse(v.(*verifyResult), e.state, false), nil
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
func (b *backend) verify(ctx context.Context, s logical.Storage, name string, cfg *configEntry, e *cacheEntry) (*verifyResult, error) {
	checkedAt := b.now()
	vctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.RequestTimeout)
	defer cancel()
	ok, err := cfg.client.verify(vctx, cfg.VerifyURL, e.state.AccessToken, newRedactor(append(e.role.secrets(), e.state.AccessToken)...))
	res := &verifyResult{token: e.state.AccessToken, checkedAt: checkedAt, authenticated: ok}
	if err != nil {
		// Remember the failed check too: upstream sees at most one a role per interval.
		failed := logical.CodedError(http.StatusBadGateway, "role \""+name+"\": checking the token failed: "+err.Error())
		b.verifies.Store(name, &verifyResult{token: e.state.AccessToken, checkedAt: checkedAt, err: failed})
		return nil, failed
	}
	b.verifies.Store(name, res)
	if !ok {
		if err := b.dropToken(ctx, s, name, e.state.AccessToken); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// dropToken forgets a role's token that upstream no longer accepts, if it is still
// the cached one, so the next read logs in.
func (b *backend) dropToken(ctx context.Context, s logical.Storage, name, accessToken string) error {
	defer b.lockRole(name).Unlock()
	r, err := getRole(ctx, s, name)
	if err != nil || r == nil {
		return err
	}
	st, err := readTokenState(ctx, s, name)
	if err != nil {
		return err
	}
	if st.AccessToken != accessToken {
		return nil // already replaced
	}
	st.AccessToken, st.TokenType, st.IssuedAt, st.ExpiresAt = "", "", time.Time{}, time.Time{}
	if err := writeTokenState(ctx, s, name, st); err != nil {
		return err
	}
	b.Logger().Info("token reported invalid by verify_url; dropped", "role", name)
	b.storeEntry(name, newCacheEntry(r, st))
	return nil
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

package iadvize

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

func (b *backend) pathRotateRoleWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get(fieldName).(string)
	res, err := b.refreshOnce(ctx, req.Storage, name, modeRotate)
	if errors.Is(err, errRoleNotFound) {
		return logical.ErrorResponse("role %q does not exist", name), nil
	}
	if err != nil {
		return nil, err
	}
	if res.refusal != nil {
		return nil, logical.CodedError(res.refusal.status, rotateFailure(res.refusal, name))
	}
	st := res.entry.state
	return &logical.Response{Data: map[string]any{
		fieldIssueTime:  st.IssuedAt.UTC().Format(time.RFC3339),
		fieldExpireTime: st.ExpiresAt.UTC().Format(time.RFC3339),
	}}, nil
}

// rotateFailure is rotate-role's error message. When upstream rejected the
// credentials on this very call, "no login until ... rotate-role is called" would
// point back at the call just made: say what was tried and what helps instead.
func rotateFailure(u *loginRefusal, name string) string {
	if !u.retryAt.IsZero() || u.until != "" || u.rewrite != "" {
		return u.message(name)
	}
	return fmt.Sprintf("role %q: %s; rotate-role tried the role's credentials once and upstream rejected them: "+
		"rewrite them at roles/%s (each rotate-role tries them once more)", name, u.cause, name)
}

const pathRotateRoleHelpSynopsis = `Log in now and replace the role's cached token.`

const pathRotateRoleHelpDescription = `
Use after a token leaked, or after the password changed upstream. The login counts
against the same budgets as any other, and waits out an upstream 429. It is tried
once even when the role's credentials were rejected. The token itself is not
returned: read creds/<name> or static-creds/<name>.
`

package iadvize

import (
	"context"
	"errors"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

const (
	secretTokenType = "iadvize_token"

	fieldAccessToken    = "access_token"
	fieldTokenType      = "token_type"
	fieldExpireTime     = "expire_time"
	fieldRotationPeriod = "rotation_period"
	// fieldLastVaultRotation is when the login that got the token was sent (RFC
	// 3339): the name and meaning of Vault's own static credentials, which Vault
	// Secrets Operator needs to follow rotations (README, "Kubernetes").
	fieldLastVaultRotation = "last_vault_rotation"
)

func pathCreds(b *backend) []*framework.Path {
	nameField := map[string]*framework.FieldSchema{
		fieldName: {
			Type:        framework.TypeString,
			Description: "Name of the role.",
			Required:    true,
		},
	}
	return []*framework.Path{
		{
			Pattern: "creds/" + framework.MatchAllRegex(fieldName),
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefix,
				OperationVerb:   "generate",
				OperationSuffix: "credentials",
			},
			Fields: nameField,
			// Callbacks, not Operations, on the two hot read paths: for a path with
			// Operations the framework asks Vault for the replication state on every
			// request, a gRPC round trip from the plugin process that these reads
			// do not need (they set no forwarding property). BENCHMARKS.md measures it.
			Callbacks: map[logical.Operation]framework.OperationFunc{
				logical.ReadOperation: b.pathCredsRead,
			},
			HelpSynopsis:    pathCredsHelpSynopsis,
			HelpDescription: pathCredsHelpDescription,
		},
		{
			Pattern: "static-creds/" + framework.MatchAllRegex(fieldName),
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefix,
				OperationVerb:   "read",
				OperationSuffix: "static-credentials",
			},
			Fields: nameField,
			Callbacks: map[logical.Operation]framework.OperationFunc{ // see creds/ above
				logical.ReadOperation: b.pathStaticCredsRead,
			},
			HelpSynopsis:    pathStaticCredsHelpSynopsis,
			HelpDescription: pathStaticCredsHelpDescription,
		},
	}
}

// secretToken is the lease type of creds/. The token is shared by every reader of
// the role, so the lease cannot be renewed (the token cannot be extended) and its
// revocation does nothing upstream.
func secretToken(b *backend) *framework.Secret {
	return &framework.Secret{
		Type: secretTokenType,
		Fields: map[string]*framework.FieldSchema{
			fieldAccessToken: {Type: framework.TypeString, Description: "Bearer access token."},
			fieldTokenType:   {Type: framework.TypeString, Description: "Token type, usually Bearer."},
			fieldExpireTime:  {Type: framework.TypeTime, Description: "When the token expires (RFC 3339)."},
		},
		Revoke: b.secretTokenRevoke,
	}
}

// secretTokenRevoke is a no-op: other readers still use the shared token.
func (b *backend) secretTokenRevoke(context.Context, *logical.Request, *framework.FieldData) (*logical.Response, error) {
	return nil, nil
}

// readRoleToken is the shared part of the creds/ and static-creds/ handlers: the
// role's token (serveToken), or the error a caller can act on.
func (b *backend) readRoleToken(ctx context.Context, req *logical.Request, name string) (servedToken, *logical.Response, error) {
	srv, err := b.serveToken(ctx, req.Storage, name)
	if errors.Is(err, errRoleNotFound) {
		return servedToken{}, logical.ErrorResponse("role %q does not exist", name), nil
	}
	return srv, nil, err
}

func tokenData(e *cacheEntry, size int) map[string]any {
	data := make(map[string]any, size)
	data[fieldAccessToken] = e.state.AccessToken
	data[fieldTokenType] = e.state.TokenType
	data[fieldExpireTime] = e.expireTime
	return data
}

func (b *backend) pathCredsRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	srv, resp, err := b.readRoleToken(ctx, req, d.Get(fieldName).(string))
	if resp != nil || err != nil {
		return resp, err
	}
	st := srv.entry.state
	// No internal data: the lease's revoke does nothing and needs none.
	resp = b.Secret(secretTokenType).Response(tokenData(srv.entry, 3), nil)
	ttl := leaseTTL(st, srv.entry.role, b.now())
	resp.Secret.TTL = ttl
	resp.Secret.MaxTTL = ttl
	resp.Secret.Renewable = false
	if srv.warning != "" {
		resp.AddWarning(srv.warning)
	}
	return resp, nil
}

func (b *backend) pathStaticCredsRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	srv, resp, err := b.readRoleToken(ctx, req, d.Get(fieldName).(string))
	if resp != nil || err != nil {
		return resp, err
	}
	st := srv.entry.state
	data := tokenData(srv.entry, 6)
	now := b.now()
	// Integers, as Vault Agent reads them as JSON numbers and sleeps ttl + 1 s.
	nextLogin := func() time.Time { return b.nextLogin(srv.entry, srv.cfg, now) }
	data[fieldTTL] = int64(staticTTL(srv.entry, srv.cfg.config, nextLogin, now).Seconds())
	data[fieldRotationPeriod] = int64(rotationPeriod(st, srv.cfg.RefreshBefore).Seconds())
	data[fieldLastVaultRotation] = srv.entry.rotatedAt
	resp = &logical.Response{Data: data}
	if srv.warning != "" {
		resp.AddWarning(srv.warning)
	}
	return resp, nil
}

const pathCredsHelpSynopsis = `Read the role's access token, as a lease.`

const pathCredsHelpDescription = `
Returns access_token, token_type and expire_time. Every reader of the role gets the
same cached token until it nears expiry: the engine logs in only then, once for
all concurrent readers.

The lease lasts the token's remaining lifetime less a clock-skew margin, capped by
the role's ttl and max_ttl. It cannot be renewed; revoking it does nothing upstream
(the token is shared). Clients that read often may prefer static-creds/<name>,
which creates no lease.
`

const pathStaticCredsHelpSynopsis = `Read the role's access token, without a lease.`

const pathStaticCredsHelpDescription = `
Returns the same token as creds/<name> with no lease, plus ttl, rotation_period
(seconds between logins) and last_vault_rotation (RFC 3339: when the login that
got this token was sent; the same on every read of one token), so that Vault
Agent, which sleeps ttl + 1 seconds, and Vault Secrets Operator re-read right
after each rotation and never poll in a loop.
ttl is the number of seconds until a read may get another token: while the token
is fresh, until its refresh window starts; inside the window, until the next
moment a login may happen (end of a backoff, a spent login budget or an upstream
429 block), or 60 while the credentials are rejected; never past the token's life
less the clock-skew margin, and at least 1.
`

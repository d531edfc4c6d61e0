package iadvize

import (
	"context"
	"errors"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// secretTokenType is the lease type of creds/.
const secretTokenType = "iadvize_token"

func pathCreds(b *backend) []*framework.Path {
	nameField := map[string]*framework.FieldSchema{
		fieldName: {
			Type:        framework.TypeString,
			Description: "Name of the role.",
			Required:    true,
		},
		fieldRefusedTokenSHA256: {
			Type: framework.TypeString,
			Description: "Update only: the hex SHA-256 of an access token the API refused (HTTP 401). " +
				"The answer is a read's, with a working token when the plugin can get one.",
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
				logical.ReadOperation:   b.pathCredsRead,
				logical.UpdateOperation: b.pathCredsReport,
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
				logical.ReadOperation:   b.pathStaticCredsRead,
				logical.UpdateOperation: b.pathStaticCredsReport,
			},
			HelpSynopsis:    pathStaticCredsHelpSynopsis,
			HelpDescription: pathStaticCredsHelpDescription,
		},
	}
}

// reportOperations names the update of creds/ and static-creds/ (a refused-token
// report) in Vault's OpenAPI document, keyed by the read's operation ID
// (nameReportOperations).
var reportOperations = map[string]struct{ id, summary string }{
	operationPrefix + "-generate-credentials": {operationPrefix + "-report-refused-credentials",
		"Report a token the API refused (its SHA-256); answered as a read of creds/."},
	operationPrefix + "-read-static-credentials": {operationPrefix + "-report-refused-static-credentials",
		"Report a token the API refused (its SHA-256); answered as a read of static-creds/."},
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
// role's token (serveToken), or, for an update naming refused_token_sha256, the
// answer to that report (serveReport); or the error a caller can act on.
func (b *backend) readRoleToken(ctx context.Context, req *logical.Request, d *framework.FieldData) (servedToken, *logical.Response, error) {
	name := d.Get(fieldName).(string)
	var srv servedToken
	var err error
	if req.Operation == logical.UpdateOperation {
		if resp := refuseUnknownFields(req, d); resp != nil {
			return servedToken{}, resp, nil
		}
		hash, resp := refusedHash(d)
		if resp != nil {
			return servedToken{}, resp, nil
		}
		srv, err = b.serveReport(ctx, req.Storage, name, hash)
	} else {
		srv, err = b.serveToken(ctx, req.Storage, name)
	}
	if errors.Is(err, errRoleNotFound) {
		return servedToken{}, logical.ErrorResponse("role %q does not exist", name), nil
	}
	return srv, nil, err
}

// addWarnings adds to a token's answer the warning it was served with, and
// says that refused_token_sha256 on a read reports nothing (a report is an
// update: vault write).
func addWarnings(resp *logical.Response, req *logical.Request, srv servedToken) {
	if srv.warning != "" {
		resp.AddWarning(srv.warning)
	}
	if _, ok := req.Data[fieldRefusedTokenSHA256]; ok && req.Operation == logical.ReadOperation {
		resp.AddWarning(fieldRefusedTokenSHA256 + " was ignored: a read reports nothing; report a refused token with an update (vault write)")
	}
}

func tokenData(e *cacheEntry, size int) map[string]any {
	data := make(map[string]any, size)
	data[fieldAccessToken] = e.state.AccessToken
	data[fieldTokenType] = e.state.TokenType
	data[fieldExpireTime] = e.expireTime
	return data
}

func (b *backend) pathCredsRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	srv, resp, err := b.readRoleToken(ctx, req, d)
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
	addWarnings(resp, req, srv)
	return resp, nil
}

// pathCredsReport is creds/ update: a refused-token report, answered as a read.
func (b *backend) pathCredsReport(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	return b.pathCredsRead(ctx, req, d)
}

func (b *backend) pathStaticCredsRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	srv, resp, err := b.readRoleToken(ctx, req, d)
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
	addWarnings(resp, req, srv)
	return resp, nil
}

// pathStaticCredsReport is static-creds/ update: a refused-token report,
// answered as a read.
func (b *backend) pathStaticCredsReport(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	return b.pathStaticCredsRead(ctx, req, d)
}

const pathCredsHelpSynopsis = `Read the role's access token, as a lease.`

const pathCredsHelpDescription = `
Returns access_token, token_type and expire_time. Every reader of the role gets the
same cached token until it nears expiry: the engine logs in only then, once for
all concurrent readers.

An update with refused_token_sha256 (the hex SHA-256 of a token the API refused
with 401) asks for a working token and is answered as a read. A hash that is not
the cached token's costs nothing; the cached token is checked at verify_url first;
without a usable verify_url, a report forces at most one login per role per 5
minutes (429 inside that time). Every login counts against the budgets.

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
after each rotation and never poll in a loop. An update with
refused_token_sha256 reports a token the API refused, as for creds/<name>.
ttl is the number of seconds until a read may get another token: while the token
is fresh, until its refresh window starts; inside the window, until the next
moment a login may happen (end of a backoff, a spent login budget or an upstream
429 block), or 60 while the credentials are rejected; never past the token's life
less the clock-skew margin, and at least 1.
`

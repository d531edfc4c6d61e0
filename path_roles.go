package iadvize

import (
	"context"
	"fmt"
	"regexp"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// roleNamePattern is a role name (README, "roles"): lower-case letters, digits, -, _ and .
var roleNamePattern = regexp.MustCompile(`^[a-z0-9_.-]{1,128}$`)

func pathRoles(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern: "roles/?$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefix,
				OperationSuffix: "roles",
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{Callback: b.pathRolesList, Summary: pathRolesListHelpSynopsis},
			},
			HelpSynopsis:    pathRolesListHelpSynopsis,
			HelpDescription: pathRolesListHelpDescription,
		},
		{
			Pattern: "roles/" + framework.MatchAllRegex(fieldName),
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefix,
				OperationSuffix: "role",
			},
			Fields: map[string]*framework.FieldSchema{
				fieldName: {
					Type:        framework.TypeString,
					Description: "Name of the role: lower-case letters, digits, '-', '_' and '.'.",
					Required:    true,
				},
				fieldGrantType: {
					Type:          framework.TypeString,
					Description:   "OAuth2 grant: 'password' (iAdvize service user) or 'client_credentials'.",
					Default:       grantPassword,
					AllowedValues: []any{grantPassword, grantClientCredentials},
				},
				fieldUsername: {
					Type:        framework.TypeString,
					Description: "Username (email) of the service user, for the password grant.",
				},
				fieldPassword: {
					Type:         framework.TypeString,
					Description:  "Password of the service user, for the password grant. Write-only.",
					DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
				},
				fieldClientID: {
					Type:        framework.TypeString,
					Description: "OAuth2 client ID: required for the client_credentials grant, optional for the password grant (RFC 6749 section 4.3.2). Sent as config client_auth says; without a client_secret, in the form body.",
				},
				fieldClientSecret: {
					Type:         framework.TypeString,
					Description:  "OAuth2 client secret: required for the client_credentials grant, optional (with client_id) for the password grant. Write-only.",
					DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
				},
				fieldScope: {
					Type:        framework.TypeString,
					Description: "Space-separated scopes, sent with the token request when set.",
				},
				fieldTTL: {
					Type:        framework.TypeDurationSecond,
					Description: "Optional cap on the lease that creds/ returns. 0 means no cap beyond the token's lifetime.",
				},
				fieldMaxTTL: {
					Type:        framework.TypeDurationSecond,
					Description: "Optional maximum lease that creds/ returns. 0 means no cap beyond the token's lifetime.",
				},
			},
			ExistenceCheck: b.roleExists,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation:   &framework.PathOperation{Callback: b.pathRoleRead, Summary: pathRoleReadSummary},
				logical.CreateOperation: &framework.PathOperation{Callback: b.pathRoleWrite, Summary: pathRoleWriteSummary},
				logical.UpdateOperation: &framework.PathOperation{Callback: b.pathRoleWrite, Summary: pathRoleWriteSummary},
				logical.DeleteOperation: &framework.PathOperation{Callback: b.pathRoleDelete, Summary: pathRoleDeleteSummary},
			},
			HelpSynopsis:    pathRoleHelpSynopsis,
			HelpDescription: pathRoleHelpDescription,
		},
	}
}

// rolePaths are the paths on one role that have one operation each:
// rotate-role/ (path_rotate.go), verify/ (path_verify.go) and status/
// (path_status.go).
func rolePaths(b *backend) []*framework.Path {
	return []*framework.Path{
		rolePath("rotate-role/", "rotate", "role", logical.UpdateOperation, b.pathRotateRoleWrite, pathRotateRoleHelpSynopsis, pathRotateRoleHelpDescription),
		rolePath("verify/", "verify", "token", logical.ReadOperation, b.pathVerifyRead, pathVerifyHelpSynopsis, pathVerifyHelpDescription),
		rolePath("status/", "read", "status", logical.ReadOperation, b.pathStatusRead, pathStatusHelpSynopsis, pathStatusHelpDescription),
	}
}

// rolePath is the path prefix<name> on one role, with one operation whose summary
// is the path's help synopsis (status/, verify/, rotate-role/). verb and suffix
// name the operation in Vault's OpenAPI document.
func rolePath(prefix, verb, suffix string, op logical.Operation, cb framework.OperationFunc, synopsis, description string) *framework.Path {
	return &framework.Path{
		Pattern: prefix + framework.MatchAllRegex(fieldName),
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefix,
			OperationVerb:   verb,
			OperationSuffix: suffix,
		},
		Fields: map[string]*framework.FieldSchema{
			fieldName: {Type: framework.TypeString, Description: "Name of the role.", Required: true},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			op: &framework.PathOperation{Callback: cb, Summary: synopsis},
		},
		HelpSynopsis:    synopsis,
		HelpDescription: description,
	}
}

// pathRole reads what a handler of a path on one role (status/, verify/) needs:
// the role's name, the config, and the role's entry, through the cache; a 400
// (resp) for a role that does not exist.
func (b *backend) pathRole(ctx context.Context, req *logical.Request, d *framework.FieldData) (
	name string, cfg *configEntry, e *cacheEntry, resp *logical.Response, err error) {
	name = d.Get(fieldName).(string)
	if cfg, err = b.cachedConfig(ctx, req.Storage); err != nil {
		return name, nil, nil, nil, err
	}
	if e, err = b.cachedRole(ctx, req.Storage, name); err == nil && e == nil {
		resp = logical.ErrorResponse("role %q does not exist", name)
	}
	return name, cfg, e, resp, err
}

// checkRoleName answers 400 for a name outside roleNamePattern's alphabet.
func checkRoleName(name string) *logical.Response {
	if !roleNamePattern.MatchString(name) || name == "." || name == ".." {
		return logical.ErrorResponse("invalid role name %q: use 1 to 128 lower-case letters, digits, '-', '_' and '.'", name)
	}
	return nil
}

func (b *backend) roleExists(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	name := d.Get(fieldName).(string)
	if len(name) > maxRoleNameBytes {
		return false, nil // no role has such a name (fieldBounds): no storage read with it
	}
	r, err := readRole(ctx, req.Storage, name)
	if err != nil {
		return false, err
	}
	return r != nil, nil
}

func (b *backend) pathRolesList(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	names, err := listRoles(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	return logical.ListResponse(names), nil
}

func (b *backend) pathRoleRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get(fieldName).(string)
	r, err := readRole(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if r == nil {
		return nil, nil
	}
	data := map[string]any{
		fieldGrantType: r.GrantType,
		fieldScope:     r.Scope,
		fieldTTL:       int64(r.TTL.Seconds()),
		fieldMaxTTL:    int64(r.MaxTTL.Seconds()),
	}
	if r.GrantType == grantPassword {
		data[fieldUsername] = r.Username
	}
	if r.GrantType == grantClientCredentials || r.ClientID != "" {
		data[fieldClientID] = r.ClientID
	}
	return &logical.Response{Data: data}, nil
}

func (b *backend) pathRoleWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	if resp := checkFieldBounds(d); resp != nil {
		return resp, nil
	}
	name := d.Get(fieldName).(string)
	if resp := checkRoleName(name); resp != nil {
		return resp, nil
	}
	if resp := refuseUnknownFields(req, d); resp != nil {
		return resp, nil
	}
	defer b.lockRole(name).Unlock()

	old, err := readRole(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	r := &role{GrantType: grantPassword}
	switch {
	case old != nil:
		c := *old
		r = &c
	case req.Operation == logical.UpdateOperation:
		return logical.ErrorResponse("role %q does not exist", name), nil
	}
	if resp := applyRoleFields(d, r); resp != nil {
		return resp, nil
	}
	changed, err := b.bindCredentials(ctx, req.Storage, d, old, r)
	if err != nil {
		return nil, err
	}
	if err := b.storeRole(ctx, req.Storage, name, old, r, changed); err != nil {
		return nil, err
	}
	if old != nil && old.principal() == r.principal() {
		return nil, nil // the sharing did not change: warned when it began
	}
	shared, err := rolesSharingPrincipal(ctx, req.Storage, name, r)
	switch {
	case err != nil:
		b.Logger().Warn("could not check for roles sharing a login", "role", name, "error", err)
	case len(shared) > 0:
		resp := &logical.Response{}
		resp.AddWarning(fmt.Sprintf("roles %v log in as the same %s: they share one login budget; "+
			"a dedicated service user per integration is recommended", shared, principalKind(r)))
		return resp, nil
	}
	return nil, nil
}

// applyRoleFields sets the fields a role write names on r, and checks that the
// role holds what its grant needs; a 400 naming the field otherwise.
func applyRoleFields(d *framework.FieldData, r *role) *logical.Response {
	if v, ok := d.GetOk(fieldGrantType); ok {
		grant := v.(string)
		if grant != grantPassword && grant != grantClientCredentials {
			return logical.ErrorResponse("%s must be %q or %q", fieldGrantType, grantPassword, grantClientCredentials)
		}
		if grant != r.GrantType {
			// The other grant's credentials no longer apply.
			r.Username, r.Password, r.ClientID, r.ClientSecret = "", "", "", ""
		}
		r.GrantType = grant
	}
	for _, f := range []struct {
		name string
		dst  *string
	}{
		{fieldUsername, &r.Username}, {fieldPassword, &r.Password},
		{fieldClientID, &r.ClientID}, {fieldClientSecret, &r.ClientSecret},
		{fieldScope, &r.Scope},
	} {
		if v, ok := d.GetOk(f.name); ok {
			*f.dst = v.(string)
		}
	}
	for _, f := range []struct {
		name string
		dst  *time.Duration
	}{{fieldTTL, &r.TTL}, {fieldMaxTTL, &r.MaxTTL}} {
		if v, ok := d.GetOk(f.name); ok {
			if v.(int) < 0 {
				return logical.ErrorResponse("%s may not be negative", f.name)
			}
			*f.dst = time.Duration(v.(int)) * time.Second
		}
	}
	return validateRole(r)
}

// bindCredentials gives r the token host its credentials may go to and the
// identity of what its login sends, and reports whether that changed from old's
// (nil: a new role). Credentials written with their secret are bound to the
// stored config's token host, or, with no config stored, to the host of their
// first login (docs/security.md); other writes keep the binding. A write that
// changes what a login sends draws a new CredentialsID, which retires the cached
// token and a "credentials rejected" verdict; one that changes nothing a login
// sends (Terraform re-applying a role) keeps them.
func (b *backend) bindCredentials(ctx context.Context, s logical.Storage, d *framework.FieldData, old, r *role) (changed bool, err error) {
	if old == nil || namesSecrets(d, r) {
		host, err := b.storedTokenHost(ctx, s)
		if err != nil {
			return false, err
		}
		r.TokenHost, r.BindOnLogin = host, host == ""
	}
	if changed, err = b.loginChanged(ctx, s, old, r); changed {
		r.CredentialsID, r.Generation = newCredentialsID(), 0
	}
	return changed, err
}

// storeRole writes a role (old as stored before, nil for a new one), retires its
// token when its credentials changed, and files it under its principal. The
// order makes a write that fails half-way safe to retry: the index entries of
// another principal go first (a retry knows the old principal only while the
// record holds it), the role's own entry last, filed again on every write so
// that a retry finishes it.
func (b *backend) storeRole(ctx context.Context, s logical.Storage, name string, old, r *role, changed bool) error {
	if err := unindexStale(ctx, s, name, old, r); err != nil {
		return err
	}
	if old == nil || *old != *r {
		if err := writeRole(ctx, s, name, r); err != nil {
			return err
		}
		b.forgetRole(name)
	}
	if changed {
		if err := deleteTokenState(ctx, s, name); err != nil {
			return fmt.Errorf("deleting the retired token of role %q: %w", name, err)
		}
	}
	return indexRole(ctx, s, name, r)
}

// namesSecrets reports whether a role write names every secret the role holds
// (its password, its client secret): only such a write may bind the credentials
// to another token host (docs/security.md), so that whoever may write the
// role's other fields (a policy can deny the secret ones) cannot send them
// elsewhere.
func namesSecrets(d *framework.FieldData, r *role) bool {
	for _, f := range []struct {
		name  string
		value string
	}{{fieldPassword, r.Password}, {fieldClientSecret, r.ClientSecret}} {
		if _, named := d.GetOk(f.name); f.value != "" && !named {
			return false
		}
	}
	return true
}

// loginChanged reports whether a login of r would send anything a login of old
// (nil: none) would not: grant, username, password, client, scope, token host.
func (b *backend) loginChanged(ctx context.Context, s logical.Storage, old, r *role) (bool, error) {
	if old == nil {
		return true, nil
	}
	was, err := b.boundHost(ctx, s, old)
	if err != nil {
		return false, err
	}
	now, err := b.boundHost(ctx, s, r)
	if err != nil {
		return false, err
	}
	return was != now || old.GrantType != r.GrantType || old.Username != r.Username || old.Password != r.Password ||
		old.ClientID != r.ClientID || old.ClientSecret != r.ClientSecret || old.Scope != r.Scope, nil
}

// storedTokenHost is the token host (tokenOrigin) of the stored config's
// token_url; "" when no config is stored.
func (b *backend) storedTokenHost(ctx context.Context, s logical.Storage) (string, error) {
	cfg, err := b.cachedConfig(ctx, s)
	if err != nil || !cfg.stored {
		return "", err
	}
	return cfg.origin, nil
}

// validateRole checks that a role holds what its grant needs and sane TTLs.
func validateRole(r *role) *logical.Response {
	switch r.GrantType {
	case grantClientCredentials:
		if r.Username != "" || r.Password != "" {
			return logical.ErrorResponse("%s and %s are for the password grant; this role uses %s", fieldUsername, fieldPassword, grantClientCredentials)
		}
		if r.ClientID == "" {
			return logical.ErrorResponse("%s is required for the %s grant", fieldClientID, grantClientCredentials)
		}
		if r.ClientSecret == "" {
			return logical.ErrorResponse("%s is required for the %s grant", fieldClientSecret, grantClientCredentials)
		}
	default:
		if r.ClientSecret != "" && r.ClientID == "" {
			return logical.ErrorResponse("%s needs a %s", fieldClientSecret, fieldClientID)
		}
		if r.Username == "" {
			return logical.ErrorResponse("%s is required for the %s grant", fieldUsername, grantPassword)
		}
		if r.Password == "" {
			return logical.ErrorResponse("%s is required for the %s grant", fieldPassword, grantPassword)
		}
	}
	if r.TTL > 0 && r.MaxTTL > 0 && r.TTL > r.MaxTTL {
		return logical.ErrorResponse("%s (%s) may not exceed %s (%s)", fieldTTL, r.TTL, fieldMaxTTL, r.MaxTTL)
	}
	return nil
}

func (b *backend) pathRoleDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get(fieldName).(string)
	defer b.lockRole(name).Unlock()
	r, err := readRole(ctx, req.Storage, name)
	if err != nil || r == nil {
		return nil, err
	}
	// The record goes last: a delete that fails half-way leaves it, and a retry
	// finds what to finish (its token, its index entry).
	b.forgetRole(name)
	if err := deleteTokenState(ctx, req.Storage, name); err != nil {
		return nil, fmt.Errorf("deleting the cached token of role %q: %w", name, err)
	}
	if err := unindexRole(ctx, req.Storage, name, r); err != nil {
		return nil, err
	}
	if err := deleteRole(ctx, req.Storage, name); err != nil {
		return nil, err
	}
	b.forgetRole(name)
	return nil, nil
}

const pathRolesListHelpSynopsis = `List the roles.`

const pathRolesListHelpDescription = `Lists the names of the roles of this mount.`

const pathRoleHelpSynopsis = `Manage a role: the credentials of one integration.`

const pathRoleHelpDescription = `
A role holds the credentials one integration logs in with, and the caps on the
leases of creds/<name>. Create one role per integration, with a dedicated service
user: roles that share a username share that user's login budget.

grant_type     password (default) or client_credentials
username       service user, for the password grant
password       its password (write-only)
client_id      OAuth2 client: required for client_credentials, optional for the
               password grant (servers that want the client, RFC 6749 4.3.2);
               sent as config client_auth says, or alone in the form body
client_secret  its secret (write-only)
scope          optional, sent when set
ttl, max_ttl   optional caps on the lease creds/ returns

An update changes only the fields it names; unknown fields are refused. Writing
credentials discards the role's cached token and clears a "credentials rejected"
state. Deleting a role deletes its cached token.
`

// Summaries of the role operations, in Vault's OpenAPI document.
const (
	pathRoleReadSummary   = `Read a role, without its password or client secret.`
	pathRoleWriteSummary  = `Create or update a role; unnamed fields keep their value.`
	pathRoleDeleteSummary = `Delete a role and its cached token.`
)

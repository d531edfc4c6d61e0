package iadvize

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// maxLoginsPerMinuteSetting bounds the two budgets an operator may set.
const maxLoginsPerMinuteSetting = 1_000_000

func pathConfig(b *backend) *framework.Path {
	return &framework.Path{
		Pattern: "config",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefix,
		},
		Fields: map[string]*framework.FieldSchema{
			fieldTokenURL: {
				Type:        framework.TypeString,
				Description: "Token endpoint. https:// only; http:// is accepted for loopback hosts.",
				Default:     defaultTokenURL,
				DisplayAttrs: &framework.DisplayAttributes{
					Name: "Token URL",
				},
			},
			fieldVerifyURL: {
				Type:        framework.TypeString,
				Description: "Token check endpoint used by verify/. Empty disables verify/.",
				Default:     defaultVerifyURL,
				DisplayAttrs: &framework.DisplayAttributes{
					Name: "Verify URL",
				},
			},
			fieldRefreshBefore: {
				Type:        framework.TypeDurationSecond,
				Description: "Log in anew once the cached token has less than this left.",
				Default:     durationDefault(defaultRefreshBefore),
				DisplayAttrs: &framework.DisplayAttributes{
					Name: "Refresh before expiry",
				},
			},
			fieldUserLoginsPerMinute: {
				Type:        framework.TypeInt,
				Description: "Never send more logins than this per minute for one username or client ID to the token host, counting every mount.",
				Default:     defaultUserLoginsPerMin,
				DisplayAttrs: &framework.DisplayAttributes{
					Name: "Logins per minute per user",
				},
			},
			fieldLoginsPerMinute: {
				Type:        framework.TypeInt,
				Description: "Never send more logins than this per minute to the token host, counting every mount.",
				Default:     defaultLoginsPerMin,
				DisplayAttrs: &framework.DisplayAttributes{
					Name: "Logins per minute per token host",
				},
			},
			fieldRequestTimeout: {
				Type:        framework.TypeDurationSecond,
				Description: "Bound on one upstream request.",
				Default:     durationDefault(defaultRequestTimeout),
				DisplayAttrs: &framework.DisplayAttributes{
					Name: "Request timeout",
				},
			},
			fieldCAPEM: {
				Type:        framework.TypeString,
				Description: "Extra PEM-encoded CA certificates trusted for the upstream TLS.",
				DisplayAttrs: &framework.DisplayAttributes{
					Name: "CA certificates (PEM)",
				},
			},
			fieldClientAuth: {
				Type: framework.TypeString,
				Description: "How a role's client secret is sent: 'basic' (HTTP Basic with client_id and client_secret as written), " +
					"'basic_urlencoded' (HTTP Basic after form-encoding each, RFC 6749 section 2.3.1) or 'post' (in the form body).",
				Default:       string(clientAuthBasic),
				AllowedValues: []any{string(clientAuthBasic), string(clientAuthBasicURLEncoded), string(clientAuthPost)},
				DisplayAttrs: &framework.DisplayAttributes{
					Name: "Client authentication",
				},
			},
			fieldDefaultExpiresIn: {
				Type:        framework.TypeDurationSecond,
				Description: "Lifetime assumed when a token answer has no expires_in. 0 (the default) refuses such answers as malformed.",
				Default:     durationDefault(0),
				DisplayAttrs: &framework.DisplayAttributes{
					Name: "Default token lifetime",
				},
			},
		},
		ExistenceCheck: b.configExists,
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation:   configOperation(b.pathConfigRead, pathConfigReadSummary, framework.DisplayAttributes{OperationSuffix: "configuration"}),
			logical.CreateOperation: configOperation(b.pathConfigWrite, pathConfigWriteSummary, framework.DisplayAttributes{OperationVerb: "configure"}),
			logical.UpdateOperation: configOperation(b.pathConfigWrite, pathConfigWriteSummary, framework.DisplayAttributes{OperationVerb: "configure"}),
			logical.DeleteOperation: configOperation(b.pathConfigDelete, pathConfigDeleteSummary, framework.DisplayAttributes{OperationSuffix: "configuration"}),
		},
		HelpSynopsis:    pathConfigHelpSynopsis,
		HelpDescription: pathConfigHelpDescription,
	}
}

// configOperation is one operation of config/, named in Vault's OpenAPI document
// by attrs.
func configOperation(cb framework.OperationFunc, summary string, attrs framework.DisplayAttributes) *framework.PathOperation {
	return &framework.PathOperation{Callback: cb, Summary: summary, DisplayAttrs: &attrs}
}

func (b *backend) configExists(ctx context.Context, req *logical.Request, _ *framework.FieldData) (bool, error) {
	return configStored(ctx, req.Storage)
}

func (b *backend) pathConfigRead(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	cfg, err := b.cachedConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	return &logical.Response{Data: map[string]any{
		fieldTokenURL:            cfg.TokenURL,
		fieldVerifyURL:           cfg.VerifyURL,
		fieldRefreshBefore:       int64(cfg.RefreshBefore.Seconds()),
		fieldUserLoginsPerMinute: cfg.UserLoginsPerMinute,
		fieldLoginsPerMinute:     cfg.LoginsPerMinute,
		fieldRequestTimeout:      int64(cfg.RequestTimeout.Seconds()),
		fieldCAPEM:               cfg.CAPEM,
		fieldClientAuth:          string(cfg.clientAuth()),
		fieldDefaultExpiresIn:    int64(cfg.DefaultExpiresIn.Seconds()),
	}}, nil
}

func (b *backend) pathConfigWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	if resp := checkFieldBounds(d); resp != nil {
		return resp, nil
	}
	if resp := refuseUnknownFields(req, d); resp != nil {
		return resp, nil
	}
	was, cfg, resp, err := b.updateConfig(ctx, req.Storage, d)
	if resp != nil || err != nil {
		return resp, err
	}
	return b.configWarnings(ctx, req.Storage, was, cfg) // reads roles: not under the lock
}

// updateConfig applies a config write's fields to the stored config under the
// config write lock, and returns the config before and after; resp is a 400 for
// a field it refuses.
func (b *backend) updateConfig(ctx context.Context, s logical.Storage, d *framework.FieldData) (was, cfg *config, resp *logical.Response, err error) {
	b.writeMu.Lock()
	defer b.writeMu.Unlock()
	if cfg, _, err = readConfig(ctx, s); err != nil {
		return nil, nil, nil, err
	}
	before := *cfg
	if resp := applyConfigFields(d, cfg); resp != nil {
		return nil, nil, resp, nil
	}
	if err := b.keepLegacyTokenHost(ctx, s); err != nil {
		return nil, nil, nil, err
	}
	if err := writeConfig(ctx, s, cfg); err != nil {
		return nil, nil, nil, err
	}
	b.dropConfig()
	return &before, cfg, nil, nil
}

// applyConfigFields sets the fields a config write names on cfg; a 400 naming
// the field for a value it refuses.
func applyConfigFields(d *framework.FieldData, cfg *config) *logical.Response {
	if v, ok := d.GetOk(fieldTokenURL); ok {
		cfg.TokenURL = strings.TrimSpace(v.(string))
		if cfg.TokenURL == "" {
			return logical.ErrorResponse("%s may not be empty", fieldTokenURL)
		}
		if err := checkUpstreamURL(cfg.TokenURL); err != nil {
			return logical.ErrorResponse("%s: %s", fieldTokenURL, err)
		}
	}
	if v, ok := d.GetOk(fieldVerifyURL); ok {
		cfg.VerifyURL = strings.TrimSpace(v.(string))
		if cfg.VerifyURL != "" {
			if err := checkUpstreamURL(cfg.VerifyURL); err != nil {
				return logical.ErrorResponse("%s: %s", fieldVerifyURL, err)
			}
		}
	}
	if v, ok := d.GetOk(fieldRefreshBefore); ok {
		if v.(int) < 0 {
			return logical.ErrorResponse("%s may not be negative", fieldRefreshBefore)
		}
		cfg.RefreshBefore = time.Duration(v.(int)) * time.Second
	}
	if v, ok := d.GetOk(fieldRequestTimeout); ok {
		if v.(int) <= 0 {
			return logical.ErrorResponse("%s must be positive", fieldRequestTimeout)
		}
		cfg.RequestTimeout = time.Duration(v.(int)) * time.Second
	}
	for _, f := range []struct {
		name string
		dst  *int
	}{{fieldUserLoginsPerMinute, &cfg.UserLoginsPerMinute}, {fieldLoginsPerMinute, &cfg.LoginsPerMinute}} {
		if v, ok := d.GetOk(f.name); ok {
			n := v.(int)
			if n < 1 || n > maxLoginsPerMinuteSetting {
				return logical.ErrorResponse("%s must be between 1 and %d", f.name, maxLoginsPerMinuteSetting)
			}
			*f.dst = n
		}
	}
	if v, ok := d.GetOk(fieldClientAuth); ok {
		cfg.ClientAuth = clientAuthStyle(strings.TrimSpace(v.(string)))
		if !slices.Contains(clientAuthStyles, cfg.ClientAuth) {
			return logical.ErrorResponse("%s must be one of %s", fieldClientAuth, clientAuthStyleList())
		}
	}
	if v, ok := d.GetOk(fieldDefaultExpiresIn); ok {
		if v.(int) < 0 {
			return logical.ErrorResponse("%s may not be negative", fieldDefaultExpiresIn)
		}
		cfg.DefaultExpiresIn = time.Duration(v.(int)) * time.Second
	}
	if v, ok := d.GetOk(fieldCAPEM); ok {
		cfg.CAPEM = strings.TrimSpace(v.(string))
		if cfg.CAPEM != "" && !x509.NewCertPool().AppendCertsFromPEM([]byte(cfg.CAPEM)) {
			return logical.ErrorResponse("%s holds no PEM-encoded certificate", fieldCAPEM)
		}
	}
	return nil
}

func (b *backend) pathConfigDelete(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	was, err := b.removeConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	return b.configWarnings(ctx, req.Storage, was, defaultConfig()) // reads roles: not under the lock
}

// removeConfig deletes the stored config under the config write lock, and
// returns the one it deleted.
func (b *backend) removeConfig(ctx context.Context, s logical.Storage) (*config, error) {
	b.writeMu.Lock()
	defer b.writeMu.Unlock()
	if err := b.keepLegacyTokenHost(ctx, s); err != nil {
		return nil, err
	}
	was, _, err := readConfig(ctx, s)
	if err != nil {
		return nil, err
	}
	if err := deleteConfig(ctx, s); err != nil {
		return nil, err
	}
	b.dropConfig()
	return was, nil
}

// configWarnings is the answer of a config write or delete that changed was into
// cfg: warnings when roles now wait for their credentials (token_url moved to
// another host) and when verify_url is not on the token host (README, "Where
// secrets may go").
func (b *backend) configWarnings(ctx context.Context, s logical.Storage, was, cfg *config) (*logical.Response, error) {
	resp := &logical.Response{}
	if host := tokenOrigin(cfg.TokenURL); host != tokenOrigin(was.TokenURL) {
		n, all, err := b.rolesBoundElsewhere(ctx, s, host)
		count := fmt.Sprint(n)
		if !all {
			count = fmt.Sprintf("at least %d (counted for %s)", n, roleCountTime)
		}
		switch {
		case err != nil:
			b.Logger().Warn("could not count the roles bound to another token host", "error", err)
		case n > 0 || !all:
			resp.AddWarning(fmt.Sprintf("%s moved to %s: %s role(s) hold credentials written for another token host; "+
				"they log in nowhere until their password or client_secret is written again (status/<role> names them)", fieldTokenURL, host, count))
		}
	}
	if cfg.VerifyURL != "" && tokenOrigin(cfg.VerifyURL) != tokenOrigin(cfg.TokenURL) {
		resp.AddWarning(fmt.Sprintf("%s is on %s, not on the token host %s: tokens are sent only to the host that issued them, "+
			"so verify/ and refused-token reports will not use it; set %s on the token host, or empty",
			fieldVerifyURL, tokenOrigin(cfg.VerifyURL), tokenOrigin(cfg.TokenURL), fieldVerifyURL))
	}
	if len(resp.Warnings) == 0 {
		return nil, nil
	}
	return resp, nil
}

// clientAuthStyleList names the client authentication styles, for messages.
func clientAuthStyleList() string {
	names := make([]string, len(clientAuthStyles))
	for i, s := range clientAuthStyles {
		names[i] = string(s)
	}
	return strings.Join(names, ", ")
}

// checkUpstreamURL allows https://, and http:// to loopback hosts only.
func checkUpstreamURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("not a valid URL")
	}
	if u.Host == "" || u.Hostname() == "" {
		return errors.New("URL has no host")
	}
	if u.User != nil {
		return errors.New("URL may not carry user information")
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if isLoopback(u.Hostname()) {
			return nil
		}
		return errors.New("http:// is accepted only for loopback hosts (127.0.0.0/8, ::1, localhost); use https://")
	default:
		return fmt.Errorf("scheme %q is not supported; use https://", u.Scheme)
	}
}

func isLoopback(host string) bool {
	host = strings.TrimSuffix(host, ".") // the fully qualified spelling, as tokenOrigin reads it
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

const pathConfigHelpSynopsis = `Configure the upstream token endpoint and the login policy.`

const pathConfigHelpDescription = `
The config applies to every role of this mount. Reads work with no config written
(defaults apply); an update changes only the fields it names; delete restores the
defaults.

token_url               login endpoint (default https://api.iadvize.com/oauth2/token)
verify_url              token check endpoint for verify/; empty disables verify/
refresh_before          log in anew once the cached token has less than this left (1h)
user_logins_per_minute  never more logins than this per username or client ID (10)
logins_per_minute       never more logins than this to the token host (100)

Both budgets count the logins of every mount of the plugin that logs in to the
same token host (host:port of token_url): upstream counts them per source IP.
request_timeout         bound on one upstream request (10s)
ca_pem                  extra CA certificates for the upstream TLS
client_auth             how a role's client secret is sent: basic (HTTP Basic,
                        as written; default), basic_urlencoded (HTTP Basic after
                        form-encoding, RFC 6749 section 2.3.1) or post (form body)
default_expires_in      lifetime assumed when a token answer has no expires_in
                        (0, the default: such answers are refused)

URLs must be https://; http:// is accepted only for loopback hosts, for testing.
`

// Summaries of the config operations, in Vault's OpenAPI document.
const (
	pathConfigReadSummary   = `Read the configuration (the defaults when none was written).`
	pathConfigWriteSummary  = `Configure the upstream token endpoint and the login policy; unnamed fields keep their value.`
	pathConfigDeleteSummary = `Delete the configuration: the defaults apply again.`
)

package iadvize

import "time"

// The mount's config record (README, "config"; docs/storage.md), its defaults,
// and the client authentication styles it names.

// Defaults of the config (README, "config"): what a mount with no config written
// uses.
const (
	defaultTokenURL         = "https://api.iadvize.com/oauth2/token"
	defaultVerifyURL        = "https://api.iadvize.com/_authenticated"
	defaultRefreshBefore    = time.Hour
	defaultUserLoginsPerMin = 10
	defaultLoginsPerMin     = 100
	defaultRequestTimeout   = 10 * time.Second
)

// clientAuthStyle is how a role that holds a client secret presents its client
// to the token endpoint (config client_auth), as x/oauth2's AuthStyle does.
type clientAuthStyle string

// The client authentication styles.
const (
	// clientAuthBasic: Authorization: Basic base64(client_id:client_secret), both
	// exactly as written (RFC 7617 §2). What ICEYE-style servers decode.
	clientAuthBasic clientAuthStyle = "basic"
	// clientAuthBasicURLEncoded: the same after form-encoding each half, as RFC
	// 6749 §2.3.1 specifies and most standard servers (Hydra, Keycloak) decode.
	clientAuthBasicURLEncoded clientAuthStyle = "basic_urlencoded"
	// clientAuthPost: client_id and client_secret in the form body (RFC 6749
	// §2.3.1, "client_secret_post").
	clientAuthPost clientAuthStyle = "post"
)

// clientAuthStyles lists the styles config client_auth accepts.
var clientAuthStyles = []clientAuthStyle{clientAuthBasic, clientAuthBasicURLEncoded, clientAuthPost}

// config is the mount-wide upstream and login-policy settings (README, "config"),
// stored at configStoragePath. It holds no secret.
type config struct {
	TokenURL  string `json:"token_url"`
	VerifyURL string `json:"verify_url"`
	// RefreshBefore: log in anew once the cached token has less than this left.
	RefreshBefore time.Duration `json:"refresh_before"`
	// The login budgets, per principal and per token host, counting every mount.
	UserLoginsPerMinute int           `json:"user_logins_per_minute"`
	LoginsPerMinute     int           `json:"logins_per_minute"`
	RequestTimeout      time.Duration `json:"request_timeout"`
	CAPEM               string        `json:"ca_pem"`
	// ClientAuth is how a role's client secret is presented: clientAuthBasic,
	// clientAuthBasicURLEncoded or clientAuthPost. Empty (a config stored before
	// the field existed) means clientAuthBasic.
	ClientAuth clientAuthStyle `json:"client_auth,omitempty"`
	// DefaultExpiresIn is the lifetime assumed for a token answer without
	// expires_in (RFC 6749 §5.1 only recommends it); 0 keeps such an answer
	// malformed.
	DefaultExpiresIn time.Duration `json:"default_expires_in,omitempty"`
}

func defaultConfig() *config {
	return &config{
		TokenURL:            defaultTokenURL,
		VerifyURL:           defaultVerifyURL,
		RefreshBefore:       defaultRefreshBefore,
		UserLoginsPerMinute: defaultUserLoginsPerMin,
		LoginsPerMinute:     defaultLoginsPerMin,
		RequestTimeout:      defaultRequestTimeout,
		ClientAuth:          clientAuthBasic,
	}
}

// clientAuth is the configured client authentication style, clientAuthBasic for
// a config stored before the field existed.
func (c *config) clientAuth() clientAuthStyle {
	if c.ClientAuth == "" {
		return clientAuthBasic
	}
	return c.ClientAuth
}

// loginSettings fingerprints what the config changes in a role's token request:
// the token endpoint, and how the client is presented when the role has a client
// secret. A "credentials rejected" verdict reached under other settings does not
// stop a login under these; a config change that cannot change the request
// (client_auth for a role without a client secret) keeps it. Stored as
// tokenState.RejectedSettings.
func loginSettings(c *config, r *role) string {
	if r.ClientSecret == "" {
		return c.TokenURL
	}
	return c.TokenURL + " " + string(c.clientAuth())
}

package iadvize

// The names of the fields of every path, as requests and answers spell them
// (README, "Paths"), and what their schemas share.

import (
	"strings"
	"time"
)

// config/.
const (
	fieldTokenURL            = "token_url"
	fieldVerifyURL           = "verify_url"
	fieldRefreshBefore       = "refresh_before"
	fieldUserLoginsPerMinute = "user_logins_per_minute"
	fieldLoginsPerMinute     = "logins_per_minute"
	fieldRequestTimeout      = "request_timeout"
	fieldCAPEM               = "ca_pem"
	fieldClientAuth          = "client_auth"
	fieldDefaultExpiresIn    = "default_expires_in"
)

// roles/<name>, and the name of every path on one role.
const (
	fieldName         = "name"
	fieldGrantType    = "grant_type"
	fieldUsername     = "username"
	fieldPassword     = "password"
	fieldClientID     = "client_id"
	fieldClientSecret = "client_secret"
	fieldScope        = "scope"
	fieldTTL          = "ttl"
	fieldMaxTTL       = "max_ttl"
)

// creds/ and static-creds/ (and rotate-role/'s answer).
const (
	fieldAccessToken    = "access_token"
	fieldTokenType      = "token_type"
	fieldExpireTime     = "expire_time"
	fieldIssueTime      = "issue_time"
	fieldRotationPeriod = "rotation_period"
	// fieldLastVaultRotation is when the login that got the token was sent (RFC
	// 3339): the name and meaning of Vault's own static credentials, which Vault
	// Secrets Operator needs to follow rotations (README, "Kubernetes").
	fieldLastVaultRotation = "last_vault_rotation"
	// fieldRefusedTokenSHA256 is a refused-token report's one field: the hex
	// SHA-256 of the refused access token, never the token itself.
	fieldRefusedTokenSHA256 = "refused_token_sha256"
)

// durationDefault is a duration as a field's schema Default: a string such as
// "1h" or "10s", which the framework parses like any duration input. Vault's
// OpenAPI document gives duration fields the type string, which an integer
// default would not validate against.
func durationDefault(d time.Duration) string {
	s := d.String() // "1h0m0s", "5m0s", "10s", "1m30s"
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

package iadvize

// The storage model of one mount (docs/storage.md). Every key the plugin writes:
//
//	key                         holds                                          seal-wrapped  written by
//	config                      config: token/verify URLs, refresh_before,     no            config/ write (pathConfigWrite), deleted
//	                            login budgets, request_timeout, ca_pem,                      by config/ delete (pathConfigDelete)
//	                            client_auth, default_expires_in; no secret
//	roles/<role>                role: grant, username, password, client_id,    yes           roles/ write (pathRoleWrite), deleted by
//	                            client_secret, scope, ttl, max_ttl,                          roles/ delete (pathRoleDelete); bound by
//	                            credentials ID, token host                                   its first login (bindOnLogin)
//	tokens/<role>               tokenState: the cached access token, its        yes           a login's outcome (recordLogin), verify/
//	                            expiry, the last login attempt and outcome,                  dropping a token upstream rejects
//	                            backoff, "credentials rejected", generation                  (dropToken); deleted by a role write that
//	                                                                                         names credentials and by a role delete
//	principals/<hash>/<role>    "{}": index of the roles logging in as one     no            roles/ write (indexRole), roles/ delete
//	                            principal (hash: principalHash of the
//	                            username or client ID, never the name itself)
//	budgets/recent              budgetRecord: this mount's logins of the last  no            every login reserved or answered 429
//	                            budgetWindow to its token host, and upstream                 (saveBudgets, from mayLogin and
//	                            429 blocks, per principalHash                                recordLogin)
//	budgets/mount               budgetRecord of older versions (read once,     no            nothing any more (read by restoreBudgets)
//	                            when budgets/recent is absent)
//	bindings/legacy             the token host roles stored before bindings    no            the first config/ write or delete of a
//	                            are bound to (legacyTokenHost)                               version with bindings (keepLegacyTokenHost)
//
// Seal-wrapped: the prefixes in the backend's PathsSpecial.SealWrapStorage
// (rolesStoragePrefix, tokensStoragePrefix), where the Vault supports it.
// Invalidate (on performance standbys and secondaries) drops the in-memory copy
// of config, roles/ and tokens/ keys: see cache.go.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"
)

// Storage keys and prefixes (the table above).
const (
	configStoragePath  = "config"
	rolesStoragePrefix = "roles/"
	// tokensStoragePrefix holds each role's tokenState.
	tokensStoragePrefix = "tokens/"
	// principalsStoragePrefix indexes roles by the principal they log in as
	// (principals/<hash>/<role>), so a role write finds the roles that share its
	// login budget without reading every role.
	principalsStoragePrefix = "principals/"
	// budgetsStoragePrefix holds what a mount keeps of its login budgets.
	// recentBudgetKey is the one record of its recent logins; legacyMountBudgetKey
	// is where versions that kept budgets per mount stored its total (read once,
	// when there is no newer record).
	budgetsStoragePrefix = "budgets/"
	recentBudgetKey      = budgetsStoragePrefix + "recent"
	legacyMountBudgetKey = budgetsStoragePrefix + "mount"
	// legacyTokenHostKey holds the token host (tokenOrigin) of the config in
	// force when a version that binds credentials to their token host first ran
	// on this mount: roles stored before then, which record no host of their
	// own, are bound to it (README, "Where secrets may go").
	legacyTokenHostKey = "bindings/legacy"
)

// errRoleNotFound is returned when a path names a role that does not exist.
var errRoleNotFound = errors.New("role does not exist")

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
	ClientAuth string `json:"client_auth,omitempty"`
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
func (c *config) clientAuth() string {
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
	return c.TokenURL + " " + c.clientAuth()
}

// readConfig reads the stored config, defaults filled in, bypassing the cache;
// stored is false when none is stored (the defaults).
func readConfig(ctx context.Context, s logical.Storage) (cfg *config, stored bool, err error) {
	cfg = defaultConfig()
	if stored, err = getJSON(ctx, s, configStoragePath, "config", cfg); err != nil {
		return nil, false, err
	}
	return cfg, stored, nil
}

// configStored reports whether a config was written (Vault's existence check).
func configStored(ctx context.Context, s logical.Storage) (bool, error) {
	entry, err := s.Get(ctx, configStoragePath)
	if err != nil {
		return false, fmt.Errorf("reading config: %w", err)
	}
	return entry != nil, nil
}

func writeConfig(ctx context.Context, s logical.Storage, cfg *config) error {
	return putJSON(ctx, s, configStoragePath, "config", cfg)
}

func deleteConfig(ctx context.Context, s logical.Storage) error {
	if err := s.Delete(ctx, configStoragePath); err != nil {
		return fmt.Errorf("deleting config: %w", err)
	}
	return nil
}

// role is one integration, stored at roles/<name> (seal-wrapped): the credentials
// of its service user (or OAuth2 client) and the caps on the leases creds/ hands
// out. Password and ClientSecret are write-only: no response, log line or error
// ever carries them.
type role struct {
	GrantType    string        `json:"grant_type"`
	Username     string        `json:"username,omitempty"`
	Password     string        `json:"password,omitempty"`
	ClientID     string        `json:"client_id,omitempty"`
	ClientSecret string        `json:"client_secret,omitempty"`
	Scope        string        `json:"scope,omitempty"`
	TTL          time.Duration `json:"ttl,omitempty"`
	MaxTTL       time.Duration `json:"max_ttl,omitempty"`
	// CredentialsID names what a login of this role sends (grant, username,
	// password, client, scope, token host): a random value drawn whenever one of
	// them changes, so it never repeats across deletes, restarts and nodes. A
	// login's answer is kept only under the CredentialsID it was sent with
	// (recordLogin), and token state of another one is retired.
	CredentialsID string `json:"credentials_id,omitempty"`
	// Generation is what roles stored before CredentialsID existed carry instead
	// (credentialsID turns it into one).
	Generation uint64 `json:"generation,omitempty"`
	// TokenHost is the token host (tokenOrigin: scheme, host, port) the
	// credentials may be sent to: the stored config's when they were written.
	// Empty when they were written with no config stored (BindOnLogin: the
	// first login binds them) or before hosts were recorded (bound to the
	// mount's legacyTokenHostKey).
	TokenHost   string `json:"token_host,omitempty"`
	BindOnLogin bool   `json:"bind_on_login,omitempty"`
}

// credentialsID is the role's CredentialsID, or its legacy generation's name.
func (r *role) credentialsID() string {
	if r.CredentialsID != "" {
		return r.CredentialsID
	}
	return legacyCredentialsID(r.Generation)
}

func legacyCredentialsID(generation uint64) string {
	return "generation-" + strconv.FormatUint(generation, 10)
}

// newCredentialsID draws a CredentialsID: 128 random bits, hex-encoded.
func newCredentialsID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("crypto/rand failed: " + err.Error()) // never on supported platforms (Go 1.24+)
	}
	return hex.EncodeToString(b[:])
}

// principal is the identity upstream counts logins against, folded: Unicode
// NFC and lower case, as email logins are compared (Svc@Example.com and
// svc@example.com are one user, one budget).
func (r *role) principal() string {
	if r.GrantType == grantClientCredentials {
		return "client:" + foldPrincipal(r.ClientID)
	}
	return "user:" + foldPrincipal(r.Username)
}

func foldPrincipal(name string) string {
	return cases.Fold().String(norm.NFC.String(name))
}

// legacyPrincipal is the principal as versions before folding spelled it, whose
// index entries a role write or delete also clears.
func (r *role) legacyPrincipal() string {
	if r.GrantType == grantClientCredentials {
		return "client:" + r.ClientID
	}
	return "user:" + r.Username
}

// principalKind names the field that holds the role's principal, for messages.
func principalKind(r *role) string {
	if r.GrantType == grantClientCredentials {
		return fieldClientID
	}
	return fieldUsername
}

// secrets lists the role's secret values, to scrub them from any text that might
// echo them.
func (r *role) secrets() []string {
	return []string{r.Password, r.ClientSecret}
}

// readRole reads a role from storage; (nil, nil) when it does not exist.
func readRole(ctx context.Context, s logical.Storage, name string) (*role, error) {
	r := new(role)
	if found, err := getJSON(ctx, s, rolesStoragePrefix+name, fmt.Sprintf("role %q", name), r); !found || err != nil {
		return nil, err
	}
	return r, nil
}

func writeRole(ctx context.Context, s logical.Storage, name string, r *role) error {
	return putJSON(ctx, s, rolesStoragePrefix+name, fmt.Sprintf("role %q", name), r)
}

// listTokenStates names the roles that have a token state stored.
func listTokenStates(ctx context.Context, s logical.Storage) ([]string, error) {
	names, err := s.List(ctx, tokensStoragePrefix)
	if err != nil {
		return nil, fmt.Errorf("listing the cached tokens: %w", err)
	}
	return names, nil
}

func listRoles(ctx context.Context, s logical.Storage) ([]string, error) {
	names, err := s.List(ctx, rolesStoragePrefix)
	if err != nil {
		return nil, fmt.Errorf("listing roles: %w", err)
	}
	return names, nil
}

// deleteRole deletes a role's record; its token state and principal index
// entry go first (deleteTokenState, unindexRole), so that a delete that failed
// half-way leaves the record for a retry to find and finish.
func deleteRole(ctx context.Context, s logical.Storage, name string) error {
	if err := s.Delete(ctx, rolesStoragePrefix+name); err != nil {
		return fmt.Errorf("deleting role %q: %w", name, err)
	}
	return nil
}

// principalHash names a principal in storage and in the budgets without spelling
// its username.
func principalHash(principal string) string {
	sum := sha256.Sum256([]byte(principal))
	return hex.EncodeToString(sum[:16])
}

// principalIndexKey is a role's entry in the index of its principal.
func principalIndexKey(principal, name string) string {
	return principalsStoragePrefix + principalHash(principal) + "/" + name
}

// unindexStale takes a role out of the index of the principals it no longer
// logs in as: old's (nil for a new role), folded or spelled as versions before
// folding did, when they are not r's.
func unindexStale(ctx context.Context, s logical.Storage, name string, old, r *role) error {
	if old == nil {
		return nil
	}
	for _, p := range []string{old.principal(), old.legacyPrincipal()} {
		if p == r.principal() {
			continue
		}
		if err := s.Delete(ctx, principalIndexKey(p, name)); err != nil {
			return fmt.Errorf("updating the principal index of role %q: %w", name, err)
		}
	}
	return nil
}

// indexRole files a role under its principal.
func indexRole(ctx context.Context, s logical.Storage, name string, r *role) error {
	if err := s.Put(ctx, &logical.StorageEntry{Key: principalIndexKey(r.principal(), name), Value: []byte("{}")}); err != nil {
		return fmt.Errorf("updating the principal index of role %q: %w", name, err)
	}
	return nil
}

// rolesSharingPrincipal names the other roles that log in as the same user/client.
func rolesSharingPrincipal(ctx context.Context, s logical.Storage, name string, r *role) ([]string, error) {
	names, err := s.List(ctx, principalsStoragePrefix+principalHash(r.principal())+"/")
	if err != nil {
		return nil, err
	}
	var shared []string
	for _, other := range names {
		if other != name {
			shared = append(shared, other)
		}
	}
	return shared, nil
}

// unindexRole takes a role being deleted out of the index of its principal,
// under both its folded and its pre-folding spelling.
func unindexRole(ctx context.Context, s logical.Storage, name string, r *role) error {
	for _, p := range []string{r.principal(), r.legacyPrincipal()} {
		if err := s.Delete(ctx, principalIndexKey(p, name)); err != nil {
			return fmt.Errorf("deleting role %q from the principal index: %w", name, err)
		}
	}
	return nil
}

// Login outcomes, as tokenState.LastOutcome stores them and status/ reports them.
const (
	outcomeSuccess     = "success"
	outcomeRateLimited = "rate_limited"
	outcomeRejected    = "credentials_rejected"
	outcomeUpstream    = "upstream_error"
)

// tokenState is one role's cached token and its login bookkeeping. It is persisted
// at tokens/<role> (seal-wrapped), so a restart neither logs in while the token is
// fresh nor forgets a backoff or a "credentials rejected" verdict. Its methods
// (when it is fresh, usable, due) are in token_state.go.
type tokenState struct {
	AccessToken string    `json:"access_token,omitempty"`
	TokenType   string    `json:"token_type,omitempty"`
	IssuedAt    time.Time `json:"issued_at,omitempty"`
	ExpiresAt   time.Time `json:"expires_at,omitempty"`

	// The login bookkeeping: when the last login was sent, its outcome (outcome*
	// constants) and error; Failures counts consecutive failures of the kind in
	// LastOutcome; no login before NextAttempt (backoff after a failure).
	LastAttempt         time.Time `json:"last_attempt,omitempty"`
	LastOutcome         string    `json:"last_outcome,omitempty"`
	LastError           string    `json:"last_error,omitempty"`
	Failures            int       `json:"failures,omitempty"`
	NextAttempt         time.Time `json:"next_attempt,omitempty"`
	CredentialsRejected bool      `json:"credentials_rejected,omitempty"`
	// RejectedSettings are the config's login settings (loginSettings) under
	// which the credentials were rejected: a new token URL or client
	// authentication style deserves a try. Empty in state stored before the field
	// existed, where the verdict stands whatever the config.
	RejectedSettings string `json:"rejected_settings,omitempty"`
	// Issuer is the token host (tokenOrigin) that issued AccessToken: the only
	// host the token is ever sent to (verify/, refused-token reports). Empty in
	// state stored before the field existed: the role's token host.
	Issuer string `json:"issuer,omitempty"`

	// The refused-token reports (README, "When the API refuses the token"): when
	// the last report that acted came, and what it led to (report* constants);
	// ForcedLoginAt is when a report last forced a login with no verify_url to
	// ask, which it may do once per reportLoginInterval. They outlive the token.
	LastReport        time.Time `json:"last_report,omitempty"`
	LastReportOutcome string    `json:"last_report_outcome,omitempty"`
	ForcedLoginAt     time.Time `json:"forced_login_at,omitempty"`

	// CredentialsID is the role's CredentialsID this state belongs to (state
	// stored before it existed carries Generation instead). State of other
	// credentials is retired: never served, never judged by.
	CredentialsID string `json:"credentials_id,omitempty"`
	Generation    uint64 `json:"generation,omitempty"`
}

// credentialsID is the CredentialsID the state belongs to, or its legacy
// generation's name.
func (st *tokenState) credentialsID() string {
	if st.CredentialsID != "" {
		return st.CredentialsID
	}
	return legacyCredentialsID(st.Generation)
}

// readLegacyTokenHost reads the token host roles stored before hosts were
// recorded are bound to; "" when none is stored yet.
func readLegacyTokenHost(ctx context.Context, s logical.Storage) (string, error) {
	var host string
	if _, err := getJSON(ctx, s, legacyTokenHostKey, "the legacy token host", &host); err != nil {
		return "", err
	}
	return host, nil
}

func writeLegacyTokenHost(ctx context.Context, s logical.Storage, host string) error {
	return putJSON(ctx, s, legacyTokenHostKey, "the legacy token host", host)
}

// readTokenState reads a role's token state; an empty one when none is stored.
func readTokenState(ctx context.Context, s logical.Storage, name string) (*tokenState, error) {
	st := new(tokenState)
	if _, err := getJSON(ctx, s, tokensStoragePrefix+name, tokenStateWhat(name), st); err != nil {
		return nil, err
	}
	return st, nil
}

func writeTokenState(ctx context.Context, s logical.Storage, name string, st *tokenState) error {
	return putJSON(ctx, s, tokensStoragePrefix+name, tokenStateWhat(name), st)
}

// tokenStateWhat names a role's token state in errors.
func tokenStateWhat(name string) string {
	return fmt.Sprintf("the cached token of role %q", name)
}

// deleteTokenState deletes a role's token state; the caller names the token in
// its error (retired, cached).
func deleteTokenState(ctx context.Context, s logical.Storage, name string) error {
	return s.Delete(ctx, tokensStoragePrefix+name)
}

// getJSON decodes the JSON stored at key into v; found is false, and v left as
// it was, when nothing is stored there. Errors name what the key holds (what).
func getJSON(ctx context.Context, s logical.Storage, key, what string, v any) (found bool, err error) {
	entry, err := s.Get(ctx, key)
	if err != nil {
		return false, fmt.Errorf("reading %s: %w", what, err)
	}
	if entry == nil {
		return false, nil
	}
	if err := entry.DecodeJSON(v); err != nil {
		return false, fmt.Errorf("decoding %s: %w", what, err)
	}
	return true, nil
}

// putJSON stores v as JSON at key. Errors name what the key holds (what).
func putJSON(ctx context.Context, s logical.Storage, key, what string, v any) error {
	entry, err := logical.StorageEntryJSON(key, v)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", what, err)
	}
	if err := s.Put(ctx, entry); err != nil {
		return fmt.Errorf("storing %s: %w", what, err)
	}
	return nil
}

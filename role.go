package iadvize

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"time"

	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"
)

// A role (README, "roles"; docs/storage.md): one integration's credentials, the
// principal upstream counts its logins against, and the identity of its
// credentials.

// The grants a role logs in with (RFC 6749 §4.3, §4.4).
const (
	grantPassword          = "password"
	grantClientCredentials = "client_credentials"
)

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
func (r *role) credentialsID() string { return credentialsID(r.CredentialsID, r.Generation) }

// credentialsID is id, or, for records stored before CredentialsID existed, the
// name of their generation.
func credentialsID(id string, generation uint64) string {
	if id != "" {
		return id
	}
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

// principalHash names a principal in storage and in the budgets without spelling
// its username.
func principalHash(principal string) string {
	sum := sha256.Sum256([]byte(principal))
	return hex.EncodeToString(sum[:16])
}

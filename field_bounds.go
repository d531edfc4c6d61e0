package iadvize

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// Bounds, in bytes, on the string fields a user writes to roles/<name> and config
// (README, "roles" and "config"). checkFieldBounds applies them first thing in
// the paths' write callbacks, before a value is trimmed, parsed, stored or sent
// (the framework has only type-checked it): a role holding a 1 MiB password once
// cost every login of it hundreds of MiB. Each bound is many times what any real
// server uses for the field, so that no integration is refused (README,
// "Upstreams").
const (
	// maxRoleNameBytes: role names are 1 to 128 characters of a one-byte
	// alphabet (roleNamePattern); no longer name can be valid.
	maxRoleNameBytes = 128
	// maxGrantTypeBytes: the values are "password" and "client_credentials";
	// extension grants are absolute URIs (RFC 6749 §4.5), not taken.
	maxGrantTypeBytes = 64
	// maxUsernameBytes: usernames are emails, at most 254 bytes (RFC 5321
	// §4.5.3.1.3: a path of 256 octets, brackets included); 1 KiB leaves room
	// for the other names a password-grant server may use (an LDAP DN).
	maxUsernameBytes = 1 << 10
	// maxPasswordBytes: NIST SP 800-63B §5.1.1.2 asks verifiers to accept at
	// least 64 characters, and generated passwords are rarely over 128; 4 KiB
	// holds a passphrase or an API key used as a password many times over.
	maxPasswordBytes = 4 << 10
	// maxClientIDBytes: RFC 6749 §2.2 leaves the size to the server; client IDs
	// are UUIDs or strings of 20 to 64 bytes, or URLs (OpenID Connect), which
	// stay within the 2 KiB that clients and proxies have long kept URLs to.
	maxClientIDBytes = 2 << 10
	// maxClientSecretBytes: RFC 6749 §2.3.1 leaves the size to the server; real
	// secrets are random strings of 32 to 128 bytes. 4 KiB is 32 times that and
	// still fits, with a usual client ID, base64-encoded (a third longer) in the
	// 8 KiB request-header line of common servers, as HTTP Basic carries it.
	maxClientSecretBytes = 4 << 10
	// maxScopeBytes: a space-separated list (RFC 6749 §3.3); URL-style scopes
	// (Google, Microsoft Graph) are 30 to 80 bytes each, so 16 KiB holds some
	// 200 of them, more than any real token request names.
	maxScopeBytes = 16 << 10
	// maxURLBytes: token_url and verify_url; RFC 9110 §4.1 recommends that
	// senders and recipients support URIs of at least 8000 octets, and no
	// endpoint needs more.
	maxURLBytes = 8 << 10
	// maxCAPEMBytes: a whole public CA bundle (Mozilla's roots, some 150
	// certificates, about 215 KiB as PEM) fits; so does any private chain. The
	// config with it stays within the 512 KiB a storage entry may hold in
	// Consul, the smallest of Vault's usual storage backends.
	maxCAPEMBytes = 256 << 10
	// maxClientAuthBytes: the values are "basic", "basic_urlencoded" and "post".
	maxClientAuthBytes = 64
)

// fieldBounds is the bound of each string field a user writes, by field name
// (the role and config paths name no field alike).
var fieldBounds = map[string]int{
	fieldName:         maxRoleNameBytes,
	fieldGrantType:    maxGrantTypeBytes,
	fieldUsername:     maxUsernameBytes,
	fieldPassword:     maxPasswordBytes,
	fieldClientID:     maxClientIDBytes,
	fieldClientSecret: maxClientSecretBytes,
	fieldScope:        maxScopeBytes,
	fieldTokenURL:     maxURLBytes,
	fieldVerifyURL:    maxURLBytes,
	fieldCAPEM:        maxCAPEMBytes,
	fieldClientAuth:   maxClientAuthBytes,
}

// checkFieldBounds answers 400 naming each field of d's path whose value is
// longer than its bound, with its length and the bound in bytes, never the value;
// nil when every value is within its bound. A value the framework takes as a
// string arrives as a string or a json.Number (a number of any length); other
// scalars (true, 12) convert to short strings, and anything else was refused
// before the framework saw it (nonStringField).
func checkFieldBounds(d *framework.FieldData) *logical.Response {
	var over []string
	for name, v := range d.Raw {
		bound, ok := fieldBounds[name]
		if _, known := d.Schema[name]; !ok || !known {
			continue
		}
		n := 0
		switch v := v.(type) {
		case string:
			n = len(v)
		case json.Number:
			n = len(v)
		}
		if n > bound {
			over = append(over, fmt.Sprintf("%s is %d bytes; at most %d are accepted", name, n, bound))
		}
	}
	if len(over) == 0 {
		return nil
	}
	sort.Strings(over)
	return logical.ErrorResponse("%s", strings.Join(over, "; "))
}

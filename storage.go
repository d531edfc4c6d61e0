package iadvize

// The storage of one mount: its keys, and the helpers that read and write them.
// docs/storage.md is the table of every key: what it holds, whether it is
// seal-wrapped (PathsSpecial.SealWrapStorage: rolesStoragePrefix,
// tokensStoragePrefix), and which operation writes it. The records themselves
// are in config.go, role.go, token_state.go and budget_record.go.

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/vault/sdk/logical"
)

// Storage keys and prefixes (docs/storage.md).
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

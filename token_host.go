package iadvize

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"golang.org/x/sync/errgroup"
)

// Where secrets may go (README, "Where secrets may go"; docs/security.md): a
// role's password and client secret only to the token host its credentials were
// written for, and an access token only to the host that issued it. Whoever may
// write config but not the roles' secrets must never be able to collect them by
// pointing token_url or verify_url elsewhere.

// tokenOrigin names the host a URL sends to: scheme, lower-cased host and port
// (the scheme's when the URL names none), as in RFC 6454 §4. A path or query
// change on the same host keeps the origin; "" for a URL with no host.
func tokenOrigin(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil || u.Hostname() == "" {
		return ""
	}
	scheme := strings.ToLower(u.Scheme)
	port := u.Port()
	if port == "" {
		port = "443"
		if scheme == "http" {
			port = "80"
		}
	}
	return scheme + "://" + net.JoinHostPort(strings.TrimSuffix(strings.ToLower(u.Hostname()), "."), port)
}

// boundHost is the token host a role's credentials may be sent to: the one
// recorded with them, the mount's legacy token host for roles stored before
// hosts were recorded, or "" for credentials written with no config stored,
// which their first login binds (bindOnLogin).
func (b *backend) boundHost(ctx context.Context, s logical.Storage, r *role) (string, error) {
	switch {
	case r.TokenHost != "":
		return r.TokenHost, nil
	case r.BindOnLogin:
		return "", nil
	}
	return b.legacyTokenHost(ctx, s)
}

// legacyTokenHost is the token host of the config in force when this version
// first ran on the mount: roles stored before hosts were recorded are bound to
// it, with no login and no operator step. Until a config write or delete of this
// version (which stores it first: keepLegacyTokenHost), that is the current
// config's; after, the stored one.
func (b *backend) legacyTokenHost(ctx context.Context, s logical.Storage) (string, error) {
	h := b.legacyHost.Load()
	if h == nil {
		host, err := readLegacyTokenHost(ctx, s)
		if err != nil {
			return "", err
		}
		h = &host
		b.legacyHost.Store(h)
	}
	if *h != "" {
		return *h, nil
	}
	cfg, err := b.cachedConfig(ctx, s)
	if err != nil {
		return "", err
	}
	return cfg.origin, nil
}

// keepLegacyTokenHost stores the current config's token host as the legacy
// token host, unless one is stored: a config write or delete calls it, under
// the config write lock, before it changes the config.
func (b *backend) keepLegacyTokenHost(ctx context.Context, s logical.Storage) error {
	host, err := readLegacyTokenHost(ctx, s)
	if err != nil || host != "" {
		return err
	}
	cfg, _, err := readConfig(ctx, s)
	if err != nil {
		return err
	}
	host = tokenOrigin(cfg.TokenURL)
	if err := writeLegacyTokenHost(ctx, s, host); err != nil {
		return err
	}
	b.legacyHost.Store(&host)
	return nil
}

// bindingRefusal is why a role whose credentials are bound to another token host
// (bound) than the config's may not log in, in words an operator acts on; nil
// when the role may log in there (or is not bound yet: its first login binds it).
func bindingRefusal(bound string, r *role, cfg *configEntry) *loginRefusal {
	if bound == "" || bound == cfg.origin {
		return nil
	}
	return &loginRefusal{status: http.StatusConflict,
		cause: fmt.Sprintf("its credentials were written for the token host %s, and config %s now names %s: "+
			"they are sent to no other host", bound, fieldTokenURL, cfg.origin),
		rewrite: secretFields(r), bindsTo: cfg.origin}
}

// secretFields names the role's write-only fields, for messages.
func secretFields(r *role) string {
	switch {
	case r.GrantType == grantClientCredentials:
		return fieldClientSecret
	case r.ClientSecret != "":
		return fieldPassword + " and " + fieldClientSecret
	}
	return fieldPassword
}

// waitingFor is bindingRefusal judged from memory (the legacy host is read at
// Initialize): why the role's credentials, bound to another token host than
// the config's, wait for a rewrite; nil when they do not. Reads use it to warn
// and to start no login; mayLogin makes the same check against storage before
// any login.
func (b *backend) waitingFor(r *role, cfg *configEntry) *loginRefusal {
	bound := r.TokenHost
	if bound == "" && !r.BindOnLogin {
		if h := b.legacyHost.Load(); h != nil {
			bound = *h // "": none stored, the config's
		}
	}
	return bindingRefusal(bound, r, cfg)
}

// boundElsewhere reports whether the role's credentials are bound to another
// token host than the config's, from memory (waitingFor).
func (b *backend) boundElsewhere(r *role, cfg *configEntry) bool {
	return b.waitingFor(r, cfg) != nil
}

// errBoundMeanwhile: a role written with no config stored was bound, by a
// login under another config, between the time a flight read it and its own
// first login; that flight judges the role again (and is refused) rather than
// send the credentials to a second host.
var errBoundMeanwhile = errors.New("role credentials were bound to another token host during the login")

// bindOnLogin records the token host of a role's first login with the role, if
// its credentials were written with no config stored (BindOnLogin) and are still
// the ones the login is for. It returns the role as stored after, or
// errBoundMeanwhile when another login bound it to another host meanwhile.
func (b *backend) bindOnLogin(ctx context.Context, s logical.Storage, name string, sentFor *role, host string) (*role, error) {
	defer b.lockRole(name).Unlock()
	r, err := readRole(ctx, s, name)
	switch {
	case err != nil:
		return nil, err
	case r == nil:
		return nil, errRoleNotFound
	case r.credentialsID() != sentFor.credentialsID():
		return nil, errRoleChanged
	case !r.BindOnLogin && r.TokenHost != host:
		// Bound by another login (under another config) since sentFor was
		// read: the caller's view is stale.
		b.forgetRole(name)
		return nil, errBoundMeanwhile
	case !r.BindOnLogin:
		return r, nil
	}
	r.TokenHost, r.BindOnLogin = host, false
	if err := writeRole(ctx, s, name, r); err != nil {
		return nil, err
	}
	b.forgetRole(name)
	return r, nil
}

// verifyUsable says whether verify_url may be sent a role's token: it must be
// set, and on the host that issued the token (issuer). why says what to change
// when it may not.
func verifyUsable(cfg *config, issuer string) (ok bool, why string) {
	switch origin := tokenOrigin(cfg.VerifyURL); {
	case cfg.VerifyURL == "":
		return false, fmt.Sprintf("config has an empty %s", fieldVerifyURL)
	case origin != issuer:
		return false, fmt.Sprintf("config %s is on %s, not on %s, the token host that issued the token: "+
			"tokens are sent only to their issuer; set %s to a URL on that host, or empty", fieldVerifyURL, origin, issuer, fieldVerifyURL)
	}
	return true, ""
}

// tokenIssuer is the host that issued a role's cached token.
func (b *backend) tokenIssuer(ctx context.Context, s logical.Storage, e *cacheEntry) (string, error) {
	if e.state.Issuer != "" {
		return e.state.Issuer, nil
	}
	return b.boundHost(ctx, s, e.role)
}

// roleCountTime bounds how long a config write counts the roles bound to
// another token host (rolesBoundElsewhere): a mount of 100,000 roles reads one
// record each (BENCHMARKS.md), and the count only words a warning.
const roleCountTime = 10 * time.Second

// rolesBoundElsewhere counts the roles whose credentials are bound to another
// token host than host (roles not bound yet are not counted: their first login
// binds them), for the warning of a config write: 8 reads at a time, for at most
// roleCountTime; all is false when the count stopped there (a lower bound).
func (b *backend) rolesBoundElsewhere(ctx context.Context, s logical.Storage, host string) (n int, all bool, err error) {
	names, err := listRoles(ctx, s)
	if err != nil {
		return 0, false, err
	}
	ctx, cancel := context.WithTimeout(ctx, roleCountTime)
	defer cancel()
	var (
		mu      sync.Mutex // guards n and err: a leaf
		g       errgroup.Group
		counted int
	)
	g.SetLimit(8)
	for _, name := range names {
		if ctx.Err() != nil {
			break
		}
		counted++
		g.Go(func() error {
			r, rerr := readRole(ctx, s, name)
			var bound string
			if rerr == nil && r != nil {
				bound, rerr = b.boundHost(ctx, s, r)
			}
			mu.Lock()
			defer mu.Unlock()
			switch {
			case rerr != nil && ctx.Err() == nil:
				err = rerr
			case rerr == nil && bound != "" && bound != host:
				n++
			}
			return nil
		})
	}
	_ = g.Wait()
	return n, counted == len(names) && ctx.Err() == nil, err
}

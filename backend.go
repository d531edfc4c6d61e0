// Package iadvize is a Vault secrets engine that brokers OAuth2 access tokens
// (iAdvize password grant, or any client-credentials endpoint): it keeps each
// integration's credentials under a role, logs in only when the cached token nears
// expiry, and serves that one token to every client allowed to read it.
package iadvize

import (
	"context"
	"encoding/json"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/helper/errutil"
	"github.com/hashicorp/vault/sdk/helper/locksutil"
	"github.com/hashicorp/vault/sdk/logical"
	"golang.org/x/sync/singleflight"
)

// Version is the plugin's version, reported to Vault as RunningVersion. The
// Makefile sets it at build time with -ldflags "-X".
var Version = "v0.1.0-dev"

const operationPrefix = "iadvize"

// Factory builds one mount with login budgets of its own. The plugin binary uses
// FactoryWith instead, so that its mounts share their budgets per token host.
func Factory(ctx context.Context, conf *logical.BackendConfig) (logical.Backend, error) {
	return FactoryWith(NewBudgets())(ctx, conf)
}

// FactoryWith returns the plugin's entry point, which Vault calls once per mount:
// every mount it builds counts its logins in budgets, shared with the other mounts
// that log in to the same token host (upstream limits logins per source IP).
func FactoryWith(budgets *Budgets) logical.Factory {
	return func(ctx context.Context, conf *logical.BackendConfig) (logical.Backend, error) {
		b := newBackend(time.Now, budgets)
		if err := b.Setup(ctx, conf); err != nil {
			return nil, err
		}
		return b, nil
	}
}

// backend is one mount of the plugin (docs/README.md maps the design: storage,
// read path, login policy, locks, HA). All state lives here (never in globals), as
// plugin.ServeMultiplex serves every mount from one process.
type backend struct {
	*framework.Backend

	// now is the clock, and sleep waits on it (ctx ends it early); tests inject
	// fake ones.
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error

	// The locks: what each guards is said here, which may be held together and
	// in which order is docs/locks.md. None is held across an upstream call or a
	// sleep.
	//
	// writeMu guards the config's read-modify-write (config/ write and delete).
	writeMu sync.Mutex
	// roleLocks hold one lock per role name (locksutil.LockForKey, lockRole): it
	// guards the role's storage writes (roles/<name>, tokens/<name>, its
	// principals/ entry), so that a login's outcome is recorded only under the
	// credentials it was sent with.
	roleLocks []*locksutil.LockEntry

	// cache is the in-memory copy of config and roles in front of storage.
	cache storageCache

	// One singleflight group per kind of flight, each keyed by role name
	// (docs/read-path.md). loginFlights: reads and the background refresh of a
	// role share one refreshRole, so a role has at most one login at a time;
	// rotateFlights: concurrent rotate-role calls of a role share one login;
	// verifyFlights: concurrent verify/ checks of a role share one upstream check.
	loginFlights  singleflight.Group
	rotateFlights singleflight.Group
	verifyFlights singleflight.Group
	// detached holds the roles whose refresh runs on its own for a read
	// (refreshDetached): at most one each. detachedWG counts them running.
	detached   sync.Map // role name -> struct{}
	detachedWG sync.WaitGroup
	// detachedFailed remembers why a role's last detached refresh failed when its
	// token state does not say (storage errors), for the warning of later reads.
	detachedFailed sync.Map // role name -> *loginRefusal
	// lifetime ends when Vault cleans the mount up; it cancels detached refreshes.
	lifetime    context.Context
	endLifetime context.CancelFunc
	// sched orders the roles by when the background refresh is due for them.
	sched schedule
	// budgets enforces the login budgets and upstream 429 blocks, shared with the
	// other mounts of the process that log in to the same token host.
	budgets *mountBudgets
	// verifies remembers the last verify/ answer per role (role name -> *verifyResult).
	verifies sync.Map
	// reports remembers the last refused-token report of each role that did not
	// change storage (role name -> *reportNote), for status/.
	reports sync.Map
	// legacyHost caches the token host roles stored before hosts were recorded
	// are bound to (legacyTokenHost), once read or stored.
	legacyHost atomic.Pointer[string]
}

// newBackend builds a mount that counts its logins in budgets (nil: budgets of
// its own).
func newBackend(now func() time.Time, budgets *Budgets) *backend {
	if budgets == nil {
		budgets = NewBudgets()
	}
	b := &backend{
		now:       wallClock(now),
		sleep:     sleepCtx,
		roleLocks: locksutil.CreateLocks(),
		budgets:   newMountBudgets(budgets),
	}
	b.lifetime, b.endLifetime = context.WithCancel(context.Background())
	b.Backend = &framework.Backend{
		Help:        strings.TrimSpace(backendHelp),
		BackendType: logical.TypeLogical,
		PathsSpecial: &logical.Paths{
			SealWrapStorage: []string{rolesStoragePrefix, tokensStoragePrefix},
		},
		Paths: framework.PathAppend(
			[]*framework.Path{pathConfig(b)},
			pathRoles(b),
			pathCreds(b),
			rolePaths(b),
		),
		Secrets:        []*framework.Secret{secretToken(b)},
		Invalidate:     b.invalidate,
		Clean:          b.clean,
		InitializeFunc: b.initialize,
		PeriodicFunc:   b.periodicRefresh,
		RunningVersion: Version,
	}
	return b
}

// lockRole takes the role's lock (roleLocks) and returns it, for the caller to
// unlock: defer b.lockRole(name).Unlock().
func (b *backend) lockRole(name string) *locksutil.LockEntry {
	lock := locksutil.LockForKey(b.roleLocks, name)
	lock.Lock()
	return lock
}

// wallClock reads now with Go's monotonic reading stripped (time.Round(0)):
// expiry, refresh windows and backoffs are judged on wall time (README, "When
// the plugin logs in"), so that a host that was suspended, or a clock stepped
// by NTP, never serves a token past its expire_time. Every time the plugin keeps,
// in memory or in storage, comes from it.
func wallClock(now func() time.Time) func() time.Time {
	return func() time.Time { return now().Round(0) }
}

// sleepCtx waits for d, or until ctx ends (its error).
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// initialize runs once Vault has mounted the backend: this mount's stored recent
// logins join the budgets its process shares, before any other mount of the
// process logs in to the same host. Failing that, the first login retries it.
func (b *backend) initialize(ctx context.Context, req *logical.InitializationRequest) error {
	if _, err := b.cachedConfig(ctx, req.Storage); err != nil {
		b.Logger().Warn("reading the config at start failed", "error", err)
		return nil
	}
	if err := b.restoreBudgets(ctx, req.Storage); err != nil {
		b.Logger().Warn("restoring the login budget at start failed; the first login retries", "error", err)
	}
	// Roles stored before credentials were bound to their token host are bound
	// to the config in force when this version first ran (docs/security.md).
	if _, err := b.legacyTokenHost(ctx, req.Storage); err != nil {
		b.Logger().Warn("reading the legacy token host at start failed; the first login retries", "error", err)
	}
	return nil
}

// clean runs when Vault unmounts the mount, reloads or stops the plugin, seals
// or steps down: every upstream call in flight is cancelled at once (detach),
// and refreshes running on their own are waited for.
func (b *backend) clean(context.Context) {
	b.endLifetime()
	b.detachedWG.Wait()
}

// detach returns a context for work that must outlive the request that started
// it (other readers share its result) but not the mount: it keeps ctx's values,
// not its cancellation, ends when Clean ends the mount's lifetime, and after
// timeout when timeout > 0. Call cancel when done.
func (b *backend) detach(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(b.lifetime, cancel)
	end := func() { stop(); cancel() }
	if timeout <= 0 {
		return ctx, end
	}
	ctx, cancelTimeout := context.WithTimeout(ctx, timeout)
	return ctx, func() { cancelTimeout(); end() }
}

// HandleRequest refuses a string field (a password, a client_secret) whose value
// is not a string before the framework validates the fields: its conversion error
// would echo the value.
func (b *backend) HandleRequest(ctx context.Context, req *logical.Request) (*logical.Response, error) {
	if msg := nonStringField(req); msg != "" {
		return logical.ErrorResponse(msg), nil
	}
	if req.Operation == logical.HelpOperation {
		return b.handleHelp(ctx, req)
	}
	return b.Backend.HandleRequest(ctx, req)
}

// HandleExistenceCheck does the same for the existence check, which Vault runs
// before the request and whose error it returns and logs.
func (b *backend) HandleExistenceCheck(ctx context.Context, req *logical.Request) (bool, bool, error) {
	if msg := nonStringField(req); msg != "" {
		return false, false, errutil.UserError{Err: msg}
	}
	return b.Backend.HandleExistenceCheck(ctx, req)
}

// nonStringField names a string field of fieldBounds (password and client_secret
// among them) whose value is neither a string nor a scalar the framework converts
// to one (the first by name); "" when there is none. The framework's conversion
// error would echo the value, whatever its size.
func nonStringField(req *logical.Request) string {
	var bad []string
	for k, v := range req.Data {
		if _, bounded := fieldBounds[k]; !bounded {
			continue
		}
		switch v.(type) {
		case nil, string, json.Number, bool, int, int64, float64:
		default:
			bad = append(bad, k)
		}
	}
	if len(bad) == 0 {
		return ""
	}
	sort.Strings(bad)
	return bad[0] + " must be a string"
}

// refuseUnknownFields answers 400 naming the request fields the path does not
// know: the framework would only warn, and a typo such as pasword= must not leave
// a role without its secret.
func refuseUnknownFields(req *logical.Request, d *framework.FieldData) *logical.Response {
	var unknown []string
	for k := range req.Data {
		if _, ok := d.Schema[k]; !ok {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	sort.Strings(unknown)
	return logical.ErrorResponse("unknown field(s): %s", strings.Join(unknown, ", "))
}

const backendHelp = `
The iadvize secrets engine is a token broker for OAuth2 token endpoints with
24-hour (iAdvize, password grant) or short (client-credentials grant) tokens.

Write the upstream settings at config, one role per integration at roles/<name>,
and let clients read creds/<name> (leased) or static-creds/<name> (no lease). The
engine logs in only when the cached token nears expiry, shares one login among
concurrent readers, and never exceeds the upstream login limits.
`

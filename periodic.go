package iadvize

import (
	"context"
	"fmt"

	"github.com/hashicorp/vault/sdk/logical"
)

// periodicRefresh is the backend's PeriodicFunc (SPEC 3 item 3). Vault runs it
// about once a minute on the active node. It logs in for the roles whose token
// enters its refresh window before the next run, so readers rarely wait on a
// login, and stops for this run once the mount's login budget is spent: the rest
// wait for the next run, which spreads logins under logins_per_minute.
func (b *backend) periodicRefresh(ctx context.Context, req *logical.Request) error {
	if !b.canWrite() {
		return nil
	}
	cfg, err := b.getConfig(ctx, req.Storage)
	if err != nil {
		return err
	}
	b.limits.forgetIdle(b.now())
	names, err := req.Storage.List(ctx, rolesStoragePrefix)
	if err != nil {
		return fmt.Errorf("listing roles: %w", err)
	}
	for _, name := range names {
		if ctx.Err() != nil {
			return nil
		}
		e, err := b.loadEntry(ctx, req.Storage, name)
		if err != nil {
			b.Logger().Warn("background refresh: reading role failed", "role", name, "error", err)
			continue
		}
		if e == nil || !dueForBackground(e.state, cfg.RefreshBefore, b.now()) {
			continue
		}
		res, err := b.shared(ctx, req.Storage, name, modeBackground)
		if err != nil {
			b.Logger().Warn("background refresh failed", "role", name, "error", err)
			continue
		}
		if res.failed != nil && res.failed.hostFull {
			b.Logger().Debug("background refresh: mount login budget spent; the rest wait for the next run")
			return nil
		}
	}
	return nil
}

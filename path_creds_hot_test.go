package iadvize

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeclock"
)

// countingSystemView counts ReplicationState calls: in a plugin process each one
// is a gRPC round trip to Vault.
type countingSystemView struct {
	logical.StaticSystemView
	calls atomic.Int64
}

func (v *countingSystemView) ReplicationState() consts.ReplicationState {
	v.calls.Add(1)
	return v.StaticSystemView.ReplicationState()
}

// A cache hit on creds/ or static-creds/ asks Vault nothing: no storage, no
// replication state.
func TestCredsCacheHitAsksVaultNoReplicationState(t *testing.T) {
	u := newUpstream(t, issuing(24*time.Hour))
	clock := fakeclock.New()
	storage := &logical.InmemStorage{}
	view := &countingSystemView{StaticSystemView: logical.StaticSystemView{DefaultLeaseTTLVal: time.Hour, MaxLeaseTTLVal: time.Hour}}
	b := newBackend(clock.Now, nil)
	if err := b.Setup(context.Background(), &logical.BackendConfig{
		Logger: hclog.NewNullLogger(), System: view, StorageView: storage,
	}); err != nil {
		t.Fatal(err)
	}
	e := &testEnv{t: t, b: b, storage: storage, clock: clock, logs: &syncBuffer{}}
	e.configure(u, nil)
	e.addRole("app", "svc@example.com", "pw")
	e.mustRead("creds/app") // the login
	before := view.calls.Load()
	for i := 0; i < 50; i++ {
		e.mustRead("creds/app")
		e.mustRead("static-creds/app")
	}
	if n := view.calls.Load() - before; n != 0 {
		t.Fatalf("100 cache hits made %d ReplicationState calls, want 0", n)
	}
	u.wantCount(t, 1, "")
}

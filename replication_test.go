package iadvize

import (
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
)

// wantReadOnly fails the test unless each of paths, read on e, answers exactly
// logical.ErrReadOnly, the error that makes Vault forward the read to a node
// that may write; why says when.
func (e *testEnv) wantReadOnly(why string, paths ...string) {
	e.t.Helper()
	for _, path := range paths {
		resp, err := e.read(path)
		if err != logical.ErrReadOnly { //nolint:errorlint // exactly ErrReadOnly, so Vault forwards
			e.t.Fatalf("%s: %s: err=%v resp=%v, want exactly logical.ErrReadOnly", why, path, err, respErr(resp))
		}
	}
}

// TestColdReadLogsInOnlyWhereStorageIsWritable: a node logs in only where the
// SDK's framework.Backend.WriteSafeReplicationState lets it write storage
// (docs/ha.md). On a performance secondary a local mount is its own and logs in
// on a cold read; a replicated mount answers exactly logical.ErrReadOnly, so
// Vault forwards the read to the primary, before any upstream request. A DR
// secondary never logs in, local mount or not.
func TestColdReadLogsInOnlyWhereStorageIsWritable(t *testing.T) {
	for _, tc := range []struct {
		name   string
		state  consts.ReplicationState
		local  bool
		logsIn bool
	}{
		{"performance secondary, local mount", consts.ReplicationPerformanceSecondary, true, true},
		{"performance secondary, replicated mount", consts.ReplicationPerformanceSecondary, false, false},
		{"DR secondary, local mount", consts.ReplicationDRSecondary, true, false},
		{"DR secondary, replicated mount", consts.ReplicationDRSecondary, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, u := newAppEnv(t, nil, issuing(24*time.Hour), "pw-one")
			e.system.ReplicationStateVal = tc.state
			e.system.LocalMountVal = tc.local
			before := storageSnapshot(t, e.storage)

			if tc.logsIn {
				tok := accessToken(t, e.mustRead("creds/app"))
				e.wantServed(tok, "after the cold read", "creds/app", "static-creds/app")
				u.wantCount(t, 1, ": the local mount logs in itself, once")
				if st := storedToken(t, e.storage, "app"); st == nil || st.AccessToken != tok {
					t.Fatal("the local mount did not persist the token it served")
				}
				return
			}
			e.wantReadOnly("on a cold read", "creds/app", "static-creds/app")
			u.wantCount(t, 0, ": this node may not write storage")
			assertStorageUnchanged(t, e.storage, before)
		})
	}
}

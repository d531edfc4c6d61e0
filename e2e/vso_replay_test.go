package e2e

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	mathrand "math/rand/v2"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/vaulttest"
)

// Vault Secrets Operator cannot run here. TestVSOStaticCredsReplay replays what
// it does with a VaultDynamicSecret that has allowStaticCreds: true, as in
// examples/kubernetes/vault-secrets-operator.yaml, against a real Vault whose
// tokens live 20 s. Each rule cites where it is in VSO's code, all of it in
// https://github.com/hashicorp/vault-secrets-operator/blob/main/controllers/vaultdynamicsecret_controller.go
// ("the controller" below) unless said otherwise.

const (
	vsoTokenLifetime = 20 * time.Second
	vsoRefreshBefore = "8s" // rotation_period 12 s
	vsoRotations     = 3
	vsoDeadline      = 150 * time.Second
	// vsoJitter bounds the jitter added to each wait: computeMaxJitterWithPercent(
	// staticCredsJitterHorizon = 3 s, vdsJitterFactor = 0.05).
	vsoJitter = 150 * time.Millisecond
)

// vsoRules are where the documented rules of Vault Secrets Operator and its
// controller's code part.
type vsoRules struct {
	name string
	// everyTTL: the next read is due ttl + 0.5 s after each read, from that
	// read's ttl (VSO's documented rules). The controller keeps the metadata of the read that
	// last changed the data: syncSecret returns early when the HMACs are equal,
	// before `o.Status.StaticCredsMetaData = *staticCredsMeta`, and
	// computePostSyncHorizon schedules from the status' TTL.
	everyTTL bool
	// pollAlways: while last_vault_rotation is unchanged and ttl <= 2, poll
	// (VSO's documented rules). The controller's awaitVaultSecretRotation polls only for an
	// answer with a rotation_schedule, which static-creds/ has not.
	pollAlways bool
	// maxReads bounds the reads per rotation, the one that gets the new token
	// included. Under VSO's documented rules, 3 to 5 (measured): ttl is whole seconds,
	// cut short, so ttl + 0.5 s can come up to half a second before the refresh
	// window opens; that read, VSO's immediate retry and perhaps one poll get
	// the old token with ttl 1, the first read inside the window starts the
	// login, and the next poll gets the new token. Under the controller's, 2:
	// one read of the old token, one of the new.
	maxReads int
	// fresh: the Secret never holds a token past its expire_time.
	fresh bool
}

// vsoReplay is one VaultDynamicSecret and its controller.
type vsoReplay struct {
	t     *testing.T
	e     *env
	c     *api.Client
	path  string
	rules vsoRules
	key   []byte // the operator's HMAC key

	// The VaultDynamicSecret's status and its destination Secret.
	status vsoStaticCredsMeta
	mac    []byte
	token  string    // the Secret's access_token
	expire time.Time // its expire_time

	reads int // since the last sync
	syncs []vsoSync
	late  time.Duration // the longest the Secret held a token past its expire_time
}

// vsoSync is a sync that changed the Secret: a rollout restart of the targets.
type vsoSync struct {
	at    time.Time
	token string
	reads int // reads since the previous sync, this one's included
}

// read is doVault: a GET of mount/path. An answer that is not static
// credentials (vaultStaticCredsMetaDataFromData fails, or isStaticCreds is
// false) fails the test: VSO would log "Vault response data does not support
// static-creds semantics" and never schedule another read (computePostSyncHorizon
// returns 0).
func (r *vsoReplay) read() (map[string]any, vsoStaticCredsMeta) {
	r.t.Helper()
	s, err := r.c.Logical().Read(r.path)
	r.reads++
	if err != nil || s == nil {
		r.e.fatalf("read %s: %s", r.path, brief(err))
	}
	meta, err := vsoStaticMeta(s.Data)
	if err != nil || !meta.static() {
		r.e.fatalf("VSO would not take %s for static credentials (%+v, %v)", r.path, meta, err)
	}
	return s.Data, meta
}

// mac is the HMAC of the Secret's data less the static-creds metadata
// (staticTransOpt excludes ttl, rotation_schedule, rotation_period,
// last_vault_rotation and _raw; helpers.HandleSecretHMAC).
func (r *vsoReplay) macOf(data map[string]any) []byte {
	d := vsoData(data)
	for _, k := range []string{"ttl", "rotation_schedule", "rotation_period", "last_vault_rotation", "_raw"} {
		delete(d, k)
	}
	b, err := json.Marshal(d)
	if err != nil {
		r.t.Fatal(err)
	}
	h := hmac.New(sha256.New, r.key)
	h.Write(b)
	return h.Sum(nil)
}

// reconcile is one Reconcile of the VaultDynamicSecret (its sync): it returns
// when the next is due.
func (r *vsoReplay) reconcile(ctx context.Context) time.Duration {
	r.t.Helper()
	data, meta := r.read()
	if r.rules.pollAlways && r.mac != nil && meta.LastVaultRotation == r.status.LastVaultRotation && meta.TTL <= 2 {
		data, meta = r.awaitRotation(ctx, meta)
	}
	mac := r.macOf(data)
	tok, _ := data["access_token"].(string)
	changed := !hmac.Equal(mac, r.mac)
	if changed == (tok == r.token) {
		r.e.errorf("data changed: %t, access_token changed: %t: a restart must come with a new token, and only then", changed, tok != r.token)
	}
	now := time.Now()
	switch {
	case changed:
		// syncSecret: a new HMAC syncs the Secret and stores the metadata;
		// Reconcile then restarts the targets (doRolloutRestart = updated),
		// the first sync included.
		if r.token != "" && now.After(r.expire) {
			r.late = max(r.late, now.Sub(r.expire))
		}
		r.status, r.mac, r.token = meta, mac, tok
		exp, _ := data["expire_time"].(string)
		var err error
		if r.expire, err = time.Parse(time.RFC3339, exp); err != nil {
			r.e.fatalf("expire_time %q: %v", exp, err)
		}
		r.syncs = append(r.syncs, vsoSync{at: now, token: tok, reads: r.reads})
		r.reads = 0
	case r.rules.everyTTL:
		r.status = meta
	}
	// computePostSyncHorizon: the status' ttl + 0.5 s (when it has a
	// rotation_period), or 1 s for a ttl of 0, plus jitter.
	h := time.Second
	if r.status.TTL > 0 {
		h = time.Duration(r.status.TTL) * time.Second
		if r.status.RotationPeriod > 0 {
			h += 500 * time.Millisecond
		}
	}
	return h + mathrand.N(vsoJitter)
}

// awaitRotation polls as awaitVaultSecretRotation does, with
// cenkalti/backoff/v4's exponential backoff (first try at once, then 0.5 s
// growing 1.5 times, each ±50 %, MaxInterval 2 s, MaxElapsedTime 10 s), while
// last_vault_rotation is that of the first answer and ttl <= 2.
func (r *vsoReplay) awaitRotation(ctx context.Context, first vsoStaticCredsMeta) (map[string]any, vsoStaticCredsMeta) {
	r.t.Helper()
	start, interval := time.Now(), 500*time.Millisecond
	for {
		data, meta := r.read()
		if meta.LastVaultRotation != first.LastVaultRotation || meta.TTL > 2 {
			return data, meta
		}
		wait := interval/2 + mathrand.N(interval)
		if time.Since(start)+wait > 10*time.Second {
			r.e.fatalf("polled %s for 10 s, and it still answers the token of the last sync with ttl %d: VSO fails the sync",
				r.path, meta.TTL)
		}
		r.wait(ctx, wait)
		interval = min(interval*3/2, 2*time.Second)
	}
}

// wait waits d, failing the test if its deadline comes first.
func (r *vsoReplay) wait(ctx context.Context, d time.Duration) {
	r.t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
		r.e.fatalf("deadline: %d syncs in %s, want %d", len(r.syncs), vsoDeadline, 1+vsoRotations)
	}
}

// TestVSOStaticCredsReplay: the replayed operator reads
// iadvize/static-creds/crm-sync over three rotations of 20 s tokens (the plugin
// logs in 12 s after each login), as VSO's documentation describes it and as VSO's code
// does. Under both, every answer is static credentials; the targets are
// restarted exactly once per new access_token and never in between (the first
// sync restarts them too, as the controller does, and is counted apart), in
// the order the fake issued the tokens, at most one token being replaced
// before the operator saw it; each rotation costs a few reads (maxReads).
// Under VSO's documented rules, which re-read at each answer's ttl and poll, the
// Secret never holds an expired token. The controller re-reads at the ttl of
// the read that got the token and does not poll: when its read comes before
// the rotation (ttl + 0.5 s can fall half a second early), the next one is a
// whole rotation period later, past the token's expiry with these 20 s tokens
// (by 3 to 4 s, measured against expire_time, which is whole seconds). In
// production the plugin's background refresh logs in from 3 minutes before
// ttl runs out, so that read gets the new token; Vault runs it once a minute,
// too seldom to do so at this time scale, so the test reports how late the
// Secret was, without failing on it.
func TestVSOStaticCredsReplay(t *testing.T) {
	t.Parallel()
	for _, rules := range []vsoRules{
		{name: "spec", everyTTL: true, pollAlways: true, maxReads: 5, fresh: true},
		{name: "controller", maxReads: 3},
	} {
		t.Run(rules.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, fakeiadvize.Options{TokenLifetime: vsoTokenLifetime}, vaulttest.Options{})
			e.configure(map[string]any{"refresh_before": vsoRefreshBefore})
			e.addRole("crm-sync", "svc-vso-"+rules.name)
			r := &vsoReplay{
				t: t, e: e, rules: rules, path: "iadvize/static-creds/crm-sync",
				c:   e.policyClient("crm-sync", "crm-sync.hcl", false),
				key: make([]byte, 32),
			}
			_, _ = rand.Read(r.key)

			ctx := vaulttest.Context(t, vsoDeadline)
			for len(r.syncs) < 1+vsoRotations {
				r.wait(ctx, r.reconcile(ctx))
			}
			if now := time.Now(); now.After(r.expire) {
				r.late = max(r.late, now.Sub(r.expire))
			}

			issued := e.up.tokens()
			index := map[string]int{}
			for i, tok := range issued {
				index[tok] = i
			}
			last, skipped := -1, 0
			var reads []int
			for i, s := range r.syncs {
				n, ok := index[s.token]
				switch {
				case !ok:
					t.Errorf("sync %d: the token is not one the fake issued", i)
				case n <= last:
					t.Errorf("sync %d: token #%d after token #%d: a token restarted twice, or an older one", i, n+1, last+1)
				default:
					skipped += n - last - 1
				}
				last = n
				if i > 0 {
					reads = append(reads, s.reads)
					if s.reads > rules.maxReads {
						t.Errorf("rotation %d took %d reads, want at most %d", i, s.reads, rules.maxReads)
					}
				}
			}
			if skipped > 1 {
				t.Errorf("%d tokens were replaced before the operator saw them, want at most 1", skipped)
			}
			if rules.fresh && r.late > 0 {
				t.Errorf("the Secret held an expired token for %s", r.late.Round(time.Millisecond))
			}
			if err := e.up.noFailures(); err != nil {
				t.Error(err)
			}
			e.logf("%s rules: %d restarts for %d rotations (plus the first sync's), reads per rotation %v, "+
				"%d of %d issued tokens never synced, Secret held an expired token for up to %s",
				rules.name, len(r.syncs)-1, vsoRotations, reads, skipped, len(issued), r.late.Round(time.Millisecond))
		})
	}
}

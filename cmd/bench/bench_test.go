package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"

	iadvize "github.com/iadvize/vault-plugin-secrets-iadvize"
	"github.com/iadvize/vault-plugin-secrets-iadvize/cmd/bench/noopbackend"
)

// The in-process benchmarks of the report's profile section: the plugin's
// backend (sdk framework, logical.InmemStorage) without Vault and without the
// gRPC hop. `make bench` runs them; by hand:
//
//	go test -run '^$' -bench . -benchmem ./cmd/bench/

// benchStorage is logical.InmemStorage that counts operations and, on demand,
// drops token writes (so that the heap measured is the plugin's, not the
// storage's copy).
type benchStorage struct {
	logical.InmemStorage
	dropTokens atomic.Bool
	ops        atomic.Int64
}

func (s *benchStorage) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	s.ops.Add(1)
	return s.InmemStorage.Get(ctx, key)
}

func (s *benchStorage) Put(ctx context.Context, e *logical.StorageEntry) error {
	if s.ops.Add(1); s.dropTokens.Load() && strings.HasPrefix(e.Key, "tokens/") {
		return nil
	}
	return s.InmemStorage.Put(ctx, e)
}

func (s *benchStorage) List(ctx context.Context, prefix string) ([]string, error) {
	s.ops.Add(1)
	return s.InmemStorage.List(ctx, prefix)
}

// mount is one in-process mount of the plugin or of the do-nothing plugin.
type mount struct {
	b           logical.Backend
	storage     *benchStorage
	logins      atomic.Int64 // at the upstream
	heapPerRole int64        // when measured
	close       func()
}

// newMount mounts the plugin against an in-process upstream that answers
// every login at once and keeps nothing (so that the heap growth over the
// first reads is the plugin's alone: heapPerRole, when measureHeap), with
// roles r0..r{roles-1} each read once.
func newMount(tb testing.TB, roles int, measureHeap bool) *mount {
	m := &mount{storage: &benchStorage{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		m.logins.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": fmt.Sprintf("%043d", rand.Int64()), "expires_in": 86400, "token_type": "Bearer"})
	}))
	m.close = srv.Close // left open in benchmarks: the mounts live as long as the process
	var err error
	m.b, err = iadvize.Factory(context.Background(), &logical.BackendConfig{Logger: hclog.NewNullLogger(), StorageView: m.storage,
		System: &logical.StaticSystemView{DefaultLeaseTTLVal: 768 * time.Hour, MaxLeaseTTLVal: 768 * time.Hour}})
	must(tb, err)
	must(tb, m.handle(logical.CreateOperation, "config", map[string]any{"token_url": srv.URL + "/oauth2/token", "verify_url": srv.URL + "/_authenticated",
		"logins_per_minute": 1_000_000, "user_logins_per_minute": 10}))
	for i := range roles {
		must(tb, m.handle(logical.CreateOperation, fmt.Sprintf("roles/r%d", i), map[string]any{"username": fmt.Sprintf("svc-r%d", i), "password": "pw"}))
	}
	h0 := liveHeap()
	m.storage.dropTokens.Store(measureHeap)
	for i := range roles {
		must(tb, m.handle(logical.ReadOperation, fmt.Sprintf("static-creds/r%d", i), nil))
	}
	m.storage.dropTokens.Store(false)
	if measureHeap {
		m.heapPerRole = (liveHeap() - h0) / int64(roles)
	}
	return m
}

func (m *mount) handle(op logical.Operation, path string, data map[string]any) error {
	resp, err := m.b.HandleRequest(context.Background(), &logical.Request{Operation: op, Path: path, Data: data, Storage: m.storage})
	if err == nil && ((resp == nil && op == logical.ReadOperation) || (resp != nil && resp.IsError())) {
		err = fmt.Errorf("%s %s: %v", op, path, resp)
	}
	return err
}

// readOnce is one benchmark read; profiles focus on it.
func readOnce(m *mount, path string) error { return m.handle(logical.ReadOperation, path, nil) }

// mounts are the benchmarks' mounts, built by the first benchmark that needs
// one (benchmarks run one at a time).
var mounts = map[int]*mount{}

func mountOf(tb testing.TB, roles int) *mount {
	if mounts[roles] == nil {
		mounts[roles] = newMount(tb, roles, roles == bigRoles)
	}
	return mounts[roles]
}

// BenchmarkRead reads a cached token: of one role, of a random role among n,
// or from 64 goroutines; noop is the do-nothing backend's read.
func BenchmarkRead(b *testing.B) {
	mounts[0] = &mount{storage: &benchStorage{}} // the do-nothing backend
	mounts[0].b, _ = noopbackend.Factory(context.Background(), &logical.BackendConfig{Logger: hclog.NewNullLogger(), System: &logical.StaticSystemView{}, StorageView: mounts[0].storage})
	for round := range *readRounds {
		for i := range benchCases {
			c := benchCases[(i+round)%len(benchCases)]
			b.Run(c.name, c.run)
		}
	}
}

// rounds of BenchmarkRead: every sub-benchmark once per round, the first one
// rotating; the second run of "creds" is named "creds#01", and so on.
var readRounds = flag.Int("rounds", 1, "rounds of BenchmarkRead")

func (c benchCase) run(b *testing.B) {
	m := mountOf(b, c.mount)
	ops := m.storage.ops.Load()
	b.ReportAllocs()
	paths := make([]string, 1024)
	for i := range paths {
		paths[i] = fmt.Sprintf("%sr%d", c.prefix, rand.IntN(c.roles))
		if c.par > 0 {
			paths[i] = fmt.Sprintf("%sr%d", c.prefix, i%c.roles)
		}
	}
	if c.par == 0 {
		for i := 0; b.Loop(); i++ {
			if err := readOnce(m, paths[i&1023]); err != nil {
				b.Fatal(err)
			}
		}
	} else {
		// Paths built beforehand: a Sprintf in every goroutine would
		// show up as contention of its own.
		b.SetParallelism(c.par / runtime.GOMAXPROCS(0))
		var id atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			path := paths[id.Add(1)-1]
			for pb.Next() {
				if err := readOnce(m, path); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	b.ReportMetric(float64(m.storage.ops.Load()-ops), "storage-ops")
	if m.heapPerRole > 0 {
		b.ReportMetric(float64(m.heapPerRole), "heap-B/role")
	}
}

func TestCachedReadsTouchNeitherStorageNorUpstream(t *testing.T) {
	m := newMount(t, 3, false)
	defer m.close()
	before, logins := m.storage.ops.Load(), m.logins.Load()
	for range 100 {
		for _, p := range []string{"creds/r0", "static-creds/r1", "creds/r2"} {
			if err := readOnce(m, p); err != nil {
				t.Fatal(err)
			}
		}
	}
	if ops := m.storage.ops.Load() - before; ops != 0 {
		t.Errorf("cached reads made %d storage operations", ops)
	}
	if n := m.logins.Load() - logins; n != 0 {
		t.Errorf("cached reads logged in %d times", n)
	}
}

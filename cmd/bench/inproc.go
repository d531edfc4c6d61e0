package main

import (
	"context"
	crand "crypto/rand"
	"encoding/base64"
	"encoding/json"
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
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
)

// benchStorage is the in-process mounts' storage: logical.InmemStorage that
// counts operations and, on demand, hides the role list (to write many roles
// without each write reading all the others) or forgets cached tokens (to
// measure the plugin's own memory, not the storage's copy).
type benchStorage struct {
	logical.InmemStorage
	hideRoles, dropTokens atomic.Bool
	ops                   atomic.Int64
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
	if s.ops.Add(1); s.hideRoles.Load() && prefix == "roles/" {
		return nil, nil
	}
	return s.InmemStorage.List(ctx, prefix)
}

// inproc is one mount of the plugin (or of the do-nothing plugin) in this
// process: the backend Vault would talk to over gRPC, without Vault.
type inproc struct {
	b       logical.Backend
	storage *benchStorage
	fake    *fakeiadvize.Server
	close   func()
	// heapPerRole is the heap a role holding a token takes (stateless
	// upstream only): live heap after GC, Δ over reading every role once.
	heapPerRole int64
}

// newInproc builds a mount of the plugin pointed at an in-process fake
// upstream (no limits, instant logins) with roles r0..r{roles-1}, each read
// once so that it holds a token. With stateless set, the upstream is one that
// keeps nothing (so the heap growth is the plugin's) and fake is nil.
func newInproc(roles int, stateless bool) (*inproc, error) {
	f := fakeiadvize.New(fakeiadvize.Options{UserLoginsPerMinute: -1, IPLoginsPerMinute: -1})
	var h http.Handler = f
	if stateless {
		f, h = nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{"access_token": token(), "expires_in": 86400, "token_type": "Bearer"})
		})
	}
	srv := httptest.NewServer(h)
	ip := &inproc{storage: &benchStorage{}, fake: f, close: srv.Close}
	b, err := iadvize.Factory(context.Background(), &logical.BackendConfig{
		Logger:      hclog.NewNullLogger(),
		System:      &logical.StaticSystemView{DefaultLeaseTTLVal: 768 * time.Hour, MaxLeaseTTLVal: 768 * time.Hour},
		StorageView: ip.storage,
	})
	if err == nil {
		ip.b = b
		err = ip.handle(logical.CreateOperation, "config", map[string]any{"token_url": srv.URL + "/oauth2/token", "verify_url": srv.URL + "/_authenticated",
			"logins_per_minute": 1_000_000, "user_logins_per_minute": 10})
	}
	// The role list is hidden meanwhile: writing a role reads every other role.
	ip.storage.hideRoles.Store(true)
	for i := 0; i < roles && err == nil; i++ {
		user, pass := fmt.Sprintf("svc-r%d@bench.example", i), fmt.Sprintf("pw-r%d", i)
		if f != nil {
			f.AddUser(user, pass)
		}
		err = ip.handle(logical.CreateOperation, fmt.Sprintf("roles/r%d", i), map[string]any{"username": user, "password": pass})
	}
	ip.storage.hideRoles.Store(false)
	h0 := liveHeap()
	ip.storage.dropTokens.Store(stateless)
	for i := 0; i < roles && err == nil; i++ {
		err = ip.handle(logical.ReadOperation, fmt.Sprintf("static-creds/r%d", i), nil)
	}
	ip.storage.dropTokens.Store(false)
	if stateless && roles > 0 {
		ip.heapPerRole = (liveHeap() - h0) / int64(roles)
	}
	if err != nil {
		ip.close()
	}
	return ip, err
}

func (ip *inproc) handle(op logical.Operation, path string, data map[string]any) error {
	resp, err := ip.b.HandleRequest(context.Background(), &logical.Request{Operation: op, Path: path, Data: data, Storage: ip.storage})
	if err == nil && (resp == nil && op == logical.ReadOperation || resp != nil && resp.IsError()) {
		err = fmt.Errorf("%v", resp)
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, path, err)
	}
	return nil
}

// token is an access token as the fake upstream's: 32 random bytes, base64url.
func token() string {
	raw := make([]byte, 32)
	_, _ = crand.Read(raw)
	return base64.RawURLEncoding.EncodeToString(raw)
}

// newNoopInproc is a mount of the do-nothing plugin in this process.
func newNoopInproc() (*inproc, error) {
	storage := &benchStorage{}
	b, err := noopbackend.Factory(context.Background(), &logical.BackendConfig{
		Logger: hclog.NewNullLogger(), System: &logical.StaticSystemView{}, StorageView: storage,
	})
	return &inproc{b: b, storage: storage, close: func() {}}, err
}

// liveHeap is this process's heap after a garbage collection.
func liveHeap() int64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// readBench is a benchmark of reads of prefix + "r0", or, when n > 1, of a
// random one of prefix + "r0".."r{n-1}" (drawn beforehand, outside the timing).
func readBench(ip *inproc, prefix string, n int) func(*testing.B) {
	return func(b *testing.B) {
		b.ReportAllocs()
		order := make([]string, 1024)
		for i := range order {
			order[i] = fmt.Sprintf("%sr%d", prefix, rand.IntN(n))
		}
		ctx := context.Background()
		for i := 0; b.Loop(); i++ {
			resp, err := ip.b.HandleRequest(ctx, &logical.Request{Operation: logical.ReadOperation, Path: order[i&1023], Storage: ip.storage})
			if err != nil || resp == nil || resp.IsError() {
				b.Fatalf("read failed: %v %v", err, resp)
			}
		}
	}
}

// parallelReadBench reads from b.RunParallel's goroutines (parallelism ×
// GOMAXPROCS of them): all on role r0 when spread is false, else each on its
// own role. Paths are built beforehand: a fmt.Sprintf in every goroutine at
// once would show up as contention of its own.
func parallelReadBench(ip *inproc, prefix string, parallelism int, spread bool) func(*testing.B) {
	paths := make([]string, parallelism*runtime.GOMAXPROCS(0))
	for i := range paths {
		paths[i] = prefix + "r0"
		if spread {
			paths[i] = fmt.Sprintf("%sr%d", prefix, i)
		}
	}
	return func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(parallelism)
		var id atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			path := paths[int(id.Add(1)-1)%len(paths)]
			for pb.Next() {
				resp, err := ip.b.HandleRequest(context.Background(), &logical.Request{Operation: logical.ReadOperation, Path: path, Storage: ip.storage})
				if err != nil || resp == nil || resp.IsError() {
					b.Errorf("read %s failed: %v %v", path, err, resp)
					return
				}
			}
		})
	}
}

// inprocCase is one in-process benchmark, of the report and of `go test -bench`.
type inprocCase struct {
	name, short string // the report's row, the sub-benchmark's name
	f           func(*testing.B)
}

// noopCase is the index of the do-nothing backend's case.
const noopCase = 2

// inprocCases are the benchmarks on a mount of 64 roles, the do-nothing
// backend, and a mount of roles roles.
func inprocCases(small, noop, big *inproc, roles int) []inprocCase {
	return []inprocCase{
		{"creds/ (one role)", "creds", readBench(small, "creds/", 1)},
		{"static-creds/ (one role)", "static-creds", readBench(small, "static-creds/", 1)},
		{"noop data/ (do-nothing backend)", "noop", readBench(noop, "data/", 1)},
		{"static-creds/, random of 10 roles", "static-creds-10-roles", readBench(big, "static-creds/", 10)},
		{fmt.Sprintf("static-creds/, random of %s roles", fmtInt(roles)), fmt.Sprintf("static-creds-%d-roles", roles), readBench(big, "static-creds/", roles)},
		{"creds/, 64 goroutines on one role", "parallel-creds-one-role", parallelReadBench(small, "creds/", 32, false)},
		{"creds/, 64 goroutines on 64 roles", "parallel-creds-64-roles", parallelReadBench(small, "creds/", 32, true)},
	}
}

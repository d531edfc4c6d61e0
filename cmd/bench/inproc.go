package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
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
	hideRoles  atomic.Bool
	dropTokens atomic.Bool
	gets       atomic.Int64
	puts       atomic.Int64
	lists      atomic.Int64
}

func (s *benchStorage) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	s.gets.Add(1)
	return s.InmemStorage.Get(ctx, key)
}

func (s *benchStorage) Put(ctx context.Context, e *logical.StorageEntry) error {
	s.puts.Add(1)
	if s.dropTokens.Load() && strings.HasPrefix(e.Key, "tokens/") {
		return nil
	}
	return s.InmemStorage.Put(ctx, e)
}

func (s *benchStorage) List(ctx context.Context, prefix string) ([]string, error) {
	s.lists.Add(1)
	if s.hideRoles.Load() && prefix == "roles/" {
		return nil, nil
	}
	return s.InmemStorage.List(ctx, prefix)
}

func (s *benchStorage) ops() int64 { return s.gets.Load() + s.puts.Load() + s.lists.Load() }

// inproc is one mount of the plugin (or of the do-nothing plugin) in this
// process: the backend Vault would talk to over gRPC, without Vault.
type inproc struct {
	b       logical.Backend
	storage *benchStorage
	fake    *fakeiadvize.Server
	close   func()
}

// newInproc builds a mount of the plugin pointed at an in-process fake
// upstream (no limits, instant logins) with roles r0..r{roles-1}, each read
// once so that it holds a token.
func newInproc(roles int) (*inproc, error) {
	f := fakeiadvize.New(fakeiadvize.Options{UserLoginsPerMinute: -1, IPLoginsPerMinute: -1})
	srv := httptest.NewServer(f)
	ip := &inproc{storage: &benchStorage{}, fake: f, close: func() { f.Close(); srv.Close() }}
	b, err := iadvize.Factory(context.Background(), &logical.BackendConfig{
		Logger:      hclog.New(&hclog.LoggerOptions{Output: io.Discard, Level: hclog.Error}),
		System:      &logical.StaticSystemView{DefaultLeaseTTLVal: 768 * time.Hour, MaxLeaseTTLVal: 768 * time.Hour},
		StorageView: ip.storage,
	})
	if err != nil {
		ip.close()
		return nil, err
	}
	ip.b = b
	if err := ip.write("config", map[string]any{
		"token_url": srv.URL + "/oauth2/token", "verify_url": srv.URL + "/_authenticated",
		"logins_per_minute": 1_000_000, "user_logins_per_minute": 10,
	}); err != nil {
		ip.close()
		return nil, err
	}
	if err := ip.addRoles(0, roles); err != nil {
		ip.close()
		return nil, err
	}
	return ip, nil
}

// addRoles creates roles r{from}..r{to-1} and reads each once. The role list
// is hidden meanwhile: writing a role reads every other role (see the report).
func (ip *inproc) addRoles(from, to int) error {
	ip.storage.hideRoles.Store(true)
	defer ip.storage.hideRoles.Store(false)
	for i := from; i < to; i++ {
		name := fmt.Sprintf("r%d", i)
		user, pass := "svc-"+name+"@bench.example", "pw-"+name
		ip.fake.AddUser(user, pass)
		if err := ip.write("roles/"+name, map[string]any{"username": user, "password": pass}); err != nil {
			return err
		}
	}
	for i := from; i < to; i++ {
		if _, err := ip.read(fmt.Sprintf("static-creds/r%d", i)); err != nil {
			return err
		}
	}
	return nil
}

func (ip *inproc) write(path string, data map[string]any) error {
	op := logical.CreateOperation
	req := &logical.Request{Operation: logical.UpdateOperation, Path: path, Data: data, Storage: ip.storage}
	if _, exists, err := ip.b.HandleExistenceCheck(context.Background(), req); err == nil && exists {
		op = logical.UpdateOperation
	}
	req.Operation = op
	resp, err := ip.b.HandleRequest(context.Background(), req)
	if err == nil && resp != nil && resp.IsError() {
		err = resp.Error()
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func (ip *inproc) read(path string) (*logical.Response, error) {
	resp, err := ip.b.HandleRequest(context.Background(), &logical.Request{
		Operation: logical.ReadOperation, Path: path, Storage: ip.storage,
	})
	if err == nil && (resp == nil || resp.IsError()) {
		err = fmt.Errorf("read %s: %v", path, resp)
	}
	return resp, err
}

// newNoopInproc is a mount of the do-nothing plugin in this process.
func newNoopInproc() (*inproc, error) {
	storage := &benchStorage{}
	b, err := noopbackend.Factory(context.Background(), &logical.BackendConfig{
		Logger:      hclog.NewNullLogger(),
		System:      &logical.StaticSystemView{},
		StorageView: storage,
	})
	if err != nil {
		return nil, err
	}
	return &inproc{b: b, storage: storage, close: func() {}}, nil
}

// readBench is a benchmark of reads of one path, or, when n > 1, of a random
// one of prefix + "r0".."r{n-1}".
func readBench(ip *inproc, prefix string, n int) func(*testing.B) {
	paths := make([]string, max(n, 1))
	for i := range paths {
		paths[i] = fmt.Sprintf("%sr%d", prefix, i)
	}
	if n <= 1 {
		paths = []string{prefix + "r0"}
	}
	return func(b *testing.B) {
		b.ReportAllocs()
		ctx := context.Background()
		rng := rand.New(rand.NewPCG(1, 2))
		// The paths a read will use are drawn beforehand, outside the timing.
		order := make([]string, 1024)
		for i := range order {
			order[i] = paths[rng.IntN(len(paths))]
		}
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			resp, err := ip.b.HandleRequest(ctx, &logical.Request{
				Operation: logical.ReadOperation, Path: order[i&1023], Storage: ip.storage,
			})
			if err != nil || resp == nil || resp.IsError() {
				b.Fatalf("read failed: %v %v", err, resp)
			}
		}
	}
}

// parallelReadBench reads from b.RunParallel's goroutines (parallelism × GOMAXPROCS
// of them): all on role r0 when spread is false, else each on its own role.
func parallelReadBench(ip *inproc, prefix string, parallelism int, spread bool) func(*testing.B) {
	// Paths are built here: a fmt.Sprintf in every goroutine at once would show
	// up as contention of its own.
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
			ctx := context.Background()
			for pb.Next() {
				resp, err := ip.b.HandleRequest(ctx, &logical.Request{
					Operation: logical.ReadOperation, Path: path, Storage: ip.storage,
				})
				if err != nil || resp == nil || resp.IsError() {
					b.Errorf("read %s failed: %v %v", path, err, resp)
					return
				}
			}
		})
	}
}

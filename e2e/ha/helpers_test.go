package ha

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/vaulttest"
)

const (
	mountPath = "iadvize"
	roleName  = "app"
	// The service user the role logs in as, at the fake.
	upstreamUser     = "svc-ha"
	upstreamPassword = "ha-test-password"

	// performanceMultiplier: raft timing for the tests. 1 is the production
	// value; 2 keeps a busy 2-core machine (other packages' tests run at the same
	// time) from missing heartbeats and electing a new leader nobody asked for.
	performanceMultiplier = 2
	// readTimeout bounds one read of a test client, so a reader stuck on a dead
	// node is noticed as a failure rather than a pause.
	readTimeout = 15 * time.Second
)

// env is one test's world: a three-node raft cluster with the plugin mounted at
// iadvize/, the fake upstream, and a role pointed at it.
type env struct {
	t       *testing.T
	cluster *vaulttest.Cluster
	fake    *fakeiadvize.Server
	url     string

	mu      sync.Mutex
	clients map[*vaulttest.Node]*api.Client
}

// skipUnlessE2E skips in -short mode and when no Vault binary can be had, before
// anything is built or started.
func skipUnlessE2E(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end (HA cluster)")
	}
	vaulttest.VaultBin(t)
}

// newEnv starts the fake and the cluster, registers the plugin once (with the
// sha256 every node's copy has), mounts it, writes the config (plus extra
// settings) and the role, through the active node.
func newEnv(t *testing.T, config map[string]any) *env {
	t.Helper()
	skipUnlessE2E(t)
	fake := fakeiadvize.New(fakeiadvize.Options{})
	fake.AddUser(upstreamUser, upstreamPassword)
	ts := httptest.NewServer(fake)
	t.Cleanup(ts.Close)
	t.Cleanup(fake.Close) // first: releases requests held by the hang fault

	c := vaulttest.StartCluster(t, vaulttest.ClusterOptions{
		Nodes:                 3,
		PerformanceMultiplier: performanceMultiplier,
		StabilizationTime:     2 * time.Second,
		AutopilotInterval:     time.Second,
	})
	c.RegisterPlugin()
	c.Mount(mountPath)
	e := &env{t: t, cluster: c, fake: fake, url: ts.URL}
	cfg := map[string]any{
		"token_url":  ts.URL + "/oauth2/token",
		"verify_url": ts.URL + "/_authenticated",
	}
	for k, v := range config {
		cfg[k] = v
	}
	e.write(e.active(), mountPath+"/config", cfg)
	e.write(e.active(), mountPath+"/roles/"+roleName, map[string]any{
		"username": upstreamUser, "password": upstreamPassword,
	})
	return e
}

// active waits for the active node and returns it.
func (e *env) active() *vaulttest.Node {
	e.t.Helper()
	return e.cluster.WaitActive(2*time.Minute, nil)
}

// client is the client pinned to node n: no redirect, no retry, no other
// address. One per node, reused.
func (e *env) client(n *vaulttest.Node) *api.Client {
	e.mu.Lock()
	defer e.mu.Unlock()
	if c := e.clients[n]; c != nil {
		return c
	}
	if e.clients == nil {
		e.clients = map[*vaulttest.Node]*api.Client{}
	}
	c := n.PinnedClient(e.cluster.RootToken, readTimeout)
	e.clients[n] = c
	return c
}

func (e *env) write(n *vaulttest.Node, path string, data map[string]any) *api.Secret {
	e.t.Helper()
	s, err := e.client(n).Logical().Write(path, data)
	if err != nil {
		e.t.Fatalf("write %s through %s: %v", path, n.ID, err)
	}
	return s
}

func (e *env) read(n *vaulttest.Node, path string) *api.Secret {
	e.t.Helper()
	s, err := e.client(n).Logical().Read(path)
	if err != nil {
		e.t.Fatalf("read %s through %s: %v", path, n.ID, err)
	}
	if s == nil {
		e.t.Fatalf("read %s through %s: nothing there", path, n.ID)
	}
	return s
}

// token reads creds/<role> through node n and returns the access token. The
// token is only ever compared, never logged (see fp).
func (e *env) token(n *vaulttest.Node) string {
	e.t.Helper()
	tok, err := readToken(context.Background(), e.client(n), "creds/"+roleName)
	if err != nil {
		e.t.Fatalf("read creds through %s: %v", n.ID, err)
	}
	return tok
}

// readToken reads creds/ or static-creds/ and returns access_token.
func readToken(ctx context.Context, c *api.Client, path string) (string, error) {
	s, err := c.Logical().ReadWithContext(ctx, mountPath+"/"+path)
	if err != nil {
		return "", err
	}
	if s == nil || s.Data == nil {
		return "", errors.New("empty answer")
	}
	tok, _ := s.Data["access_token"].(string)
	if tok == "" {
		return "", errors.New("no access_token in the answer")
	}
	return tok, nil
}

// fp is a token's fingerprint for messages: never print a token itself.
func fp(tok string) string {
	if tok == "" {
		return "<none>"
	}
	sum := sha256.Sum256([]byte(tok))
	return "sha256:" + hex.EncodeToString(sum[:4])
}

// logins is the number of login attempts the fake has seen.
func (e *env) logins() int { return e.fake.Stats().LoginAttempts }

// wantLogins fails unless the fake has seen exactly want login attempts, all
// successful.
func (e *env) wantLogins(want int, when string) {
	e.t.Helper()
	st := e.fake.Stats()
	if st.LoginAttempts != want || st.LoginSuccesses != want {
		e.t.Fatalf("%s: fake saw %d login attempts (%d successful), want %d", when, st.LoginAttempts, st.LoginSuccesses, want)
	}
}

// status reads status/<role> through n.
func (e *env) status(n *vaulttest.Node) map[string]any {
	e.t.Helper()
	return e.read(n, mountPath+"/status/"+roleName).Data
}

// otherThan returns the nodes of ns other than not.
func otherThan(ns []*vaulttest.Node, not *vaulttest.Node) []*vaulttest.Node {
	var out []*vaulttest.Node
	for _, n := range ns {
		if n != not {
			out = append(out, n)
		}
	}
	return out
}

// mustBeStandby fails unless n answers as a standby: a read through it is then
// forwarded by it, not served by an active node.
func mustBeStandby(t *testing.T, n *vaulttest.Node) {
	t.Helper()
	if !n.IsStandby() {
		t.Fatalf("%s (%s) is not a standby", n.ID, n.Addr)
	}
	l, err := n.Client.Sys().Leader()
	if err != nil {
		t.Fatalf("%s: sys/leader: %v", n.ID, err)
	}
	if l.IsSelf || l.LeaderAddress == n.Addr {
		t.Fatalf("%s calls itself the leader", n.ID)
	}
}

// readEvent is one read of a continuous reader.
type readEvent struct {
	node       string
	start, end time.Time
	token      string // "" on failure
	err        error
}

// readers read a path continuously through given nodes and record every answer.
type readers struct {
	t     *testing.T
	e     *env
	path  string
	every time.Duration

	mu     sync.Mutex
	events []readEvent
	order  map[string]int // token -> rank of its first appearance
	tokens []string       // in order of first appearance
	stops  map[string]context.CancelFunc
	wg     sync.WaitGroup
}

func newReaders(t *testing.T, e *env, path string, every time.Duration) *readers {
	r := &readers{t: t, e: e, path: path, every: every, order: map[string]int{}, stops: map[string]context.CancelFunc{}}
	t.Cleanup(r.stopAll)
	return r
}

// start begins reading through n (a client pinned to it) until stop(id); the
// reads are recorded under id.
func (r *readers) start(n *vaulttest.Node, id string) {
	r.t.Helper()
	client := r.e.client(n)
	ctx, cancel := context.WithCancel(context.Background())
	r.mu.Lock()
	r.stops[id] = cancel
	r.mu.Unlock()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		tick := time.NewTicker(r.every)
		defer tick.Stop()
		for {
			start := time.Now()
			tok, err := readToken(ctx, client, r.path)
			if ctx.Err() != nil {
				return // stopped: the read was cut short by us, not by the cluster
			}
			r.record(readEvent{node: id, start: start, end: time.Now(), token: tok, err: err})
			select {
			case <-ctx.Done():
				return
			case <-tick.C: // pacing, so three readers do not saturate two cores
			}
		}
	}()
}

func (r *readers) record(ev readEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
	if ev.err == nil {
		if _, ok := r.order[ev.token]; !ok {
			r.order[ev.token] = len(r.tokens)
			r.tokens = append(r.tokens, ev.token)
		}
	}
}

// stop ends the reader id; its in-flight read is abandoned, not recorded.
func (r *readers) stop(id string) {
	r.mu.Lock()
	cancel := r.stops[id]
	delete(r.stops, id)
	r.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

func (r *readers) stopAll() {
	r.mu.Lock()
	for id, cancel := range r.stops {
		cancel()
		delete(r.stops, id)
	}
	r.mu.Unlock()
	r.wg.Wait()
}

// distinct is the number of different tokens served so far.
func (r *readers) distinct() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.tokens)
}

// waitDistinct waits until n different tokens have been served.
func (r *readers) waitDistinct(n int, timeout time.Duration) {
	r.t.Helper()
	vaulttest.WaitFor(r.t, timeout, fmt.Sprintf("%d distinct tokens served", n), func() error {
		if d := r.distinct(); d < n {
			return fmt.Errorf("%d so far", d)
		}
		return nil
	})
}

// waitServedBy waits until reader id has been served the token of rank at least rank.
func (r *readers) waitServedBy(id string, rank int, timeout time.Duration) {
	r.t.Helper()
	vaulttest.WaitFor(r.t, timeout, fmt.Sprintf("%s serving token #%d", id, rank+1), func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, ev := range r.events {
			if ev.node == id && ev.err == nil && r.order[ev.token] >= rank {
				return nil
			}
		}
		return errors.New("not yet")
	})
}

// nodeStats summarises one node's reads.
type nodeStats struct {
	reads, failures int
	longestGap      time.Duration // longest time between two successful reads (or first/last read)
	errs            map[string]int
	backwards       int // reads that served an older token than an earlier read of this node
}

func (r *readers) stats() map[string]*nodeStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]*nodeStats{}
	lastOK := map[string]time.Time{}
	lastRank := map[string]int{}
	for _, ev := range r.events {
		s := out[ev.node]
		if s == nil {
			s = &nodeStats{errs: map[string]int{}}
			out[ev.node] = s
			lastOK[ev.node] = ev.start
			lastRank[ev.node] = -1
		}
		s.reads++
		if ev.err != nil {
			s.failures++
			s.errs[shortErr(ev.err)]++
			s.longestGap = max(s.longestGap, ev.end.Sub(lastOK[ev.node]))
			continue
		}
		s.longestGap = max(s.longestGap, ev.end.Sub(lastOK[ev.node]))
		lastOK[ev.node] = ev.end
		rank := r.order[ev.token]
		if rank < lastRank[ev.node] {
			s.backwards++
		}
		lastRank[ev.node] = max(lastRank[ev.node], rank)
	}
	return out
}

// shortErr is the first line of an error without the URL, for a summary.
func shortErr(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, "Errors:"); i >= 0 {
		msg = msg[i+len("Errors:"):]
	}
	msg = strings.Join(strings.Fields(msg), " ")
	if len(msg) > 120 {
		msg = msg[:120] + "..."
	}
	return msg
}

func (s *nodeStats) String() string {
	var errs []string
	for m, n := range s.errs {
		errs = append(errs, fmt.Sprintf("%dx %q", n, m))
	}
	sort.Strings(errs)
	return fmt.Sprintf("%d reads, %d failed, longest stretch without a good read %s; errors: %s",
		s.reads, s.failures, s.longestGap.Round(100*time.Millisecond), strings.Join(errs, ", "))
}

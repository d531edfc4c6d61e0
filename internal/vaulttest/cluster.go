package vaulttest

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"
)

// ClusterOptions describe a Vault HA cluster on integrated storage (raft).
type ClusterOptions struct {
	// Nodes is the number of servers (3 when 0).
	Nodes int
	// PluginBin is the plugin binary copied into every node's plugin directory
	// (PluginBin(t) when empty).
	PluginBin string
	// LogLevel of the servers (default "info").
	LogLevel string
	// PerformanceMultiplier scales raft's timing (heartbeat, election). 1 is the
	// production recommendation and gives the quickest failover; Vault's own
	// default (0, meaning 5) suits slow development machines.
	PerformanceMultiplier int
	// StabilizationTime is autopilot's server_stabilization_time: how long a
	// joined server must be healthy before it is promoted to voter. 0 keeps
	// Vault's default (10 s).
	StabilizationTime time.Duration
	// AutopilotInterval sets the raft stanza's autopilot_reconcile_interval and
	// autopilot_update_interval: how often autopilot refreshes server health and
	// promotes stable servers. 0 keeps Vault's defaults (10 s and 2 s).
	AutopilotInterval time.Duration
}

// Node is one server of a Cluster.
type Node struct {
	*Server
	ID          string // raft node_id, "node1"...
	ClusterPort int
	RaftDir     string
}

// Cluster is a running HA cluster: every node has its own raft directory and its
// own plugin directory holding the same plugin binary.
type Cluster struct {
	t     TB
	Nodes []*Node
	// UnsealKey and RootToken are the throwaway cluster's secrets: never log them.
	UnsealKey string
	RootToken string

	mu     sync.Mutex
	pinned map[*Node]*api.Client // root-token pinned clients, reused
}

// StartCluster starts opts.Nodes servers on 127.0.0.1 with storage "raft",
// initialises the first one, unseals them all (the others join it through
// retry_join) and waits until autopilot reports every node a healthy voter.
// Every client carries the root token. The servers are stopped at cleanup.
func StartCluster(t TB, opts ClusterOptions) *Cluster {
	t.Helper()
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.PluginBin == "" {
		opts.PluginBin = PluginBin(t)
	}
	type ports struct{ api, cluster int }
	ps := make([]ports, opts.Nodes)
	for i := range ps {
		ps[i] = ports{FreePort(t), FreePort(t)}
	}
	c := &Cluster{t: t}
	started := time.Now()
	startNode := func(i int) *Node {
		n := &Node{ID: fmt.Sprintf("node%d", i+1), ClusterPort: ps[i].cluster, RaftDir: t.TempDir()}
		pluginDir := PluginDir(t, opts.PluginBin)
		var b strings.Builder
		fmt.Fprintf(&b, "ui = false\ndisable_mlock = true\n")
		fmt.Fprintf(&b, "api_addr = %q\ncluster_addr = %q\n",
			fmt.Sprintf("http://127.0.0.1:%d", ps[i].api), fmt.Sprintf("https://127.0.0.1:%d", ps[i].cluster))
		fmt.Fprintf(&b, "plugin_directory = %q\n", pluginDir)
		fmt.Fprintf(&b, "storage \"raft\" {\n  path = %q\n  node_id = %q\n", n.RaftDir, n.ID)
		if opts.AutopilotInterval > 0 {
			fmt.Fprintf(&b, "  autopilot_reconcile_interval = %q\n  autopilot_update_interval = %q\n",
				opts.AutopilotInterval.String(), opts.AutopilotInterval.String())
		}
		if opts.PerformanceMultiplier > 0 {
			fmt.Fprintf(&b, "  performance_multiplier = %d\n", opts.PerformanceMultiplier)
		}
		if i > 0 {
			fmt.Fprintf(&b, "  retry_join {\n    leader_api_addr = %q\n  }\n", fmt.Sprintf("http://127.0.0.1:%d", ps[0].api))
		}
		fmt.Fprintf(&b, "}\n")
		fmt.Fprintf(&b, "listener \"tcp\" {\n  address = %q\n  cluster_address = %q\n  tls_disable = true\n}\n",
			fmt.Sprintf("127.0.0.1:%d", ps[i].api), fmt.Sprintf("127.0.0.1:%d", ps[i].cluster))
		n.Server = Start(t, Options{ConfigHCL: b.String(), PluginDir: pluginDir, Port: ps[i].api, LogLevel: opts.LogLevel})
		c.Nodes = append(c.Nodes, n)
		return n
	}

	// The first node is initialised before the others start, so that their
	// first retry_join attempt finds a leader (a failed attempt backs off).
	first := startNode(0)
	c.UnsealKey, c.RootToken = first.InitAndUnseal()
	if a := c.WaitActive(90*time.Second, nil); a != first {
		t.Fatalf("expected %s to be active after init, got %s", first.ID, a.ID)
	}
	if opts.StabilizationTime > 0 {
		_, err := first.Client.Logical().Write("sys/storage/raft/autopilot/configuration", map[string]any{
			"server_stabilization_time": opts.StabilizationTime.String(),
		})
		if err != nil {
			t.Fatalf("setting autopilot's server_stabilization_time: %v", err)
		}
	}
	for i := 1; i < opts.Nodes; i++ {
		n := startNode(i)
		n.Client.SetToken(c.RootToken)
	}
	// Same binary everywhere: each node checks its own copy against the one
	// registered sha256 when it runs the plugin.
	c.PluginSHA256()
	for _, n := range c.Nodes[1:] {
		// A joining node refuses the key ("not initialized") until retry_join
		// has reached the leader and holds its challenge.
		WaitFor(t, 90*time.Second, n.ID+" accepting the unseal key", func() error {
			_, err := n.Client.Sys().Unseal(c.UnsealKey)
			return err
		})
	}
	for _, n := range c.Nodes[1:] {
		WaitFor(t, 90*time.Second, n.ID+" joined and unsealed", func() error {
			st, err := n.state()
			if err == nil && st != "standby" && st != "active" {
				err = errors.New(st)
			}
			return err
		})
	}
	c.WaitHealthyVoters(len(c.Nodes), 180*time.Second)
	t.Logf("raft cluster of %d nodes: %d healthy voters after %s", len(c.Nodes), len(c.Nodes), time.Since(started).Round(time.Second))
	return c
}

// PluginSHA256 returns the sha256 of the plugin binary, failing the test unless
// every node's plugin directory holds the same one.
func (c *Cluster) PluginSHA256() string {
	c.t.Helper()
	var sum string
	for _, n := range c.Nodes {
		s := SHA256(c.t, filepath.Join(n.opts.PluginDir, PluginName))
		if sum != "" && s != sum {
			c.t.Fatalf("plugin binary of %s differs from the others (sha256 %s, want %s)", n.ID, s, sum)
		}
		sum = s
	}
	return sum
}

// Running returns the nodes whose process runs.
func (c *Cluster) Running() []*Node {
	var out []*Node
	for _, n := range c.Nodes {
		if n.Pid() != 0 {
			out = append(out, n)
		}
	}
	return out
}

// state is a node's role as its health endpoint reports it.
func (n *Node) state() (string, error) {
	h, err := n.Client.Sys().Health()
	switch {
	case err != nil:
		return "", err
	case !h.Initialized:
		return "uninitialized", nil
	case h.Sealed:
		return "sealed", nil
	case h.Standby:
		return "standby", nil
	}
	return "active", nil
}

// IsActive reports whether the node answers as the active node now.
func (n *Node) IsActive() bool {
	st, err := n.state()
	return err == nil && st == "active"
}

// IsStandby reports whether the node answers as an (unsealed) standby now.
func (n *Node) IsStandby() bool {
	st, err := n.state()
	return err == nil && st == "standby"
}

// WaitActive waits until exactly one running node other than not says it is
// active, every other running unsealed node names it as leader and forwards
// requests to it, and it serves requests (its mount table is loaded). It returns
// that node.
func (c *Cluster) WaitActive(timeout time.Duration, not *Node) *Node {
	c.t.Helper()
	var active *Node
	WaitFor(c.t, timeout, "an active node", func() error {
		active = nil
		var states []string
		for _, n := range c.Running() {
			st, err := n.state()
			if err != nil {
				st = "unreachable"
			}
			states = append(states, n.ID+"="+st)
			if st != "active" {
				continue
			}
			if active != nil {
				return fmt.Errorf("two active nodes: %s", strings.Join(states, " "))
			}
			active = n
		}
		if active == nil || active == not {
			return fmt.Errorf("no new active node yet: %s", strings.Join(states, " "))
		}
		for _, n := range c.Running() {
			if st, err := n.state(); err != nil || (st != "active" && st != "standby") {
				continue // sealed or starting: it has no say
			}
			l, err := n.Client.Sys().Leader()
			if err != nil {
				return fmt.Errorf("%s: sys/leader: %v", n.ID, err)
			}
			if l.LeaderAddress != active.Addr {
				return fmt.Errorf("%s names %q as leader, not %s", n.ID, l.LeaderAddress, active.Addr)
			}
			if (n == active) != l.IsSelf {
				return fmt.Errorf("%s: is_self=%v", n.ID, l.IsSelf)
			}
			// A standby learns the new leader before its forwarding connection
			// is up; until then it answers with a redirect. sys/mounts is never
			// served by a standby itself.
			if _, err := c.Pinned(n).Logical().Read("sys/mounts"); err != nil {
				return fmt.Errorf("%s: not serving yet: %v", n.ID, err)
			}
		}
		return nil
	})
	return active
}

// Standbys returns the running nodes that answer as unsealed standbys.
func (c *Cluster) Standbys() []*Node {
	var out []*Node
	for _, n := range c.Running() {
		if n.IsStandby() {
			out = append(out, n)
		}
	}
	return out
}

// WaitHealthyVoters waits until autopilot (sys/storage/raft/autopilot/state, on
// the active node) reports a healthy cluster of want voters, each one healthy.
func (c *Cluster) WaitHealthyVoters(want int, timeout time.Duration) {
	c.t.Helper()
	WaitFor(c.t, timeout, fmt.Sprintf("autopilot: %d healthy voters", want), func() error {
		var lastErr error
		for _, n := range c.Running() {
			st, err := n.Client.Sys().RaftAutopilotState()
			if err != nil {
				lastErr = fmt.Errorf("%s: %v", n.ID, err)
				continue
			}
			if st == nil {
				lastErr = fmt.Errorf("%s: no autopilot state yet", n.ID)
				continue
			}
			var desc []string
			healthy := 0
			for id, s := range st.Servers {
				desc = append(desc, fmt.Sprintf("%s:%s/healthy=%v", id, s.Status, s.Healthy))
				if s.Healthy && (s.Status == "voter" || s.Status == "leader") {
					healthy++
				}
			}
			sort.Strings(desc)
			if !st.Healthy || len(st.Voters) != want || healthy != want {
				return fmt.Errorf("healthy=%v voters=%d: %s", st.Healthy, len(st.Voters), strings.Join(desc, " "))
			}
			return nil
		}
		return lastErr
	})
}

// RestartNode starts a stopped or killed node again, unseals it (a restarted
// node always comes back sealed) and waits until it is a healthy voter again,
// forwarding requests to the active node.
func (c *Cluster) RestartNode(n *Node) {
	c.t.Helper()
	n.Restart()
	n.Unseal(c.UnsealKey)
	c.WaitHealthyVoters(len(c.Nodes), 180*time.Second)
	c.WaitActive(2*time.Minute, nil)
}

// RegisterPlugin registers the plugin once, on the active node, with the sha256
// every node's copy has; the catalog is replicated to the others.
func (c *Cluster) RegisterPlugin() {
	c.t.Helper()
	c.PluginSHA256() // fails unless every node holds the same binary
	c.WaitActive(60*time.Second, nil).RegisterPlugin()
}

// Mount enables the plugin at path, on the active node.
func (c *Cluster) Mount(path string) {
	c.t.Helper()
	c.WaitActive(60*time.Second, nil).Mount(path)
}

// Pinned returns the cluster's client pinned to n (see PinnedClient), with the
// root token and a 60 s timeout. It is made once per node and reused.
func (c *Cluster) Pinned(n *Node) *api.Client {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pinned == nil {
		c.pinned = map[*Node]*api.Client{}
	}
	if cl := c.pinned[n]; cl != nil {
		return cl
	}
	cl := n.PinnedClient(c.RootToken, 60*time.Second)
	c.pinned[n] = cl
	return cl
}

// PinnedClient returns a new client (with token) that talks to this node only: it
// neither follows a standby's redirect nor retries, and refuses to send a
// request to any other address. So a read through it is answered by this node,
// which serves it or forwards it to the active node itself. Each client keeps
// its own connections: make one per node and reuse it.
func (n *Node) PinnedClient(token string, timeout time.Duration) *api.Client {
	n.t.Helper()
	cfg := api.DefaultConfig()
	cfg.Address = n.Addr
	cfg.Timeout = timeout
	cfg.MaxRetries = 0
	cfg.DisableRedirects = true
	want, err := url.Parse(n.Addr)
	if err != nil {
		n.t.Fatalf("%v", err)
	}
	inner := cfg.HttpClient.Transport
	if inner == nil {
		inner = http.DefaultTransport
	}
	cfg.HttpClient.Transport = pinnedTransport{host: want.Host, inner: inner}
	client, err := api.NewClient(cfg)
	if err != nil {
		n.t.Fatalf("%v", err)
	}
	client.SetToken(token)
	client.ClearNamespace()
	return client
}

// ErrNotPinned is returned by a PinnedClient asked to reach another node.
var ErrNotPinned = errors.New("vaulttest: request to another node than the pinned one")

type pinnedTransport struct {
	host  string
	inner http.RoundTripper
}

func (p pinnedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Host != p.host {
		if r.Body != nil {
			r.Body.Close()
		}
		return nil, fmt.Errorf("%w: %s, pinned to %s", ErrNotPinned, r.URL.Host, p.host)
	}
	resp, err := p.inner.RoundTrip(r)
	if err == nil && resp.StatusCode >= 300 && resp.StatusCode < 400 {
		// A standby that cannot forward redirects to the active node; the
		// client must not follow it, and the caller must see it.
		resp.Body.Close()
		return nil, fmt.Errorf("vaulttest: %s answered %s (redirect to %q) instead of serving or forwarding",
			p.host, resp.Status, resp.Header.Get("Location"))
	}
	return resp, err
}

// ClusterLogs returns the tail of every node's log, for a failure message.
func (c *Cluster) ClusterLogs(n int) string {
	var b strings.Builder
	for _, node := range c.Nodes {
		fmt.Fprintf(&b, "==== %s (%s) ====\n%s\n", node.ID, node.Addr, tail(node.LogPath, n))
	}
	return b.String()
}

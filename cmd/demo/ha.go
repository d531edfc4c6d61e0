package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/vaulttest"
)

// runHA is make demo-ha: a three-node raft cluster with the plugin and a role,
// until Ctrl-C.
func runHA(p *vaulttest.Program, o options) int {
	const nodes = 3
	work := p.TempDir()
	password := randomHex(p, 16)
	f := upstream(p, password, "")
	fmt.Printf("    fake iAdvize on %s, service user '%s' (random password, not shown)\n", f.URL, demoUser)

	step("Starting %d Vault servers on storage \"raft\" (one plugin directory each), initialising and unsealing them;\n"+
		"    then waiting for autopilot to report %d healthy voters (new servers must be stable ~10 s first)", nodes, nodes)
	c := vaulttest.StartCluster(p, vaulttest.ClusterOptions{Nodes: nodes, PluginBin: o.pluginBin(), PerformanceMultiplier: 1})
	logs := map[string]string{"fake.log": f.LogPath}
	for _, n := range c.Nodes {
		logs[n.ID+"/vault.log"] = n.LogPath
		fmt.Printf("    %s: API %s, cluster port %d, config %s\n", n.ID, n.Addr, n.ClusterPort, filepath.Join(filepath.Dir(n.LogPath), "config.hcl"))
	}
	t := &withLogs{Program: p, logs: logs}
	vaultBin := vaulttest.VaultBin(t)
	vault := func(n *vaulttest.Node) vaultCLI {
		return vaultCLI{bin: vaultBin, addr: n.Addr, token: c.RootToken, home: work}
	}
	first := c.Nodes[0]
	vault(first).run(t, nil, "operator", "raft", "list-peers")

	sum := c.PluginSHA256()
	step("vault plugin register -sha256=%s secret %s   (once, for the whole cluster)", sum, vaulttest.PluginName)
	vault(first).run(t, nil, "plugin", "register", "-sha256="+sum, "secret", vaulttest.PluginName)
	step("vault secrets enable -path=iadvize %s", vaulttest.PluginName)
	vault(first).run(t, nil, "secrets", "enable", "-path=iadvize", vaulttest.PluginName)
	step("vault write iadvize/config token_url=%s/oauth2/token verify_url=%s/_authenticated", f.URL, f.URL)
	vault(first).run(t, nil, "write", "iadvize/config", "token_url="+f.URL+"/oauth2/token", "verify_url="+f.URL+"/_authenticated")
	step("vault write iadvize/roles/%s username=%s password=-   (password on stdin)", role, demoUser)
	vault(first).run(t, strings.NewReader(password), "write", "iadvize/roles/"+role, "username="+demoUser, "password=-")

	step("Reading iadvize/creds/%s through every node", role)
	var token string
	for _, n := range c.Nodes {
		// The CLI pointed at node n: a standby forwards the read to the active node.
		tok := strings.TrimSpace(vault(n).output(t, nil, "read", "-field=access_token", "iadvize/creds/"+role))
		fmt.Printf("    %s (%s): access_token %s\n", n.ID, state(n), mask(tok))
		if token != "" && tok != token {
			t.Fatalf("%s served another token", n.ID)
		}
		token = tok
	}
	logins := f.Stats(t).LoginAttempts
	fmt.Printf("    Same token through every node; the fake iAdvize saw %d login(s).\n", logins)
	if logins != 1 {
		t.Fatalf("expected exactly one login upstream, the fake saw %d", logins)
	}

	active := c.WaitActive(60*time.Second, nil)
	next := c.Nodes[0]
	for i, n := range c.Nodes {
		if n == active {
			next = c.Nodes[(i+1)%len(c.Nodes)]
		}
	}
	step("The cluster is up. This is a throwaway cluster: its secrets are")
	fmt.Printf("    unseal key:  %s\n", c.UnsealKey)
	fmt.Printf("    root token:  %s\n", c.RootToken)
	fmt.Println()
	for _, n := range c.Nodes {
		fmt.Printf("    %s  %s  pid %d  %s  log %s\n", n.ID, n.Addr, n.Pid(), state(n), n.LogPath)
	}
	fmt.Printf("    fake iAdvize  %s  (logins so far: curl -s %s/_fake/stats)\n", f.URL, f.URL)
	fmt.Printf(`
==> In another shell:
    export VAULT_TOKEN=%[1]s PATH="%[2]s:$PATH"

    # The same token through every node (standbys forward to the active node):
`, c.RootToken, filepath.Dir(vaultBin))
	for _, n := range c.Nodes {
		fmt.Printf("    VAULT_ADDR=%s vault read iadvize/creds/%s\n", n.Addr, role)
	}
	fmt.Printf(`    VAULT_ADDR=%[1]s vault operator raft list-peers
    curl -s %[2]s/_fake/stats            # login_attempts stays at 1

    # Crash the active node (%[3]s) with its plugin, as a power cut would:
    kill -9 -- -%[4]d
    # Within seconds a standby takes over; read through the survivors: the same
    # token, no new login (the token is in raft storage, not in the dead node):
    VAULT_ADDR=%[5]s vault read iadvize/creds/%[6]s
    VAULT_ADDR=%[5]s vault read iadvize/status/%[6]s

    # Bring it back: press Enter here, which restarts every killed node. A
    # restarted node is sealed until it gets the unseal key:
    VAULT_ADDR=%[7]s vault operator unseal %[8]s
    VAULT_ADDR=%[7]s vault operator raft autopilot state

==> Press Enter to restart killed nodes; Ctrl-C to stop the cluster and the fake, and remove their files.
`, first.Addr, f.URL, active.ID, active.Pid(), next.Addr, role, active.Addr, c.UnsealKey)

	// Until Ctrl-C (RunProgram stops the servers): each line read restarts the
	// nodes whose process is gone.
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		restarted := false
		for _, n := range c.Nodes {
			if pid := n.Pid(); pid != 0 && syscall.Kill(pid, 0) == nil {
				continue
			}
			n.Restart()
			restarted = true
			fmt.Printf("    %s restarted, pid %d, %s: VAULT_ADDR=%s vault operator unseal %s\n", n.ID, n.Pid(), state(n), n.Addr, c.UnsealKey)
		}
		if !restarted {
			fmt.Println("    every node is running")
		}
	}
	select {} // standard input closed: wait for Ctrl-C
}

// state is a node's role as its health endpoint reports it.
func state(n *vaulttest.Node) string {
	h, err := n.Client.Sys().Health()
	switch {
	case err != nil:
		return "down"
	case !h.Initialized:
		return "uninitialized"
	case h.Sealed:
		return "sealed"
	case h.Standby:
		return "standby"
	}
	return "active"
}

package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync/atomic"

	"github.com/hashicorp/vault/api"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/vaulttest"
)

// runDev is make dev: the servers of the README's Quickstart, left running.
func runDev(p *vaulttest.Program, o options) int {
	if o.devEnv == "" || o.pluginVersion == "" {
		p.Fatalf("dev needs -dev-env and -plugin-version (run: make dev)")
	}
	stopPrevious(o.devEnv)
	work, err := os.MkdirTemp("", "iadvize-demo.")
	if err != nil {
		p.Fatalf("%v", err)
	}
	t := newKeeper(p, work)
	password := writeSecret(t, work, "demo-password")
	clientSecret := writeSecret(t, work, "demo-client-secret")
	f := upstream(t, password, clientSecret)
	fmt.Printf("    fake iAdvize on %s: service user '%s', client '%s' (random secrets, not shown)\n", f.URL, demoUser, demoClient)
	s := devServer(t, o)
	_, err = s.Client.Sys().GetPlugin(&api.GetPluginInput{Name: vaulttest.PluginName, Type: api.PluginTypeSecrets, Version: o.pluginVersion})
	if err != nil {
		t.Fatalf("the dev server did not register %s at version %s: %v", vaulttest.PluginName, o.pluginVersion, err)
	}

	stop := filepath.Join(work, "stop.sh")
	script := fmt.Sprintf(`#!/usr/bin/env bash
# Stops the Vault and fake iAdvize of make dev and removes %[3]s.
kill -TERM -- -%[1]d -%[2]d 2>/dev/null || true
for i in $(seq 200); do kill -0 %[1]d 2>/dev/null || kill -0 %[2]d 2>/dev/null || break; sleep 0.1; done
rm -rf '%[3]s'
rm -f '%[4]s'
echo "make dev: servers stopped"
`, s.Pid(), f.Pid(), work, o.devEnv)
	if err := os.WriteFile(stop, []byte(script), 0o700); err != nil {
		t.Fatalf("%v", err)
	}
	if err := os.MkdirAll(filepath.Dir(o.devEnv), 0o755); err != nil {
		t.Fatalf("%v", err)
	}
	env := fmt.Sprintf(`# Written by make dev (cmd/demo dev). In your shell: . %s
export VAULT_ADDR='%s'
export VAULT_TOKEN='%s'
export PATH='%s':"$PATH"
export FAKE_URL='%s'
export DEMO_PASSWORD_FILE='%s'
export DEMO_CLIENT_SECRET_FILE='%s'
export PLUGIN_VERSION='%s'
export DEV_STOP='%s'
`, o.devEnv, s.Addr, s.Client.Token(), filepath.Dir(vaulttest.VaultBin(t)), f.URL,
		filepath.Join(work, "demo-password"), filepath.Join(work, "demo-client-secret"), o.pluginVersion, stop)
	if err := os.WriteFile(o.devEnv+".tmp", []byte(env), 0o600); err != nil {
		t.Fatalf("%v", err)
	}
	if err := os.Rename(o.devEnv+".tmp", o.devEnv); err != nil {
		t.Fatalf("%v", err)
	}
	t.keep()

	step("Vault and the fake iAdvize keep running")
	fmt.Printf("    Vault        %s  (pid %d, log %s)\n", s.Addr, s.Pid(), s.LogPath)
	fmt.Printf("                 %s %s is registered; no mount is enabled yet\n", vaulttest.PluginName, o.pluginVersion)
	fmt.Printf("    fake iAdvize %s  (pid %d, log %s)\n", f.URL, f.Pid(), f.LogPath)
	fmt.Printf("                 user '%s' and client '%s', secrets in %s\n", demoUser, demoClient, work)
	fmt.Println()
	fmt.Printf("    In your shell:   . %s\n", o.devEnv)
	fmt.Println(`    then follow the README's Quickstart. To stop both servers: "$DEV_STOP"`)
	return 0
}

// stopPrevious stops the servers of a previous make dev named in devEnv, which
// would be lost otherwise, and removes devEnv.
func stopPrevious(devEnv string) {
	b, err := os.ReadFile(devEnv)
	if err != nil {
		return
	}
	m := regexp.MustCompile(`(?m)^export DEV_STOP='(.*)'$`).FindSubmatch(b)
	if m != nil {
		if st, err := os.Stat(string(m[1])); err == nil && st.Mode()&0o100 != 0 {
			step("Stopping the servers of the previous make dev (%s)", m[1])
			cmd := exec.Command(string(m[1]))
			cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
			_ = cmd.Run()
		}
	}
	os.Remove(devEnv)
}

// keeper is the TB of make dev: the servers' cleanups (and the removal of the
// work directory) run if the program fails or is interrupted, and are dropped
// once keep is called, so the servers outlive the program.
type keeper struct {
	*vaulttest.Program
	work string
	kept atomic.Bool
}

func newKeeper(p *vaulttest.Program, work string) *keeper {
	k := &keeper{Program: p, work: work}
	k.Cleanup(func() { os.RemoveAll(work) })
	return k
}

// Cleanup registers f to run when the program ends, unless keep was called.
func (k *keeper) Cleanup(f func()) {
	k.Program.Cleanup(func() {
		if !k.kept.Load() {
			f()
		}
	})
}

// TempDir returns a new directory inside the work directory.
func (k *keeper) TempDir() string {
	dir, err := os.MkdirTemp(k.work, "")
	if err != nil {
		k.Fatalf("%v", err)
	}
	return dir
}

// keep leaves the servers running when the program ends.
func (k *keeper) keep() { k.kept.Store(true) }

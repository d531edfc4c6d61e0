// Command demo starts the plugin in real Vault servers for a person to try. It
// is built on package vaulttest, the harness of the end-to-end tests, and run
// by make:
//
//	demo -plugin-dir DIR demo                       make demo
//	demo -plugin-dir DIR -dev-env FILE -plugin-version V dev   make dev
//	demo -plugin-dir DIR ha                         make demo-ha
//
// demo: a fake iAdvize upstream and a Vault dev server with the plugin, a
// role, and a burst of concurrent cold reads of creds/ that all get the same
// token for one login upstream; then everything is stopped (also on failure or
// Ctrl-C), and the exit code says whether the demo held.
//
// dev: the fake (with a user and a client) and a Vault dev server whose plugin
// directory is DIR, so the plugin is registered but no mount is enabled, left
// running for the README's Quickstart. It writes FILE, which sets VAULT_ADDR,
// VAULT_TOKEN, PATH (with the vault binary), FAKE_URL, DEMO_PASSWORD_FILE,
// DEMO_CLIENT_SECRET_FILE, PLUGIN_VERSION and DEV_STOP (a script that stops
// both servers); a previous dev named in FILE is stopped first.
//
// ha: a three-node Vault HA cluster on integrated storage (raft), the plugin
// registered once with its sha256 and mounted at iadvize/, a role against the
// fake; it prints the addresses, the unseal key and root token of this
// throwaway cluster and what to try, and runs until Ctrl-C.
//
// Environment: VAULT_BIN (the vault binary) and FAKE_BIN (cmd/fake-iadvize);
// see package vaulttest. Everything listens on 127.0.0.1 only. Passwords and
// client secrets are random, given to the fake and to Vault in request bodies,
// files or on standard input (never on a command line) and never printed;
// access tokens are shown only as fingerprints (see mask).
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/vaulttest"
)

const (
	role       = "demo"
	demoUser   = "demo-user"
	demoClient = "demo-client"
)

type options struct {
	mode          string
	pluginDir     string // holds the plugin binary under vaulttest.PluginName
	burst         int    // concurrent readers of the demo
	devEnv        string // dev: the file to write the exports to
	pluginVersion string // dev: the version the plugin binary reports
	verbose       bool
}

func main() {
	var o options
	fs := flag.NewFlagSet("demo", flag.ExitOnError)
	fs.StringVar(&o.pluginDir, "plugin-dir", os.Getenv("PLUGIN_DIR"), "`directory` holding the plugin binary "+vaulttest.PluginName+" (default $PLUGIN_DIR)")
	fs.IntVar(&o.burst, "burst", 200, "demo: concurrent readers of creds/")
	fs.StringVar(&o.devEnv, "dev-env", "", "dev: the `file` to write the exports to (make: build/dev.env)")
	fs.StringVar(&o.pluginVersion, "plugin-version", "", "dev: the `version` the plugin binary reports (make sets it)")
	fs.BoolVar(&o.verbose, "v", false, "log the harness's progress to stderr")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: demo [flags] demo|dev|ha   (normally through make demo, make dev, make demo-ha)\n")
		fs.PrintDefaults()
	}
	fs.Parse(os.Args[1:])
	if fs.NArg() != 1 {
		fs.Usage()
		os.Exit(2)
	}
	o.mode = fs.Arg(0)
	run := map[string]func(*vaulttest.Program, options) int{"demo": runDemo, "dev": runDev, "ha": runHA}[o.mode]
	if run == nil {
		fmt.Fprintf(os.Stderr, "demo: unknown mode %q (want demo, dev or ha)\n", o.mode)
		os.Exit(2)
	}
	if o.pluginDir == "" {
		fmt.Fprintln(os.Stderr, "demo: -plugin-dir (or PLUGIN_DIR) must hold the plugin binary (run: make "+map[string]string{"demo": "demo", "dev": "dev", "ha": "demo-ha"}[o.mode]+")")
		os.Exit(2)
	}
	abs, err := filepath.Abs(o.pluginDir) // vault wants an absolute plugin directory
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(2)
	}
	o.pluginDir = abs
	vaulttest.RunProgram(o.verbose, func(t *vaulttest.Program) int {
		if _, err := os.Stat(o.pluginBin()); err != nil {
			t.Fatalf("the plugin directory must hold the plugin binary: %v", err)
		}
		return run(t, o)
	})
}

func (o options) pluginBin() string { return filepath.Join(o.pluginDir, vaulttest.PluginName) }

// Command bench measures the iadvize secrets engine on a real Vault: read
// throughput and latency of creds/ and static-creds/ against two references on
// the same server (a KV version 1 read, and a do-nothing external plugin), what
// leases cost, how many logins reach upstream, the plugin's memory with many
// roles, and, in process (`go test -bench`), where a read's time and
// allocations go.
//
//	go run ./cmd/bench -out BENCHMARKS.md   # what `make bench` runs
//	go run ./cmd/bench -duration 2m -rounds 3 -cell 1.5s -leases 2000 -roles 2000   # shorter
//
// It starts its own Vault servers (VAULT_BIN, else the one scripts/vault.sh
// cached) with the plugin (PLUGIN_BIN, else built) and the do-nothing plugin
// (NOOP_PLUGIN_BIN, else built), and a fake upstream in process, all on
// loopback; it stops them when it ends. It never prints a token or a password.
package main

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/vaulttest"
)

// options are the command-line flags.
type options struct {
	out                       string
	duration, cell            time.Duration // the long login run; one throughput measurement
	rounds, leaseReads, roles int
	phases                    map[string]bool
	verbose                   bool
}

// The fake upstream's time to answer a login, and the long login run's clients
// and mean time between two reads of one client.
const (
	upstreamLatency = 100 * time.Millisecond
	loginClients    = 16
	loginInterval   = 100 * time.Millisecond
)

var allPhases = []string{"throughput", "leases", "logins", "scale", "profile"}

var startTime = time.Now()

// logf prints progress to stderr.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%6.1fs] %s\n", time.Since(startTime).Seconds(), fmt.Sprintf(format, args...))
}

func main() {
	var o options
	flag.StringVar(&o.out, "out", "", "write the report (markdown) to this file as well as stdout")
	flag.DurationVar(&o.duration, "duration", 10*time.Minute, "duration of the run with 30-second tokens")
	flag.IntVar(&o.rounds, "rounds", 5, "interleaved rounds of every throughput measurement")
	flag.DurationVar(&o.cell, "cell", 3*time.Second, "duration of one throughput measurement")
	flag.IntVar(&o.leaseReads, "leases", 10000, "reads of creds/ (and of static-creds/) in the lease cost run")
	flag.IntVar(&o.roles, "roles", 10000, "roles holding tokens in the memory run")
	phases := flag.String("phases", strings.Join(allPhases, ","), "phases to run")
	flag.BoolVar(&o.verbose, "v", false, "log the harness's details")
	flag.Parse()
	o.phases = map[string]bool{}
	for _, p := range strings.Split(*phases, ",") {
		o.phases[p] = slices.Contains(allPhases, p)
		if !o.phases[p] || o.rounds < 1 || o.cell <= 0 || o.duration <= 0 || o.leaseReads < 1 || o.roles < 10 {
			fmt.Fprintf(os.Stderr, "phases are among %s; rounds, cell, duration and leases are positive, roles at least 10\n", allPhases)
			os.Exit(2)
		}
	}
	vaulttest.RunProgram(o.verbose, func(t *vaulttest.Program) int { return run(t, o) })
}

// run runs the phases and writes the report; it returns the exit code.
func run(t *vaulttest.Program, opts options) int {
	pluginDir = pluginDirOf(t)
	rep := &report{opts: opts, started: time.Now(), vaultVersion: vaultVersion(vaulttest.VaultBin(t)), source: sourceState(t)}
	var menv *mainEnv
	if opts.phases["throughput"] || opts.phases["logins"] {
		menv = setupMain(t)
	}
	if opts.phases["throughput"] {
		rep.add(throughputPhase(menv, opts))
	}
	if opts.phases["profile"] { // before the long run: nothing else runs meanwhile
		rep.add(profilePhase(t, opts))
	}
	var long func() longResult
	if opts.phases["logins"] {
		// The long run is light (a few dozen reads a second); it runs while the
		// phases below do, on its own mount and its own fake upstream.
		long = startLongRun(t, menv, opts.duration)
	}
	if opts.phases["leases"] {
		rep.add(leasePhase(t, opts))
	}
	var cold string
	if opts.phases["logins"] {
		cold = coldPhase(menv)
	}
	if opts.phases["scale"] {
		rep.add(scalePhase(t, opts))
	}
	if long != nil {
		rep.add(loginSection(cold, long(), opts))
	}
	if err := rep.write(opts.out); err != nil {
		t.Fatalf("writing %s: %v", opts.out, err)
	}
	return 0
}

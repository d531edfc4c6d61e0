// Command bench measures the iadvize secrets engine on a real Vault: read
// throughput and latency of creds/ and static-creds/ against two references on
// the same server (a KV version 1 read, and a do-nothing external plugin), what
// leases cost, how many logins reach upstream, the plugin's memory with many
// roles, and, in process, where a read's time and allocations go.
//
//	go run ./cmd/bench -out BENCHMARKS.md   # what `make bench` runs
//	go run ./cmd/bench -quick               # a shorter run (2-minute login run)
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
	out             string
	quick           bool
	duration        time.Duration // the long login run
	rounds          int
	cell            time.Duration // one measurement of one path at one concurrency
	leaseReads      int
	roles           int
	rolesPerMount   int
	writeBudget     time.Duration // for writing the roles of the memory run
	upstreamLatency time.Duration
	loginClients    int
	loginInterval   time.Duration
	phases          map[string]bool
	verbose         bool
	keepBefore      bool
}

var allPhases = []string{"throughput", "leases", "logins", "scale", "profile"}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.StringVar(&o.out, "out", "", "write the report (markdown) to this file as well as stdout")
	fs.BoolVar(&o.quick, "quick", false, "shorter run: 2-minute login run, 3 rounds, 2,000 leases and roles")
	fs.DurationVar(&o.duration, "duration", 10*time.Minute, "duration of the run with 30-second tokens (-quick: 2m)")
	fs.IntVar(&o.rounds, "rounds", 5, "interleaved rounds of every throughput measurement (-quick: 3)")
	fs.DurationVar(&o.cell, "cell", 3*time.Second, "duration of one throughput measurement (-quick: 1.5s)")
	fs.IntVar(&o.leaseReads, "leases", 10000, "reads of creds/ (and of static-creds/) in the lease cost run (-quick: 2000)")
	fs.IntVar(&o.roles, "roles", 10000, "roles holding tokens in the memory run (-quick: 2000)")
	fs.IntVar(&o.rolesPerMount, "roles-per-mount", 0, "roles per mount in the memory run (0: all in one mount)")
	fs.DurationVar(&o.writeBudget, "write-budget", 5*time.Minute, "time allowed for writing the roles of the memory run (-quick: 2m); the run goes on with the roles written")
	fs.DurationVar(&o.upstreamLatency, "upstream-latency", 100*time.Millisecond, "time the fake upstream takes to answer a login")
	fs.IntVar(&o.loginClients, "login-clients", 16, "clients of the run with 30-second tokens")
	fs.DurationVar(&o.loginInterval, "login-interval", 100*time.Millisecond, "mean time between two reads of one client in that run")
	phases := fs.String("phases", strings.Join(allPhases, ","), "phases to run")
	fs.BoolVar(&o.verbose, "v", false, "log the harness's details")
	fs.BoolVar(&o.keepBefore, "keep-before", true, "keep the \"before\" profile section of the -out file when it was measured on other code; this run's becomes the \"after\"")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.quick { // the -quick defaults of the flags not given
		for name, v := range map[string]string{"duration": "2m", "rounds": "3", "cell": "1.5s", "leases": "2000", "roles": "2000", "write-budget": "2m"} {
			if !set[name] {
				_ = fs.Set(name, v)
			}
		}
	}
	if o.rolesPerMount == 0 || o.rolesPerMount > o.roles {
		o.rolesPerMount = o.roles
	}
	o.phases = map[string]bool{}
	for _, p := range strings.FieldsFunc(*phases, func(r rune) bool { return r == ',' || r == ' ' }) {
		if !slices.Contains(allPhases, p) {
			return o, fmt.Errorf("unknown phase %q (have %s)", p, strings.Join(allPhases, ", "))
		}
		o.phases[p] = true
	}
	if o.rounds < 1 || o.cell <= 0 || o.duration <= 0 || o.leaseReads < 1 || o.roles < 10 || o.rolesPerMount < 1 || o.writeBudget <= 0 ||
		o.loginClients < 1 || o.loginInterval <= 0 {
		return o, fmt.Errorf("rounds, cell, duration, leases, login-clients and login-interval must be positive, roles at least 10")
	}
	return o, nil
}

var startTime = time.Now()

// logf prints progress to stderr.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%6.1fs] %s\n", time.Since(startTime).Seconds(), fmt.Sprintf(format, args...))
}

func main() {
	opts, err := parseFlags(os.Args[1:])
	if err != nil {
		if err == flag.ErrHelp {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	vaulttest.RunProgram(opts.verbose, func(t *vaulttest.Program) int { return run(t, opts) })
}

// run runs the phases and writes the report; it returns the exit code.
func run(t *vaulttest.Program, opts options) int {
	bins := findBinaries(t)
	rep := &report{opts: opts, started: time.Now(), vaultVersion: vaultVersion(bins.vault), source: sourceState(t)}

	var menv *mainEnv
	if opts.phases["throughput"] || opts.phases["logins"] {
		menv = setupMain(t, bins, opts)
	}
	if opts.phases["throughput"] {
		rep.add(throughputPhase(menv, opts))
	}
	// In process: run while nothing else runs in this process.
	if opts.phases["profile"] {
		rep.add(profilePhase(t, opts))
	}
	var long *longRun
	if opts.phases["logins"] {
		// The long run is light (a few dozen reads a second); it runs while the
		// phases below do, on its own mount and its own fake upstream.
		long = startLongRun(t, menv, opts)
	}
	if opts.phases["leases"] {
		rep.add(leasePhase(t, bins, opts))
	}
	var cold section
	if opts.phases["logins"] {
		cold = coldPhase(menv, opts)
	}
	if opts.phases["scale"] {
		rep.add(scalePhase(t, bins, opts))
	}
	if long != nil {
		rep.add(loginSection(cold, long.wait(), opts))
	}
	if err := rep.write(opts.out); err != nil {
		t.Fatalf("writing %s: %v", opts.out, err)
	}
	return 0
}

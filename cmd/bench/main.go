// Command bench measures the iadvize secrets engine on a real Vault (`make
// bench` runs `go run ./cmd/bench -out BENCHMARKS.md`): reads of creds/ and
// static-creds/ against a KV read and a do-nothing plugin on the same server,
// what leases cost, the logins that reach upstream, the plugin's memory with
// many roles, a restart with 100,000 roles on file storage, and in process (`go
// test -bench`) where a read's time goes. It
// starts its own Vault servers (VAULT_BIN, PLUGIN_BIN, NOOP_PLUGIN_BIN, else
// built) and a fake upstream, on loopback. It never prints a token or a password.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/text/language"
	"golang.org/x/text/message"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/vaulttest"
)

// options are the command-line flags.
type options struct {
	out                       string
	duration, cell            time.Duration // the long login run; one throughput measurement
	rounds, leaseReads, roles int
	restartRoles              int // roles of the restart run
	phases                    map[string]bool
}

// The fake upstream's time to answer a login, and the long login run's clients
// and mean time between two reads of one client.
const (
	upstreamLatency = 100 * time.Millisecond
	loginClients    = 16
	loginInterval   = 100 * time.Millisecond
)

var allPhases = []string{"throughput", "leases", "logins", "scale", "profile", "restart"}

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
	flag.IntVar(&o.restartRoles, "restart-roles", 100000, "roles holding tokens in the restart run on file storage (2000 to try it: a few minutes)")
	phases := flag.String("phases", strings.Join(allPhases, ","), "phases to run")
	flag.Parse()
	o.phases = map[string]bool{}
	for _, p := range strings.Split(*phases, ",") {
		o.phases[p] = slices.Contains(allPhases, p)
		if !o.phases[p] || o.rounds < 1 || o.cell <= 0 || o.duration <= 0 || o.leaseReads < 1 || o.roles < 10 || o.restartRoles < 10 {
			fmt.Fprintf(os.Stderr, "phases are among %s; rounds, cell, duration and leases are positive, roles and restart-roles at least 10\n", allPhases)
			os.Exit(2)
		}
	}
	vaulttest.RunProgram(false, func(t *vaulttest.Program) int { return run(t, o) })
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
	var long func(cold string) section
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
		rep.add(long(cold))
	}
	if opts.phases["restart"] { // alone: it loads both cores for minutes, and measures heap in this process
		rep.add(restartPhase(t, opts))
	}
	if err := rep.write(opts.out); err != nil {
		t.Fatalf("writing %s: %v", opts.out, err)
	}
	return 0
}

// section is one part of the report, placed by order.
type section struct {
	order       int
	title, body string // body: markdown
}

// profileTitle is the title of this run's profile section.
const profileTitle = "Profile of the read path (after)"

// keptTitles are the sections of the report that a run keeps as they are: the
// profile of the read path before its optimisation (it names the commit it
// measured), and what `go test -bench` runs wrote (each names its command).
var keptTitles = []string{"Profile of the read path (before)", "Capacity on the injected clock"}

type report struct {
	opts                 options
	started              time.Time
	vaultVersion, source string // source: the plugin's commit and uncommitted changes
	sections             []section
}

func (r *report) add(s section) {
	r.sections = append(r.sections, s)
	fmt.Printf("\n## %s\n\n%s\n", s.title, s.body) // each section as soon as it is measured
}

func vaultVersion(bin string) string {
	out, _ := exec.Command(bin, "version").Output()
	if f := strings.Fields(string(out)); len(f) >= 2 {
		return f[0] + " " + strings.TrimSuffix(f[1], ",")
	}
	return "Vault (unknown version)"
}

func (r *report) header() string {
	cmd := strings.TrimSpace("go run ./cmd/bench " + strings.Join(os.Args[1:], " "))
	if os.Getenv("MAKELEVEL") != "" {
		cmd = "make bench, which runs " + cmd
	}
	load, _ := os.ReadFile("/proc/loadavg")
	return fmt.Sprintf("# Benchmarks on a real Vault\n\nWritten by `cmd/bench`; do not edit by hand, run it again. The sections it keeps from an earlier file\n"+
		"(%s) are kept as they are; each names what it measured.\n\n"+
		"- Command: `%s`\n- Date: %s (took %s)\n"+
		"- Machine: %d cores (runtime.NumCPU), %s/%s, load average at the end %s; shared with other work, so absolute\n"+
		"  numbers are noisy: compare the ratios, measured side by side in the same run\n- Plugin measured: %s\n"+
		"- %s, bench built with %s; upstream: in-process fake iAdvize on loopback answering logins in %s\n"+
		"- Settings: %d rounds of %s per measurement; %d-read lease run; %d roles in the memory run; %d roles in the restart run; %s run with 30-second tokens\n",
		strings.Join(keptTitles, ", "), cmd, r.started.UTC().Format("2006-01-02 15:04 MST"), time.Since(r.started).Round(time.Second),
		runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, strings.Join(strings.Fields(string(load) + " ? ? ?")[:3], " "), r.source,
		r.vaultVersion, runtime.Version(), upstreamLatency, r.opts.rounds, r.opts.cell, r.opts.leaseReads, r.opts.roles, r.opts.restartRoles, r.opts.duration)
}

// write writes the report, sections in order, then the keptTitles sections of
// the old file.
func (r *report) write(path string) error {
	if path == "" {
		return nil
	}
	old, _ := os.ReadFile(path)
	slices.SortStableFunc(r.sections, func(a, b section) int { return a.order - b.order })
	var b strings.Builder
	b.WriteString(r.header())
	for _, s := range r.sections {
		fmt.Fprintf(&b, "\n## %s\n\n%s\n", s.title, strings.TrimRight(s.body, "\n"))
	}
	for _, title := range keptTitles {
		if sec := sectionOf(string(old), title); sec != "" {
			b.WriteString("\n" + sec)
		}
	}
	logf("writing %s", path)
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// sectionOf returns the section of a report with this title, up to the next
// section, ending with one newline; "" when there is none.
func sectionOf(doc, title string) string {
	head := "## " + title + "\n"
	_, sec, ok := strings.Cut(doc, head)
	if !ok {
		return ""
	}
	sec, _, _ = strings.Cut(sec, "\n## ")
	return head + strings.TrimRight(sec, "\n") + "\n"
}

// table renders a markdown table, the first column left-aligned, the others
// right-aligned.
func table(head []string, rows [][]string) string {
	var b strings.Builder
	b.WriteString("| " + strings.Join(head, " | ") + " |\n|---" + strings.Repeat("|--:", len(head)-1) + "|\n")
	for _, row := range rows {
		b.WriteString("| " + strings.Join(row, " | ") + " |\n")
	}
	return b.String()
}

// fmtDur prints a latency with three significant digits.
func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
}

func fmtBytes(n int64) string {
	switch a := max(n, -n); {
	case a >= 10<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case a >= 10<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

var english = message.NewPrinter(language.English)

// fmtInt prints an integer with thousands separators.
func fmtInt[T int | int64](n T) string { return english.Sprintf("%d", n) }

// f0 and f2 print a float with no and with two decimals.
func f0(x float64) string { return fmt.Sprintf("%.0f", x) }
func f2(x float64) string { return fmt.Sprintf("%.2f", x) }

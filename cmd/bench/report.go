package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"
)

// section is one part of the report.
type section struct {
	order   int
	title   string
	body    string // markdown
	profile bool   // the in-process profile: "before" or "after" (see write)
}

// profileTitle is the title of the profile section, followed by " (before)" or
// " (after)" in the file.
const profileTitle = "Profile of the read path"

type report struct {
	opts         options
	started      time.Time
	vaultVersion string
	source       string // the plugin's source: commit and uncommitted changes
	sections     []section
}

func newReport(opts options) *report {
	return &report{opts: opts, started: time.Now()}
}

func (r *report) add(s section) {
	if s.title == "" {
		return
	}
	r.sections = append(r.sections, s)
	// Each section goes to stdout as soon as it is measured.
	fmt.Printf("\n## %s\n\n%s\n", s.title, s.body)
}

func (r *report) sortSections() {
	slices.SortStableFunc(r.sections, func(a, b section) int { return a.order - b.order })
}

// command is how this run was started, for the report's header.
func command() string {
	args := strings.Join(os.Args[1:], " ")
	cmd := strings.TrimSpace("go run ./cmd/bench " + args)
	if os.Getenv("MAKELEVEL") != "" {
		return "make bench, which runs " + cmd
	}
	return cmd
}

func vaultVersion(bin string) string {
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		return "Vault (unknown version)"
	}
	f := strings.Fields(string(out))
	if len(f) < 2 {
		return "Vault (unknown version)"
	}
	return f[0] + " " + strings.TrimSuffix(f[1], ",")
}

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func (r *report) header() string {
	var b strings.Builder
	b.WriteString("# Benchmarks on a real Vault\n\n")
	b.WriteString("Written by `cmd/bench`; do not edit by hand, run it again. The sections it keeps from an earlier file\n" +
		"(" + strings.Join(keptTitles, ", ") + ") are written from `go test -bench` runs and name their command.\n\n")
	fmt.Fprintf(&b, "- Command: `%s`\n", command())
	fmt.Fprintf(&b, "- Date: %s (took %s)\n", r.started.UTC().Format("2006-01-02 15:04 MST"), time.Since(r.started).Round(time.Second))
	fmt.Fprintf(&b, "- Machine: %d cores (runtime.NumCPU), %s/%s, load average at the end %s; shared with other work, so absolute\n"+
		"  numbers are noisy: compare the ratios, measured side by side in the same run\n",
		numCPU(), runtime.GOOS, runtime.GOARCH, loadAverage())
	fmt.Fprintf(&b, "- Plugin measured: %s\n", r.source)
	fmt.Fprintf(&b, "- %s, bench built with %s; upstream: in-process fake iAdvize on loopback answering logins in %s\n",
		r.vaultVersion, runtime.Version(), r.opts.upstreamLatency)
	fmt.Fprintf(&b, "- Settings: %d rounds of %s per measurement; %d-read lease run; %d roles in the memory run; %s run with 30-second tokens\n",
		r.opts.rounds, r.opts.cell, r.opts.leaseReads, r.opts.roles, r.opts.duration)
	return b.String()
}

// write writes the report. The profile section is the "before" of the code
// being changed: when the file already holds a "before" profile measured on
// other code, it is kept, and this run's profile becomes the "after"
// (remove the file, or pass -keep-before=false, to start again).
func (r *report) write(path string) error {
	if path == "" {
		return nil
	}
	var before, kept string
	if old, err := os.ReadFile(path); err == nil {
		if r.opts.keepBefore {
			before = previousBefore(string(old), r.source)
		}
		kept = keptSections(string(old))
	}
	var b strings.Builder
	b.WriteString(r.header())
	for _, s := range r.sections {
		title := s.title
		if s.profile {
			title += " (before)"
			if before != "" {
				title = s.title + " (after)"
			}
		}
		fmt.Fprintf(&b, "\n## %s\n\n%s", title, s.body)
		if !strings.HasSuffix(s.body, "\n") {
			b.WriteString("\n")
		}
		if s.profile && before != "" {
			b.WriteString("\n" + before)
		}
	}
	if kept != "" {
		b.WriteString("\n" + kept)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return err
	}
	logf("wrote %s", path)
	return nil
}

// keptTitles are the sections of the report that other commands write (each
// names its command): a run keeps them as they are.
var keptTitles = []string{"Capacity on the injected clock"}

// keptSections returns the kept sections of an earlier report.
func keptSections(old string) string {
	var out strings.Builder
	for _, title := range keptTitles {
		head := "## " + title + "\n"
		i := strings.Index(old, head)
		if i < 0 {
			continue
		}
		sec := old[i:]
		if j := strings.Index(sec[len(head):], "\n## "); j >= 0 {
			sec = sec[:len(head)+j+1]
		}
		out.WriteString(strings.TrimRight(sec, "\n") + "\n")
	}
	return out.String()
}

// previousBefore returns the "before" profile section of an earlier report,
// with the code and date it was measured on, unless it was measured on the
// same code as this run (source) or there is none.
func previousBefore(old, source string) string {
	head := "## " + profileTitle + " (before)\n"
	i := strings.Index(old, head)
	if i < 0 {
		return ""
	}
	sec := old[i:]
	if j := strings.Index(sec[len(head):], "\n## "); j >= 0 {
		sec = sec[:len(head)+j+1]
	}
	measured, date := "", ""
	for _, line := range strings.Split(old[:i], "\n") {
		if v, ok := strings.CutPrefix(line, "- Plugin measured: "); ok {
			measured = v
		}
		if v, ok := strings.CutPrefix(line, "- Date: "); ok {
			date, _, _ = strings.Cut(v, " (took")
		}
	}
	if strings.Contains(sec, "\nMeasured on ") {
		// Kept from an earlier run already: it says what it measured.
		if strings.Contains(sec, "plugin at "+source+".") {
			return ""
		}
		return strings.TrimRight(sec, "\n") + "\n"
	}
	if measured == source {
		return ""
	}
	if measured == "" {
		measured = "unknown code"
	}
	body := strings.TrimPrefix(sec, head)
	return head + "\nMeasured on " + date + ", plugin at " + measured + ".\n" + strings.TrimRight(body, "\n") + "\n"
}

// table renders a markdown table.
func table(head []string, rows [][]string) string {
	var b strings.Builder
	b.WriteString("| " + strings.Join(head, " | ") + " |\n")
	seps := make([]string, len(head))
	for i := range seps {
		seps[i] = "---"
		if i > 0 {
			seps[i] = "--:"
		}
	}
	b.WriteString("|" + strings.Join(seps, "|") + "|\n")
	for _, row := range rows {
		b.WriteString("| " + strings.Join(row, " | ") + " |\n")
	}
	return b.String()
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func medianDur(ds []time.Duration) time.Duration {
	xs := make([]float64, len(ds))
	for i, d := range ds {
		xs[i] = float64(d)
	}
	return time.Duration(median(xs))
}

// fmtDur prints a latency with three significant digits.
func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
	}
}

func fmtBytes(n int64) string {
	neg := ""
	if n < 0 {
		neg, n = "-", -n
	}
	switch {
	case n >= 10<<20:
		return fmt.Sprintf("%s%.1f MiB", neg, float64(n)/(1<<20))
	case n >= 10<<10:
		return fmt.Sprintf("%s%.1f KiB", neg, float64(n)/(1<<10))
	default:
		return fmt.Sprintf("%s%d B", neg, n)
	}
}

// fmtInt prints an integer with thousands separators.
func fmtInt[T int | int64](n T) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}

package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/text/language"
	"golang.org/x/text/message"
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

// keptTitles are the sections of the report that other commands write (each
// names its command): a run keeps them as they are.
var keptTitles = []string{"Capacity on the injected clock"}

type report struct {
	opts         options
	started      time.Time
	vaultVersion string
	source       string // the plugin's source: commit and uncommitted changes
	sections     []section
}

func (r *report) add(s section) {
	if s.title != "" {
		r.sections = append(r.sections, s)
		fmt.Printf("\n## %s\n\n%s\n", s.title, s.body) // each section as soon as it is measured
	}
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
	var b strings.Builder
	b.WriteString("# Benchmarks on a real Vault\n\n")
	b.WriteString("Written by `cmd/bench`; do not edit by hand, run it again. The sections it keeps from an earlier file\n" +
		"(" + strings.Join(keptTitles, ", ") + ") are written from `go test -bench` runs and name their command.\n\n")
	fmt.Fprintf(&b, "- Command: `%s`\n", cmd)
	fmt.Fprintf(&b, "- Date: %s (took %s)\n", r.started.UTC().Format("2006-01-02 15:04 MST"), time.Since(r.started).Round(time.Second))
	fmt.Fprintf(&b, "- Machine: %d cores (runtime.NumCPU), %s/%s, load average at the end %s; shared with other work, so absolute\n"+
		"  numbers are noisy: compare the ratios, measured side by side in the same run\n",
		runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, strings.Join(strings.Fields(string(load) + " ? ? ?")[:3], " "))
	fmt.Fprintf(&b, "- Plugin measured: %s\n", r.source)
	fmt.Fprintf(&b, "- %s, bench built with %s; upstream: in-process fake iAdvize on loopback answering logins in %s\n",
		r.vaultVersion, runtime.Version(), r.opts.upstreamLatency)
	fmt.Fprintf(&b, "- Settings: %d rounds of %s per measurement; %d-read lease run; %d roles in the memory run; %s run with 30-second tokens\n",
		r.opts.rounds, r.opts.cell, r.opts.leaseReads, r.opts.roles, r.opts.duration)
	return b.String()
}

// write writes the report, sections in their order. The profile section is
// the "before" of the code being changed: when the file already holds a
// "before" profile measured on other code, it is kept, and this run's profile
// becomes the "after" (remove the file, or pass -keep-before=false, to start
// again). The sections of keptTitles are copied from the old file.
func (r *report) write(path string) error {
	if path == "" {
		return nil
	}
	old, _ := os.ReadFile(path)
	before := ""
	if r.opts.keepBefore {
		before = previousBefore(string(old), r.source)
	}
	slices.SortStableFunc(r.sections, func(a, b section) int { return a.order - b.order })
	var b strings.Builder
	b.WriteString(r.header())
	for _, s := range r.sections {
		title := s.title
		if s.profile && before != "" {
			title += " (after)"
		} else if s.profile {
			title += " (before)"
		}
		fmt.Fprintf(&b, "\n## %s\n\n%s\n", title, strings.TrimRight(s.body, "\n"))
		if s.profile && before != "" {
			b.WriteString("\n" + before)
		}
	}
	for _, title := range keptTitles {
		if sec := sectionOf(string(old), title); sec != "" {
			b.WriteString("\n" + sec)
		}
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return err
	}
	logf("wrote %s", path)
	return nil
}

// sectionOf returns the section of a report with this title, up to the next
// section, ending with one newline; "" when there is none.
func sectionOf(doc, title string) string {
	head := "## " + title + "\n"
	i := strings.Index(doc, head)
	if i < 0 {
		return ""
	}
	sec := doc[i:]
	if j := strings.Index(sec[len(head):], "\n## "); j >= 0 {
		sec = sec[:len(head)+j+1]
	}
	return strings.TrimRight(sec, "\n") + "\n"
}

// previousBefore returns the "before" profile section of an earlier report,
// saying the code and date it was measured on, unless it was measured on the
// same code as this run (source) or there is none.
func previousBefore(old, source string) string {
	sec := sectionOf(old, profileTitle+" (before)")
	if sec == "" {
		return ""
	}
	if strings.Contains(sec, "\nMeasured on ") {
		// Kept from an earlier run already: it says what it measured.
		if strings.Contains(sec, "plugin at "+source+".") {
			return ""
		}
		return sec
	}
	measured, date := "unknown code", ""
	for _, line := range strings.Split(old[:strings.Index(old, "## "+profileTitle+" (before)\n")], "\n") {
		if v, ok := strings.CutPrefix(line, "- Plugin measured: "); ok {
			measured = v
		}
		if v, ok := strings.CutPrefix(line, "- Date: "); ok {
			date, _, _ = strings.Cut(v, " (took")
		}
	}
	if measured == source {
		return ""
	}
	head, body, _ := strings.Cut(sec, "\n")
	return head + "\n\nMeasured on " + date + ", plugin at " + measured + ".\n\n" + strings.TrimLeft(body, "\n")
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

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
	order       int
	title, body string // body: markdown
	profile     bool   // the in-process profile: "before" or "after" (see write)
}

// profileTitle is the title of the profile section, followed by " (before)" or
// " (after)" in the file.
const profileTitle = "Profile of the read path"

// keptTitles are the sections of the report that other commands write (each
// names its command): a run keeps them as they are.
var keptTitles = []string{"Capacity on the injected clock"}

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
		"(%s) are written from `go test -bench` runs and name their command.\n\n"+
		"- Command: `%s`\n- Date: %s (took %s)\n"+
		"- Machine: %d cores (runtime.NumCPU), %s/%s, load average at the end %s; shared with other work, so absolute\n"+
		"  numbers are noisy: compare the ratios, measured side by side in the same run\n- Plugin measured: %s\n"+
		"- %s, bench built with %s; upstream: in-process fake iAdvize on loopback answering logins in %s\n"+
		"- Settings: %d rounds of %s per measurement; %d-read lease run; %d roles in the memory run; %s run with 30-second tokens\n",
		strings.Join(keptTitles, ", "), cmd, r.started.UTC().Format("2006-01-02 15:04 MST"), time.Since(r.started).Round(time.Second),
		runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, strings.Join(strings.Fields(string(load) + " ? ? ?")[:3], " "), r.source,
		r.vaultVersion, runtime.Version(), upstreamLatency, r.opts.rounds, r.opts.cell, r.opts.leaseReads, r.opts.roles, r.opts.duration)
}

// write writes the report, sections in their order. The profile section is
// the "before" of the code being changed: when the file already holds a
// "before" profile measured on other code, it is kept, and this run's profile
// becomes the "after" (remove the file to start again). The sections of
// keptTitles are copied from the old file.
func (r *report) write(path string) error {
	if path == "" {
		return nil
	}
	old, _ := os.ReadFile(path)
	before := previousBefore(string(old), r.source)
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

// previousBefore returns the "before" profile section of an earlier report,
// saying the code and date it measured, unless it measured the same code as
// this run (source) or there is none.
func previousBefore(old, source string) string {
	sec := sectionOf(old, profileTitle+" (before)")
	if sec != "" && !strings.Contains(sec, "\nMeasured on ") { // written by the last run: say what it measured
		field := func(name string) string {
			_, v, _ := strings.Cut(old, "\n- "+name+": ")
			v, _, _ = strings.Cut(v, "\n")
			return v
		}
		date, _, _ := strings.Cut(field("Date"), " (took")
		head, body, _ := strings.Cut(sec, "\n")
		sec = head + "\n\nMeasured on " + date + ", plugin at " + field("Plugin measured") + ".\n\n" + strings.TrimLeft(body, "\n")
	}
	if strings.Contains(sec, "plugin at "+source+".") {
		return ""
	}
	return sec
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

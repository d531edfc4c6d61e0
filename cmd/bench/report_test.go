package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A run rewrites the report but keeps the sections other commands write.
func TestReportKeepsSectionsWrittenByOtherCommands(t *testing.T) {
	path := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	kept := "## Profile of the read path (before)\n\nolder code\n\n## Capacity on the injected clock\n\nmeasured elsewhere\n"
	old := "# Benchmarks on a real Vault\n\n## Logins\n\nold figures\n\n" + kept + "\n## Other\n\ngone\n"
	if err := os.WriteFile(path, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	r := &report{}
	r.add(section{order: 30, title: "Logins", body: "new figures\n"})
	if err := r.write(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	got := string(b)
	if !strings.Contains(got, "new figures") || strings.Contains(got, "old figures") || strings.Contains(got, "gone") {
		t.Fatalf("report not rewritten:\n%s", got)
	}
	if !strings.Contains(got, kept) {
		t.Fatalf("the kept sections were not kept:\n%s", got)
	}
}

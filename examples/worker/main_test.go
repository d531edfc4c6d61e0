package main

import (
	"bytes"
	"os"
	"strings"
	"syscall"
	"testing"
)

func TestWorkerRecordsFingerprintNotToken(t *testing.T) {
	const token = "tok-0123456789abcdef"
	var out bytes.Buffer
	stop := make(chan os.Signal, 1)
	stop <- syscall.SIGTERM
	if code := run(token, "IADVIZE_TOKEN", 42, &out, stop); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	want := "worker started pid=42 token=sha256:" + Fingerprint(token) + "\nworker stopping pid=42\n"
	if out.String() != want {
		t.Fatalf("output mismatch: got %q", strings.ReplaceAll(out.String(), token, "[TOKEN]"))
	}
	if strings.Contains(out.String(), token) || len(Fingerprint(token)) != 12 {
		t.Fatal("the output holds the token, or the fingerprint is not 12 hex digits")
	}
}

func TestWorkerWithoutTokenExits1(t *testing.T) {
	var out bytes.Buffer
	if code := run("", "IADVIZE_TOKEN", 7, &out, make(chan os.Signal)); code != 1 {
		t.Fatalf("exit code %d, want 1", code)
	}
	if !strings.Contains(out.String(), "refused to start pid=7: IADVIZE_TOKEN is empty") {
		t.Fatalf("output %q", out.String())
	}
}

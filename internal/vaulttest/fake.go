package vaulttest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
)

// FakeBin is the fake-iadvize binary: $FAKE_BIN or a fresh build of
// cmd/fake-iadvize.
func FakeBin(t TB) string {
	return Binary(t, "FAKE_BIN", "./cmd/fake-iadvize")
}

// Fake is a fake-iadvize process (cmd/fake-iadvize) on 127.0.0.1, driven through
// its admin API under /_fake/. FakeAt gives one for a process started elsewhere.
type Fake struct {
	URL     string // http://127.0.0.1:PORT
	LogPath string // the process's combined output ("" for FakeAt)
	cmd     *exec.Cmd
}

// StartFake starts bin (FakeBin(t) when empty) on a free loopback port, with no
// users or clients, and waits until it listens. It is stopped at cleanup.
func StartFake(t TB, bin string) *Fake {
	t.Helper()
	if bin == "" {
		bin = FakeBin(t)
	}
	dir := t.TempDir()
	addrFile := filepath.Join(dir, "fake.addr")
	f := &Fake{LogPath: filepath.Join(dir, "fake.log")}
	logf, err := os.OpenFile(f.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatalf("%v", err)
	}
	defer logf.Close() // the child has its own copy
	cmd := exec.Command(bin, "-listen", "127.0.0.1:0", "-addr-file", addrFile)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting fake-iadvize: %v", err)
	}
	f.cmd = cmd
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { stopProcess(cmd.Process.Pid, exited) })
	WaitFor(t, 30*time.Second, "fake-iadvize listening", func() error {
		select {
		case <-exited:
			t.Fatalf("fake-iadvize exited at start; its log:\n%s", tail(f.LogPath, 4000))
		default:
		}
		b, err := os.ReadFile(addrFile)
		if err == nil && len(b) == 0 {
			err = fmt.Errorf("%s is empty", addrFile)
		}
		f.URL = strings.TrimSpace(string(b))
		return err
	})
	return f
}

// FakeAt is the Fake whose base URL is url, started by another process.
func FakeAt(url string) *Fake { return &Fake{URL: url} }

// stopProcess ends the process group pid (SIGTERM, then SIGKILL after 20 s)
// and waits until exited is closed.
func stopProcess(pid int, exited <-chan struct{}) {
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-exited
	}
}

// Pid is the process id (and process group) of a started fake.
func (f *Fake) Pid() int { return f.cmd.Process.Pid }

// AddUser adds a password-grant user (POST /_fake/users). The password is sent
// in the request body only.
func (f *Fake) AddUser(t TB, username, password string) {
	t.Helper()
	f.post(t, "/_fake/users", map[string]string{"username": username, "password": password})
}

// AddClient adds a confidential client (POST /_fake/clients).
func (f *Fake) AddClient(t TB, clientID, secret string) {
	t.Helper()
	f.post(t, "/_fake/clients", map[string]string{"client_id": clientID, "client_secret": secret})
}

// RevokeAll makes every token the fake issued so far invalid at /_authenticated
// and at its API (POST /_fake/revoke); tokens issued later are valid.
func (f *Fake) RevokeAll(t TB) {
	t.Helper()
	f.post(t, "/_fake/revoke", struct{}{})
}

func (f *Fake) post(t TB, path string, body any) {
	t.Helper()
	b, _ := json.Marshal(body)
	resp, err := http.Post(f.URL+path, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("POST %s: %s", path, resp.Status)
	}
}

// Stats reads the fake's counters (GET /_fake/stats).
func (f *Fake) Stats(t TB) fakeiadvize.Stats {
	t.Helper()
	var st fakeiadvize.Stats
	f.get(t, "/_fake/stats", "", &st)
	return st
}

// Accepts asks the fake whether tok is one of its valid tokens (GET
// /_authenticated with it as a bearer token).
func (f *Fake) Accepts(t TB, tok string) bool {
	t.Helper()
	var body struct {
		Authenticated bool `json:"authenticated"`
	}
	f.get(t, "/_authenticated", tok, &body)
	return body.Authenticated
}

func (f *Fake) get(t TB, path, bearer string, out any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, f.URL+path, nil)
	if err != nil {
		t.Fatalf("%v", err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatalf("decoding GET %s: %v", path, err)
	}
}

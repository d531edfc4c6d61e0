package main

import (
	"fmt"
	"os"
	"sync"
)

// runTB is the vaulttest.TB of the benchmark program. Fatalf panics with a
// fatalError that main recovers; Cleanup functions run, last first, when the
// program ends, however it ends (Fatalf, a signal, or normally), so no Vault
// process outlives the benchmark.
type runTB struct {
	mu        sync.Mutex
	cleanups  []func()
	done      bool
	verbose   bool
	cleanOnce sync.Once
}

type fatalError struct{ msg string }

func (e fatalError) Error() string { return e.msg }

func (t *runTB) Helper() {}

func (t *runTB) Logf(format string, args ...any) {
	if t.verbose {
		fmt.Fprintf(os.Stderr, "  "+format+"\n", args...)
	}
}

func (t *runTB) Fatalf(format string, args ...any) {
	panic(fatalError{fmt.Sprintf(format, args...)})
}

func (t *runTB) Skipf(format string, args ...any) {
	panic(fatalError{"cannot run: " + fmt.Sprintf(format, args...)})
}

func (t *runTB) Cleanup(f func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done {
		// Already cleaning up (a signal arrived): run it now.
		defer f()
		return
	}
	t.cleanups = append(t.cleanups, f)
}

func (t *runTB) TempDir() string {
	dir, err := os.MkdirTemp("", "iadvize-bench-")
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// runCleanups runs the registered cleanups, last first, once; a concurrent
// caller (main returning while a signal is handled) waits until they are done.
func (t *runTB) runCleanups() {
	t.cleanOnce.Do(t.cleanup)
}

func (t *runTB) cleanup() {
	t.mu.Lock()
	fs := t.cleanups
	t.cleanups = nil
	t.done = true
	t.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		func() {
			defer func() { recover() }() // a failing cleanup must not stop the others
			fs[i]()
		}()
	}
}

// scope is a group of cleanups run together before the program ends (a server
// that only one phase needs). It is also a vaulttest.TB.
type scope struct {
	*runTB
	mu  sync.Mutex
	fns []func()
}

func newScope(parent *runTB) *scope {
	s := &scope{runTB: parent}
	parent.Cleanup(s.close)
	return s
}

func (s *scope) Cleanup(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fns = append(s.fns, f)
}

func (s *scope) TempDir() string {
	dir, err := os.MkdirTemp("", "iadvize-bench-")
	if err != nil {
		s.Fatalf("%v", err)
	}
	s.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// close runs the scope's cleanups, last first; later calls do nothing.
func (s *scope) close() {
	s.mu.Lock()
	fs := s.fns
	s.fns = nil
	s.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		func() {
			defer func() { recover() }()
			fs[i]()
		}()
	}
}

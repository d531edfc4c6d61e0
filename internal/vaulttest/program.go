package vaulttest

import (
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// Program is the TB of a program that is not a test (the demos and the
// benchmark): Fatalf stops the program with exit code 1, and Cleanup functions
// run, last first, when it ends, however it ends (Fatalf, SIGINT/SIGTERM, or
// normally), so no Vault process outlives it. Use it through RunProgram.
type Program struct {
	// Verbose makes Logf print to stderr; otherwise Logf is silent.
	Verbose bool

	mu        sync.Mutex
	cleanups  []func()
	done      bool
	cleanOnce sync.Once
}

var _ TB = (*Program)(nil)

// fatal is the panic value of Program.Fatalf; RunProgram recovers it.
type fatal struct{ msg string }

// RunProgram runs f with a Program and exits the process: with f's code, with 1
// after a Fatalf (its message printed to stderr as "FAILED: ..."), or with 130
// on SIGINT/SIGTERM. The cleanups run before each exit. It does not return.
func RunProgram(verbose bool, f func(t *Program) int) {
	t := &Program{Verbose: verbose}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "%v: stopping the servers\n", s)
		t.runCleanups()
		os.Exit(130)
	}()
	code := func() (code int) {
		defer func() {
			if r := recover(); r != nil {
				fe, ok := r.(fatal)
				if !ok {
					t.runCleanups()
					panic(r)
				}
				fmt.Fprintf(os.Stderr, "FAILED: %s\n", fe.msg)
				code = 1
			}
		}()
		return f(t)
	}()
	t.runCleanups()
	os.Exit(code)
}

// Helper does nothing; it is part of TB.
func (t *Program) Helper() {}

// Logf prints to stderr when t.Verbose is set.
func (t *Program) Logf(format string, args ...any) {
	if t.Verbose {
		fmt.Fprintf(os.Stderr, "  "+format+"\n", args...)
	}
}

// Fatalf stops the program (see RunProgram).
func (t *Program) Fatalf(format string, args ...any) {
	panic(fatal{fmt.Sprintf(format, args...)})
}

// Skipf stops the program like Fatalf: a program cannot skip what it needs.
func (t *Program) Skipf(format string, args ...any) {
	panic(fatal{"cannot run: " + fmt.Sprintf(format, args...)})
}

// Cleanup registers f to run when the program ends; once the cleanups have
// started (a signal arrived), it runs f at once.
func (t *Program) Cleanup(f func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done {
		defer f()
		return
	}
	t.cleanups = append(t.cleanups, f)
}

// TempDir returns a new directory removed when the program ends.
func (t *Program) TempDir() string { return tempDir(t) }

// runCleanups runs the registered cleanups, last first, once; a concurrent
// caller (the program ending while a signal is handled) waits until they are
// done.
func (t *Program) runCleanups() {
	t.cleanOnce.Do(func() {
		t.mu.Lock()
		fs := t.cleanups
		t.cleanups = nil
		t.done = true
		t.mu.Unlock()
		runLastFirst(fs)
	})
}

// Scope is a group of cleanups run together before the program ends (a server
// that only one phase needs). It is a TB; Close runs its cleanups.
type Scope struct {
	*Program
	mu  sync.Mutex
	fns []func()
}

// NewScope returns a Scope whose cleanups run at Close, or when p ends.
func NewScope(p *Program) *Scope {
	s := &Scope{Program: p}
	p.Cleanup(s.Close)
	return s
}

// Cleanup registers f to run at Close.
func (s *Scope) Cleanup(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fns = append(s.fns, f)
}

// TempDir returns a new directory removed at Close.
func (s *Scope) TempDir() string { return tempDir(s) }

// Close runs the scope's cleanups, last first; later calls do nothing.
func (s *Scope) Close() {
	s.mu.Lock()
	fs := s.fns
	s.fns = nil
	s.mu.Unlock()
	runLastFirst(fs)
}

func tempDir(t TB) string {
	dir, err := os.MkdirTemp("", "iadvize-")
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// runLastFirst runs fs in reverse order; a failing one does not stop the others.
func runLastFirst(fs []func()) {
	for i := len(fs) - 1; i >= 0; i-- {
		func() {
			defer func() { recover() }()
			fs[i]()
		}()
	}
}

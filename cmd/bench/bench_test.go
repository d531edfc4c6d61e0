package main

import (
	"sync"
	"testing"
)

// The in-process benchmarks of the report's profile section, for `go test`:
//
//	go test -run '^$' -bench . -benchmem ./cmd/bench/
//	go test -run '^$' -bench 'Read/creds$' -cpuprofile cpu.prof ./cmd/bench/
var mounts = sync.OnceValues(func() ([]inprocCase, error) {
	small, err := newInproc(64, false)
	if err != nil {
		return nil, err
	}
	big, err := newInproc(10000, true)
	if err != nil {
		return nil, err
	}
	noop, err := newNoopInproc()
	return inprocCases(small, noop, big, 10000), err
})

func BenchmarkRead(b *testing.B) {
	cases, err := mounts()
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range cases {
		b.Run(c.short, c.f)
	}
}

func TestInprocReadsHitTheCache(t *testing.T) {
	ip, err := newInproc(3, false)
	if err != nil {
		t.Fatal(err)
	}
	defer ip.close()
	before, logins := ip.storage.ops.Load(), ip.fake.Stats().LoginAttempts
	for range 100 {
		for _, p := range []string{"creds/r0", "static-creds/r1", "creds/r2"} {
			if err := ip.handle("read", p, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	if ops := ip.storage.ops.Load() - before; ops != 0 {
		t.Errorf("cached reads made %d storage operations", ops)
	}
	if n := ip.fake.Stats().LoginAttempts - logins; n != 0 {
		t.Errorf("cached reads logged in %d times", n)
	}
}

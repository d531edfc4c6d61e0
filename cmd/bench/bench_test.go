package main

import (
	"sync"
	"testing"
)

// The in-process benchmarks of the report's profile section, for `go test`:
//
//	go test -run '^$' -bench . -benchmem ./cmd/bench/
//	go test -run '^$' -bench 'Read/creds$' -cpuprofile cpu.prof ./cmd/bench/

const benchRoles = 10000

var (
	mountsOnce          sync.Once
	smallM, bigM, noopM *inproc
	mountsErr           error
)

func mounts(b *testing.B) (small, big, noop *inproc) {
	b.Helper()
	mountsOnce.Do(func() {
		if smallM, mountsErr = newInproc(64); mountsErr != nil {
			return
		}
		if bigM, _, mountsErr = bigInproc(benchRoles); mountsErr != nil {
			return
		}
		noopM, mountsErr = newNoopInproc()
	})
	if mountsErr != nil {
		b.Fatal(mountsErr)
	}
	return smallM, bigM, noopM
}

func BenchmarkRead(b *testing.B) {
	small, big, noop := mounts(b)
	b.Run("creds", readBench(small, "creds/", 1))
	b.Run("static-creds", readBench(small, "static-creds/", 1))
	b.Run("noop", readBench(noop, "data/", 1))
	b.Run("static-creds-10-roles", readBench(big, "static-creds/", 10))
	b.Run("static-creds-10000-roles", readBench(big, "static-creds/", benchRoles))
}

func BenchmarkReadParallel(b *testing.B) {
	small, _, _ := mounts(b)
	b.Run("creds-one-role", parallelReadBench(small, "creds/", 32, false))
	b.Run("creds-64-roles", parallelReadBench(small, "creds/", 32, true))
}

func TestInprocReadsHitTheCache(t *testing.T) {
	ip, err := newInproc(3)
	if err != nil {
		t.Fatal(err)
	}
	defer ip.close()
	before := ip.storage.ops()
	logins := ip.fake.Stats().LoginAttempts
	for range 100 {
		for _, p := range []string{"creds/r0", "static-creds/r1", "creds/r2"} {
			if _, err := ip.read(p); err != nil {
				t.Fatal(err)
			}
		}
	}
	if ops := ip.storage.ops() - before; ops != 0 {
		t.Errorf("cached reads made %d storage operations", ops)
	}
	if n := ip.fake.Stats().LoginAttempts - logins; n != 0 {
		t.Errorf("cached reads logged in %d times", n)
	}
}

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/vaulttest"
)

// leaseSnapshot is what the server holds at one moment: leases, the file
// storage and its sys/expire directory, Vault's RSS and live heap.
type leaseSnapshot struct {
	leases          int
	storage, expire dirUsage
	rss, heap       int64
}

// leasePhase reads creds/ and static-creds/ the same number of times on a
// server with file storage, in interleaved chunks, and reports what each left
// behind: leases, storage files and bytes, and Vault's memory.
func leasePhase(t *vaulttest.Program, opts options) section {
	sc := vaulttest.NewScope(t)
	defer sc.Close()
	logf("leases: starting a Vault server with file storage")
	v := startVault(sc, true)
	v.mountIadvize(sc, "iadvize", startFake(sc, fakeiadvize.Options{}), nil, "app")
	ld := newLoader(v.Addr, v.benchToken(sc, "iadvize/*"), 64)
	if r := ld.attack(attack{paths: []string{"iadvize/static-creds/app"}, conc: 1, n: 1}); r.Errors > 0 { // the login
		sc.Fatalf("first read: %s", r.FirstErr)
	}
	expireDir := filepath.Join(v.dataDir, "sys", "expire")
	snap := func() leaseSnapshot {
		return leaseSnapshot{v.leaseCount(sc, "iadvize/creds/app/"), usage(v.dataDir), usage(expireDir), rss(v.Pid()), v.liveHeap()}
	}
	// acc is one path's sum of the chunks' deltas.
	type acc struct {
		path                  string
		reads, errors, leases int
		storage, expire       dirUsage
		rss, heap             int64
		rates                 rounds
	}
	accs := []*acc{{path: "iadvize/creds/app"}, {path: "iadvize/static-creds/app"}}
	const chunks = 5
	per := max(opts.leaseReads/chunks, 1)
	first := snap()
	before := first
	interleave("leases", chunks, accs, func(a *acc) loadResult {
		r := ld.attack(attack{paths: []string{a.path}, conc: 8, n: per})
		after := snap()
		a.reads, a.errors, a.leases = a.reads+r.Reads, a.errors+r.Errors, a.leases+after.leases-before.leases
		a.storage.addDelta(after.storage, before.storage)
		a.expire.addDelta(after.expire, before.expire)
		a.rss, a.heap = a.rss+after.rss-before.rss, a.heap+after.heap-before.heap
		a.rates, before = append(a.rates, r), after
		return r
	})
	c, s := accs[0], accs[1]

	var b strings.Builder
	fmt.Fprintf(&b, "A Vault server with `storage \"file\"`, one role, a non-root token; %s reads of each path by 8 clients, in %d\n"+
		"interleaved chunks. Live heap: Vault's HeapAlloc right after a forced GC (`sys/pprof/heap?gc=1`); RSS is shown\n"+
		"for completeness. Every lease is a file under `sys/expire/id/` holding an encrypted copy of the answer (the\n"+
		"access token included), plus an entry in the token's lease index under `sys/expire/token/`; all of it stays\n"+
		"until the lease expires (here: the token's 24-hour life less 30 s) or is revoked.\n\n", fmtInt(per*chunks), chunks)
	var rows [][]string
	for _, a := range accs {
		rows = append(rows, []string{"`" + a.path + "`", fmtInt(a.reads), fmtInt(a.leases), fmtInt(a.storage.Files), fmtBytes(a.storage.Bytes),
			fmtBytes(a.storage.DiskBytes), fmtBytes(a.expire.Bytes), fmtBytes(a.heap), fmtBytes(a.rss), f0(a.rates.med(loadResult.rate))})
	}
	b.WriteString(table([]string{"path", "reads", "new leases", "new storage files", "storage bytes", "on disk", "of which sys/expire",
		"Vault live heap Δ", "Vault RSS Δ", "reads/s (median chunk)"}, rows))
	perRead := func(n int64) float64 { return float64(n) / float64(max(c.reads, 1)) }
	fmt.Fprintf(&b, "\nPer creds/ read: %.2f leases, %.2f files, %s of storage (%s on disk), %s of Vault live heap\n"+
		"(static-creds/: %s per read, i.e. noise).\n", perRead(int64(c.leases)), perRead(c.storage.Files), fmtBytes(int64(perRead(c.storage.Bytes))),
		fmtBytes(int64(perRead(c.storage.DiskBytes))), fmtBytes(int64(perRead(c.heap))), fmtBytes(s.heap/int64(max(s.reads, 1))))
	fmt.Fprintf(&b, "creds/ reads/s ÷ static-creds/ reads/s on file storage, median of the chunks' ratios: %.2f.\n", c.rates.vs(s.rates))

	// Leases live as long as the token (24 h less the 30 s margin): at a
	// steady read rate, that many seconds of reads are alive at once.
	const leaseLife = 24*3600 - 30
	fmt.Fprintf(&b, "\nAt a steady rate of creds/ reads with 24-hour tokens, Vault holds rate × %s leases at any time\n"+
		"(Vault warns above 256,000). From the per-read figures above:\n\n", fmtInt(leaseLife))
	rows = nil
	for _, rate := range []float64{0.1, 1, 10} {
		n := rate * leaseLife
		rows = append(rows, []string{fmt.Sprint(rate), fmtInt(int64(n)), fmtBytes(int64(n * perRead(c.storage.Bytes))),
			fmtBytes(int64(n * perRead(c.storage.DiskBytes))), fmtBytes(int64(n * perRead(c.heap)))})
	}
	b.WriteString(table([]string{"creds/ reads per second (all clients)", "live leases", "storage", "on disk (file storage)", "Vault heap"}, rows))
	fmt.Fprintf(&b, "\nLive leases under `iadvize/creds/app/`: %s before, %s after. `sys/expire` after the run:\n\n", fmtInt(first.leases), fmtInt(before.leases))
	rows = nil
	subs, _ := os.ReadDir(expireDir) // sorted by name
	for _, sub := range subs {
		u := usage(filepath.Join(expireDir, sub.Name()))
		rows = append(rows, []string{"`sys/expire/" + sub.Name() + "/`", fmtInt(u.Files), fmtBytes(u.Bytes), fmtBytes(u.DiskBytes)})
	}
	b.WriteString(table([]string{"directory", "files", "bytes", "on disk"}, rows))
	if c.errors+s.errors > 0 {
		fmt.Fprintf(&b, "\nErrors: %d on creds/, %d on static-creds/.\n", c.errors, s.errors)
	}
	return section{order: 20, title: "What leases cost", body: b.String()}
}

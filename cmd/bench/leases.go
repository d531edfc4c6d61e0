package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/vaulttest"
)

// leaseSnapshot is what the server holds at one moment.
type leaseSnapshot struct {
	leases   int
	storage  dirUsage // the whole file storage
	expire   dirUsage // its sys/expire directory (leases and their token index)
	vaultRSS int64
	heap     int64 // Vault's live heap after a GC
}

// leasePhase reads creds/ and static-creds/ the same number of times on a
// server with file storage, in interleaved chunks, and reports what each left
// behind: leases, storage files and bytes, and Vault's memory.
func leasePhase(t *vaulttest.Program, bins binaries, opts options) section {
	sc := vaulttest.NewScope(t)
	defer sc.Close()
	logf("leases: starting a Vault server with file storage")
	v := startFileServer(sc, bins)
	v.mountIadvize(sc, "iadvize", startFake(sc, fakeiadvize.Options{}, opts.upstreamLatency), nil, "app")
	ld := newLoader(v.Addr, v.benchToken(sc, "iadvize/*"), 64)
	if r := ld.runN([]string{"iadvize/static-creds/app"}, 1, 1); r.Errors > 0 { // the login
		sc.Fatalf("first read: %s", r.FirstErr)
	}

	snap := func() leaseSnapshot {
		return leaseSnapshot{
			leases:   v.leaseCount(sc, "iadvize/creds/app/"),
			storage:  usage(v.dataDir),
			expire:   usage(filepath.Join(v.dataDir, "sys", "expire")),
			vaultRSS: rss(v.Pid()),
			heap:     v.liveHeap(),
		}
	}
	type acc struct {
		reads, errors, leases int
		storage, expire       dirUsage
		rss, heap             int64
		rates                 []float64
	}
	kinds := []struct{ key, path string }{{"creds", "iadvize/creds/app"}, {"static", "iadvize/static-creds/app"}}
	accs := map[string]*acc{"creds": {}, "static": {}}
	var ratios []float64
	const chunks = 5
	per := max(opts.leaseReads/chunks, 1)
	first := snap()
	before := first
	for c := range chunks {
		rates := map[string]float64{}
		for i := range kinds {
			k := kinds[(i+c)%len(kinds)]
			r := ld.runN([]string{k.path}, 8, per)
			after := snap()
			a := accs[k.key]
			a.reads += r.Reads
			a.errors += r.Errors
			a.leases += after.leases - before.leases
			a.storage = a.storage.add(after.storage, 1).add(before.storage, -1)
			a.expire = a.expire.add(after.expire, 1).add(before.expire, -1)
			a.rss += after.vaultRSS - before.vaultRSS
			a.heap += after.heap - before.heap
			a.rates = append(a.rates, r.rate())
			rates[k.key] = r.rate()
			before = after
		}
		ratios = append(ratios, rates["creds"]/rates["static"])
		logf("leases: chunk %d/%d done", c+1, chunks)
	}
	last := before

	var b strings.Builder
	fmt.Fprintf(&b, "A Vault server with `storage \"file\"`, one role, a non-root token; %s reads of each path by 8 clients, in %d\n"+
		"interleaved chunks. Live heap: Vault's HeapAlloc right after a forced GC (`sys/pprof/heap?gc=1`); RSS moves\n"+
		"with the garbage collector and is shown for completeness. Every lease is a file under `sys/expire/id/` holding\n"+
		"an encrypted copy of the answer (the access token included), plus an entry in the token's lease index under\n"+
		"`sys/expire/token/`; nothing of this is freed until the lease expires (here: the token's 24-hour life less\n"+
		"30 s) or is revoked.\n\n",
		fmtInt(per*chunks), chunks)
	head := []string{"path", "reads", "new leases", "new storage files", "storage bytes", "on disk", "of which sys/expire", "Vault live heap Δ", "Vault RSS Δ", "reads/s (median chunk)"}
	var rows [][]string
	for _, k := range kinds {
		a := accs[k.key]
		rows = append(rows, []string{"`" + k.path + "`", fmtInt(a.reads), fmtInt(a.leases), fmtInt(a.storage.Files),
			fmtBytes(a.storage.Bytes), fmtBytes(a.storage.DiskBytes), fmtBytes(a.expire.Bytes), fmtBytes(a.heap), fmtBytes(a.rss),
			fmt.Sprintf("%.0f", median(a.rates))})
	}
	b.WriteString(table(head, rows))
	c := accs["creds"]
	if c.reads > 0 {
		s := accs["static"]
		fmt.Fprintf(&b, "\nPer creds/ read: %.2f leases, %.2f files, %s of storage (%s on disk), %s of Vault live heap\n"+
			"(static-creds/: %s per read, i.e. noise).\n",
			float64(c.leases)/float64(c.reads), float64(c.storage.Files)/float64(c.reads),
			fmtBytes(c.storage.Bytes/int64(c.reads)), fmtBytes(c.storage.DiskBytes/int64(c.reads)), fmtBytes(c.heap/int64(c.reads)),
			fmtBytes(s.heap/int64(max(s.reads, 1))))
	}
	fmt.Fprintf(&b, "creds/ reads/s ÷ static-creds/ reads/s on file storage, median of the chunks' ratios: %.2f.\n", median(ratios))
	if c.reads > 0 {
		// Leases live as long as the token (24 h less the 30 s margin): at a
		// steady read rate, that many seconds of reads are alive at once.
		const leaseLife = 24*3600 - 30
		perLease := func(total int64) float64 { return float64(total) / float64(c.reads) }
		fmt.Fprintf(&b, "\nAt a steady rate of creds/ reads with 24-hour tokens, Vault holds rate × %s leases at any time\n"+
			"(Vault warns above 256,000). From the per-read figures above:\n\n", fmtInt(leaseLife))
		var prow [][]string
		for _, rate := range []float64{0.1, 1, 10} {
			n := rate * leaseLife
			prow = append(prow, []string{fmt.Sprintf("%g", rate), fmtInt(int64(n)),
				fmtBytes(int64(n * perLease(c.storage.Bytes))), fmtBytes(int64(n * perLease(c.storage.DiskBytes))),
				fmtBytes(int64(n * perLease(c.heap)))})
		}
		b.WriteString(table([]string{"creds/ reads per second (all clients)", "live leases", "storage", "on disk (file storage)", "Vault heap"}, prow))
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "Live leases under `iadvize/creds/app/`: %s before, %s after. `sys/expire` after the run:\n\n",
		fmtInt(first.leases), fmtInt(last.leases))
	var srows [][]string
	subs, _ := os.ReadDir(filepath.Join(v.dataDir, "sys", "expire")) // sorted by name
	for _, sub := range subs {
		u := usage(filepath.Join(v.dataDir, "sys", "expire", sub.Name()))
		srows = append(srows, []string{"`sys/expire/" + sub.Name() + "/`", fmtInt(u.Files), fmtBytes(u.Bytes), fmtBytes(u.DiskBytes)})
	}
	b.WriteString(table([]string{"directory", "files", "bytes", "on disk"}, srows))
	if c.errors+accs["static"].errors > 0 {
		fmt.Fprintf(&b, "\nErrors: %d on creds/, %d on static-creds/.\n", c.errors, accs["static"].errors)
	}
	return section{order: 20, title: "What leases cost", body: b.String()}
}

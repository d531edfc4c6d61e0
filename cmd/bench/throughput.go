package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/vaulttest"
)

// mainEnv is the dev server of the throughput and login phases: the plugin at
// iadvize/ (role app), a KV version 1 mount at kv1/ and the do-nothing plugin at
// noop/, read with a non-root token.
type mainEnv struct {
	t     vaulttest.TB
	v     *vault
	fake  *fake
	token string // the clients' token: never printed
}

func setupMain(t *vaulttest.Program, bins binaries, opts options) *mainEnv {
	logf("starting the main Vault dev server")
	v := startDev(t, bins)
	f := startFake(t, fakeiadvize.Options{}, opts.upstreamLatency)
	v.mountIadvize(t, "iadvize", f, nil, "app")
	v.mount(t, "noop", noopPluginName, nil)
	v.mount(t, "kv1", "kv", map[string]string{"version": "1"})
	token := v.benchToken(t, "iadvize/*", "iadvize-short/*", "kv1/*", "noop/*")

	// The first read logs in; the KV secret then gets data of the same size.
	creds, err := v.Client.Logical().Read("iadvize/static-creds/app")
	if err != nil || creds == nil {
		t.Fatalf("reading static-creds/app: %v", err)
	}
	at, _ := creds.Data["access_token"].(string)
	tt, _ := creds.Data["token_type"].(string)
	et, _ := creds.Data["expire_time"].(string)
	if at == "" || tt == "" || et == "" {
		t.Fatalf("static-creds/app answered without access_token, token_type or expire_time")
	}
	v.write(t, "kv1/app", map[string]any{"access_token": strings.Repeat("k", len(at)), "token_type": tt, "expire_time": et})
	return &mainEnv{t: t, v: v, fake: f, token: token}
}

// benchPath is one of the paths the throughput phase compares.
type benchPath struct {
	key, label, path string
	plugin           string // the process that serves it besides Vault, "" for none
}

var throughputPaths = []benchPath{
	{"creds", "`iadvize/creds/app` (leased)", "iadvize/creds/app", vaulttest.PluginName},
	{"static", "`iadvize/static-creds/app`", "iadvize/static-creds/app", vaulttest.PluginName},
	{"kv", "`kv1/app` (KV v1, reference)", "kv1/app", ""},
	{"noop", "`noop/data/app` (do-nothing plugin, reference)", "noop/data/app", noopPluginName},
}

var concurrencies = []int{1, 8, 64}

func throughputPhase(m *mainEnv, opts options) section {
	ld := newLoader(m.v.Addr, m.token, 256)
	vpid := m.v.Pid()
	leases0, heap0 := m.v.leaseCount(m.t, "iadvize/creds/app/"), m.v.liveHeap()

	logf("throughput: warming up")
	for _, p := range throughputPaths {
		r := ld.run([]string{p.path}, 8, time.Second, 0, 0)
		if r.Errors > 0 {
			m.t.Fatalf("%s: %d of %d reads failed (first: %s)", p.path, r.Errors, r.Reads+r.Errors, r.FirstErr)
		}
	}

	res := map[string]map[int][]loadResult{"creds": {}, "static": {}, "kv": {}, "noop": {}}
	for round := range opts.rounds {
		for _, c := range concurrencies {
			// Each round starts with another path, so that none always runs first.
			for i := range throughputPaths {
				p := throughputPaths[(i+round)%len(throughputPaths)]
				r := ld.run([]string{p.path}, c, opts.cell, vpid, m.v.pluginPid(p.plugin))
				res[p.key][c] = append(res[p.key][c], r)
			}
		}
		logf("throughput: round %d/%d done (creds/ at 8 clients: %.0f reads/s)", round+1, opts.rounds, res["creds"][8][round].rate())
	}
	leases1, heap1 := m.v.leaseCount(m.t, "iadvize/creds/app/"), m.v.liveHeap()
	experiment := replicationStateExperiment(m, ld, opts)

	var b strings.Builder
	fmt.Fprintf(&b, "Reads of one role's token by N concurrent clients (plain `net/http`, keep-alive, `X-Vault-Token` of a\n"+
		"non-root token with a policy), each measurement %s long, %d interleaved rounds (each path once per round and\n"+
		"concurrency, the starting path rotating). Every figure is the median over the rounds; a ratio is computed within\n"+
		"each round (the two paths measured seconds apart on the same server) and then its median taken. \"×KV\" is\n"+
		"reads/s of the path divided by reads/s of the KV read; above 1 is faster. CPU columns: CPU time of the Vault\n"+
		"process and of the plugin process during the measurement divided by the reads (/proc, 10 ms ticks).\n\n",
		opts.cell, opts.rounds)
	head := []string{"path", "clients", "reads/s", "p50", "p99", "×KV", "×noop", "Vault CPU µs/read", "plugin CPU µs/read", "bytes/read", "errors"}
	var rows [][]string
	for _, c := range concurrencies {
		for _, p := range throughputPaths {
			var rates, vsKV, vsNoop, vcpu, pcpu []float64
			var p50s, p99s []time.Duration
			var errs, reads int
			var bytes uint64
			for i, r := range res[p.key][c] {
				rates, vcpu, pcpu = append(rates, r.rate()), append(vcpu, r.perRead(r.VaultCPU)), append(pcpu, r.perRead(r.PluginCPU))
				vsKV, vsNoop = append(vsKV, r.rate()/res["kv"][c][i].rate()), append(vsNoop, r.rate()/res["noop"][c][i].rate())
				p50s, p99s = append(p50s, r.pct(0.50)), append(p99s, r.pct(0.99))
				errs, reads, bytes = errs+r.Errors, reads+r.Reads, bytes+r.Bytes
			}
			plug := f0(median(pcpu))
			if p.plugin == "" {
				plug = "–"
			}
			rows = append(rows, []string{p.label, fmt.Sprint(c), f0(median(rates)), fmtDur(medianDur(p50s)), fmtDur(medianDur(p99s)),
				f2(median(vsKV)), f2(median(vsNoop)), f0(median(vcpu)), plug, fmt.Sprint(bytes / uint64(max(reads+errs, 1))), fmt.Sprint(errs)})
		}
	}
	b.WriteString(table(head, rows))
	fmt.Fprintf(&b, "\nDuring this phase the creds/ reads created %s leases on this (in-memory) dev server (%s → %s live\n"+
		"leases under `iadvize/creds/app/`); Vault's live heap (after a forced GC) went from %s to %s, %s per lease.\n"+
		"static-creds/, KV and the noop plugin create none.\n", fmtInt(leases1-leases0), fmtInt(leases0), fmtInt(leases1),
		fmtBytes(heap0), fmtBytes(heap1), fmtBytes((heap1-heap0)/int64(max(leases1-leases0, 1))))
	b.WriteString(experiment)
	return section{order: 10, title: "Read throughput and latency", body: b.String()}
}

// replicationStateExperiment compares the do-nothing plugin's data/ (a path
// with Operations) with its legacy/ (the same through Callbacks), which differ
// only by the ReplicationState call the framework makes for the former: in a
// plugin process, a gRPC round trip back to Vault on every request.
func replicationStateExperiment(m *mainEnv, ld *loader, opts options) string {
	logf("throughput: the framework's ReplicationState call")
	paths := []string{"noop/data/app", "noop/legacy/app"}
	res := map[string]map[int][]loadResult{paths[0]: {}, paths[1]: {}}
	concs := []int{1, 8}
	pid := m.v.pluginPid(noopPluginName)
	for round := range opts.rounds {
		for _, c := range concs {
			for i := range paths {
				p := paths[(i+round)%len(paths)]
				res[p][c] = append(res[p][c], ld.run([]string{p}, c, opts.cell, m.v.Pid(), pid))
			}
		}
	}
	var rows [][]string
	for _, c := range concs {
		var ratio, vcpu0, vcpu1, pcpu0, pcpu1 []float64
		var p50a, p50b []time.Duration
		for i, a := range res[paths[0]][c] {
			b := res[paths[1]][c][i]
			ratio = append(ratio, b.rate()/a.rate())
			vcpu0, vcpu1 = append(vcpu0, a.perRead(a.VaultCPU)), append(vcpu1, b.perRead(b.VaultCPU))
			pcpu0, pcpu1 = append(pcpu0, a.perRead(a.PluginCPU)), append(pcpu1, b.perRead(b.PluginCPU))
			p50a, p50b = append(p50a, a.pct(0.5)), append(p50b, b.pct(0.5))
		}
		rows = append(rows, []string{fmt.Sprint(c), f2(median(ratio)), fmtDur(medianDur(p50a)) + " / " + fmtDur(medianDur(p50b)),
			f0(median(vcpu0)) + " / " + f0(median(vcpu1)), f0(median(pcpu0)) + " / " + f0(median(pcpu1))})
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n**The sdk's per-request ReplicationState call.** For every request to a path declared with `Operations`,\n"+
		"`framework.(*Backend).HandleRequest` asks `b.System().ReplicationState()`, which in a plugin process is a gRPC\n"+
		"call back to Vault. The do-nothing plugin answers the same data at `noop/data/` (Operations) and `noop/legacy/`\n"+
		"(the deprecated Callbacks map, which skips that call); %d interleaved rounds of %s:\n\n", opts.rounds, opts.cell)
	b.WriteString(table([]string{"clients", "reads/s legacy ÷ data", "p50 data / legacy", "Vault CPU µs/read data / legacy", "plugin CPU µs/read data / legacy"}, rows))
	return b.String()
}

package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

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

func setupMain(t *vaulttest.Program) *mainEnv {
	logf("starting the main Vault dev server")
	v := startVault(t, false)
	f := startFake(t, fakeiadvize.Options{})
	v.mountIadvize(t, "iadvize", f, nil, "app")
	must(t, v.Client.Sys().Mount("noop", &api.MountInput{Type: noopPluginName}))
	must(t, v.Client.Sys().Mount("kv1", &api.MountInput{Type: "kv", Options: map[string]string{"version": "1"}}))
	token := v.benchToken(t, "iadvize/*", "iadvize-short/*", "kv1/*", "noop/*")
	// The first read logs in; the KV secret then gets data of the same size.
	creds, err := v.Client.Logical().Read("iadvize/static-creds/app")
	if err != nil || creds == nil {
		t.Fatalf("reading static-creds/app: %v", err)
	}
	data := map[string]any{}
	for _, k := range []string{"access_token", "token_type", "expire_time"} {
		if data[k], _ = creds.Data[k].(string); data[k] == "" {
			t.Fatalf("static-creds/app answered without %s", k)
		}
	}
	data["access_token"] = strings.Repeat("k", len(data["access_token"].(string)))
	_, err = v.Client.Logical().Write("kv1/app", data)
	must(t, err)
	return &mainEnv{t: t, v: v, fake: f, token: token}
}

// benchPath is one of the paths the throughput phase compares.
type benchPath struct {
	label, path string
	plugin      string // the process that serves it besides Vault, "" for none
}

// throughputPaths: KV and noop, the references, are third and fourth.
var throughputPaths = []benchPath{
	{"`iadvize/creds/app` (leased)", "iadvize/creds/app", vaulttest.PluginName},
	{"`iadvize/static-creds/app`", "iadvize/static-creds/app", vaulttest.PluginName},
	{"`kv1/app` (KV v1, reference)", "kv1/app", ""},
	{"`noop/data/app` (do-nothing plugin, reference)", "noop/data/app", noopPluginName},
}

// cell is one measurement: a path read by conc clients.
type cell struct {
	benchPath
	conc int
}

// cells are every path at every concurrency.
func cells(paths []benchPath, concs ...int) (cs []cell) {
	for _, c := range concs {
		for _, p := range paths {
			cs = append(cs, cell{p, c})
		}
	}
	return cs
}

func throughputPhase(m *mainEnv, opts options) section {
	ld := newLoader(m.v.Addr, m.token, 256)
	measure := func(c cell) loadResult { // c.conc clients read c.path
		return ld.attack(attack{paths: []string{c.path}, conc: c.conc, d: opts.cell, vaultPid: m.v.Pid(), pluginPid: m.v.pluginPid(c.plugin)})
	}
	leases0, heap0 := m.v.leaseCount(m.t, "iadvize/creds/app/"), m.v.liveHeap()
	logf("throughput: warming up")
	for _, p := range throughputPaths {
		if r := ld.attack(attack{paths: []string{p.path}, conc: 8, d: time.Second}); r.Errors > 0 {
			m.t.Fatalf("%s: %d of %d reads failed (first: %s)", p.path, r.Errors, r.Reads+r.Errors, r.FirstErr)
		}
	}
	cs := cells(throughputPaths, 1, 8, 64)
	res := interleave("throughput", opts.rounds, cs, measure)
	leases1, heap1 := m.v.leaseCount(m.t, "iadvize/creds/app/"), m.v.liveHeap()

	var b strings.Builder
	fmt.Fprintf(&b, "Reads of one role's token by N clients (vegeta, keep-alive, a non-root token), %d interleaved rounds of %s;\n"+
		"medians over the rounds, a ratio taken within each round. \"×KV\": reads/s ÷ the KV read's (above 1: faster).\n"+
		"CPU: of the Vault and of the plugin process during the measurement ÷ reads (/proc, 10 ms ticks).\n\n", opts.rounds, opts.cell)
	var rows [][]string
	for i, c := range cs {
		rs, ref := res[i], i-i%len(throughputPaths)
		var bytes uint64
		var n, errs int
		for _, r := range rs {
			bytes, n, errs = bytes+r.Bytes, n+r.Reads+r.Errors, errs+r.Errors
		}
		plug := f0(rs.med(loadResult.pluginCPU))
		if c.plugin == "" {
			plug = "–"
		}
		rows = append(rows, []string{c.label, fmt.Sprint(c.conc), f0(rs.med(loadResult.rate)), rs.dur(loadResult.p50), rs.dur(loadResult.p99),
			f2(rs.vs(res[ref+2])), f2(rs.vs(res[ref+3])), f0(rs.med(loadResult.vaultCPU)), plug, fmt.Sprint(bytes / uint64(max(n, 1))), fmt.Sprint(errs)})
	}
	b.WriteString(table([]string{"path", "clients", "reads/s", "p50", "p99", "×KV", "×noop", "Vault CPU µs/read", "plugin CPU µs/read", "bytes/read", "errors"}, rows))
	fmt.Fprintf(&b, "\nThe creds/ reads created %s leases on this (in-memory) dev server (%s → %s under `iadvize/creds/app/`);\n"+
		"Vault's live heap (after a forced GC) went from %s to %s, %s per lease. The other paths create none.\n",
		fmtInt(leases1-leases0), fmtInt(leases0), fmtInt(leases1), fmtBytes(heap0), fmtBytes(heap1), fmtBytes((heap1-heap0)/int64(max(leases1-leases0, 1))))

	// The do-nothing plugin's data/ (Operations) and legacy/ (Callbacks) differ
	// only by the ReplicationState call the framework makes for the former.
	logf("throughput: the framework's ReplicationState call")
	cs = cells([]benchPath{{"data", "noop/data/app", noopPluginName}, {"legacy", "noop/legacy/app", noopPluginName}}, 1, 8)
	res = interleave("ReplicationState", opts.rounds, cs, measure)
	fmt.Fprintf(&b, "\n**The sdk's per-request ReplicationState call**, a gRPC call back to Vault that `HandleRequest` makes for a path\n"+
		"with `Operations`: `noop/data/` (Operations) against `noop/legacy/` (deprecated Callbacks, no such call), %d rounds of %s:\n\n",
		opts.rounds, opts.cell)
	rows = nil
	for i := 0; i < len(cs); i += 2 {
		d, l := res[i], res[i+1]
		rows = append(rows, []string{fmt.Sprint(cs[i].conc), f2(l.vs(d)), d.dur(loadResult.p50) + " / " + l.dur(loadResult.p50),
			f0(d.med(loadResult.vaultCPU)) + " / " + f0(l.med(loadResult.vaultCPU)), f0(d.med(loadResult.pluginCPU)) + " / " + f0(l.med(loadResult.pluginCPU))})
	}
	b.WriteString(table([]string{"clients", "reads/s legacy ÷ data", "p50 data / legacy", "Vault CPU µs/read data / legacy", "plugin CPU µs/read data / legacy"}, rows))
	return section{order: 10, title: "Read throughput and latency", body: b.String()}
}

package main

import (
	"math/rand/v2"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/montanaflynn/stats"
	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// loadResult is one measurement: reads made by conc clients.
type loadResult struct {
	Reads, Errors int
	FirstErr      string
	Elapsed       time.Duration
	Lat           vegeta.LatencyMetrics
	Bytes         uint64 // response bytes, all reads
	// CPU time the Vault process and the plugin process spent during the run.
	VaultCPU, PluginCPU time.Duration
}

func (r loadResult) rate() float64 { return float64(r.Reads) / max(r.Elapsed.Seconds(), 1e-9) }

// pct is the p-th quantile of the latencies (t-digest estimate).
func (r loadResult) pct(p float64) time.Duration {
	if r.Reads+r.Errors == 0 {
		return 0
	}
	return r.Lat.Quantile(p)
}

// perRead is a CPU time divided by the reads, in microseconds.
func (r loadResult) perRead(cpu time.Duration) float64 {
	return float64(cpu.Microseconds()) / float64(max(r.Reads, 1))
}

// loader sends GET requests with the X-Vault-Token header to a Vault server
// with vegeta's attacker: conc workers at an unbounded rate, each a client
// that sends its next read when the last one is answered, over keep-alive
// connections.
type loader struct {
	client *http.Client
	addr   string
	token  string
}

func newLoader(addr, token string, conns int) *loader {
	return &loader{addr: addr, token: token, client: &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{
		MaxIdleConns: conns, MaxIdleConnsPerHost: conns, IdleConnTimeout: 5 * time.Minute, DisableCompression: true,
	}}}
}

// run makes conc clients read for d, each read on one of paths (chosen at
// random when there are several). vaultPid and pluginPid, when not 0, are
// sampled for CPU time.
func (l *loader) run(paths []string, conc int, d time.Duration, vaultPid, pluginPid int) loadResult {
	return l.attack(attack{paths: paths, conc: conc, d: d, vaultPid: vaultPid, pluginPid: pluginPid})
}

// runN makes conc clients share n reads of paths, in turn (each path once
// when n is len(paths)).
func (l *loader) runN(paths []string, conc, n int) loadResult {
	return l.attack(attack{paths: paths, conc: conc, n: n})
}

// attack is one measurement: conc clients read paths for d (at random), or n
// reads (in turn); as fast as they can, or at the pace given. each, when set,
// sees every answer.
type attack struct {
	paths               []string
	conc, n             int
	d                   time.Duration
	pace                vegeta.Pacer
	vaultPid, pluginPid int
	each                func(*vegeta.Result)
}

func (l *loader) attack(a attack) loadResult {
	var next atomic.Int64
	hdr := http.Header{"X-Vault-Token": {l.token}}
	targets := func(t *vegeta.Target) error {
		i := int(next.Add(1) - 1)
		if a.n > 0 && i >= a.n {
			return vegeta.ErrNoTargets
		}
		p := a.paths[i%len(a.paths)]
		if a.n == 0 {
			p = a.paths[rand.IntN(len(a.paths))]
		}
		*t = vegeta.Target{Method: http.MethodGet, URL: l.addr + "/v1/" + p, Header: hdr}
		return nil
	}
	if a.pace == nil {
		a.pace = vegeta.ConstantPacer{} // unbounded: each worker reads again once answered
	}
	atk := vegeta.NewAttacker(vegeta.Client(l.client), vegeta.Workers(uint64(a.conc)), vegeta.MaxWorkers(uint64(a.conc)))
	var res loadResult
	v0, p0 := cpuTime(a.vaultPid), cpuTime(a.pluginPid)
	t0 := time.Now()
	for r := range atk.Attack(targets, a.pace, a.d, "") {
		switch {
		case r.Error == vegeta.ErrNoTargets.Error():
			continue
		case r.Error != "":
			res.Errors++
			if res.FirstErr == "" {
				res.FirstErr = r.Error // a status or a transport error: no secret
			}
		default:
			res.Reads++
		}
		res.Lat.Add(r.Latency)
		res.Bytes += r.BytesIn
		if a.each != nil {
			a.each(r)
		}
	}
	res.Elapsed = time.Since(t0)
	res.VaultCPU, res.PluginCPU = cpuTime(a.vaultPid)-v0, cpuTime(a.pluginPid)-p0
	return res
}

func median(xs []float64) float64 {
	m, _ := stats.Median(xs)
	return m
}

func medianDur(ds []time.Duration) time.Duration {
	xs := make([]float64, len(ds))
	for i, d := range ds {
		xs[i] = float64(d)
	}
	return time.Duration(median(xs))
}

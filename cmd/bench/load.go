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
	Lat           vegeta.LatencyMetrics // t-digest quantiles
	Bytes         uint64                // response bytes, all reads
	// CPU time the Vault process and the plugin process spent during the run.
	VaultCPU, PluginCPU time.Duration
}

func (r loadResult) rate() float64 { return float64(r.Reads) / max(r.Elapsed.Seconds(), 1e-9) }
func (r loadResult) p50() float64  { return float64(r.Lat.Quantile(0.50)) }
func (r loadResult) p99() float64  { return float64(r.Lat.Quantile(0.99)) }

// vaultCPU and pluginCPU are the processes' CPU time per read, in µs.
func (r loadResult) vaultCPU() float64 {
	return float64(r.VaultCPU.Microseconds()) / float64(max(r.Reads, 1))
}
func (r loadResult) pluginCPU() float64 {
	return float64(r.PluginCPU.Microseconds()) / float64(max(r.Reads, 1))
}

// rounds are one measurement's results, one per interleaved round.
type rounds []loadResult

// med is the median of f over the rounds.
func (rs rounds) med(f func(loadResult) float64) float64 {
	xs := make([]float64, len(rs))
	for i, r := range rs {
		xs[i] = f(r)
	}
	return median(xs)
}

// dur is the median of a latency f over the rounds, printed.
func (rs rounds) dur(f func(loadResult) float64) string { return fmtDur(time.Duration(rs.med(f))) }

// vs is the median over the rounds of reads/s ÷ ref's reads/s in the same round.
func (rs rounds) vs(ref rounds) float64 {
	xs := make([]float64, len(rs))
	for i, r := range rs {
		xs[i] = r.rate() / ref[i].rate()
	}
	return median(xs)
}

// interleave measures every cell once per round, the first cell rotating
// from round to round, so that none always runs first.
func interleave[C any](what string, n int, cells []C, measure func(C) loadResult) []rounds {
	out := make([]rounds, len(cells))
	for round := range n {
		for i := range cells {
			j := (i + round) % len(cells)
			out[j] = append(out[j], measure(cells[j]))
		}
		logf("%s: round %d/%d done", what, round+1, n)
	}
	return out
}

func median(xs []float64) float64 {
	m, _ := stats.Median(xs)
	return m
}

// loader sends GET requests with the X-Vault-Token header to a Vault server
// with vegeta's attacker, over keep-alive connections.
type loader struct {
	client      *http.Client
	addr, token string
}

func newLoader(addr, token string, conns int) *loader {
	return &loader{addr: addr, token: token, client: &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{
		MaxIdleConns: conns, MaxIdleConnsPerHost: conns, IdleConnTimeout: 5 * time.Minute, DisableCompression: true,
	}}}
}

// attack is one measurement: conc clients read paths for d (at random), or n
// reads (in turn); each client reads again once answered, unless pace is set.
// vaultPid and pluginPid, when not 0, are sampled for CPU time; each, when
// set, sees every answer.
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
	v0, p0, t0 := cpuTime(a.vaultPid), cpuTime(a.pluginPid), time.Now()
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

package main

import (
	"bytes"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// loadResult is one measurement: reads made by conc clients for a while.
type loadResult struct {
	Reads    int
	Errors   int
	FirstErr string
	Elapsed  time.Duration
	Lat      []time.Duration // sorted
	Bytes    int64           // response bytes, all reads
	// CPU time the Vault process and the plugin process spent during the run.
	VaultCPU, PluginCPU time.Duration
}

func (r loadResult) rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Reads) / r.Elapsed.Seconds()
}

func (r loadResult) pct(p float64) time.Duration {
	if len(r.Lat) == 0 {
		return 0
	}
	i := int(p * float64(len(r.Lat)-1))
	return r.Lat[i]
}

// perRead is a CPU time divided by the reads, in microseconds.
func (r loadResult) perRead(cpu time.Duration) float64 {
	if r.Reads == 0 {
		return 0
	}
	return float64(cpu.Microseconds()) / float64(r.Reads)
}

// loader sends GET requests to a Vault server with plain net/http, keep-alive,
// the X-Vault-Token header, and nothing else.
type loader struct {
	client *http.Client
	addr   string
	token  string
}

// run makes conc clients read for d, each read on one of paths (chosen at
// random when there are several). vaultPid and pluginPid, when not 0, are
// sampled for CPU time.
func (l *loader) run(paths []string, conc int, d time.Duration, vaultPid, pluginPid int) loadResult {
	return l.load(paths, conc, d, 0, vaultPid, pluginPid)
}

// runN makes conc clients share n reads.
func (l *loader) runN(paths []string, conc, n int, vaultPid, pluginPid int) loadResult {
	return l.load(paths, conc, 0, n, vaultPid, pluginPid)
}

func (l *loader) load(paths []string, conc int, d time.Duration, n int, vaultPid, pluginPid int) loadResult {
	urls := make([]string, len(paths))
	for i, p := range paths {
		urls[i] = l.addr + "/v1/" + p
	}
	type worker struct {
		lat      []time.Duration
		errs     int
		firstErr string
		bytes    int64
	}
	ws := make([]worker, conc)
	var wg sync.WaitGroup
	start := make(chan struct{})
	v0, p0 := cpuTime(vaultPid), cpuTime(pluginPid)
	t0 := time.Now()
	deadline := t0.Add(d)
	var tickets atomic.Int64
	tickets.Store(int64(n))
	for i := range ws {
		wg.Add(1)
		go func(w *worker) {
			defer wg.Done()
			w.lat = make([]time.Duration, 0, 4096)
			var buf bytes.Buffer
			<-start
			for {
				now := time.Now()
				if n > 0 {
					if tickets.Add(-1) < 0 {
						return
					}
				} else if now.After(deadline) {
					return
				}
				u := urls[0]
				if len(urls) > 1 {
					u = urls[rand.IntN(len(urls))]
				}
				n, err := l.get(u, &buf)
				w.lat = append(w.lat, time.Since(now))
				w.bytes += n
				if err != "" {
					if w.errs == 0 {
						w.firstErr = err
					}
					w.errs++
				}
			}
		}(&ws[i])
	}
	close(start)
	wg.Wait()
	res := loadResult{Elapsed: time.Since(t0)}
	res.VaultCPU = cpuTime(vaultPid) - v0
	res.PluginCPU = cpuTime(pluginPid) - p0
	for _, w := range ws {
		res.Lat = append(res.Lat, w.lat...)
		res.Errors += w.errs
		res.Bytes += w.bytes
		if res.FirstErr == "" {
			res.FirstErr = w.firstErr
		}
	}
	res.Reads = len(res.Lat) - res.Errors
	slices.Sort(res.Lat)
	return res
}

// get reads one URL into buf and returns the body size and, on failure, a
// description that holds no secret (the status, or the transport error).
func (l *loader) get(url string, buf *bytes.Buffer) (int64, string) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, err.Error()
	}
	req.Header.Set("X-Vault-Token", l.token)
	resp, err := l.client.Do(req)
	if err != nil {
		return 0, "transport: " + err.Error()
	}
	buf.Reset()
	n, err := io.Copy(buf, resp.Body)
	resp.Body.Close()
	if err != nil {
		return n, "reading body: " + err.Error()
	}
	if resp.StatusCode != http.StatusOK {
		return n, http.StatusText(resp.StatusCode)
	}
	return n, ""
}

// runOne reads one path and returns "" or what went wrong.
func (l *loader) runOne(path string) string {
	var buf bytes.Buffer
	_, e := l.get(l.addr+"/v1/"+path, &buf)
	return e
}

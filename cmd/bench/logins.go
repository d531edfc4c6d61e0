package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
	"golang.org/x/sync/errgroup"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/vaulttest"
)

// coldReaders is how many clients read a role that has no token yet, at once.
const coldReaders = 1000

// coldPhase fires coldReaders concurrent reads at roles that have never logged
// in, three times, and counts the logins that reach the fake upstream.
func coldPhase(m *mainEnv, opts options) section {
	logf("logins: %d concurrent cold reads, three times", coldReaders)
	client := newLoader(m.v.Addr, m.token, coldReaders+100).client
	var g errgroup.Group
	for range coldReaders { // open the connections first, so that the reads start together
		g.Go(func() error {
			if resp, err := client.Get(m.v.Addr + "/v1/sys/health"); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			return nil
		})
	}
	_ = g.Wait()
	var rows [][]string
	for _, tr := range []struct{ label, role string }{
		{"creds/", "cold-creds"}, {"static-creds/", "cold-static"}, {"half creds/, half static-creds/", "cold-mixed"},
	} {
		m.v.addRole(m.t, "iadvize", tr.role, m.fake)
		before := m.fake.Stats().UserAttempts[userOf("iadvize", tr.role)]
		var ok, failed atomic.Int64
		var slowest atomic.Int64
		start := make(chan struct{})
		for i := range coldReaders {
			path := "iadvize/creds/" + tr.role
			if tr.role == "cold-static" || (tr.role == "cold-mixed" && i%2 == 1) {
				path = "iadvize/static-creds/" + tr.role
			}
			req, _ := http.NewRequest(http.MethodGet, m.v.Addr+"/v1/"+path, nil)
			req.Header.Set("X-Vault-Token", m.token)
			g.Go(func() error {
				<-start
				t0 := time.Now()
				resp, err := client.Do(req)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if lat := int64(time.Since(t0)); lat > slowest.Load() {
					slowest.Store(lat) // a race between two slowest reads moves it by little
				}
				if err == nil && resp.StatusCode == http.StatusOK {
					ok.Add(1)
				} else {
					failed.Add(1)
				}
				return nil
			})
		}
		t0 := time.Now()
		close(start)
		_ = g.Wait()
		elapsed := time.Since(t0)
		logins := m.fake.Stats().UserAttempts[userOf("iadvize", tr.role)] - before
		rows = append(rows, []string{tr.label, fmtInt(coldReaders), fmt.Sprint(logins), fmtInt(ok.Load()), fmt.Sprint(failed.Load()),
			fmtDur(elapsed), fmtDur(time.Duration(slowest.Load()))})
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s clients read a role that has never logged in, all at once (connections opened beforehand, a barrier\n"+
		"releases the reads); logins counted at the fake upstream, which takes %s to answer a login.\n\n",
		fmtInt(coldReaders), opts.upstreamLatency)
	b.WriteString(table([]string{"cold reads of", "readers", "logins upstream (expect 1)", "answered 200", "errors", "all answered after", "slowest read"}, rows))
	return section{order: 30, title: "Logins", body: b.String()}
}

// longRun is the run with 30-second tokens: clients read for a while, the
// plugin logs in as tokens near expiry, and the fake counts the logins.
type longRun struct {
	opts     options
	m        *mainEnv
	f        *fake
	lifetime time.Duration
	refresh  time.Duration
	done     chan longResult
}

type longResult struct {
	duration      time.Duration
	reads, errors int
	firstErr      string
	stale         int // answers whose token had already expired
	shortLease    int // creds/ answers with a lease under 1 s
	rotationsSeen int // distinct expire_time values the clients saw
	stats         fakeiadvize.Stats
	maxPerMinute  int
	all           vegeta.LatencyMetrics
	slow          int // reads over 50 ms (waited on a login, or the machine was busy)
	// Latencies of the reads that were in flight when a rotation login
	// answered, and of the others. coldWaiters: reads in flight when the first
	// (cold) login answered.
	waited, others    vegeta.LatencyMetrics
	nWaited           int
	coldWaiters       int
	lifetime, refresh time.Duration
}

func startLongRun(t *vaulttest.Program, m *mainEnv, opts options) *longRun {
	lr := &longRun{opts: opts, m: m, lifetime: 30 * time.Second, refresh: 10 * time.Second, done: make(chan longResult, 1)}
	lr.f = startFake(t, fakeiadvize.Options{TokenLifetime: lr.lifetime}, opts.upstreamLatency)
	m.v.mountIadvize(t, "iadvize-short", lr.f, map[string]any{"refresh_before": int(lr.refresh.Seconds())}, "app")
	logf("logins: %s run with 30-second tokens started (%d clients, a read every %s each)", opts.duration, opts.loginClients, opts.loginInterval)
	go lr.run()
	return lr
}

func (lr *longRun) wait() longResult {
	logf("logins: waiting for the %s run with 30-second tokens to end", lr.opts.duration)
	return <-lr.done
}

func (lr *longRun) run() {
	opts := lr.opts
	res := longResult{lifetime: lr.lifetime, refresh: lr.refresh}
	type span struct{ start, end time.Time }
	var spans []span
	expiries := map[string]bool{}
	each := func(r *vegeta.Result) {
		if r.Code == 0 {
			return // a transport error, counted as an error
		}
		spans = append(spans, span{r.Timestamp, r.Timestamp.Add(r.Latency)})
		if r.Latency > 50*time.Millisecond {
			res.slow++
		}
		var body struct {
			LeaseDuration int `json:"lease_duration"`
			Data          struct {
				ExpireTime string `json:"expire_time"`
			} `json:"data"`
		}
		if r.Code != http.StatusOK || json.Unmarshal(r.Body, &body) != nil {
			return
		}
		if exp, err := time.Parse(time.RFC3339, body.Data.ExpireTime); err != nil || !exp.After(time.Now()) {
			res.stale++
		}
		if strings.HasSuffix(r.URL, "/creds/app") && body.LeaseDuration < 1 {
			res.shortLease++
		}
		expiries[body.Data.ExpireTime] = true
	}
	ld := newLoader(lr.m.v.Addr, lr.m.token, opts.loginClients+10)
	lres := ld.attack(attack{paths: []string{"iadvize-short/creds/app", "iadvize-short/static-creds/app"}, conc: opts.loginClients,
		d: opts.duration, pace: vegeta.ConstantPacer{Freq: opts.loginClients, Per: opts.loginInterval}, each: each})
	res.duration, res.reads, res.errors, res.firstErr, res.all = lres.Elapsed, lres.Reads, lres.Errors, lres.FirstErr, lres.Lat
	res.rotationsSeen = len(expiries)
	// Reads in flight when a login's answer came back overlapped that login
	// (the fake records a login when it answers it, after its latency). The
	// first login is the cold one, which the first readers wait for; the others
	// are rotations.
	logins := lr.f.LoginTimes()
	slices.SortFunc(logins, time.Time.Compare)
	for _, s := range spans {
		k, _ := slices.BinarySearchFunc(logins, s.start, time.Time.Compare)
		switch {
		case k >= len(logins) || logins[k].After(s.end):
			res.others.Add(s.end.Sub(s.start))
		case k == 0:
			res.coldWaiters++
		default:
			res.waited.Add(s.end.Sub(s.start))
			res.nWaited++
		}
	}
	res.stats = lr.f.Stats()
	res.maxPerMinute = lr.f.MaxAttemptsInWindow(time.Minute)
	logf("logins: the run with 30-second tokens ended: %d reads, %d logins", res.reads, res.stats.LoginAttempts)
	lr.done <- res
}

// pct3 prints the p50, p99 and max of latencies.
func pct3(l vegeta.LatencyMetrics) string {
	if l.Max == 0 {
		return "– / – / –"
	}
	return fmtDur(l.Quantile(0.5)) + " / " + fmtDur(l.Quantile(0.99)) + " / " + fmtDur(l.Max)
}

// loginSection completes the cold-read section with the long run.
func loginSection(cold section, r longResult, opts options) section {
	var b strings.Builder
	if cold.body != "" {
		b.WriteString(cold.body)
		b.WriteString("\n")
	}
	rotation := r.lifetime - r.refresh
	ideal := r.duration.Seconds() / rotation.Seconds()
	reads := r.reads + r.errors
	perMin := func(n float64) float64 { return n / r.duration.Minutes() }
	perProcess := float64(opts.loginClients) * math.Ceil(ideal)
	fmt.Fprintf(&b, "**30-second tokens, `refresh_before` 10 s, %s.** %d clients read, in all one read every %s ÷ %[2]d, evenly\n"+
		"paced (vegeta), creds/ or static-creds/ of one role at random, on their own mount and fake upstream. This run overlapped the\n"+
		"lease, cold-read and memory phases (it is light; its login count does not depend on load).\n\n",
		r.duration.Round(time.Second), opts.loginClients, opts.loginInterval)
	rows := [][]string{
		{"reads made (answered 200)", fmtInt(r.reads)},
		{"failed reads", fmt.Sprint(r.errors)},
		{"logins at the fake upstream", fmt.Sprintf("%d (%d succeeded, %d refused for rate limit)", r.stats.LoginAttempts, r.stats.LoginSuccesses, r.stats.RateLimited)},
		{"ideal: duration ÷ (lifetime − refresh_before)", fmt.Sprintf("%.1f (%s ÷ %s)", ideal, r.duration.Round(time.Second), rotation)},
		{"logins ÷ ideal", fmt.Sprintf("%.2f", float64(r.stats.LoginAttempts)/ideal)},
		{"most logins in any 60 s (limit 10 per user)", fmt.Sprint(r.maxPerMinute)},
		{"distinct tokens the clients saw", fmt.Sprint(r.rotationsSeen)},
		{"answers carrying an already expired token", fmt.Sprint(r.stale)},
		{"creds/ answers with a lease under 1 s", fmt.Sprint(r.shortLease)},
		{"read latency p50 / p99 / max", pct3(r.all)},
		{"reads slower than 50 ms", fmt.Sprint(r.slow)},
		{"reads in flight when the first (cold) login answered: they waited for it", fmtInt(r.coldWaiters)},
		{"reads in flight when a rotation login answered", fmt.Sprintf("%s, %.1f per rotation", fmtInt(r.nWaited),
			float64(r.nWaited)/math.Max(float64(r.stats.LoginAttempts-1), 1))},
		{"their latency p50 / p99 / max", pct3(r.waited)},
		{"the other reads' latency p50 / p99 / max", pct3(r.others)},
	}
	if r.firstErr != "" {
		rows = append(rows, []string{"first error", r.firstErr})
	}
	b.WriteString(table([]string{"", "value"}, rows))
	fmt.Fprintf(&b, "\nA read that finds its role's token inside the refresh window gets that token at once, and the login runs on\n"+
		"its own (the fake upstream answers a login in %s here, the real one in whatever it takes, bounded by\n"+
		"`request_timeout`): no read waits for a rotation. The reads in flight when a rotation login answered merely\n"+
		"overlapped it: compare their latency with the others'.\n",
		opts.upstreamLatency)
	fmt.Fprintf(&b, "\nThe same workload under the anti-patterns of the README (a login per request, per worker, in a retry loop), computed from this run's own counts:\n\n")
	arows := [][]string{
		{"this plugin (measured)", fmt.Sprint(r.stats.LoginAttempts), fmt.Sprintf("%.1f", perMin(float64(r.stats.LoginAttempts))), "1×"},
		{"a login per read (reads made)", fmtInt(reads), fmt.Sprintf("%.0f", perMin(float64(reads))),
			fmt.Sprintf("%.0f×", float64(reads)/math.Max(float64(r.stats.LoginAttempts), 1))},
		{fmt.Sprintf("a login per client process (%d clients, each keeping its own token on the same schedule: clients × ⌈ideal⌉)", opts.loginClients),
			fmt.Sprintf("%.0f", perProcess), fmt.Sprintf("%.1f", perMin(perProcess)),
			fmt.Sprintf("%.0f×", perProcess/math.Max(float64(r.stats.LoginAttempts), 1))},
	}
	b.WriteString(table([]string{"who logs in", "logins", "per minute (budget: 10 per user)", "vs the plugin"}, arows))
	fmt.Fprintf(&b, "\nA login per read would have been refused (429, then blocked) after its first 10 logins of each minute. With the\n"+
		"real 24-hour tokens and the default `refresh_before` of 1 h the plugin logs in once per 23 h per role, whatever the\n"+
		"number of clients or reads.\n")
	return section{order: 30, title: "Logins", body: b.String()}
}

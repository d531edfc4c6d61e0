package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/vaulttest"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
)

// coldReaders is how many clients read a role that has no token yet, at once.
const coldReaders = 1000

// coldTrial is one burst of cold reads.
type coldTrial struct {
	label   string
	logins  int
	ok      int
	errors  int
	elapsed time.Duration
	maxLat  time.Duration
}

// coldPhase fires coldReaders concurrent reads at roles that have never logged
// in, and counts the logins that reach the fake upstream.
func coldPhase(t *vaulttest.Program, m *mainEnv, opts options) section {
	logf("logins: %d concurrent cold reads, three times", coldReaders)
	client := newHTTPClient(coldReaders + 100)
	// Open the connections first, so that the reads start together.
	var wg sync.WaitGroup
	for range coldReaders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if resp, err := client.Get(m.v.Addr + "/v1/sys/health"); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()

	trials := []struct{ label, role string }{
		{"creds/", "cold-creds"}, {"static-creds/", "cold-static"}, {"half creds/, half static-creds/", "cold-mixed"},
	}
	var out []coldTrial
	for _, tr := range trials {
		m.v.addRole(m.t, "iadvize", tr.role, m.fake)
		user := userOf("iadvize", tr.role)
		before := m.fake.Stats().UserAttempts[user]
		ct := coldTrial{label: tr.label}
		var mu sync.Mutex
		start := make(chan struct{})
		var done sync.WaitGroup
		for i := range coldReaders {
			path := "iadvize/creds/" + tr.role
			if tr.label == "static-creds/" || (strings.HasPrefix(tr.label, "half") && i%2 == 1) {
				path = "iadvize/static-creds/" + tr.role
			}
			done.Add(1)
			go func() {
				defer done.Done()
				req, _ := http.NewRequest(http.MethodGet, m.v.Addr+"/v1/"+path, nil)
				req.Header.Set("X-Vault-Token", m.token)
				<-start
				t0 := time.Now()
				resp, err := client.Do(req)
				ok := err == nil && resp.StatusCode == http.StatusOK
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				lat := time.Since(t0)
				mu.Lock()
				if ok {
					ct.ok++
				} else {
					ct.errors++
				}
				ct.maxLat = max(ct.maxLat, lat)
				mu.Unlock()
			}()
		}
		t0 := time.Now()
		close(start)
		done.Wait()
		ct.elapsed = time.Since(t0)
		ct.logins = m.fake.Stats().UserAttempts[userOf("iadvize", tr.role)] - before
		out = append(out, ct)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s clients read a role that has never logged in, all at once (connections opened beforehand, a barrier\n"+
		"releases the reads); logins counted at the fake upstream, which takes %s to answer a login.\n\n",
		fmtInt(coldReaders), opts.upstreamLatency)
	var rows [][]string
	for _, ct := range out {
		rows = append(rows, []string{ct.label, fmtInt(coldReaders), fmt.Sprint(ct.logins), fmtInt(ct.ok), fmt.Sprint(ct.errors),
			fmtDur(ct.elapsed), fmtDur(ct.maxLat)})
	}
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
	duration       time.Duration
	clients        int
	reads, errors  int
	firstErr       string
	stale          int // answers whose token had already expired
	shortLease     int // creds/ answers with a lease under 1 s
	rotationsSeen  int // distinct expire_time values the clients saw
	stats          fakeiadvize.Stats
	maxPerMinute   int
	p50, p99, maxL time.Duration
	slow           int // reads over 50 ms (waited on a login, or the machine was busy)
	lifetime       time.Duration
	refresh        time.Duration
	// Latencies of the reads that were in flight when a rotation login
	// answered, and of the others; sorted. coldWaiters: reads in flight when the
	// first (cold) login answered.
	waited, others []time.Duration
	coldWaiters    int
}

func startLongRun(t *vaulttest.Program, m *mainEnv, opts options) *longRun {
	lr := &longRun{opts: opts, m: m, lifetime: 30 * time.Second, refresh: 10 * time.Second, done: make(chan longResult, 1)}
	lr.f = startFake(t, fakeiadvize.Options{TokenLifetime: lr.lifetime}, opts.upstreamLatency)
	m.v.mountPlugin(t, "iadvize-short", "vault-plugin-secrets-iadvize")
	m.v.configure(t, "iadvize-short", lr.f, map[string]any{"refresh_before": int(lr.refresh.Seconds())})
	m.v.addRole(t, "iadvize-short", "app", lr.f)
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
	client := newHTTPClient(opts.loginClients + 10)
	type clientStats struct {
		lat                                []time.Duration
		starts                             []time.Time
		reads, errors, stale, short, waits int
		firstErr                           string
		expiries                           map[string]bool
	}
	cs := make([]clientStats, opts.loginClients)
	t0 := time.Now()
	deadline := t0.Add(opts.duration)
	var wg sync.WaitGroup
	for i := range cs {
		wg.Add(1)
		go func(c *clientStats, i int) {
			defer wg.Done()
			c.expiries = map[string]bool{}
			var buf bytes.Buffer
			for n := 0; ; n++ {
				// Jittered pacing: clients do not read in lockstep.
				time.Sleep(time.Duration(float64(opts.loginInterval) * (0.5 + rand.Float64())))
				if time.Now().After(deadline) {
					return
				}
				path := "iadvize-short/creds/app"
				if (n+i)%2 == 1 {
					path = "iadvize-short/static-creds/app"
				}
				req, _ := http.NewRequest(http.MethodGet, lr.m.v.Addr+"/v1/"+path, nil)
				req.Header.Set("X-Vault-Token", lr.m.token)
				start := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					c.errors++
					if c.firstErr == "" {
						c.firstErr = "transport: " + err.Error()
					}
					continue
				}
				buf.Reset()
				_, _ = io.Copy(&buf, resp.Body)
				resp.Body.Close()
				lat := time.Since(start)
				c.lat = append(c.lat, lat)
				c.starts = append(c.starts, start)
				if resp.StatusCode != http.StatusOK {
					c.errors++
					if c.firstErr == "" {
						c.firstErr = fmt.Sprintf("%s: %d", path, resp.StatusCode)
					}
					continue
				}
				var body struct {
					LeaseDuration int `json:"lease_duration"`
					Data          struct {
						ExpireTime string `json:"expire_time"`
					} `json:"data"`
				}
				if err := json.Unmarshal(buf.Bytes(), &body); err != nil {
					c.errors++
					continue
				}
				c.reads++
				exp, err := time.Parse(time.RFC3339, body.Data.ExpireTime)
				if err != nil || !exp.After(time.Now()) {
					c.stale++
				}
				if path == "iadvize-short/creds/app" && body.LeaseDuration < 1 {
					c.short++
				}
				c.expiries[body.Data.ExpireTime] = true
			}
		}(&cs[i], i)
	}
	wg.Wait()
	res := longResult{duration: time.Since(t0), clients: opts.loginClients, lifetime: lr.lifetime, refresh: lr.refresh}
	var lat []time.Duration
	exp := map[string]bool{}
	for _, c := range cs {
		res.reads += c.reads
		res.errors += c.errors
		res.stale += c.stale
		res.shortLease += c.short
		if res.firstErr == "" {
			res.firstErr = c.firstErr
		}
		lat = append(lat, c.lat...)
		for e := range c.expiries {
			exp[e] = true
		}
	}
	res.rotationsSeen = len(exp)
	// Reads in flight when a login's answer came back overlapped that login
	// (the fake records a login when it answers it, after its latency). The
	// first login is the cold one, which the first readers wait for; the others
	// are rotations.
	logins := lr.f.LoginTimes()
	slices.SortFunc(logins, time.Time.Compare)
	var waited, others []time.Duration
	for _, c := range cs {
		for i, st := range c.starts {
			end := st.Add(c.lat[i])
			if len(logins) > 0 && !st.After(logins[0]) && !logins[0].After(end) {
				res.coldWaiters++
				continue
			}
			k, _ := slices.BinarySearchFunc(logins, st, time.Time.Compare)
			if k < len(logins) && !logins[k].After(end) {
				waited = append(waited, c.lat[i])
			} else {
				others = append(others, c.lat[i])
			}
		}
	}
	slices.Sort(waited)
	slices.Sort(others)
	res.waited, res.others = waited, others
	slices.Sort(lat)
	if len(lat) > 0 {
		res.p50, res.p99, res.maxL = lat[len(lat)/2], lat[int(0.99*float64(len(lat)-1))], lat[len(lat)-1]
	}
	for _, l := range lat {
		if l > 50*time.Millisecond {
			res.slow++
		}
	}
	res.stats = lr.f.Stats()
	res.maxPerMinute = lr.f.MaxAttemptsInWindow(time.Minute)
	logf("logins: the run with 30-second tokens ended: %d reads, %d logins", res.reads, res.stats.LoginAttempts)
	lr.done <- res
}

// pctOf is the p-th quantile of sorted durations.
func pctOf(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(p*float64(len(sorted)-1))]
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
	perProcess := float64(r.clients) * math.Ceil(ideal)
	fmt.Fprintf(&b, "**30-second tokens, `refresh_before` 10 s, %s.** %d clients each read every %s on average (jittered),\n"+
		"alternating creds/ and static-creds/ of one role, on their own mount and fake upstream. This run overlapped the\n"+
		"lease, cold-read and memory phases (it is light; its login count does not depend on load).\n\n",
		r.duration.Round(time.Second), r.clients, opts.loginInterval)
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
		{"read latency p50 / p99 / max", fmt.Sprintf("%s / %s / %s", fmtDur(r.p50), fmtDur(r.p99), fmtDur(r.maxL))},
		{"reads slower than 50 ms", fmt.Sprint(r.slow)},
		{"reads in flight when the first (cold) login answered: they waited for it", fmtInt(r.coldWaiters)},
		{"reads in flight when a rotation login answered", fmt.Sprintf("%s, %.1f per rotation", fmtInt(len(r.waited)),
			float64(len(r.waited))/math.Max(float64(r.stats.LoginAttempts-1), 1))},
		{"their latency p50 / p99 / max", fmt.Sprintf("%s / %s / %s", fmtDur(pctOf(r.waited, 0.5)), fmtDur(pctOf(r.waited, 0.99)), fmtDur(pctOf(r.waited, 1)))},
		{"the other reads' latency p50 / p99 / max", fmt.Sprintf("%s / %s / %s", fmtDur(pctOf(r.others, 0.5)), fmtDur(pctOf(r.others, 0.99)), fmtDur(pctOf(r.others, 1)))},
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
		{fmt.Sprintf("a login per client process (%d clients, each keeping its own token on the same schedule: clients × ⌈ideal⌉)", r.clients),
			fmt.Sprintf("%.0f", perProcess), fmt.Sprintf("%.1f", perMin(perProcess)),
			fmt.Sprintf("%.0f×", perProcess/math.Max(float64(r.stats.LoginAttempts), 1))},
	}
	b.WriteString(table([]string{"who logs in", "logins", "per minute (budget: 10 per user)", "vs the plugin"}, arows))
	fmt.Fprintf(&b, "\nA login per read would have been refused (429, then blocked) after its first 10 logins of each minute. With the\n"+
		"real 24-hour tokens and the default `refresh_before` of 1 h the plugin logs in once per 23 h per role, whatever the\n"+
		"number of clients or reads.\n")
	return section{order: 30, title: "Logins", body: b.String()}
}

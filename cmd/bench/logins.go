package main

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"

	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/vaulttest"
)

// coldReaders is how many clients read a role that has no token yet, at once.
const coldReaders = 1000

// coldPhase fires coldReaders concurrent reads at roles that have never logged
// in, three times, and counts the logins that reach the fake upstream.
func coldPhase(m *mainEnv) string {
	logf("logins: %d concurrent cold reads, three times", coldReaders)
	ld := newLoader(m.v.Addr, m.token, coldReaders+100)
	ld.attack(attack{paths: []string{"sys/health"}, conc: coldReaders, n: coldReaders}) // open the connections
	var rows [][]string
	for _, tr := range [][3]string{{"creds/", "cold-creds", "creds"}, {"static-creds/", "cold-static", "static-creds"},
		{"half creds/, half static-creds/", "cold-mixed", "creds static-creds"}} {
		must(m.t, m.v.addRole("iadvize", tr[1], m.fake))
		user := "svc-iadvize-" + tr[1] + "@bench.example"
		before := m.fake.Stats().UserAttempts[user]
		var paths []string
		for _, kind := range strings.Fields(tr[2]) {
			paths = append(paths, "iadvize/"+kind+"/"+tr[1])
		}
		r := ld.attack(attack{paths: paths, conc: coldReaders, n: coldReaders})
		rows = append(rows, []string{tr[0], fmtInt(coldReaders), fmt.Sprint(m.fake.Stats().UserAttempts[user] - before),
			fmtInt(r.Reads), fmt.Sprint(r.Errors), fmtDur(r.Elapsed), fmtDur(r.Lat.Max)})
	}
	return fmt.Sprintf("%s clients (vegeta workers, connections opened beforehand) read a role that has never logged in, all at\n"+
		"once; logins counted at the fake upstream, which takes %s to answer a login.\n\n", fmtInt(coldReaders), upstreamLatency) +
		table([]string{"cold reads of", "readers", "logins upstream (expect 1)", "answered 200", "errors", "all answered after", "slowest read"}, rows)
}

const (
	shortLifetime = 30 * time.Second
	shortRefresh  = 10 * time.Second
)

// startLongRun starts the run with 30-second tokens: clients read for a
// while, the plugin logs in as tokens near expiry, and the fake counts the
// logins. The function it returns waits for the run's end and writes the
// Logins section, after the cold-read section.
func startLongRun(t *vaulttest.Program, m *mainEnv, duration time.Duration) func(cold string) section {
	f := startFake(t, fakeiadvize.Options{TokenLifetime: shortLifetime})
	m.v.mountIadvize(t, "iadvize-short", f, map[string]any{"refresh_before": int(shortRefresh.Seconds())}, "app")
	logf("logins: run with 30-second tokens started (%d clients, a read every %s each)", loginClients, loginInterval)
	type span struct{ start, end, expiry time.Time }
	var spans []span
	var stale, shortLease, slow int // expired tokens; creds/ leases under 1 s; reads over 50 ms
	expiries := map[string]bool{}
	each := func(r *vegeta.Result) {
		if r.Code == 0 {
			return // a transport error, counted as an error
		}
		if r.Latency > 50*time.Millisecond {
			slow++
		}
		var body struct {
			LeaseDuration int `json:"lease_duration"`
			Data          struct {
				ExpireTime string `json:"expire_time"`
			} `json:"data"`
		}
		var exp time.Time
		if r.Code == http.StatusOK && json.Unmarshal(r.Body, &body) == nil {
			if exp, _ = time.Parse(time.RFC3339, body.Data.ExpireTime); !exp.After(time.Now()) {
				stale++
			}
			if strings.HasSuffix(r.URL, "/creds/app") && body.LeaseDuration < 1 {
				shortLease++
			}
			expiries[body.Data.ExpireTime] = true
		}
		spans = append(spans, span{r.Timestamp, r.Timestamp.Add(r.Latency), exp})
	}
	done := make(chan loadResult, 1)
	go func() {
		done <- newLoader(m.v.Addr, m.token, loginClients+10).attack(attack{paths: []string{"iadvize-short/creds/app", "iadvize-short/static-creds/app"},
			conc: loginClients, d: duration, pace: vegeta.ConstantPacer{Freq: loginClients, Per: loginInterval}, each: each})
	}()
	return func(cold string) section {
		logf("logins: waiting for the run with 30-second tokens to end")
		r := <-done
		// A read in flight when a login's answer came back (the fake records a
		// login when it answers it, after its latency) overlapped that login.
		// The first login is the cold one; the others are rotations.
		logins := f.LoginTimes()
		slices.SortFunc(logins, time.Time.Compare)
		var coldWaiters, nWaited, gotNew int
		var waited, others vegeta.LatencyMetrics
		for _, s := range spans {
			k, _ := slices.BinarySearchFunc(logins, s.start, time.Time.Compare)
			switch {
			case k >= len(logins) || logins[k].After(s.end):
				others.Add(s.end.Sub(s.start))
			case k == 0:
				coldWaiters++
			default:
				waited.Add(s.end.Sub(s.start))
				nWaited++
				if s.expiry.After(logins[k].Add(shortLifetime - shortRefresh)) { // the token that login issued, not the one before
					gotNew++
				}
			}
		}
		st, n := f.Stats(), float64(len(logins))
		d, reads := r.Elapsed, float64(r.Reads+r.Errors)
		ideal := d.Seconds() / (shortLifetime - shortRefresh).Seconds()
		perProcess := loginClients * math.Ceil(ideal)
		var b strings.Builder
		if cold != "" {
			b.WriteString(cold + "\n")
		}
		fmt.Fprintf(&b, "**30-second tokens, `refresh_before` 10 s, %s.** %d clients, one read every %s ÷ %[2]d in all, evenly paced,\n"+
			"of creds/ or static-creds/ of one role at random, own mount and fake; it overlapped the lease, cold-read and memory\n"+
			"phases (it is light; its login count does not depend on load).\n\n", d.Round(time.Second), loginClients, loginInterval)
		rows := [][]string{
			{"reads made (answered 200)", fmtInt(r.Reads)},
			{"failed reads", fmt.Sprint(r.Errors)},
			{"logins at the fake upstream", fmt.Sprintf("%d (%d succeeded, %d refused for rate limit)", st.LoginAttempts, st.LoginSuccesses, st.RateLimited)},
			{"ideal: duration ÷ (lifetime − refresh_before)", fmt.Sprintf("%.1f (%s ÷ %s)", ideal, d.Round(time.Second), shortLifetime-shortRefresh)},
			{"logins ÷ ideal", f2(float64(st.LoginAttempts) / ideal)},
			{"most logins in any 60 s (limit 10 per user)", fmt.Sprint(f.MaxAttemptsInWindow(time.Minute))},
			{"distinct tokens the clients saw", fmt.Sprint(len(expiries))},
			{"answers carrying an already expired token", fmt.Sprint(stale)},
			{"creds/ answers with a lease under 1 s", fmt.Sprint(shortLease)},
			{"read latency p50 / p99 / max", pct3(r.Lat)},
			{"reads slower than 50 ms", fmt.Sprint(slow)},
			{"reads in flight when the first (cold) login answered", fmtInt(coldWaiters)},
			{"reads in flight when a rotation login answered", fmt.Sprintf("%s, %.1f per rotation", fmtInt(nWaited), float64(nWaited)/max(n-1, 1))},
			{"of which answered with the token that login issued", fmtInt(gotNew)},
			{"their latency p50 / p99 / max", pct3(waited)},
			{"the other reads' latency p50 / p99 / max", pct3(others)},
		}
		if r.FirstErr != "" {
			rows = append(rows, []string{"first error", r.FirstErr})
		}
		b.WriteString(table([]string{"", "value"}, rows))
		fmt.Fprintf(&b, "\nA read in flight when a rotation login (%s at the fake) answered got the old token at once, or came after the\n"+
			"new one was stored; one that waited would get the new token after up to %[1]s. Reads overlapping an instant are the\n"+
			"long ones (length bias), slow when the machine is busy.\n\nThe same workload under the README's anti-patterns, from this run's counts:\n\n",
			upstreamLatency)
		b.WriteString(table([]string{"who logs in", "logins", "per minute (budget: 10 per user)", "vs the plugin"}, [][]string{
			{"this plugin (measured)", fmt.Sprint(st.LoginAttempts), fmt.Sprintf("%.1f", float64(st.LoginAttempts)/d.Minutes()), "1×"},
			{"a login per read (reads made)", fmtInt(int64(reads)), f0(reads / d.Minutes()), fmt.Sprintf("%.0f×", reads/max(float64(st.LoginAttempts), 1))},
			{fmt.Sprintf("a login per client process (%d clients, each its own token on the same schedule: clients × ⌈ideal⌉)", loginClients),
				f0(perProcess), fmt.Sprintf("%.1f", perProcess/d.Minutes()), fmt.Sprintf("%.0f×", perProcess/max(float64(st.LoginAttempts), 1))},
		}))
		b.WriteString("\nA login per read would have been refused (429, then blocked) after its first 10 logins of each minute. With\n" +
			"24-hour tokens and the default `refresh_before` of 1 h the plugin logs in once per 23 h per role.\n")
		return section{order: 30, title: "Logins", body: b.String()}
	}
}

// pct3 prints the p50, p99 and max of latencies.
func pct3(l vegeta.LatencyMetrics) string {
	if l.Max == 0 {
		return "– / – / –"
	}
	return fmtDur(l.Quantile(0.5)) + " / " + fmtDur(l.Quantile(0.99)) + " / " + fmtDur(l.Max)
}

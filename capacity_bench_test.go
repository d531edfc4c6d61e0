package iadvize

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeclock"
	"github.com/iadvize/vault-plugin-secrets-iadvize/internal/fakeiadvize"
)

// The capacity benchmarks run the plugin on the injected clock, in this process,
// against the fake iAdvize with its real limits (100 logins a minute per IP, 10
// per user, 24-hour tokens). BENCHMARKS.md, "Capacity on the injected clock",
// holds their figures and the command that produced them:
//
//	go test -run '^$' -bench 'Capacity|PeriodicRun' -benchtime 1x -timeout 60m .

// userLog records every login's username and fake-clock time.
type userLog struct {
	mu    sync.Mutex
	times map[string][]time.Time
}

func (l *userLog) wrap(clock *fakeclock.Clock, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/oauth2/token" {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			form, _ := url.ParseQuery(string(body))
			l.mu.Lock()
			l.times[form.Get("username")] = append(l.times[form.Get("username")], clock.Now())
			l.mu.Unlock()
		}
		h.ServeHTTP(w, r)
	})
}

// BenchmarkCapacity: 100,000 roles created at once (distinct users), read at
// random (1,000 reads a simulated minute), the periodic function every minute,
// for three simulated days. It fails on any read served an expired token, any
// upstream 429, more than 100 logins in a minute or 10 for one user, and any read
// after the first day of a role with a token that waited on upstream (no usable
// token when it came). Reads at random leave a few roles unread on the first day
// (at 100 logins a minute, logging 100,000 roles in takes 17 hours): their first
// read is cold, and counted apart.
func BenchmarkCapacity(b *testing.B) {
	const (
		roles          = 100_000
		days           = 3
		readsPerMinute = 1000
		step           = 10 * time.Second // reads are spread over a minute in 6 steps
	)
	for range b.N {
		runCapacity(b, roles, days, readsPerMinute, step)
	}
}

func runCapacity(b *testing.B, roles, days, readsPerMinute int, step time.Duration) {
	clock := fakeclock.New()
	fake := fakeiadvize.New(fakeiadvize.Options{Now: clock.Now})
	logins := &userLog{times: make(map[string][]time.Time)}
	srv := httptest.NewServer(logins.wrap(clock, fake))
	defer srv.Close()
	defer fake.Close()

	m := newBenchMount(b, clock, &logical.InmemStorage{})
	m.mustDo(b, logical.UpdateOperation, "config", map[string]any{"token_url": srv.URL + "/oauth2/token", "verify_url": ""})
	names := make([]string, roles)
	for i := range roles {
		names[i] = fmt.Sprintf("r%06d", i)
		user, pw := names[i]+"@example.com", "pw-"+names[i]
		fake.AddUser(user, pw)
		m.mustDo(b, logical.CreateOperation, "roles/"+names[i], map[string]any{"username": user, "password": pw})
	}
	cfg, err := m.b.cachedConfig(context.Background(), m.storage)
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	periodic := &logical.Request{Operation: logical.RollbackOperation, Storage: m.storage}
	start := clock.Now()
	var (
		reads, refused, waited, waitedAfterDay1, expiredServed, failedAfterDay1 int
		day1Attempts                                                            map[string]int
		runs                                                                    []time.Duration
		skipped, coldAfterDay1                                                  int
	)
	began := time.Now()
	b.ResetTimer()
	// The world between and during periodic runs: every step, a batch of reads.
	// A run's waits for the budget (b.sleep) let the reads go on meanwhile.
	nextRead := start.Add(step)
	readBatch := func() {
		now := clock.Now()
		afterDay1 := now.Sub(start) > 24*time.Hour
		for range readsPerMinute * int(step) / int(time.Minute) {
			name := names[rng.IntN(roles)]
			e := m.b.cache.role(name)
			// A read waits on upstream when its role has no usable token: a
			// cold role (never logged in: its first read must), or a token
			// the refresh did not replace in time (which must not happen).
			cold := e == nil || e.state.AccessToken == ""
			wait := cold || !e.state.usable(now)
			resp, err := m.do(logical.ReadOperation, "static-creds/"+name, nil)
			reads++
			if wait {
				waited++
				switch {
				case afterDay1 && cold:
					coldAfterDay1++
				case afterDay1:
					waitedAfterDay1++
				}
			}
			if err != nil || resp == nil || resp.IsError() {
				refused++
				if afterDay1 && !cold {
					failedAfterDay1++
				}
				continue
			}
			exp, perr := time.Parse(time.RFC3339, resp.Data[fieldExpireTime].(string))
			if perr != nil || !exp.After(now) {
				expiredServed++
			}
		}
		m.b.detachedWG.Wait() // the logins reads started on their own
	}
	advance := func(d time.Duration) {
		until := clock.Now().Add(d)
		for !nextRead.After(until) {
			clock.Advance(nextRead.Sub(clock.Now()))
			readBatch()
			nextRead = nextRead.Add(step)
		}
		clock.Advance(until.Sub(clock.Now()))
	}
	m.b.sleep = func(_ context.Context, d time.Duration) error {
		advance(d)
		return nil
	}
	end := start.Add(time.Duration(days) * 24 * time.Hour)
	// Vault's rollback manager ticks every minute and skips a mount whose run is
	// still going.
	for tick := start.Add(time.Minute); tick.Before(end); {
		advance(tick.Sub(clock.Now()))
		t0 := time.Now()
		if err := m.b.periodicRefresh(context.Background(), periodic); err != nil {
			b.Fatalf("periodic run at %s: %v", tick.Sub(start), err)
		}
		runs = append(runs, time.Since(t0))
		for next := tick.Add(time.Minute); ; next = next.Add(time.Minute) {
			if !next.Before(clock.Now()) {
				if day1Attempts == nil && !next.Before(start.Add(24*time.Hour)) {
					day1Attempts = fake.Stats().UserAttempts
				}
				tick = next
				break
			}
			skipped++
		}
	}
	b.StopTimer()
	took := time.Since(began)

	st := fake.Stats()
	maxPerMinute := fake.MaxAttemptsInWindow(time.Minute)
	maxPerUser := 0
	for _, ts := range logins.times {
		maxPerUser = max(maxPerUser, fakeiadvize.MaxInWindow(ts, time.Minute))
	}
	// Logins per role per day in the steady state: a day over the mean time
	// between two logins of a role after its first (a count of logins within
	// two days would depend on when each role first logged in).
	var gaps float64 // nanoseconds: a sum of 200,000 days overflows a Duration
	nGaps, minGap, maxGap := 0, time.Duration(1<<62), time.Duration(0)
	perDay := make([]float64, 0, roles)
	for i := range roles {
		user := names[i] + "@example.com"
		ts := logins.times[user]
		for j := 1; j < len(ts); j++ {
			gap := ts[j].Sub(ts[j-1])
			gaps += float64(gap)
			nGaps++
			minGap, maxGap = min(minGap, gap), max(maxGap, gap)
		}
		perDay = append(perDay, float64(st.UserAttempts[user]-day1Attempts[user])/float64(days-1))
	}
	if nGaps == 0 {
		b.Fatal("no role logged in twice")
	}
	var firstLogins []time.Duration // since the start, of every role that logged in
	for _, ts := range logins.times {
		firstLogins = append(firstLogins, ts[0].Sub(start))
	}
	slices.Sort(firstLogins)
	meanGap := time.Duration(gaps / float64(nGaps))
	mean := float64(24*time.Hour) / float64(meanGap)
	want := float64(24*time.Hour) / float64(24*time.Hour-min(cfg.RefreshBefore, 12*time.Hour))
	slices.Sort(runs)

	b.ReportMetric(float64(expiredServed), "expired-served")
	b.ReportMetric(float64(st.RateLimited+st.InjectedRateLimited), "upstream-429s")
	b.ReportMetric(float64(maxPerMinute), "max-logins/60s")
	b.ReportMetric(float64(maxPerUser), "max-user-logins/60s")
	b.ReportMetric(float64(waitedAfterDay1), "warm-reads-waited-after-day1")
	b.ReportMetric(float64(coldAfterDay1), "cold-reads-after-day1")
	b.ReportMetric(mean, "logins/role/day")
	b.Logf("%d roles, %d simulated days, %d reads (%d refused, %d waited on a login), %s of real time; "+
		"after day 1: %d first reads of a role never logged in (cold), and of roles with a token %d waited on a login and %d failed",
		roles, days, reads, refused, waited, took.Round(time.Second), coldAfterDay1, waitedAfterDay1, failedAfterDay1)
	b.Logf("logins: %d attempts, %d successes, %d answered 429; at most %d in any 60 s, %d for one user",
		st.LoginAttempts, st.LoginSuccesses, st.RateLimited+st.InjectedRateLimited, maxPerMinute, maxPerUser)
	b.Logf("first logins (cold): %d roles; half of them within %s, 99%% within %s, the last after %s",
		len(firstLogins), firstLogins[len(firstLogins)/2].Round(time.Minute),
		firstLogins[len(firstLogins)*99/100].Round(time.Minute), firstLogins[len(firstLogins)-1].Round(time.Minute))
	b.Logf("logins per role per day: %.4f (a day over the mean of %d gaps between two logins of a role, %s; shortest %s, longest %s); "+
		"24h / (24h - refresh_before) = %.4f, %+.2f%%; logins counted in days 2-3: %.4f a day per role (min %.1f, max %.1f)",
		mean, nGaps, meanGap.Round(time.Second), minGap, maxGap, want, 100*(mean/want-1),
		avg(perDay), slices.Min(perDay), slices.Max(perDay))
	b.Logf("periodic runs: %d (%d ticks skipped while a run was still going); real time per run: median %s, p99 %s, max %s; served an expired token: %d",
		len(runs), skipped, runs[len(runs)/2], runs[len(runs)*99/100], runs[len(runs)-1], expiredServed)

	switch {
	case expiredServed != 0:
		b.Fatalf("%d reads served an expired token", expiredServed)
	case st.RateLimited+st.InjectedRateLimited != 0:
		b.Fatalf("upstream answered %d logins with 429", st.RateLimited+st.InjectedRateLimited)
	case maxPerMinute > 100 || maxPerUser > 10:
		b.Fatalf("%d logins in a minute (limit 100), %d for one user (limit 10)", maxPerMinute, maxPerUser)
	case waitedAfterDay1 != 0 || failedAfterDay1 != 0:
		b.Fatalf("after the first day, %d reads of roles with a token waited on a login and %d failed", waitedAfterDay1, failedAfterDay1)
	case mean < want*0.95 || mean > want*1.05:
		b.Fatalf("%.4f logins per role per day, want within 5%% of %.4f", mean, want)
	}
}

// BenchmarkPeriodicRunNoneDue: the cost of one periodic run with N roles whose
// tokens are fresh (the schedule built), and the plugin's memory per role with
// every role's token cached.
func BenchmarkPeriodicRunNoneDue(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("roles=%d", n), func(b *testing.B) {
			clock := fakeclock.New()
			s := &countingStorage{Storage: &logical.InmemStorage{}}
			ctx := context.Background()
			issued := clock.Now()
			for i := range n {
				putLoggedInRole(b, s, tokenOrigin(defaultTokenURL), fmt.Sprintf("r%06d", i), fmt.Sprintf("tok-%032d", i), issued)
			}
			heapBefore := liveHeap()
			m := newBenchMount(b, clock, s)
			req := &logical.Request{Operation: logical.RollbackOperation, Storage: s}
			t0 := time.Now()
			if err := m.b.periodicRefresh(ctx, req); err != nil { // builds the schedule
				b.Fatal(err)
			}
			build := time.Since(t0)
			if got := m.b.sched.len(); got != n {
				b.Fatalf("schedule holds %d roles, want %d", got, n)
			}
			for i := range n { // every role read once: its entry cached
				m.mustDo(b, logical.ReadOperation, fmt.Sprintf("static-creds/r%06d", i), nil)
			}
			perRole := float64(liveHeap()-heapBefore) / float64(n)
			gets, lists := s.gets.Load(), s.lists.Load()
			b.ResetTimer()
			for range b.N {
				clock.Advance(time.Second)
				if err := m.b.periodicRefresh(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(s.gets.Load()-gets+s.lists.Load()-lists)/float64(b.N), "storage-reads/op")
			b.ReportMetric(perRole, "heap-B/role")
			b.Logf("%d roles: first run (builds the schedule from storage) %s; live heap %.0f B per role", n, build.Round(time.Millisecond), perRole)
			runtime.KeepAlive(m)
		})
	}
}

func avg(xs []float64) float64 {
	sum := 0.0
	for _, x := range xs {
		sum += x
	}
	return sum / float64(len(xs))
}

// liveHeap is the heap in use after a garbage collection.
func liveHeap() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

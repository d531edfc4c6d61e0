package fakeiadvize

import (
	"testing"
	"time"
)

// step is one login attempt of a rate-limit scenario.
type step struct {
	advance    time.Duration // clock advance before each attempt
	user, pass string
	ip         string
	wantCode   int
	wantRetry  string // Retry-After on 429
	repeat     int    // make the attempt this many times (default 1)
}

func TestRateLimits(t *testing.T) {
	const s = time.Second
	ok, bad := password, "wrong"
	tests := []struct {
		name      string
		opts      Options
		steps     []step
		wantRated int
	}{
		{
			name: "user limit counts failed attempts and blocks correct ones",
			steps: []step{
				{user: user, pass: bad, ip: "10.0.0.1", wantCode: 401, repeat: 9},
				{user: user, pass: ok, ip: "10.0.0.1", wantCode: 200},
				{user: user, pass: ok, ip: "10.0.0.2", wantCode: 429, wantRetry: "60"},
				{advance: 30 * s, user: user, pass: ok, ip: "10.0.0.3", wantCode: 429, wantRetry: "30"},
				{user: "bob", pass: bad, ip: "10.0.0.1", wantCode: 401}, // other users are not blocked
				{advance: 29 * s, user: user, pass: ok, ip: "10.0.0.3", wantCode: 429, wantRetry: "1"},
				{advance: 1 * s, user: user, pass: ok, ip: "10.0.0.3", wantCode: 200},
			},
			wantRated: 3,
		},
		{
			name: "sliding window, not fixed",
			steps: []step{
				// Ten attempts at t=0..9s.
				{user: user, pass: ok, ip: "10.0.0.1", wantCode: 200},
				{advance: s, user: user, pass: ok, ip: "10.0.0.1", wantCode: 200, repeat: 9},
				// t=60s: the t=0 attempt is exactly 60 s old and no longer counts.
				{advance: 51 * s, user: user, pass: ok, ip: "10.0.0.1", wantCode: 200},
				// Eleventh attempt within 60 s.
				{user: user, pass: ok, ip: "10.0.0.1", wantCode: 429, wantRetry: "60"},
				// t=120s: block over, the two t=60s attempts have left the window.
				{advance: 60 * s, user: user, pass: ok, ip: "10.0.0.1", wantCode: 200},
			},
			wantRated: 1,
		},
		{
			name: "attempts refused during a block still count",
			opts: Options{BlockDuration: 10 * s},
			steps: []step{
				{user: user, pass: ok, ip: "10.0.0.1", wantCode: 200, repeat: 10},
				{user: user, pass: ok, ip: "10.0.0.1", wantCode: 429, wantRetry: "10"},
				{advance: 5 * s, user: user, pass: ok, ip: "10.0.0.1", wantCode: 429, wantRetry: "5"},
				// Block over, but 12 attempts within 60 s: blocked again.
				{advance: 5 * s, user: user, pass: ok, ip: "10.0.0.1", wantCode: 429, wantRetry: "10"},
			},
			wantRated: 3,
		},
		{
			name: "ip limit across users",
			opts: Options{IPLoginsPerMinute: 5, UserLoginsPerMinute: -1},
			steps: []step{
				{user: "u1", pass: bad, ip: "10.0.0.1", wantCode: 401, repeat: 5},
				{user: "u2", pass: bad, ip: "10.0.0.1", wantCode: 429, wantRetry: "60"},
				{user: user, pass: ok, ip: "10.0.0.1", wantCode: 429, wantRetry: "60"},
				{user: user, pass: ok, ip: "10.0.0.2", wantCode: 200}, // other IPs are not blocked
				{advance: 60 * s, user: user, pass: ok, ip: "10.0.0.1", wantCode: 200},
			},
			wantRated: 2,
		},
		{
			name: "default ip limit is 100",
			opts: Options{UserLoginsPerMinute: -1},
			steps: []step{
				{user: "u", pass: bad, ip: "10.0.0.1", wantCode: 401, repeat: 100},
				{user: "v", pass: bad, ip: "10.0.0.1", wantCode: 429, wantRetry: "60"},
			},
			wantRated: 1,
		},
		{
			name: "limits disabled",
			opts: Options{UserLoginsPerMinute: -1, IPLoginsPerMinute: -1},
			steps: []step{
				{user: user, pass: ok, ip: "10.0.0.1", wantCode: 200, repeat: 150},
			},
		},
		{
			name: "bad requests count against the ip",
			opts: Options{IPLoginsPerMinute: 2},
			steps: []step{
				{user: "", pass: "", ip: "10.0.0.1", wantCode: 400, repeat: 2},
				{user: user, pass: ok, ip: "10.0.0.1", wantCode: 429, wantRetry: "60"},
			},
			wantRated: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, clock := newFake(t, tt.opts)
			for i, st := range tt.steps {
				for n := range max(st.repeat, 1) {
					clock.Advance(st.advance)
					w := login(f, st.user, st.pass, st.ip)
					if w.Code != st.wantCode {
						t.Fatalf("step %d, attempt %d (user %q, ip %s): status %d, want %d",
							i, n, st.user, st.ip, w.Code, st.wantCode)
					}
					if got := w.Header().Get("Retry-After"); got != st.wantRetry {
						t.Fatalf("step %d: Retry-After = %q, want %q", i, got, st.wantRetry)
					}
					if w.Code == 429 {
						if e := decodeError(t, w); e.Error != "too_many_requests" || e.Description == "" {
							t.Fatalf("step %d: 429 body = %+v, want too_many_requests", i, e)
						}
					}
				}
			}
			st := f.Stats()
			if st.RateLimited != tt.wantRated || st.InjectedRateLimited != 0 {
				t.Errorf("RateLimited %d, InjectedRateLimited %d; want %d, 0", st.RateLimited, st.InjectedRateLimited, tt.wantRated)
			}
		})
	}
}

func TestSetLimitsAndBlock(t *testing.T) {
	f, clock := newFake(t, Options{})
	f.SetLimits(2, 0)
	f.SetBlockDuration(0)
	for range 2 {
		if w := login(f, user, password, "10.0.0.1"); w.Code != 200 {
			t.Fatalf("status %d, want 200", w.Code)
		}
	}
	if w := login(f, user, password, "10.0.0.1"); w.Code != 429 || w.Header().Get("Retry-After") != "1" {
		t.Fatalf("third attempt: status %d Retry-After %q, want 429 1", w.Code, w.Header().Get("Retry-After"))
	}
	clock.Advance(60 * time.Second)
	if w := login(f, user, password, "10.0.0.1"); w.Code != 200 {
		t.Fatalf("after the window: status %d, want 200", w.Code)
	}
}

func TestLoginTimesAndMaxAttemptsInWindow(t *testing.T) {
	const s = time.Second
	tests := []struct {
		name    string
		offsets []time.Duration // since the start, in order
		window  time.Duration
		want    int
	}{
		{name: "none", window: time.Minute, want: 0},
		{name: "one", offsets: []time.Duration{0}, window: time.Minute, want: 1},
		{name: "all in one window", offsets: []time.Duration{0, 10 * s, 59 * s}, window: time.Minute, want: 3},
		{name: "exactly a window apart", offsets: []time.Duration{0, 60 * s}, window: time.Minute, want: 1},
		{name: "best window in the middle", offsets: []time.Duration{0, 50 * s, 55 * s, 70 * s, 109 * s, 200 * s}, window: time.Minute, want: 4},
		{name: "same instant", offsets: []time.Duration{5 * s, 5 * s, 5 * s}, window: time.Second, want: 3},
		{name: "zero window", offsets: []time.Duration{0}, window: 0, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, clock := newFake(t, Options{UserLoginsPerMinute: -1})
			start := clock.Now()
			var prev time.Duration
			for _, off := range tt.offsets {
				clock.Advance(off - prev)
				prev = off
				login(f, user, "wrong", "10.0.0.1")
			}
			if got := f.MaxAttemptsInWindow(tt.window); got != tt.want {
				t.Errorf("MaxAttemptsInWindow(%s) = %d, want %d", tt.window, got, tt.want)
			}
			times := f.LoginTimes()
			if len(times) != len(tt.offsets) {
				t.Fatalf("LoginTimes has %d entries, want %d", len(times), len(tt.offsets))
			}
			for i, off := range tt.offsets {
				if !times[i].Equal(start.Add(off)) {
					t.Errorf("LoginTimes[%d] = %s, want %s", i, times[i], start.Add(off))
				}
			}
		})
	}
}

package fakeiadvize

import (
	"slices"
	"time"
)

// The login rate limits: per-username and per-IP sliding windows of Window,
// the blocks that follow going over, and the count of attempts in any window.

// SetLimits sets the per-username and per-IP login limits within Window.
// A value <= 0 disables that limit.
func (s *Server) SetLimits(user, ip int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.userLimit, s.ipLimit = user, ip
}

// SetBlockDuration sets how long a username or IP that went over its limit
// is refused (negative counts as zero).
func (s *Server) SetBlockDuration(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.block = max(d, 0)
}

// MaxAttemptsInWindow returns the largest number of login attempts that fall
// within any span shorter than d (attempts d or more apart are never in the
// same span, as in the rate limiter). It is 0 when d <= 0.
func (s *Server) MaxAttemptsInWindow(d time.Duration) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return MaxInWindow(s.loginTimes, d)
}

// MaxInWindow returns the largest number of times that fall within one span
// shorter than d, in any order: "at most N in any minute" holds when
// MaxInWindow(times, time.Minute) <= N. It is 0 when d <= 0.
func MaxInWindow(times []time.Time, d time.Duration) int {
	if d <= 0 {
		return 0
	}
	ts := slices.Clone(times)
	slices.SortFunc(ts, time.Time.Compare)
	best, lo := 0, 0
	for hi := range ts {
		for ts[hi].Sub(ts[lo]) >= d {
			lo++
		}
		best = max(best, hi-lo+1)
	}
	return best
}

// appendWindow drops the times Window or more before now, and appends now.
func appendWindow(times []time.Time, now time.Time) []time.Time {
	times = slices.DeleteFunc(times, func(t time.Time) bool { return now.Sub(t) >= Window })
	return append(times, now)
}

// limitedLocked reports whether the attempt (already recorded in the windows)
// must be refused, blocking the username or IP that just went over its limit,
// and how long until the block ends.
func (s *Server) limitedLocked(req tokenRequest, now time.Time) (time.Duration, bool) {
	var until time.Time
	check := func(blocks map[string]time.Time, windows map[string][]time.Time, key string, limit int) {
		if t, ok := blocks[key]; ok {
			if now.Before(t) {
				until = maxTime(until, t)
				return
			}
			delete(blocks, key)
		}
		if limit > 0 && len(windows[key]) > limit {
			s.logf("rate limit: blocking %q for %s", key, s.block)
			blocks[key] = now.Add(s.block)
			until = maxTime(until, blocks[key])
		}
	}
	check(s.ipBlocks, s.ipWindows, req.ip, s.ipLimit)
	if req.identity != "" {
		check(s.userBlocks, s.userWindows, req.identity, s.userLimit)
	}
	if until.IsZero() {
		return 0, false
	}
	return until.Sub(now), true
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

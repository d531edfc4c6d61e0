// Package fakeclock is the manually advanced clock of the tests: time moves
// only when a test says so, so rate-limit windows, backoffs and token expiries
// are tested without sleeping.
package fakeclock

import (
	"context"
	"sync"
	"time"
)

// Start is the time a new Clock shows: a fixed Monday morning, in UTC.
var Start = time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC)

// Clock is a fake clock, safe for concurrent use. Its methods fit the
// injected-clock hooks of the plugin (Now, Sleep) and of internal/fakeiadvize
// (Options.Now).
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// New returns a clock showing Start.
func New() *Clock { return &Clock{t: Start} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d (backward for a negative d).
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// Set moves the clock to t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// Sleep is a wait on the clock: the time passes at once, and the wait never
// fails (ctx is not consulted).
func (c *Clock) Sleep(_ context.Context, d time.Duration) error {
	c.Advance(d)
	return nil
}

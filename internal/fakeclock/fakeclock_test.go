package fakeclock

import (
	"context"
	"sync"
	"testing"
	"time"
)

func TestClockMovesOnlyWhenTold(t *testing.T) {
	c := New()
	if !c.Now().Equal(Start) {
		t.Fatalf("new clock shows %v, want %v", c.Now(), Start)
	}
	c.Advance(90 * time.Second)
	if got := c.Now().Sub(Start); got != 90*time.Second {
		t.Fatalf("after Advance(90s): %v since start, want 90s", got)
	}
	if err := c.Sleep(context.Background(), time.Hour); err != nil {
		t.Fatalf("Sleep: %v", err)
	}
	if got := c.Now().Sub(Start); got != time.Hour+90*time.Second {
		t.Fatalf("after Sleep(1h): %v since start, want 1h1m30s", got)
	}
	at := time.Date(2030, 6, 1, 0, 0, 0, 0, time.UTC)
	c.Set(at)
	if !c.Now().Equal(at) {
		t.Fatalf("after Set: %v, want %v", c.Now(), at)
	}
}

func TestClockIsSafeForConcurrentUse(t *testing.T) {
	c := New()
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				c.Advance(time.Second)
				_ = c.Now()
			}
		}()
	}
	wg.Wait()
	if got := c.Now().Sub(Start); got != 1000*time.Second {
		t.Fatalf("%v since start, want 1000s", got)
	}
}

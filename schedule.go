package iadvize

import (
	"container/heap"
	"sync"
	"time"
)

// schedule is the in-memory list of the roles the background refresh looks after
// (those with a cached token whose credentials were not rejected), ordered by
// when each becomes due (backgroundDue). A periodic run takes the due ones off its
// front, so its cost grows with the roles due, not with all roles.
//
// It is built from storage by the first periodic run after a start, a plugin
// reload or a config change (refresh_before moves every due time), and kept up to
// date after that: every token stored updates its role, and every role dropped
// from memory (role write or delete, Invalidate) is checked again by the next run.
type schedule struct {
	// mu guards every field, for in-memory work only (order: docs/locks.md).
	mu    sync.Mutex
	state scheduleState
	build uint64 // bumped by reset, so a build that raced with one is dropped
	// refreshBefore is the config value the due times were computed with.
	refreshBefore time.Duration
	items         scheduleHeap
	index         map[string]*scheduleItem
	// touched collects the roles changed while a build runs: the build may have
	// read them before the change, so they are checked again by the next run.
	touched map[string]struct{}
	// building is what a build cut short by a run's end has read, for the next
	// run to go on from (nil: start anew); running is set while a run builds.
	building *scheduleBuild
	running  bool
}

// scheduleBuild is a build in progress: the token states listed, how many were
// read, and the due times found.
type scheduleBuild struct {
	names []string
	next  int
	due   map[string]time.Time
}

type scheduleState int

const (
	scheduleEmpty    scheduleState = iota // not built: the next periodic run builds it
	scheduleBuilding                      // a periodic run is reading storage
	scheduleReady
)

type scheduleItem struct {
	name string
	due  time.Time // the zero time: check at the next run
	pos  int
}

// backgroundDue is when the background refresh should log in for a token: as it
// enters its refresh window less the background lead, and not before the end of a
// backoff. ok is false when it should not at all: no token, or credentials
// rejected (until they are rewritten).
func backgroundDue(st *tokenState, refreshBefore time.Duration) (due time.Time, ok bool) {
	at, ok := st.dueAt(refreshBefore)
	if !ok || st.CredentialsRejected {
		return time.Time{}, false
	}
	return latest(at, st.NextAttempt), true
}

// update files a role under its token state, or takes it out.
func (s *schedule) update(name string, st *tokenState) {
	s.change(name, func() {
		if due, ok := backgroundDue(st, s.refreshBefore); ok {
			s.setLocked(name, due)
		} else {
			s.removeLocked(name)
		}
	})
}

// touch makes the next run check a role whose state is no longer in memory.
func (s *schedule) touch(name string) {
	s.change(name, func() { s.setLocked(name, time.Time{}) })
}

// change applies a change of one role to a ready schedule (apply runs under
// s.mu); while a build runs, it notes the role for the next run to check.
func (s *schedule) change(name string, apply func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.state {
	case scheduleBuilding:
		s.touched[name] = struct{}{}
	case scheduleReady:
		apply()
	}
}

// remove takes a role out.
func (s *schedule) remove(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removeLocked(name)
}

// reset drops the schedule: the next periodic run builds it again.
func (s *schedule) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state, s.items, s.index, s.touched = scheduleEmpty, nil, nil, nil
	s.building, s.running = nil, false
	s.build++
}

// beginBuild starts a build under refreshBefore when the schedule is not built,
// or goes on with one a run's end cut short (resume, nil to start anew); ok is
// false when the schedule is ready or a run is building it.
func (s *schedule) beginBuild(refreshBefore time.Duration) (build uint64, resume *scheduleBuild, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.state == scheduleReady || s.running:
		return 0, nil, false
	case s.state == scheduleEmpty:
		s.state, s.refreshBefore, s.touched, s.building = scheduleBuilding, refreshBefore, make(map[string]struct{}), nil
		s.build++
	}
	s.running = true
	return s.build, s.building, true
}

// suspendBuild keeps what a build cut short has read, for the next run.
func (s *schedule) suspendBuild(build uint64, b *scheduleBuild) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.build == build && s.state == scheduleBuilding {
		s.building, s.running = b, false
	}
}

// finishBuild installs what a build read (role name -> due time), unless a reset
// came in between; abandon it with ok false (the next run builds anew).
func (s *schedule) finishBuild(build uint64, due map[string]time.Time, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.build != build || s.state != scheduleBuilding {
		return
	}
	s.building, s.running = nil, false
	if !ok {
		s.state, s.touched = scheduleEmpty, nil
		return
	}
	s.items, s.index = make(scheduleHeap, 0, len(due)), make(map[string]*scheduleItem, len(due))
	for name, at := range due {
		item := &scheduleItem{name: name, due: at, pos: len(s.items)}
		s.items = append(s.items, item)
		s.index[name] = item
	}
	heap.Init(&s.items)
	for name := range s.touched {
		s.setLocked(name, time.Time{})
	}
	s.state, s.touched = scheduleReady, nil
}

// ready reports whether the schedule is built, and the refresh_before it uses.
func (s *schedule) ready() (bool, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state == scheduleReady, s.refreshBefore
}

// takeDue removes and returns the roles due at now, earliest first.
func (s *schedule) takeDue(now time.Time) []scheduleItem {
	s.mu.Lock()
	defer s.mu.Unlock()
	var due []scheduleItem
	for len(s.items) > 0 && !s.items[0].due.After(now) {
		item := heap.Pop(&s.items).(*scheduleItem)
		delete(s.index, item.name)
		due = append(due, *item)
	}
	return due
}

// putBack files a role taken by takeDue and not handled, unless it was filed
// again meanwhile (its token changed).
func (s *schedule) putBack(item scheduleItem) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.index[item.name]; !ok && s.state == scheduleReady {
		s.setLocked(item.name, item.due)
	}
}

// len is the number of roles filed.
func (s *schedule) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.items)
}

func (s *schedule) setLocked(name string, due time.Time) {
	if s.index == nil {
		return
	}
	if item, ok := s.index[name]; ok {
		item.due = due
		heap.Fix(&s.items, item.pos)
		return
	}
	item := &scheduleItem{name: name, due: due}
	heap.Push(&s.items, item)
	s.index[name] = item
}

func (s *schedule) removeLocked(name string) {
	if item, ok := s.index[name]; ok {
		heap.Remove(&s.items, item.pos)
		delete(s.index, name)
	}
}

// scheduleHeap is a min-heap of items by due time (container/heap).
type scheduleHeap []*scheduleItem

func (h scheduleHeap) Len() int           { return len(h) }
func (h scheduleHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h scheduleHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].pos, h[j].pos = i, j
}

func (h *scheduleHeap) Push(x any) {
	item := x.(*scheduleItem)
	item.pos = len(*h)
	*h = append(*h, item)
}

func (h *scheduleHeap) Pop() any {
	old := *h
	item := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return item
}

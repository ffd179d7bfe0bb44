// Package queue owns server slots: how many requests (or tunnels) each server
// is serving against its maxconn, the FIFO queues of requests waiting for a
// slot, and the balance algorithms that pick a server. It knows nothing of
// HTTP or sockets; callers Acquire a server before connecting and Release it
// when the exchange ends.
package queue

import (
	"container/list"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// Errors returned by Acquire. All map to 503 for an HTTP client.
var (
	ErrNoServer     = errors.New("no server available")
	ErrQueueFull    = errors.New("queue full")
	ErrQueueTimeout = errors.New("queue timeout")
)

// State is a server's administrative/health state.
type State int32

const (
	StateUp State = iota
	StateDown
	StateMaint
	StateDrain
)

// Server is one server of a backend with its slot accounting.
type Server struct {
	Name     string
	Addr     string
	Index    int // position in the backend
	Weight   int
	MaxConn  int // 0 = unlimited
	MinConn  int // with the backend's FullConn: a dynamic limit between MinConn and MaxConn
	MaxQueue int // 0 = unlimited
	Backup   bool

	// Shared, when set, is a slot count this server shares with another
	// party that takes slots on its own: the kernel steering local
	// clients straight to the server. A slot is granted only if a place can
	// be taken there too, so the server never exceeds its limit in total.
	// Set before the backend is in use.
	Shared SharedSlots

	state atomic.Int32

	// guarded by Backend.mu
	cur          int       // requests holding a slot
	limit        int       // the maxconn in force (dynamic with minconn)
	queue        list.List // *waiter targeted at this server
	current      int       // smooth weighted round robin state
	effW         int       // weight in use
	succ         *Server   // after a reload: the server whose slots ours also hold (HandOver)
	tokens       []any     // places taken in Shared, one per slot held
	sharedQueued bool      // last SetQueued told to Shared
	succB        *Backend

	// Counters, readable without the lock.
	Cur      atomic.Int64 // mirrors cur
	Max      atomic.Int64 // highest cur seen
	Total    atomic.Int64 // slots granted
	QueueCur atomic.Int64
	QueueMax atomic.Int64
	Failures atomic.Int64
	Limit    atomic.Int64 // the maxconn in force, for metrics
}

// String is the state as HAProxy shows it: UP, DOWN, MAINT or DRAIN.
func (st State) String() string {
	switch st {
	case StateDown:
		return "DOWN"
	case StateMaint:
		return "MAINT"
	case StateDrain:
		return "DRAIN"
	}
	return "UP"
}

// State returns the server's current state.
func (s *Server) State() State { return State(s.state.Load()) }

// SetState changes the server's state.
func (s *Server) SetState(st State) { s.state.Store(int32(st)) }

func (s *Server) usable() bool { return s.State() == StateUp && s.effW > 0 }

// inUse is the slots taken on s: by the queue's callers and, with a shared
// count, by the other party.
func (s *Server) inUse() int {
	if s.Shared != nil {
		return s.cur + s.Shared.Others()
	}
	return s.cur
}

func (s *Server) full() bool {
	lim := s.limit
	if lim <= 0 {
		return false
	}
	if s.Shared != nil {
		return s.cur+s.Shared.Others() >= lim
	}
	return s.cur >= lim
}

// SharedSlots is a server's slot count shared with another party (see
// Server.Shared).
type SharedSlots interface {
	// TryTake takes one place if fewer than limit are taken in total (0:
	// no limit), and returns a token for Give.
	TryTake(limit int) (token any, ok bool)
	Give(token any)
	// Others is the places the other party holds now.
	Others() int
	// SetQueued says requests wait for the server in the queues: the
	// other party should leave the freed places to them.
	SetQueued(bool)
}

// Balancer picks a server. It is called with the backend locked. Hashing
// algorithms return the server the key maps to even if it is full (the
// request then waits in that server's queue); the others return only servers
// with a free slot, or nil.
type Balancer interface {
	Pick(b *Backend, key uint64, exclude *Server) *Server
	Hashing() bool
}

// Backend is a pool of servers with a common queue.
type Backend struct {
	Name         string
	Servers      []*Server
	Balancer     Balancer
	TimeoutQueue time.Duration
	// Redispatch moves the requests queued on a server that goes down or
	// into maintenance to the backend queue (option redispatch); without
	// it they wait for that server until timeout queue.
	Redispatch bool
	// FullConn is the backend load at which servers with a minconn reach
	// their maxconn (HAProxy's fullconn); 0 disables the dynamic limit.
	FullConn int

	mu       sync.Mutex
	queue    list.List // *waiter not tied to a server
	sessions int       // requests in the backend: served and queued
	dynamic  bool      // some server has a minconn
	shared   bool      // some server has a Shared slot count

	QueueCur  atomic.Int64
	QueueMax  atomic.Int64
	Sessions  atomic.Int64 // requests in the backend, served and queued
	Queued    atomic.Int64 // requests that had to wait, ever
	QueueWait atomic.Int64 // total time they waited, in nanoseconds
}

type waiter struct {
	seq    int64   // arrival, monotonic nanoseconds since epoch
	target *Server // nil: any server
	srv    *Server // assigned server, set under mu
	ch     chan struct{}
	elem   *list.Element
}

// NewBackend builds a backend; servers keep their order.
func NewBackend(name string, servers []*Server, bal Balancer, timeoutQueue time.Duration) *Backend {
	b := &Backend{Name: name, Servers: servers, Balancer: bal, TimeoutQueue: timeoutQueue}
	for i, s := range servers {
		s.Index = i
		s.effW = s.Weight
		if s.MinConn > 0 && s.MaxConn > 0 && s.MinConn < s.MaxConn {
			b.dynamic = true
		}
		b.shared = b.shared || s.Shared != nil
	}
	b.updateLimits()
	return b
}

// updateLimits computes each server's limit: its maxconn or, with a
// minconn, HAProxy's dynamic limit max(minconn, maxconn * load / fullconn)
// where load is the number of requests in the backend, served or queued.
func (b *Backend) updateLimits() {
	for _, s := range b.Servers {
		lim := s.MaxConn
		if s.MinConn > 0 && lim > 0 && s.MinConn < lim && b.FullConn > 0 && b.sessions < b.FullConn {
			lim = max(s.MinConn, s.MaxConn*b.sessions/b.FullConn)
		}
		s.limit = lim
		s.Limit.Store(int64(lim))
	}
}

// SetFullConn sets the backend load at which minconn servers reach their
// maxconn (HAProxy's fullconn; 0 disables the dynamic limit).
func (b *Backend) SetFullConn(n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.FullConn = n
	b.updateLimits()
}

// enter counts a request into the backend's load; with dynamic limits that
// may open slots for queued requests.
func (b *Backend) enter() {
	b.sessions++
	b.Sessions.Store(int64(b.sessions))
	if b.dynamic {
		b.updateLimits()
		for _, s := range b.Servers {
			b.dispatch(s)
		}
	}
}

func (b *Backend) leave() {
	b.sessions--
	b.Sessions.Store(int64(b.sessions))
	if b.dynamic {
		b.updateLimits()
	}
}

// SetServerState changes a server's state. A server leaving service hands
// its queued requests to the backend queue when Redispatch is set (they are
// served by the others, in their order of arrival); one entering service
// takes queued requests at once.
func (b *Backend) SetServerState(s *Server, st State) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s.SetState(st)
	if st != StateUp {
		if b.Redispatch {
			for e := s.queue.Front(); e != nil; e = s.queue.Front() {
				w := e.Value.(*waiter)
				s.queue.Remove(e)
				w.target = nil
				insertOrdered(&b.queue, w)
			}
			s.QueueCur.Store(0)
			b.QueueCur.Store(int64(b.queue.Len()))
			maxStore(&b.QueueMax, int64(b.queue.Len()))
		}
		// Requests waiting for any server may now be served by the backups.
		for _, o := range b.Servers {
			b.dispatch(o)
		}
		return
	}
	b.dispatch(s)
}

// insertOrdered puts w in queue q in order of arrival (usually at the back).
func insertOrdered(q *list.List, w *waiter) {
	for e := q.Back(); e != nil; e = e.Prev() {
		if e.Value.(*waiter).seq <= w.seq {
			w.elem = q.InsertAfter(w, e)
			return
		}
	}
	w.elem = q.PushFront(w)
}

// candidates returns whether active servers are usable; if none is, backups are.
func (b *Backend) useBackups() bool {
	for _, s := range b.Servers {
		if !s.Backup && s.usable() {
			return false
		}
	}
	return true
}

// Eligible reports whether s may be picked now (usable and in the right tier).
func (b *Backend) eligible(s *Server, backups bool) bool {
	return s.usable() && s.Backup == backups
}

// Acquire returns a server with a slot held for the caller, waiting in a
// queue when all are full. key feeds hashing algorithms. exclude, if not nil,
// is avoided (redispatch after a failure). The caller must Release it.
func (b *Backend) Acquire(ctx context.Context, key uint64, exclude *Server) (*Server, error) {
	return b.AcquireAt(ctx, key, exclude, time.Now())
}

// epoch anchors arrival times on the monotonic clock.
var epoch = time.Now()

// AcquireAt is Acquire for a request that arrived at the given time: queues
// are ordered by arrival, so a request that took longer to reach its queue
// (handed between threads) does not lose its place.
func (b *Backend) AcquireAt(ctx context.Context, key uint64, exclude *Server, arrived time.Time) (*Server, error) {
	b.mu.Lock()
	b.enter()
	s := b.Balancer.Pick(b, key, exclude)
	if s != nil && !s.full() && s.queue.Len() == 0 && b.queue.Len() == 0 && b.grant(s) {
		b.mu.Unlock()
		return s, nil
	}
	w := &waiter{ch: make(chan struct{}, 1), target: s}
	if s != nil && b.Balancer.Hashing() && s.MaxQueue > 0 && s.queue.Len() >= s.MaxQueue {
		// The hashed server's queue is full: as HAProxy does, the
		// request loses its server and may go to any other one, now if
		// one has a free slot, else through the backend queue.
		if o := b.anyFree(s); o != nil && b.queue.Len() == 0 && b.grant(o) {
			b.mu.Unlock()
			return o, nil
		}
		s, w.target = nil, nil
	}
	if s != nil && b.Balancer.Hashing() {
		// Wait for the server the key maps to.
	} else {
		w.target = nil
		if !b.anyEligible() {
			b.leave()
			b.mu.Unlock()
			return nil, ErrNoServer
		}
	}
	w.seq = int64(arrived.Sub(epoch))
	if s != nil {
		insertOrdered(&s.queue, w)
		n := int64(s.queue.Len())
		s.QueueCur.Store(n)
		maxStore(&s.QueueMax, n)
	} else {
		insertOrdered(&b.queue, w)
		n := int64(b.queue.Len())
		b.QueueCur.Store(n)
		maxStore(&b.QueueMax, n)
	}
	b.syncQueued()
	b.mu.Unlock()

	start := time.Now()
	defer func() {
		b.Queued.Add(1)
		b.QueueWait.Add(int64(time.Since(start)))
	}()
	var timeout <-chan time.Time
	if b.TimeoutQueue > 0 {
		t := time.NewTimer(b.TimeoutQueue)
		defer t.Stop()
		timeout = t.C
	}
	var err error
	select {
	case <-w.ch:
		return w.srv, nil
	case <-timeout:
		err = ErrQueueTimeout
	case <-ctx.Done():
		err = ctx.Err()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if w.srv != nil { // granted while we gave up: take it
		return w.srv, nil
	}
	b.unqueue(w)
	b.leave()
	return nil, err
}

// anyFree returns the least loaded eligible server with a free slot, other
// than exclude.
func (b *Backend) anyFree(exclude *Server) *Server {
	backups := b.useBackups()
	var best *Server
	for _, s := range b.Servers {
		if s == exclude || !b.eligible(s, backups) || s.full() {
			continue
		}
		if best == nil || s.inUse()*best.effW < best.inUse()*s.effW {
			best = s
		}
	}
	return best
}

func (b *Backend) anyEligible() bool {
	backups := b.useBackups()
	for _, s := range b.Servers {
		if b.eligible(s, backups) {
			return true
		}
	}
	return false
}

func (b *Backend) unqueue(w *waiter) {
	if w.target != nil {
		w.target.queue.Remove(w.elem)
		w.target.QueueCur.Store(int64(w.target.queue.Len()))
	} else {
		b.queue.Remove(w.elem)
		b.QueueCur.Store(int64(b.queue.Len()))
	}
	b.syncQueued()
}

// syncQueued tells the servers' shared slot counts whether requests wait
// for them (their own queue, or the backend's).
func (b *Backend) syncQueued() {
	if !b.shared {
		return
	}
	for _, s := range b.Servers {
		if s.Shared == nil {
			continue
		}
		q := s.queue.Len() > 0 || (b.queue.Len() > 0 && !s.Backup)
		if q != s.sharedQueued {
			s.sharedQueued = q
			s.Shared.SetQueued(q)
		}
	}
}

// SetShared sets s.Shared while the backend may be in use.
func (b *Backend) SetShared(s *Server, sh SharedSlots) {
	b.mu.Lock()
	s.Shared, s.sharedQueued = sh, false
	b.shared = b.shared || sh != nil
	b.mu.Unlock()
}

// Kick hands free slots of s to waiters: for a server whose shared slots
// the other party gave back (the kernel's steered connections closing).
func (b *Backend) Kick(s *Server) {
	b.mu.Lock()
	b.dispatch(s)
	b.mu.Unlock()
}

// grant gives the caller a slot of s; with a shared count it fails when the
// other party took the last place meanwhile.
func (b *Backend) grant(s *Server) bool {
	if s.Shared != nil {
		tok, ok := s.Shared.TryTake(s.limit)
		if !ok {
			return false
		}
		s.tokens = append(s.tokens, tok)
	}
	s.cur++
	s.Cur.Store(int64(s.cur))
	maxStore(&s.Max, int64(s.cur))
	s.Total.Add(1)
	return true
}

// Release gives back the slot held on s and hands it to the oldest waiter
// that can use it.
func (b *Backend) Release(s *Server) { b.release(s, true) }

func (b *Backend) release(s *Server, leave bool) {
	b.mu.Lock()
	if n := len(s.tokens); n > 0 {
		s.Shared.Give(s.tokens[n-1])
		s.tokens[n-1] = nil
		s.tokens = s.tokens[:n-1]
	}
	s.cur--
	s.Cur.Store(int64(s.cur))
	if leave {
		b.leave()
	}
	b.dispatch(s)
	succ, succB := s.succ, s.succB
	b.mu.Unlock()
	if succ != nil {
		succB.release(succ, false)
	}
}

// HandOver is for reloads: ns, the server of backend nb that replaces s,
// starts with the slots s holds now (requests in flight, tunnels that live
// on), and every later release of one of them frees one of ns too, so that
// maxconn holds across configurations. Call it before nb is in use.
func (b *Backend) HandOver(s *Server, nb *Backend, ns *Server) {
	b.mu.Lock()
	defer b.mu.Unlock()
	nb.mu.Lock()
	ns.cur += s.cur
	ns.Cur.Store(int64(ns.cur))
	maxStore(&ns.Max, int64(ns.cur))
	nb.mu.Unlock()
	s.succ, s.succB = ns, nb
}

// dispatch gives free slots of s to waiters: the older of the head of s's
// own queue and the head of the backend queue.
func (b *Backend) dispatch(s *Server) {
	if !s.usable() {
		return // down or in maintenance: its queue waits (or was redispatched)
	}
	for !s.full() {
		var sw, bw *waiter
		if e := s.queue.Front(); e != nil {
			sw = e.Value.(*waiter)
		}
		if e := b.queue.Front(); e != nil && s.usable() && s.Backup == b.useBackups() {
			bw = e.Value.(*waiter)
		}
		w := sw
		if w == nil || (bw != nil && bw.seq < sw.seq) {
			w = bw
		}
		if w == nil {
			return
		}
		if !b.grant(s) {
			return // the other party took the place: wait for its release
		}
		b.unqueue(w)
		w.srv = s
		w.ch <- struct{}{}
	}
}

func maxStore(a *atomic.Int64, v int64) {
	for {
		old := a.Load()
		if v <= old || a.CompareAndSwap(old, v) {
			return
		}
	}
}

// TryAcquire returns a server with a slot held for the caller if one is
// free now and nobody is queued ahead, or nil (the caller then uses
// Acquire, which queues).
func (b *Backend) TryAcquire(key uint64) *Server {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.queue.Len() > 0 {
		return nil
	}
	s := b.Balancer.Pick(b, key, nil)
	if s == nil || s.full() || s.queue.Len() > 0 || !b.grant(s) {
		return nil
	}
	b.enter()
	return s
}

// SetWeight changes a server's weight (0 takes it out of load balancing
// without marking it down, as HAProxy's drain does).
func (b *Backend) SetWeight(s *Server, w int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s.Weight, s.effW, s.current = w, w, 0
	b.dispatch(s)
}

// SetMaxConn changes a server's maxconn; a raised limit serves queued
// requests at once.
func (b *Backend) SetMaxConn(s *Server, n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s.MaxConn = n
	b.updateLimits()
	b.dispatch(s)
}

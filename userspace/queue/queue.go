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
	MaxQueue int // 0 = unlimited
	Backup   bool

	state atomic.Int32

	// guarded by Backend.mu
	cur     int       // requests holding a slot
	queue   list.List // *waiter targeted at this server
	current int       // smooth weighted round robin state
	effW    int       // weight in use

	// Counters, readable without the lock.
	Cur      atomic.Int64 // mirrors cur
	Max      atomic.Int64 // highest cur seen
	Total    atomic.Int64 // slots granted
	QueueCur atomic.Int64
	QueueMax atomic.Int64
	Failures atomic.Int64
}

// State returns the server's current state.
func (s *Server) State() State { return State(s.state.Load()) }

// SetState changes the server's state.
func (s *Server) SetState(st State) { s.state.Store(int32(st)) }

func (s *Server) usable() bool { return s.State() == StateUp && s.effW > 0 }

func (s *Server) full() bool { return s.MaxConn > 0 && s.cur >= s.MaxConn }

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

	mu    sync.Mutex
	queue list.List // *waiter not tied to a server
	seq   uint64

	QueueCur atomic.Int64
	QueueMax atomic.Int64
}

type waiter struct {
	seq    uint64
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
	}
	return b
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
	b.mu.Lock()
	s := b.Balancer.Pick(b, key, exclude)
	if s != nil && !s.full() {
		b.grant(s)
		b.mu.Unlock()
		return s, nil
	}
	w := &waiter{ch: make(chan struct{}, 1), target: s}
	if s != nil {
		// A hashing algorithm chose a full server: wait for it, unless its
		// queue is full.
		if s.MaxQueue > 0 && s.queue.Len() >= s.MaxQueue {
			b.mu.Unlock()
			return nil, ErrQueueFull
		}
	} else if !b.anyEligible() {
		b.mu.Unlock()
		return nil, ErrNoServer
	}
	b.seq++
	w.seq = b.seq
	if s != nil {
		w.elem = s.queue.PushBack(w)
		n := int64(s.queue.Len())
		s.QueueCur.Store(n)
		maxStore(&s.QueueMax, n)
	} else {
		w.elem = b.queue.PushBack(w)
		n := int64(b.queue.Len())
		b.QueueCur.Store(n)
		maxStore(&b.QueueMax, n)
	}
	b.mu.Unlock()

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
	return nil, err
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
}

func (b *Backend) grant(s *Server) {
	s.cur++
	s.Cur.Store(int64(s.cur))
	maxStore(&s.Max, int64(s.cur))
	s.Total.Add(1)
}

// Release gives back the slot held on s and hands it to the oldest waiter
// that can use it.
func (b *Backend) Release(s *Server) {
	b.mu.Lock()
	s.cur--
	s.Cur.Store(int64(s.cur))
	b.dispatch(s)
	b.mu.Unlock()
}

// dispatch gives free slots of s to waiters: the older of the head of s's
// own queue and the head of the backend queue.
func (b *Backend) dispatch(s *Server) {
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
		b.unqueue(w)
		w.srv = s
		b.grant(s)
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
	if s == nil || s.full() || s.queue.Len() > 0 {
		return nil
	}
	b.grant(s)
	return s
}

package queue

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

func servers(weights ...int) []*Server {
	var out []*Server
	for i, w := range weights {
		out = append(out, &Server{Name: string(rune('a' + i)), Weight: w})
	}
	return out
}

func mustBalancer(t *testing.T, algo string, args ...string) Balancer {
	t.Helper()
	b, err := NewBalancer(algo, args)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRoundRobinSmoothWeighted(t *testing.T) {
	b := NewBackend("be", servers(5, 1, 1), mustBalancer(t, "roundrobin"), 0)
	var seq string
	for i := 0; i < 7; i++ {
		s, err := b.Acquire(context.Background(), 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		seq += s.Name
		b.Release(s)
	}
	// nginx's smooth weighted round robin for 5/1/1.
	if seq != "aabacaa" {
		t.Fatalf("sequence %q, want aabacaa", seq)
	}
}

func TestRoundRobinSkipsDownAndFull(t *testing.T) {
	ss := servers(1, 1, 1)
	ss[1].SetState(StateDown)
	ss[2].MaxConn = 1
	b := NewBackend("be", ss, mustBalancer(t, "roundrobin"), 0)
	held, _ := b.Acquire(context.Background(), 0, nil)
	held2, _ := b.Acquire(context.Background(), 0, nil)
	if held.Name == held2.Name && held.Name == "c" {
		t.Fatalf("c has maxconn 1 but was granted twice")
	}
	for i := 0; i < 10; i++ {
		s, err := b.Acquire(context.Background(), 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		if s.Name != "a" {
			t.Fatalf("got %s: b is down and c is full", s.Name)
		}
		b.Release(s)
	}
}

func TestLeastConn(t *testing.T) {
	b := NewBackend("be", servers(1, 1, 1), mustBalancer(t, "leastconn"), 0)
	ctx := context.Background()
	a, _ := b.Acquire(ctx, 0, nil)
	bb, _ := b.Acquire(ctx, 0, nil)
	c, _ := b.Acquire(ctx, 0, nil)
	if a == bb || bb == c || a == c {
		t.Fatalf("three requests on three idle servers went to %s %s %s", a.Name, bb.Name, c.Name)
	}
	b.Release(bb)
	next, _ := b.Acquire(ctx, 0, nil)
	if next != bb {
		t.Fatalf("leastconn picked %s, want %s (the only one with 0)", next.Name, bb.Name)
	}
}

func TestFirst(t *testing.T) {
	ss := servers(1, 1)
	ss[0].MaxConn = 2
	b := NewBackend("be", ss, mustBalancer(t, "first"), 0)
	ctx := context.Background()
	x, _ := b.Acquire(ctx, 0, nil)
	y, _ := b.Acquire(ctx, 0, nil)
	z, _ := b.Acquire(ctx, 0, nil)
	if x.Name != "a" || y.Name != "a" || z.Name != "b" {
		t.Fatalf("first: %s %s %s, want a a b", x.Name, y.Name, z.Name)
	}
}

func TestHashedIsStableAndWeighted(t *testing.T) {
	b := NewBackend("be", servers(1, 3), mustBalancer(t, "source"), 0)
	counts := map[string]int{}
	for k := uint64(0); k < 4000; k++ {
		s1, _ := b.Acquire(context.Background(), k*2654435761, nil)
		b.Release(s1)
		s2, _ := b.Acquire(context.Background(), k*2654435761, nil)
		b.Release(s2)
		if s1 != s2 {
			t.Fatalf("key %d mapped to %s then %s", k, s1.Name, s2.Name)
		}
		counts[s1.Name]++
	}
	if counts["b"] < 2700 || counts["b"] > 3300 {
		t.Fatalf("weights 1:3 gave %v", counts)
	}
}

func TestRandomPowerOfTwo(t *testing.T) {
	b := NewBackend("be", servers(1, 1, 1, 1), mustBalancer(t, "random"), 0)
	var held []*Server
	for i := 0; i < 40; i++ {
		s, _ := b.Acquire(context.Background(), 0, nil)
		held = append(held, s)
	}
	for _, s := range b.Servers {
		// Two draws keep the load close to even: never more than double.
		if c := s.Cur.Load(); c < 5 || c > 20 {
			t.Fatalf("server %s holds %d of 40", s.Name, c)
		}
	}
	for _, s := range held {
		b.Release(s)
	}
}

func TestBackupOnlyWhenNoActive(t *testing.T) {
	ss := servers(1, 1)
	ss[1].Backup = true
	b := NewBackend("be", ss, mustBalancer(t, "roundrobin"), 0)
	s, _ := b.Acquire(context.Background(), 0, nil)
	b.Release(s)
	if s.Name != "a" {
		t.Fatalf("backup used while the active server is up")
	}
	ss[0].SetState(StateDown)
	s, _ = b.Acquire(context.Background(), 0, nil)
	b.Release(s)
	if s.Name != "b" {
		t.Fatalf("backup not used when the active server is down")
	}
	ss[1].SetState(StateMaint)
	if _, err := b.Acquire(context.Background(), 0, nil); !errors.Is(err, ErrNoServer) {
		t.Fatalf("no server: err %v", err)
	}
}

// FIFO: with one slot, waiters are served in arrival order and the slot
// count is never exceeded.
func TestQueueFIFOAndLimit(t *testing.T) {
	ss := servers(1)
	ss[0].MaxConn = 1
	b := NewBackend("be", ss, mustBalancer(t, "roundrobin"), time.Minute)
	ctx := context.Background()
	first, _ := b.Acquire(ctx, 0, nil)
	var mu sync.Mutex
	var order []int
	var wg sync.WaitGroup
	for i := 0; i < 5; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := b.Acquire(ctx, 0, nil)
			if err != nil {
				t.Error(err)
				return
			}
			if c := s.Cur.Load(); c != 1 {
				t.Errorf("cur = %d with maxconn 1", c)
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			b.Release(s)
		}()
		// Wait until this waiter is queued before starting the next.
		for b.QueueCur.Load() != int64(i+1) {
			time.Sleep(time.Millisecond)
		}
	}
	b.Release(first)
	wg.Wait()
	for i, v := range order {
		if v != i {
			t.Fatalf("served in order %v, want FIFO", order)
		}
	}
	if m := ss[0].Max.Load(); m != 1 {
		t.Fatalf("max concurrent %d, want 1", m)
	}
}

func TestQueueTimeout(t *testing.T) {
	ss := servers(1)
	ss[0].MaxConn = 1
	b := NewBackend("be", ss, mustBalancer(t, "roundrobin"), 50*time.Millisecond)
	held, _ := b.Acquire(context.Background(), 0, nil)
	start := time.Now()
	_, err := b.Acquire(context.Background(), 0, nil)
	if !errors.Is(err, ErrQueueTimeout) || time.Since(start) < 50*time.Millisecond {
		t.Fatalf("err %v after %v, want queue timeout after 50ms", err, time.Since(start))
	}
	if b.QueueCur.Load() != 0 {
		t.Fatalf("timed-out waiter left in the queue")
	}
	b.Release(held)
	if ss[0].Cur.Load() != 0 {
		t.Fatalf("slot leaked: cur=%d", ss[0].Cur.Load())
	}
}

// Checklist 22 with hashing: maxconn 1 maxqueue 1 and three requests for
// the same key: one served, one queued on its server, the third loses its
// server and goes to another one (HAProxy's maxqueue).
func TestMaxQueueOnHashedServer(t *testing.T) {
	ss := servers(1, 1)
	ss[0].MaxConn, ss[0].MaxQueue = 1, 1
	ss[1].MaxConn = 1
	b := NewBackend("be", ss, mustBalancer(t, "uri"), time.Minute)
	key := uint64(0) // maps to server a (weights 1:1, point 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	held, _ := b.Acquire(ctx, key, nil)
	if held != ss[0] {
		t.Fatalf("key went to %s, want a", held.Name)
	}
	queued := make(chan *Server, 1)
	go func() { s, _ := b.Acquire(ctx, key, nil); queued <- s }()
	for ss[0].QueueCur.Load() != 1 {
		time.Sleep(time.Millisecond)
	}
	third, err := b.Acquire(ctx, key, nil)
	if err != nil || third != ss[1] {
		t.Fatalf("third request: %v %v, want server b at once", third, err)
	}
	b.Release(held)
	if s := <-queued; s != ss[0] {
		t.Fatalf("queued request got %s, want a", s.Name)
	}
}

// A server going into maintenance hands its queue to the others with
// redispatch; without, the requests wait for it.
func TestServerDownRedispatch(t *testing.T) {
	for _, redispatch := range []bool{true, false} {
		ss := servers(1, 1)
		ss[0].MaxConn, ss[1].MaxConn = 1, 1
		b := NewBackend("be", ss, mustBalancer(t, "uri"), 300*time.Millisecond)
		b.Redispatch = redispatch
		ctx := context.Background()
		onA, _ := b.Acquire(ctx, 0, nil)
		onB, _ := b.Acquire(ctx, 1, nil)
		got := make(chan error, 1)
		go func() {
			s, err := b.Acquire(ctx, 0, nil) // waits for a
			if err == nil {
				b.Release(s)
			}
			got <- err
		}()
		for ss[0].QueueCur.Load() != 1 {
			time.Sleep(time.Millisecond)
		}
		b.SetServerState(ss[0], StateMaint)
		b.Release(onB) // a slot frees on b
		err := <-got
		if redispatch && err != nil {
			t.Fatalf("redispatch: queued request failed: %v", err)
		}
		if !redispatch && !errors.Is(err, ErrQueueTimeout) {
			t.Fatalf("no redispatch: err %v, want queue timeout", err)
		}
		b.Release(onA)
	}
}

// minconn/fullconn: the limit grows with the backend's load, as
// max(minconn, maxconn*load/fullconn).
func TestDynamicLimit(t *testing.T) {
	ss := servers(1)
	ss[0].MinConn, ss[0].MaxConn = 2, 10
	b := NewBackend("be", ss, mustBalancer(t, "roundrobin"), time.Minute)
	b.SetFullConn(20)
	if l := ss[0].Limit.Load(); l != 2 {
		t.Fatalf("idle limit %d, want minconn 2", l)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	granted := make(chan *Server, 10)
	for i := 0; i < 10; i++ {
		go func() {
			if s, err := b.Acquire(ctx, 0, nil); err == nil {
				granted <- s
			}
		}()
	}
	for b.Sessions.Load() != 10 || ss[0].Cur.Load()+b.QueueCur.Load() != 10 {
		time.Sleep(time.Millisecond)
	}
	// Load 10 of fullconn 20: limit 10*10/20 = 5.
	if l, c, q := ss[0].Limit.Load(), ss[0].Cur.Load(), b.QueueCur.Load(); l != 5 || c != 5 || q != 5 {
		t.Fatalf("at load 10: limit %d, serving %d, queued %d; want 5, 5, 5", l, c, q)
	}
	for i := 0; i < 10; i++ {
		b.Release(<-granted)
	}
	if b.Sessions.Load() != 0 || ss[0].Cur.Load() != 0 {
		t.Fatalf("after release: sessions %d cur %d", b.Sessions.Load(), ss[0].Cur.Load())
	}
}

// Requests are served in order of arrival, even when one reaches the queue
// after a later one (handed between threads).
func TestQueueOrderIsArrival(t *testing.T) {
	ss := servers(1)
	ss[0].MaxConn = 1
	b := NewBackend("be", ss, mustBalancer(t, "roundrobin"), time.Minute)
	ctx := context.Background()
	held, _ := b.Acquire(ctx, 0, nil)
	t0 := time.Now()
	order := make(chan string, 2)
	go func() { s, _ := b.AcquireAt(ctx, 0, nil, t0.Add(2*time.Millisecond)); order <- "late"; b.Release(s) }()
	waitQueued(t, b, 1)
	go func() { s, _ := b.AcquireAt(ctx, 0, nil, t0.Add(1*time.Millisecond)); order <- "early"; b.Release(s) }()
	waitQueued(t, b, 2)
	b.Release(held)
	if first := <-order; first != "early" {
		t.Fatalf("%s served first; the request that arrived first must be", first)
	}
	<-order
}

func waitQueued(t *testing.T, b *Backend, n int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for b.QueueCur.Load() != n {
		if time.Now().After(deadline) {
			t.Fatalf("queue length %d, want %d", b.QueueCur.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// After a reload the new server starts with the old one's slots, and a
// release of an old slot frees a new one (dispatching the new queue).
func TestHandOver(t *testing.T) {
	old := &Server{Name: "s", MaxConn: 2, Weight: 1}
	ob := NewBackend("b", []*Server{old}, roundRobin{}, time.Second)
	s1, s2 := ob.TryAcquire(0), ob.TryAcquire(0)
	if s1 == nil || s2 == nil {
		t.Fatal("acquire")
	}
	ns := &Server{Name: "s", MaxConn: 2, Weight: 1}
	nb := NewBackend("b", []*Server{ns}, roundRobin{}, time.Second)
	ob.HandOver(old, nb, ns)
	if got := nb.TryAcquire(0); got != nil {
		t.Fatalf("new server granted a slot beyond maxconn while the old one holds 2")
	}
	got := make(chan *Server, 1)
	go func() {
		s, _ := nb.Acquire(context.Background(), 0, nil)
		got <- s
	}()
	waitQueued(t, nb, 1)
	ob.Release(s1)
	select {
	case s := <-got:
		if s != ns {
			t.Fatal("wrong server")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("releasing an old slot did not dispatch the new queue")
	}
	ob.Release(s2)
	nb.Release(ns)
	if ns.Cur.Load() != 0 || old.Cur.Load() != 0 {
		t.Fatalf("cur old %d new %d, want 0", old.Cur.Load(), ns.Cur.Load())
	}
}

// fakeShared is a slot count shared with "the kernel".
type fakeShared struct {
	mu           sync.Mutex
	others, ours int
	queued       bool
}

func (f *fakeShared) TryTake(limit int) (any, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if limit > 0 && f.others+f.ours >= limit {
		return nil, false
	}
	f.ours++
	return struct{}{}, true
}
func (f *fakeShared) Give(any)         { f.mu.Lock(); f.ours--; f.mu.Unlock() }
func (f *fakeShared) Others() int      { f.mu.Lock(); defer f.mu.Unlock(); return f.others }
func (f *fakeShared) SetQueued(q bool) { f.mu.Lock(); f.queued = q; f.mu.Unlock() }

// With a shared slot count, places the other party holds count against
// maxconn; a request waits while they fill the server, the other party is
// told, and a Kick after it gives one back dispatches the request.
func TestSharedSlots(t *testing.T) {
	sh := &fakeShared{others: 5}
	s := &Server{Name: "s", MaxConn: 5, Weight: 1, Shared: sh}
	b := NewBackend("b", []*Server{s}, roundRobin{}, 5*time.Second)
	if b.TryAcquire(0) != nil {
		t.Fatal("granted a slot while the other party holds all 5")
	}
	got := make(chan *Server, 1)
	go func() {
		s, _ := b.Acquire(context.Background(), 0, nil)
		got <- s
	}()
	waitQueued(t, b, 1)
	sh.mu.Lock()
	queued := sh.queued
	sh.others--
	sh.mu.Unlock()
	if !queued {
		t.Error("the other party was not told requests wait")
	}
	b.Kick(s)
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("Kick did not dispatch the waiting request")
	}
	if sh.ours != 1 || sh.queued {
		t.Errorf("ours %d queued %v, want 1 and false", sh.ours, sh.queued)
	}
	b.Release(s)
	if sh.ours != 0 {
		t.Errorf("release did not give the place back: %d", sh.ours)
	}
}

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

func TestMaxQueueOnHashedServer(t *testing.T) {
	ss := servers(1)
	ss[0].MaxConn, ss[0].MaxQueue = 1, 1
	b := NewBackend("be", ss, mustBalancer(t, "uri"), time.Minute)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	held, _ := b.Acquire(ctx, 7, nil)
	go b.Acquire(ctx, 7, nil) // fills the one queue place
	for ss[0].QueueCur.Load() != 1 {
		time.Sleep(time.Millisecond)
	}
	if _, err := b.Acquire(ctx, 7, nil); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("third request: %v, want queue full", err)
	}
	b.Release(held)
}

//go:build linux

package kernel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"
)

var spliceRandBlock = func() []byte {
	r := rand.New(rand.NewPCG(42, 43))
	b := make([]byte, 1<<20)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}()

// spliceStreamAt is byte i.. of stream seed: a window of spliceRandBlock.
func spliceStreamAt(seed, off, n int) []byte {
	out := make([]byte, n)
	for k := 0; k < n; {
		p := (seed*7919 + off + k) % len(spliceRandBlock)
		k += copy(out[k:], spliceRandBlock[p:])
	}
	return out
}

// spliceSendMsgs writes total bytes of stream seed in random-sized messages.
func spliceSendMsgs(c *net.TCPConn, r *rand.Rand, seed, total int) error {
	for off := 0; off < total; {
		n := min(total-off, 1+r.IntN(32<<10))
		if _, err := c.Write(spliceStreamAt(seed, off, n)); err != nil {
			return err
		}
		off += n
		if r.IntN(8) == 0 {
			time.Sleep(time.Duration(r.IntN(2000)) * time.Microsecond)
		}
	}
	return nil
}

// spliceRecvCheck reads until EOF or error and checks that what arrived is a
// prefix of stream seed; it returns how much arrived and the final error.
func spliceRecvCheck(c *net.TCPConn, seed int) (int, error) {
	buf := make([]byte, 64<<10)
	got := 0
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if !bytes.Equal(buf[:n], spliceStreamAt(seed, got, n)) {
				return got, fmt.Errorf("bytes %d..%d differ from what was sent", got, got+n)
			}
			got += n
		}
		if err == io.EOF {
			return got, nil
		}
		if err != nil {
			return got, err
		}
	}
}

// TestSpliceManyPairs: 1000 spliced pairs at once, each moving random-sized
// messages both ways and ending in a random order — client first, server
// first, both at once, or an RST from either side. Every byte arrives (or
// the peer sees the reset), no pair hangs, nothing stays in the maps.
func TestSpliceManyPairs(t *testing.T) {
	s := spliceTestSplicer(t, SplicerConfig{})
	ln := spliceListen(t)
	pairs := 1000
	if testing.Short() {
		pairs = 200
	}
	fds := spliceCountFDs(t)
	var wg sync.WaitGroup
	errs := make(chan error, pairs)
	deadline := time.Now().Add(45 * time.Second)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	ends := map[SpliceEnd]int{}
	var endsMu sync.Mutex
	for k := 0; k < pairs; k++ {
		tn := newSpliceTunnel(t, ln)
		p, err := s.Splice(tn.a, tn.b)
		if err != nil {
			t.Fatalf("pair %d: Splice: %v", k, err)
		}
		wg.Add(1)
		go func(k int, tn spliceTunnel, p *SplicedPair) {
			defer wg.Done()
			defer tn.closeEnds()
			tn.client.SetDeadline(deadline)
			tn.server.SetDeadline(deadline)
			r := rand.New(rand.NewPCG(uint64(k), 7))
			up, down := r.IntN(256<<10), r.IntN(256<<10)
			order := r.IntN(5) // 0 client first, 1 server first, 2 both, 3 client RST, 4 server RST
			waited := make(chan SpliceResult, 1)
			go func() {
				res, err := p.Wait(ctx, 30*time.Second, 0, 0)
				if err != nil {
					errs <- fmt.Errorf("pair %d: Wait: %v", k, err)
				}
				waited <- res
			}()
			type rx struct {
				n   int
				err error
			}
			atServer, atClient := make(chan rx, 1), make(chan rx, 1)
			go func() { n, err := spliceRecvCheck(tn.server, 2*k); atServer <- rx{n, err} }()
			go func() { n, err := spliceRecvCheck(tn.client, 2*k+1); atClient <- rx{n, err} }()
			send := func(c *net.TCPConn, seed, n int, rst bool) {
				err := spliceSendMsgs(c, rand.New(rand.NewPCG(uint64(seed), 9)), seed, n)
				if err != nil && !rst {
					errs <- fmt.Errorf("pair %d: send: %v", k, err)
				}
			}
			switch order {
			case 0, 1, 2:
				var sw sync.WaitGroup
				sw.Add(2)
				go func() { defer sw.Done(); send(tn.client, 2*k, up, false) }()
				go func() { defer sw.Done(); send(tn.server, 2*k+1, down, false) }()
				sw.Wait()
				switch order {
				case 0:
					tn.client.CloseWrite()
					if x := <-atServer; x.err != nil || x.n != up {
						errs <- fmt.Errorf("pair %d (client first): server got %d of %d: %v", k, x.n, up, x.err)
					}
					tn.server.CloseWrite()
					if x := <-atClient; x.err != nil || x.n != down {
						errs <- fmt.Errorf("pair %d (client first): client got %d of %d: %v", k, x.n, down, x.err)
					}
				case 1:
					tn.server.CloseWrite()
					if x := <-atClient; x.err != nil || x.n != down {
						errs <- fmt.Errorf("pair %d (server first): client got %d of %d: %v", k, x.n, down, x.err)
					}
					tn.client.CloseWrite()
					if x := <-atServer; x.err != nil || x.n != up {
						errs <- fmt.Errorf("pair %d (server first): server got %d of %d: %v", k, x.n, up, x.err)
					}
				case 2:
					tn.client.CloseWrite()
					tn.server.CloseWrite()
					xs, xc := <-atServer, <-atClient
					if xs.err != nil || xs.n != up || xc.err != nil || xc.n != down {
						errs <- fmt.Errorf("pair %d (both): server %d/%d %v, client %d/%d %v", k, xs.n, up, xs.err, xc.n, down, xc.err)
					}
				}
			case 3, 4:
				rstSide, other, otherRx := tn.client, tn.server, atServer
				if order == 4 {
					rstSide, other, otherRx = tn.server, tn.client, atClient
				}
				go send(rstSide, 2*k+order-3, up, true)
				time.Sleep(time.Duration(r.IntN(3000)) * time.Microsecond)
				rstSide.SetLinger(0)
				rstSide.Close()
				// The other end sees a correct prefix, then the reset
				// (or EOF if the reset won no race: the bytes still checked).
				x := <-otherRx
				if x.err != nil && !errors.Is(x.err, syscall.ECONNRESET) {
					errs <- fmt.Errorf("pair %d (RST): other end: %d bytes, %v", k, x.n, x.err)
				}
				other.Close()
			}
			res := <-waited
			endsMu.Lock()
			ends[res.End]++
			endsMu.Unlock()
			if order <= 2 && res.End != SpliceEndClosed {
				errs <- fmt.Errorf("pair %d: ended %v, want closed", k, res.End)
			}
		}(k, tn, p)
	}
	wg.Wait()
	close(errs)
	n := 0
	for err := range errs {
		if n++; n <= 10 {
			t.Error(err)
		}
	}
	if n > 10 {
		t.Errorf("... %d errors in all", n)
	}
	t.Logf("%d pairs; ends: %v", pairs, ends)
	// Closed ends may take a moment to leave the fd table (the test's own
	// conns are closed by now); allow nothing to leak.
	for i := 0; i < 50 && spliceCountFDs(t) > fds; i++ {
		time.Sleep(20 * time.Millisecond)
	}
	if now := spliceCountFDs(t); now > fds {
		t.Errorf("fds: %d before, %d after", fds, now)
	}
}

// TestSpliceHandOver hammers the hand-over window: the client writes a
// numbered stream without pause; the proxy reads some of it into userspace,
// stops at a random moment, writes what it read to the server, and splices.
// Bytes the client sent between the proxy's last read and the insertion are
// in a's receive queue (the kernel only runs the program on skbs arriving
// after insertion, unless kicked). The server must see the stream whole and
// in order; the same the other way.
func TestSpliceHandOver(t *testing.T) {
	s := spliceTestSplicer(t, SplicerConfig{})
	ln := spliceListen(t)
	rounds := 200
	if testing.Short() {
		rounds = 50
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 20)
	errs := make(chan error, 2*rounds)
	for k := 0; k < rounds; k++ {
		tn := newSpliceTunnel(t, ln)
		wg.Add(1)
		sem <- struct{}{}
		go func(k int, tn spliceTunnel) {
			defer wg.Done()
			defer func() { <-sem }()
			defer tn.closeEnds()
			deadline := time.Now().Add(20 * time.Second)
			for _, c := range []*net.TCPConn{tn.client, tn.a, tn.b, tn.server} {
				c.SetDeadline(deadline)
			}
			const total = 512 << 10
			r := rand.New(rand.NewPCG(uint64(k), 3))
			// Both ends stream continuously, in small writes.
			go spliceSendMsgs(tn.client, rand.New(rand.NewPCG(uint64(k), 4)), 2*k, total)
			go spliceSendMsgs(tn.server, rand.New(rand.NewPCG(uint64(k), 5)), 2*k+1, total)
			// The proxy copies in userspace for a random while.
			var mu sync.Mutex
			var bufAB, bufBA []byte
			stop := time.Now().Add(time.Duration(r.IntN(20000)) * time.Microsecond)
			var cw sync.WaitGroup
			cw.Add(2)
			rd := func(src *net.TCPConn, dst *[]byte, size int) {
				defer cw.Done()
				src.SetReadDeadline(stop)
				b := make([]byte, size)
				for {
					n, err := src.Read(b)
					mu.Lock()
					*dst = append(*dst, b[:n]...)
					mu.Unlock()
					if err != nil {
						return
					}
				}
			}
			go rd(tn.a, &bufAB, 1+r.IntN(8<<10))
			go rd(tn.b, &bufBA, 1+r.IntN(8<<10))
			cw.Wait()
			tn.a.SetReadDeadline(time.Time{})
			tn.b.SetReadDeadline(time.Time{})
			// Hand-over: write what was read, then splice.
			if _, err := tn.b.Write(bufAB); err != nil {
				errs <- err
				return
			}
			if _, err := tn.a.Write(bufBA); err != nil {
				errs <- err
				return
			}
			p, err := s.Splice(tn.a, tn.b)
			if err != nil {
				errs <- fmt.Errorf("round %d: Splice: %v", k, err)
				return
			}
			waited := make(chan struct{})
			go func() { p.Wait(context.Background(), 20*time.Second, 0, 0); close(waited) }()
			check := func(c *net.TCPConn, seed int, what string) {
				got := make([]byte, total)
				if _, err := io.ReadFull(c, got); err != nil {
					errs <- fmt.Errorf("round %d: %s: %v", k, what, err)
					return
				}
				if want := spliceStreamAt(seed, 0, total); !bytes.Equal(got, want) {
					i := 0
					for got[i] == want[i] {
						i++
					}
					at := bytes.Index(want, got[i:i+64])
					errs <- fmt.Errorf("round %d: %s: stream differs at byte %d (proxy had read %d/%d bytes); what came there is stream byte %d", k, what, i, len(bufAB), len(bufBA), at)
				}
			}
			var rw sync.WaitGroup
			rw.Add(2)
			go func() { defer rw.Done(); check(tn.server, 2*k, "client->server") }()
			go func() { defer rw.Done(); check(tn.client, 2*k+1, "server->client") }()
			rw.Wait()
			tn.client.CloseWrite()
			tn.server.CloseWrite()
			<-waited
		}(k, tn)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestSpliceIdle: idle 1s ends a pair nobody uses within 1–1.5 s; a message
// every 500 ms in one direction only keeps a pair alive for 5 s (each
// direction), and it ends about 1 s after the last message.
func TestSpliceIdle(t *testing.T) {
	s := spliceTestSplicer(t, SplicerConfig{})
	ln := spliceListen(t)
	type run struct {
		name string
		dir  int // -1 idle, 0 client->server, 1 server->client
	}
	var wg sync.WaitGroup
	for _, rn := range []run{{"idle", -1}, {"client-to-server", 0}, {"server-to-client", 1}} {
		tn := newSpliceTunnel(t, ln)
		p, err := s.Splice(tn.a, tn.b)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer tn.closeEnds()
			start := time.Now()
			done := make(chan SpliceResult, 1)
			go func() {
				r, _ := p.Wait(context.Background(), time.Second, 0, 0)
				done <- r
			}()
			var last time.Time
			if rn.dir >= 0 {
				src, dst := tn.client, tn.server
				if rn.dir == 1 {
					src, dst = tn.server, tn.client
				}
				go io.Copy(io.Discard, dst)
				for time.Since(start) < 5*time.Second {
					select {
					case r := <-done:
						t.Errorf("%s: ended after %v while traffic flowed: %+v", rn.name, time.Since(start), r)
						return
					case <-time.After(500 * time.Millisecond):
					}
					src.Write([]byte("ping"))
					last = time.Now()
				}
			} else {
				last = start
			}
			select {
			case r := <-done:
				after := time.Since(last)
				if r.End != SpliceEndIdle || after < time.Second || after > 1500*time.Millisecond {
					t.Errorf("%s: ended %v after the last byte, %v; want idle-timeout within 1-1.5 s", rn.name, after, r.End)
				}
				t.Logf("%s: ended %v after the last byte (%v)", rn.name, after.Round(time.Millisecond), r.End)
			case <-time.After(10 * time.Second):
				t.Errorf("%s: did not end", rn.name)
			}
		}()
	}
	wg.Wait()
}

// TestSpliceHalfClose: the client sends and shuts its write side; the server
// sees EOF after every byte and still sends afterwards; the client receives
// all of it. Then serverFin bounds a half-closed pair whose server goes quiet.
func TestSpliceHalfClose(t *testing.T) {
	s := spliceTestSplicer(t, SplicerConfig{})
	ln := spliceListen(t)
	tn := newSpliceTunnel(t, ln)
	defer tn.closeEnds()
	p, err := s.Splice(tn.a, tn.b)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan SpliceResult, 1)
	go func() { r, _ := p.Wait(context.Background(), 10*time.Second, 0, 0); done <- r }()
	spliceDeadline(t, tn.client, 10*time.Second)
	spliceDeadline(t, tn.server, 10*time.Second)
	req := spliceStreamAt(1, 0, 300<<10)
	tn.client.Write(req)
	tn.client.CloseWrite()
	got, err := io.ReadAll(tn.server)
	if err != nil || !bytes.Equal(got, req) {
		t.Fatalf("server: %d of %d bytes before EOF, %v", len(got), len(req), err)
	}
	time.Sleep(100 * time.Millisecond)
	resp := spliceStreamAt(2, 0, 2<<20)
	go func() { tn.server.Write(resp); tn.server.CloseWrite() }()
	got, err = io.ReadAll(tn.client)
	if err != nil || !bytes.Equal(got, resp) {
		t.Fatalf("client after its FIN: %d of %d bytes, %v", len(got), len(resp), err)
	}
	if r := <-done; r.End != SpliceEndClosed || !r.ClientFin || !r.ServerFin || r.AtoB != uint64(len(req)) || r.BtoA != uint64(len(resp)) {
		t.Errorf("Wait = %+v", r)
	}

	// serverFin: the client half-closes, the server says nothing more.
	tn2 := newSpliceTunnel(t, ln)
	defer tn2.closeEnds()
	p2, err := s.Splice(tn2.a, tn2.b)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	done2 := make(chan SpliceResult, 1)
	go func() { r, _ := p2.Wait(context.Background(), 10*time.Second, 0, 300*time.Millisecond); done2 <- r }()
	tn2.client.CloseWrite()
	select {
	case r := <-done2:
		if r.End != SpliceEndFinTimeout || !r.ClientFin || time.Since(start) > 2*time.Second {
			t.Errorf("half-closed quiet pair: %+v after %v; want fin-timeout after ~300ms", r, time.Since(start))
		}
	case <-time.After(5 * time.Second):
		t.Error("half-closed quiet pair did not end")
	}
}

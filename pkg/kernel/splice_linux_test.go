//go:build linux

package kernel

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestSpliceBasic: bytes go both ways through the kernel, counters count
// them, a FIN from each side ends the pair, nothing is left behind.
func TestSpliceBasic(t *testing.T) {
	s := spliceTestSplicer(t, SplicerConfig{})
	ln := spliceListen(t)
	fds := spliceCountFDs(t)
	tn := newSpliceTunnel(t, ln)
	defer tn.closeEnds()
	p, err := s.Splice(tn.a, tn.b)
	if err != nil {
		t.Fatalf("Splice: %v", err)
	}
	type res struct {
		r   SpliceResult
		err error
	}
	done := make(chan res, 1)
	go func() {
		r, err := p.Wait(context.Background(), 10*time.Second, 0, 0)
		done <- res{r, err}
	}()
	spliceDeadline(t, tn.client, 10*time.Second)
	spliceDeadline(t, tn.server, 10*time.Second)
	msg := []byte("hello from the client")
	if _, err := tn.client.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(tn.server, got); err != nil {
		t.Fatalf("server read: %v", err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("server got %q", got)
	}
	reply := []byte("and hello from the server, a bit longer")
	if _, err := tn.server.Write(reply); err != nil {
		t.Fatal(err)
	}
	got = make([]byte, len(reply))
	if _, err := io.ReadFull(tn.client, got); err != nil {
		t.Fatalf("client read: %v", err)
	}
	if !bytes.Equal(got, reply) {
		t.Fatalf("client got %q", got)
	}
	st := p.Stats()
	if st.AtoB != uint64(len(msg)) || st.BtoA != uint64(len(reply)) {
		t.Errorf("stats %+v, want AtoB=%d BtoA=%d", st, len(msg), len(reply))
	}
	if time.Since(st.LastActivity) > 5*time.Second || time.Since(st.LastActivity) < 0 {
		t.Errorf("last activity %v is not recent", st.LastActivity)
	}
	tn.client.CloseWrite()
	if n, err := tn.server.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("server after client FIN: n=%d err=%v, want EOF", n, err)
	}
	tn.server.CloseWrite()
	if n, err := tn.client.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("client after server FIN: n=%d err=%v, want EOF", n, err)
	}
	r := <-done
	if r.err != nil || r.r.End != SpliceEndClosed || !r.r.ClientFin || !r.r.ServerFin {
		t.Fatalf("Wait = %+v, %v", r.r, r.err)
	}
	tn.closeEnds()
	if n := spliceCountFDs(t); n != fds {
		t.Errorf("fds: %d before, %d after", fds, n)
	}
}

// TestSpliceQueuedBeforeInsert: bytes that sit in a's receive queue when
// Splice is called (the proxy never read them) reach the server, without any
// new byte arriving to wake the kernel.
func TestSpliceQueuedBeforeInsert(t *testing.T) {
	s := spliceTestSplicer(t, SplicerConfig{})
	ln := spliceListen(t)
	tn := newSpliceTunnel(t, ln)
	defer tn.closeEnds()
	msg := bytes.Repeat([]byte("q"), 1000)
	tn.client.Write(msg)
	time.Sleep(20 * time.Millisecond) // the bytes are in a's receive queue
	p, err := s.Splice(tn.a, tn.b)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Wait(ctx, 0, 0, 0); close(done) }()
	defer func() { cancel(); <-done }()
	tn.server.SetReadDeadline(time.Now().Add(2 * time.Second))
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(tn.server, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("server got %d of %d queued bytes: %v", len(got), len(msg), err)
	}
}

// TestSpliceIntegrity: 1 GiB each way at the same time through one spliced
// pair; the SHA-256 of what arrives equals that of what was sent.
func TestSpliceIntegrity(t *testing.T) {
	spliceHeavy(t)
	mq, _ := strconv.Atoi(os.Getenv("SPLICE_MAXQ"))
	s := spliceTestSplicer(t, SplicerConfig{MaxQueue: mq})
	const n = 1 << 30
	tn, p, wres := spliceStart(t, s, 60*time.Second, 30*time.Second)
	up := spliceTransfer(tn.client, tn.server, 1, n)
	down := spliceTransfer(tn.server, tn.client, 2, n)
	u, d := <-up, <-down
	if err := u.check(n); err != nil {
		t.Errorf("client -> server: %v", err)
	}
	if err := d.check(n); err != nil {
		t.Errorf("server -> client: %v", err)
	}
	var qa, qb spliceSpliceSock
	s.objs.SpliceState.Lookup(p.cookie[0], &qa)
	s.objs.SpliceState.Lookup(p.cookie[1], &qb)
	t.Logf("queued max: a->b %d, b->a %d", qa.QueuedMax, qb.QueuedMax)
	w := <-wres
	if w.err != nil {
		t.Errorf("Wait: %v", w.err)
	}
	r := w.SpliceResult
	t.Logf("1 GiB each way: up %.0f MiB/s, down %.0f MiB/s; %+v", float64(n)/(1<<20)/u.elapsed.Seconds(), float64(n)/(1<<20)/d.elapsed.Seconds(), r)
	if r.End != SpliceEndClosed || r.AtoB != n || r.BtoA != n {
		t.Errorf("Wait = %+v, want closed with %d bytes each way", r, n)
	}
}

// TestSpliceSlowReader: a reader that pauses, then reads slowly, while the
// writer pushes as fast as it can. Every buffer on the way fills (the server's
// receive queue, b's send queue, b's psock queue, a's receive window); nothing
// may be lost and the transfer must not hang. Twice: with the flow control in
// the kernel (a is stopped, then restarted) and with the userspace overflow.
func TestSpliceSlowReader(t *testing.T) {
	t.Run("kernel", func(t *testing.T) { testSpliceSlowReader(t, "") })
	t.Run("userspace", func(t *testing.T) { testSpliceSlowReader(t, spliceNoCgroup) })
}

func testSpliceSlowReader(t *testing.T, cgroup string) {
	sb, _ := strconv.Atoi(os.Getenv("SPLICE_SOCKBUF"))
	mq, _ := strconv.Atoi(os.Getenv("SPLICE_MAXQ"))
	if mq == 0 && cgroup == spliceNoCgroup {
		mq = 4 << 20 // well below what the pause piles up: the overflow path runs
	}
	s := spliceTestSplicer(t, SplicerConfig{SndBuf: sb, MaxQueue: mq, Cgroup: cgroup})
	tn, p, wres := spliceStart(t, s, 60*time.Second, 30*time.Second)
	defer func() {
		tn.closeEnds()
		if w := <-wres; w.err != nil || w.End != SpliceEndClosed {
			t.Logf("Wait: %v, %v", w.End, w.err)
		}
	}()
	n := int64(48 << 20)
	if mq == 0 {
		n = 160 << 20 // past the default limit (32 MiB) and the buffers on the way
	}
	if v, err := strconv.ParseInt(os.Getenv("SPLICE_SLOW_N"), 10, 64); err == nil {
		n = v
	}
	sent := make(chan error, 1)
	var sum [32]byte
	go func() {
		var err error
		sum, err = spliceSendHash(tn.client, 7, n)
		sent <- err
	}()
	for i := 0; i < 6; i++ {
		time.Sleep(250 * time.Millisecond) // reader paused: everything fills up
		st := p.Stats()
		t.Logf("after %d ms pause: %d bytes redirected; %s", 250*(i+1), st.AtoB, spliceMemInfo())
	}
	start := time.Now()
	h := sha256.New()
	buf := make([]byte, 256<<10)
	var got int64
	var stalls []time.Duration
	last := time.Now()
	for got < n {
		m, err := tn.server.Read(buf)
		if m > 0 {
			if gap := time.Since(last); gap > 100*time.Millisecond {
				stalls = append(stalls, gap)
			}
			last = time.Now()
		}
		h.Write(buf[:m])
		got += int64(m)
		if err != nil {
			t.Fatalf("server read after %d bytes: %v", got, err)
		}
		if got < 8<<20 {
			time.Sleep(2 * time.Millisecond) // slow, then full speed
		}
	}
	if err := <-sent; err != nil {
		t.Fatalf("send: %v", err)
	}
	if [32]byte(h.Sum(nil)) != sum {
		t.Fatal("SHA-256 differs")
	}
	st := p.Stats()
	t.Logf("read %d bytes in %v after the pause; gaps > 100ms between reads: %v; %d stops; %d bytes in %d overflows", got, time.Since(start), stalls, st.Stops, st.Overflow, st.Overflows)
	tot, err := s.Totals()
	if err != nil {
		t.Fatal(err)
	}
	if tot.Stops != st.Stops || tot.Overflows != st.Overflows || tot.OverflowBytes != st.Overflow {
		t.Errorf("Splicer totals %+v, want those of its only pair: %d stops, %d overflows of %d bytes", tot, st.Stops, st.Overflows, st.Overflow)
	}
	switch {
	case s.cgLinks != nil && (st.Stops == 0 || st.Overflows != 0):
		t.Errorf("with the flow control in the kernel: %d stops, %d overflows; want stops and no overflow", st.Stops, st.Overflows)
	case s.cgLinks == nil && st.Overflows == 0:
		t.Errorf("the kernel's queue never reached MaxQueue (%d bytes): the overflow path went untested", mq)
	}
}

// TestSplicePartlyReadSkb: the skb at the head of a's receive queue was partly
// read in userspace before Splice (the drain of hand-over step 1 is skipped,
// so it is still there). tcp_read_skb hands the program that skb whole, as it
// hands it a retransmitted segment that overlaps bytes already received; the
// program must cut the bytes already read off and forward only the rest.
func TestSplicePartlyReadSkb(t *testing.T) {
	s := spliceTestSplicer(t, SplicerConfig{})
	ln := spliceListen(t)
	tn := newSpliceTunnel(t, ln)
	defer tn.closeEnds()
	spliceNoDrain = true
	defer func() { spliceNoDrain = false }()
	msg := make([]byte, 1000)
	for i := range msg {
		msg[i] = byte(i)
	}
	if _, err := tn.client.Write(msg); err != nil {
		t.Fatal(err)
	}
	spliceWaitQueued(t, tn.a, len(msg))
	// The proxy reads the first 100 bytes and forwards them itself.
	const read = 100
	head := make([]byte, read)
	spliceDeadline(t, tn.a, 5*time.Second)
	if _, err := io.ReadFull(tn.a, head); err != nil {
		t.Fatal(err)
	}
	tn.a.SetDeadline(time.Time{})
	if _, err := tn.b.Write(head); err != nil {
		t.Fatal(err)
	}
	p, err := s.Splice(tn.a, tn.b)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan SpliceResult, 1)
	go func() { r, _ := p.Wait(ctx, 10*time.Second, 0, 0); done <- r }()
	defer func() { cancel(); <-done }() // ends the pair if the test fails first
	tn.client.CloseWrite()
	spliceDeadline(t, tn.server, 5*time.Second)
	got, err := io.ReadAll(tn.server)
	if err != nil {
		t.Fatalf("server read after %d bytes: %v", len(got), err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("server got %d bytes, want the %d sent (first difference at %d)", len(got), len(msg), spliceFirstDiff(got, msg))
	}
	tn.server.CloseWrite()
	r := <-done
	done <- r
	if r.End != SpliceEndClosed || r.AtoB != uint64(len(msg)-read) || r.Repeated != read {
		t.Errorf("Wait = %+v, want closed, AtoB %d, Repeated %d", r, len(msg)-read, read)
	}
}

// spliceWaitQueued waits until c's receive queue holds n bytes.
func spliceWaitQueued(t *testing.T, c *net.TCPConn, n int) {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var q int
		rc.Control(func(fd uintptr) { q, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) })
		if q >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes queued after 5s, want %d", q, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func spliceFirstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestSpliceStoppedSenderCloses: the client sends and closes while the server
// does not read, so the kernel's queue towards the server reaches MaxQueue
// and the client side is stopped (flow control in the kernel); often the
// client's FIN then arrives while it is stopped, and since a socket past
// ESTABLISHED cannot go back into the sockhash, the rest is copied in
// userspace before the FIN is passed on. Either way everything arrives, in
// order, then the EOF, and the byte counts are exact.
func TestSpliceStoppedSenderCloses(t *testing.T) {
	s := spliceTestSplicer(t, SplicerConfig{SndBuf: 1 << 20, MaxQueue: 1 << 20})
	if s.cgLinks == nil {
		t.Skip("no cgroup for the flow control in the kernel")
	}
	tails := 0
	for round := 0; round < 5; round++ {
		tails += spliceStoppedSenderCloses(t, s, uint64(round))
	}
	// Whether the FIN comes while the side is stopped depends on timing
	// (the kernel may have restarted it as the server's buffers took more);
	// in five rounds it nearly always does at least once.
	t.Logf("%d of 5 rounds ended with the end-of-stream copy", tails)
}

func spliceStoppedSenderCloses(t *testing.T, s *Splicer, seed uint64) (tails int) {
	tn, p, res := spliceStart(t, s, 30*time.Second, 0)
	const n = 6 << 20 // past the queue and the server's buffers; the rest fits in the client side's
	sent := make(chan error, 1)
	var sum [32]byte
	go func() {
		var err error
		sum, err = spliceSendHash(tn.client, seed, n)
		sent <- err
	}()
	// The server does not read until the client is done (or 5 s).
	select {
	case err := <-sent:
		sent <- err
	case <-time.After(5 * time.Second):
		t.Log("the client could not send everything while the server did not read (buffers too small here)")
	}
	h := sha256.New()
	got, err := io.Copy(h, tn.server)
	if err != nil || got != n {
		t.Fatalf("server read %d of %d bytes: %v", got, n, err)
	}
	if err := <-sent; err != nil {
		t.Fatalf("send: %v", err)
	}
	if [32]byte(h.Sum(nil)) != sum {
		t.Fatal("SHA-256 differs")
	}
	tn.server.CloseWrite()
	w := <-res
	if w.err != nil {
		t.Errorf("Wait: %v", w.err)
	}
	r := w.SpliceResult
	tail := p.tailBytes[0].Load()
	t.Logf("round %d: %v, %d stops, %d bytes a->b of which %d copied at the end", seed, r.End, r.Stops, r.AtoB, tail)
	if r.End != SpliceEndClosed || r.AtoB != n {
		t.Errorf("Wait = %v with %d bytes a->b, want closed with %d", r.End, r.AtoB, n)
	}
	if tail > 0 {
		tails = 1
	}
	return tails
}

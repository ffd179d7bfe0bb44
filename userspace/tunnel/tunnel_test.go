package tunnel

import (
	"bytes"
	"errors"
	"io"
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// pair returns both ends of a loopback TCP connection.
func pair(t testing.TB) (a, b *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		ch <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-ch
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// setup builds client <-> [tunnel] <-> server and runs the tunnel; the
// result arrives on the channel.
func setup(t testing.TB, to Timeouts, toServer, toClient []byte) (r *Registry, tn *Tunnel, client, server *net.TCPConn, res chan Result) {
	t.Helper()
	client, pa := pair(t)
	pb, server := pair(t)
	for _, c := range []*net.TCPConn{client, server} {
		c.SetDeadline(time.Now().Add(20 * time.Second))
	}
	r = NewRegistry()
	tn = r.New(Info{Kind: TCP, Frontend: "fe", Backend: "be", Server: "s1"}, pa, pb, to)
	res = make(chan Result, 1)
	go func() { res <- tn.Run(toServer, toClient) }()
	return r, tn, client, server, res
}

func wait(t testing.TB, res chan Result) Result {
	t.Helper()
	select {
	case r := <-res:
		return r
	case <-time.After(15 * time.Second):
		t.Fatal("tunnel did not end")
		return Result{}
	}
}

func TestPendingBytesFirst(t *testing.T) {
	_, _, client, server, res := setup(t, Timeouts{Idle: 10 * time.Second}, []byte("early-up "), []byte("early-down "))
	client.Write([]byte("later-up"))
	server.Write([]byte("later-down"))
	got := make([]byte, len("early-up later-up"))
	if _, err := io.ReadFull(server, got); err != nil || string(got) != "early-up later-up" {
		t.Fatalf("server got %q %v", got, err)
	}
	got = make([]byte, len("early-down later-down"))
	if _, err := io.ReadFull(client, got); err != nil || string(got) != "early-down later-down" {
		t.Fatalf("client got %q %v", got, err)
	}
	client.Close()
	server.Close()
	r := wait(t, res)
	if r.Up != int64(len("early-up later-up")) || r.Down != int64(len("early-down later-down")) {
		t.Errorf("counted up %d down %d", r.Up, r.Down)
	}
}

// A client that half-closes still gets everything the server sends later;
// the server sees EOF; the tunnel ends when both have closed, with "--".
func TestHalfClose(t *testing.T) {
	_, _, client, server, res := setup(t, Timeouts{Idle: 10 * time.Second}, nil, nil)
	client.Write([]byte("question"))
	client.CloseWrite()
	got, err := io.ReadAll(server)
	if err != nil || string(got) != "question" {
		t.Fatalf("server read %q %v, want the bytes then EOF", got, err)
	}
	big := bytes.Repeat([]byte("answer "), 100000)
	server.Write(big)
	server.CloseWrite()
	back, err := io.ReadAll(client)
	if err != nil || !bytes.Equal(back, big) {
		t.Fatalf("client read %d bytes %v, want %d", len(back), err, len(big))
	}
	if r := wait(t, res); r.Term != TermOK {
		t.Errorf("term %q, want --", r.Term)
	}
}

// A reset on one side reaches the other side as a reset.
func TestResetPropagates(t *testing.T) {
	_, _, client, server, res := setup(t, Timeouts{Idle: 10 * time.Second}, nil, nil)
	client.Write([]byte("x"))
	one := make([]byte, 1)
	io.ReadFull(server, one)
	client.SetLinger(0)
	client.Close() // RST
	_, err := io.ReadAll(server)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("server saw %v, want connection reset", err)
	}
	if r := wait(t, res); r.Term != TermClient {
		t.Errorf("term %q, want %s", r.Term, TermClient)
	}
}

// After the server closes its side, timeout client-fin bounds the wait for
// the client.
func TestClientFin(t *testing.T) {
	_, _, client, server, res := setup(t, Timeouts{Idle: 10 * time.Second, ClientFin: 300 * time.Millisecond}, nil, nil)
	server.CloseWrite()
	start := time.Now()
	if b, err := io.ReadAll(client); err != nil || len(b) != 0 {
		t.Fatalf("client: %q %v", b, err)
	}
	r := wait(t, res)
	if d := time.Since(start); d < 250*time.Millisecond || d > 2*time.Second {
		t.Errorf("half-closed tunnel ended after %v, want ~300ms (client-fin)", d)
	}
	if r.Term != TermClientTO {
		t.Errorf("term %q, want %s", r.Term, TermClientTO)
	}
}

func TestIdleBothDirections(t *testing.T) {
	_, tn, client, server, res := setup(t, Timeouts{Idle: 400 * time.Millisecond}, nil, nil)
	// Alternate directions every 200 ms for 1.2 s: never idle 400 ms.
	buf := make([]byte, 1)
	for i := 0; i < 6; i++ {
		time.Sleep(200 * time.Millisecond)
		var from, to *net.TCPConn = client, server
		if i%2 == 1 {
			from, to = server, client
		}
		if _, err := from.Write([]byte{byte(i)}); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		if _, err := io.ReadFull(to, buf); err != nil {
			r := <-res
			t.Fatalf("round %d: %v (tunnel closed while active: %+v)", i, err, r)
		}
	}
	last := tn.Snapshot().LastActivity
	r := wait(t, res)
	if d := time.Since(last); d < 400*time.Millisecond || d > 900*time.Millisecond {
		t.Errorf("ended %v after the last byte, want ~400ms", d)
	}
	if r.Term != TermClientTO && r.Term != TermServerTO {
		t.Errorf("term %q", r.Term)
	}
}

func TestKill(t *testing.T) {
	r, _, client, _, res := setup(t, Timeouts{Idle: 10 * time.Second}, nil, nil)
	if r.Len() != 1 || len(r.Snapshots()) != 1 {
		t.Fatalf("registry: %d live", r.Len())
	}
	if n := r.Kill(func(i Info) bool { return i.Server == "other" }); n != 0 {
		t.Fatalf("killed %d non-matching", n)
	}
	if n := r.Kill(func(i Info) bool { return i.Server == "s1" }); n != 1 {
		t.Fatalf("killed %d, want 1", n)
	}
	if res := wait(t, res); res.Term != TermKilled {
		t.Errorf("term %q", res.Term)
	}
	if _, err := io.ReadAll(client); err != nil {
		t.Errorf("client: %v", err)
	}
	if r.Len() != 0 || r.Totals().Killed != 1 {
		t.Errorf("after kill: %+v", r.Totals())
	}
}

// Neither copier outlives the tunnel.
func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	for i := 0; i < 50; i++ {
		_, _, client, server, res := setup(t, Timeouts{Idle: 10 * time.Second}, nil, nil)
		client.Write([]byte("hi"))
		server.Close()
		client.Close()
		wait(t, res)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before+2 {
		if time.Now().After(deadline) {
			t.Fatalf("goroutines: %d before, %d after", before, runtime.NumGoroutine())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// BenchmarkThroughput moves bytes one way through a tunnel.
func BenchmarkThroughput(b *testing.B) {
	_, _, client, server, res := setup(b, Timeouts{Idle: time.Minute}, nil, nil)
	buf := make([]byte, 256<<10)
	b.SetBytes(int64(len(buf)))
	done := make(chan struct{})
	go func() { io.Copy(io.Discard, server); close(done) }()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		client.SetDeadline(time.Now().Add(time.Minute))
		client.Write(buf)
	}
	client.CloseWrite()
	<-done
	server.Close()
	<-res
}

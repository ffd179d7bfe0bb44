package proxy

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/streamtest"
)

// tcpBackend is a plain TCP server: handle runs per connection. It records
// the peak of concurrent connections.
type tcpBackend struct {
	ln         net.Listener
	open, peak atomic.Int64
	conns      atomic.Int64
	wg         sync.WaitGroup
}

func newTCPBackend(t testing.TB, handle func(c *net.TCPConn)) *tcpBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &tcpBackend{ln: ln}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.conns.Add(1)
			n := b.open.Add(1)
			for p := b.peak.Load(); n > p && !b.peak.CompareAndSwap(p, n); p = b.peak.Load() {
			}
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				defer b.open.Add(-1)
				defer c.Close()
				handle(c.(*net.TCPConn))
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); b.wg.Wait() })
	return b
}

func (b *tcpBackend) addr() string { return b.ln.Addr().String() }

// echo copies what it reads back until EOF, then closes.
func echo(c *net.TCPConn) { io.Copy(c, c) }

const tcpCfg = `
defaults
    mode tcp
    option tcplog
    log stdout format raw local0
    timeout connect 1s
    timeout client 10s
    timeout server 10s
frontend fe
    bind 127.0.0.1:0
    default_backend be
backend be
`

func startTCP(t testing.TB, cfg string, logBuf io.Writer, servers ...string) string {
	t.Helper()
	for i, a := range servers {
		cfg += fmt.Sprintf("    server s%d %s\n", i+1, a)
	}
	return startProxy(t, cfg, logBuf)
}

func TestTCPEcho(t *testing.T) {
	b := newTCPBackend(t, echo)
	var logBuf syncBuffer
	addr := startTCP(t, tcpCfg, &logBuf, b.addr()+" maxconn 10")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	msg := []byte("not HTTP at all\x00\xff")
	c.Write(msg)
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo %q %v", got, err)
	}
	c.(*net.TCPConn).CloseWrite()
	if rest, err := io.ReadAll(c); err != nil || len(rest) != 0 {
		t.Fatalf("after half-close: %q %v", rest, err)
	}
	c.Close()
	waitUntil(t, "tcplog line", func() bool { return strings.Contains(logBuf.String(), "fe be/s1 ") })
	line := logBuf.String()
	// client:port [date] fe be/s1 Tw/Tc/Tt bytes -- ac/fc/bc/sc/rc sq/bq
	if !strings.Contains(line, fmt.Sprintf(" %d -- ", len(msg))) {
		t.Errorf("tcplog: %s", line)
	}
}

// TestTCPGigabyte moves 1 GiB each way at once through one mode tcp
// connection; SHA-256 must match at both ends.
func TestTCPGigabyte(t *testing.T) {
	size := int64(1 << 30)
	if testing.Short() {
		size = 64 << 20
	}
	type sums struct{ got, sent [32]byte }
	srvSums := make(chan sums, 1)
	b := newTCPBackend(t, func(c *net.TCPConn) {
		var s sums
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); s.sent = streamtest.Send(c, size, 2); c.CloseWrite() }()
		s.got = streamtest.Hash(c)
		wg.Wait()
		srvSums <- s
	})
	addr := startTCP(t, tcpCfg, nil, b.addr())
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Minute))
	var sent [32]byte
	done := make(chan struct{})
	go func() { sent = streamtest.Send(c.(*net.TCPConn), size, 1); c.(*net.TCPConn).CloseWrite(); close(done) }()
	got := streamtest.Hash(c)
	<-done
	s := <-srvSums
	if s.got != sent {
		t.Errorf("client->server: SHA-256 differs")
	}
	if got != s.sent {
		t.Errorf("server->client: SHA-256 differs")
	}
}

// TestTCPThousandTunnels: 1,000 concurrent tunnels, each echoing its own
// message.
func TestTCPThousandTunnels(t *testing.T) {
	b := newTCPBackend(t, echo)
	addr := startTCP(t, tcpCfg, nil, b.addr())
	const n = 1000
	conns := make([]net.Conn, n)
	for i := range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(60 * time.Second))
		conns[i] = c
	}
	p := proxyAt(t, addr)
	waitUntil(t, "1000 tunnels", func() bool { return p.Tunnels().Len() == n })
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := bytes.Repeat([]byte(fmt.Sprintf("tunnel %d;", i)), 1+i%50)
			if _, err := c.Write(msg); err != nil {
				errs <- err
				return
			}
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
				errs <- fmt.Errorf("tunnel %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := b.peak.Load(); got != n {
		t.Errorf("backend peak %d connections, want %d", got, n)
	}
	for _, c := range conns {
		c.Close()
	}
	waitUntil(t, "all tunnels to end", func() bool { return p.Tunnels().Len() == 0 })
}

// TestTCPMaxconnQueue: server maxconn holds at the connection level; excess
// connections wait in the queue and go through as others close.
func TestTCPMaxconnQueue(t *testing.T) {
	b := newTCPBackend(t, echo)
	addr := startTCP(t, tcpCfg+"    timeout queue 10s\n", nil, b.addr()+" maxconn 2")
	const n = 6
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			c.Write([]byte("x"))
			var one [1]byte
			if _, err := io.ReadFull(c, one[:]); err != nil {
				errs <- fmt.Errorf("conn %d: %v", i, err)
				return
			}
			time.Sleep(100 * time.Millisecond) // hold the slot a while
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if p := b.peak.Load(); p != 2 {
		t.Errorf("backend peak %d connections, want 2 (maxconn)", p)
	}
	if c := b.conns.Load(); c != n {
		t.Errorf("backend saw %d connections, want %d", c, n)
	}
}

// TestTCPRetryRedispatch: the first server refuses connections; with
// retries and option redispatch the client still reaches the second.
func TestTCPRetryRedispatch(t *testing.T) {
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close() // nothing listens there now: connection refused
	b := newTCPBackend(t, echo)
	cfg := strings.Replace(tcpCfg, "\nbackend be\n", "\nbackend be\n    balance first\n    retries 2\n    option redispatch\n", 1)
	var logBuf syncBuffer
	addr := startTCP(t, cfg, &logBuf, deadAddr, b.addr())
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("ping"))
	got := make([]byte, 4)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "ping" {
		t.Fatalf("through redispatch: %q %v", got, err)
	}
	c.Close()
	waitUntil(t, "log line", func() bool { return strings.Contains(logBuf.String(), "be/s2") })
	if l := logBuf.String(); !strings.Contains(l, "/1 0/0") && !strings.Contains(l, "/2 0/0") { // retried
		t.Errorf("tcplog: %s", l)
	}
}

// TestTCPIdle: timeout tunnel closes an idle mode tcp connection.
func TestTCPIdle(t *testing.T) {
	b := newTCPBackend(t, echo)
	addr := startTCP(t, tcpCfg+"    timeout tunnel 300ms\n", nil, b.addr())
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	io.Copy(io.Discard, c)
	if d := time.Since(start); d < 300*time.Millisecond || d > 800*time.Millisecond {
		t.Errorf("idle tcp tunnel closed after %v, want ~300ms", d)
	}
}

// TestGracefulStopTunnels: on stop, live tunnels carry on while new
// connections are refused, until the grace period (hard-stop-after) ends
// them; Serve then returns.
func TestGracefulStopTunnels(t *testing.T) {
	b := newTCPBackend(t, echo)
	const grace = 600 * time.Millisecond
	addr, cancel, served := serveStoppable(t, tcpCfg+"    server s1 "+b.addr()+"\n", grace)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	ping := func(msg string) error {
		conn.Write([]byte(msg))
		got := make([]byte, len(msg))
		_, err := io.ReadFull(conn, got)
		return err
	}
	if err := ping("before"); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	cancel()
	waitUntil(t, "listener closed", func() bool {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	if err := ping("during grace"); err != nil {
		t.Fatalf("tunnel cut before the grace period ended: %v", err)
	}
	io.Copy(io.Discard, conn)
	if d := time.Since(stopped); d < grace-50*time.Millisecond || d > grace+2*time.Second {
		t.Errorf("tunnel closed %v after stop, want ~%v", d, grace)
	}
	select {
	case <-served:
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
}

// TestHardStopAbortsWaitingRequests: when the grace period ends, a request
// still waiting for its server's response is cut too, and Serve returns.
func TestHardStopAbortsWaitingRequests(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		b := newTestBackend(t, "slow", func(w *rawWriter, r *http.Request, body []byte) {
			select {
			case <-release:
			case <-time.After(20 * time.Second):
			}
			w.reply(200, "late\n")
		})
		addr, cancel, served := serveStoppable(t, basicCfg+"    server s1 "+b.addr()+"\n", 300*time.Millisecond)
		cl := dial(t, addr)
		cl.send(t, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
		waitUntil(t, "request at the server", func() bool { return b.inflight.Load() == 1 })
		start := time.Now()
		cancel()
		select {
		case <-served:
		case <-time.After(5 * time.Second):
			t.Fatal("Serve still waiting for the server 5 s after the grace period")
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("hard stop took %v, want ~300ms", d)
		}
	})
}

// TestTCPListen: a `listen` section in mode tcp is a frontend and its
// backend in one.
func TestTCPListen(t *testing.T) {
	b := newTCPBackend(t, echo)
	addr := startProxy(t, `
listen db
    mode tcp
    bind 127.0.0.1:0
    timeout connect 1s
    timeout client 5s
    timeout server 5s
    server s1 `+b.addr()+` maxconn 1
`, nil)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte("select 1"))
	got := make([]byte, 8)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "select 1" {
		t.Fatalf("through listen: %q %v", got, err)
	}
}

package proxy

import (
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestSourcePoolSpread: a backend `source` pool of four loopback addresses;
// new server connections spread evenly over them (as the server sees
// them), and the stats count the selections per source.
func TestSourcePoolSpread(t *testing.T) {
	var mu sync.Mutex
	from := map[string]int{}
	b := newTCPBackend(t, func(c *net.TCPConn) {
		host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
		mu.Lock()
		from[host]++
		mu.Unlock()
		echo(c)
	})
	cfg := strings.Replace(tcpCfg, "\nbackend be\n", "\nbackend be\n    source 127.0.0.2-127.0.0.5\n", 1)
	addr := startTCP(t, cfg, nil, b.addr())
	const n = 400
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write([]byte("x"))
		if _, err := c.Read(make([]byte, 1)); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		c.Close()
	}
	waitUntil(t, "all connections seen", func() bool {
		mu.Lock()
		defer mu.Unlock()
		total := 0
		for _, v := range from {
			total += v
		}
		return total == n
	})
	mu.Lock()
	defer mu.Unlock()
	for _, src := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"} {
		if got := from[src]; got < n/4*9/10 || got > n/4*11/10 {
			t.Errorf("source %s: %d connections, want %d ±10%% (%v)", src, got, n/4, from)
		}
	}
	p := proxyAt(t, addr)
	var sel int64
	for _, src := range p.Stats().Backends[0].Servers[0].Kernel.Sources {
		sel += src.Selections
	}
	if sel != n {
		t.Errorf("stats count %d selections, want %d", sel, n)
	}
}

// TestSourceExhausted503: with an explicit range of 4 ports on one source
// address and 4 WebSocket tunnels holding them, the next request to that
// server gets a clean 503 (no tuple left), logged as such.
func TestSourceExhausted503(t *testing.T) {
	ws := newWSServer(t, time.Second)
	probe, _ := net.Listen("tcp", "127.0.0.1:0")
	port := probe.Addr().(*net.TCPAddr).Port
	probe.Close()
	lo := 20000 + port%20000 // a range unlikely to be in use
	cfg := strings.Replace(wsCfg, "server ws1 {ws1} maxconn 1000",
		"retries 1\n    source 127.0.0.7:"+itoaS(lo)+"-"+itoaS(lo+3)+"\n    server ws1 {ws1} maxconn 1000", 1)
	var logBuf syncBuffer
	addr := startWS(t, cfg, ws, &logBuf, newTestBackend(t, "web1", nil))
	for i := 0; i < 4; i++ {
		dialWS(t, addr, "/websockets/echo", nil)
	}
	resp := rawExchange(t, addr, "GET /websockets/plain HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
	if status(resp) != 503 {
		t.Fatalf("with every tuple taken: %q, want 503", resp)
	}
	waitUntil(t, "log line", func() bool {
		return strings.Contains(logBuf.String(), "ws/<NOSRV>") || strings.Contains(logBuf.String(), " 503 ")
	})
}

func itoaS(n int) string { return string(itoa(nil, int64(n))) }

package proxy

import (
	"net"
	"net/http"
	"sync/atomic"
	"testing"
)

func serverState(addr, be, srv string) string {
	v, ok := running.Load(addr)
	if !ok {
		return ""
	}
	for _, b := range v.(*Proxy).Stats().Backends {
		if b.Name != be {
			continue
		}
		for _, s := range b.Servers {
			if s.Name == srv {
				return s.State
			}
		}
	}
	return ""
}

// TCP checks: a server that refuses connections goes DOWN after `fall`
// failed checks and gets no requests; when it listens again it comes back
// after `rise` good ones.
func TestHealthCheckTCP(t *testing.T) {
	good := newTestBackend(t, "good", nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := ln.Addr().String()
	ln.Close()
	addr := startProxy(t, basicCfg+`    retries 0
    server dead `+deadAddr+` check inter 50ms fall 2 rise 2
    server good {good} check inter 50ms
`, nil, good)
	waitFor(t, func() bool { return serverState(addr, "be", "dead") == "DOWN" })
	c := dial(t, addr)
	for i := 0; i < 10; i++ {
		if res, body := c.get(t, "/"); res.StatusCode != 200 || body != "hello from good\n" {
			t.Fatalf("request %d with a server down: %d %q", i, res.StatusCode, body)
		}
	}
	// It comes back.
	back, err := net.Listen("tcp", deadAddr)
	if err != nil {
		t.Skipf("cannot listen on %s again: %v", deadAddr, err)
	}
	defer back.Close()
	go func() {
		for {
			c, err := back.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	waitFor(t, func() bool { return serverState(addr, "be", "dead") == "UP" })
}

// HTTP checks with option httpchk and http-check expect.
func TestHealthCheckHTTP(t *testing.T) {
	var healthStatus atomic.Int32
	healthStatus.Store(200)
	b := newTestBackend(t, "s1", func(w *rawWriter, r *http.Request, body []byte) {
		if r.URL.Path == "/health" {
			if r.Method != "GET" {
				w.reply(405, "")
				return
			}
			w.reply(int(healthStatus.Load()), "")
			return
		}
		w.reply(200, "app")
	})
	addr := startProxy(t, basicCfg+`    option httpchk GET /health
    http-check expect status 200
    server s1 {s1} check inter 50ms fall 2 rise 2
`, nil, b)
	waitFor(t, func() bool { return b.requests.Load() >= 2 }) // checks are running
	if st := serverState(addr, "be", "s1"); st != "UP" {
		t.Fatalf("state %s with a healthy server", st)
	}
	healthStatus.Store(503)
	waitFor(t, func() bool { return serverState(addr, "be", "s1") == "DOWN" })
	if st := status(rawExchange(t, addr, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")); st != 503 {
		t.Fatalf("request with the only server down: %d, want 503", st)
	}
	healthStatus.Store(200)
	waitFor(t, func() bool { return serverState(addr, "be", "s1") == "UP" })
	if res, body := dial(t, addr).get(t, "/"); res.StatusCode != 200 || body != "app" {
		t.Fatalf("after recovery: %d %q", res.StatusCode, body)
	}
}

package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// wsServer is a WebSocket backend built on a real library
// (github.com/coder/websocket): /echo echoes every message, /push sends a
// message every `every` until the client closes, /sink reads and never
// writes. It records the peak number of open WebSockets.
type wsServer struct {
	addr       string
	open, peak atomic.Int64
	accepted   atomic.Int64
}

func newWSServer(t testing.TB, every time.Duration) *wsServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ws := &wsServer{addr: ln.Addr().String()}
	mux := http.NewServeMux()
	handle := func(path string, run func(ctx context.Context, c *websocket.Conn)) {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			c, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			defer c.CloseNow()
			ws.accepted.Add(1)
			n := ws.open.Add(1)
			defer ws.open.Add(-1)
			for p := ws.peak.Load(); n > p && !ws.peak.CompareAndSwap(p, n); p = ws.peak.Load() {
			}
			c.SetReadLimit(4 << 20)
			run(r.Context(), c)
		})
	}
	handle("/websockets/echo", func(ctx context.Context, c *websocket.Conn) {
		for {
			typ, rd, err := c.Reader(ctx)
			if err != nil {
				return
			}
			wr, err := c.Writer(ctx, typ)
			if err != nil {
				return
			}
			if _, err := io.Copy(wr, rd); err != nil || wr.Close() != nil {
				return
			}
		}
	})
	handle("/websockets/push", func(ctx context.Context, c *websocket.Conn) {
		ctx = c.CloseRead(ctx)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if c.Write(ctx, websocket.MessageText, fmt.Appendf(nil, "push %d", i)) != nil {
					return
				}
			}
		}
	})
	handle("/websockets/sink", func(ctx context.Context, c *websocket.Conn) {
		for {
			if _, _, err := c.Read(ctx); err != nil {
				return
			}
		}
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ws
}

// wsCfg is the seed's WebSocket configuration on loopback: /websockets goes
// to its own backend.
const wsCfg = `
defaults
    mode http
    option httplog
    log stdout format raw local0
    timeout connect 2s
    timeout client 5s
    timeout server 5s
    timeout tunnel 3600s
frontend public
    bind 127.0.0.1:0
    acl is_websocket path_beg -i /websockets
    use_backend ws if is_websocket
    default_backend servers
backend servers
    server web1 {web1} maxconn 32
backend ws
    server ws1 {ws1} maxconn 1000
`

func startWS(t *testing.T, cfg string, ws *wsServer, logBuf io.Writer, backends ...*testBackend) string {
	t.Helper()
	return startProxy(t, strings.ReplaceAll(cfg, "{ws1}", ws.addr), logBuf, backends...)
}

func TestWebSocketEcho(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		ws := newWSServer(t, time.Second)
		web := newTestBackend(t, "web1", nil)
		var logBuf syncBuffer
		addr := startWS(t, wsCfg, ws, &logBuf, web)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, res, err := websocket.Dial(ctx, "ws://"+addr+"/websockets/echo", nil)
		if err != nil {
			t.Fatalf("dial through sluice: %v", err)
		}
		defer c.CloseNow()
		if res.StatusCode != 101 {
			t.Fatalf("status %d", res.StatusCode)
		}
		c.SetReadLimit(4 << 20)
		roundTrip := func(typ websocket.MessageType, parts ...[]byte) {
			t.Helper()
			w, err := c.Writer(ctx, typ)
			if err != nil {
				t.Fatal(err)
			}
			var want []byte
			for _, p := range parts { // one frame per Write: a fragmented message
				if _, err := w.Write(p); err != nil {
					t.Fatal(err)
				}
				want = append(want, p...)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			gt, got, err := c.Read(ctx)
			if err != nil {
				t.Fatalf("read echo: %v", err)
			}
			if gt != typ || !bytes.Equal(got, want) {
				t.Fatalf("echo: type %v, %d bytes; want type %v, %d bytes", gt, len(got), typ, len(want))
			}
		}
		roundTrip(websocket.MessageText, []byte("hello"))
		bin := make([]byte, 256)
		rand.Read(bin)
		roundTrip(websocket.MessageBinary, bin)
		roundTrip(websocket.MessageText, []byte("frag"), []byte("ment"), []byte("ed"))
		big := make([]byte, 1<<20)
		rand.Read(big)
		roundTrip(websocket.MessageBinary, big)

		// Ping/pong: the pong is read by a pending Read.
		readDone := make(chan error, 1)
		go func() {
			_, msg, err := c.Read(ctx)
			if err == nil && string(msg) != "after ping" {
				err = fmt.Errorf("got %q", msg)
			}
			readDone <- err
		}()
		if err := c.Ping(ctx); err != nil {
			t.Fatalf("ping: %v", err)
		}
		if err := c.Write(ctx, websocket.MessageText, []byte("after ping")); err != nil {
			t.Fatal(err)
		}
		if err := <-readDone; err != nil {
			t.Fatalf("read after ping: %v", err)
		}

		p := proxyAt(t, addr)
		if n := p.Tunnels().Len(); n != 1 {
			t.Errorf("registry holds %d tunnels, want 1", n)
		}
		snap := p.Tunnels().Snapshots()
		if len(snap) == 1 && (snap[0].Backend != "ws" || snap[0].Server != "ws1" || snap[0].Up < 1<<20 || snap[0].Down < 1<<20) {
			t.Errorf("tunnel snapshot %+v", snap[0])
		}

		// Close handshake, relayed both ways.
		if err := c.Close(websocket.StatusNormalClosure, "bye"); err != nil {
			t.Fatalf("close handshake: %v", err)
		}
		waitUntil(t, "tunnel to end", func() bool { return p.Tunnels().Len() == 0 })
		waitUntil(t, "server slot released", func() bool { return serverCur(p, "ws", "ws1") == 0 })
		waitUntil(t, "log line", func() bool { return strings.Contains(logBuf.String(), "ws/ws1") })
		if line := logBuf.String(); !strings.Contains(line, " 101 ") || !strings.Contains(line, "GET /websockets/echo HTTP/1.1") {
			t.Errorf("log: %s", line)
		}
		// The ordinary route still works.
		if _, body := dial(t, addr).get(t, "/"); !strings.Contains(body, "web1") {
			t.Errorf("default route: %q", body)
		}
	})
}

// proxyAt returns the proxy startProxy started at addr.
func proxyAt(t testing.TB, addr string) *Proxy {
	v, ok := running.Load(addr)
	if !ok {
		t.Fatalf("no proxy at %s", addr)
	}
	return v.(*Proxy)
}

func serverCur(p *Proxy, backend, server string) int64 {
	s, err := p.findServer(backend, server)
	if err != nil {
		return -1
	}
	return s.q.Cur.Load()
}

// waitUntil polls cond until it holds, failing the test after 10 s.
func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// rawWS is a hand-rolled WebSocket client over a plain connection, to see
// exactly what happens on the wire (EOF times, bytes behind the handshake).
type rawWS struct {
	c  net.Conn
	br *bufio.Reader
}

const testKey = "dGhlIHNhbXBsZSBub25jZQ=="

func upgradeReq(path string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + testKey + "\r\n\r\n"
}

// dialWS performs the handshake; extra is written right behind the request
// in the same write.
func dialWS(t testing.TB, addr, path string, extra []byte) *rawWS {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write(append([]byte(upgradeReq(path)), extra...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	if res.StatusCode != 101 || res.Header.Get("Sec-WebSocket-Accept") != wsAccept([]byte(testKey)) {
		t.Fatalf("handshake: %d %v", res.StatusCode, res.Header)
	}
	if !strings.EqualFold(res.Header.Get("Upgrade"), "websocket") || !strings.EqualFold(res.Header.Get("Connection"), "upgrade") {
		t.Fatalf("101 without Upgrade/Connection: %v", res.Header)
	}
	return &rawWS{c: c, br: br}
}

// frame encodes one masked client frame.
func frame(opcode byte, fin bool, payload []byte) []byte {
	b0 := opcode
	if fin {
		b0 |= 0x80
	}
	out := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		out = append(out, 0x80|byte(n))
	case n < 1<<16:
		out = append(out, 0x80|126, byte(n>>8), byte(n))
	default:
		out = append(out, 0x80|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	mask := [4]byte{1, 2, 3, 4}
	out = append(out, mask[:]...)
	for i, c := range payload {
		out = append(out, c^mask[i%4])
	}
	return out
}

// readFrame reads one unmasked server message, joining its fragments.
func (w *rawWS) readFrame() (opcode byte, payload []byte, err error) {
	for {
		op, fin, p, err := w.readOneFrame()
		if err != nil {
			return 0, nil, err
		}
		if op != 0 {
			opcode = op
		}
		payload = append(payload, p...)
		if fin {
			return opcode, payload, nil
		}
	}
}

func (w *rawWS) readOneFrame() (opcode byte, fin bool, payload []byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(w.br, h[:]); err != nil {
		return 0, false, nil, err
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(w.br, b[:]); err != nil {
			return 0, false, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(w.br, b[:]); err != nil {
			return 0, false, nil, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	payload = make([]byte, n)
	_, err = io.ReadFull(w.br, payload)
	return h[0] & 0x0f, h[0]&0x80 != 0, payload, err
}

// TestWebSocketBytesBehindHandshake: a frame pipelined behind the upgrade
// request reaches the server, and the echo comes back, before anything else.
func TestWebSocketBytesBehindHandshake(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		ws := newWSServer(t, time.Second)
		addr := startWS(t, wsCfg, ws, nil, newTestBackend(t, "web1", nil))
		w := dialWS(t, addr, "/websockets/echo", frame(1, true, []byte("early")))
		w.c.Write(frame(1, true, []byte("second")))
		for _, want := range []string{"early", "second"} {
			op, p, err := w.readFrame()
			if err != nil || op != 1 || string(p) != want {
				t.Fatalf("frame: op %d %q %v, want text %q", op, p, err, want)
			}
		}
	})
}

// TestWebSocketServerBytesBehind101: a server that sends a frame in the same
// write as its 101 gets it to the client.
func TestWebSocketServerBytesBehind101(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		be := newRawUpgradeBackend(t, func(c net.Conn, br *bufio.Reader) {
			// 101 and a server frame (unmasked text "hi") in one write.
			io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
				"Sec-WebSocket-Accept: "+wsAccept([]byte(testKey))+"\r\n\r\n\x81\x02hi")
			io.Copy(io.Discard, br)
		})
		addr := startProxy(t, strings.ReplaceAll(wsCfg, "{ws1}", be), nil, newTestBackend(t, "web1", nil))
		w := dialWS(t, addr, "/websockets/x", nil)
		op, p, err := w.readFrame()
		if err != nil || op != 1 || string(p) != "hi" {
			t.Fatalf("frame behind 101: op %d %q %v", op, p, err)
		}
	})
}

// newRawUpgradeBackend serves each connection with fn after reading the
// request head; it returns the address.
func newRawUpgradeBackend(t testing.TB, fn func(c net.Conn, br *bufio.Reader)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				br := bufio.NewReader(c)
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				fn(c, br)
			}()
		}
	}()
	return ln.Addr().String()
}

// TestWebSocketIdle: timeout tunnel closes an idle tunnel within 1-1.5 s;
// traffic in either direction alone keeps it alive.
func TestWebSocketIdle(t *testing.T) {
	cfg := strings.Replace(wsCfg, "timeout tunnel 3600s", "timeout tunnel 1s", 1)
	ws := newWSServer(t, 500*time.Millisecond)
	addr := startWS(t, cfg, ws, nil, newTestBackend(t, "web1", nil))

	// untilEOF reads (discarding) until the proxy closes, and returns when.
	untilEOF := func(w *rawWS) time.Time {
		io.Copy(io.Discard, w.br)
		return time.Now()
	}
	t.Run("idle", func(t *testing.T) {
		w := dialWS(t, addr, "/websockets/echo", nil)
		start := time.Now()
		closed := untilEOF(w)
		if d := closed.Sub(start); d < time.Second || d > 1500*time.Millisecond {
			t.Errorf("idle tunnel closed after %v, want 1-1.5 s", d)
		}
	})
	t.Run("server-pushes", func(t *testing.T) {
		// Only the server sends (every 500 ms): the tunnel stays up.
		w := dialWS(t, addr, "/websockets/push", nil)
		start := time.Now()
		n := 0
		for time.Since(start) < 5*time.Second {
			if _, _, err := w.readFrame(); err != nil {
				t.Fatalf("after %v and %d messages: %v", time.Since(start), n, err)
			}
			n++
		}
	})
	t.Run("client-sends", func(t *testing.T) {
		// Only the client sends (every 500 ms, the sink never answers).
		w := dialWS(t, addr, "/websockets/sink", nil)
		eof := make(chan time.Time, 1)
		go func() { eof <- untilEOF(w) }()
		start := time.Now()
		var last time.Time
		for time.Since(start) < 5*time.Second {
			select {
			case at := <-eof:
				t.Fatalf("closed after %v although the client sent every 500 ms", at.Sub(start))
			case <-time.After(500 * time.Millisecond):
			}
			if _, err := w.c.Write(frame(1, true, []byte("tick"))); err != nil {
				t.Fatal(err)
			}
			last = time.Now()
		}
		closedAt := <-eof
		if d := closedAt.Sub(last); d < time.Second || d > 1500*time.Millisecond {
			t.Errorf("closed %v after the last message, want 1-1.5 s", d)
		}
	})
}

// TestWebSocketHalfClose: the client shuts its write side; everything the
// server sends afterwards still reaches it.
func TestWebSocketHalfClose(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		tail := make([]byte, 256<<10)
		rand.Read(tail)
		be := newRawUpgradeBackend(t, func(c net.Conn, br *bufio.Reader) {
			io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
				"Sec-WebSocket-Accept: "+wsAccept([]byte(testKey))+"\r\n\r\n")
			got, _ := io.ReadAll(br) // until the client's FIN arrives
			fmt.Fprintf(c, "%08d", len(got))
			c.Write(tail)
		})
		addr := startProxy(t, strings.ReplaceAll(wsCfg, "{ws1}", be), nil, newTestBackend(t, "web1", nil))
		w := dialWS(t, addr, "/websockets/x", nil)
		w.c.Write([]byte("client data"))
		if err := w.c.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(w.br)
		if err != nil {
			t.Fatal(err)
		}
		if want := append([]byte(fmt.Sprintf("%08d", len("client data"))), tail...); !bytes.Equal(got, want) {
			t.Fatalf("after half-close got %d bytes, want %d", len(got), len(want))
		}
	})
}

// TestWebSocketRefused: checklist 12-14. A refused upgrade is an ordinary
// response and the connection goes on as HTTP, routed afresh; a 101 with a
// wrong accept is a 502; a malformed handshake is a 400 that never reaches a
// server.
func TestWebSocketRefused(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		for _, code := range []int{426, 404, 200} {
			t.Run(fmt.Sprint(code), func(t *testing.T) {
				ws := newTestBackend(t, "ws1", func(w *rawWriter, r *http.Request, body []byte) {
					w.reply(code, "no upgrade here\n")
				})
				web := newTestBackend(t, "web1", nil)
				addr := startProxy(t, wsCfg, nil, ws, web)
				c := dial(t, addr)
				c.send(t, upgradeReq("/websockets/echo"))
				res, _ := c.read(t, "GET")
				if res.StatusCode != code {
					t.Fatalf("status %d, want %d", res.StatusCode, code)
				}
				if got := ws.last().Header.Get("Upgrade"); got != "websocket" {
					t.Errorf("the server saw Upgrade %q", got)
				}
				_, body := c.get(t, "/next")
				if !strings.Contains(body, "web1") {
					t.Errorf("next request on the connection: %q, want web1 (routed afresh)", body)
				}
			})
		}
		t.Run("wrong-accept", func(t *testing.T) {
			for name, accept := range map[string]string{"wrong": "Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n", "missing": ""} {
				be := newRawUpgradeBackend(t, func(c net.Conn, br *bufio.Reader) {
					io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+accept+"\r\n")
					io.Copy(io.Discard, br)
				})
				addr := startProxy(t, strings.ReplaceAll(wsCfg, "{ws1}", be), nil, newTestBackend(t, "web1", nil))
				if got := status(rawExchange(t, addr, upgradeReq("/websockets/x"))); got != 502 {
					t.Errorf("%s accept: status %d, want 502", name, got)
				}
			}
		})
		t.Run("bad-handshake", func(t *testing.T) {
			ws := newTestBackend(t, "ws1", nil)
			addr := startProxy(t, wsCfg, nil, ws, newTestBackend(t, "web1", nil))
			for name, req := range map[string]string{
				"no key":      strings.Replace(upgradeReq("/websockets/x"), "Sec-WebSocket-Key: "+testKey+"\r\n", "", 1),
				"short key":   strings.Replace(upgradeReq("/websockets/x"), testKey, "c2hvcnQ=", 1),
				"version 12":  strings.Replace(upgradeReq("/websockets/x"), "Version: 13", "Version: 12", 1),
				"no version":  strings.Replace(upgradeReq("/websockets/x"), "Sec-WebSocket-Version: 13\r\n", "", 1),
				"POST":        strings.Replace(upgradeReq("/websockets/x"), "GET", "POST", 1),
				"two keys":    strings.Replace(upgradeReq("/websockets/x"), "\r\n\r\n", "\r\nSec-WebSocket-Key: "+testKey+"\r\n\r\n", 1),
				"with a body": strings.Replace(upgradeReq("/websockets/x"), "\r\n\r\n", "\r\nContent-Length: 2\r\n\r\nhi", 1),
			} {
				if got := status(rawExchange(t, addr, req)); got != 400 {
					t.Errorf("%s: status %d, want 400", name, got)
				}
			}
			if n := ws.requests.Load(); n != 0 {
				t.Errorf("%d malformed handshakes reached the server", n)
			}
		})
		t.Run("h2c", func(t *testing.T) {
			// Other upgrades are stripped: the server sees a plain request.
			web := newTestBackend(t, "web1", nil)
			addr := startWS(t, wsCfg, newWSServer(t, time.Second), nil, web)
			c := dial(t, addr)
			c.send(t, "GET / HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
			if res, _ := c.read(t, "GET"); res.StatusCode != 200 {
				t.Fatalf("status %d", res.StatusCode)
			}
			if h := web.last().Header; h.Get("Upgrade") != "" || h.Get("Http2-Settings") != "" {
				t.Errorf("h2c upgrade forwarded: %v", h)
			}
		})
	})
}

// TestWebSocketMaxconn: a tunnel holds its server slot for its whole life;
// with maxconn 1 a second WebSocket waits in the queue until the first
// closes. Measured at the backend.
func TestWebSocketMaxconn(t *testing.T) {
	ws := newWSServer(t, time.Second)
	cfg := strings.Replace(wsCfg, "server ws1 {ws1} maxconn 1000", "server ws1 {ws1} maxconn 1", 1)
	addr := startWS(t, cfg, ws, nil, newTestBackend(t, "web1", nil))
	first := dialWS(t, addr, "/websockets/echo", nil)
	second := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, _, err := websocket.Dial(ctx, "ws://"+addr+"/websockets/echo", nil)
		if err == nil {
			c.CloseNow()
		}
		second <- err
	}()
	waitUntil(t, "second handshake to queue", func() bool { return queued(addr) == 1 })
	if ws.accepted.Load() != 1 {
		t.Fatalf("server accepted %d WebSockets with maxconn 1", ws.accepted.Load())
	}
	first.c.Close()
	if err := <-second; err != nil {
		t.Fatalf("queued handshake: %v", err)
	}
	if p := ws.peak.Load(); p != 1 {
		t.Errorf("peak open WebSockets at the server %d, want 1", p)
	}
}

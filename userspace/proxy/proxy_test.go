package proxy

import (
	"bufio"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestKeepAliveAndPooling(t *testing.T) { bothPaths(t, testKeepAliveAndPooling) }

func testKeepAliveAndPooling(t *testing.T) {
	b := newTestBackend(t, "s1", nil)
	addr := startProxy(t, basicCfg+"    server s1 {s1}\n", nil, b)
	c := dial(t, addr)
	for i := 0; i < 20; i++ {
		res, body := c.get(t, "/x")
		if res.StatusCode != 200 || body != "hello from s1\n" {
			t.Fatalf("request %d: %d %q", i, res.StatusCode, body)
		}
	}
	if got := b.requests.Load(); got != 20 {
		t.Fatalf("backend saw %d requests, want 20", got)
	}
	// One client connection, sequential requests: one pooled upstream
	// connection serves them all.
	if got := b.conns.Load(); got != 1 {
		t.Fatalf("backend saw %d connections, want 1 (pooled)", got)
	}
}

func TestRoundRobinWeights(t *testing.T) { bothPaths(t, testRoundRobinWeights) }

func testRoundRobinWeights(t *testing.T) {
	a := newTestBackend(t, "a", nil)
	b := newTestBackend(t, "b", nil)
	c := newTestBackend(t, "c", nil)
	addr := startProxy(t, basicCfg+`    balance roundrobin
    server a {a} weight 1
    server b {b} weight 2
    server c {c} weight 3
`, nil, a, b, c)
	cl := dial(t, addr)
	var seq []string
	for i := 0; i < 60; i++ {
		res, _ := cl.get(t, "/")
		seq = append(seq, res.Header.Get("X-Server"))
	}
	if a.requests.Load() != 10 || b.requests.Load() != 20 || c.requests.Load() != 30 {
		t.Fatalf("distribution a=%d b=%d c=%d, want 10/20/30", a.requests.Load(), b.requests.Load(), c.requests.Load())
	}
	// Smooth: within each cycle of 6, c never appears three times in a row.
	for i := 0; i+2 < len(seq); i++ {
		if seq[i] == "c" && seq[i+1] == "c" && seq[i+2] == "c" {
			t.Fatalf("not smooth: %v", seq[:12])
		}
	}
}

func TestHashBalancing(t *testing.T) {
	a := newTestBackend(t, "a", nil)
	b := newTestBackend(t, "b", nil)
	addr := startProxy(t, basicCfg+`    balance uri
    server a {a}
    server b {b}
`, nil, a, b)
	cl := dial(t, addr)
	first := map[string]string{}
	for i := 0; i < 40; i++ {
		path := "/item/" + strconv.Itoa(i%8) + "?v=" + strconv.Itoa(i)
		res, _ := cl.get(t, path)
		srv := res.Header.Get("X-Server")
		key := path[:strings.IndexByte(path, '?')]
		if prev, ok := first[key]; ok && prev != srv {
			t.Fatalf("uri %s went to %s then %s", key, prev, srv)
		}
		first[key] = srv
	}
	if a.requests.Load() == 0 || b.requests.Load() == 0 {
		t.Fatalf("uri hashing used one server only: a=%d b=%d", a.requests.Load(), b.requests.Load())
	}
}

func TestBodiesStreamBothWays(t *testing.T) { bothPaths(t, testBodiesStreamBothWays) }

func testBodiesStreamBothWays(t *testing.T) {
	b := newTestBackend(t, "s1", func(w *rawWriter, r *http.Request, body []byte) {
		switch r.URL.Path {
		case "/echo":
			w.reply(200, string(body))
		case "/chunked":
			io.WriteString(w, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n")
		case "/close":
			io.WriteString(w, "HTTP/1.1 200 OK\r\n\r\nuntil the end")
			w.kill = true
		case "/big":
			w.reply(200, strings.Repeat("x", 3<<20))
		case "/204":
			io.WriteString(w, "HTTP/1.1 204 No Content\r\n\r\n")
		case "/304":
			io.WriteString(w, "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n")
		default:
			w.reply(200, "ok")
		}
	})
	addr := startProxy(t, basicCfg+"    server s1 {s1}\n", nil, b)
	c := dial(t, addr)

	big := make([]byte, 2<<20)
	rand.Read(big)
	c.send(t, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: "+strconv.Itoa(len(big))+"\r\n\r\n")
	go c.c.Write(big) // streamed while the response comes back
	res, body := c.read(t, "POST")
	if res.StatusCode != 200 || body != string(big) {
		t.Fatalf("echo of 2 MiB: status %d, %d bytes, equal=%v", res.StatusCode, len(body), body == string(big))
	}

	c.send(t, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
	if res, body := c.read(t, "POST"); res.StatusCode != 200 || body != "abcdefg" {
		t.Fatalf("chunked request: %d %q", res.StatusCode, body)
	}
	if got := string(b.last().Body); got != "abcdefg" {
		t.Fatalf("backend got chunked body %q", got)
	}

	res, body = c.get(t, "/chunked")
	if body != "hello world" || res.Trailer.Get("X-Trailer") != "yes" {
		t.Fatalf("chunked response: %q trailer %v", body, res.Trailer)
	}
	if res, body := c.get(t, "/big"); res.StatusCode != 200 || len(body) != 3<<20 {
		t.Fatalf("big response: %d, %d bytes", res.StatusCode, len(body))
	}
	if res, _ := c.get(t, "/204"); res.StatusCode != 204 {
		t.Fatalf("204: %d", res.StatusCode)
	}
	if res, _ := c.get(t, "/304"); res.StatusCode != 304 {
		t.Fatalf("304: %d", res.StatusCode)
	}
	c.send(t, "HEAD /big HTTP/1.1\r\nHost: t\r\n\r\n")
	if res, body := c.read(t, "HEAD"); res.StatusCode != 200 || body != "" || res.ContentLength != 3<<20 {
		t.Fatalf("HEAD: %d %q cl=%d", res.StatusCode, body, res.ContentLength)
	}
	// A close-delimited response ends the client connection too.
	res, body = c.get(t, "/close")
	if body != "until the end" || !res.Close {
		t.Fatalf("close-delimited: %q close=%v", body, res.Close)
	}
}

func TestHTTP10Client(t *testing.T) { bothPaths(t, testHTTP10Client) }

func testHTTP10Client(t *testing.T) {
	b := newTestBackend(t, "s1", func(w *rawWriter, r *http.Request, body []byte) {
		if r.URL.Path == "/chunked" {
			io.WriteString(w, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
			return
		}
		w.reply(200, "ok")
	})
	addr := startProxy(t, basicCfg+"    server s1 {s1}\n", nil, b)
	out := rawExchange(t, addr, "GET / HTTP/1.0\r\n\r\n")
	if !strings.HasPrefix(out, "HTTP/1.0 200") || !strings.HasSuffix(out, "\r\n\r\nok") {
		t.Fatalf("HTTP/1.0: %q", out)
	}
	// A chunked response is decoded for an HTTP/1.0 client.
	out = rawExchange(t, addr, "GET /chunked HTTP/1.0\r\n\r\n")
	if !strings.HasSuffix(out, "\r\n\r\nhello") || strings.Contains(strings.ToLower(out), "transfer-encoding") {
		t.Fatalf("HTTP/1.0 chunked: %q", out)
	}
	// keep-alive on request
	c := dial(t, addr)
	for i := 0; i < 2; i++ {
		c.send(t, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
		res, body := c.read(t, "GET")
		if body != "ok" || res.Close {
			t.Fatalf("1.0 keep-alive %d: %q close=%v", i, body, res.Close)
		}
	}
}

func TestPipelinedInOrder(t *testing.T) { bothPaths(t, testPipelinedInOrder) }

func testPipelinedInOrder(t *testing.T) {
	b := newTestBackend(t, "s1", func(w *rawWriter, r *http.Request, body []byte) {
		if r.URL.Path == "/slow" {
			time.Sleep(50 * time.Millisecond)
		}
		w.reply(200, r.URL.Path+":"+string(body))
	})
	addr := startProxy(t, basicCfg+"    server s1 {s1}\n", nil, b)
	c := dial(t, addr)
	c.send(t, "GET /slow HTTP/1.1\r\nHost: t\r\n\r\n"+
		"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"+
		"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nxy\r\n0\r\n\r\n"+
		"GET /last HTTP/1.1\r\nHost: t\r\n\r\n")
	for _, want := range []string{"/slow:", "/p:abc", "/c:xy", "/last:"} {
		if _, body := c.read(t, "GET"); body != want {
			t.Fatalf("got %q, want %q", body, want)
		}
	}
}

func TestHeadersRewritten(t *testing.T) { bothPaths(t, testHeadersRewritten) }

func testHeadersRewritten(t *testing.T) {
	b := newTestBackend(t, "s1", func(w *rawWriter, r *http.Request, body []byte) {
		w.reply(200, "ok", "Connection: X-Secret", "X-Secret: 1", "Keep-Alive: timeout=5")
	})
	addr := startProxy(t, strings.Replace(basicCfg, "frontend fe", "frontend fe\n    option forwardfor", 1)+"    server s1 {s1}\n", nil, b)
	c := dial(t, addr)
	c.send(t, "GET / HTTP/1.1\r\nHost: t\r\nConnection: close, X-Forwarded-For, Upgrade, X-Drop\r\nX-Drop: 1\r\n"+
		"X-Forwarded-For: 6.6.6.6\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nKeep-Alive: 300\r\nTE: trailers\r\nX-Keep: yes\r\n\r\n")
	res, _ := c.read(t, "GET")
	got := b.last().Header
	// checklist 10 and 11: everything Connection names is dropped, the
	// proxy's own X-Forwarded-For still arrives, h2c never goes through.
	for _, h := range []string{"Connection", "X-Drop", "Upgrade", "Http2-Settings", "Keep-Alive", "Te"} {
		if v, ok := got[h]; ok {
			t.Errorf("backend got hop-by-hop %s: %q", h, v)
		}
	}
	if xff := got.Values("X-Forwarded-For"); len(xff) != 1 || xff[0] != "127.0.0.1" {
		t.Errorf("X-Forwarded-For at backend = %q, want only the proxy's 127.0.0.1", xff)
	}
	if got.Get("X-Keep") != "yes" {
		t.Errorf("end-to-end header lost")
	}
	if res.Header.Get("X-Secret") != "" || res.Header.Get("Keep-Alive") != "" {
		t.Errorf("client got hop-by-hop response headers: %v", res.Header)
	}
	if !res.Close {
		t.Errorf("client asked to close: response should say Connection: close")
	}
}

func TestExpect100Continue(t *testing.T) { bothPaths(t, testExpect100Continue) }

func testExpect100Continue(t *testing.T) {
	b := newTestBackend(t, "s1", func(w *rawWriter, r *http.Request, body []byte) {
		w.reply(200, "got "+string(body))
	})
	addr := startProxy(t, basicCfg+"    server s1 {s1}\n", nil, b)
	c := dial(t, addr)
	// The backend answers 100 Continue before reading the body; the body
	// is sent only after the client saw it.
	c.send(t, "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	line, err := c.br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100") {
		t.Fatalf("want 100 Continue before the body is sent, got %q %v", line, err)
	}
	c.br.ReadString('\n') // blank line
	c.send(t, "hello")
	if res, body := c.read(t, "POST"); res.StatusCode != 200 || body != "got hello" {
		t.Fatalf("after 100: %d %q", res.StatusCode, body)
	}
}

func TestBackendErrors(t *testing.T) { bothPaths(t, testBackendErrors) }

func testBackendErrors(t *testing.T) {
	b := newTestBackend(t, "s1", func(w *rawWriter, r *http.Request, body []byte) {
		switch r.URL.Path {
		case "/garbage":
			io.WriteString(w, "HTTP/1.1 2OO OK\r\n\r\n")
			w.kill = true
		case "/sleep":
			time.Sleep(1500 * time.Millisecond)
			w.reply(200, "late")
		case "/reset":
			w.kill = true
		default:
			w.reply(200, "ok")
		}
	})
	cfg := strings.Replace(basicCfg, "timeout server 5s", "timeout server 500ms", 1)
	addr := startProxy(t, cfg+"    retries 0\n    server s1 {s1}\n", nil, b)
	if got := status(rawExchange(t, addr, "GET /garbage HTTP/1.1\r\nHost: t\r\n\r\n")); got != 502 {
		t.Errorf("invalid response: %d, want 502", got)
	}
	start := time.Now()
	if got := status(rawExchange(t, addr, "GET /sleep HTTP/1.1\r\nHost: t\r\n\r\n")); got != 504 {
		t.Errorf("slow server: %d, want 504", got)
	}
	if d := time.Since(start); d < 450*time.Millisecond || d > 1400*time.Millisecond {
		t.Errorf("504 after %v, want ~500ms (timeout server)", d)
	}
	if got := status(rawExchange(t, addr, "GET /reset HTTP/1.1\r\nHost: t\r\n\r\n")); got != 502 {
		t.Errorf("server closed without response: %d, want 502", got)
	}

	// A server that refuses connections: 503.
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()
	addr2 := startProxy(t, strings.ReplaceAll(basicCfg, "{x}", "")+"    retries 0\n    server dead "+deadAddr+"\n", nil)
	out := rawExchange(t, addr2, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
	if status(out) != 503 || !strings.Contains(out, "No server is available") {
		t.Errorf("refused: %q", out)
	}
}

// Checklist 19: a refused connection is retried, the last retry goes to
// another server, the client gets 200.
func TestRetryRedispatch(t *testing.T) { bothPaths(t, testRetryRedispatch) }

func testRetryRedispatch(t *testing.T) {
	good := newTestBackend(t, "good", nil)
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()
	addr := startProxy(t, basicCfg+`    balance first
    retries 1
    option redispatch
    server dead `+deadAddr+`
    server good {good}
`, nil, good)
	res, body := dial(t, addr).get(t, "/")
	if res.StatusCode != 200 || body != "hello from good\n" {
		t.Fatalf("redispatch: %d %q", res.StatusCode, body)
	}
}

// Checklist 20: a server that resets after receiving a POST gives 502 and
// the POST is not replayed; the same fault on a GET is retried once.
func TestNoReplayOfPost(t *testing.T) { bothPaths(t, testNoReplayOfPost) }

func testNoReplayOfPost(t *testing.T) {
	var mu sync.Mutex
	counts := map[string]int{}
	b := newTestBackend(t, "s1", func(w *rawWriter, r *http.Request, body []byte) {
		mu.Lock()
		counts[r.Method]++
		n := counts[r.Method]
		mu.Unlock()
		if n == 1 {
			w.c.(*net.TCPConn).SetLinger(0)
			w.kill = true
			return
		}
		w.reply(200, "second try")
	})
	addr := startProxy(t, basicCfg+"    retries 3\n    server s1 {s1}\n", nil, b)
	if got := status(rawExchange(t, addr, "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi")); got != 502 {
		t.Errorf("POST reset: %d, want 502", got)
	}
	res, body := dial(t, addr).get(t, "/")
	if res.StatusCode != 200 || body != "second try" {
		t.Errorf("GET reset: %d %q, want a retried 200", res.StatusCode, body)
	}
	mu.Lock()
	defer mu.Unlock()
	if counts["POST"] != 1 || counts["GET"] != 2 {
		t.Errorf("backend saw %v; want POST once, GET twice", counts)
	}
}

// Checklist 15: a non-2xx answer that did not read the body leaves a
// connection that must not be pooled.
func TestEarlyResponseNotPooled(t *testing.T) { bothPaths(t, testEarlyResponseNotPooled) }

func testEarlyResponseNotPooled(t *testing.T) {
	// A raw backend that answers 413 without reading the body.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	var accepted sync.WaitGroup
	conns := 0
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns++
			mu.Unlock()
			accepted.Add(1)
			go func() {
				defer accepted.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					if req.ContentLength > 0 {
						io.WriteString(c, "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n")
						io.Copy(io.Discard, br) // keep the socket open, read nothing more as HTTP
						return
					}
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
			}()
		}
	}()
	addr := startProxy(t, basicCfg+"    server raw "+ln.Addr().String()+"\n", nil)
	c := dial(t, addr)
	c.send(t, "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\nxxxx")
	res, _ := c.read(t, "POST")
	if res.StatusCode != 413 || !res.Close {
		t.Fatalf("early 413: status %d close=%v", res.StatusCode, res.Close)
	}
	// The next request must use a new upstream connection.
	if _, body := dial(t, addr).get(t, "/"); body != "ok" {
		t.Fatalf("next request: %q", body)
	}
	mu.Lock()
	defer mu.Unlock()
	if conns != 2 {
		t.Fatalf("upstream connections = %d, want 2 (the 413 one not reused)", conns)
	}
}

func TestACLRoutingSeed(t *testing.T) {
	web1 := newTestBackend(t, "web1", nil)
	web2 := newTestBackend(t, "web2", nil)
	ws1 := newTestBackend(t, "ws1", nil)
	cfg := `
defaults
    mode http
    timeout connect 5000
    timeout client 10000
    timeout server 10000
    timeout tunnel 3600s
frontend public
    bind 127.0.0.1:0
    acl is_websocket path_beg -i /websockets
    use_backend ws if is_websocket
    default_backend servers
backend servers
    server web1 {web1} maxconn 32
    server web2 {web2} maxconn 32
backend ws
    server ws1 {ws1} maxconn 1000
`
	addr := startProxy(t, cfg, nil, web1, web2, ws1)
	c := dial(t, addr)
	for path, want := range map[string]string{"/": "web", "/WebSockets/chat": "ws1", "/websockets": "ws1", "/api/websockets": "web"} {
		res, _ := c.get(t, path)
		if got := res.Header.Get("X-Server"); !strings.HasPrefix(got, want) {
			t.Errorf("%s went to %q, want %s*", path, got, want)
		}
	}
}

func TestAccessLog(t *testing.T) { bothPaths(t, testAccessLog) }

func testAccessLog(t *testing.T) {
	b := newTestBackend(t, "s1", nil)
	var logBuf syncBuffer
	cfg := strings.Replace(basicCfg, "frontend fe", "frontend fe\n    log global\n    option httplog", 1)
	addr := startProxy(t, cfg+"    server s1 {s1}\n", &logBuf, b)
	c := dial(t, addr)
	c.get(t, "/logged?x=1")
	re := regexp.MustCompile(`^127\.0\.0\.1:\d+ \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d\.\d{3}\] fe be/s1 \d+/\d+/\d+/\d+/\d+ 200 \d+ - - ---- \d+/\d+/\d+/\d+/0 0/0 "GET /logged\?x=1 HTTP/1\.1"$`)
	deadline := time.Now().Add(3 * time.Second)
	for {
		line := strings.TrimSpace(logBuf.String())
		if re.MatchString(line) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("access log line %q does not match httplog format", line)
		}
		time.Sleep(20 * time.Millisecond) // the log flushes every 100 ms
	}
}

// The server-side maxconn is never exceeded, measured at the backend.
func TestServerMaxConn(t *testing.T) { bothPaths(t, testServerMaxConn) }

func testServerMaxConn(t *testing.T) {
	b := newTestBackend(t, "s1", func(w *rawWriter, r *http.Request, body []byte) {
		time.Sleep(20 * time.Millisecond)
		w.reply(200, "ok")
	})
	addr := startProxy(t, basicCfg+"    timeout queue 10s\n    server s1 {s1} maxconn 4\n", nil, b)
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
			res, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				errs <- err
				return
			}
			if res.StatusCode != 200 {
				errs <- fmt.Errorf("status %d", res.StatusCode)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if p := b.peak.Load(); p > 4 || p < 2 {
		t.Fatalf("peak concurrency at the backend %d, want 2..4 (maxconn 4)", p)
	}
}

// An idle keep-alive connection is closed after timeout http-keep-alive.
func TestKeepAliveTimeout(t *testing.T) { bothPaths(t, testKeepAliveTimeout) }

func testKeepAliveTimeout(t *testing.T) {
	b := newTestBackend(t, "s1", nil)
	cfg := strings.Replace(basicCfg, "timeout client 5s", "timeout client 5s\n    timeout http-keep-alive 300ms", 1)
	addr := startProxy(t, cfg+"    server s1 {s1}\n", nil, b)
	c := dial(t, addr)
	for i := 0; i < 3; i++ { // the first request opens the server connection, the others reuse it
		c.get(t, "/")
	}
	start := time.Now()
	c.c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.br.ReadByte(); err != io.EOF {
		t.Fatalf("idle connection: read %v, want EOF from the proxy closing it", err)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 1500*time.Millisecond {
		t.Fatalf("closed after %v, want ~300ms", d)
	}
}

// A graceful stop lets the request in flight finish, closes idle
// connections and stops accepting.
func TestGracefulStop(t *testing.T) { bothPaths(t, testGracefulStop) }

func testGracefulStop(t *testing.T) {
	release := make(chan struct{})
	b := newTestBackend(t, "s1", func(w *rawWriter, r *http.Request, body []byte) {
		if r.URL.Path == "/slow" {
			<-release
		}
		w.reply(200, "done")
	})
	addr, cancel, served := serveStoppable(t, basicCfg+"    server s1 "+b.addr()+"\n", 5*time.Second)

	idle := dial(t, addr)
	idle.get(t, "/")
	busy := dial(t, addr)
	busy.send(t, "GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
	for b.inflight.Load() != 1 {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	// The idle connection is closed at once.
	idle.c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := idle.br.ReadByte(); err != io.EOF {
		t.Fatalf("idle connection during stop: %v, want EOF", err)
	}
	// New connections are refused once the listener is closed.
	deadline := time.Now().Add(2 * time.Second)
	for {
		nc, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			break
		}
		nc.Close()
		if time.Now().After(deadline) {
			t.Fatal("still accepting after stop")
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(release)
	res, body := busy.read(t, "GET")
	if res.StatusCode != 200 || body != "done" || !res.Close {
		t.Fatalf("in-flight request during stop: %d %q close=%v", res.StatusCode, body, res.Close)
	}
	select {
	case <-served:
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
}

// A listen section is a frontend and a backend in one; with
// http-server-close every request gets its own server connection.
func TestListenServerClose(t *testing.T) { bothPaths(t, testListenServerClose) }

func testListenServerClose(t *testing.T) {
	b := newTestBackend(t, "s1", nil)
	addr := startProxy(t, `
defaults
    mode http
    timeout connect 2s
    timeout client 5s
    timeout server 5s
listen web
    bind 127.0.0.1:0
    option http-server-close
    server s1 {s1}
`, nil, b)
	c := dial(t, addr)
	for i := 0; i < 3; i++ {
		if res, body := c.get(t, "/"); res.StatusCode != 200 || body != "hello from s1\n" || res.Close {
			t.Fatalf("request %d: %d %q close=%v", i, res.StatusCode, body, res.Close)
		}
	}
	if n := b.conns.Load(); n != 3 {
		t.Fatalf("server connections = %d, want 3 (http-server-close)", n)
	}
}

// http-request deny answers before any routing; the server never sees it.
func TestHTTPRequestDeny(t *testing.T) { bothPaths(t, testHTTPRequestDeny) }

func testHTTPRequestDeny(t *testing.T) {
	b := newTestBackend(t, "s1", nil)
	cfg := strings.Replace(basicCfg, "frontend fe", `frontend fe
    acl admin path_beg /admin
    http-request deny if admin
    http-request deny deny_status 429 if { hdr(x-flood) -m found }`, 1)
	addr := startProxy(t, cfg+"    server s1 {s1}\n", nil, b)
	if st := status(rawExchange(t, addr, "GET /admin/x HTTP/1.1\r\nHost: t\r\n\r\n")); st != 403 {
		t.Fatalf("denied path: %d, want 403", st)
	}
	if st := status(rawExchange(t, addr, "GET / HTTP/1.1\r\nHost: t\r\nX-Flood: 1\r\n\r\n")); st != 429 {
		t.Fatalf("deny_status 429: %d", st)
	}
	if b.conns.Load() != 0 {
		t.Fatalf("a denied request reached the server")
	}
	if res, _ := dial(t, addr).get(t, "/ok"); res.StatusCode != 200 {
		t.Fatalf("allowed request: %d", res.StatusCode)
	}
}

// A client that shuts down its sending side right after its request still
// gets the response.
func TestClientHalfClose(t *testing.T) { bothPaths(t, testClientHalfClose) }

func testClientHalfClose(t *testing.T) {
	b := newTestBackend(t, "s1", nil)
	addr := startProxy(t, basicCfg+"    server s1 {s1}\n", nil, b)
	for i := 0; i < 3; i++ { // the later ones take the fast path on a pooled connection
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
		c.(*net.TCPConn).CloseWrite()
		out, _ := io.ReadAll(c)
		c.Close()
		if status(string(out)) != 200 || !strings.HasSuffix(string(out), "hello from s1\n") {
			t.Fatalf("request %d after half-close: %q", i, out)
		}
	}
}

// stats uri answers the stats page (HTML, or CSV with ;csv) in the
// frontend; the server never sees those requests.
func TestStatsURI(t *testing.T) { bothPaths(t, testStatsURI) }

func testStatsURI(t *testing.T) {
	b := newTestBackend(t, "s1", nil)
	beforeServe = func(p *Proxy) {
		p.StatsPage = func(csv bool, refresh time.Duration) ([]byte, string, error) {
			if csv {
				return []byte("# pxname,svname\n"), "text/csv", nil
			}
			return []byte("<html>stats refresh=" + refresh.String() + "</html>"), "text/html", nil
		}
	}
	defer func() { beforeServe = nil }()
	cfg := strings.Replace(basicCfg, "frontend fe", "frontend fe\n    stats uri /stats\n    stats refresh 5s", 1)
	addr := startProxy(t, cfg+"    server s1 {s1}\n", nil, b)
	c := dial(t, addr)
	res, body := c.get(t, "/stats")
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/html" || body != "<html>stats refresh=5s</html>" {
		t.Fatalf("stats page: %d %s %q", res.StatusCode, res.Header.Get("Content-Type"), body)
	}
	if res, body := c.get(t, "/stats;csv"); res.Header.Get("Content-Type") != "text/csv" || !strings.HasPrefix(body, "# pxname") {
		t.Fatalf("stats csv: %s %q", res.Header.Get("Content-Type"), body)
	}
	if res, body := c.get(t, "/app"); res.StatusCode != 200 || body != "hello from s1\n" {
		t.Fatalf("other paths still reach the server: %d %q", res.StatusCode, body)
	}
	if n := b.requests.Load(); n != 1 {
		t.Fatalf("server saw %d requests, want only /app", n)
	}
}

// Checklist 18: a request body that stalls, and a client that never reads
// its (large) response, are both cut off after timeout client.
func TestSlowClientTimeouts(t *testing.T) { bothPaths(t, testSlowClientTimeouts) }

func testSlowClientTimeouts(t *testing.T) {
	b := newTestBackend(t, "s1", func(w *rawWriter, r *http.Request, body []byte) {
		if r.URL.Path == "/huge" {
			w.reply(200, strings.Repeat("z", 32<<20))
			return
		}
		w.reply(200, "ok")
	})
	cfg := strings.Replace(basicCfg, "timeout client 5s", "timeout client 400ms", 1)
	addr := startProxy(t, cfg+"    server s1 {s1}\n", nil, b)

	// A body that stops halfway.
	c := dial(t, addr)
	c.send(t, "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\nhalf")
	start := time.Now()
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	io.ReadAll(c.br) // until the proxy closes
	if d := time.Since(start); d < 350*time.Millisecond || d > 3*time.Second {
		t.Fatalf("stalled body: connection closed after %v, want ~400ms", d)
	}

	// A client that never reads a 32 MiB response: its window fills and
	// the proxy gives up after timeout client instead of holding on.
	r, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.(*net.TCPConn).SetReadBuffer(4096)
	io.WriteString(r, "GET /huge HTTP/1.1\r\nHost: t\r\n\r\n")
	start = time.Now()
	v, _ := running.Load(addr)
	p := v.(*Proxy)
	waitFor(t, func() bool { return b.requests.Load() == 1 }) // the response is on its way
	waitFor(t, func() bool { return p.actconn.Load() == 0 })
	if d := time.Since(start); d < 350*time.Millisecond || d > 4*time.Second {
		t.Fatalf("non-reading client closed after %v, want ~400ms (timeout client)", d)
	}
}

// Sessions (show sess) lists the client connections being served.
func TestSessionsList(t *testing.T) { bothPaths(t, testSessionsList) }

func testSessionsList(t *testing.T) {
	b := newTestBackend(t, "s1", nil)
	addr := startProxy(t, basicCfg+"    server s1 {s1}\n", nil, b)
	c := dial(t, addr)
	c.get(t, "/")
	v, _ := running.Load(addr)
	ss := v.(*Proxy).Sessions()
	if len(ss) != 1 || ss[0].Frontend != "fe" || ss[0].Src != c.c.LocalAddr().String() {
		t.Fatalf("sessions %+v, want the one client on fe", ss)
	}
}

// option forwardfor except NET: clients in NET get no X-Forwarded-For.
func TestForwardForExcept(t *testing.T) {
	b := newTestBackend(t, "s1", nil)
	cfg := strings.Replace(basicCfg, "frontend fe", "frontend fe\n    option forwardfor except 127.0.0.0/8", 1)
	addr := startProxy(t, cfg+"    server s1 {s1}\n", nil, b)
	dial(t, addr).get(t, "/")
	if xff := b.last().Header.Values("X-Forwarded-For"); len(xff) != 0 {
		t.Fatalf("X-Forwarded-For %q for an excepted client", xff)
	}
}

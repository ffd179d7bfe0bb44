package proxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicelb/sluice/pkg/config"
)

// testBackend is an HTTP/1.1 server that records what reaches it: every
// connection, every request (with its body), and the peak number of requests
// in progress at once.
type testBackend struct {
	t       testing.TB
	ln      net.Listener
	name    string
	handler func(w *rawWriter, r *http.Request, body []byte)

	conns    atomic.Int64
	requests atomic.Int64
	inflight atomic.Int64
	peak     atomic.Int64

	mu   sync.Mutex
	seen []seenRequest
	wg   sync.WaitGroup
}

type seenRequest struct {
	Method, URI, Proto string
	Header             http.Header
	Body               []byte
	Remote             string
}

// rawWriter lets a handler write a response byte for byte, or abuse the
// connection.
type rawWriter struct {
	c    net.Conn
	bw   *bufio.Writer
	kill bool // close the connection after the handler
}

func (w *rawWriter) Write(p []byte) (int, error) { return w.bw.Write(p) }

// reply writes a complete response with a Content-Length body.
func (w *rawWriter) reply(status int, body string, headers ...string) {
	fmt.Fprintf(w.bw, "HTTP/1.1 %d %s\r\nContent-Length: %d\r\n", status, http.StatusText(status), len(body))
	for _, h := range headers {
		fmt.Fprintf(w.bw, "%s\r\n", h)
	}
	fmt.Fprintf(w.bw, "\r\n%s", body)
}

func newTestBackend(t testing.TB, name string, h func(w *rawWriter, r *http.Request, body []byte)) *testBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if h == nil {
		h = func(w *rawWriter, r *http.Request, body []byte) {
			w.reply(200, "hello from "+name+"\n", "X-Server: "+name)
		}
	}
	b := &testBackend{t: t, ln: ln, name: name, handler: h}
	b.wg.Add(1)
	go b.serve()
	t.Cleanup(b.close)
	return b
}

func (b *testBackend) addr() string { return b.ln.Addr().String() }

func (b *testBackend) close() {
	b.ln.Close()
	b.wg.Wait()
}

func (b *testBackend) serve() {
	defer b.wg.Done()
	var conns sync.WaitGroup
	var mu sync.Mutex
	open := map[net.Conn]bool{}
	defer func() {
		mu.Lock()
		for c := range open {
			c.Close()
		}
		mu.Unlock()
		conns.Wait()
	}()
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.conns.Add(1)
		mu.Lock()
		open[c] = true
		mu.Unlock()
		conns.Add(1)
		go func() {
			defer conns.Done()
			b.serveConn(c)
			mu.Lock()
			delete(open, c)
			mu.Unlock()
		}()
	}
}

func (b *testBackend) serveConn(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if strings.EqualFold(req.Header.Get("Expect"), "100-continue") {
			io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n")
		}
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return
		}
		n := b.inflight.Add(1)
		for {
			p := b.peak.Load()
			if n <= p || b.peak.CompareAndSwap(p, n) {
				break
			}
		}
		b.requests.Add(1)
		b.mu.Lock()
		b.seen = append(b.seen, seenRequest{req.Method, req.RequestURI, req.Proto, req.Header, body, c.RemoteAddr().String()})
		b.mu.Unlock()
		w := &rawWriter{c: c, bw: bufio.NewWriter(c)}
		b.handler(w, req, body)
		b.inflight.Add(-1)
		if w.bw.Flush() != nil || w.kill || req.Close {
			return
		}
	}
}

func (b *testBackend) last() seenRequest {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.seen) == 0 {
		b.t.Fatalf("backend %s saw no request", b.name)
	}
	return b.seen[len(b.seen)-1]
}

// startProxy runs sluice with cfg, where each {NAME} is replaced by the
// address of the backend NAME. Frontends bind 127.0.0.1:0; the address of
// the first frontend is returned. The access log goes to logBuf if not nil.
func startProxy(t testing.TB, cfg string, logBuf io.Writer, backends ...*testBackend) string {
	t.Helper()
	for _, b := range backends {
		cfg = strings.ReplaceAll(cfg, "{"+b.name+"}", b.addr())
	}
	c, err := config.Parse("test.cfg", []byte(cfg))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	for _, w := range c.Warnings {
		// A keyword in the wrong section is a mistake in the test's
		// configuration (it would silently test something else).
		if strings.Contains(w.Msg, "not allowed in") {
			t.Fatalf("test configuration: %v", w)
		}
	}
	p, err := New(c, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("proxy: %v", err)
	}
	p.Loops = testLoops
	if beforeServe != nil {
		beforeServe(p)
	}
	if err := p.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		p.Serve(ctx, logBuf, 5*time.Second)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	addr := p.Addrs(c.Frontends[0].Name)[0].String()
	running.Store(addr, p)
	t.Cleanup(func() { running.Delete(addr) })
	return addr
}

// running maps the address startProxy returned to its proxy.
var running sync.Map

// queued returns how many requests wait in the queues of the proxy at addr.
func queued(addr string) int64 {
	v, ok := running.Load(addr)
	if !ok {
		return -1
	}
	var n int64
	for _, be := range v.(*Proxy).g().backends {
		n += be.q.QueueCur.Load()
		for _, s := range be.servers {
			n += s.q.QueueCur.Load()
		}
	}
	return n
}

// syncBuffer is a bytes.Buffer safe for the access log's flusher.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// rawExchange sends raw bytes on a new connection and returns everything the
// proxy answers until it closes the connection (bounded by 5 s).
func rawExchange(t testing.TB, addr, raw string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(c)
	return string(out)
}

// status returns the status code of the first response in raw.
func status(raw string) int {
	var code int
	fmt.Sscanf(raw, "HTTP/1.1 %d", &code)
	return code
}

// client is a keep-alive HTTP/1.1 client on one connection.
type client struct {
	c  net.Conn
	br *bufio.Reader
}

func dial(t testing.TB, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return &client{c: c, br: bufio.NewReader(c)}
}

func (c *client) send(t testing.TB, raw string) {
	t.Helper()
	if _, err := io.WriteString(c.c, raw); err != nil {
		t.Fatal(err)
	}
}

func (c *client) read(t testing.TB, method string) (*http.Response, string) {
	t.Helper()
	res, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return res, string(body)
}

func (c *client) get(t testing.TB, path string) (*http.Response, string) {
	t.Helper()
	c.send(t, "GET "+path+" HTTP/1.1\r\nHost: test\r\n\r\n")
	return c.read(t, "GET")
}

const basicCfg = `
defaults
    mode http
    timeout connect 2s
    timeout client 5s
    timeout server 5s
frontend fe
    bind 127.0.0.1:0
    default_backend be
backend be
`

// testLoops is the number of event loops startProxy gives the proxy; bothPaths
// runs a test with loops and with a goroutine per connection.
var testLoops = defaultLoops()

func bothPaths(t *testing.T, f func(t *testing.T)) {
	modes := []struct {
		name  string
		loops int
	}{{"loops", defaultLoops()}, {"goroutines", 0}}
	for _, m := range modes {
		if m.loops == 0 && m.name == "loops" {
			continue // no event loops on this OS
		}
		t.Run(m.name, func(t *testing.T) {
			old := testLoops
			testLoops = m.loops
			defer func() { testLoops = old }()
			f(t)
		})
	}
}

func configParse(text string) (*config.Config, error) { return config.Parse("test.cfg", []byte(text)) }

// beforeServe, when set, adjusts the proxy startProxy builds (hooks such as
// the stats page renderer).
var beforeServe func(*Proxy)

func newReader(c net.Conn) *bufio.Reader { return bufio.NewReader(c) }

// tryRead is read without failing the test (for goroutines).
func (c *client) tryRead(method string) (*http.Response, string, error) {
	res, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		return nil, "", err
	}
	body, err := io.ReadAll(res.Body)
	return res, string(body), err
}

// serveStoppable runs a proxy for cfg with the given grace period and
// returns its first frontend's address, a stop function (the graceful stop
// a signal starts) and a channel closed when Serve has returned.
func serveStoppable(t testing.TB, cfg string, grace time.Duration) (addr string, stop func(), served chan struct{}) {
	t.Helper()
	c, err := configParse(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.Loops = testLoops
	if err := p.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served = make(chan struct{})
	go func() { p.Serve(ctx, nil, grace); close(served) }()
	t.Cleanup(func() { cancel(); <-served })
	return p.Addrs(c.Frontends[0].Name)[0].String(), cancel, served
}

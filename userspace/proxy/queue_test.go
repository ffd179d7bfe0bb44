package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicelb/sluice/userspace/queue"
)

// oneRequest sends a GET on a new connection and returns the status (0 on a
// transport error).
func oneRequest(addr, path string, timeout time.Duration) (int, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: t\r\n\r\n"); err != nil {
		return 0, err
	}
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, res.Body)
	return res.StatusCode, nil
}

func slowBackend(t *testing.T, name string, d time.Duration) *testBackend {
	return newTestBackend(t, name, func(w *rawWriter, r *http.Request, body []byte) {
		time.Sleep(d)
		w.reply(200, "ok")
	})
}

// The seed's shape: three servers with maxconn 32 and 500 concurrent slow
// requests. Every request succeeds, no server ever sees more than 32 at
// once, and the whole takes at least what the capacity allows.
func TestSeedShapeQueueing(t *testing.T) { bothPaths(t, testSeedShapeQueueing) }

func testSeedShapeQueueing(t *testing.T) {
	const perReq = 50 * time.Millisecond
	web := []*testBackend{slowBackend(t, "web1", perReq), slowBackend(t, "web2", perReq), slowBackend(t, "web3", perReq)}
	addr := startProxy(t, `
global
    maxconn 1000
defaults
    mode http
    retries 3
    option redispatch
    timeout connect 5000
    timeout client 10000
    timeout server 10000
frontend httptraffic
    bind 127.0.0.1:0
    default_backend servers
backend servers
    server web1 {web1} maxconn 32
    server web2 {web2} maxconn 32
    server web3 {web3} maxconn 32
`, nil, web...)
	const n = 500
	start := time.Now()
	var wg sync.WaitGroup
	var ok, bad atomic.Int64
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if st, err := oneRequest(addr, "/", 20*time.Second); st == 200 {
				ok.Add(1)
			} else {
				bad.Add(1)
				t.Logf("status %d err %v", st, err)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if ok.Load() != n {
		t.Fatalf("%d of %d requests got 200 (%d failed)", ok.Load(), n, bad.Load())
	}
	for _, b := range web {
		if p := b.peak.Load(); p > 32 {
			t.Errorf("%s saw %d concurrent requests, maxconn is 32", b.name, p)
		}
	}
	if min := n * perReq / 96; elapsed < min {
		t.Errorf("500 requests took %v, less than capacity allows (%v): maxconn not enforced", elapsed, min)
	}
	total := web[0].requests.Load() + web[1].requests.Load() + web[2].requests.Load()
	if total != n {
		t.Errorf("servers saw %d requests, want %d", total, n)
	}
}

// Checklist 22: maxconn 1 maxqueue 1 and three concurrent requests for the
// same server (balance uri): one served, one queued, the third loses its
// server (HAProxy's maxqueue) and is served by the other one at once.
func TestMaxQueueRedirects(t *testing.T) { bothPaths(t, testMaxQueueRedirects) }

func testMaxQueueRedirects(t *testing.T) {
	release := make(chan struct{})
	hold := func(w *rawWriter, r *http.Request, body []byte) {
		<-release
		w.reply(200, "ok")
	}
	a := newTestBackend(t, "a", hold)
	b := newTestBackend(t, "b", hold)
	addr := startProxy(t, basicCfg+`    balance uri
    timeout queue 10s
    server a {a} maxconn 1 maxqueue 1
    server b {b} maxconn 1 maxqueue 1
`, nil, a, b)
	// A URI that hashes to a (weights 1:1: even hashes go to the first).
	path := ""
	for i := 0; path == ""; i++ {
		if p := fmt.Sprintf("/k%d", i); hashBytes([]byte(p))%2 == 0 {
			path = p
		}
	}
	results := make(chan int, 3)
	go func() { st, _ := oneRequest(addr, path, 10*time.Second); results <- st }()
	waitFor(t, func() bool { return a.inflight.Load() == 1 })
	go func() { st, _ := oneRequest(addr, path, 10*time.Second); results <- st }()
	waitFor(t, func() bool { return queued(addr) == 1 })
	go func() { st, _ := oneRequest(addr, path, 10*time.Second); results <- st }()
	waitFor(t, func() bool { return b.inflight.Load() == 1 })
	close(release)
	for i := 0; i < 3; i++ {
		if st := <-results; st != 200 {
			t.Fatalf("status %d", st)
		}
	}
	if a.requests.Load() < 2 || b.requests.Load() != 1 {
		t.Fatalf("a served %d, b served %d; want the queued one on a and the third on b", a.requests.Load(), b.requests.Load())
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 5s")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// timeout queue 200ms, one server with maxconn 1, ten concurrent 100 ms
// requests: those that get the slot within 200 ms succeed, the others get
// 503, and none gets anything else.
func TestQueueTimeout503(t *testing.T) { bothPaths(t, testQueueTimeout503) }

func testQueueTimeout503(t *testing.T) {
	b := slowBackend(t, "s1", 100*time.Millisecond)
	addr := startProxy(t, basicCfg+"    timeout queue 200ms\n    server s1 {s1} maxconn 1\n", nil, b)
	var wg sync.WaitGroup
	var mu sync.Mutex
	counts := map[int]int{}
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, _ := oneRequest(addr, "/", 5*time.Second)
			mu.Lock()
			counts[st]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if counts[200] < 2 || counts[200] > 3 || counts[200]+counts[503] != 10 {
		t.Fatalf("statuses %v: want 2 or 3 × 200 (100 ms each within a 200 ms queue timeout) and the rest 503", counts)
	}
	if p := b.peak.Load(); p != 1 {
		t.Fatalf("peak %d at a maxconn 1 server", p)
	}
}

// A client that disconnects while its request is queued: the request
// leaves the queue at once and never reaches the server.
func TestClientGoneWhileQueued(t *testing.T) { bothPaths(t, testClientGoneWhileQueued) }

func testClientGoneWhileQueued(t *testing.T) {
	release := make(chan struct{})
	b := newTestBackend(t, "s1", func(w *rawWriter, r *http.Request, body []byte) {
		<-release
		w.reply(200, "ok")
	})
	var logBuf syncBuffer
	cfg := strings.Replace(basicCfg, "frontend fe", "frontend fe\n    log global\n    option httplog", 1)
	addr := startProxy(t, cfg+"    timeout queue 30s\n    server s1 {s1} maxconn 1\n", &logBuf, b)
	first := make(chan int)
	go func() { st, _ := oneRequest(addr, "/first", 10*time.Second); first <- st }()
	waitFor(t, func() bool { return b.inflight.Load() == 1 })

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET /queued HTTP/1.1\r\nHost: t\r\n\r\n")
	waitFor(t, func() bool { return queued(addr) == 1 })
	c.Close()
	// It leaves the queue while the slot is still taken.
	waitFor(t, func() bool { return queued(addr) == 0 })
	close(release)
	if st := <-first; st != 200 {
		t.Fatalf("first request: %d", st)
	}
	// Another request goes through: the queued one is not in its way.
	if st, _ := oneRequest(addr, "/after", 5*time.Second); st != 200 {
		t.Fatalf("request after: %d", st)
	}
	if n := b.requests.Load(); n != 2 {
		t.Fatalf("server saw %d requests, want 2 (/first and /after, never /queued)", n)
	}
	for _, seen := range b.seen {
		if seen.URI == "/queued" {
			t.Fatal("the abandoned request reached the server")
		}
	}
	waitFor(t, func() bool { return strings.Contains(logBuf.String(), " CQ-- ") })
}

// Overload: ten times the capacity for a while. Every request is answered,
// 200 or 503, none hangs and none is lost.
func TestOverload(t *testing.T) {
	if testing.Short() {
		t.Skip("overload runs for seconds; skipped with -short")
	}
	bothPaths(t, testOverload)
}

func testOverload(t *testing.T) {
	// Capacity: 4 slots × (1 / 20 ms) = 200 req/s; 40 clients keep ten
	// times that many requests in flight.
	b := slowBackend(t, "s1", 20*time.Millisecond)
	addr := startProxy(t, basicCfg+"    timeout queue 100ms\n    server s1 {s1} maxconn 4\n", nil, b)
	// 30 s as the queueing issue asks on the default path (event loops),
	// 5 s on the other.
	dur := 5 * time.Second
	if testLoops > 0 {
		dur = 30 * time.Second
	}
	var sent, ok, unavailable, other atomic.Int64
	stop := time.Now().Add(dur)
	var wg sync.WaitGroup
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				sent.Add(1)
				st, err := oneRequest(addr, "/", 5*time.Second)
				switch {
				case st == 200:
					ok.Add(1)
				case st == 503:
					unavailable.Add(1)
				default:
					other.Add(1)
					t.Errorf("status %d, err %v", st, err)
				}
			}
		}()
	}
	wg.Wait()
	if ok.Load()+unavailable.Load() != sent.Load() || other.Load() != 0 {
		t.Fatalf("sent %d: %d × 200, %d × 503, %d other", sent.Load(), ok.Load(), unavailable.Load(), other.Load())
	}
	if ok.Load() == 0 || unavailable.Load() == 0 {
		t.Fatalf("sent %d: %d × 200, %d × 503; overload should give both", sent.Load(), ok.Load(), unavailable.Load())
	}
	if p := b.peak.Load(); p > 4 {
		t.Fatalf("peak %d at a maxconn 4 server", p)
	}
	t.Logf("%v of overload: %d requests, %d × 200, %d × 503", dur, sent.Load(), ok.Load(), unavailable.Load())
}

// global maxconn bounds client connections across frontends: the excess
// waits in the listen backlog and is served when a connection closes.
func TestGlobalMaxConn(t *testing.T) { bothPaths(t, testGlobalMaxConn) }

func testGlobalMaxConn(t *testing.T) {
	b := newTestBackend(t, "s1", nil)
	addr := startProxy(t, "global\n    maxconn 2\n"+basicCfg+"    server s1 {s1}\n", nil, b)
	c1, c2 := dial(t, addr), dial(t, addr)
	c1.get(t, "/")
	c2.get(t, "/")
	c3 := dial(t, addr) // connects (kernel backlog) but is not accepted
	c3.send(t, "GET /third HTTP/1.1\r\nHost: t\r\n\r\n")
	c3.c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := c3.br.ReadByte(); err == nil {
		t.Fatal("a third connection was served with global maxconn 2")
	}
	c1.c.Close()
	c3.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if res, _ := c3.read(t, "GET"); res.StatusCode != 200 {
		t.Fatalf("third connection after a slot freed: %d", res.StatusCode)
	}
}

// A server put into maintenance while requests wait in its queue: with
// option redispatch they are served by another server at once; without,
// they wait for it and get 503 when timeout queue expires.
func TestServerMaintWhileQueued(t *testing.T) { bothPaths(t, testServerMaintWhileQueued) }

func testServerMaintWhileQueued(t *testing.T) {
	for _, redispatch := range []bool{true, false} {
		t.Run(fmt.Sprintf("redispatch=%v", redispatch), func(t *testing.T) {
			releaseA, releaseB := make(chan struct{}), make(chan struct{})
			hold := func(release chan struct{}) func(w *rawWriter, r *http.Request, body []byte) {
				return func(w *rawWriter, r *http.Request, body []byte) {
					if r.URL.RawQuery != "q" { // the queued request is answered at once
						<-release
					}
					w.reply(200, "ok")
				}
			}
			a := newTestBackend(t, "a", hold(releaseA))
			b := newTestBackend(t, "b", hold(releaseB))
			opt := ""
			if redispatch {
				opt = "    option redispatch\n"
			}
			addr := startProxy(t, basicCfg+opt+`    balance uri
    timeout queue 500ms
    server a {a} maxconn 1
    server b {b} maxconn 1
`, nil, a, b)
			pathFor := func(even bool) string {
				for i := 0; ; i++ {
					p := fmt.Sprintf("/k%d", i)
					if (hashBytes([]byte(p))%2 == 0) == even {
						return p
					}
				}
			}
			onA, onB := pathFor(true), pathFor(false)
			done := make(chan int, 3)
			go func() { st, _ := oneRequest(addr, onA, 10*time.Second); done <- st }()
			go func() { st, _ := oneRequest(addr, onB, 10*time.Second); done <- st }()
			waitFor(t, func() bool { return a.inflight.Load() == 1 && b.inflight.Load() == 1 })
			queuedReq := make(chan int, 1)
			go func() { st, _ := oneRequest(addr, onA+"?q", 10*time.Second); queuedReq <- st }()
			waitFor(t, func() bool { return queued(addr) == 1 })
			v, _ := running.Load(addr)
			if err := v.(*Proxy).SetServerState("be", "a", queue.StateMaint); err != nil {
				t.Fatal(err)
			}
			// A slot frees on b: with redispatch the queued request takes it.
			close(releaseB)
			st := <-queuedReq
			close(releaseA)
			if redispatch && st != 200 {
				t.Fatalf("queued request with redispatch: %d, want 200 from b", st)
			}
			if !redispatch && st != 503 {
				t.Fatalf("queued request without redispatch: %d, want 503 after timeout queue", st)
			}
			<-done
			<-done
		})
	}
}

// The watch for a client leaving while queued reads nothing: a request
// pipelined behind the queued one is still there, and answered in order,
// once a slot frees.
func TestQueuedWatchKeepsPipelinedRequests(t *testing.T) { bothPaths(t, testQueuedWatchKeepsPipelined) }

func testQueuedWatchKeepsPipelined(t *testing.T) {
	release := make(chan struct{})
	b := newTestBackend(t, "s1", func(w *rawWriter, r *http.Request, body []byte) {
		if r.URL.Path == "/hold" {
			<-release
		}
		w.reply(200, r.URL.Path)
	})
	addr := startProxy(t, basicCfg+"    timeout queue 10s\n    server s1 {s1} maxconn 1\n", nil, b)
	held := make(chan int, 1)
	go func() { st, _ := oneRequest(addr, "/hold", 10*time.Second); held <- st }()
	waitFor(t, func() bool { return b.inflight.Load() == 1 })
	c := dial(t, addr)
	c.send(t, "GET /first HTTP/1.1\r\nHost: t\r\n\r\n")
	waitFor(t, func() bool { return queued(addr) == 1 })
	// Sent while the watch is on: it must stay in the socket for the
	// session to read after /first.
	c.send(t, "GET /second HTTP/1.1\r\nHost: t\r\n\r\n")
	time.Sleep(20 * time.Millisecond) // let the bytes reach the proxy's socket while /first is still queued
	if queued(addr) != 1 {
		t.Fatal("the queued request left the queue when more bytes came: the watch took them for a close")
	}
	close(release)
	for _, want := range []string{"/first", "/second"} {
		if res, body := c.read(t, "GET"); res.StatusCode != 200 || body != want {
			t.Fatalf("got %d %q, want %s", res.StatusCode, body, want)
		}
	}
	<-held
}

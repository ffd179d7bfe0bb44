package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicelb/sluice/scripts/bench/internal/procstat"
)

type runFlags struct {
	addr, control, label, rawLat, rawEvents, metricsURL string
	n, pid, backendPid, maxconn, fillConc, warmup       int
	mem                                                 bool
	fillTimeout, settleMax, drainTimeout                time.Duration
	direct                                              bool
}

// clientResult is what happened to one client connection's request.
type clientResult struct {
	status int
	err    error
}

func runMain(args []string) {
	var f runFlags
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	fs.StringVar(&f.addr, "addr", "", "proxy address host:port (with -direct: the backend's)")
	fs.StringVar(&f.control, "control", "", "backend control address host:port")
	fs.IntVar(&f.n, "n", 10000, "requests to queue (one client connection each)")
	fs.IntVar(&f.pid, "pid", 0, "proxy PID (descendants included): CPU use during the drain; with -mem its VmRSS")
	fs.BoolVar(&f.mem, "mem", false, "measure the proxy's VmRSS (needs -pid) before and after filling the queue")
	fs.IntVar(&f.backendPid, "backend-pid", 0, "backend PID: its CPU use during the drain (to tell the noise from other processes)")
	fs.IntVar(&f.maxconn, "maxconn", 1, "the server's maxconn in the proxy config (requests the backend should hold)")
	fs.IntVar(&f.fillConc, "fill-concurrency", 1, "client connections being opened at once while filling the queue")
	fs.IntVar(&f.warmup, "warmup", 500, "warm-up requests (10 keep-alive connections) before anything is measured")
	fs.DurationVar(&f.fillTimeout, "fill-timeout", 60*time.Second, "longest wait for the proxy to have read every request")
	fs.DurationVar(&f.settleMax, "settle", 15*time.Second, "longest wait for the RSS to stabilise (each reading)")
	fs.DurationVar(&f.drainTimeout, "drain-timeout", 60*time.Second, "longest wait for all responses after the release")
	fs.StringVar(&f.label, "label", "", "name printed in the RESULT line")
	fs.StringVar(&f.rawLat, "raw-latencies", "", "write the dispatch latencies (µs, in dispatch order) to this file")
	fs.StringVar(&f.rawEvents, "raw-events", "", "write the backend's events (seq arrive_ns done_ns conn) to this file")
	fs.StringVar(&f.metricsURL, "metrics-url", "", "the proxy's Prometheus exporter: report its own queue lengths once the queue is full")
	fs.BoolVar(&f.direct, "direct", false, "no proxy: one keep-alive connection straight to the backend sends -n requests back to back (the floor of the dispatch measurement)")
	fs.Parse(args)
	if f.addr == "" || f.control == "" || f.n <= 0 || f.maxconn <= 0 {
		fs.Usage()
		os.Exit(2)
	}
	if f.label == "" {
		f.label = f.addr
	}
	total := f.fillTimeout + 2*f.settleMax + f.drainTimeout + 30*time.Second
	go func() { // hard bound, whatever happens below
		time.Sleep(total)
		fmt.Fprintln(os.Stderr, "queuebench run: overall timeout")
		os.Exit(3)
	}()
	limit, err := procstat.RaiseNoFile()
	if err != nil {
		fatalf("raising RLIMIT_NOFILE: %v", err)
	}
	if need := uint64(f.n) + 64; limit < need {
		fatalf("RLIMIT_NOFILE hard limit %d is below the %d descriptors needed; lower -n", limit, need)
	}
	ctl := &controller{base: "http://" + f.control}
	ctl.call("/release") // in case a previous run left it holding
	if f.direct {
		runDirect(f, ctl)
	} else {
		runQueue(f, ctl)
	}
}

type controller struct{ base string }

var ctlClient = &http.Client{Timeout: 10 * time.Second}

func (c *controller) call(path string) stats {
	resp, err := ctlClient.Get(c.base + path)
	if err != nil {
		fatalf("backend control %s: %v", path, err)
	}
	defer resp.Body.Close()
	var s stats
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		fatalf("backend control %s: %v", path, err)
	}
	return s
}

func (c *controller) events() []event {
	resp, err := ctlClient.Get(c.base + "/events")
	if err != nil {
		fatalf("backend events: %v", err)
	}
	defer resp.Body.Close()
	var evs []event
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) != 4 {
			continue
		}
		var v [4]int64
		for i := range v {
			v[i], _ = strconv.ParseInt(fl[i], 10, 64)
		}
		evs = append(evs, event{seq: v[0], arrive: v[1], done: v[2], conn: v[3]})
	}
	if err := sc.Err(); err != nil {
		fatalf("backend events: %v", err)
	}
	return evs
}

// eventsWhenComplete waits (bounded) until the backend has logged every request it received: the client may read
// a response before the backend has recorded its write.
func (c *controller) eventsWhenComplete() ([]event, stats) {
	var s stats
	for i := 0; i < 40; i++ {
		s = c.call("/stats")
		if int64(s.Events) >= s.Received && s.Active == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	return c.events(), s
}

func request(addr string, seq int) []byte {
	return []byte("GET /queued HTTP/1.1\r\nHost: " + addr + "\r\nUser-Agent: sluice-queuebench\r\nX-Seq: " +
		strconv.Itoa(seq) + "\r\n\r\n")
}

// readOne reads one complete response and returns its status.
func readOne(br *bufio.Reader) (int, error) {
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, err
}

func warmup(addr string, total int) error {
	const conns = 10
	if total <= 0 {
		return nil
	}
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for w := 0; w < conns; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			br := bufio.NewReader(c)
			for i := 0; i < (total+conns-1)/conns; i++ {
				if _, err := c.Write(request(addr, -1)); err != nil {
					errs <- err
					return
				}
				st, err := readOne(br)
				if err == nil && st != 200 {
					err = fmt.Errorf("status %d", st)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs // nil if the channel is empty
}

func runQueue(f runFlags, ctl *controller) {
	_, portStr, err := net.SplitHostPort(f.addr)
	if err != nil {
		fatalf("-addr: %v", err)
	}
	port, _ := strconv.Atoi(portStr)
	if err := warmup(f.addr, f.warmup); err != nil {
		fatalf("warm-up through %s: %v", f.addr, err)
	}
	if f.metricsURL != "" { // once before the baseline, so the exporter's own allocations are not counted per request
		if q, err := proxyQueue(f.metricsURL); err != nil {
			fmt.Printf("metrics: %v\n", err)
		} else {
			fmt.Printf("proxy's own queue counters, idle: %s\n", q)
		}
	}
	ctl.call("/reset")
	ctl.call("/hold")
	fmt.Printf("%s: backend holding; queueing %d requests behind maxconn %d\n", f.label, f.n, f.maxconn)

	measureMem := f.mem && f.pid > 0
	var before procstat.Reading
	var fdBefore int
	if measureMem {
		before = settle(f.pid, f.settleMax)
		fdBefore = procstat.CountFDs(f.pid)
		fmt.Printf("before: VmRSS %d KiB (RssAnon %d KiB), %d fds, %d threads, settled=%t in %v\n",
			before.RSS, before.Anon, fdBefore, threads(f.pid), before.Stable, before.Took.Round(time.Millisecond))
	}

	// Fill: one connection per request, each sends its GET and a goroutine waits for the response.
	conns := make([]net.Conn, f.n)
	results := make([]clientResult, f.n)
	var (
		next, dialFail, early atomic.Int64
		firstErr              atomic.Value
		wg, readers           sync.WaitGroup
	)
	fin := make([]atomic.Bool, f.n) // results[i] is written
	readersDone := make(chan struct{})
	ctlHeld.Store(true)
	fillStart := time.Now()
	for w := 0; w < f.fillConc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= f.n || time.Since(fillStart) > f.fillTimeout {
					return
				}
				c, err := net.DialTimeout("tcp", f.addr, 5*time.Second)
				if err == nil {
					_, err = c.Write(request(f.addr, i))
					if err != nil {
						c.Close()
					}
				}
				if err != nil {
					dialFail.Add(1)
					results[i].err = err
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				conns[i] = c
				readers.Add(1)
				go func() {
					defer readers.Done()
					st, err := readOne(bufio.NewReaderSize(c, 1024))
					results[i] = clientResult{status: st, err: err}
					fin[i].Store(true)
					if ctlHeld.Load() {
						early.Add(1) // answered before the release: the proxy did not queue it
					}
				}()
			}
		}()
	}
	wg.Wait()
	fillTime := time.Since(fillStart)
	opened := f.n - int(dialFail.Load())
	fmt.Printf("opened %d/%d connections and sent a request on each in %v\n", opened, f.n, fillTime.Round(time.Millisecond))
	if e := firstErr.Load(); e != nil {
		fmt.Printf("first connect/send error: %s\n", e)
	}

	// Wait until the proxy has read every request (nothing left unread on its client sockets) and the backend
	// holds the requests the proxy let through; the rest wait in the proxy's queue.
	wantActive := int64(min(f.maxconn, opened))
	var est, unread int
	var bs stats
	queued := false
	for t0 := time.Now(); time.Since(t0) < f.fillTimeout; time.Sleep(100 * time.Millisecond) {
		est, unread, err = proxySockets(port)
		if err != nil {
			fatalf("reading /proc/net/tcp: %v", err)
		}
		bs = ctl.call("/stats")
		if unread == 0 && est+int(early.Load()) >= opened && bs.Active >= wantActive {
			queued = true
			break
		}
	}
	queuedTime := time.Since(fillStart)
	fmt.Printf("proxy side: %d established client sockets, %d with unread bytes; backend holds %d (max %d, %d received, %d connections); %d answered before the release; queue full=%t after %v\n",
		est, unread, bs.Active, bs.MaxActive, bs.Received, bs.Accepted, early.Load(), queued, queuedTime.Round(time.Millisecond))
	proxyQ := ""
	if f.metricsURL != "" {
		if proxyQ, err = proxyQueue(f.metricsURL); err != nil {
			fmt.Printf("metrics: %v\n", err)
		} else {
			fmt.Printf("proxy's own queue counters, queue full: %s\n", proxyQ)
		}
	}

	var after procstat.Reading
	var fdAfter int
	if measureMem {
		after = settle(f.pid, f.settleMax)
		fdAfter = procstat.CountFDs(f.pid)
		fmt.Printf("after:  VmRSS %d KiB (RssAnon %d KiB), %d fds (+%d), %d threads, settled=%t in %v\n",
			after.RSS, after.Anon, fdAfter, fdAfter-fdBefore, threads(f.pid), after.Stable, after.Took.Round(time.Millisecond))
		bs2 := ctl.call("/stats")
		if bs2.Received != bs.Received {
			fmt.Printf("WARNING: the backend received %d more requests while the RSS settled\n", bs2.Received-bs.Received)
		}
	}

	// Release and collect every response, bounded.
	ctlHeld.Store(false)
	cpu := startCPU(f.pid, f.backendPid)
	release := time.Now()
	ctl.call("/release")
	go func() { readers.Wait(); close(readersDone) }()
	hung := 0
	select {
	case <-readersDone:
	case <-time.After(f.drainTimeout):
		for i, c := range conns {
			if c != nil && !fin[i].Load() {
				hung++
			}
		}
		fmt.Printf("WARNING: %d responses still missing %v after the release; giving up on them\n", hung, f.drainTimeout)
		for _, c := range conns {
			if c != nil {
				c.SetReadDeadline(time.Now())
			}
		}
		select {
		case <-readersDone:
		case <-time.After(5 * time.Second):
		}
	}
	drain := time.Since(release)
	proxyCPU, backendCPU, clientCPU, otherCPU := cpu.stop()
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
	var rssEnd int64
	if measureMem {
		rssEnd, _, _ = procstat.RSS(f.pid)
	}

	for i, c := range conns {
		if c != nil && !fin[i].Load() {
			results[i] = clientResult{err: errors.New("no response (hung)")}
		}
	}
	ok, non200, errs, statuses, errSample := tally(results, f.n)
	evs, bsEnd := ctl.eventsWhenComplete()
	d := analyse(evs)
	writeRaw(f, evs, d)

	fmt.Printf("after release: %d x 200, %d other statuses %v, %d errors%s, %d hung; drained in %v\n",
		ok, non200, statuses, errs, errSample, hung, drain.Round(time.Millisecond))
	fmt.Printf("backend: %d requests, %d new connections, at most %d at once (maxconn %d)\n",
		bsEnd.Received, bsEnd.Accepted, bsEnd.MaxActive, f.maxconn)
	fmt.Printf("CPU during the drain, %% of one core: proxy %.0f, backend %.0f, client %.0f, everything else %.0f\n",
		proxyCPU, backendCPU, clientCPU, otherCPU)
	d.print()
	perReq, perReqAnon := math.NaN(), math.NaN()
	if measureMem {
		perReq = float64(after.RSS-before.RSS) / float64(f.n)
		perReqAnon = float64(after.Anon-before.Anon) / float64(f.n)
		fmt.Printf("per queued request: %.2f KiB VmRSS (%.2f KiB RssAnon); VmRSS after the drain %d KiB\n", perReq, perReqAnon, rssEnd)
	}
	fmt.Printf("RESULT label=%s mode=queue n=%d maxconn=%d opened=%d queued=%t fill_s=%.2f queued_s=%.2f early=%d proxy_queue=%s "+
		"rss_before_kib=%d rss_after_kib=%d rss_drained_kib=%d per_req_kib=%.2f anon_per_req_kib=%.2f fds_delta=%d stable=%t "+
		"ok=%d non200=%d errors=%d hung=%d drain_s=%.3f backend_requests=%d backend_conns=%d max_active=%d "+
		"proxy_cpu=%.0f backend_cpu=%.0f client_cpu=%.0f other_cpu=%.0f %s\n",
		f.label, f.n, f.maxconn, opened, queued, fillTime.Seconds(), queuedTime.Seconds(), early.Load(), orDash(proxyQ),
		before.RSS, after.RSS, rssEnd, perReq, perReqAnon, fdAfter-fdBefore, before.Stable && after.Stable,
		ok, non200, errs, hung, drain.Seconds(), bsEnd.Received, bsEnd.Accepted, bsEnd.MaxActive,
		proxyCPU, backendCPU, clientCPU, otherCPU, d.kv())
	if ok != f.n || !queued || bsEnd.MaxActive > int64(f.maxconn) {
		os.Exit(1)
	}
}

// ctlHeld is true from the start of the fill until the release: a response read meanwhile was not queued.
var ctlHeld atomic.Bool

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func tally(results []clientResult, n int) (ok, non200, errs int, statuses map[int]int, errSample string) {
	statuses = map[int]int{}
	for _, r := range results[:n] {
		switch {
		case r.err != nil:
			errs++
			if errSample == "" {
				errSample = " (first: " + r.err.Error() + ")"
			}
		case r.status == 200:
			ok++
		case r.status != 0:
			non200++
			statuses[r.status]++
		}
	}
	return
}

// runDirect: one keep-alive connection straight to the backend, -n requests back to back. The backend's gap
// between a response's last byte and the next request's first byte is then the loopback + client round trip: the
// floor under any proxy's dispatch latency as measured here.
func runDirect(f runFlags, ctl *controller) {
	if err := warmup(f.addr, f.warmup); err != nil {
		fatalf("warm-up to %s: %v", f.addr, err)
	}
	ctl.call("/reset")
	c, err := net.DialTimeout("tcp", f.addr, 5*time.Second)
	if err != nil {
		fatalf("dial %s: %v", f.addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(f.drainTimeout))
	br := bufio.NewReader(c)
	results := make([]clientResult, f.n)
	cpu := startCPU(0, f.backendPid)
	start := time.Now()
	for i := 0; i < f.n; i++ {
		if _, err := c.Write(request(f.addr, i)); err != nil {
			results[i].err = err
			break
		}
		st, err := readOne(br)
		results[i] = clientResult{status: st, err: err}
		if err != nil {
			break
		}
	}
	drain := time.Since(start)
	_, backendCPU, clientCPU, otherCPU := cpu.stop()
	ok, non200, errs, statuses, errSample := tally(results, f.n)
	evs, bs := ctl.eventsWhenComplete()
	d := analyse(evs)
	writeRaw(f, evs, d)
	fmt.Printf("direct: %d x 200, %d other statuses %v, %d errors%s in %v\n", ok, non200, statuses, errs, errSample, drain.Round(time.Millisecond))
	d.print()
	fmt.Printf("RESULT label=%s mode=direct n=%d maxconn=1 ok=%d non200=%d errors=%d hung=0 drain_s=%.3f backend_requests=%d backend_conns=%d max_active=%d "+
		"proxy_cpu=-1 backend_cpu=%.0f client_cpu=%.0f other_cpu=%.0f %s\n",
		f.label, f.n, ok, non200, errs, drain.Seconds(), bs.Received, bs.Accepted, bs.MaxActive, backendCPU, clientCPU, otherCPU, d.kv())
	if ok != f.n {
		os.Exit(1)
	}
}

type dispatch struct {
	lat        []float64 // µs, in dispatch order
	sorted     []float64
	initial    int // arrivals with no earlier unmatched completion (requests that found a free slot)
	inversions int // requests that reached the backend after one sent later (by X-Seq)
	maxDisp    int64
	busyS      float64 // first to last completion at the backend
}

// analyse pairs completions and arrivals at the backend: each arrival is the dispatch of the oldest completion
// (freed slot) before it that has not been paired yet. With maxconn 1 this is simply "response i written →
// request i+1 arrived". It also counts FIFO inversions by the client's X-Seq.
func analyse(evs []event) dispatch {
	var d dispatch
	if len(evs) == 0 {
		return d
	}
	arr := make([]int64, len(evs))
	done := make([]int64, len(evs))
	for i, e := range evs {
		arr[i], done[i] = e.arrive, e.done
	}
	sort.Slice(arr, func(i, j int) bool { return arr[i] < arr[j] })
	sort.Slice(done, func(i, j int) bool { return done[i] < done[j] })
	j := 0
	for _, a := range arr {
		if j < len(done) && done[j] <= a {
			d.lat = append(d.lat, float64(a-done[j])/1e3)
			j++
		} else {
			d.initial++
		}
	}
	d.sorted = append([]float64(nil), d.lat...)
	sort.Float64s(d.sorted)
	d.busyS = float64(done[len(done)-1]-done[0]) / 1e9

	byArrive := append([]event(nil), evs...)
	sort.Slice(byArrive, func(i, j int) bool { return byArrive[i].arrive < byArrive[j].arrive })
	maxSeq := int64(-1)
	for _, e := range byArrive {
		if e.seq < 0 {
			continue
		}
		if e.seq < maxSeq {
			d.inversions++
			d.maxDisp = max(d.maxDisp, maxSeq-e.seq)
		}
		maxSeq = max(maxSeq, e.seq)
	}
	return d
}

func (d dispatch) pct(p float64) float64 {
	if len(d.sorted) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(p/100*float64(len(d.sorted)))) - 1
	return d.sorted[max(0, min(i, len(d.sorted)-1))]
}

func (d dispatch) mean() float64 {
	if len(d.lat) == 0 {
		return math.NaN()
	}
	s := 0.0
	for _, v := range d.lat {
		s += v
	}
	return s / float64(len(d.lat))
}

func (d dispatch) print() {
	fmt.Printf("dispatch latency (backend: response written -> next request's first byte), %d pairs: p50 %.1f µs, p90 %.1f, p99 %.1f, p99.9 %.1f, max %.1f, mean %.1f; %d FIFO inversions (max displacement %d)\n",
		len(d.lat), d.pct(50), d.pct(90), d.pct(99), d.pct(99.9), d.pct(100), d.mean(), d.inversions, d.maxDisp)
}

func (d dispatch) kv() string {
	rate := 0.0
	if d.busyS > 0 {
		rate = float64(len(d.lat)) / d.busyS // completions after the first, per second
	}
	return fmt.Sprintf("pairs=%d p50_us=%.1f p90_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f mean_us=%.1f initial=%d fifo_inversions=%d max_displacement=%d backend_rps=%.0f",
		len(d.lat), d.pct(50), d.pct(90), d.pct(99), d.pct(99.9), d.pct(100), d.mean(), d.initial, d.inversions, d.maxDisp, rate)
}

func writeRaw(f runFlags, evs []event, d dispatch) {
	if f.rawEvents != "" {
		var b strings.Builder
		b.WriteString("# seq arrive_ns done_ns conn (ns since the backend started; seq -1 = no X-Seq)\n")
		for _, e := range evs {
			fmt.Fprintf(&b, "%d %d %d %d\n", e.seq, e.arrive, e.done, e.conn)
		}
		must(os.WriteFile(f.rawEvents, []byte(b.String()), 0o644))
	}
	if f.rawLat != "" {
		var b strings.Builder
		for _, v := range d.lat {
			fmt.Fprintf(&b, "%.1f\n", v)
		}
		must(os.WriteFile(f.rawLat, []byte(b.String()), 0o644))
	}
}

func must(err error) {
	if err != nil {
		fatalf("%v", err)
	}
}

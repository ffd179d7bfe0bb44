//go:build linux

package main

// The port-exhaustion proof of the whole daemon, across two network
// namespaces joined by veth (internal/netnstest): A holds sluice, its
// client and the source addresses (198.18.0.2 upwards), with
// ip_local_port_range shrunk to 100 ports and tcp_tw_reuse=0 as on a real
// network (loopback would reuse TIME_WAIT tuples and hide the problem); B
// holds the server at 198.18.0.1:8080. sluice runs as this test binary
// re-executed inside A (calling run), with `option http-server-close`:
// through `nsenter --net` where there is one, so that it keeps the host's
// mounts, finds its cgroup and counts with eBPF as a daemon would, else
// through `ip netns exec` (which hides cgroup2: netlink sock_diag mode).
// The server answers with Content-Length and
// keep-alive whatever the request says and closes only after reading EOF,
// so the FIN comes from sluice first and every TIME_WAIT lands on sluice's
// side (a server that honours sluice's `Connection: close` closes first and
// the TIME_WAIT lands on B instead; nothing would ever be exhausted). The
// client, the server and the sock_diag scans are the same binary in other
// roles, reporting as JSON on stdout. The runtime API's unix socket lives
// in the filesystem, so `show kernel` is read from the host namespace.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/netnstest"
)

const (
	netnsChildEnv  = "SLUICE_NETNS_CHILD"  // sluice, server, client or scan
	netnsParamsEnv = "SLUICE_NETNS_PARAMS" // JSON netnsParams

	netnsFrontend = "127.0.0.1:8000" // sluice's frontend, on A's loopback
	netnsPort     = 8080             // the server's port in B
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(netnsChildEnv); mode != "" {
		if err := netnsChild(mode, os.Getenv(netnsParamsEnv)); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", mode, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// netnsParams is what a child is told, as JSON in its environment.
type netnsParams struct {
	Args    []string // sluice: its command line
	Addr    string   // server: where to listen; client: where to connect
	N       int      // client: requests to send
	Server  string   // scan: the server's ip:port
	Sources []string // scan: the source addresses toward it
}

func netnsChild(mode, params string) error {
	var p netnsParams
	if err := json.Unmarshal([]byte(params), &p); err != nil {
		return fmt.Errorf("params: %w", err)
	}
	switch mode {
	case "sluice":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return run(ctx, p.Args, os.Stdout, os.Stderr)
	case "server":
		return netnsServe(p)
	case "client":
		return netnsClient(p)
	case "scan":
		return netnsScan(p)
	case "steerclient":
		return steerClient(p)
	}
	return fmt.Errorf("unknown mode %q", mode)
}

// serverReport is what the server saw, printed when its stdin closes.
type serverReport struct {
	Conns    int
	Requests int
	Order    []string       // each connection's source address, in accept order
	Peers    map[string]int // connections per source address
	PeerEOF  int            // connections the peer closed first (EOF read before the server closed)
	Errors   []string       `json:",omitempty"`
	CloseAsk int            // requests with Connection: close (ignored on purpose)
	Kernel   netnstest.Counts
}

// netnsServe answers every request with a keep-alive 200 and closes a
// connection only once it has read EOF from the peer.
func netnsServe(p netnsParams) error {
	ln, err := net.Listen("tcp4", p.Addr)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	rep := serverReport{Peers: map[string]int{}}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			src := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().String()
			mu.Lock()
			rep.Conns++
			rep.Order = append(rep.Order, src)
			rep.Peers[src]++
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						mu.Lock()
						if errors.Is(err, io.EOF) {
							rep.PeerEOF++
						} else {
							rep.Errors = append(rep.Errors, err.Error())
						}
						mu.Unlock()
						return
					}
					io.Copy(io.Discard, req.Body)
					mu.Lock()
					rep.Requests++
					if req.Close {
						rep.CloseAsk++
					}
					mu.Unlock()
					if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"); err != nil {
						return
					}
				}
			}()
		}
	}()
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	ln.Close()
	wg.Wait()
	if s, err := netnstest.ScanSockets(); err == nil {
		rep.Kernel = s.Total()
	} else {
		rep.Errors = append(rep.Errors, err.Error())
	}
	mu.Lock()
	defer mu.Unlock()
	return json.NewEncoder(os.Stdout).Encode(rep)
}

// clientResult is one request of the client.
type clientResult struct {
	Status int
	Line   string  `json:",omitempty"` // the status line
	Body   string  `json:",omitempty"` // when not 200
	Err    string  `json:",omitempty"`
	At     float64 // seconds since the client's first request
}

type clientReport struct {
	Start   time.Time
	Results []clientResult
}

// netnsClient sends p.N requests one after the other on a keep-alive
// connection (a new one when sluice closed the previous): the client's side
// needs no more than a port or two of A's 100, sluice's server side is what
// is measured.
func netnsClient(p netnsParams) error {
	rep := clientReport{Start: time.Now()}
	var c net.Conn
	var br *bufio.Reader
	for i := 0; i < p.N; i++ {
		var r clientResult
		err := func() error {
			if c == nil {
				var err error
				if c, err = net.DialTimeout("tcp4", p.Addr, 5*time.Second); err != nil {
					return err
				}
				br = bufio.NewReader(c)
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := fmt.Fprintf(c, "GET /n/%d HTTP/1.1\r\nHost: netns.test\r\n\r\n", i+1); err != nil {
				return err
			}
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				return err
			}
			body, err := io.ReadAll(res.Body)
			if err != nil {
				return err
			}
			r.Status, r.Line = res.StatusCode, res.Proto+" "+res.Status
			if res.StatusCode != http.StatusOK {
				r.Body = string(body)
			}
			if res.Close {
				c.Close()
				c = nil
			}
			return nil
		}()
		r.At = time.Since(rep.Start).Seconds()
		if err != nil {
			r.Err = err.Error()
			if c != nil {
				c.Close()
				c = nil
			}
		}
		rep.Results = append(rep.Results, r)
	}
	if c != nil {
		c.Close()
	}
	return json.NewEncoder(os.Stdout).Encode(rep)
}

// scanReport is the kernel's view (sock_diag) of one namespace.
type scanReport struct {
	Sources map[string]netnstest.Counts // per source toward the server
	Total   netnstest.Counts
}

func netnsScan(p netnsParams) error {
	s, err := netnstest.ScanSockets()
	if err != nil {
		return err
	}
	server, err := netip.ParseAddrPort(p.Server)
	if err != nil {
		return err
	}
	rep := scanReport{Sources: map[string]netnstest.Counts{}, Total: s.Total()}
	for _, a := range p.Sources {
		src, err := netip.ParseAddr(a)
		if err != nil {
			return err
		}
		rep.Sources[a] = s.Counts(src, server)
	}
	return json.NewEncoder(os.Stdout).Encode(rep)
}

// netnsCommand returns this test binary re-executed inside ns as a child
// in mode, killed if the test process dies.
func netnsCommand(t *testing.T, ctx context.Context, ns *netnstest.NS, mode string, p netnsParams) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	params, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	// Both exec the command: the PID is the child's own. sluice keeps the
	// host's mounts where it can, so that it finds its cgroup and counts
	// with eBPF as a daemon would (`ip netns exec` hides cgroup2, and
	// sluice falls back to netlink sock_diag).
	cmd := ns.CommandContext(ctx, exe, "-test.run=^$")
	if mode == "sluice" && netnstest.HaveNsenter() {
		cmd = ns.NetCommandContext(ctx, exe, "-test.run=^$")
	}
	cmd.Env = append(os.Environ(), netnsChildEnv+"="+mode, netnsParamsEnv+"="+string(params))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// netnsRun runs a child to completion (within 30 s) and decodes its JSON
// report into v.
func netnsRun(t *testing.T, ns *netnstest.NS, mode string, p netnsParams, v any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var errb bytes.Buffer
	cmd := netnsCommand(t, ctx, ns, mode, p)
	cmd.Stderr = &errb
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s in %s: %v: %s", mode, ns.Name, err, bytes.TrimSpace(errb.Bytes()))
	}
	if err := json.Unmarshal(out, v); err != nil {
		t.Fatalf("%s in %s: report: %v: %q", mode, ns.Name, err, out)
	}
}

// netnsDaemon is sluice running in A with a source pool toward a server in
// B.
type netnsDaemon struct {
	*netnstest.Pair
	server  netip.AddrPort
	sources []string
	sock    string // runtime API
	errPath string // sluice's stderr

	srvIn  io.WriteCloser
	srvOut *bufio.Reader
}

// startNetnsDaemon creates the pair with the given number of source
// addresses on A, shrinks A's port range, and starts the server in B and
// sluice in A; everything is stopped and removed by t.Cleanup.
func startNetnsDaemon(t *testing.T, sources int) *netnsDaemon {
	t.Helper()
	netnstest.Require(t)
	p := netnstest.NewScarcePair(t, sources)
	d := &netnsDaemon{Pair: p, server: netip.AddrPortFrom(p.BAddr, netnsPort)}
	for _, a := range p.AAddrs {
		d.sources = append(d.sources, a.String())
	}

	// The server in B.
	srv := netnsCommand(t, context.Background(), p.B, "server", netnsParams{Addr: d.server.String()})
	srv.Stderr = netnsLog{t, "server: "}
	var err error
	if d.srvIn, err = srv.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := srv.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netnsStop(srv, func() { d.srvIn.Close() }) })
	d.srvOut = bufio.NewReader(out)
	if line, err := d.srvOut.ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("server in %s not ready: %q, %v", p.B.Name, line, err)
	}

	// sluice in A.
	dir := t.TempDir()
	d.sock = filepath.Join(dir, "admin.sock")
	d.errPath = filepath.Join(dir, "sluice.stderr")
	cfg := filepath.Join(dir, "sluice.cfg")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`global
    stats socket %s level admin
defaults
    mode http
    retries 0
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend fe
    bind %s
    default_backend be
backend be
    option http-server-close
    source %s
    server s1 %s
`, d.sock, netnsFrontend, strings.Join(d.sources, ","), d.server)), 0o600); err != nil {
		t.Fatal(err)
	}
	errf, err := os.Create(d.errPath)
	if err != nil {
		t.Fatal(err)
	}
	defer errf.Close()
	sl := netnsCommand(t, context.Background(), p.A, "sluice", netnsParams{Args: []string{"-f", cfg, "-grace", "1s"}})
	sl.Stdout, sl.Stderr = errf, errf
	if err := sl.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = sl.Wait(); close(exited) }()
	t.Cleanup(func() {
		sl.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			t.Errorf("sluice did not stop within 10 s of SIGTERM: killed")
			sl.Process.Kill()
			<-exited
		}
		log := d.stderr()
		switch {
		case waitErr != nil || strings.Contains(log, "WARNING: DATA RACE"):
			t.Errorf("sluice ended with %v; its stderr:\n%s", waitErr, log)
		case t.Failed():
			t.Logf("sluice's stderr:\n%s", log)
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(d.stderr(), "sluice started") {
		select {
		case <-exited:
			t.Fatalf("sluice exited at start: %v\n%s", waitErr, d.stderr())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("sluice not started within 20 s:\n%s", d.stderr())
		}
	}
	for _, l := range strings.Split(d.stderr(), "\n") {
		if strings.Contains(l, "kernel counters") {
			t.Logf("sluice: %s", l)
		}
	}
	return d
}

// netnsStop ends a child: closes its input (a server then reports and
// exits), else SIGTERM, else SIGKILL.
func netnsStop(cmd *exec.Cmd, closeIn func()) {
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	closeIn()
	select {
	case <-done:
		return
	case <-time.After(5 * time.Second):
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

func (d *netnsDaemon) stderr() string {
	b, _ := os.ReadFile(d.errPath)
	return string(b)
}

// requests sends n requests through sluice from a client in A.
func (d *netnsDaemon) requests(t *testing.T, n int) clientReport {
	t.Helper()
	var rep clientReport
	netnsRun(t, d.A, "client", netnsParams{Addr: netnsFrontend, N: n}, &rep)
	if len(rep.Results) != n {
		t.Fatalf("client: %d results for %d requests", len(rep.Results), n)
	}
	return rep
}

// serverReport closes the server's input and reads what it saw.
func (d *netnsDaemon) serverReport(t *testing.T) serverReport {
	t.Helper()
	d.srvIn.Close()
	var rep serverReport
	if err := json.NewDecoder(d.srvOut).Decode(&rep); err != nil {
		t.Fatalf("server report: %v", err)
	}
	return rep
}

// settled waits until sock_diag in A shows every connection from the
// sources toward the server closed by sluice (none established, none
// still closing: all in TIME_WAIT), and returns that view.
func (d *netnsDaemon) settled(t *testing.T) scanReport {
	t.Helper()
	var rep scanReport
	for deadline := time.Now().Add(10 * time.Second); ; {
		netnsRun(t, d.A, "scan", netnsParams{Server: d.server.String(), Sources: d.sources}, &rep)
		done := true
		for _, c := range rep.Sources {
			done = done && c.Established == 0 && c.Other == 0
		}
		if done {
			return rep
		}
		if time.Now().After(deadline) {
			t.Fatalf("connections still open or closing after 10 s: %+v", rep.Sources)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kernelRow is a `show kernel` line of a (server, source).
type kernelRow struct {
	Established, TimeWait, Occupied, Free, Selections, Exhausted int64
}

// showKernel reads `sluice ctl -S SOCK show kernel`: the whole text and
// be/s1's rows per source; the server's own row (established, TIME_WAIT)
// is filed under "".
func (d *netnsDaemon) showKernel(t *testing.T) (string, map[string]kernelRow) {
	t.Helper()
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"ctl", "-S", d.sock, "show kernel"}, &out, &errb); err != nil {
		t.Fatalf("ctl show kernel: %v: %s", err, errb.String())
	}
	rows := map[string]kernelRow{}
	section := ""
	for _, l := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(l, "#") {
			section = l
			continue
		}
		f := strings.Fields(l)
		if strings.HasPrefix(section, "# backend/server addr ") && len(f) == 4 && f[0] == "be/s1" && f[1] == d.server.String() {
			est, err1 := strconv.ParseInt(f[2], 10, 64)
			tw, err2 := strconv.ParseInt(f[3], 10, 64)
			if err1 != nil || err2 != nil {
				t.Fatalf("show kernel: %q", l)
			}
			rows[""] = kernelRow{Established: est, TimeWait: tw}
			continue
		}
		if !strings.HasPrefix(section, "# backend/server source ") || len(f) != 8 || f[0] != "be/s1" {
			continue
		}
		var v [6]int64
		for i := range v {
			n, err := strconv.ParseInt(f[2+i], 10, 64)
			if err != nil {
				t.Fatalf("show kernel: %q: %v", l, err)
			}
			v[i] = n
		}
		rows[f[1]] = kernelRow{v[0], v[1], v[2], v[3], v[4], v[5]}
	}
	return out.String(), rows
}

// kernelAgrees polls `show kernel` (its scans are rate-limited) until, for
// every source, established and TIME_WAIT equal sock_diag's view, and the
// server's TIME_WAIT their sum, and returns the last reading. (The server's
// established count is not compared: in eBPF mode sockops counts the
// connections of sluice's whole cgroup, whatever their network namespace.)
func (d *netnsDaemon) kernelAgrees(t *testing.T, diag scanReport) (string, map[string]kernelRow) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		text, rows := d.showKernel(t)
		tw := 0
		for _, c := range diag.Sources {
			tw += c.TimeWait
		}
		ok := rows[""].TimeWait == int64(tw)
		for _, s := range d.sources {
			r, c := rows[s], diag.Sources[s]
			ok = ok && r.TimeWait == int64(c.TimeWait) && r.Established == int64(c.Established)
		}
		if ok {
			return text, rows
		}
		if time.Now().After(deadline) {
			t.Fatalf("show kernel never agreed with sock_diag %+v within 10 s:\n%s", diag.Sources, text)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// netnsLog passes a child's stderr to the test log.
type netnsLog struct {
	t      *testing.T
	prefix string
}

func (w netnsLog) Write(b []byte) (int, error) {
	w.t.Log(w.prefix + strings.TrimSpace(string(b)))
	return len(b), nil
}

// checkServerClosedLast: every connection the server saw was closed by
// sluice first, and none of them left a TIME_WAIT on the server's side.
func checkServerClosedLast(t *testing.T, srv serverReport, conns int) {
	t.Helper()
	if srv.Conns != conns || srv.Requests != conns {
		t.Errorf("server saw %d connections, %d requests; want %d of each (one request per connection)", srv.Conns, srv.Requests, conns)
	}
	if srv.PeerEOF != srv.Conns || len(srv.Errors) > 0 {
		t.Errorf("sluice closed %d of %d connections first; errors: %v", srv.PeerEOF, srv.Conns, srv.Errors)
	}
	if srv.Kernel.TimeWait != 0 {
		t.Errorf("B holds %d TIME_WAIT sockets: the server closed first", srv.Kernel.TimeWait)
	}
	t.Logf("server: %d connections, %d requests (%d asking Connection: close, not honoured), %d closed by sluice first; B's sockets now %+v",
		srv.Conns, srv.Requests, srv.CloseAsk, srv.PeerEOF, srv.Kernel)
}

// One source, 100 ports: 100 requests succeed, each on a new upstream
// connection sluice closes first; the 101st, well within TIME_WAIT's 60 s,
// finds no free tuple and gets a clean 503, logged as exhaustion.
func TestNetnsDaemonOneSourceExhausts(t *testing.T) {
	start := time.Now()
	d := startNetnsDaemon(t, 1)
	src := d.sources[0]
	first := d.requests(t, 100)
	for i, r := range first.Results {
		if r.Status != 200 || r.Line != "HTTP/1.1 200 OK" || r.Err != "" {
			t.Fatalf("request %d: %+v, want 200", i+1, r)
		}
	}
	diag := d.settled(t)
	if c := diag.Sources[src]; c.TimeWait != 100 {
		t.Fatalf("sock_diag in A: %s -> %s: %+v, want 100 in TIME_WAIT", src, d.server, c)
	}
	text, rows := d.kernelAgrees(t, diag)
	if r := rows[src]; r.Free != 0 || r.Selections != 100 || r.Exhausted != 0 {
		t.Errorf("show kernel for %s after 100: %+v, want free 0, 100 selections, none exhausted", src, r)
	}
	t.Logf("after 100 requests (%.2f s), show kernel:\n%s", first.Results[99].At, text)

	last := d.requests(t, 1)
	r := last.Results[0]
	since := last.Start.Add(time.Duration(r.At * float64(time.Second))).Sub(first.Start)
	if r.Status != 503 || r.Line != "HTTP/1.1 503 Service Unavailable" || !strings.Contains(r.Body, "No server is available") {
		t.Fatalf("request 101: %+v, want sluice's 503", r)
	}
	if since >= 60*time.Second {
		t.Errorf("request 101 answered %v after the first: TIME_WAIT may have expired", since)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(d.stderr(), "connect failed: source ports exhausted") {
		if time.Now().After(deadline) {
			t.Fatalf("no exhaustion warning in sluice's stderr:\n%s", d.stderr())
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, l := range strings.Split(d.stderr(), "\n") {
		if strings.Contains(l, "source ports exhausted") {
			t.Logf("sluice: %s", l)
		}
	}
	text, rows = d.showKernel(t)
	if r := rows[src]; r.Exhausted < 1 {
		t.Errorf("show kernel for %s after the 503: %+v, want exhaustion counted", src, r)
	}
	t.Logf("request 101: %s %.2f s after the first; show kernel:\n%s", r.Line, since.Seconds(), text)

	srv := d.serverReport(t)
	checkServerClosedLast(t, srv, 100)
	if srv.Peers[src] != 100 {
		t.Errorf("server saw %v, want 100 from %s", srv.Peers, src)
	}
	t.Logf("total %.1f s", time.Since(start).Seconds())
}

// Four sources: 400 consecutive requests succeed, each on a new upstream
// connection; sluice's choice alone spreads them within ±10% (at half way
// too, before any source is full, and with no connect failing over), and
// show kernel reports per source the TIME_WAIT sock_diag sees. The 401st
// finds every source full: 503.
func TestNetnsDaemonFourSourcesSpread(t *testing.T) {
	start := time.Now()
	d := startNetnsDaemon(t, 4)
	res := d.requests(t, 400)
	for i, r := range res.Results {
		if r.Status != 200 || r.Err != "" {
			t.Fatalf("request %d: %+v, want 200", i+1, r)
		}
	}
	diag := d.settled(t)
	text, rows := d.kernelAgrees(t, diag)
	t.Logf("400 requests in %.2f s; show kernel:\n%s", res.Results[399].At, text)

	last := d.requests(t, 1).Results[0]
	if last.Status != 503 {
		t.Errorf("request 401, every source full: %+v, want 503", last)
	}

	srv := d.serverReport(t)
	checkServerClosedLast(t, srv, 400)
	half := map[string]int{}
	for _, a := range srv.Order[:min(200, len(srv.Order))] {
		half[a]++
	}
	for _, s := range d.sources {
		n := srv.Peers[s]
		if n < 90 || n > 110 {
			t.Errorf("%s: %d of 400 connections, want 100 ±10%%: %v", s, n, srv.Peers)
		}
		if h := half[s]; h < 45 || h > 55 {
			t.Errorf("%s: %d of the first 200 connections, want 50 ±10%%: %v", s, h, half)
		}
		if c := diag.Sources[s]; c.TimeWait != n {
			t.Errorf("%s: sock_diag shows %d in TIME_WAIT, the server saw %d connections (%+v)", s, c.TimeWait, n, c)
		}
		if r := rows[s]; r.Selections != int64(n) || r.Exhausted != 0 {
			t.Errorf("%s: show kernel %+v after 400, want %d selections and none exhausted", s, r, n)
		}
		t.Logf("%s: server saw %d (%d of the first 200); sock_diag %+v; show kernel %+v", s, n, half[s], diag.Sources[s], rows[s])
	}
	t.Logf("request 401: %s; total %.1f s", last.Line, time.Since(start).Seconds())
}

//go:build linux

package source

// The port-exhaustion proof, across two network namespaces joined by veth:
// A is the balancer's side (ip_local_port_range shrunk to 100 ports,
// tcp_tw_reuse=0, as on a real network; loopback would reuse TIME_WAIT
// tuples and hide the problem), B holds the server. The dialer runs as this
// test binary re-executed inside A (`ip netns exec A`), so the whole Go
// process lives there, and reports over stdout as JSON; the kernel's view of
// the sockets comes from sock_diag inside A.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/netnstest"
	"github.com/sluicelb/sluice/pkg/config"
)

const (
	childEnv  = "SLUICE_SOURCE_CHILD"  // server, hold or dial
	paramsEnv = "SLUICE_SOURCE_PARAMS" // JSON childParams
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		var p childParams
		if err := json.Unmarshal([]byte(os.Getenv(paramsEnv)), &p); err != nil {
			fmt.Fprintln(os.Stderr, "child params:", err)
			os.Exit(2)
		}
		if err := runChild(mode, p); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type childParams struct {
	Spec     string // the `source` address setting
	Server   string // ip:port
	N        int    // connections to make (dial, hold)
	SockDiag bool   // dial: pass a sock_diag snapshot to every Dial
}

type connResult struct {
	Src          string  `json:",omitempty"`
	Port         uint16  `json:",omitempty"`
	Err          string  `json:",omitempty"`
	Exhausted    bool    `json:",omitempty"`
	AddrNotAvail bool    `json:",omitempty"`
	At           float64 // seconds since the first dial
}

type dialResult struct {
	Conns   []connResult
	Before  map[string]netnstest.Counts // per source toward the server, before the first dial
	After   map[string]netnstest.Counts // ... once every closed connection reached TIME_WAIT
	Stats   []Stat
	Seconds float64
}

func runChild(mode string, p childParams) error {
	switch mode {
	case "server":
		return childServer(p)
	case "hold":
		return childHold(p)
	case "dial":
		return childDial(p)
	}
	return fmt.Errorf("unknown mode %q", mode)
}

// childServer accepts on p.Server, reads each connection until EOF and
// closes it; when stdin closes it prints the peers' addresses as JSON.
func childServer(p childParams) error {
	ln, err := net.Listen("tcp4", p.Server)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	peers := map[string]int{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			peers[c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().String()]++
			mu.Unlock()
			go func() {
				io.Copy(io.Discard, c)
				c.Close()
			}()
		}
	}()
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	ln.Close()
	mu.Lock()
	defer mu.Unlock()
	return json.NewEncoder(os.Stdout).Encode(peers)
}

// childHold opens p.N connections from the pool p.Spec and keeps them until
// stdin closes: another process occupying a source's tuples.
func childHold(p childParams) error {
	pool, err := ParsePool(config.Source{Addr: p.Spec})
	if err != nil {
		return err
	}
	server := netip.MustParseAddrPort(p.Server)
	var conns []net.Conn
	for i := 0; i < p.N; i++ {
		c, _, err := pool.Dial(context.Background(), server, nil, 5*time.Second)
		if err != nil {
			return fmt.Errorf("hold connection %d: %w", i, err)
		}
		conns = append(conns, c)
	}
	fmt.Println("ready", len(conns))
	io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		c.Close()
	}
	return nil
}

// childDial makes p.N connections one after the other, each closed by this
// side first, and reports them with the kernel's counts per source.
func childDial(p childParams) error {
	pool, err := ParsePool(config.Source{Addr: p.Spec})
	if err != nil {
		return err
	}
	server := netip.MustParseAddrPort(p.Server)
	count := func() (map[string]netnstest.Counts, *netnstest.Sockets, error) {
		s, err := netnstest.ScanSockets()
		if err != nil {
			return nil, nil, err
		}
		m := map[string]netnstest.Counts{}
		for _, a := range pool.Addrs() {
			m[a.String()] = s.Counts(a, server)
		}
		return m, s, nil
	}
	var res dialResult
	if res.Before, _, err = count(); err != nil {
		return err
	}
	start := time.Now()
	for i := 0; i < p.N; i++ {
		var occ Occupancy
		if p.SockDiag {
			snap, err := netnstest.ScanSockets()
			if err != nil {
				return err
			}
			occ = snap
		}
		c, src, err := pool.Dial(context.Background(), server, occ, 5*time.Second)
		r := connResult{At: time.Since(start).Seconds()}
		if err != nil {
			r.Err = err.Error()
			r.Exhausted = errors.Is(err, ErrExhausted)
			r.AddrNotAvail = errors.Is(err, syscall.EADDRNOTAVAIL)
		} else {
			r.Src = src.String()
			r.Port = c.LocalAddr().(*net.TCPAddr).AddrPort().Port()
			c.Close() // this side closes first: TIME_WAIT lands here
		}
		res.Conns = append(res.Conns, r)
	}
	res.Seconds = time.Since(start).Seconds()
	// Wait for the closing handshakes to finish (FIN_WAIT -> TIME_WAIT).
	for deadline := time.Now().Add(10 * time.Second); ; {
		m, _, err := count()
		if err != nil {
			return err
		}
		res.After = m
		settled := true
		for _, c := range m {
			if c.Other > 0 {
				settled = false
			}
		}
		if settled || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	res.Stats = pool.Stats(nil)
	return json.NewEncoder(os.Stdout).Encode(res)
}

// child is a running child process.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
}

func startChild(t *testing.T, ns *netnstest.NS, mode string, p childParams) *child {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	params, _ := json.Marshal(p)
	cmd := ns.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+mode, paramsEnv+"="+string(params))
	cmd.Stderr = &testWriter{t: t, prefix: mode + ": "}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout)}
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	return c
}

// ready waits for the child's "ready" line.
func (c *child) ready(t *testing.T) {
	t.Helper()
	line, err := c.out.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ready") {
		t.Fatalf("child not ready: %q, %v", line, err)
	}
}

// result closes the child's stdin and decodes its JSON answer into v.
func (c *child) result(t *testing.T, v any) {
	t.Helper()
	c.stdin.Close()
	if err := json.NewDecoder(c.out).Decode(v); err != nil {
		t.Fatalf("child result: %v", err)
	}
}

type testWriter struct {
	t      *testing.T
	prefix string
}

func (w *testWriter) Write(b []byte) (int, error) {
	w.t.Log(w.prefix + strings.TrimSpace(string(b)))
	return len(b), nil
}

// shrunk is a namespace pair with A's port range shrunk to 100 ports and no
// TIME_WAIT reuse, and a server in B.
type shrunk struct {
	*netnstest.Pair
	server string
	srv    *child
}

func newShrunk(t *testing.T, sources int) *shrunk {
	t.Helper()
	netnstest.Require(t)
	p := netnstest.NewScarcePair(t, sources)
	s := &shrunk{Pair: p, server: netip.AddrPortFrom(p.BAddr, 8080).String()}
	s.srv = startChild(t, p.B, "server", childParams{Server: s.server})
	s.srv.ready(t)
	t.Cleanup(func() {
		if t.Failed() {
			s.logCounters(t)
		}
	})
	return s
}

// logCounters logs both namespaces' non-zero TCP counters about TIME_WAIT,
// resets and retransmissions, to explain a failure.
func (s *shrunk) logCounters(t *testing.T) {
	for _, ns := range []*netnstest.NS{s.A, s.B} {
		out, err := ns.Command("nstat", "-az").CombinedOutput()
		if err != nil {
			t.Logf("%s: nstat: %v", ns.Name, err)
			continue
		}
		for _, l := range strings.Split(string(out), "\n") {
			f := strings.Fields(l)
			if len(f) > 1 && f[1] != "0" && strings.ContainsAny(f[0], "TRS") &&
				(strings.Contains(f[0], "TW") || strings.Contains(f[0], "Rst") || strings.Contains(f[0], "Retrans") ||
					strings.Contains(f[0], "Abort") || strings.Contains(f[0], "Drop") || strings.Contains(f[0], "Overflow")) {
				t.Logf("%s: %s %s", ns.Name, f[0], f[1])
			}
		}
	}
}

func (s *shrunk) spec(addrs []netip.Addr) string {
	var parts []string
	for _, a := range addrs {
		parts = append(parts, a.String())
	}
	return strings.Join(parts, ",")
}

func (s *shrunk) dial(t *testing.T, spec string, n int) dialResult {
	t.Helper()
	c := startChild(t, s.A, "dial", childParams{Spec: spec, Server: s.server, N: n, SockDiag: true})
	var res dialResult
	c.result(t, &res)
	if len(res.Conns) != n {
		t.Fatalf("%d results for %d connections", len(res.Conns), n)
	}
	return res
}

// With one source and 100 ports, 100 connections succeed and the 101st,
// well within TIME_WAIT's 60 s, fails with ErrExhausted (EADDRNOTAVAIL).
func TestNetnsOneSourceExhausts(t *testing.T) {
	s := newShrunk(t, 1)
	res := s.dial(t, s.spec(s.AAddrs), 101)
	for i, r := range res.Conns[:100] {
		if r.Err != "" {
			t.Fatalf("connection %d failed: %s", i+1, r.Err)
		}
		if r.Port < 40000 || r.Port > 40099 {
			t.Errorf("connection %d from port %d, outside 40000-40099", i+1, r.Port)
		}
	}
	last := res.Conns[100]
	if !last.Exhausted || !last.AddrNotAvail {
		t.Fatalf("connection 101: %+v, want ErrExhausted with EADDRNOTAVAIL", last)
	}
	if last.At >= 60 {
		t.Errorf("connection 101 failed only after %.1f s", last.At)
	}
	src := s.AAddrs[0].String()
	if tw := res.After[src].TimeWait; tw != 100 {
		t.Errorf("TIME_WAIT from %s: %d, want 100 (%+v)", src, tw, res.After[src])
	}
	t.Logf("connection 101 after %.2f s: %s", last.At, last.Err)
	t.Logf("kernel after: %s -> %s: %+v", src, s.server, res.After[src])
}

// With four sources, 400 consecutive connections succeed, spread within
// ±10% over the sources, and the kernel shows the TIME_WAIT per source; the
// 401st fails only after trying all four.
func TestNetnsFourSourcesSpread(t *testing.T) {
	s := newShrunk(t, 4)
	res := s.dial(t, s.spec(s.AAddrs), 401)
	per := map[string]int{}
	for i, r := range res.Conns[:400] {
		if r.Err != "" {
			t.Fatalf("connection %d failed: %s", i+1, r.Err)
		}
		per[r.Src]++
	}
	for _, a := range s.AAddrs {
		n := per[a.String()]
		if n < 90 || n > 110 {
			t.Errorf("%s: %d of 400 connections, want 100 ±10%%: %v", a, n, per)
		}
		if tw := res.After[a.String()].TimeWait; tw != n {
			t.Errorf("%s: kernel shows %d in TIME_WAIT, want %d (%+v)", a, tw, n, res.After[a.String()])
		}
		t.Logf("%s: %d connections, kernel: %+v", a, n, res.After[a.String()])
	}
	last := res.Conns[400]
	if !last.Exhausted || !strings.Contains(last.Err, "4 sources tried") {
		t.Errorf("connection 401: %+v, want ErrExhausted after 4 sources", last)
	}
	t.Logf("400 connections in %.2f s; 401st: %s", res.Conns[399].At, last.Err)
	var peers map[string]int
	s.srv.result(t, &peers)
	for a, n := range per {
		if peers[a] != n {
			t.Errorf("server saw %d from %s, dialer made %d", peers[a], a, n)
		}
	}
}

// Another process holds 90 of the 100 tuples of the first source: the
// kernel's view (sock_diag) steers new connections to the other sources.
func TestNetnsChoiceFollowsKernel(t *testing.T) {
	s := newShrunk(t, 4)
	busy := s.AAddrs[0]
	h := startChild(t, s.A, "hold", childParams{Spec: busy.String(), Server: s.server, N: 90})
	h.ready(t)
	res := s.dial(t, s.spec(s.AAddrs), 60)
	if est := res.Before[busy.String()].Established; est != 90 {
		t.Fatalf("before: kernel shows %d established from %s, want 90", est, busy)
	}
	per := map[string]int{}
	for i, r := range res.Conns {
		if r.Err != "" {
			t.Fatalf("connection %d: %s", i+1, r.Err)
		}
		per[r.Src]++
	}
	if per[busy.String()] != 0 {
		t.Errorf("%d connections from %s, whose tuples another process holds: %v", per[busy.String()], busy, per)
	}
	for _, a := range s.AAddrs[1:] {
		if n := per[a.String()]; n < 18 || n > 22 {
			t.Errorf("%s: %d of 60: %v", a, n, per)
		}
	}
	t.Logf("spread with %s 90%% held elsewhere: %v", busy, per)
}

//go:build linux

package source

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// testServer accepts on 127.0.0.1 and records each client's address; it
// reads until EOF and closes.
type testServer struct {
	ln    net.Listener
	addr  netip.AddrPort
	mu    sync.Mutex
	peers []netip.AddrPort
	conns []net.Conn
}

func newTestServer(t *testing.T, network, addr string) *testServer {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("listen %s: %v", addr, err)
	}
	s := &testServer{ln: ln, addr: ln.Addr().(*net.TCPAddr).AddrPort()}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.peers = append(s.peers, c.RemoteAddr().(*net.TCPAddr).AddrPort())
			s.conns = append(s.conns, c)
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
	})
	return s
}

// waitPeers waits until the server accepted n connections.
func (s *testServer) waitPeers(t *testing.T, n int) []netip.AddrPort {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		got := append([]netip.AddrPort(nil), s.peers...)
		s.mu.Unlock()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("server accepted %d connections, want %d", len(got), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func dial(t *testing.T, p *Pool, to netip.AddrPort, occ Occupancy) (*net.TCPConn, netip.Addr) {
	t.Helper()
	c, a, err := p.Dial(context.Background(), to, occ, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", to, err)
	}
	t.Cleanup(func() { c.Close() })
	return c, a
}

// The connection leaves from the source the pool chose, and the server sees
// that address; connections rotate over the pool.
func TestDialFromChosenSource(t *testing.T) {
	srv := newTestServer(t, "tcp4", "127.0.0.1:0")
	p := mustPool(t, "127.0.0.2-127.0.0.5")
	used := map[netip.Addr]int{}
	for i := 0; i < 8; i++ {
		c, a := dial(t, p, srv.addr, nil)
		local := c.LocalAddr().(*net.TCPAddr).AddrPort()
		if local.Addr() != a {
			t.Fatalf("Dial says %s, socket is bound to %s", a, local)
		}
		used[a]++
	}
	peers := srv.waitPeers(t, 8)
	seen := map[netip.Addr]int{}
	for _, pa := range peers {
		seen[pa.Addr()]++
	}
	for a, n := range used {
		if seen[a] != n || n != 2 {
			t.Errorf("%s: pool says %d, server saw %d (want 2 each): %v", a, n, seen[a], seen)
		}
	}
	for _, s := range p.Stats(nil) {
		if s.Connected != 2 || s.Selections != 2 || s.InFlight != 0 {
			t.Errorf("stats %+v", s)
		}
	}
}

func TestDialIPv6(t *testing.T) {
	srv := newTestServer(t, "tcp6", "[::1]:0")
	p := mustPool(t, "::1")
	c, a := dial(t, p, srv.addr, nil)
	if a != netip.IPv6Loopback() || c.LocalAddr().(*net.TCPAddr).AddrPort().Addr() != a {
		t.Fatalf("source %s, local %s", a, c.LocalAddr())
	}
	if peers := srv.waitPeers(t, 1); peers[0].Addr() != a {
		t.Fatalf("server saw %s", peers[0])
	}
	// An explicit range inside the local range: IP_LOCAL_PORT_RANGE (a
	// SOL_IP option) on an IPv6 socket.
	withFreeRange(t, 2, true, func(lo uint16) bool {
		pr := mustPool(t, "[::1]:"+itoa(int(lo))+"-"+itoa(int(lo)+1))
		for i := 0; i < 2; i++ {
			c, _, err := pr.Dial(context.Background(), srv.addr, nil, 5*time.Second)
			if errors.Is(err, ErrExhausted) {
				return false // another process took a port of the range meanwhile
			}
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			if port := c.LocalAddr().(*net.TCPAddr).AddrPort().Port(); port < lo || port > lo+1 {
				t.Fatalf("port %d outside %d-%d", port, lo, lo+1)
			}
		}
		if _, _, err := pr.Dial(context.Background(), srv.addr, nil, time.Second); !errors.Is(err, ErrExhausted) {
			t.Fatalf("third connection: %v", err)
		}
		return true
	})
}

// withFreeRange runs f on a free range of n ports (see freeRange) until f
// reports the range stayed free: ports inside the local range may be taken
// by any process's outgoing connections between the check and the test, so
// f may give up on a range and get another, three times at most.
func withFreeRange(t *testing.T, n int, inside bool, f func(lo uint16) bool) {
	t.Helper()
	for attempt := 0; attempt < 3; attempt++ {
		if f(freeRange(t, n, inside)) {
			return
		}
		t.Logf("a port of the range was taken meanwhile; another range")
	}
	t.Fatal("no range stayed free in 3 attempts")
}

// freeRange returns n consecutive ports inside (inside=true) or outside the
// local port range that nothing listens on here.
func freeRange(t *testing.T, n int, inside bool) uint16 {
	t.Helper()
	lo, hi, err := localPortRange()
	if err != nil {
		t.Skip(err)
	}
	start := lo + 1000
	if !inside {
		start = lo - 6000
		if start < 2000 {
			if hi > 64000 {
				t.Skip("the local port range covers almost every port")
			}
			start = hi + 1
		}
	}
	for base := start; base < start+3000; base += n {
		ok := true
		for port := base; port < base+n && ok; port++ {
			ln, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", itoa(port)))
			if err != nil {
				ok = false
				break
			}
			ln.Close()
		}
		if ok {
			return uint16(base)
		}
	}
	t.Skip("no free port range")
	return 0
}

func itoa(n int) string { return strconv.Itoa(n) }

// An explicit port range is honoured, inside the local range (the kernel's
// IP_LOCAL_PORT_RANGE) or outside it (the pool walks the ports); each port
// serves one connection per server, and the same port serves another server.
func TestDialExplicitPortRange(t *testing.T) {
	for _, inside := range []bool{true, false} {
		name := "outside-local-range"
		if inside {
			name = "inside-local-range"
		}
		t.Run(name, func(t *testing.T) {
			srvA := newTestServer(t, "tcp4", "127.0.0.1:0")
			srvB := newTestServer(t, "tcp4", "127.0.0.1:0")
			var p *Pool
			var spec string
			withFreeRange(t, 5, inside, func(lo uint16) bool {
				spec = "127.0.0.2:" + itoa(int(lo)) + "-" + itoa(int(lo)+4)
				p = mustPool(t, spec)
				if p.kernelRng.Load() != inside {
					t.Fatalf("kernel range = %v for %s", p.kernelRng.Load(), spec)
				}
				ports := map[uint16]bool{}
				for i := 0; i < 5; i++ {
					c, _, err := p.Dial(context.Background(), srvA.addr, nil, 5*time.Second)
					if errors.Is(err, ErrExhausted) {
						return false
					}
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { c.Close() })
					port := c.LocalAddr().(*net.TCPAddr).AddrPort().Port()
					if port < lo || port > lo+4 || ports[port] {
						t.Fatalf("connection %d from port %d (range %s, used %v)", i, port, spec, ports)
					}
					ports[port] = true
				}
				return true
			})
			_, _, err := p.Dial(context.Background(), srvA.addr, nil, time.Second)
			if !errors.Is(err, ErrExhausted) || !errors.Is(err, syscall.EADDRNOTAVAIL) {
				t.Fatalf("6th connection: %v, want ErrExhausted (EADDRNOTAVAIL)", err)
			}
			t.Log(err)
			var ee *ExhaustedError
			if !errors.As(err, &ee) || ee.Tried != 1 || ee.Server != srvA.addr {
				t.Fatalf("error %#v", err)
			}
			if !strings.Contains(err.Error(), srvA.addr.String()) || !strings.Contains(err.Error(), "1 source tried") {
				t.Errorf("message %q", err)
			}
			// The tuples toward another server are free.
			for i := 0; i < 5; i++ {
				dial(t, p, srvB.addr, nil)
			}
			st := p.Stats(nil)
			if st[0].Exhausted != 1 || st[0].Connected != 5 || st[1].Connected != 5 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// When the chosen source has no free tuple after all (here the occupancy
// lies: another pool holds the only port), Dial falls back to the next
// source; when every source is full, ErrExhausted names the server and the
// count.
func TestDialFallbackOnEADDRNOTAVAIL(t *testing.T) {
	for _, inside := range []bool{true, false} {
		name := "outside-local-range"
		if inside {
			name = "inside-local-range"
		}
		t.Run(name, func(t *testing.T) {
			srv := newTestServer(t, "tcp4", "127.0.0.1:0")
			port := itoa(int(freeRange(t, 1, inside)))
			holder := mustPool(t, "127.0.0.3:"+port)
			dial(t, holder, srv.addr, nil)

			p := mustPool(t, "127.0.0.2,127.0.0.3:"+port)
			lie := fakeOcc{addr("127.0.0.2"): 1} // .2 "full", .3 "free"
			_, a := dial(t, p, srv.addr, lie)
			if a != addr("127.0.0.2") {
				t.Fatalf("connected from %s, want the fallback 127.0.0.2", a)
			}
			st := p.Stats(nil)
			if st[1].Exhausted != 1 || st[1].Selections != 1 || st[0].Connected != 1 {
				t.Errorf("stats %+v", st)
			}
			// Right after, the refused source ranks last: no second failed try.
			_, _, err := p.Dial(context.Background(), srv.addr, lie, time.Second)
			if !errors.Is(err, ErrExhausted) {
				t.Fatalf("all full: %v", err)
			}
			if !errors.Is(err, syscall.EADDRNOTAVAIL) && !errors.Is(err, syscall.EADDRINUSE) {
				t.Errorf("cause: %v", err)
			}
			t.Log(err)
			if msg := err.Error(); !strings.Contains(msg, srv.addr.String()) || !strings.Contains(msg, "2 sources tried") {
				t.Errorf("message %q", msg)
			}
			st = p.Stats(nil)
			if st[0].Exhausted != 1 || st[1].Exhausted != 2 || st[0].InFlight != 0 || st[1].InFlight != 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// An address that is not the host's fails at bind; Dial goes on with the
// others, and Check reports it.
func TestDialUnbindableSource(t *testing.T) {
	if b, _ := os.ReadFile("/proc/sys/net/ipv4/ip_nonlocal_bind"); strings.TrimSpace(string(b)) != "0" {
		t.Skip("net.ipv4.ip_nonlocal_bind is set: every address can be bound")
	}
	srv := newTestServer(t, "tcp4", "127.0.0.1:0")
	p := mustPool(t, "192.0.2.77,127.0.0.2")
	_, a := dial(t, p, srv.addr, fakeOcc{addr("127.0.0.2"): 10})
	if a != addr("127.0.0.2") {
		t.Fatalf("source %s", a)
	}
	if st := p.Stats(nil); st[0].Failed != 1 || st[0].Exhausted != 0 {
		t.Errorf("stats %+v", st)
	}
	warns, err := p.Check()
	if err != nil || len(warns) != 1 || !strings.Contains(warns[0], "192.0.2.77: not an address of this host") {
		t.Errorf("Check: %q, %v", warns, err)
	}
	_, err = mustPool(t, "192.0.2.77").Check()
	if err == nil || !strings.Contains(err.Error(), "net.ipv4.ip_nonlocal_bind=1") {
		t.Errorf("Check of an unbindable pool: %v", err)
	}
	if _, err := mustPool(t, "127.0.0.2-127.0.0.9").Check(); err != nil {
		t.Errorf("Check of loopback addresses: %v", err)
	}
}

// A server error is not the source's: no fallback.
func TestDialRefusedNoFallback(t *testing.T) {
	ln, _ := net.Listen("tcp4", "127.0.0.1:0")
	dead := ln.Addr().(*net.TCPAddr).AddrPort()
	ln.Close()
	p := mustPool(t, "127.0.0.2,127.0.0.3")
	_, _, err := p.Dial(context.Background(), dead, nil, time.Second)
	if !errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, ErrExhausted) {
		t.Fatalf("err = %v", err)
	}
	var tried uint64
	for _, s := range p.Stats(nil) {
		tried += s.Selections
	}
	if tried != 1 {
		t.Errorf("%d attempts", tried)
	}
}

func TestDialCanceled(t *testing.T) {
	srv := newTestServer(t, "tcp4", "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, err := mustPool(t, "127.0.0.2").Dial(ctx, srv.addr, nil, time.Second)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
}

func TestDialInterface(t *testing.T) {
	srv := newTestServer(t, "tcp4", "127.0.0.1:0")
	p := mustPool(t, "127.0.0.2", "interface", "lo")
	if _, err := p.Check(); err != nil {
		t.Fatal(err)
	}
	_, a := dial(t, p, srv.addr, nil)
	if a != addr("127.0.0.2") {
		t.Fatalf("source %s", a)
	}
	_, err := mustPool(t, "127.0.0.2", "interface", "nosuchif0").Check()
	if err == nil || !strings.Contains(err.Error(), "interface nosuchif0: no such network interface") {
		t.Errorf("Check: %v", err)
	}
}

// usesrc ADDR: the connection leaves from that address with IP_TRANSPARENT
// (root). On loopback the address is local, so no TPROXY routing is needed.
func TestDialUseSrc(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("IP_TRANSPARENT needs CAP_NET_ADMIN (run as root)")
	}
	srv := newTestServer(t, "tcp4", "127.0.0.1:0")
	p := mustPool(t, "127.0.0.2", "usesrc", "127.0.0.7")
	if _, err := p.Check(); err != nil {
		t.Fatal(err)
	}
	_, a := dial(t, p, srv.addr, nil)
	if a != addr("127.0.0.7") || srv.waitPeers(t, 1)[0].Addr() != a {
		t.Fatalf("source %s, server saw %v", a, srv.peers)
	}
	ci := mustPool(t, "0.0.0.0", "usesrc", "clientip")
	c, err := ci.DialTransparent(context.Background(), srv.addr, netip.MustParseAddrPort("127.0.0.8:5555"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.LocalAddr().(*net.TCPAddr).AddrPort(); got.Addr() != addr("127.0.0.8") || got.Port() == 5555 {
		t.Errorf("clientip: local %s", got)
	}
	if _, _, err := ci.Dial(context.Background(), srv.addr, nil, time.Second); err == nil || !strings.Contains(err.Error(), "DialTransparent") {
		t.Errorf("Dial with usesrc clientip: %v", err)
	}
}

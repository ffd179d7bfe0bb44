package kernel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// requirePrivileged skips when the test cannot load eBPF (not root, or
// missing capabilities). One helper gates every privileged test.
func requirePrivileged(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root for eBPF (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON)")
	}
	if m := missingCaps(); len(m) > 0 {
		tb.Skipf("eBPF not permitted: missing %s", strings.Join(m, ", "))
	}
}

// kernelShouldHaveEBPF: count.c needs sockops with sk storage and STATE_CB,
// iter/tcp with bpf_skc_to_tcp_timewait_sock, cgroup bpf_link, and atomic
// exchange (-mcpu=v3) — all in Linux 5.12. A newer kernel that falls back is
// a failure, an older one a skip.
func kernelShouldHaveEBPF(tb testing.TB) bool {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return false
	}
	var major, minor int
	fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &major, &minor)
	return major > 5 || major == 5 && minor >= 12
}

// openEBPFCounters opens eBPF-mode counters (closed at cleanup), skipping or
// failing as requirePrivileged/kernelShouldHaveEBPF say.
func openEBPFCounters(tb testing.TB, opts Options) *Counters {
	tb.Helper()
	requirePrivileged(tb)
	opts.Logger = testLogger(tb)
	c, err := OpenCounters(opts)
	if err != nil {
		tb.Fatalf("OpenCounters: %v", err)
	}
	tb.Cleanup(func() {
		if err := c.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	if c.Mode() != ModeEBPF {
		if kernelShouldHaveEBPF(tb) {
			tb.Fatalf("counters fell back to %s on a kernel that supports eBPF (see the log line above)", c.Mode())
		}
		tb.Skipf("kernel without the eBPF features count.c needs: mode %s", c.Mode())
	}
	return c
}

func openNetlinkCounters(tb testing.TB, opts Options) *Counters {
	tb.Helper()
	opts.ForceNetlink = true
	opts.Logger = testLogger(tb)
	c, err := OpenCounters(opts)
	if err != nil {
		tb.Fatalf("OpenCounters: %v", err)
	}
	tb.Cleanup(func() { c.Close() })
	if c.Mode() != ModeNetlink {
		tb.Fatalf("mode %s, want netlink", c.Mode())
	}
	return c
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func testLogger(tb testing.TB) *slog.Logger {
	if _, ok := tb.(*testing.B); ok {
		return slog.New(slog.DiscardHandler) // a log line makes a "--- BENCH" block per run
	}
	return slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testServer accepts connections and follows the client's lead: it closes
// its end when the client closes (EOF or RST), and closes first when the
// client sends 'C'.
type testServer struct {
	ln   net.Listener
	addr netip.AddrPort
	mu   sync.Mutex
	open map[net.Conn]struct{}
	wg   sync.WaitGroup
}

func startServer(tb testing.TB, network, address string) *testServer {
	tb.Helper()
	for try := 0; ; try++ {
		ln, err := net.Listen(network, address)
		if err != nil {
			tb.Fatalf("listen %s %s: %v", network, address, err)
		}
		addr := ln.Addr().(*net.TCPAddr).AddrPort()
		addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
		// The tests expect exact numbers: the port must not be that of an
		// earlier listener with client sockets still in TIME_WAIT to it.
		if r := sockDiagRef(tb, []netip.AddrPort{addr}, nil); len(r.pair) > 0 && try < 20 {
			ln.Close()
			continue
		}
		s := &testServer{ln: ln, addr: addr, open: map[net.Conn]struct{}{}}
		s.wg.Add(1)
		go s.serve()
		tb.Cleanup(s.close)
		return s
	}
}

func (s *testServer) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.open[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			b := make([]byte, 64)
			for {
				n, err := c.Read(b)
				if err != nil || n > 0 && b[n-1] == 'C' {
					break
				}
			}
			c.Close()
			s.mu.Lock()
			delete(s.open, c)
			s.mu.Unlock()
		}()
	}
}

func (s *testServer) close() {
	s.ln.Close()
	s.mu.Lock()
	for c := range s.open {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// dialFrom connects from src (port chosen at connect time, as sluice's
// dialer does with IP_BIND_ADDRESS_NO_PORT, so that the port space is per
// (source, server) and TIME_WAIT sockets of other tuples do not exhaust it).
func dialFrom(src netip.Addr, dst netip.AddrPort) (*net.TCPConn, error) {
	d := net.Dialer{
		LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0)),
		Timeout:   5 * time.Second,
		Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
			})
			return errors.Join(err, serr)
		},
	}
	network := "tcp4"
	if dst.Addr().Is6() {
		network = "tcp6"
	}
	c, err := d.DialContext(context.Background(), network, dst.String())
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// ref is the reference: what sock_diag (ss -tan) shows for the registered
// addresses, aggregated by the test itself straight from the netlink dump.
type ref struct {
	server   map[netip.AddrPort]int // established, remote = server
	pair     map[pairKey]Counts
	frontend map[netip.AddrPort]int // established, local = frontend (exact or wildcard)
}

func sockDiagRef(tb testing.TB, servers, frontends []netip.AddrPort) ref {
	tb.Helper()
	r := ref{server: map[netip.AddrPort]int{}, pair: map[pairKey]Counts{}, frontend: map[netip.AddrPort]int{}}
	isServer := map[netip.AddrPort]bool{}
	for _, s := range servers {
		isServer[s] = true
	}
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		var socks []*netlink.Socket
		var err error
		for try := 0; try < 10; try++ {
			if socks, err = netlink.SocketDiagTCP(fam); !errors.Is(err, netlink.ErrDumpInterrupted) {
				break
			}
		}
		if err != nil {
			tb.Fatalf("sock_diag dump: %v", err)
		}
		for _, s := range socks {
			l, _ := netip.AddrFromSlice(s.ID.Source)
			rm, _ := netip.AddrFromSlice(s.ID.Destination)
			local := netip.AddrPortFrom(l.Unmap(), s.ID.SourcePort)
			remote := netip.AddrPortFrom(rm.Unmap(), s.ID.DestinationPort)
			if isServer[remote] {
				k := pairKey{local.Addr(), remote}
				c := r.pair[k]
				c.Occupied++
				switch s.State {
				case netlink.TCP_ESTABLISHED:
					c.Established++
					r.server[remote]++
				case netlink.TCP_TIME_WAIT:
					c.TimeWait++
				}
				r.pair[k] = c
			}
			if s.State != netlink.TCP_ESTABLISHED {
				continue
			}
			for _, fe := range frontends {
				if fe.Port() != local.Port() {
					continue
				}
				match := fe == local ||
					fe.Addr().IsUnspecified() && fe.Addr().Is4() == local.Addr().Is4() ||
					fe.Addr() == netip.IPv6Unspecified() && s.Family == unix.AF_INET6
				if match {
					r.frontend[fe]++
					break
				}
			}
		}
	}
	return r
}

// diff compares every reader of c with the reference and returns the
// differences, one per line ("" when equal).
func diff(tb testing.TB, c *Counters, servers, frontends []netip.AddrPort, sources []netip.Addr) string {
	tb.Helper()
	r := sockDiagRef(tb, servers, frontends)
	occ, err := c.Scan()
	if err != nil {
		tb.Fatalf("Scan: %v", err)
	}
	var d []string
	for _, s := range servers {
		if got, want := c.Established(s), r.server[s]; got != want {
			d = append(d, fmt.Sprintf("Established(%s) = %d, sock_diag %d", s, got, want))
		}
		var tw int
		for _, src := range sources {
			want := r.pair[pairKey{src, s}]
			tw += want.TimeWait
			if got := c.SourceEstablished(src, s); got != want.Established {
				d = append(d, fmt.Sprintf("SourceEstablished(%s, %s) = %d, sock_diag %d", src, s, got, want.Established))
			}
			if got := occ.Get(src, s); got != want {
				d = append(d, fmt.Sprintf("Scan (%s, %s) = %+v, sock_diag %+v", src, s, got, want))
			}
		}
		if got := occ.ServerTimeWait(s); got != tw {
			d = append(d, fmt.Sprintf("ServerTimeWait(%s) = %d, sock_diag %d", s, got, tw))
		}
	}
	// Pairs from sources the test did not list must match too.
	occ.Each(func(src netip.Addr, s netip.AddrPort, got Counts) {
		if want := r.pair[pairKey{src, s}]; got != want {
			d = append(d, fmt.Sprintf("Scan.Each (%s, %s) = %+v, sock_diag %+v", src, s, got, want))
		}
	})
	if occ.Len() != len(r.pair) {
		d = append(d, fmt.Sprintf("Scan has %d pairs, sock_diag %d", occ.Len(), len(r.pair)))
	}
	for _, fe := range frontends {
		if got, want := c.FrontendEstablished(fe), r.frontend[fe]; got != want {
			d = append(d, fmt.Sprintf("FrontendEstablished(%s) = %d, sock_diag %d", fe, got, want))
		}
	}
	sort.Strings(d)
	return strings.Join(d, "\n")
}

// eventually polls cond until it returns "" or the deadline passes, then
// fails with its last answer.
func eventually(tb testing.TB, timeout time.Duration, what string, cond func() string) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s: still not true after %s:\n%s", what, timeout, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// closeClientFirst makes the client close first (its socket ends in TIME_WAIT once
// the server, which closes on EOF, has closed too).
func closeClientFirst(c *net.TCPConn) { c.Close() }

// closeServerFirst asks the server to close first; the client then closes
// (its socket goes CLOSE_WAIT -> LAST_ACK -> gone, the server's TIME_WAIT).
func closeServerFirst(c *net.TCPConn) {
	if _, err := c.Write([]byte{'C'}); err == nil {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.Copy(io.Discard, c)
	}
	c.Close()
}

// closeReset aborts the connection with an RST (no TIME_WAIT anywhere).
func closeReset(c *net.TCPConn) {
	c.SetLinger(0)
	c.Close()
}

func loopbackSources(n int) []netip.Addr {
	out := make([]netip.Addr, n)
	for i := range out {
		out[i] = netip.AddrFrom4([4]byte{127, 0, 0, byte(2 + i)})
	}
	return out
}

package kernel

import (
	"bytes"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestCountersEBPFMatchSockDiag(t *testing.T) {
	c := openEBPFCounters(t, Options{MinScanInterval: -1})
	if c.Cgroup() == "" {
		t.Fatal("no cgroup reported in eBPF mode")
	}
	testMatchSockDiag(t, c)
}

func TestCountersNetlinkMatchSockDiag(t *testing.T) {
	// Every reader is a dump in netlink mode: with the default interval the
	// dozens of reads of one comparison share one, as in the daemon.
	c := openNetlinkCounters(t, Options{})
	testMatchSockDiag(t, c)
}

// testMatchSockDiag opens a known number of connections from several
// sources to several servers, closes some client-first so that they sit in
// TIME_WAIT, and checks every reader against both the known numbers and
// sock_diag; then churns 10,000 connections (closed client-first,
// server-first and by RST) and checks that the readers come back to equality.
func testMatchSockDiag(t *testing.T, c *Counters) {
	sources := loopbackSources(4)
	var srvs []*testServer
	for range 3 {
		srvs = append(srvs, startServer(t, "tcp4", "127.0.0.1:0"))
	}
	six := startServer(t, "tcp6", "[::1]:0")
	dual := startServer(t, "tcp", ":0") // [::]:port, dual-stack
	srvs = append(srvs, six)

	var servers []netip.AddrPort
	for _, s := range srvs {
		servers = append(servers, s.addr)
	}
	dualAddr := netip.AddrPortFrom(netip.IPv6Unspecified(), dual.addr.Port())
	frontends := append(append([]netip.AddrPort(nil), servers...), dualAddr)
	if err := c.SetServers(servers); err != nil {
		t.Fatal(err)
	}
	if err := c.SetFrontends(frontends); err != nil {
		t.Fatal(err)
	}

	// open[i][j] connections from sources[i] to servers[j]; closed[i][j]
	// of them are closed client-first.
	type tuple struct {
		src    netip.Addr
		server netip.AddrPort
	}
	var tuples []tuple
	for _, src := range sources {
		for _, s := range servers[:3] {
			tuples = append(tuples, tuple{src, s})
		}
	}
	tuples = append(tuples, tuple{netip.IPv6Loopback(), six.addr})
	want := map[tuple]Counts{}
	var kept []*net.TCPConn
	t.Cleanup(func() {
		for _, k := range kept {
			k.Close()
		}
	})
	for i, tp := range tuples {
		n, m := 2+i%5, i%3 // some tuples with nothing closed
		var conns []*net.TCPConn
		for range n {
			k, err := dialFrom(tp.src, tp.server)
			if err != nil {
				t.Fatalf("dial %s -> %s: %v", tp.src, tp.server, err)
			}
			conns = append(conns, k)
		}
		for _, k := range conns[:m] {
			closeClientFirst(k)
		}
		kept = append(kept, conns[m:]...)
		want[tp] = Counts{Established: n - m, TimeWait: m, Occupied: n}
	}
	// Two clients of the dual-stack frontend: one IPv4 (an AF_INET6
	// socket with an IPv4-mapped address on the server side), one IPv6.
	for _, a := range []netip.AddrPort{
		netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), dual.addr.Port()),
		netip.AddrPortFrom(netip.IPv6Loopback(), dual.addr.Port()),
	} {
		k, err := dialFrom(a.Addr(), a)
		if err != nil {
			t.Fatalf("dial %s: %v", a, err)
		}
		kept = append(kept, k)
	}

	// The known numbers, once the closes have settled (TIME_WAIT reached).
	eventually(t, 10*time.Second, "known counts", func() string {
		occ, err := c.Scan()
		if err != nil {
			t.Fatalf("Scan: %v", err)
		}
		var d string
		perServer := map[netip.AddrPort]int{}
		for tp, w := range want {
			perServer[tp.server] += w.Established
			if got := occ.Get(tp.src, tp.server); got != w {
				d += fmt.Sprintf("Scan(%s, %s) = %+v, want %+v\n", tp.src, tp.server, got, w)
			}
			if got := c.SourceEstablished(tp.src, tp.server); got != w.Established {
				d += fmt.Sprintf("SourceEstablished(%s, %s) = %d, want %d\n", tp.src, tp.server, got, w.Established)
			}
		}
		for s, w := range perServer {
			if got := c.Established(s); got != w {
				d += fmt.Sprintf("Established(%s) = %d, want %d\n", s, got, w)
			}
			if got := c.FrontendEstablished(s); got != w {
				d += fmt.Sprintf("FrontendEstablished(%s) = %d, want %d\n", s, got, w)
			}
		}
		if got := c.FrontendEstablished(dualAddr); got != 2 {
			d += fmt.Sprintf("FrontendEstablished(%s) = %d, want 2\n", dualAddr, got)
		}
		return d
	})
	allSources := append(append([]netip.Addr(nil), sources...), netip.IPv6Loopback())
	eventually(t, 10*time.Second, "readers equal sock_diag", func() string {
		return diff(t, c, servers, frontends, allSources)
	})
	occ, err := c.Scan()
	if err != nil {
		t.Fatal(err)
	}
	if got := occ.Sources(servers[0]); len(got) != len(sources) {
		t.Errorf("Sources(%s) = %v, want %v", servers[0], got, sources)
	}

	// Churn: random opens and closes from several goroutines, bounded in
	// time, with the readers used concurrently.
	const total = 10000
	var (
		opened atomic.Int64
		wg     sync.WaitGroup
		stop   = make(chan struct{})
		errs   = make(chan error, 16)
	)
	deadline := time.Now().Add(25 * time.Second)
	go func() { // readers under churn
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, s := range servers {
				c.Established(s)
				c.SourceEstablished(sources[0], s)
				c.FrontendEstablished(s)
			}
			if _, err := c.Scan(); err != nil {
				errs <- err
				return
			}
			// Reading concurrently is the point, not starving the churn
			// of CPU (a netlink dump walks every socket of the netns).
			time.Sleep(20 * time.Millisecond)
		}
	}()
	var keptMu sync.Mutex
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			var pool []*net.TCPConn
			closeOne := func(k *net.TCPConn) {
				switch rng.IntN(3) {
				case 0:
					closeClientFirst(k)
				case 1:
					closeServerFirst(k)
				default:
					closeReset(k)
				}
			}
			for opened.Add(1) <= total && time.Now().Before(deadline) {
				tp := tuples[rng.IntN(len(tuples))]
				k, err := dialFrom(tp.src, tp.server)
				if err != nil {
					errs <- fmt.Errorf("churn dial %s -> %s: %w", tp.src, tp.server, err)
					return
				}
				pool = append(pool, k)
				for len(pool) > 0 && rng.IntN(3) > 0 {
					i := rng.IntN(len(pool))
					closeOne(pool[i])
					pool[i] = pool[len(pool)-1]
					pool = pool[:len(pool)-1]
				}
			}
			keptMu.Lock()
			kept = append(kept, pool...) // left open: established counts stay non-zero
			keptMu.Unlock()
		}()
	}
	wg.Wait()
	close(stop)
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	n := min(opened.Load(), total)
	t.Logf("churn: %d connections", n)
	if n < total {
		t.Logf("churn stopped at the time bound, after %d connections", n)
	}
	eventually(t, 20*time.Second, "readers equal sock_diag after churn", func() string {
		return diff(t, c, servers, frontends, allSources)
	})
	var sum Counts
	occ, _ = c.Scan()
	occ.Each(func(_ netip.Addr, _ netip.AddrPort, k Counts) { sum.add(k) })
	est := 0
	for _, s := range servers {
		est += c.FrontendEstablished(s)
	}
	t.Logf("after churn, equal to sock_diag: %d sockets to the servers (%d established, %d in TIME_WAIT), %d accepted established",
		sum.Occupied, sum.Established, sum.TimeWait, est)
	if lost := c.Lost(); lost != 0 {
		t.Errorf("Lost() = %d", lost)
	}
}

// Several instances attached to one cgroup count independently (each has
// its own maps); closing one leaves the others counting. The counts of a
// server that is unregistered and registered again carry on.
func TestCountersInstancesAndReregistration(t *testing.T) {
	a := openEBPFCounters(t, Options{MinScanInterval: -1})
	b := openEBPFCounters(t, Options{MinScanInterval: -1})
	sa := startServer(t, "tcp4", "127.0.0.1:0")
	sb := startServer(t, "tcp4", "127.0.0.1:0")
	if err := a.SetServers([]netip.AddrPort{sa.addr}); err != nil {
		t.Fatal(err)
	}
	if err := b.SetServers([]netip.AddrPort{sb.addr}); err != nil {
		t.Fatal(err)
	}
	src := netip.MustParseAddr("127.0.0.1")
	dial := func(s netip.AddrPort, n int) []*net.TCPConn {
		var out []*net.TCPConn
		for range n {
			k, err := dialFrom(src, s)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { k.Close() })
			out = append(out, k)
		}
		return out
	}
	ca := dial(sa.addr, 3)
	dial(sb.addr, 2)
	check := func(c *Counters, s netip.AddrPort, want int) {
		t.Helper()
		eventually(t, 5*time.Second, "count", func() string {
			if got := c.Established(s); got != want {
				return fmt.Sprintf("Established(%s) = %d, want %d", s, got, want)
			}
			return ""
		})
	}
	check(a, sa.addr, 3)
	check(a, sb.addr, 0)
	check(b, sb.addr, 2)
	check(b, sa.addr, 0)

	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if got := b.Established(sb.addr); got != 0 {
		t.Errorf("closed instance: Established = %d", got)
	}
	if _, err := b.Scan(); err == nil {
		t.Error("Scan after Close: no error")
	}

	// Unregister, close one connection meanwhile, register again.
	if err := a.SetServers(nil); err != nil {
		t.Fatal(err)
	}
	closeReset(ca[0])
	check(a, sa.addr, 2) // a counted socket is uncounted even when its server is gone
	dial(sa.addr, 1)     // not registered: not counted
	check(a, sa.addr, 2)
	if err := a.SetServers([]netip.AddrPort{sa.addr}); err != nil {
		t.Fatal(err)
	}
	dial(sa.addr, 2)
	check(a, sa.addr, 4)
	closeClientFirst(ca[1])
	check(a, sa.addr, 3)
}

func TestOccupancyNil(t *testing.T) {
	var o *Occupancy
	s := netip.MustParseAddrPort("127.0.0.1:80")
	if o.TimeWait(s.Addr(), s) != 0 || o.Established(s.Addr(), s) != 0 || o.Occupied(s.Addr(), s) != 0 ||
		o.ServerTimeWait(s) != 0 || o.Sources(s) != nil || o.Len() != 0 {
		t.Error("nil Occupancy is not empty")
	}
	o.Each(func(netip.Addr, netip.AddrPort, Counts) { t.Error("Each on nil") })
	var c *Counters
	if c.Established(s) != 0 || c.Mode() != "" || c.Close() != nil || c.SetServers([]netip.AddrPort{s}) != nil {
		t.Error("nil Counters is not inert")
	}
}

func TestOccupancyUnmapsAndSorts(t *testing.T) {
	srv := netip.MustParseAddrPort("10.0.0.1:80")
	a, b := netip.MustParseAddr("10.0.0.9"), netip.MustParseAddr("10.0.0.2")
	o := newOccupancy(time.Now(), map[pairKey]Counts{
		{a, srv}: {Established: 1, TimeWait: 2, Occupied: 4},
		{b, srv}: {TimeWait: 5, Occupied: 5},
	})
	mapped := netip.AddrPortFrom(netip.MustParseAddr("::ffff:10.0.0.1"), 80)
	if got := o.TimeWait(netip.MustParseAddr("::ffff:10.0.0.9"), mapped); got != 2 {
		t.Errorf("TimeWait via mapped addresses = %d, want 2", got)
	}
	if got := o.ServerTimeWait(srv); got != 7 {
		t.Errorf("ServerTimeWait = %d, want 7", got)
	}
	if got := o.Sources(srv); len(got) != 2 || got[0] != b || got[1] != a {
		t.Errorf("Sources = %v, want [%s %s]", got, b, a)
	}
	var order []netip.Addr
	o.Each(func(src netip.Addr, _ netip.AddrPort, _ Counts) { order = append(order, src) })
	if len(order) != 2 || order[0] != b {
		t.Errorf("Each order = %v", order)
	}
}

func TestFrontendOf(t *testing.T) {
	fes, err := newAddrSet([]netip.AddrPort{
		netip.MustParseAddrPort("127.0.0.1:80"),
		netip.MustParseAddrPort("0.0.0.0:81"),
		netip.MustParseAddrPort("[::]:82"),
		netip.MustParseAddrPort("[::1]:83"),
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		local   string
		family6 bool
		want    string
	}{
		{"127.0.0.1:80", false, "127.0.0.1:80"},
		{"[::ffff:127.0.0.1]:80", true, "127.0.0.1:80"},
		{"127.0.0.2:80", false, ""},
		{"10.1.2.3:81", false, "0.0.0.0:81"},
		{"[::ffff:10.1.2.3]:82", true, "[::]:82"}, // IPv4 client of a dual-stack listener
		{"10.1.2.3:82", false, ""},                // an AF_INET socket is not on [::]
		{"[2001:db8::1]:82", true, "[::]:82"},
		{"[::1]:83", true, "[::1]:83"},
		{"[::1]:84", true, ""},
	} {
		got, ok := frontendOf(fes, netip.MustParseAddrPort(tc.local), tc.family6)
		if tc.want == "" {
			if ok {
				t.Errorf("frontendOf(%s) = %s, want none", tc.local, got)
			}
			continue
		}
		if !ok || got != netip.MustParseAddrPort(tc.want) {
			t.Errorf("frontendOf(%s) = %s %v, want %s", tc.local, got, ok, tc.want)
		}
	}
	if _, err := newAddrSet([]netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")}); err == nil {
		t.Error("port 0 accepted")
	}
}

func TestEndpointRoundTrip(t *testing.T) {
	for _, s := range []string{"127.0.0.1:8080", "[::1]:443", "[2001:db8::ff00:42:8329]:1", "[::ffff:10.0.0.1]:80"} {
		ap := netip.MustParseAddrPort(s)
		if got := toEndpoint(ap).addrPort(); got != unmapAP(ap) {
			t.Errorf("round trip %s = %s", ap, got)
		}
	}
	e := toEndpoint(netip.MustParseAddrPort("1.2.3.4:80"))
	// The kernel stores addresses in network order: 1.2.3.4 is the bytes 1 2 3 4.
	if b := [4]byte{byte(e.Ip[0]), byte(e.Ip[0] >> 8), byte(e.Ip[0] >> 16), byte(e.Ip[0] >> 24)}; b != [4]byte{1, 2, 3, 4} {
		t.Errorf("ip word %#x", e.Ip[0])
	}
	if e.Family != 2 || e.Port != 80 {
		t.Errorf("endpoint %+v", e)
	}
}

// OpenCounters logs exactly one line saying which mode is active and why.
func TestOpenCountersModeLine(t *testing.T) {
	type tc struct {
		name  string
		opts  Options
		mode  Mode
		level string
		why   string
	}
	cases := []tc{
		{"disabled", Options{Disable: true}, ModeNetlink, "INFO", "no option kernel-counters"},
		{"forced", Options{ForceNetlink: true}, ModeNetlink, "INFO", "netlink forced"},
	}
	if os.Geteuid() != 0 {
		cases = append(cases, tc{"unprivileged", Options{}, ModeNetlink, "WARN", "not permitted"})
	} else {
		cases = append(cases,
			tc{"bad cgroup", Options{Cgroup: "/proc/self"}, ModeNetlink, "WARN", "not a cgroup v2 directory"},
			tc{"no cgroup", Options{Cgroup: "/nonexistent/cg"}, ModeNetlink, "WARN", "/nonexistent/cg"})
		if kernelShouldHaveEBPF(t) {
			cases = append(cases, tc{"ebpf", Options{}, ModeEBPF, "INFO", ""})
			if cg, err := OwnCgroup(); err == nil {
				cases = append(cases, tc{"explicit cgroup", Options{Cgroup: cg}, ModeEBPF, "INFO", "cgroup=" + cg})
			}
		}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var buf bytes.Buffer
			c.opts.Logger = slog.New(slog.NewTextHandler(&buf, nil))
			k, err := OpenCounters(c.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer k.Close()
			lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
			if len(lines) != 1 {
				t.Fatalf("%d log lines, want 1:\n%s", len(lines), buf.String())
			}
			if k.Mode() != c.mode || !strings.Contains(lines[0], "level="+c.level) ||
				!strings.Contains(lines[0], string(c.mode)) && !strings.Contains(lines[0], "eBPF") ||
				!strings.Contains(lines[0], c.why) {
				t.Errorf("mode %s, log %q; want mode %s, level %s, reason containing %q", k.Mode(), lines[0], c.mode, c.level, c.why)
			}
		})
	}
}

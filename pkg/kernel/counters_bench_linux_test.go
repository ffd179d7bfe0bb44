package kernel

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// benchTimeWait is how many TIME_WAIT sockets BenchmarkScan walks (on top of
// whatever else the network namespace holds). TIME_WAIT sockets hold no fd,
// so this needs no RLIMIT_NOFILE beyond the default.
const benchTimeWait = 20000

var (
	twOnce    sync.Once
	twServers []netip.AddrPort
	twErr     error
)

// timeWaitSockets opens and closes, client first, benchTimeWait loopback
// connections from 10 sources to 4 servers, once per process, and waits
// until the client ends are all in TIME_WAIT (60 s on Linux: enough for all
// the rounds of a benchmark run).
func timeWaitSockets(b *testing.B) []netip.AddrPort {
	twOnce.Do(func() {
		var srvs []*testServer
		for range 4 {
			srvs = append(srvs, startServer(b, "tcp4", "127.0.0.1:0"))
		}
		for _, s := range srvs {
			twServers = append(twServers, s.addr)
		}
		sources := loopbackSources(10)
		var (
			next atomic.Int64
			wg   sync.WaitGroup
			mu   sync.Mutex
		)
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := next.Add(1) - 1
					if i >= benchTimeWait {
						return
					}
					src := sources[i%int64(len(sources))]
					srv := twServers[(i/int64(len(sources)))%int64(len(twServers))]
					c, err := dialFrom(src, srv)
					if err != nil {
						mu.Lock()
						twErr = errors.Join(twErr, err)
						mu.Unlock()
						return
					}
					closeClientFirst(c)
				}
			}()
		}
		wg.Wait()
		if twErr != nil {
			return
		}
		// A sock_diag dump of a namespace whose sockets change meanwhile (the
		// TIME_WAIT sockets of earlier runs expire all the time) can miss a
		// few: wait until the count stops growing, and accept 0.1 % less.
		deadline := time.Now().Add(30 * time.Second)
		last, stable := -1, 0
		for {
			r := sockDiagRef(b, twServers, nil)
			tw := 0
			for _, c := range r.pair {
				tw += c.TimeWait
			}
			if tw == last {
				stable++
			} else {
				last, stable = tw, 0
			}
			if tw >= benchTimeWait || stable >= 3 && tw >= benchTimeWait*999/1000 {
				return
			}
			if time.Now().After(deadline) {
				twErr = fmt.Errorf("only %d of %d sockets reached TIME_WAIT", tw, benchTimeWait)
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	if twErr != nil {
		b.Fatal(twErr)
	}
	return twServers
}

// BenchmarkScan measures one pass over the TCP sockets of the network
// namespace with benchTimeWait TIME_WAIT sockets to the registered servers:
// iter/tcp (eBPF) against a sock_diag dump (netlink).
func BenchmarkScan(b *testing.B) {
	for _, mode := range []Mode{ModeEBPF, ModeNetlink} {
		b.Run(string(mode), func(b *testing.B) {
			var c *Counters
			if mode == ModeEBPF {
				c = openEBPFCounters(b, Options{MinScanInterval: -1})
			} else {
				c = openNetlinkCounters(b, Options{MinScanInterval: -1})
			}
			servers := timeWaitSockets(b)
			if err := c.SetServers(servers); err != nil {
				b.Fatal(err)
			}
			occ, err := c.Scan()
			if err != nil {
				b.Fatal(err)
			}
			tw := 0
			for _, s := range servers {
				tw += occ.ServerTimeWait(s)
			}
			if tw < benchTimeWait*999/1000 {
				b.Fatalf("scan sees %d TIME_WAIT sockets, want about %d", tw, benchTimeWait)
			}
			total := tcpSocketsInNetns(b)
			var prog func() time.Duration // time spent in count_scan so far
			if mode == ModeEBPF {
				if st, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME)); err == nil {
					defer st.Close()
					prog = func() time.Duration {
						s, err := c.bpf.objs.CountScan.Stats()
						if err != nil {
							return 0
						}
						return s.Runtime
					}
				}
			}
			var p0 time.Duration
			if prog != nil {
				p0 = prog()
			}
			b.ResetTimer()
			for b.Loop() {
				if _, err := c.Scan(); err != nil {
					b.Fatal(err)
				}
			}
			if prog != nil {
				b.ReportMetric(float64((prog()-p0).Nanoseconds())/float64(b.N), "prog-ns/op")
			}
			b.ReportMetric(float64(tw), "timewait")
			b.ReportMetric(float64(total), "sockets")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(total), "ns/socket")
		})
	}
}

// tcpSocketsInNetns counts the lines of /proc/net/tcp{,6} (every socket a
// pass walks).
func tcpSocketsInNetns(b *testing.B) int {
	n := 0
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, err := os.ReadFile(f)
		if err != nil {
			b.Fatal(err)
		}
		n += strings.Count(string(data), "\n") - 1
	}
	return n
}

// BenchmarkConnect measures loopback connections (connect, accept, RST
// close: no TIME_WAIT is left behind) without the sockops program ("off"),
// with it attached but the server not registered ("unregistered": the
// filter only), and with the server registered as server and as frontend
// ("registered": both ends counted, then uncounted). The three alternate in
// rounds of benchConnectRound connections, the program being detached and
// attached again around the "off" rounds, so that drift of a shared host
// hits all three alike; each is reported as the median over its rounds.
// Plain syscalls keep Go's netpoller out of the figures.
//
// Wall-clock differences of a few percent drown in the noise of a shared
// host, so the time spent in the program itself is reported too
// (prog-ns/conn, from the kernel's BPF run-time statistics, switched on for
// the benchmark; they add two clock reads per run).
func BenchmarkConnect(b *testing.B) {
	c := openEBPFCounters(b, Options{})
	if st, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME)); err == nil {
		defer st.Close()
	} else {
		b.Logf("no BPF run-time statistics: %v", err)
	}
	reg, unreg := rawServer(b), rawServer(b)
	if err := c.SetServers([]netip.AddrPort{reg}); err != nil {
		b.Fatal(err)
	}
	if err := c.SetFrontends([]netip.AddrPort{reg}); err != nil {
		b.Fatal(err)
	}
	attach := func(on bool) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if !on {
			if err := c.bpf.sockops.Close(); err != nil {
				b.Fatal(err)
			}
			return
		}
		cg, err := os.Open(c.Cgroup())
		if err != nil {
			b.Fatal(err)
		}
		defer cg.Close()
		l, err := link.AttachRawLink(link.RawLinkOptions{
			Target: int(cg.Fd()), Program: c.bpf.objs.CountSockops, Attach: ebpf.AttachCGroupSockOps,
		})
		if err != nil {
			b.Fatal(err)
		}
		c.bpf.sockops = l
	}

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	variants := []struct {
		name string
		srv  netip.AddrPort
	}{{"off", unreg}, {"unregistered", unreg}, {"registered", reg}}
	perConn := make([][]float64, len(variants))
	progNs := make([]time.Duration, len(variants))
	progConns := make([]int, len(variants))
	b.ResetTimer()
	for done := 0; done < b.N; {
		for v, vr := range variants {
			n := min(benchConnectRound, b.N-done)
			if n == 0 {
				break
			}
			if vr.name == "off" {
				attach(false)
			}
			s0, _ := c.bpf.objs.CountSockops.Stats()
			start := time.Now()
			connectN(b, vr.srv, n)
			perConn[v] = append(perConn[v], float64(time.Since(start).Nanoseconds())/float64(n))
			if vr.name == "off" {
				attach(true)
			} else if s1, err := c.bpf.objs.CountSockops.Stats(); err == nil && s0 != nil {
				progNs[v] += s1.Runtime - s0.Runtime
				progConns[v] += n
			}
			done += n
		}
	}
	b.StopTimer()
	for v, vr := range variants {
		if len(perConn[v]) > 0 {
			b.ReportMetric(median(perConn[v]), vr.name+"-ns/conn")
		}
		if progConns[v] > 0 && progNs[v] > 0 {
			b.ReportMetric(float64(progNs[v].Nanoseconds())/float64(progConns[v]), vr.name+"-prog-ns/conn")
		}
	}
	eventually(b, 5*time.Second, "counts back to zero", func() string {
		if n := c.Established(reg) + c.FrontendEstablished(reg); n != 0 {
			return fmt.Sprintf("%d still counted", n)
		}
		return ""
	})
	if got := c.Lost(); got != 0 {
		b.Errorf("lost %d", got)
	}
}

const benchConnectRound = 500

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func connectN(b *testing.B, srv netip.AddrPort, n int) {
	sa := &unix.SockaddrInet4{Port: int(srv.Port()), Addr: srv.Addr().As4()}
	for range n {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		if err := unix.Connect(fd, sa); err != nil {
			unix.Close(fd)
			b.Fatal(err)
		}
		unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		unix.Close(fd)
	}
}

// rawServer listens on 127.0.0.1 and accepts and closes connections on a
// thread of its own until the benchmark ends.
func rawServer(b *testing.B) netip.AddrPort {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		b.Fatal(err)
	}
	if err := unix.Listen(fd, 4096); err != nil {
		b.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		for {
			nfd, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
			if err != nil {
				if errors.Is(err, unix.EINTR) || errors.Is(err, unix.ECONNABORTED) {
					continue
				}
				return // the listener was shut down
			}
			unix.Close(nfd)
		}
	}()
	b.Cleanup(func() {
		unix.Shutdown(fd, unix.SHUT_RDWR) // wakes the blocked accept
		<-done
		unix.Close(fd)
	})
	return netip.AddrPortFrom(netip.AddrFrom4(sa.(*unix.SockaddrInet4).Addr), uint16(sa.(*unix.SockaddrInet4).Port))
}

//go:build linux

package kernel

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// spliceRequire gates the privileged splice tests: it skips with a reason
// when not root, and fails when the kernel is new enough (>= 6.10: sockhash
// links, tcp_read_skb) that splice should have worked.
func spliceRequire(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("kernel splice needs root (CAP_BPF + CAP_NET_ADMIN)")
	}
}

func spliceKernelAtLeast(major, minor int) bool {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return false
	}
	rel := unix.ByteSliceToString(u.Release[:])
	parts := strings.SplitN(rel, ".", 3)
	if len(parts) < 2 {
		return false
	}
	ma, _ := strconv.Atoi(parts[0])
	mi, _ := strconv.Atoi(strings.TrimFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }))
	return ma > major || ma == major && mi >= minor
}

// spliceNoCgroup as SplicerConfig.Cgroup: no flow control in the kernel.
const spliceNoCgroup = "-"

// spliceTestSplicer opens a Splicer for one test and checks, when the test
// ends, that no socket is left in any of its maps.
//
// Unless cfg.Cgroup is spliceNoCgroup, the splicer stops slow directions in
// the kernel (SplicerConfig.Cgroup), attached to the test process's own
// cgroup, where the tests' sockets are; with spliceNoCgroup it copies the
// overflow in userspace.
func spliceTestSplicer(t testing.TB, cfg SplicerConfig) *Splicer {
	t.Helper()
	spliceRequire(t)
	switch cfg.Cgroup {
	case spliceNoCgroup:
		cfg.Cgroup = ""
	case "":
		cg, err := OwnCgroup()
		if err != nil {
			t.Logf("no cgroup for the splicer's flow control (a slow reader's backlog is copied): %v", err)
		}
		cfg.Cgroup = cg
	}
	s, err := OpenSplicer(slog.New(slog.NewTextHandler(io.Discard, nil)), cfg)
	if err != nil {
		if errors.Is(err, ErrSpliceUnsupported) && !spliceKernelAtLeast(6, 10) {
			t.Skipf("kernel splice unsupported on this kernel: %v", err)
		}
		t.Fatalf("OpenSplicer: %v", err)
	}
	if cfg.Cgroup != "" && s.cgLinks == nil {
		s.Close()
		t.Fatalf("OpenSplicer: splice_sockops not attached to %s", cfg.Cgroup)
	}
	t.Cleanup(func() {
		spliceAssertMapsEmpty(t, s)
		if err := s.Close(); err != nil {
			t.Errorf("Splicer.Close: %v", err)
		}
	})
	return s
}

func spliceMapLen(t testing.TB, m *ebpf.Map) int {
	t.Helper()
	var k uint64
	var n int
	var it *ebpf.MapIterator
	if m.ValueSize() == 8 {
		// Sockhash values read back as cookies (8 bytes).
		var v uint64
		it = m.Iterate()
		for it.Next(&k, &v) {
			n++
		}
	} else {
		var v spliceSpliceSock
		it = m.Iterate()
		for it.Next(&k, &v) {
			n++
		}
	}
	if err := it.Err(); err != nil {
		t.Errorf("iterate %v: %v", m, err)
	}
	return n
}

func spliceAssertMapsEmpty(t testing.TB, s *Splicer) {
	t.Helper()
	for name, m := range map[string]*ebpf.Map{"state": s.objs.SpliceState, "drained": s.objs.SpliceDrained, "targets": s.objs.SpliceTargets, "socks": s.objs.SpliceSocks} {
		if n := spliceMapLen(t, m); n != 0 {
			t.Errorf("splice map %s has %d entries left", name, n)
		}
	}
	s.mu.Lock()
	n, nc := len(s.pairs), len(s.byCookie)
	s.mu.Unlock()
	if n != 0 || nc != 0 {
		t.Errorf("splicer still tracks %d pairs, %d cookies", n, nc)
	}
}

// spliceConnPair returns the two ends of one loopback TCP connection, dialed
// to and accepted from ln.
func spliceConnPair(t testing.TB, ln *net.TCPListener) (dialed, accepted *net.TCPConn) {
	t.Helper()
	d, err := net.DialTCP("tcp4", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	a, err := ln.AcceptTCP()
	if err != nil {
		d.Close()
		t.Fatalf("accept: %v", err)
	}
	return d, a
}

func spliceListen(t testing.TB) *net.TCPListener {
	t.Helper()
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// spliceTunnel is one tunnel as the tests build it: client <-> a (proxy,
// accepted) ... b (proxy, dialed) <-> server.
type spliceTunnel struct {
	client, a, b, server *net.TCPConn
}

func newSpliceTunnel(t testing.TB, ln *net.TCPListener) spliceTunnel {
	var tn spliceTunnel
	tn.client, tn.a = spliceConnPair(t, ln)
	tn.b, tn.server = spliceConnPair(t, ln)
	return tn
}

// spliceWaitResult is what a pair's Wait returned.
type spliceWaitResult struct {
	SpliceResult
	err error
}

// spliceStart splices a new tunnel on s and runs its Wait (idle timeout idle)
// until the test ends or d has passed (also the ends' I/O deadline); Wait's
// result arrives on the channel. The ends are closed at cleanup.
func spliceStart(t *testing.T, s *Splicer, d, idle time.Duration) (spliceTunnel, *SplicedPair, <-chan spliceWaitResult) {
	t.Helper()
	tn := newSpliceTunnel(t, spliceListen(t))
	t.Cleanup(tn.closeEnds)
	p, err := s.Splice(tn.a, tn.b)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(d)
	tn.client.SetDeadline(deadline)
	tn.server.SetDeadline(deadline)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	t.Cleanup(cancel)
	res := make(chan spliceWaitResult, 1)
	go func() {
		r, err := p.Wait(ctx, idle, 0, 0)
		res <- spliceWaitResult{r, err}
	}()
	return tn, p, res
}

func (tn spliceTunnel) closeEnds() {
	tn.client.Close()
	tn.server.Close()
}

// spliceCountFDs is the number of open descriptors of this process.
func spliceCountFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("read /proc/self/fd: %v", err)
	}
	return len(ents)
}

// spliceDeadline bounds a test step.
func spliceDeadline(t testing.TB, c net.Conn, d time.Duration) {
	t.Helper()
	c.SetDeadline(time.Now().Add(d))
}

// spliceMemInfo is the kernel's TCP and skb memory use, for test logs.
func spliceMemInfo() string {
	b, _ := os.ReadFile("/proc/net/sockstat")
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "TCP:") {
			out = append(out, l)
		}
	}
	m, _ := os.ReadFile("/proc/meminfo")
	for _, l := range strings.Split(string(m), "\n") {
		if strings.HasPrefix(l, "MemAvailable:") || strings.HasPrefix(l, "Slab:") {
			out = append(out, strings.Join(strings.Fields(l), " "))
		}
	}
	return strings.Join(out, "; ")
}

// spliceHeavy skips the saturating multi-GiB tests unless asked for (they take
// seconds of both cores and GiBs of loopback traffic). They are what showed
// the "duplicated 64 KiB skb": a TCP retransmission overlapping bytes already
// received, which tcp_read_skb hands the program whole; the program now cuts
// the repeat (SpliceStats.Repeated, TestSplicePartlyReadSkb). Run them with
// SLUICE_SPLICE_HEAVY=1.
func spliceHeavy(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("multi-GiB transfer; skipped with -short")
	}
	if os.Getenv("SLUICE_SPLICE_HEAVY") == "" {
		t.Skip("multi-GiB saturating transfer; set SLUICE_SPLICE_HEAVY=1 to run it")
	}
}

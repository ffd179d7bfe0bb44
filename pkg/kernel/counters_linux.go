package kernel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/rlimit"
)

// Counters count sluice's TCP sockets per backend server, per (source,
// server) and per frontend, as the kernel sees them.
//
// In eBPF mode the established readers are live counters kept by sockops
// for the sockets of the daemon's cgroup (one map lookup per call), and Scan
// is an iter/tcp pass over the sockets of the network namespace. In netlink
// mode every reader comes from a sock_diag dump of the whole network
// namespace, made at most once per MinScanInterval: the established readers
// then also count sockets of other processes to the same addresses, and lag
// by up to the interval.
//
// Network namespaces: sockops counts the cgroup's sockets whatever their
// namespace (the registered addresses carry none). Scan, and every reader in
// netlink mode, see the network namespace of the OS thread that makes the
// pass: the kernel binds an iter/tcp iterator, like a sock_diag socket, to
// the namespace of the thread that creates it. A daemon with threads in
// other namespaces must call them from one in its own.
//
// All methods are safe for concurrent use, and a nil *Counters reads zeros.
type Counters struct {
	mode    Mode
	log     *slog.Logger
	minScan time.Duration

	// mu guards the registered sets and closed; readers of the eBPF maps
	// hold it shared so that Close cannot free a map under them.
	mu        sync.RWMutex
	servers   addrSet
	frontends addrSet
	closed    bool
	setGen    atomic.Uint64 // bumped by every SetServers/SetFrontends

	bpf *ebpfCounters // eBPF mode

	// scanMu serialises passes (iter/tcp or dump) and guards the cache.
	// Lock order: scanMu before mu.
	scanMu   sync.Mutex
	scanAt   time.Time
	cacheGen uint64 // setGen the cached pass was filtered with
	scanned  *Occupancy
	snap     *nlSnapshot // netlink mode
}

// ErrClosed is returned by Scan after Close.
var ErrClosed = errors.New("kernel counters closed")

// OpenCounters loads and attaches the count programs, or falls back to
// netlink sock_diag when eBPF is disabled, not permitted or not supported.
// It logs one line saying which mode is active and why. It fails only if
// neither works.
func OpenCounters(opts Options) (*Counters, error) {
	c := &Counters{
		log:       opts.logger(),
		minScan:   opts.minScan(),
		servers:   addrSet{},
		frontends: addrSet{},
	}
	var why string
	level := slog.LevelInfo
	switch {
	case opts.Disable:
		why = "disabled by `no option kernel-counters`"
	case opts.ForceNetlink:
		why = "netlink forced"
	default:
		bpf, err := tryEBPF(opts.Cgroup)
		if err == nil {
			c.mode, c.bpf = ModeEBPF, bpf
			c.log.Info("kernel counters: eBPF", "cgroup", bpf.cgroup,
				"detail", "sockops counts the established connections of this cgroup, iter/tcp scans TIME_WAIT")
			return c, nil
		}
		why, level = err.Error(), slog.LevelWarn
	}
	c.mode = ModeNetlink
	if _, err := dumpTCP(); err != nil {
		return nil, fmt.Errorf("kernel counters: eBPF off (%s), and %w", why, err)
	}
	refresh := "at most every " + c.minScan.String()
	if c.minScan == 0 {
		refresh = "on every read"
	}
	c.log.Log(context.Background(), level, "kernel counters: netlink sock_diag", "reason", why,
		"detail", "counts cover every process of the network namespace, refreshed "+refresh)
	return c, nil
}

// tryEBPF checks what eBPF mode needs, then loads and attaches.
func tryEBPF(cgroup string) (*ebpfCounters, error) {
	if missing := missingCaps(); len(missing) > 0 {
		return nil, fmt.Errorf("eBPF not permitted: missing %s", strings.Join(missing, ", "))
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("eBPF not permitted: raise RLIMIT_MEMLOCK: %w", err)
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return nil, fmt.Errorf("eBPF unavailable: no kernel BTF: %w", err)
	}
	if err := features.HaveProgramType(ebpf.SockOps); err != nil {
		return nil, fmt.Errorf("eBPF unavailable: program type %s: %w", ebpf.SockOps, err)
	}
	if err := probeProg(ebpf.Tracing, ebpf.AttachTraceIter, "tcp", 0); err != nil {
		return nil, fmt.Errorf("eBPF unavailable: iter/tcp: %w", err)
	}
	if err := features.HaveMapType(ebpf.SkStorage); err != nil {
		return nil, fmt.Errorf("eBPF unavailable: map type %s: %w", ebpf.SkStorage, err)
	}
	if cgroup == "" {
		var err error
		if cgroup, err = OwnCgroup(); err != nil {
			return nil, err
		}
	}
	if err := checkCgroup2(cgroup); err != nil {
		return nil, err
	}
	return openEBPF(cgroup)
}

// Mode says where the counts come from.
func (c *Counters) Mode() Mode {
	if c == nil {
		return ""
	}
	return c.mode
}

// Cgroup is the cgroup sockops is attached to ("" in netlink mode).
func (c *Counters) Cgroup() string {
	if c == nil || c.bpf == nil {
		return ""
	}
	return c.bpf.cgroup
}

// SetServers replaces the set of backend server addresses that are counted
// (at start and on reload). The programs stay loaded; the counts of an
// address that stays, or comes back, carry on.
func (c *Counters) SetServers(addrs []netip.AddrPort) error {
	return c.set(addrs, false)
}

// SetFrontends replaces the set of frontend (listening) addresses whose
// accepted connections are counted. A wildcard address (0.0.0.0:80, [::]:80)
// counts the connections accepted on any local address with that port.
func (c *Counters) SetFrontends(addrs []netip.AddrPort) error {
	return c.set(addrs, true)
}

func (c *Counters) set(addrs []netip.AddrPort, frontends bool) error {
	if c == nil {
		return nil
	}
	next, err := newAddrSet(addrs)
	if err != nil {
		return fmt.Errorf("kernel counters: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	old := &c.servers
	if frontends {
		old = &c.frontends
	}
	if c.bpf != nil {
		m, gone := c.bpf.objs.Servers, c.bpf.goneServers
		if frontends {
			m, gone = c.bpf.objs.Frontends, c.bpf.goneFrontends
		}
		if err := c.bpf.setAddrs(m, gone, *old, next); err != nil {
			// The map may now hold any of old and next: remember them
			// all, so that the next call deletes what it does not want.
			union := maps.Clone(*old)
			maps.Copy(union, next)
			*old = union
			c.setGen.Add(1)
			return fmt.Errorf("kernel counters: %w", err)
		}
		c.bpf.gc(time.Now())
	}
	*old = next
	// A cached pass filtered by the old set must not answer for the new one.
	c.setGen.Add(1)
	return nil
}

// Established is the number of ESTABLISHED connections to server: in eBPF
// mode those opened from the daemon's cgroup, in netlink mode any in the
// network namespace.
func (c *Counters) Established(server netip.AddrPort) int {
	return c.read(func(b *ebpfCounters) int { return b.established(server) },
		func(s *nlSnapshot) int { return s.server[unmapAP(server)] })
}

// read serves a reader from the live eBPF maps, or from the netlink
// snapshot.
func (c *Counters) read(fromBPF func(*ebpfCounters) int, fromSnapshot func(*nlSnapshot) int) int {
	if c == nil {
		return 0
	}
	if c.bpf != nil {
		c.mu.RLock()
		defer c.mu.RUnlock()
		if c.closed {
			return 0
		}
		return fromBPF(c.bpf)
	}
	if s := c.snapshot(); s != nil {
		return fromSnapshot(s)
	}
	return 0
}

// SourceEstablished is the number of ESTABLISHED connections from the local
// address src to server.
func (c *Counters) SourceEstablished(src netip.Addr, server netip.AddrPort) int {
	return c.read(func(b *ebpfCounters) int { return b.sourceEstablished(src.Unmap(), server) },
		func(s *nlSnapshot) int { return s.pair[pairKey{src.Unmap(), unmapAP(server)}] })
}

// FrontendEstablished is the number of ESTABLISHED connections accepted by
// the registered frontend fe.
func (c *Counters) FrontendEstablished(fe netip.AddrPort) int {
	return c.read(func(b *ebpfCounters) int { return b.frontendEstablished(fe) },
		func(s *nlSnapshot) int { return s.frontend[unmapAP(fe)] })
}

// Lost is the number of sockets the kernel side could not count because a
// map was full (eBPF mode; the established counters or a Scan's table): the
// readers are low by up to that. It only grows.
func (c *Counters) Lost() uint64 {
	if c == nil || c.bpf == nil {
		return 0
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return 0
	}
	return c.bpf.lost()
}

// Scan returns the sockets to each registered server by source and state,
// from a pass made at most MinScanInterval ago.
func (c *Counters) Scan() (*Occupancy, error) {
	if c == nil {
		return nil, ErrClosed
	}
	c.scanMu.Lock()
	defer c.scanMu.Unlock()
	if c.scanned != nil && c.freshLocked() {
		return c.scanned, nil
	}
	if c.bpf == nil {
		s, err := c.refreshLocked()
		if err != nil {
			return nil, err
		}
		return s.occ, nil
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return nil, ErrClosed
	}
	gen, at := c.setGen.Load(), time.Now()
	pairs, err := c.bpf.scan()
	if err != nil {
		return nil, fmt.Errorf("kernel counters: %w", err)
	}
	c.scanned, c.scanAt, c.cacheGen = newOccupancy(at, pairs), at, gen
	return c.scanned, nil
}

func (c *Counters) freshLocked() bool {
	return c.cacheGen == c.setGen.Load() && time.Since(c.scanAt) < c.minScan
}

// snapshot returns netlink mode's current dump, refreshed if older than
// MinScanInterval; the previous one (or nil) if the dump failed (logged).
func (c *Counters) snapshot() *nlSnapshot {
	c.scanMu.Lock()
	defer c.scanMu.Unlock()
	if c.snap != nil && c.freshLocked() {
		return c.snap
	}
	s, err := c.refreshLocked()
	if err != nil {
		if !errors.Is(err, ErrClosed) {
			c.log.Warn("kernel counters: sock_diag dump failed", "err", err)
		}
		return c.snap
	}
	return s
}

func (c *Counters) refreshLocked() (*nlSnapshot, error) {
	c.mu.RLock()
	servers, frontends, closed := c.servers, c.frontends, c.closed
	gen := c.setGen.Load()
	c.mu.RUnlock()
	if closed {
		return nil, ErrClosed
	}
	at := time.Now()
	socks, err := dumpTCP()
	if err != nil {
		return nil, fmt.Errorf("kernel counters: %w", err)
	}
	c.snap = snapshotOf(socks, servers, frontends, at)
	c.scanned, c.scanAt, c.cacheGen = c.snap.occ, at, gen
	return c.snap, nil
}

// Close detaches the programs and frees their maps. The readers then return
// zeros and Scan ErrClosed.
func (c *Counters) Close() error {
	if c == nil {
		return nil
	}
	c.scanMu.Lock()
	defer c.scanMu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	c.scanned, c.snap = nil, nil
	if c.bpf == nil {
		return nil
	}
	if err := c.bpf.close(); err != nil {
		return fmt.Errorf("kernel counters: close: %w", err)
	}
	return nil
}

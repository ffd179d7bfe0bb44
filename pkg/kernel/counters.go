package kernel

import (
	"cmp"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"time"
)

// Mode says where the counters come from.
type Mode string

const (
	// ModeEBPF: sockops keeps live ESTABLISHED counters for the sockets of
	// the daemon's cgroup; Scan runs an iter/tcp pass.
	ModeEBPF Mode = "ebpf"
	// ModeNetlink: every reader is served from a (rate-limited) sock_diag
	// dump of the whole network namespace.
	ModeNetlink Mode = "netlink"
)

// DefaultMinScanInterval is the default Options.MinScanInterval.
const DefaultMinScanInterval = time.Second

// ErrUnsupported is returned where the operating system has neither eBPF nor
// sock_diag (anything but Linux).
var ErrUnsupported = errors.New("kernel counters are only supported on Linux")

// Options configure OpenCounters.
type Options struct {
	// Cgroup is the cgroup v2 directory to attach sockops to; "" discovers
	// the daemon's own cgroup from /proc/self/mountinfo and
	// /proc/self/cgroup. Sockets created by processes in this cgroup and its
	// descendants are counted.
	Cgroup string
	// Disable skips eBPF (config: `no option kernel-counters`); the readers
	// are then served from netlink sock_diag.
	Disable bool
	// MinScanInterval is the shortest time between two passes over the
	// sockets (Scan; in netlink mode also the established readers); callers
	// within the interval get the cached result. 0 means
	// DefaultMinScanInterval, a negative value no minimum.
	MinScanInterval time.Duration
	// Logger receives the one line saying which mode is active and why;
	// nil means slog.Default().
	Logger *slog.Logger
	// ForceNetlink selects the sock_diag mode without trying eBPF (tests).
	ForceNetlink bool
}

func (o Options) minScan() time.Duration {
	switch {
	case o.MinScanInterval == 0:
		return DefaultMinScanInterval
	case o.MinScanInterval < 0:
		return 0
	}
	return o.MinScanInterval
}

func (o Options) logger() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.Default()
}

// Feature is one kernel capability sluice uses, for `sluice doctor`.
type Feature struct {
	Name      string
	Available bool
	Detail    string // why not, or what it is used for
}

// Counts are the sockets from one source address to one server, by state.
type Counts struct {
	Established int
	TimeWait    int
	// Occupied counts sockets in any state, Established and TimeWait
	// included: each holds a (source, port, server) tuple.
	Occupied int
}

func (c *Counts) add(o Counts) {
	c.Established += o.Established
	c.TimeWait += o.TimeWait
	c.Occupied += o.Occupied
}

type pairKey struct {
	src    netip.Addr
	server netip.AddrPort
}

// Occupancy is the result of one pass over the TCP sockets of the network
// namespace: for each registered server, the sockets whose remote end is the
// server, by local (source) address. It is immutable and shared by every
// caller within Options.MinScanInterval. All methods accept a nil receiver.
type Occupancy struct {
	// At is when the pass ran.
	At time.Time

	pairs   map[pairKey]Counts
	servers map[netip.AddrPort]Counts
	sources map[netip.AddrPort][]netip.Addr // sorted
}

func newOccupancy(at time.Time, pairs map[pairKey]Counts) *Occupancy {
	o := &Occupancy{
		At:      at,
		pairs:   pairs,
		servers: make(map[netip.AddrPort]Counts),
		sources: make(map[netip.AddrPort][]netip.Addr),
	}
	for k, c := range pairs {
		s := o.servers[k.server]
		s.add(c)
		o.servers[k.server] = s
		o.sources[k.server] = append(o.sources[k.server], k.src)
	}
	for _, srcs := range o.sources {
		slices.SortFunc(srcs, netip.Addr.Compare)
	}
	return o
}

// Taken is when the pass ran (At); with it *Occupancy is a dated snapshot
// for userspace/source.
func (o *Occupancy) Taken() time.Time {
	if o == nil {
		return time.Time{}
	}
	return o.At
}

// Get returns the counts of the sockets from src to server.
func (o *Occupancy) Get(src netip.Addr, server netip.AddrPort) Counts {
	if o == nil {
		return Counts{}
	}
	return o.pairs[pairKey{src.Unmap(), unmapAP(server)}]
}

// TimeWait is the number of sockets from src to server in TIME_WAIT.
func (o *Occupancy) TimeWait(src netip.Addr, server netip.AddrPort) int {
	return o.Get(src, server).TimeWait
}

// Established is the number of sockets from src to server in ESTABLISHED.
func (o *Occupancy) Established(src netip.Addr, server netip.AddrPort) int {
	return o.Get(src, server).Established
}

// Occupied is the number of sockets from src to server in any state.
func (o *Occupancy) Occupied(src netip.Addr, server netip.AddrPort) int {
	return o.Get(src, server).Occupied
}

// Server returns the counts summed over all sources.
func (o *Occupancy) Server(server netip.AddrPort) Counts {
	if o == nil {
		return Counts{}
	}
	return o.servers[unmapAP(server)]
}

// ServerTimeWait is the number of sockets to server in TIME_WAIT, from any
// source.
func (o *Occupancy) ServerTimeWait(server netip.AddrPort) int {
	return o.Server(server).TimeWait
}

// Sources returns the local addresses that have sockets to server, sorted.
// The slice is shared: do not modify it.
func (o *Occupancy) Sources(server netip.AddrPort) []netip.Addr {
	if o == nil {
		return nil
	}
	return o.sources[unmapAP(server)]
}

// Each calls fn for every (source, server) with at least one socket, ordered
// by server then source.
func (o *Occupancy) Each(fn func(src netip.Addr, server netip.AddrPort, c Counts)) {
	if o == nil {
		return
	}
	keys := make([]pairKey, 0, len(o.pairs))
	for k := range o.pairs {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b pairKey) int {
		return cmp.Or(a.server.Compare(b.server), a.src.Compare(b.src))
	})
	for _, k := range keys {
		fn(k.src, k.server, o.pairs[k])
	}
}

// Len is the number of (source, server) pairs with at least one socket.
func (o *Occupancy) Len() int {
	if o == nil {
		return 0
	}
	return len(o.pairs)
}

// unmapAP keys IPv4-mapped IPv6 addresses as IPv4, as the kernel side does.
func unmapAP(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// addrSet is a registered set of addresses, unmapped.
type addrSet map[netip.AddrPort]struct{}

func newAddrSet(addrs []netip.AddrPort) (addrSet, error) {
	s := make(addrSet, len(addrs))
	for _, a := range addrs {
		if !a.IsValid() || a.Port() == 0 {
			return nil, errors.New("invalid address " + a.String() + ": need an IP and a non-zero port")
		}
		s[unmapAP(a)] = struct{}{}
	}
	return s, nil
}

// frontendOf returns the registered frontend that a socket accepted on local
// belongs to: local itself, or the wildcard address of its family, or [::]
// for an IPv4 client of a dual-stack listener (family6: the socket is
// AF_INET6). The same rule as on_passive in bpf/count.c.
func frontendOf(fes addrSet, local netip.AddrPort, family6 bool) (netip.AddrPort, bool) {
	local = unmapAP(local)
	if _, ok := fes[local]; ok {
		return local, true
	}
	unspec := netip.IPv6Unspecified()
	if local.Addr().Is4() {
		unspec = netip.IPv4Unspecified()
	}
	w := netip.AddrPortFrom(unspec, local.Port())
	if _, ok := fes[w]; ok {
		return w, true
	}
	if family6 && local.Addr().Is4() {
		w = netip.AddrPortFrom(netip.IPv6Unspecified(), local.Port())
		if _, ok := fes[w]; ok {
			return w, true
		}
	}
	return netip.AddrPort{}, false
}

package kernel

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
)

// Kernel steering (bpf/steer.c): a TCP connect() from a process of the
// steered cgroup to the address of a steered frontend is rewritten, in the
// kernel, to a backend server of that frontend, so the connection never
// passes through the daemon. The server is chosen by weighted round robin or
// least connections among those that are usable and below maxconn; when all
// are full (or the daemon queues for them) or none is usable, the address is
// left alone and the client reaches the daemon's listener, which queues as
// usual. getpeername() on the client reports the frontend address.
//
// Places on a server are shared with the daemon: steered sockets take one at
// connect() (compare-and-swap against maxconn) and give it back exactly once
// when they leave ESTABLISHED, fail to connect or are closed; the daemon takes
// and gives back its own with Acquire and Release, so that steered and proxied
// connections together never exceed a server's maxconn. These counters live
// in memory shared with the kernel: reading or updating them makes no system
// call.
//
// The daemon's own connect() calls are never steered, even from inside the
// steered cgroup: the kernel recognises its process (thread group id in its
// own pid namespace), not its cgroup, which it often shares with clients.
//
// A steered connection is the client's own connection to the server: the
// frontend's maxconn, timeouts and logs do not apply to it, and a server's
// count starts from zero when the daemon starts (a reload keeps it;
// connections steered by a previous daemon process are not counted).
//
// Use:
//
//	st, err := kernel.OpenSteerer(kernel.SteerOptions{Cgroup: cfg.Global.KernelSteerCgroup, OnRelease: dispatch})
//	err = st.SetServices(services)                    // at start and after each reload
//	st.SetServerUsable(frontend, server, false)       // maint, drain, down: at once
//	p, ok := st.Acquire(server, maxconn)              // the daemon's own connection
//	st.Release(p)
//	st.SetQueued(server, true)                        // the daemon's queue waits: steer elsewhere, report releases
//	stats := st.Stats()
//	st.Close()                                        // or exit: nothing outlives the process

// Algorithms the kernel can run (HAProxy's `balance` names).
const (
	SteerRoundRobin = "roundrobin" // weighted round robin (also "static-rr")
	SteerLeastConn  = "leastconn"  // fewest places taken per weight
)

// Limits of the kernel side.
const (
	// SteerMaxServers is the most servers one service may have (the bound
	// of the kernel's loops).
	SteerMaxServers = 64
	// SteerMaxWeight is the highest server weight (HAProxy's).
	SteerMaxWeight = 256
	// steerWRRSlots is the length of a service's round-robin sequence
	// (STEER_WRR_SLOTS in bpf/steer_maps.h).
	steerWRRSlots = 1024
	// DefaultSteerMaxServices is the default SteerOptions.MaxServices.
	DefaultSteerMaxServices = 64
	// DefaultSteerMaxServers is the default SteerOptions.MaxServerAddrs.
	DefaultSteerMaxServers = 4096
)

var (
	// ErrSteerUnsupported is returned by OpenSteerer when the kernel or the
	// process's privileges do not allow steering (or not on Linux): every
	// connection then goes through the daemon.
	ErrSteerUnsupported = errors.New("kernel steering not supported")
	// ErrSteerClosed is returned by the methods of a closed Steerer.
	ErrSteerClosed = errors.New("kernel steering closed")
	// ErrSteerNotFound is returned by SetServerUsable for a frontend or
	// server that SetServices did not register.
	ErrSteerNotFound = errors.New("not a steered frontend or server")
)

// SteerService is one steered frontend address and the servers its
// connections may go to.
type SteerService struct {
	// Frontend is the address clients connect to: an IP (not a wildcard;
	// register 127.0.0.1:PORT, ::1:PORT and the host's addresses for a
	// wildcard bind) and a port. An IPv4 frontend also catches IPv4-mapped
	// IPv6 destinations.
	Frontend netip.AddrPort
	// Algo is SteerRoundRobin ("" too, and "static-rr") or SteerLeastConn.
	Algo string
	// Servers in configuration order, at most SteerMaxServers. Only
	// servers of the frontend's address family are chosen (IPv4 servers
	// for an IPv4 frontend): a socket cannot change its family.
	Servers []SteerServer
}

// SteerServer is one backend server of a SteerService.
type SteerServer struct {
	Addr netip.AddrPort
	// Weight 0..SteerMaxWeight; 0 is never chosen (as in HAProxy).
	Weight int
	// MaxConn is the most connections the server may have, steered ones
	// and the daemon's own (Acquire) together; 0 means no limit. Servers
	// at the same address share one count; each service checks it against
	// its own MaxConn.
	MaxConn int
	// Usable is false for a server that is down, in maint or in drain.
	Usable bool
}

// SteerOptions configure OpenSteerer.
type SteerOptions struct {
	// Cgroup is the cgroup v2 directory whose processes are steered, with
	// its descendants; "" means the root of the cgroup v2 hierarchy (the
	// whole host). Config: `global kernel-steer-cgroup PATH`.
	Cgroup string
	// DaemonPID is the process whose connect() calls are never steered, as
	// a pid of the caller's pid namespace; 0 means the calling process.
	DaemonPID int
	// OnRelease, if set, is called (from one goroutine, in order) when a
	// steered connection gives back its place on a server for which
	// SetQueued(server, true) is in effect: the daemon can dispatch its
	// queue. It must not block for long (it may call Acquire). The events
	// are a prompt, not a ledger: the kernel drops them when the daemon
	// falls 64 KiB behind, so a queue should also recheck InUse on its
	// timer.
	OnRelease func(server netip.AddrPort)
	// MaxServices bounds the steered frontend addresses (default
	// DefaultSteerMaxServices); MaxServerAddrs the distinct server
	// addresses (default DefaultSteerMaxServers).
	MaxServices, MaxServerAddrs int
	// Logger receives the line saying steering is on; nil: slog.Default().
	Logger *slog.Logger
}

func (o SteerOptions) logger() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.Default()
}

// SteerPlace is a place the daemon took on a server with Acquire; give it
// back with Release. The zero value holds nothing.
type SteerPlace struct {
	slot int32 // slot+1; 0: nothing held
}

// Held says whether the place counts against a server's maxconn in the
// kernel (false for a server the kernel does not know).
func (p SteerPlace) Held() bool { return p.slot != 0 }

// SteerStats are the kernel's figures.
type SteerStats struct {
	Cgroup   string
	Services []SteerServiceStats // by frontend
	Servers  []SteerServerStats  // by address
}

// SteerServiceStats are one frontend's counters since it was registered.
type SteerServiceStats struct {
	Frontend netip.AddrPort
	// Steered counts connects sent straight to a server.
	Steered uint64
	// FallThrough counts connects left to the frontend's listener: every
	// usable server was full (or queued for), or none was usable, or
	// (rarely) the kernel had no memory for the socket's mark.
	FallThrough uint64
	// Unavailable counts the part of FallThrough where no server was
	// usable at all (down, maint, drain, weight 0, other address family).
	Unavailable uint64
}

// SteerServerStats are one server address's counters.
type SteerServerStats struct {
	Addr netip.AddrPort
	// Established is the number of steered connections holding a place on
	// the server now (connecting or ESTABLISHED).
	Established int
	// InUse is the number of places taken: Established plus the daemon's
	// own (Acquire). It is what the kernel checks against maxconn.
	InUse int
	// Steered counts the connections steered to the server since it was
	// registered; Released those that gave their place back since.
	Steered, Released uint64
	// Queued is what SetQueued last said.
	Queued bool
}

// Service returns the stats of frontend fe.
func (s SteerStats) Service(fe netip.AddrPort) (SteerServiceStats, bool) {
	fe = unmapAP(fe)
	i, ok := slices.BinarySearchFunc(s.Services, fe, func(a SteerServiceStats, b netip.AddrPort) int {
		return a.Frontend.Compare(b)
	})
	if !ok {
		return SteerServiceStats{}, false
	}
	return s.Services[i], true
}

// Server returns the stats of the server at addr.
func (s SteerStats) Server(addr netip.AddrPort) (SteerServerStats, bool) {
	addr = unmapAP(addr)
	i, ok := slices.BinarySearchFunc(s.Servers, addr, func(a SteerServerStats, b netip.AddrPort) int {
		return a.Addr.Compare(b)
	})
	if !ok {
		return SteerServerStats{}, false
	}
	return s.Servers[i], true
}

// steerAlgo maps a balance algorithm to the kernel's.
func steerAlgo(a string) (uint32, error) {
	switch a {
	case "", SteerRoundRobin, "static-rr":
		return 0, nil
	case SteerLeastConn:
		return 1, nil
	}
	return 0, fmt.Errorf("balance %q cannot be steered in the kernel (roundrobin, static-rr or leastconn)", a)
}

// normalizeServices checks svcs and returns a copy with unmapped addresses,
// sorted by frontend.
func normalizeServices(svcs []SteerService) ([]SteerService, error) {
	out := make([]SteerService, 0, len(svcs))
	seen := make(map[netip.AddrPort]bool, len(svcs))
	for _, sv := range svcs {
		fe := unmapAP(sv.Frontend)
		if !fe.IsValid() || fe.Port() == 0 || fe.Addr().IsUnspecified() || fe.Addr().Zone() != "" {
			return nil, fmt.Errorf("steer frontend %s: need an IP address without zone (not a wildcard) and a port", sv.Frontend)
		}
		if seen[fe] {
			return nil, fmt.Errorf("steer frontend %s: listed twice", fe)
		}
		seen[fe] = true
		if _, err := steerAlgo(sv.Algo); err != nil {
			return nil, fmt.Errorf("steer frontend %s: %w", fe, err)
		}
		if len(sv.Servers) > SteerMaxServers {
			return nil, fmt.Errorf("steer frontend %s: %d servers, at most %d", fe, len(sv.Servers), SteerMaxServers)
		}
		n := SteerService{Frontend: fe, Algo: sv.Algo, Servers: make([]SteerServer, len(sv.Servers))}
		for i, s := range sv.Servers {
			a := unmapAP(s.Addr)
			switch {
			case !a.IsValid() || a.Port() == 0 || a.Addr().IsUnspecified() || a.Addr().Zone() != "":
				return nil, fmt.Errorf("steer frontend %s: server %s: need an IP address without zone and a port", fe, s.Addr)
			case s.Weight < 0 || s.Weight > SteerMaxWeight:
				return nil, fmt.Errorf("steer frontend %s: server %s: weight %d not in 0..%d", fe, a, s.Weight, SteerMaxWeight)
			case s.MaxConn < 0 || s.MaxConn > 1<<31-1:
				return nil, fmt.Errorf("steer frontend %s: server %s: maxconn %d out of range", fe, a, s.MaxConn)
			}
			s.Addr = a
			n.Servers[i] = s
		}
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b SteerService) int { return a.Frontend.Compare(b.Frontend) })
	return out, nil
}

// wrrSequence returns the round-robin order of servers with the given
// weights: smooth weighted round robin (nginx's), which spreads each server's
// turns evenly over the cycle, over weights divided by their greatest common
// divisor and, if their sum is still above slots, scaled down to fit (every
// non-zero weight keeps at least one turn). Servers of weight 0 get no turn.
func wrrSequence(weights []int, slots int) []uint8 {
	w := make([]int, len(weights))
	g := 0
	for i, x := range weights {
		if x > 0 {
			w[i] = x
			g = gcd(g, x)
		}
	}
	if g == 0 {
		return nil
	}
	sum := 0
	for i := range w {
		w[i] /= g
		sum += w[i]
	}
	if sum > slots {
		// Scale to fit, rounding to nearest with at least one turn each;
		// aim lower while those minimums push the sum over.
		orig, total := slices.Clone(w), sum
		for target := slots; sum > slots && target > 0; target-- {
			sum = 0
			for i, x := range orig {
				if x > 0 {
					w[i] = max(1, (x*target+total/2)/total)
					sum += w[i]
				}
			}
		}
	}
	seq := make([]uint8, 0, sum)
	cur := make([]int, len(w))
	for range sum {
		best := -1
		for i, x := range w {
			if x == 0 {
				continue
			}
			cur[i] += x
			if best < 0 || cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= sum
		seq = append(seq, uint8(best))
	}
	return seq
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// sortStats orders stats as SteerStats promises.
func sortStats(st *SteerStats) {
	slices.SortFunc(st.Services, func(a, b SteerServiceStats) int { return a.Frontend.Compare(b.Frontend) })
	slices.SortFunc(st.Servers, func(a, b SteerServerStats) int { return a.Addr.Compare(b.Addr) })
}

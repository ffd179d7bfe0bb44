package kernel

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// sock is one TCP socket of a sock_diag dump, addresses unmapped.
type sock struct {
	local, remote netip.AddrPort
	state         uint8 // TCP_* as sock_diag reports it (timewait: its substate)
	family6       bool  // an AF_INET6 socket (may carry IPv4-mapped addresses)
}

const (
	tcpEstablished = 1 // TCP_ESTABLISHED
	tcpTimeWait    = 6 // TCP_TIME_WAIT
)

// dumpTCP returns the TCP sockets of the calling thread's network namespace
// in every state, IPv4 and IPv6, through netlink sock_diag: what `ss -tan`
// shows. netlink v1.3.1 asks for all states and cannot filter by state or
// address, so the filtering is done here.
//
// A dump that raced with socket changes (NLM_F_DUMP_INTR) is retried; after
// a few tries the last, possibly inconsistent, result is used.
func dumpTCP() ([]sock, error) {
	var out []sock
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		var (
			socks []*netlink.Socket
			err   error
		)
		for try := 0; ; try++ {
			socks, err = netlink.SocketDiagTCP(fam)
			if !errors.Is(err, netlink.ErrDumpInterrupted) || try == 3 {
				break
			}
		}
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			return nil, fmt.Errorf("sock_diag dump (family %d): %w", fam, err)
		}
		for _, s := range socks {
			l, ok1 := netip.AddrFromSlice(s.ID.Source)
			r, ok2 := netip.AddrFromSlice(s.ID.Destination)
			if !ok1 || !ok2 {
				continue
			}
			out = append(out, sock{
				local:   netip.AddrPortFrom(l.Unmap(), s.ID.SourcePort),
				remote:  netip.AddrPortFrom(r.Unmap(), s.ID.DestinationPort),
				state:   s.State,
				family6: s.Family == unix.AF_INET6,
			})
		}
	}
	return out, nil
}

// nlSnapshot is what netlink mode serves between two dumps.
type nlSnapshot struct {
	occ      *Occupancy
	server   map[netip.AddrPort]int
	pair     map[pairKey]int
	frontend map[netip.AddrPort]int
}

// snapshotOf aggregates a dump for the registered servers and frontends, by
// the same rules as bpf/count.c: a server's sockets are those whose remote
// end is the server (source = their local address), a frontend's those
// whose local end is the frontend or matches it as a wildcard.
func snapshotOf(socks []sock, servers, frontends addrSet, at time.Time) *nlSnapshot {
	s := &nlSnapshot{
		server:   make(map[netip.AddrPort]int),
		pair:     make(map[pairKey]int),
		frontend: make(map[netip.AddrPort]int),
	}
	pairs := make(map[pairKey]Counts)
	for _, k := range socks {
		if _, ok := servers[k.remote]; ok {
			pk := pairKey{k.local.Addr(), k.remote}
			c := pairs[pk]
			c.Occupied++
			switch k.state {
			case tcpEstablished:
				c.Established++
				s.server[k.remote]++
				s.pair[pk]++
			case tcpTimeWait:
				c.TimeWait++
			}
			pairs[pk] = c
		}
		if k.state == tcpEstablished && len(frontends) > 0 {
			if fe, ok := frontendOf(frontends, k.local, k.family6); ok {
				s.frontend[fe]++
			}
		}
	}
	s.occ = newOccupancy(at, pairs)
	return s
}

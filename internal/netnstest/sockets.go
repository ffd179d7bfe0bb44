//go:build linux

package netnstest

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
)

// TCP states as the kernel numbers them (include/net/tcp_states.h).
const (
	stateEstablished = 1
	stateTimeWait    = 6
	stateListen      = 10
)

type tuple struct {
	src    netip.Addr
	server netip.AddrPort
}

// Counts is the sockets of one (source, server) tuple by state.
type Counts struct {
	Established, TimeWait, Other int
}

// Sockets is a snapshot of the TCP sockets of the calling process's network
// namespace per (source address, server), every process's, read with
// sock_diag (netlink). It satisfies userspace/source's Occupancy and Dated.
type Sockets struct {
	taken time.Time
	m     map[tuple]*Counts
}

// ScanSockets reads every TCP socket (IPv4 and IPv6) except listeners.
func ScanSockets() (*Sockets, error) {
	s := &Sockets{taken: time.Now(), m: map[tuple]*Counts{}}
	for _, family := range []uint8{syscall.AF_INET, syscall.AF_INET6} {
		var socks []*netlink.Socket
		var err error
		for try := 0; try < 5; try++ {
			socks, err = netlink.SocketDiagTCP(family)
			if !errors.Is(err, netlink.ErrDumpInterrupted) {
				break
			}
		}
		if err != nil {
			return nil, fmt.Errorf("sock_diag: %w", err)
		}
		for _, k := range socks {
			if k.State == stateListen {
				continue
			}
			src, ok1 := netip.AddrFromSlice(k.ID.Source)
			dst, ok2 := netip.AddrFromSlice(k.ID.Destination)
			if !ok1 || !ok2 {
				continue
			}
			key := tuple{src.Unmap(), netip.AddrPortFrom(dst.Unmap(), k.ID.DestinationPort)}
			c := s.m[key]
			if c == nil {
				c = &Counts{}
				s.m[key] = c
			}
			switch k.State {
			case stateEstablished:
				c.Established++
			case stateTimeWait:
				c.TimeWait++
			default:
				c.Other++
			}
		}
	}
	return s, nil
}

func (s *Sockets) get(src netip.Addr, server netip.AddrPort) Counts {
	if c := s.m[tuple{src.Unmap(), netip.AddrPortFrom(server.Addr().Unmap(), server.Port())}]; c != nil {
		return *c
	}
	return Counts{}
}

// Occupied is every socket of the tuple, in any state.
func (s *Sockets) Occupied(src netip.Addr, server netip.AddrPort) int {
	c := s.get(src, server)
	return c.Established + c.TimeWait + c.Other
}

// TimeWait is the tuple's sockets in TIME_WAIT.
func (s *Sockets) TimeWait(src netip.Addr, server netip.AddrPort) int {
	return s.get(src, server).TimeWait
}

// Established is the tuple's sockets in ESTABLISHED.
func (s *Sockets) Established(src netip.Addr, server netip.AddrPort) int {
	return s.get(src, server).Established
}

// Counts returns the tuple's sockets by state.
func (s *Sockets) Counts(src netip.Addr, server netip.AddrPort) Counts { return s.get(src, server) }

// Taken is when the scan started.
func (s *Sockets) Taken() time.Time { return s.taken }

// Total is every socket of the snapshot by state, whatever its tuple: in a
// namespace that holds only a test's server, the server's side of every
// connection (to tell which side was left in TIME_WAIT).
func (s *Sockets) Total() Counts {
	var t Counts
	for _, c := range s.m {
		t.Established += c.Established
		t.TimeWait += c.TimeWait
		t.Other += c.Other
	}
	return t
}

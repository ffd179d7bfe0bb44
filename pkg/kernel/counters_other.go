//go:build !linux

package kernel

import "net/netip"

// Counters is a stub outside Linux: OpenCounters fails with ErrUnsupported
// and a nil *Counters reads zeros, so callers need no build tags.
type Counters struct{}

// OpenCounters fails with ErrUnsupported outside Linux.
func OpenCounters(Options) (*Counters, error) { return nil, ErrUnsupported }

func (c *Counters) Mode() Mode                                       { return "" }
func (c *Counters) Cgroup() string                                   { return "" }
func (c *Counters) SetServers([]netip.AddrPort) error                { return nil }
func (c *Counters) SetFrontends([]netip.AddrPort) error              { return nil }
func (c *Counters) Established(netip.AddrPort) int                   { return 0 }
func (c *Counters) SourceEstablished(netip.Addr, netip.AddrPort) int { return 0 }
func (c *Counters) FrontendEstablished(netip.AddrPort) int           { return 0 }
func (c *Counters) Lost() uint64                                     { return 0 }
func (c *Counters) Scan() (*Occupancy, error)                        { return nil, ErrUnsupported }
func (c *Counters) Close() error                                     { return nil }

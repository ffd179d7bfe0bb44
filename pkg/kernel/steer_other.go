//go:build !linux

package kernel

import (
	"fmt"
	"net/netip"
	"runtime"
)

// Steerer is the kernel steering of local clients; only Linux has it. A nil
// *Steerer steers nothing, so callers need no build tags.
type Steerer struct{}

// OpenSteerer fails with ErrSteerUnsupported outside Linux.
func OpenSteerer(SteerOptions) (*Steerer, error) {
	return nil, fmt.Errorf("kernel steering: %w on %s", ErrSteerUnsupported, runtime.GOOS)
}

func (s *Steerer) Cgroup() string                   { return "" }
func (s *Steerer) SetServices([]SteerService) error { return ErrSteerClosed }
func (s *Steerer) SetServerUsable(frontend, server netip.AddrPort, _ bool) error {
	return ErrSteerClosed
}
func (s *Steerer) Acquire(netip.AddrPort, int) (SteerPlace, bool) { return SteerPlace{}, true }
func (s *Steerer) Release(SteerPlace)                             {}
func (s *Steerer) Established(netip.AddrPort) int                 { return 0 }
func (s *Steerer) InUse(netip.AddrPort) int                       { return 0 }
func (s *Steerer) SetQueued(netip.AddrPort, bool)                 {}
func (s *Steerer) Stats() SteerStats                              { return SteerStats{} }
func (s *Steerer) Close() error                                   { return nil }

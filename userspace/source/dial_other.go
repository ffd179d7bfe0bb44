//go:build !linux

package source

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// Elsewhere than Linux the pool binds plainly: no IP_BIND_ADDRESS_NO_PORT
// (the port is chosen at bind, without the server in view), no usesrc, no
// interface, and an explicit port serves one connection at a time. Enough
// to develop on a laptop.
const kernelPortRange = false

func localPortRange() (lo, hi int, err error) { return 49152, 65535, nil }

func dialLocal(ctx context.Context, local, server netip.AddrPort) (*net.TCPConn, error) {
	d := net.Dialer{}
	if !(local.Addr().IsUnspecified() && local.Port() == 0) {
		d.LocalAddr = net.TCPAddrFromAddrPort(local)
	}
	network := "tcp4"
	if server.Addr().Is6() {
		network = "tcp6"
	}
	c, err := d.DialContext(ctx, network, server.String())
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

func (p *Pool) dialFrom(ctx context.Context, src netip.Addr, server netip.AddrPort) (*net.TCPConn, error) {
	if p.spec.Interface != "" {
		return nil, errors.New("source ... interface: not supported on this system")
	}
	lo, hi := p.spec.PortLow, p.spec.PortHigh
	if lo == 0 {
		return dialLocal(ctx, netip.AddrPortFrom(src, 0), server)
	}
	n := uint32(hi) - uint32(lo) + 1
	start := p.portSeq.Add(1)
	var last error
	for k := uint32(0); k < n; k++ {
		port := uint16(uint32(lo) + (start+k)%n)
		c, err := dialLocal(ctx, netip.AddrPortFrom(src, port), server)
		if err == nil || !noTuple(err) || bindNotAvail(err) {
			return c, err
		}
		last = err
	}
	return nil, last
}

// DialTransparent needs Linux's IP_TRANSPARENT.
func (p *Pool) DialTransparent(ctx context.Context, server, client netip.AddrPort, timeout time.Duration) (*net.TCPConn, error) {
	return nil, fmt.Errorf("source %s: usesrc (transparent proxying) needs Linux", p.spec)
}

// Check reports what cannot work on this system.
func (p *Pool) Check() (warnings []string, err error) {
	if p.spec.Transparent() {
		return nil, errors.New("source ... usesrc: transparent proxying needs Linux (IP_TRANSPARENT)")
	}
	if p.spec.Interface != "" {
		return nil, errors.New("source ... interface: binding to a device needs Linux (SO_BINDTODEVICE)")
	}
	return nil, nil
}

//go:build linux

package source

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// kernelPortRange: an explicit port range inside ip_local_port_range is given
// to the kernel with IP_LOCAL_PORT_RANGE (Linux 6.3), so it still picks the
// port with the 4-tuple in view; older kernels answer ENOPROTOOPT and the
// pool walks the range itself.
const kernelPortRange = true

// localPortRange reads net.ipv4.ip_local_port_range (it also governs IPv6).
func localPortRange() (lo, hi int, err error) {
	return readPortRange("/proc/sys/net/ipv4/ip_local_port_range")
}

func readPortRange(path string) (lo, hi int, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, 0, fmt.Errorf("%s: unexpected content %q", path, b)
	}
	lo, err1 := strconv.Atoi(f[0])
	hi, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || lo < 1 || hi < lo || hi > 65535 {
		return 0, 0, fmt.Errorf("%s: unexpected content %q", path, b)
	}
	return lo, hi, nil
}

// sockOpts are the options set on a socket before bind and connect.
type sockOpts struct {
	noPort      bool   // IP_BIND_ADDRESS_NO_PORT: the port is chosen at connect()
	reuseAddr   bool   // SO_REUSEADDR: an explicit port shared with other servers' tuples
	portRange   uint32 // IP_LOCAL_PORT_RANGE: low | high<<16
	device      string // SO_BINDTODEVICE
	transparent bool   // IP_TRANSPARENT / IPV6_TRANSPARENT
}

func (o sockOpts) apply(fd int, v6 bool) error {
	set := func(level, opt int, name string) error {
		if err := unix.SetsockoptInt(fd, level, opt, 1); err != nil {
			return os.NewSyscallError("setsockopt "+name, err)
		}
		return nil
	}
	if o.noPort {
		if err := set(unix.SOL_IP, unix.IP_BIND_ADDRESS_NO_PORT, "IP_BIND_ADDRESS_NO_PORT"); err != nil {
			return err
		}
	}
	if o.reuseAddr {
		if err := set(unix.SOL_SOCKET, unix.SO_REUSEADDR, "SO_REUSEADDR"); err != nil {
			return err
		}
	}
	if o.portRange != 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_LOCAL_PORT_RANGE, int(o.portRange)); err != nil {
			return os.NewSyscallError("setsockopt IP_LOCAL_PORT_RANGE", err)
		}
	}
	if o.device != "" {
		if err := unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, o.device); err != nil {
			return os.NewSyscallError("setsockopt SO_BINDTODEVICE "+o.device, err)
		}
	}
	if o.transparent {
		if v6 {
			return set(unix.SOL_IPV6, unix.IPV6_TRANSPARENT, "IPV6_TRANSPARENT")
		}
		return set(unix.SOL_IP, unix.IP_TRANSPARENT, "IP_TRANSPARENT")
	}
	return nil
}

// dialOnce makes one connection from local (no bind when it is the
// unspecified address with port 0) with the options set before bind.
func dialOnce(ctx context.Context, local, server netip.AddrPort, o sockOpts) (*net.TCPConn, error) {
	v6 := server.Addr().Is6()
	d := net.Dialer{
		ControlContext: func(_ context.Context, _, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) { serr = o.apply(int(fd), v6) }); err != nil {
				return err
			}
			return serr
		},
	}
	if !(local.Addr().IsUnspecified() && local.Port() == 0) {
		d.LocalAddr = net.TCPAddrFromAddrPort(local)
	} else {
		o.noPort = false
	}
	network := "tcp4"
	if v6 {
		network = "tcp6"
	}
	c, err := d.DialContext(ctx, network, server.String())
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// dialFrom connects from src, choosing the port as the spec says.
func (p *Pool) dialFrom(ctx context.Context, src netip.Addr, server netip.AddrPort) (*net.TCPConn, error) {
	o := sockOpts{device: p.spec.Interface}
	lo, hi := p.spec.PortLow, p.spec.PortHigh
	if lo == 0 {
		o.noPort = true
		return dialOnce(ctx, netip.AddrPortFrom(src, 0), server, o)
	}
	if p.kernelRng.Load() {
		ko := o
		ko.noPort, ko.portRange = true, uint32(lo)|uint32(hi)<<16
		c, err := dialOnce(ctx, netip.AddrPortFrom(src, 0), server, ko)
		if !errors.Is(err, unix.ENOPROTOOPT) {
			return c, err
		}
		p.kernelRng.Store(false) // kernel before 6.3
	}
	// Walk the range from a rotating start: bind each port (shared with
	// tuples toward other servers thanks to SO_REUSEADDR) and connect; the
	// kernel refuses a tuple in use with EADDRNOTAVAIL.
	o.reuseAddr = true
	n := uint32(hi) - uint32(lo) + 1
	start := p.portSeq.Add(1)
	var last error
	for k := uint32(0); k < n; k++ {
		port := uint16(uint32(lo) + (start+k)%n)
		c, err := dialOnce(ctx, netip.AddrPortFrom(src, port), server, o)
		if err == nil || !noTuple(err) || bindNotAvail(err) {
			return c, err
		}
		last = err
		if ctx.Err() != nil {
			break
		}
	}
	return nil, last
}

// DialTransparent connects to server from a foreign address, as `usesrc`
// says: the client's address and port (client), its address (clientip), or
// the fixed usesrc address. It needs IP_TRANSPARENT (CAP_NET_ADMIN) and, for
// the answers to come back, the host's TPROXY routing (HAProxy's
// documentation on usesrc describes it).
func (p *Pool) DialTransparent(ctx context.Context, server, client netip.AddrPort, timeout time.Duration) (*net.TCPConn, error) {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	server = normalize(server)
	client = normalize(client)
	o := sockOpts{device: p.spec.Interface, transparent: true}
	var local netip.AddrPort
	switch p.spec.UseSrc.Kind {
	case UseSrcClient:
		local = client
	case UseSrcClientIP:
		local = netip.AddrPortFrom(client.Addr(), 0)
	case UseSrcAddr:
		local = p.spec.UseSrc.Addr
	default:
		return nil, fmt.Errorf("source %s: no usesrc", p.spec)
	}
	if !local.Addr().IsValid() {
		return nil, fmt.Errorf("source %s: no client address to use", p.spec)
	}
	if local.Addr().Is4() != server.Addr().Is4() {
		return nil, fmt.Errorf("source %s: cannot reach %s from %s (address families differ)", p.spec, server, local.Addr())
	}
	o.noPort = local.Port() == 0
	return dialOnce(ctx, local, server, o)
}

// Check tries the pool on this host, in this network namespace: that each
// address can be bound, that `interface` names an existing device the
// process may bind to, and that `usesrc` may set IP_TRANSPARENT. It returns
// an error when the pool cannot work at all, and warnings (one per address)
// when only some addresses cannot be bound; connections then fall back to
// the others.
func (p *Pool) Check() (warnings []string, err error) {
	if p.spec.Interface != "" {
		if _, err := net.InterfaceByName(p.spec.Interface); err != nil {
			return nil, fmt.Errorf("source ... interface %s: no such network interface here", p.spec.Interface)
		}
	}
	var bad []string
	var lastErr error
	for _, a := range p.spec.Addrs {
		err := tryBind(a, sockOpts{noPort: true, device: p.spec.Interface, transparent: p.spec.Transparent()})
		switch {
		case err == nil:
			continue
		case errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES):
			if p.spec.Transparent() {
				return nil, fmt.Errorf("source ... usesrc: transparent proxying needs CAP_NET_ADMIN for IP_TRANSPARENT (%v); run sluice as root or grant it the capability", err)
			}
			return nil, fmt.Errorf("source ... interface %s: binding to a device is not permitted (%v); grant CAP_NET_RAW", p.spec.Interface, err)
		case errors.Is(err, unix.ENOPROTOOPT):
			return nil, fmt.Errorf("source ... usesrc: this kernel lacks IP_TRANSPARENT (%v)", err)
		case errors.Is(err, unix.EADDRNOTAVAIL):
			sysctl := "net.ipv4.ip_nonlocal_bind"
			if a.Is6() {
				sysctl = "net.ipv6.ip_nonlocal_bind"
			}
			bad = append(bad, fmt.Sprintf("source %s: not an address of this host (add it to an interface, or set %s=1 if it comes later)", a, sysctl))
		default:
			bad = append(bad, fmt.Sprintf("source %s: cannot be bound: %v", a, err))
		}
		lastErr = err
	}
	if len(bad) == len(p.spec.Addrs) {
		if len(bad) == 1 {
			return nil, errors.New(bad[0])
		}
		return nil, fmt.Errorf("source %s: none of its %d addresses can be bound here (%v)", p.spec, len(bad), lastErr)
	}
	return bad, nil
}

// tryBind binds a throw-away socket to a:0.
func tryBind(a netip.Addr, o sockOpts) error {
	if a.IsUnspecified() && o.device == "" && !o.transparent {
		return nil
	}
	family := unix.AF_INET
	var sa unix.Sockaddr = &unix.SockaddrInet4{Addr: a.As4()}
	if a.Is6() {
		family = unix.AF_INET6
		sa = &unix.SockaddrInet6{Addr: a.As16()}
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("socket", err)
	}
	defer unix.Close(fd)
	if err := o.apply(fd, a.Is6()); err != nil {
		return err
	}
	if err := unix.Bind(fd, sa); err != nil {
		return os.NewSyscallError("bind", err)
	}
	return nil
}

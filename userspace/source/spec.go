package source

import (
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"strconv"
	"strings"

	"github.com/sluicelb/sluice/pkg/config"
)

// MaxPool is the most addresses one `source` setting may name.
const MaxPool = 4096

// Spec is a parsed `source` setting, before it touches the host.
type Spec struct {
	// Addrs is the pool in the order written, each address once. A single
	// unspecified address (0.0.0.0 or ::) lets the kernel choose the source,
	// as HAProxy's `source 0.0.0.0 ...` does.
	Addrs []netip.Addr
	// PortLow and PortHigh bound the source ports (inclusive); both 0 = any
	// port, the kernel choosing from net.ipv4.ip_local_port_range.
	PortLow, PortHigh uint16
	UseSrc            UseSrc
	Interface         string // `interface NAME`: SO_BINDTODEVICE; "" = none
}

// UseSrcKind is what `usesrc` asks for.
type UseSrcKind int

const (
	UseSrcNone     UseSrcKind = iota
	UseSrcClient              // `usesrc client`: the client's address and port
	UseSrcClientIP            // `usesrc clientip`: the client's address, any port
	UseSrcAddr                // `usesrc ADDR[:PORT]`: a fixed, usually foreign, address
)

func (k UseSrcKind) String() string {
	switch k {
	case UseSrcClient:
		return "client"
	case UseSrcClientIP:
		return "clientip"
	case UseSrcAddr:
		return "address"
	}
	return "none"
}

// UseSrc is a `usesrc` setting: transparent proxying, where the connection
// to the server leaves from an address that is not the host's (IP_TRANSPARENT).
// The `source` address is then only used for health checks, as in HAProxy.
type UseSrc struct {
	Kind UseSrcKind
	Addr netip.AddrPort // UseSrcAddr; port 0 = any
}

// Transparent reports whether connections leave from a foreign address.
func (s Spec) Transparent() bool { return s.UseSrc.Kind != UseSrcNone }

// Ports is the number of ports in the explicit range, 0 when none is given.
func (s Spec) Ports() int {
	if s.PortLow == 0 {
		return 0
	}
	return int(s.PortHigh) - int(s.PortLow) + 1
}

// String writes the spec back in configuration syntax, runs of three or
// more consecutive addresses as ranges.
func (s Spec) String() string {
	var b strings.Builder
	v6 := false
	for i := 0; i < len(s.Addrs); {
		j := i
		for j+1 < len(s.Addrs) && s.Addrs[j].Next() == s.Addrs[j+1] {
			j++
		}
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(s.Addrs[i].String())
		switch {
		case j-i >= 2:
			b.WriteString("-" + s.Addrs[j].String())
			i = j + 1
		default:
			i++
		}
		v6 = v6 || s.Addrs[i-1].Is6()
	}
	addrs := b.String()
	if s.PortLow != 0 {
		if v6 {
			addrs = "[" + addrs + "]"
		}
		addrs += ":" + strconv.Itoa(int(s.PortLow))
		if s.PortHigh != s.PortLow {
			addrs += "-" + strconv.Itoa(int(s.PortHigh))
		}
	}
	switch s.UseSrc.Kind {
	case UseSrcClient, UseSrcClientIP:
		addrs += " usesrc " + s.UseSrc.Kind.String()
	case UseSrcAddr:
		if s.UseSrc.Addr.Port() == 0 {
			addrs += " usesrc " + s.UseSrc.Addr.Addr().String()
		} else {
			addrs += " usesrc " + s.UseSrc.Addr.String()
		}
	}
	if s.Interface != "" {
		addrs += " interface " + s.Interface
	}
	return addrs
}

// Validate checks a `source` setting's syntax without touching the host: the
// check `sluice -c` can run anywhere. Messages carry no position; the caller
// prefixes s.Pos.
func Validate(s config.Source) error {
	_, err := ParseSpec(s)
	return err
}

// ParseSpec reads `source ADDR[:PORT[-PORT]] [usesrc ...] [interface NAME]`.
//
// ADDR is one address or, as a sluice extension, a comma-separated list whose
// items are addresses, ranges (10.0.0.2-10.0.0.9) or CIDRs (10.0.0.0/29; every
// address of the block), IPv4 or IPv6, at most MaxPool addresses in all. An
// optional ipv4@ or ipv6@ prefix restricts the family. A port or port range
// applies to every address; with IPv6 addresses write the list in brackets to
// give one: [2001:db8::1-2001:db8::4]:1024-65535.
func ParseSpec(s config.Source) (Spec, error) {
	var sp Spec
	if s.Addr == "" {
		return sp, errors.New("source: missing address (source ADDR[:PORT[-PORT]] [usesrc ...] [interface NAME])")
	}
	addrs, ports, err := splitPort(s.Addr)
	if err != nil {
		return sp, err
	}
	if sp.Addrs, err = parseAddrs(addrs); err != nil {
		return sp, err
	}
	if ports != "" {
		if sp.PortLow, sp.PortHigh, err = parsePorts(ports); err != nil {
			return sp, fmt.Errorf("source '%s': %w", s.Addr, err)
		}
	}
	if err := sp.parseArgs(s.Args); err != nil {
		return sp, err
	}
	return sp, nil
}

// splitPort separates the address list from an optional :PORT[-PORT].
func splitPort(s string) (addrs, ports string, err error) {
	family := ""
	if f, rest, ok := strings.Cut(s, "@"); ok {
		family, s = f+"@", rest
	}
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", "", fmt.Errorf("source '%s%s': missing ']'", family, s)
		}
		addrs, rest := s[1:end], s[end+1:]
		if rest == "" {
			return family + addrs, "", nil
		}
		if !strings.HasPrefix(rest, ":") || rest == ":" {
			return "", "", fmt.Errorf("source '%s%s': expected ':PORT' after ']', found '%s'", family, s, rest)
		}
		return family + addrs, rest[1:], nil
	}
	switch strings.Count(s, ":") {
	case 0:
		return family + s, "", nil
	case 1:
		a, p, _ := strings.Cut(s, ":")
		if p == "" {
			return "", "", fmt.Errorf("source '%s%s': missing port after ':'", family, s)
		}
		return family + a, p, nil
	}
	// IPv6 without brackets: no port (write [ADDR]:PORT for one).
	return family + s, "", nil
}

// parsePorts reads PORT or LOW-HIGH. Port 0 alone means any port.
func parsePorts(s string) (lo, hi uint16, err error) {
	a, b, isRange := strings.Cut(s, "-")
	l, err := parsePort(a)
	if err != nil {
		return 0, 0, err
	}
	if !isRange {
		return l, l, nil
	}
	h, err := parsePort(b)
	if err != nil {
		return 0, 0, err
	}
	if l == 0 {
		return 0, 0, fmt.Errorf("port range '%s' starts at 0; source ports start at 1", s)
	}
	if h < l {
		return 0, 0, fmt.Errorf("port range '%s' ends before it starts", s)
	}
	return l, h, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("invalid port '%s' (expected 0 to 65535)", s)
	}
	return uint16(n), nil
}

// parseAddrs expands the comma-separated list.
func parseAddrs(s string) ([]netip.Addr, error) {
	want := 0 // 4 or 6 with an ipv4@/ipv6@ prefix
	if f, rest, ok := strings.Cut(s, "@"); ok {
		switch f {
		case "ipv4":
			want = 4
		case "ipv6":
			want = 6
		default:
			return nil, fmt.Errorf("source '%s': unsupported address prefix '%s@' (expected ipv4@ or ipv6@)", s, f)
		}
		s = rest
	}
	var out []netip.Addr
	seen := map[netip.Addr]string{}
	items := strings.Split(s, ",")
	for _, item := range items {
		if item == "" {
			return nil, fmt.Errorf("source '%s': empty item in the address list", s)
		}
		n := len(out)
		var err error
		out, err = expand(item, out)
		if err != nil {
			return nil, fmt.Errorf("source '%s': %w", item, err)
		}
		for _, a := range out[n:] {
			if want == 4 && !a.Is4() || want == 6 && !a.Is6() {
				return nil, fmt.Errorf("source '%s': %s is not an IPv%d address", item, a, want)
			}
			if a.IsUnspecified() && len(items) > 1 {
				return nil, fmt.Errorf("source '%s': %s (any address) cannot be part of a pool", item, a)
			}
			if prev, dup := seen[a]; dup {
				if prev == item {
					return nil, fmt.Errorf("source '%s': %s is listed twice", item, a)
				}
				return nil, fmt.Errorf("source '%s': %s is already in '%s'", item, a, prev)
			}
			seen[a] = item
		}
		if len(out) > MaxPool {
			return nil, fmt.Errorf("source '%s': the pool has more than %d addresses", s, MaxPool)
		}
	}
	return out, nil
}

// expand appends the addresses of one list item: ADDR, FROM-TO or PREFIX.
func expand(item string, out []netip.Addr) ([]netip.Addr, error) {
	room := uint64(MaxPool - len(out))
	if strings.Contains(item, "/") {
		p, err := netip.ParsePrefix(item)
		if err != nil {
			return nil, fmt.Errorf("invalid CIDR (%v)", trimNetip(err))
		}
		p = p.Masked()
		if p.Addr().IsUnspecified() {
			return nil, errors.New("a CIDR containing the unspecified address cannot be a pool")
		}
		hostBits := p.Addr().BitLen() - p.Bits()
		if hostBits > 12 || uint64(1)<<hostBits > room {
			return nil, fmt.Errorf("the block has 2^%d addresses; a pool holds at most %d", hostBits, MaxPool)
		}
		a := p.Addr()
		for i := 0; i < 1<<hostBits; i++ {
			out = append(out, a)
			a = a.Next()
		}
		return out, nil
	}
	if from, to, ok := strings.Cut(item, "-"); ok {
		a, err := parseAddr(from)
		if err != nil {
			return nil, err
		}
		b, err := parseAddr(to)
		if err != nil {
			return nil, err
		}
		if a.Is4() != b.Is4() {
			return nil, errors.New("a range's ends must be of the same family")
		}
		if b.Less(a) {
			return nil, errors.New("the range ends before it starts")
		}
		if a.IsUnspecified() {
			return nil, errors.New("a range starting at the unspecified address cannot be a pool")
		}
		if n, ok := span(a, b); !ok || n+1 > room {
			return nil, fmt.Errorf("the range has more addresses than a pool holds (%d)", MaxPool)
		}
		for x := a; ; x = x.Next() {
			out = append(out, x)
			if x == b {
				break
			}
		}
		return out, nil
	}
	a, err := parseAddr(item)
	if err != nil {
		return nil, err
	}
	return append(out, a), nil
}

// span returns b-a when it fits in 32 bits.
func span(a, b netip.Addr) (uint64, bool) {
	x, y := a.As16(), b.As16()
	var hi, lo [2]uint64
	for i := 0; i < 8; i++ {
		hi[0] = hi[0]<<8 | uint64(x[i])
		hi[1] = hi[1]<<8 | uint64(y[i])
		lo[0] = lo[0]<<8 | uint64(x[8+i])
		lo[1] = lo[1]<<8 | uint64(y[8+i])
	}
	d, borrow := bits.Sub64(lo[1], lo[0], 0)
	dh, _ := bits.Sub64(hi[1], hi[0], borrow)
	if dh != 0 || d > 1<<32 {
		return 0, false
	}
	return d, true
}

func parseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return a, fmt.Errorf("invalid address '%s' (%v)", s, trimNetip(err))
	}
	if a.Zone() != "" {
		return a, fmt.Errorf("address '%s' has a zone; use 'interface %s' instead", s, a.Zone())
	}
	return a.Unmap(), nil
}

// trimNetip drops net/netip's quoting of the whole input from its messages.
func trimNetip(err error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		return msg[i+2:]
	}
	return msg
}

// parseArgs reads what follows the address: usesrc and interface.
func (sp *Spec) parseArgs(args []string) error {
	for i := 0; i < len(args); i++ {
		switch kw := args[i]; kw {
		case "usesrc", "interface":
			if i+1 >= len(args) {
				return fmt.Errorf("source ... %s: expects a value", kw)
			}
			v := args[i+1]
			i++
			if kw == "interface" {
				if sp.Interface != "" {
					return errors.New("source ... interface: given twice")
				}
				if err := checkIfName(v); err != nil {
					return err
				}
				sp.Interface = v
				continue
			}
			if sp.UseSrc.Kind != UseSrcNone {
				return errors.New("source ... usesrc: given twice")
			}
			if err := sp.parseUseSrc(v); err != nil {
				return err
			}
		default:
			return fmt.Errorf("source: unknown option '%s' after the address (expected 'usesrc' or 'interface')", kw)
		}
	}
	if sp.UseSrc.Kind != UseSrcNone && len(sp.Addrs) > 1 {
		return fmt.Errorf("source ... usesrc: cannot be combined with a pool of %d addresses (with usesrc the connection leaves from the client's or the usesrc address; the source address only serves health checks)", len(sp.Addrs))
	}
	return nil
}

func (sp *Spec) parseUseSrc(v string) error {
	switch {
	case v == "client":
		sp.UseSrc.Kind = UseSrcClient
	case v == "clientip":
		sp.UseSrc.Kind = UseSrcClientIP
	case strings.HasPrefix(v, "hdr_ip("):
		return fmt.Errorf("source ... usesrc %s: taking the source from a header is not supported by sluice (use client, clientip or an address)", v)
	default:
		addrs, ports, err := splitPort(v)
		if err != nil {
			return fmt.Errorf("source ... usesrc: %w", err)
		}
		a, err := parseAddr(addrs)
		if err != nil {
			return fmt.Errorf("source ... usesrc: %w (expected client, clientip or ADDR[:PORT])", err)
		}
		var port uint16
		if ports != "" {
			lo, hi, err := parsePorts(ports)
			if err != nil || lo != hi {
				return fmt.Errorf("source ... usesrc %s: expected a single port", v)
			}
			port = lo
		}
		if len(sp.Addrs) > 0 && sp.Addrs[0].Is4() != a.Is4() && !sp.Addrs[0].IsUnspecified() {
			return fmt.Errorf("source ... usesrc %s: not the same family as the source address %s", v, sp.Addrs[0])
		}
		sp.UseSrc = UseSrc{Kind: UseSrcAddr, Addr: netip.AddrPortFrom(a, port)}
	}
	return nil
}

func checkIfName(v string) error {
	if v == "" || len(v) > 15 || strings.ContainsAny(v, "/ \t\n:") || v == "." || v == ".." {
		return fmt.Errorf("source ... interface '%s': not a valid interface name (1 to 15 characters, no '/', ':' or spaces)", v)
	}
	return nil
}

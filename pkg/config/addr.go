package config

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// hostPort is an address split the HAProxy way.
type hostPort struct {
	family    string // "ipv4", "ipv6" or "" (from a prefix, or from the literal)
	host      string // "" for any address ('*', empty, or no host)
	port      int
	portEnd   int  // last port of a range (== port when not a range)
	ambiguous bool // an unbracketed IPv6 address whose last group was read as the port
}

// addrPrefixes maps HAProxy's address prefixes to an address family; the
// ones sluice cannot serve (unix sockets, UDP, QUIC, inherited fds) map to "".
var addrPrefixes = map[string]string{
	"ipv4@": "ipv4", "ipv6@": "ipv6", "tcp@": "any", "tcp4@": "ipv4", "tcp6@": "ipv6",
	"unix@": "", "abns@": "", "abnsz@": "", "fd@": "", "sockpair@": "", "udp@": "", "udp4@": "", "udp6@": "",
	"quic4@": "", "quic6@": "", "uxst@": "", "uxdg@": "", "rhttp@": "",
}

// splitAddr parses [PREFIX@]HOST:PORT[-PORT]. HOST may be '*', empty, an IPv4
// address, a bracketed IPv6 address, an unbracketed IPv6 address (HAProxy
// then takes the port after the last colon) or a host name. Ranges are only
// allowed when allowRange is set.
func splitAddr(s string, allowRange bool) (hostPort, error) {
	var hp hostPort
	if at := strings.IndexByte(s, '@'); at >= 0 {
		prefix := s[:at+1]
		fam, known := addrPrefixes[prefix]
		switch {
		case !known:
			return hp, fmt.Errorf("unknown address prefix '%s' (expected ipv4@ or ipv6@)", prefix)
		case fam == "":
			return hp, fmt.Errorf("'%s' addresses are not supported (sluice only handles TCP over IPv4 and IPv6)", prefix)
		case fam != "any":
			hp.family = fam
		}
		s = s[at+1:]
	}
	if strings.HasPrefix(s, "/") {
		return hp, fmt.Errorf("unix socket paths are not supported (sluice only handles TCP over IPv4 and IPv6)")
	}
	var host, port string
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return hp, fmt.Errorf("missing ']' after the IPv6 address")
		}
		host, port = s[1:end], s[end+1:]
		if port == "" {
			return hp, fmt.Errorf("missing port (expected [ADDRESS]:PORT)")
		}
		if port[0] != ':' {
			return hp, fmt.Errorf("unexpected '%s' after ']' (expected :PORT)", port)
		}
		port = port[1:]
		if _, err := netip.ParseAddr(host); err != nil || !strings.Contains(host, ":") {
			return hp, fmt.Errorf("invalid IPv6 address '%s' in brackets", host)
		}
	} else {
		colon := strings.LastIndexByte(s, ':')
		if colon < 0 {
			return hp, fmt.Errorf("missing port (expected HOST:PORT)")
		}
		host, port = s[:colon], s[colon+1:]
		if strings.Contains(host, ":") {
			hp.ambiguous = true
		}
	}
	if host == "*" {
		host = ""
	}
	if host != "" {
		a, err := netip.ParseAddr(host)
		switch {
		case err == nil && a.Is4():
			if hp.family == "ipv6" {
				return hp, fmt.Errorf("IPv4 address '%s' with an ipv6@ prefix", host)
			}
			hp.family = "ipv4"
		case err == nil:
			if hp.family == "ipv4" {
				return hp, fmt.Errorf("IPv6 address '%s' with an ipv4@ prefix", host)
			}
			hp.family = "ipv6"
		case strings.Contains(host, ":"):
			return hp, fmt.Errorf("invalid IPv6 address '%s' (write IPv6 addresses in brackets: [ADDRESS]:PORT)", host)
		default:
			if err := checkHostname(host); err != nil {
				return hp, err
			}
		}
	}
	hp.host = host
	lo, hi, isRange := strings.Cut(port, "-")
	if isRange && !allowRange {
		return hp, fmt.Errorf("port ranges are not allowed here, found '%s'", port)
	}
	var err error
	if hp.port, err = parsePort(lo); err != nil {
		return hp, err
	}
	hp.portEnd = hp.port
	if isRange {
		if hp.portEnd, err = parsePort(hi); err != nil {
			return hp, err
		}
		if hp.port == 0 {
			return hp, fmt.Errorf("invalid port range '%s' (ports start at 1)", port)
		}
		if hp.portEnd < hp.port {
			return hp, fmt.Errorf("invalid port range '%s' (the first port must not exceed the last)", port)
		}
	}
	return hp, nil
}

func parsePort(s string) (int, error) {
	switch {
	case s == "":
		return 0, fmt.Errorf("missing port (expected HOST:PORT)")
	case s[0] == '+' || s[0] == '-':
		return 0, fmt.Errorf("port offsets ('%s') are not supported; give the port number", s)
	}
	// 0 is accepted here (a bind on port 0 lets the kernel pick, which
	// tests and the demo use); serverAddr refuses it.
	n, err := parseUint(s, 0, 65535)
	if err != nil {
		return 0, fmt.Errorf("invalid port '%s' (expected 1..65535)", s)
	}
	return n, nil
}

// checkHostname accepts DNS names (letters, digits, '-', '_' and '.').
func checkHostname(h string) error {
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("invalid host name '%s' (unexpected character %q)", h, rune(c))
		}
	}
	if h[0] == '-' || h[0] == '.' {
		return fmt.Errorf("invalid host name '%s'", h)
	}
	return nil
}

// binds expands a bind address into Bind entries, one per port.
func (hp hostPort) binds(pos Pos) []Bind {
	network := "tcp"
	switch {
	case hp.family == "ipv4":
		network = "tcp4"
	case hp.family == "ipv6":
		network = "tcp6"
	case hp.host == "":
		network = "tcp4" // HAProxy: '*' and an empty address mean all IPv4 addresses
	}
	out := make([]Bind, 0, hp.portEnd-hp.port+1)
	for port := hp.port; port <= hp.portEnd; port++ {
		out = append(out, Bind{Pos: pos, Addr: net.JoinHostPort(hp.host, strconv.Itoa(port)), Network: network})
	}
	return out
}

// serverAddr normalizes a server address to host:port.
func serverAddr(s string) (string, *hostPort, error) {
	hp, err := splitAddr(s, false)
	if err != nil {
		return "", nil, err
	}
	if hp.host == "" {
		return "", nil, fmt.Errorf("missing host (expected HOST:PORT)")
	}
	if hp.port == 0 {
		return "", nil, fmt.Errorf("invalid port '0' (expected 1..65535)")
	}
	return net.JoinHostPort(hp.host, strconv.Itoa(hp.port)), &hp, nil
}

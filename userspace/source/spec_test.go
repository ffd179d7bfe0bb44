package source

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/sluicelb/sluice/pkg/config"
)

func src(addr string, args ...string) config.Source {
	return config.Source{Pos: config.Pos{File: "t.cfg", Line: 1}, Addr: addr, Args: args}
}

func TestParseSpec(t *testing.T) {
	for _, tc := range []struct {
		addr string
		args []string
		want string // Spec.String()
		n    int    // pool size
	}{
		{"192.168.1.100", nil, "192.168.1.100", 1},
		{"0.0.0.0", nil, "0.0.0.0", 1},
		{"::", nil, "::", 1},
		{"10.0.0.1:1024-65535", nil, "10.0.0.1:1024-65535", 1},
		{"10.0.0.1:2000", nil, "10.0.0.1:2000", 1},
		{"10.0.0.1:0", nil, "10.0.0.1", 1},
		{"10.0.0.1,10.0.0.2", nil, "10.0.0.1,10.0.0.2", 2},
		{"127.0.0.2-127.0.0.5", nil, "127.0.0.2-127.0.0.5", 4},
		{"127.0.0.0/30", nil, "127.0.0.0-127.0.0.3", 4},
		{"127.0.0.9/30", nil, "127.0.0.8-127.0.0.11", 4}, // masked
		{"10.0.0.1,10.0.0.2,10.0.0.10-10.0.0.12:40000-40099", nil, "10.0.0.1,10.0.0.2,10.0.0.10-10.0.0.12:40000-40099", 5},
		{"10.0.0.255-10.0.1.1", nil, "10.0.0.255-10.0.1.1", 3},
		{"2001:db8::1", nil, "2001:db8::1", 1},
		{"2001:db8::1-2001:db8::3", nil, "2001:db8::1-2001:db8::3", 3},
		{"2001:db8::/126", nil, "2001:db8::-2001:db8::3", 4},
		{"[2001:db8::1,2001:db8::2]:1024-2047", nil, "[2001:db8::1,2001:db8::2]:1024-2047", 2},
		{"[::1]", nil, "::1", 1},
		{"10.0.0.1,2001:db8::1", nil, "10.0.0.1,2001:db8::1", 2},
		{"10.0.0.1,10.0.0.2,10.0.0.3,10.0.0.5,10.0.0.4", nil, "10.0.0.1-10.0.0.3,10.0.0.5,10.0.0.4", 5},
		{"::ffff:10.0.0.1", nil, "10.0.0.1", 1},
		{"ipv4@10.0.0.1:80", nil, "10.0.0.1:80", 1},
		{"ipv6@[::1]:80", nil, "[::1]:80", 1},
		{"10.0.0.0/20", nil, "10.0.0.0-10.0.15.255", 4096},
		{"0.0.0.0", []string{"usesrc", "clientip"}, "0.0.0.0 usesrc clientip", 1},
		{"192.168.1.1", []string{"usesrc", "client"}, "192.168.1.1 usesrc client", 1},
		{"192.168.1.1", []string{"usesrc", "10.1.1.1:3000"}, "192.168.1.1 usesrc 10.1.1.1:3000", 1},
		{"192.168.1.1", []string{"usesrc", "10.1.1.1"}, "192.168.1.1 usesrc 10.1.1.1", 1},
		{"0.0.0.0", []string{"interface", "eth1"}, "0.0.0.0 interface eth1", 1},
		{"10.0.0.1-10.0.0.2", []string{"interface", "eth1"}, "10.0.0.1,10.0.0.2 interface eth1", 2},
	} {
		t.Run(tc.addr+strings.Join(tc.args, "_"), func(t *testing.T) {
			sp, err := ParseSpec(src(tc.addr, tc.args...))
			if err != nil {
				t.Fatal(err)
			}
			if len(sp.Addrs) != tc.n {
				t.Errorf("%d addresses, want %d", len(sp.Addrs), tc.n)
			}
			if tc.want != "" && sp.String() != tc.want {
				t.Errorf("got %q, want %q", sp.String(), tc.want)
			}
			if err := Validate(src(tc.addr, tc.args...)); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}

func TestParseSpecErrors(t *testing.T) {
	for _, tc := range []struct {
		addr string
		args []string
		want string // substring of the message
	}{
		{"", nil, "source: missing address"},
		{"10.0.0.300", nil, "source '10.0.0.300': invalid address '10.0.0.300'"},
		{"eth0", nil, "invalid address 'eth0'"},
		{"10.0.0.1:", nil, "missing port after ':'"},
		{"10.0.0.1:http", nil, "invalid port 'http'"},
		{"10.0.0.1:70000", nil, "invalid port '70000'"},
		{"10.0.0.1:2000-1000", nil, "port range '2000-1000' ends before it starts"},
		{"10.0.0.1:0-100", nil, "starts at 0"},
		{"10.0.0.1,,10.0.0.2", nil, "empty item"},
		{"10.0.0.1,10.0.0.1", nil, "10.0.0.1 is listed twice"},
		{"10.0.0.0/30,10.0.0.2", nil, "10.0.0.2 is already in '10.0.0.0/30'"},
		{"10.0.0.5-10.0.0.1", nil, "the range ends before it starts"},
		{"10.0.0.1-2001:db8::1", nil, "same family"},
		{"10.0.0.0/19", nil, "2^13 addresses; a pool holds at most 4096"},
		{"2001:db8::/64", nil, "2^64 addresses"},
		{"10.0.0.0-10.1.0.0", nil, "more addresses than a pool holds (4096)"},
		{"::-::ffff:ffff:ffff:ffff", nil, "unspecified"},
		{"10.0.0.0/20,10.1.0.1", nil, "more than 4096 addresses"},
		{"10.0.0.0/33", nil, "invalid CIDR"},
		{"0.0.0.0,10.0.0.1", nil, "0.0.0.0 (any address) cannot be part of a pool"},
		{"0.0.0.0/30", nil, "unspecified address"},
		{"fe80::1%eth0", nil, "has a zone; use 'interface eth0'"},
		{"[2001:db8::1", nil, "missing ']'"},
		{"[2001:db8::1]80", nil, "expected ':PORT' after ']'"},
		{"ipv4@2001:db8::1", nil, "2001:db8::1 is not an IPv4 address"},
		{"ipv6@10.0.0.1", nil, "10.0.0.1 is not an IPv6 address"},
		{"unix@/tmp/x", nil, "unsupported address prefix 'unix@'"},
		{"10.0.0.1", []string{"usesrc"}, "usesrc: expects a value"},
		{"10.0.0.1", []string{"interface"}, "interface: expects a value"},
		{"10.0.0.1", []string{"usesrc", "hdr_ip(x-forwarded-for,-1)"}, "not supported by sluice"},
		{"10.0.0.1", []string{"usesrc", "nowhere"}, "expected client, clientip or ADDR[:PORT]"},
		{"10.0.0.1", []string{"usesrc", "2001:db8::1"}, "not the same family"},
		{"10.0.0.1", []string{"usesrc", "10.0.0.9:1-2"}, "expected a single port"},
		{"10.0.0.1", []string{"usesrc", "client", "usesrc", "clientip"}, "usesrc: given twice"},
		{"10.0.0.1,10.0.0.2", []string{"usesrc", "clientip"}, "cannot be combined with a pool of 2 addresses"},
		{"10.0.0.1", []string{"interface", "a/b"}, "not a valid interface name"},
		{"10.0.0.1", []string{"interface", "averyveryverylongname"}, "not a valid interface name"},
		{"10.0.0.1", []string{"interface", "a", "interface", "b"}, "interface: given twice"},
		{"10.0.0.1", []string{"check"}, "unknown option 'check' after the address (expected 'usesrc' or 'interface')"},
	} {
		t.Run(tc.addr+strings.Join(tc.args, "_"), func(t *testing.T) {
			_, err := ParseSpec(src(tc.addr, tc.args...))
			if err == nil {
				t.Fatalf("accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q lacks %q", err, tc.want)
			}
			if Validate(src(tc.addr, tc.args...)) == nil {
				t.Errorf("Validate accepted")
			}
			if _, err := ParsePool(src(tc.addr, tc.args...)); err == nil {
				t.Errorf("ParsePool accepted")
			}
		})
	}
}

// Errors are printed after "FILE:LINE: ": one line, no position of their own.
func TestSpecErrorsOneLine(t *testing.T) {
	_, err := ParseSpec(src("10.0.0.0/8"))
	if err == nil || strings.Contains(err.Error(), "\n") || strings.Contains(err.Error(), "t.cfg") {
		t.Fatalf("%v", err)
	}
	t.Log(config.Diag{Pos: config.Pos{File: "t.cfg", Line: 3}, Msg: err.Error()}.Error())
}

func TestSpan(t *testing.T) {
	a := netip.MustParseAddr("2001:db8::ffff:ffff")
	b := netip.MustParseAddr("2001:db8::1:0:0")
	if n, ok := span(a, b); !ok || n != 1 {
		t.Fatalf("span = %d %v", n, ok)
	}
}

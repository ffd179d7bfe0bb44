//go:build linux

package netnstest

import (
	"context"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// A pair is reachable across its veth, takes sysctls per namespace, and is
// gone after the test that made it.
func TestPair(t *testing.T) {
	Require(t)
	var names []string
	t.Run("pair", func(t *testing.T) {
		p := NewPair(t, 3)
		names = []string{p.A.Name, p.B.Name}
		if len(p.AAddrs) != 3 || p.AAddrs[2] != netip.MustParseAddr("198.18.0.4") {
			t.Fatalf("A's addresses %v", p.AAddrs)
		}
		out := p.A.IP(t, "-4", "addr", "show", "dev", "veth-a")
		for _, a := range p.AAddrs {
			if !strings.Contains(out, a.String()+"/24") {
				t.Errorf("%s lacks %s:\n%s", p.A.Name, a, out)
			}
		}
		host, _ := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
		p.A.Sysctl(t, "net.ipv4.ip_local_port_range", "40000 40099")
		p.A.Sysctl(t, "net.ipv4.tcp_tw_reuse", "0")
		if got, _ := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); string(got) != string(host) {
			t.Errorf("the host's range changed: %q -> %q", host, got)
		}
		// nsenter --net: A's sysctls, the host's mounts.
		if HaveNsenter() {
			out, err := p.A.NetCommandContext(context.Background(), "sh", "-c",
				"cat /proc/sys/net/ipv4/ip_local_port_range; grep -c ' - cgroup2 ' /proc/self/mountinfo; true").CombinedOutput()
			host, _ := exec.Command("grep", "-c", " - cgroup2 ", "/proc/self/mountinfo").Output()
			if want := "40000\t40099\n" + string(host); err != nil || string(out) != want {
				t.Errorf("nsenter --net into %s: %q, %v; want %q", p.A.Name, out, err, want)
			}
		}
		// B answers A across the veth: a connection to a closed port of B
		// is refused (an RST came back), not timed out.
		if _, err := os.Stat("/bin/bash"); err != nil {
			t.Skip("no bash for the reachability probe")
		}
		probe, _ := p.A.Command("bash", "-c", "timeout 3 bash -c 'exec 3<>/dev/tcp/198.18.0.1/9' 2>&1; true").CombinedOutput()
		if !strings.Contains(string(probe), "refused") {
			t.Errorf("198.18.0.1:9 from %s: %s", p.A.Name, probe)
		}
	})
	for _, n := range names {
		if _, err := os.Stat("/run/netns/" + n); err == nil {
			t.Errorf("namespace %s left behind", n)
		}
	}
}

func TestScanSockets(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	server := ln.Addr().(*net.TCPAddr).AddrPort()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 9)}}
	var conns []net.Conn
	for i := 0; i < 3; i++ {
		c, err := d.Dial("tcp4", server.String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	s, err := ScanSockets()
	if err != nil {
		t.Skipf("sock_diag unavailable: %v", err)
	}
	src := netip.MustParseAddr("127.0.0.9")
	if s.Established(src, server) != 3 || s.Occupied(src, server) != 3 || s.TimeWait(src, server) != 0 {
		t.Errorf("counts %+v", s.Counts(src, server))
	}
	if tot := s.Total(); tot.Established < 6 { // both ends of the three, and whatever else the host holds
		t.Errorf("total %+v, want at least 6 established", tot)
	}
	if time.Since(s.Taken()) > time.Minute {
		t.Errorf("taken %v", s.Taken())
	}
}

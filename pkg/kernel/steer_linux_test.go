package kernel

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// servers turns backends into steerable servers with the given weights and
// maxconn, all usable.
func servers(maxconn int, weights []int, bs ...*steerBackend) []SteerServer {
	out := make([]SteerServer, len(bs))
	for i, b := range bs {
		out[i] = SteerServer{Addr: b.addr, Weight: weights[i], MaxConn: maxconn, Usable: true}
	}
	return out
}

func setServices(t *testing.T, s *Steerer, svcs ...SteerService) {
	t.Helper()
	if err := s.SetServices(svcs); err != nil {
		t.Fatalf("SetServices: %v", err)
	}
}

func serviceStats(t *testing.T, s *Steerer, fe netip.AddrPort) SteerServiceStats {
	t.Helper()
	st, ok := s.Stats().Service(fe)
	if !ok {
		t.Fatalf("no stats for frontend %s", fe)
	}
	return st
}

// A client in the steered cgroup that connects to the frontend reaches a
// server directly: the server sees the client's own address as its peer,
// and getpeername() in the client says the frontend. IPv4, IPv4 through an
// AF_INET6 socket, and IPv6.
func TestSteerConnect(t *testing.T) {
	root := requireSteer(t)
	cg := makeCgroup(t, root, "connect")
	s := openSteerer(t, SteerOptions{Cgroup: cg})
	fe := startBackend(t, "FE", "127.0.0.1:0")
	b1, b2 := startBackend(t, "b1", "127.0.0.1:0"), startBackend(t, "b2", "127.0.0.1:0")
	svcs := []SteerService{{Frontend: fe.addr, Servers: servers(0, []int{1, 1}, b1, b2)}}
	fe6 := (*steerBackend)(nil)
	if ln, err := net.Listen("tcp6", "[::1]:0"); err == nil {
		ln.Close()
		fe6 = startBackend(t, "FE6", "[::1]:0")
		c6 := startBackend(t, "c6", "[::1]:0")
		// An IPv4 server in an IPv6 service is never chosen: a socket
		// cannot change its family.
		svcs = append(svcs, SteerService{Frontend: fe6.addr, Servers: servers(0, []int{1, 1}, b1, c6)})
	}
	setServices(t, s, svcs...)
	byName := map[string]*steerBackend{"b1": b1, "b2": b2}

	c := startChild(t, cg, false)
	for _, how := range []string{"dial", "dialmapped"} {
		t.Run(how, func(t *testing.T) {
			before := serviceStats(t, s, fe.addr).Steered
			d := c.dial(t, how, fe.addr)
			b := byName[d.greeting]
			if b == nil {
				t.Fatalf("answered by %q, want a server", d.greeting)
			}
			want := fe.addr
			if how == "dialmapped" {
				want = netip.AddrPortFrom(netip.AddrFrom16(fe.addr.Addr().As16()), fe.addr.Port())
			}
			if d.peer != want {
				t.Errorf("getpeername = %s, want the frontend %s", d.peer, want)
			}
			if !b.sawPeer(d.local) {
				t.Errorf("server %s did not see the client's address %s as its peer", b.name, d.local)
			}
			if got := serviceStats(t, s, fe.addr).Steered; got != before+1 {
				t.Errorf("Steered = %d, want %d", got, before+1)
			}
			if n := s.Established(b.addr); n != 1 {
				t.Errorf("Established(%s) = %d, want 1", b.name, n)
			}
			c.do(t, "close %s", d.id)
			waitFor(t, "place given back at close", func() string {
				if n := s.Established(b.addr); n != 0 {
					return fmt.Sprintf("Established(%s) = %d", b.name, n)
				}
				return ""
			})
		})
	}
	t.Run("ipv6", func(t *testing.T) {
		if fe6 == nil {
			t.Skip("no IPv6 loopback")
		}
		for range 20 {
			d := c.dial(t, "dial", fe6.addr)
			if d.greeting != "c6" || d.peer != fe6.addr {
				t.Fatalf("answered by %q, peer %s; want c6, %s", d.greeting, d.peer, fe6.addr)
			}
			c.do(t, "close %s", d.id)
		}
	})
	t.Run("outside the cgroup", func(t *testing.T) {
		// The test process is not in the cgroup: not steered.
		conn, err := net.Dial("tcp4", fe.addr.String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		line, _ := bufio.NewReader(conn).ReadString('\n')
		if line != "FE\n" {
			t.Errorf("answered by %q, want the frontend", line)
		}
	})
}

// Round robin follows the weights: 1:2:3 over 3,000 connections within
// ±10% (the sequence makes it exact for one client). Least connections
// balances long-lived connections by weight.
func TestSteerWeights(t *testing.T) {
	root := requireSteer(t)
	cg := makeCgroup(t, root, "weights")
	s := openSteerer(t, SteerOptions{Cgroup: cg})
	fe := startBackend(t, "FE", "127.0.0.1:0")
	fe2 := startBackend(t, "FE2", "127.0.0.1:0")
	b1, b2, b3 := startBackend(t, "b1", "127.0.0.1:0"), startBackend(t, "b2", "127.0.0.1:0"), startBackend(t, "b3", "127.0.0.1:0")
	setServices(t, s,
		SteerService{Frontend: fe.addr, Algo: SteerRoundRobin, Servers: servers(0, []int{1, 2, 3}, b1, b2, b3)},
		SteerService{Frontend: fe2.addr, Algo: SteerLeastConn, Servers: servers(0, []int{1, 2, 3}, b1, b2, b3)},
	)
	c := startChild(t, cg, false)

	t.Run("roundrobin", func(t *testing.T) {
		const n = 3000
		got := c.burst(t, n, fe.addr)
		t.Logf("3000 connections: %v", got)
		for name, want := range map[string]int{"b1": n / 6, "b2": 2 * n / 6, "b3": 3 * n / 6} {
			if !within(got[name], want, 0.10) {
				t.Errorf("%s got %d connections, want %d ±10%%", name, got[name], want)
			}
		}
		if got["FE"] != 0 {
			t.Errorf("%d connections fell through", got["FE"])
		}
		st := serviceStats(t, s, fe.addr)
		if st.Steered != n || st.FallThrough != 0 {
			t.Errorf("stats %+v, want %d steered, none fell through", st, n)
		}
	})
	t.Run("leastconn", func(t *testing.T) {
		got := map[string]int{}
		var ids []string
		for range 60 {
			d := c.dial(t, "dial", fe2.addr)
			got[d.greeting]++
			ids = append(ids, d.id)
		}
		t.Logf("60 long-lived connections: %v", got)
		for name, want := range map[string]int{"b1": 10, "b2": 20, "b3": 30} {
			if !within(got[name], want, 0.10) {
				t.Errorf("%s holds %d connections, want %d ±10%%", name, got[name], want)
			}
		}
		for _, id := range ids {
			c.do(t, "close %s", id)
		}
	})
}

// maxconn 5 on each of three servers: 15 long-lived connections fill them,
// the 16th reaches the frontend's listener (counted as a fall-through); when
// a steered connection closes its place is given back and the next connect
// is steered again. Places are shared with the daemon (Acquire), and a
// server the daemon queues for takes no steered connection and reports each
// release.
func TestSteerCapacity(t *testing.T) {
	root := requireSteer(t)
	cg := makeCgroup(t, root, "capacity")
	released := make(chan netip.AddrPort, 16)
	s := openSteerer(t, SteerOptions{Cgroup: cg, OnRelease: func(a netip.AddrPort) { released <- a }})
	fe := startBackend(t, "FE", "127.0.0.1:0")
	b1, b2, b3 := startBackend(t, "b1", "127.0.0.1:0"), startBackend(t, "b2", "127.0.0.1:0"), startBackend(t, "b3", "127.0.0.1:0")
	setServices(t, s, SteerService{Frontend: fe.addr, Servers: servers(5, []int{1, 1, 1}, b1, b2, b3)})
	byName := map[string]*steerBackend{"b1": b1, "b2": b2, "b3": b3}
	c := startChild(t, cg, false)

	held := map[string][]string{} // server -> connection ids
	for range 15 {
		d := c.dial(t, "dial", fe.addr)
		held[d.greeting] = append(held[d.greeting], d.id)
	}
	for name, b := range byName {
		if len(held[name]) != 5 || s.Established(b.addr) != 5 || s.InUse(b.addr) != 5 {
			t.Fatalf("%s: %d connections, Established %d, InUse %d; want 5 each", name, len(held[name]), s.Established(b.addr), s.InUse(b.addr))
		}
	}
	d := c.dial(t, "dial", fe.addr)
	if d.greeting != "FE" {
		t.Fatalf("16th connection answered by %s, want the frontend's listener", d.greeting)
	}
	c.do(t, "close %s", d.id)
	if st := serviceStats(t, s, fe.addr); st.FallThrough != 1 || st.Unavailable != 0 || st.Steered != 15 {
		t.Fatalf("stats %+v, want 15 steered, 1 fall-through (full)", st)
	}
	if _, ok := s.Acquire(b1.addr, 5); ok {
		t.Fatal("the daemon got a place on a full server")
	}

	// One closes: its place is free again, for the next connect.
	c.do(t, "close %s", held["b2"][0])
	held["b2"] = held["b2"][1:]
	waitFor(t, "b2's count drops", func() string {
		if n := s.Established(b2.addr); n != 4 {
			return fmt.Sprintf("Established(b2) = %d", n)
		}
		return ""
	})
	d = c.dial(t, "dial", fe.addr)
	if d.greeting != "b2" {
		t.Fatalf("after a close, answered by %s, want b2", d.greeting)
	}
	held["b2"] = append(held["b2"], d.id)

	// The daemon queues for b3: a place freed there is reported, and not
	// taken by a new steered connection while the queue waits.
	s.SetQueued(b3.addr, true)
	c.do(t, "close %s", held["b3"][0])
	held["b3"] = held["b3"][1:]
	select {
	case a := <-released:
		if a != b3.addr {
			t.Fatalf("release reported for %s, want b3 %s", a, b3.addr)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no release event for b3")
	}
	if d := c.dial(t, "dial", fe.addr); d.greeting != "FE" {
		t.Fatalf("a server with a queue took a steered connection (%s)", d.greeting)
	} else {
		c.do(t, "close %s", d.id)
	}
	// The daemon dispatches its queued connection onto the free place.
	p, ok := s.Acquire(b3.addr, 5)
	if !ok || s.InUse(b3.addr) != 5 || s.Established(b3.addr) != 4 {
		t.Fatalf("Acquire(b3) = %v, InUse %d, Established %d; want a place, 5, 4", ok, s.InUse(b3.addr), s.Established(b3.addr))
	}
	s.SetQueued(b3.addr, false)
	if d := c.dial(t, "dial", fe.addr); d.greeting != "FE" {
		t.Fatalf("answered by %s while every server is full (b3 by the daemon)", d.greeting)
	} else {
		c.do(t, "close %s", d.id)
	}
	s.Release(p)
	if d := c.dial(t, "dial", fe.addr); d.greeting != "b3" {
		t.Fatalf("after the daemon's Release, answered by %s, want b3", d.greeting)
	}
	if st := serviceStats(t, s, fe.addr); st.FallThrough != 3 {
		t.Errorf("FallThrough = %d, want 3", st.FallThrough)
	}
	select {
	case a := <-released:
		t.Errorf("unexpected release event for %s (no queue)", a)
	default:
	}
}

// A place is given back exactly once whichever way the socket ends: the
// server closes first (the client's socket leaves ESTABLISHED for
// CLOSE_WAIT while the client still holds it), the connection is refused
// (state callback from SYN_SENT), connect() fails before the handshake
// started (EADDRNOTAVAIL: no state callback; given back at close), the
// client process exits.
func TestSteerGiveBack(t *testing.T) {
	root := requireSteer(t)
	cg := makeCgroup(t, root, "giveback")
	s := openSteerer(t, SteerOptions{Cgroup: cg})
	fe := startBackend(t, "FE", "127.0.0.1:0")
	fe2 := startBackend(t, "FE2", "127.0.0.1:0")
	b := startBackend(t, "b", "127.0.0.1:0")
	// An address nothing listens on.
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().(*net.TCPAddr).AddrPort()
	ln.Close()
	setServices(t, s,
		SteerService{Frontend: fe.addr, Servers: []SteerServer{{Addr: dead, Weight: 1, MaxConn: 1, Usable: true}}},
		SteerService{Frontend: fe2.addr, Servers: []SteerServer{{Addr: b.addr, Weight: 1, MaxConn: 2, Usable: true}}},
	)
	c := startChild(t, cg, false)

	t.Run("server closes first", func(t *testing.T) {
		d := c.dial(t, "dial", fe2.addr)
		if d.greeting != "b" || s.InUse(b.addr) != 1 {
			t.Fatalf("answered by %s, InUse %d", d.greeting, s.InUse(b.addr))
		}
		c.do(t, "send %s C", d.id)
		waitFor(t, "place given back when the server closed", func() string {
			if n := s.InUse(b.addr); n != 0 {
				return fmt.Sprintf("InUse = %d (client socket in CLOSE_WAIT, still open)", n)
			}
			return ""
		})
		c.do(t, "close %s", d.id)
		if n := s.InUse(b.addr); n != 0 {
			t.Fatalf("InUse = %d after close: given back twice or not at all", n)
		}
	})
	t.Run("refused", func(t *testing.T) {
		for range 3 {
			if r := c.try("dial %s", fe.addr); !strings.Contains(r, "ECONNREFUSED") {
				t.Fatalf("dial to a dead server: %q, want ECONNREFUSED (steered, not fallen through)", r)
			}
			if n := s.InUse(dead); n != 0 {
				t.Fatalf("InUse(dead) = %d after a refused connect", n)
			}
		}
		if st := serviceStats(t, s, fe.addr); st.Steered != 3 || st.FallThrough != 0 {
			t.Errorf("stats %+v, want 3 steered", st)
		}
	})
	t.Run("failed before the handshake", func(t *testing.T) {
		// Same source address and port twice to the same server: the
		// second connect() fails in the kernel's port check, after the
		// program took its place and before any state callback.
		local := "127.0.0.9:" + strconv.Itoa(20000+os.Getpid()%20000)
		f := c.do(t, "bindconnect %s %s", local, fe2.addr)
		if f[1] != "none" {
			t.Fatalf("first connect from %s: %s", local, f[1])
		}
		f2 := c.do(t, "bindconnect %s %s", local, fe2.addr)
		if f2[1] != "EADDRNOTAVAIL" {
			t.Fatalf("second connect from %s: %s, want EADDRNOTAVAIL", local, f2[1])
		}
		if n := s.InUse(b.addr); n != 2 {
			t.Fatalf("InUse = %d with one connection and one failed socket still open, want 2", n)
		}
		c.do(t, "close %s", f2[0])
		if n := s.InUse(b.addr); n != 1 {
			t.Fatalf("InUse = %d after closing the failed socket, want 1", n)
		}
		c.do(t, "close %s", f[0])
		if n := s.InUse(b.addr); n != 0 {
			t.Fatalf("InUse = %d after closing everything, want 0", n)
		}
	})
	t.Run("process exits", func(t *testing.T) {
		c2 := startChild(t, cg, false)
		c2.dial(t, "dial", fe2.addr)
		c2.dial(t, "dial", fe2.addr)
		if n := s.InUse(b.addr); n != 2 {
			t.Fatalf("InUse = %d, want 2", n)
		}
		c2.cmd.Process.Kill()
		waitFor(t, "places given back when the process died", func() string {
			if n := s.InUse(b.addr); n != 0 {
				return fmt.Sprintf("InUse = %d", n)
			}
			return ""
		})
	})
}

// Several processes race for the places of three servers with maxconn 5:
// no server ever holds more than 5, exactly 15 are steered, the rest fall
// through, and every place comes back when the processes exit.
func TestSteerCapacityRace(t *testing.T) {
	root := requireSteer(t)
	cg := makeCgroup(t, root, "race")
	s := openSteerer(t, SteerOptions{Cgroup: cg})
	fe := startBackend(t, "FE", "127.0.0.1:0")
	bs := []*steerBackend{startBackend(t, "b1", "127.0.0.1:0"), startBackend(t, "b2", "127.0.0.1:0"), startBackend(t, "b3", "127.0.0.1:0")}
	setServices(t, s, SteerService{Frontend: fe.addr, Algo: SteerLeastConn, Servers: servers(5, []int{1, 1, 1}, bs...)})
	const procs, each = 4, 10
	children := make([]*steerChild, procs)
	for i := range children {
		children[i] = startChild(t, cg, false)
	}
	got := make([]map[string]int, procs)
	done := make(chan error, procs)
	for i, c := range children {
		go func() {
			got[i] = map[string]int{}
			for range each {
				r := strings.Fields(c.try("dial %s", fe.addr))
				if len(r) != 5 || r[0] != "OK" {
					done <- fmt.Errorf("dial: %v", r)
					return
				}
				got[i][r[4]]++
			}
			done <- nil
		}()
	}
	for range procs {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	total := map[string]int{}
	for _, g := range got {
		for k, v := range g {
			total[k] += v
		}
	}
	t.Logf("%d connections: %v", procs*each, total)
	for _, b := range bs {
		if total[b.name] != 5 || s.InUse(b.addr) != 5 {
			t.Errorf("%s: %d steered, InUse %d; want 5", b.name, total[b.name], s.InUse(b.addr))
		}
		waitFor(t, "server sees its connections", func() string {
			if n := b.openConns(); n != 5 {
				return fmt.Sprintf("%s holds %d", b.name, n)
			}
			return ""
		})
	}
	if st := serviceStats(t, s, fe.addr); st.Steered != 15 || st.FallThrough != procs*each-15 || total["FE"] != procs*each-15 {
		t.Errorf("stats %+v, %d at the frontend; want 15 steered, %d fallen through", st, total["FE"], procs*each-15)
	}
	for _, c := range children {
		c.cmd.Process.Kill()
	}
	waitFor(t, "every place given back", func() string {
		var d []string
		for _, b := range bs {
			if n, e := s.InUse(b.addr), s.Established(b.addr); n != 0 || e != 0 {
				d = append(d, fmt.Sprintf("%s InUse %d Established %d", b.name, n, e))
			}
		}
		return strings.Join(d, ", ")
	})
	for _, b := range bs {
		if st, _ := s.Stats().Server(b.addr); st.Steered != 5 || st.Released != 5 {
			t.Errorf("%s stats %+v, want 5 steered and 5 released", b.name, st)
		}
	}
}

// A server set unusable (maint, drain, down) gets no new steered
// connection from the next connect() on; the others share its part; with
// none usable, everything falls through (counted as unavailable).
func TestSteerMaint(t *testing.T) {
	root := requireSteer(t)
	cg := makeCgroup(t, root, "maint")
	s := openSteerer(t, SteerOptions{Cgroup: cg})
	fe := startBackend(t, "FE", "127.0.0.1:0")
	b1, b2, b3 := startBackend(t, "b1", "127.0.0.1:0"), startBackend(t, "b2", "127.0.0.1:0"), startBackend(t, "b3", "127.0.0.1:0")
	setServices(t, s, SteerService{Frontend: fe.addr, Servers: servers(0, []int{1, 1, 1}, b1, b2, b3)})
	c := startChild(t, cg, false)

	if err := s.SetServerUsable(fe.addr, b2.addr, false); err != nil {
		t.Fatal(err)
	}
	got := c.burst(t, 300, fe.addr)
	if got["b2"] != 0 || !within(got["b1"], 150, 0.1) || !within(got["b3"], 150, 0.1) {
		t.Errorf("b2 in maint: %v, want b1 and b3 150 each, b2 none", got)
	}
	if err := s.SetServerUsable(fe.addr, b2.addr, true); err != nil {
		t.Fatal(err)
	}
	if got := c.burst(t, 300, fe.addr); !within(got["b2"], 100, 0.1) {
		t.Errorf("b2 back: %v, want 100 each", got)
	}
	for _, b := range []*steerBackend{b1, b2, b3} {
		if err := s.SetServerUsable(fe.addr, b.addr, false); err != nil {
			t.Fatal(err)
		}
	}
	before := serviceStats(t, s, fe.addr)
	if got := c.burst(t, 10, fe.addr); got["FE"] != 10 {
		t.Errorf("all in maint: %v, want all 10 at the frontend", got)
	}
	after := serviceStats(t, s, fe.addr)
	if after.Unavailable-before.Unavailable != 10 || after.FallThrough-before.FallThrough != 10 {
		t.Errorf("stats %+v -> %+v, want 10 more unavailable fall-throughs", before, after)
	}
	if err := s.SetServerUsable(fe.addr, netip.MustParseAddrPort("127.0.0.1:1"), false); !errors.Is(err, ErrSteerNotFound) {
		t.Errorf("unknown server: %v, want ErrSteerNotFound", err)
	}
}

// The daemon's own connect() calls are never steered, even from inside the
// steered cgroup, while another process there is: in the same pid namespace,
// in its own pid namespace (as in a container), and with the fallback that
// older kernels use (init-namespace tgid).
func TestSteerDaemonExempt(t *testing.T) {
	root := requireSteer(t)
	for _, tc := range []struct {
		name     string
		newPIDNS bool
		initPID  bool
	}{
		{"same pid namespace", false, false},
		{"own pid namespace", true, false},
		{"init-namespace tgid fallback", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cg := makeCgroup(t, root, "daemon"+strconv.Itoa(int(time.Now().UnixNano()%1e6)))
			daemon := startChild(t, cg, tc.newPIDNS)
			client := startChild(t, cg, false)
			steerForceInitPID = tc.initPID
			s := openSteerer(t, SteerOptions{Cgroup: cg, DaemonPID: daemon.pid})
			steerForceInitPID = false
			if s.initPID != tc.initPID {
				t.Fatalf("initPID = %v", s.initPID)
			}
			fe := startBackend(t, "FE", "127.0.0.1:0")
			b := startBackend(t, "b", "127.0.0.1:0")
			setServices(t, s, SteerService{Frontend: fe.addr, Servers: servers(0, []int{1}, b)})

			if got := daemon.burst(t, 20, fe.addr); got["FE"] != 20 {
				t.Errorf("daemon's connections: %v, want all 20 at the frontend", got)
			}
			if got := client.burst(t, 20, fe.addr); got["b"] != 20 {
				t.Errorf("client's connections: %v, want all 20 steered to b", got)
			}
			if st := serviceStats(t, s, fe.addr); st.Steered != 20 || st.FallThrough != 0 {
				t.Errorf("stats %+v: the daemon's connections must not count", st)
			}
		})
	}
	t.Run("default is the caller", func(t *testing.T) {
		cg := makeCgroup(t, root, "daemon-self")
		s := openSteerer(t, SteerOptions{Cgroup: cg})
		var cfg steerSteerConfig
		if err := s.objs.SteerDaemon.Lookup(uint32(0), &cfg); err != nil {
			t.Fatal(err)
		}
		d, err := daemonIdentity(0)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Tgid != d.tgid || cfg.Tgid == 0 || cfg.PidnsIno != d.nsIno {
			t.Errorf("config %+v, want tgid %d in ns %d", cfg, d.tgid, d.nsIno)
		}
	})
}

// Reloads change services in place: counts of servers that stay carry on,
// removed servers get no new connections, a removed frontend is no longer
// steered, and a server's counters stay listed while its connections do.
func TestSteerReload(t *testing.T) {
	root := requireSteer(t)
	cg := makeCgroup(t, root, "reload")
	s := openSteerer(t, SteerOptions{Cgroup: cg})
	fe := startBackend(t, "FE", "127.0.0.1:0")
	b1, b2, b3 := startBackend(t, "b1", "127.0.0.1:0"), startBackend(t, "b2", "127.0.0.1:0"), startBackend(t, "b3", "127.0.0.1:0")
	setServices(t, s, SteerService{Frontend: fe.addr, Servers: servers(10, []int{1, 1}, b1, b2)})
	c := startChild(t, cg, false)
	held := map[string][]string{}
	for range 4 {
		d := c.dial(t, "dial", fe.addr)
		held[d.greeting] = append(held[d.greeting], d.id)
	}
	if len(held["b1"]) != 2 || len(held["b2"]) != 2 {
		t.Fatalf("held %v", held)
	}

	setServices(t, s, SteerService{Frontend: fe.addr, Servers: servers(3, []int{1, 1}, b1, b3)})
	if n := s.Established(b1.addr); n != 2 {
		t.Errorf("Established(b1) = %d after reload, want 2 (carried on)", n)
	}
	if _, ok := s.Stats().Server(b2.addr); !ok {
		t.Error("b2's counters gone while it still has steered connections")
	}
	got := map[string]int{}
	for range 4 {
		d := c.dial(t, "dial", fe.addr)
		got[d.greeting]++
		held[d.greeting] = append(held[d.greeting], d.id)
	}
	// b1 has 2 of maxconn 3: it takes 1, b3 takes 3.
	if got["b1"] != 1 || got["b3"] != 3 {
		t.Errorf("after reload: %v, want b1 1, b3 3", got)
	}
	for _, id := range held["b2"] {
		c.do(t, "close %s", id)
	}
	if n := s.InUse(b2.addr); n != 0 {
		t.Errorf("InUse(b2) = %d after its connections closed", n)
	}
	// Two more reloads (each with a grace period) drop b2's counters.
	setServices(t, s, SteerService{Frontend: fe.addr, Servers: servers(3, []int{1, 2}, b1, b3)})
	setServices(t, s, SteerService{Frontend: fe.addr, Servers: servers(3, []int{2, 1}, b1, b3)})
	if _, ok := s.Stats().Server(b2.addr); ok {
		t.Error("b2's counters still listed")
	}

	setServices(t, s)
	if got := c.burst(t, 5, fe.addr); got["FE"] != 5 {
		t.Errorf("removed frontend: %v, want all at the frontend", got)
	}
	if st := s.Stats(); len(st.Services) != 0 {
		t.Errorf("stats still list %v", st.Services)
	}
	setServices(t, s, SteerService{Frontend: fe.addr, Servers: servers(0, []int{1}, b2)})
	if got := c.burst(t, 5, fe.addr); got["b2"] != 5 {
		t.Errorf("frontend back: %v, want all at b2", got)
	}
	if st := serviceStats(t, s, fe.addr); st.Steered != 5 {
		t.Errorf("re-added frontend's stats %+v, want 5 steered (fresh counters)", st)
	}
}

// steerIDs are the kernel IDs of a Steerer's links and programs.
type steerIDs struct {
	links []link.ID
	progs []ebpf.ProgramID
}

func (s *Steerer) kernelIDs() (steerIDs, error) {
	var out steerIDs
	for _, l := range s.links {
		info, err := l.Info()
		if err != nil {
			return out, err
		}
		out.links = append(out.links, info.ID)
	}
	for _, p := range []*ebpf.Program{s.objs.SteerConnect4, s.objs.SteerConnect6, s.objs.SteerGetpeername4,
		s.objs.SteerGetpeername6, s.objs.SteerSockops, s.objs.SteerRelease} {
		info, err := p.Info()
		if err != nil {
			return out, err
		}
		id, ok := info.ID()
		if !ok {
			return out, errors.New("no program ID")
		}
		out.progs = append(out.progs, id)
	}
	return out, nil
}

var steerAttachTypes = []ebpf.AttachType{
	ebpf.AttachCGroupInet4Connect, ebpf.AttachCGroupInet6Connect,
	ebpf.AttachCgroupInet4GetPeername, ebpf.AttachCgroupInet6GetPeername,
	ebpf.AttachCGroupSockOps, ebpf.AttachCgroupInetSockRelease,
}

// attached lists the programs attached to cg for each of steer's hooks.
func attached(t *testing.T, cg string) []string {
	f, err := os.Open(cg)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	for _, at := range steerAttachTypes {
		res, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: at})
		if err != nil {
			t.Fatalf("query %s on %s: %v", at, cg, err)
		}
		for _, p := range res.Programs {
			out = append(out, fmt.Sprintf("%s: program %d", at, p.ID))
		}
	}
	return out
}

func (ids steerIDs) leftovers() string {
	var left []string
	for _, id := range ids.progs {
		if p, err := ebpf.NewProgramFromID(id); err == nil {
			p.Close()
			left = append(left, fmt.Sprintf("program %d", id))
		}
	}
	for _, id := range ids.links {
		if l, err := link.NewFromID(id); err == nil {
			l.Close()
			left = append(left, fmt.Sprintf("link %d", id))
		}
	}
	return strings.Join(left, ", ")
}

// TestSteerChildSteerer is the child of TestSteerDetachOnExit (it does
// nothing in a normal run): it opens a Steerer on the cgroup it is given,
// prints the kernel IDs, then exits without Close or waits to be killed.
func TestSteerChildSteerer(t *testing.T) {
	mode := os.Getenv(steerChildEnv)
	if mode != "exit" && mode != "kill" {
		return
	}
	s, err := OpenSteerer(SteerOptions{Cgroup: os.Getenv("SLUICE_STEER_TEST_CGROUP")})
	if err != nil {
		fmt.Printf("ERR %v\n", err)
		os.Exit(2)
	}
	ids, err := s.kernelIDs()
	if err != nil {
		fmt.Printf("ERR %v\n", err)
		os.Exit(2)
	}
	fmt.Printf("IDS %v %v\n", ids.links, ids.progs)
	if mode == "exit" {
		os.Exit(0) // no Close: the kernel must clean up on its own
	}
	time.Sleep(60 * time.Second)
	fmt.Println("ERR not killed")
	os.Exit(3)
}

// After the process exits (without Close) or is killed, nothing of steer
// stays attached to the cgroup or loaded: links, not pins.
func TestSteerDetachOnExit(t *testing.T) {
	root := requireSteer(t)
	for _, mode := range []string{"exit", "kill"} {
		t.Run(mode, func(t *testing.T) {
			cg := makeCgroup(t, root, "detach-"+mode)
			child := startIDChild(t, "^TestSteerChildSteerer$", 6, steerChildEnv+"="+mode, "SLUICE_STEER_TEST_CGROUP="+cg)
			ids := steerIDs(child.ids)
			if mode == "kill" {
				if got := attached(t, cg); len(got) != len(steerAttachTypes) || ids.leftovers() == "" {
					t.Fatalf("live child: attached %v, leftovers %q", got, ids.leftovers())
				}
				child.kill(t)
			}
			child.wait(t, mode == "exit")
			eventually(t, 10*time.Second, "nothing of the child left", func() string {
				if got := attached(t, cg); len(got) > 0 {
					return fmt.Sprintf("still attached to %s: %v", cg, got)
				}
				return ids.leftovers()
			})
		})
	}
}

func TestInnermostPID(t *testing.T) {
	for _, tc := range []struct {
		status string
		want   uint32
		ok     bool
	}{
		{"Name:\tx\nNSpid:\t1234\n", 1234, true},
		{"NSpid:\t1234\t17\t1\n", 1, true},
		{"Name:\tx\n", 0, false},
		{"NSpid:\t\n", 0, false},
	} {
		got, err := innermostPID([]byte(tc.status))
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("innermostPID(%q) = %d, %v", tc.status, got, err)
		}
	}
	d, err := daemonIdentity(0)
	if err != nil {
		t.Fatal(err)
	}
	if d.callerPID != uint32(os.Getpid()) || d.tgid == 0 || d.nsIno == 0 {
		t.Errorf("daemonIdentity(0) = %+v", d)
	}
	if !slices.Contains([]uint32{d.callerPID}, d.tgid) && d.nsIno == procPIDInitIno {
		t.Errorf("in the initial pid namespace, tgid %d != pid %d", d.tgid, d.callerPID)
	}
}

// With every service id in use, replacing a frontend reuses the removed
// one's id (after a grace period) with fresh counters; capacity errors
// change nothing.
func TestSteerIDReuse(t *testing.T) {
	root := requireSteer(t)
	cg := makeCgroup(t, root, "ids")
	s := openSteerer(t, SteerOptions{Cgroup: cg, MaxServices: 2, MaxServerAddrs: 2})
	fes := []*steerBackend{startBackend(t, "FE1", "127.0.0.1:0"), startBackend(t, "FE2", "127.0.0.1:0"), startBackend(t, "FE3", "127.0.0.1:0")}
	b1, b2, b3 := startBackend(t, "b1", "127.0.0.1:0"), startBackend(t, "b2", "127.0.0.1:0"), startBackend(t, "b3", "127.0.0.1:0")
	svc := func(fe, b *steerBackend) SteerService {
		return SteerService{Frontend: fe.addr, Servers: servers(0, []int{1}, b)}
	}
	setServices(t, s, svc(fes[0], b1), svc(fes[1], b2))
	c := startChild(t, cg, false)
	if got := c.burst(t, 5, fes[0].addr); got["b1"] != 5 {
		t.Fatalf("FE1: %v", got)
	}
	if err := s.SetServices([]SteerService{svc(fes[0], b1), svc(fes[1], b2), svc(fes[2], b1)}); err == nil {
		t.Fatal("a third frontend accepted with MaxServices 2")
	}
	if err := s.SetServices([]SteerService{svc(fes[0], b1), svc(fes[1], b3)}); err == nil {
		t.Fatal("a third server address accepted with MaxServerAddrs 2")
	}
	if got := c.burst(t, 5, fes[1].addr); got["b2"] != 5 {
		t.Fatalf("after refused changes, FE2: %v", got)
	}
	// FE1 goes, FE3 comes: FE1's id is reused.
	setServices(t, s, svc(fes[1], b2), svc(fes[2], b2))
	if got := c.burst(t, 5, fes[0].addr); got["FE1"] != 5 {
		t.Errorf("removed FE1: %v, want all at its listener", got)
	}
	if got := c.burst(t, 5, fes[2].addr); got["b2"] != 5 {
		t.Errorf("FE3: %v", got)
	}
	if st := serviceStats(t, s, fes[2].addr); st.Steered != 5 {
		t.Errorf("FE3 stats %+v: counters not fresh", st)
	}
	// b1's slot is free once unused across a grace period: b3 fits now.
	setServices(t, s, svc(fes[1], b2), svc(fes[2], b2))
	setServices(t, s, svc(fes[1], b2), svc(fes[2], b3))
	if got := c.burst(t, 5, fes[2].addr); got["b3"] != 5 {
		t.Errorf("FE3 on b3: %v", got)
	}
}

// Reloads and state changes while a client connects in a loop: every
// connection reaches a server of the old or the new configuration (the
// kernel never sees half a table), getpeername always says the frontend,
// and no place is left taken.
func TestSteerReloadUnderLoad(t *testing.T) {
	root := requireSteer(t)
	cg := makeCgroup(t, root, "reloadload")
	s := openSteerer(t, SteerOptions{Cgroup: cg})
	fe := startBackend(t, "FE", "127.0.0.1:0")
	bs := []*steerBackend{startBackend(t, "b1", "127.0.0.1:0"), startBackend(t, "b2", "127.0.0.1:0"),
		startBackend(t, "b3", "127.0.0.1:0"), startBackend(t, "b4", "127.0.0.1:0")}
	cfgs := []SteerService{
		{Frontend: fe.addr, Servers: servers(1000, []int{1, 3}, bs[0], bs[1])},
		{Frontend: fe.addr, Algo: SteerLeastConn, Servers: servers(1000, []int{2, 1}, bs[2], bs[3])},
	}
	setServices(t, s, cfgs[0])
	c := startChild(t, cg, false)
	done := make(chan string)
	go func() { done <- c.try("burst 3000 %s", fe.addr) }()
	flips := 0
	for loop := true; loop; {
		select {
		case r := <-done:
			t.Logf("%d reloads and state changes during 3000 connections: %s", flips, r)
			if !strings.HasPrefix(r, "OK ") || !strings.HasSuffix(r, " badpeer=0") || strings.Contains(r, "FE=") {
				t.Errorf("want every connection steered, getpeername always the frontend; got %s", r)
			}
			loop = false
		default:
			flips++
			sv := cfgs[flips%2]
			if err := s.SetServices([]SteerService{sv}); err != nil {
				t.Fatal(err)
			}
			if err := s.SetServerUsable(fe.addr, sv.Servers[0].Addr, false); err != nil {
				t.Fatal(err)
			}
			if err := s.SetServerUsable(fe.addr, sv.Servers[0].Addr, true); err != nil {
				t.Fatal(err)
			}
		}
	}
	if flips < 10 {
		t.Errorf("only %d reloads during the run", flips)
	}
	for _, b := range bs {
		if n := s.InUse(b.addr); n != 0 {
			t.Errorf("InUse(%s) = %d after every connection closed", b.name, n)
		}
	}
	if st := serviceStats(t, s, fe.addr); st.Steered != 3000 {
		t.Errorf("stats %+v, want 3000 steered", st)
	}
}

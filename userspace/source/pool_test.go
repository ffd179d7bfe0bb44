package source

import (
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeOcc is an Occupancy from a map; missing tuples are 0.
type fakeOcc map[netip.Addr]int

func (f fakeOcc) Occupied(src netip.Addr, _ netip.AddrPort) int { return f[src] }

// countingOcc is a live fake kernel: every Pick becomes an occupied tuple.
type countingOcc struct {
	mu sync.Mutex
	n  map[netip.Addr]int
}

func (c *countingOcc) Occupied(src netip.Addr, _ netip.AddrPort) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[src]
}

func (c *countingOcc) add(src netip.Addr) {
	c.mu.Lock()
	c.n[src]++
	c.mu.Unlock()
}

func mustPool(t *testing.T, addr string, args ...string) *Pool {
	t.Helper()
	p, err := ParsePool(src(addr, args...))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var server = netip.MustParseAddrPort("198.51.100.10:80")

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// A source the kernel shows as full is not picked while others have room.
func TestPickFollowsOccupancy(t *testing.T) {
	p := mustPool(t, "10.0.0.1-10.0.0.4:1000-1099")
	occ := fakeOcc{addr("10.0.0.1"): 100, addr("10.0.0.2"): 50}
	got := map[netip.Addr]int{}
	for i := 0; i < 60; i++ {
		a, err := p.Pick(server, occ)
		if err != nil {
			t.Fatal(err)
		}
		got[a]++
	}
	if got[addr("10.0.0.1")] != 0 {
		t.Errorf("the full source was picked %d times: %v", got[addr("10.0.0.1")], got)
	}
	// Undated occupancy is live: Pick alone changes nothing, so 10.0.0.2 (50
	// used) loses to .3 and .4 (0 used) every time, which share by rotation.
	if got[addr("10.0.0.2")] != 0 || got[addr("10.0.0.3")] != 30 || got[addr("10.0.0.4")] != 30 {
		t.Errorf("spread %v", got)
	}
}

// Equal sources share evenly: 400 connections over 4 sources, the kernel
// seeing each one (a live occupancy), or none (nil), or a snapshot.
func TestPickSpreadsEvenly(t *testing.T) {
	for _, mode := range []string{"live", "nil", "snapshot"} {
		t.Run(mode, func(t *testing.T) {
			p := mustPool(t, "127.0.0.0/30")
			live := &countingOcc{n: map[netip.Addr]int{}}
			snap := At(fakeOcc{}, time.Now())
			got := map[netip.Addr]int{}
			for i := 0; i < 400; i++ {
				var occ Occupancy
				switch mode {
				case "live":
					occ = live
				case "snapshot":
					occ = snap
				}
				a, err := p.Pick(server, occ)
				if err != nil {
					t.Fatal(err)
				}
				live.add(a)
				got[a]++
			}
			if len(got) != 4 {
				t.Fatalf("spread %v", got)
			}
			for a, n := range got {
				if n < 90 || n > 110 {
					t.Errorf("%s: %d of 400 (want 100 ±10%%): %v", a, n, got)
				}
			}
		})
	}
}

// With a dated snapshot, the pool counts its own choices since: a source
// that looked emptier gets only the difference, then the spread evens out.
// The same snapshot undated (taken as live) would send everything there.
func TestPickCountsChoicesSinceSnapshot(t *testing.T) {
	occ := fakeOcc{addr("10.0.0.2"): 5, addr("10.0.0.3"): 5, addr("10.0.0.4"): 5}
	now := time.Unix(1000, 0)
	p := mustPool(t, "10.0.0.1-10.0.0.4")
	p.now = func() time.Time { return now }
	p.origin = now
	snap := At(occ, now)
	got := map[netip.Addr]int{}
	for i := 0; i < 25; i++ {
		a, _ := p.Pick(server, snap)
		if i < 5 && a != addr("10.0.0.1") {
			t.Fatalf("pick %d: %s, want 10.0.0.1 (5 tuples freer)", i, a)
		}
		got[a]++
	}
	for a, n := range got {
		if total := n + occ[a]; total != 10 {
			t.Errorf("%s: %d picks + %d occupied, want 10 in all: %v", a, n, occ[a], got)
		}
	}

	// A new snapshot taken later sees those connections itself: the pool
	// no longer subtracts them (here the fake shows nothing, so all equal).
	now = now.Add(2 * time.Second)
	later := At(fakeOcc{}, now)
	st := p.Stats(later)
	for _, s := range st {
		if s.Free != s.Ports {
			t.Errorf("%s: free %d, want %d once the snapshot is newer than the choices", s.Source, s.Free, s.Ports)
		}
	}
	// ...while the old snapshot still has them subtracted.
	for _, s := range p.Stats(snap) {
		if want := s.Ports - 10; s.Free != want {
			t.Errorf("%s: free %d by the old snapshot, want %d", s.Source, s.Free, want)
		}
	}

	pl := mustPool(t, "10.0.0.1-10.0.0.4")
	for i := 0; i < 10; i++ {
		if a, _ := pl.Pick(server, occ); a != addr("10.0.0.1") {
			t.Fatalf("undated pick %d: %s", i, a)
		}
	}
}

func TestPickFamily(t *testing.T) {
	p := mustPool(t, "10.0.0.1,2001:db8::1,2001:db8::2")
	v6 := netip.MustParseAddrPort("[2001:db8::100]:443")
	seen := map[netip.Addr]bool{}
	for i := 0; i < 4; i++ {
		a, err := p.Pick(v6, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !a.Is6() {
			t.Fatalf("IPv4 source %s for an IPv6 server", a)
		}
		seen[a] = true
	}
	if len(seen) != 2 {
		t.Errorf("v6 sources used: %v", seen)
	}
	if a, _ := p.Pick(netip.MustParseAddrPort("[::ffff:198.51.100.1]:80"), nil); a != addr("10.0.0.1") {
		t.Errorf("mapped IPv4 server got %s", a)
	}
	_, err := mustPool(t, "10.0.0.1").Pick(v6, nil)
	if err == nil || !strings.Contains(err.Error(), "no IPv6 address for server [2001:db8::100]:443") {
		t.Errorf("err = %v", err)
	}
	any := mustPool(t, "0.0.0.0")
	if a, _ := any.Pick(v6, nil); a != netip.IPv6Unspecified() {
		t.Errorf("0.0.0.0 toward IPv6: %s", a)
	}
}

func TestPortsFromLocalRange(t *testing.T) {
	p := mustPool(t, "10.0.0.1")
	lo, hi, err := localPortRange()
	if err != nil {
		t.Skip(err)
	}
	if p.Ports() != hi-lo+1 {
		t.Errorf("Ports = %d, range %d-%d", p.Ports(), lo, hi)
	}
	if q := mustPool(t, "10.0.0.1:5000-5099"); q.Ports() != 100 {
		t.Errorf("explicit range: Ports = %d", q.Ports())
	}
}

func TestStats(t *testing.T) {
	p := mustPool(t, "10.0.0.1,10.0.0.2:1000-1009")
	other := netip.MustParseAddrPort("198.51.100.11:80")
	p.Track(other)
	p.Pick(server, nil)
	p.Pick(server, nil)
	p.Pick(server, nil)
	st := p.Stats(nil)
	if len(st) != 4 {
		t.Fatalf("%d rows: %+v", len(st), st)
	}
	if st[0].Server != other || st[0].Selections != 0 || st[0].Occupied != -1 || st[0].Free != -1 {
		t.Errorf("tracked row %+v", st[0])
	}
	if st[2].Server != server || st[2].Source != addr("10.0.0.1") || st[2].Selections != 2 || st[3].Selections != 1 || st[2].Ports != 10 {
		t.Errorf("rows %+v", st[2:])
	}
	st = p.Stats(fakeOcc{addr("10.0.0.2"): 4})
	if st[3].Occupied != 4 || st[3].Free != 6 {
		t.Errorf("with occupancy %+v", st[3])
	}
}

// Pick from many goroutines (run with -race).
func TestPickConcurrent(t *testing.T) {
	p := mustPool(t, "10.0.0.0/28")
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				p.Pick(server, nil)
			}
		}()
	}
	wg.Wait()
	var total uint64
	for _, s := range p.Stats(nil) {
		total += s.Selections
	}
	if total != 1600 {
		t.Errorf("selections %d", total)
	}
}

func BenchmarkPick(b *testing.B) {
	for _, spec := range []string{"10.0.0.1-10.0.0.4", "10.0.0.0/22"} {
		b.Run(spec, func(b *testing.B) {
			p, _ := ParsePool(src(spec))
			occ := At(fakeOcc{}, time.Now())
			for i := 0; i < b.N; i++ {
				p.Pick(server, occ)
			}
		})
	}
}

// A snapshot with a zero time (a nil kernel snapshot) counts every recent
// choice, as a very old snapshot would.
func TestPickZeroTaken(t *testing.T) {
	p := mustPool(t, "10.0.0.1-10.0.0.2")
	snap := At(fakeOcc{}, time.Time{})
	p.Pick(server, snap)
	p.Pick(server, snap)
	p.Pick(server, snap)
	for _, s := range p.Stats(snap) {
		if want := s.Ports - int(s.Selections); s.Free != want {
			t.Errorf("%s: free %d, want %d", s.Source, s.Free, want)
		}
	}
}

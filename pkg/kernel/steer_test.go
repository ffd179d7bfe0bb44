package kernel

import (
	"net/netip"
	"strings"
	"testing"
)

func TestWRRSequence(t *testing.T) {
	for _, tc := range []struct {
		weights []int
		len     int
	}{
		{[]int{1, 2, 3}, 6},
		{[]int{10, 20, 30}, 6}, // divided by the gcd
		{[]int{1, 0, 1}, 2},    // weight 0 gets no turn
		{[]int{256, 256, 1}, 513},
		{[]int{0, 0}, 0},
	} {
		seq := wrrSequence(tc.weights, steerWRRSlots)
		if len(seq) != tc.len {
			t.Errorf("%v: length %d, want %d", tc.weights, len(seq), tc.len)
			continue
		}
		g := 0
		for _, w := range tc.weights {
			g = gcd(g, w)
		}
		counts := make([]int, len(tc.weights))
		for _, i := range seq {
			counts[i]++
		}
		for i, w := range tc.weights {
			if g > 0 && counts[i] != w/g {
				t.Errorf("%v: server %d has %d turns, want %d", tc.weights, i, counts[i], w/g)
			}
		}
	}
	// Smooth: a server of weight 1 among heavier ones is not bunched, and
	// no server gets two turns in a row when its weight is at most half.
	seq := wrrSequence([]int{1, 2, 3}, steerWRRSlots)
	for i := 1; i < len(seq); i++ {
		if seq[i] == seq[i-1] && seq[i] != 2 {
			t.Errorf("sequence %v repeats server %d", seq, seq[i])
		}
	}
	// Too long: scaled to fit, shares kept within one turn, every server
	// at least one turn.
	weights := make([]int, 64)
	for i := range weights {
		weights[i] = 256 - i
	}
	weights[63] = 1
	seq = wrrSequence(weights, steerWRRSlots)
	if len(seq) > steerWRRSlots {
		t.Fatalf("length %d > %d", len(seq), steerWRRSlots)
	}
	counts := make([]int, 64)
	for _, i := range seq {
		counts[i]++
	}
	sum := 0
	for _, w := range weights {
		sum += w
	}
	for i, w := range weights {
		want := float64(w) * float64(len(seq)) / float64(sum)
		if counts[i] < 1 || float64(counts[i]) < want-1.5 || float64(counts[i]) > want+1.5 {
			t.Errorf("server %d (weight %d): %d turns, want about %.1f", i, w, counts[i], want)
		}
	}
}

func TestNormalizeServices(t *testing.T) {
	ap := netip.MustParseAddrPort
	srv := func(a string) SteerServer { return SteerServer{Addr: ap(a), Weight: 1, Usable: true} }
	ok := []SteerService{
		{Frontend: ap("[::ffff:127.0.0.1]:80"), Servers: []SteerServer{srv("[::ffff:127.0.0.2]:80")}},
		{Frontend: ap("10.0.0.1:80"), Algo: "leastconn"},
	}
	got, err := normalizeServices(ok)
	if err != nil {
		t.Fatal(err)
	}
	if got[1].Frontend != ap("127.0.0.1:80") || got[1].Servers[0].Addr != ap("127.0.0.2:80") {
		t.Errorf("not unmapped or not sorted: %+v", got)
	}
	many := make([]SteerServer, SteerMaxServers+1)
	for i := range many {
		many[i] = srv("127.0.0.2:80")
	}
	for _, tc := range []struct {
		svc  SteerService
		want string
	}{
		{SteerService{Frontend: ap("0.0.0.0:80")}, "wildcard"},
		{SteerService{Frontend: ap("127.0.0.1:0")}, "port"},
		{SteerService{Frontend: ap("127.0.0.1:80"), Algo: "source"}, "cannot be steered"},
		{SteerService{Frontend: ap("127.0.0.1:80"), Servers: many}, "at most"},
		{SteerService{Frontend: ap("127.0.0.1:80"), Servers: []SteerServer{{Addr: ap("127.0.0.2:80"), Weight: 257}}}, "weight"},
		{SteerService{Frontend: ap("127.0.0.1:80"), Servers: []SteerServer{{Addr: ap("127.0.0.2:80"), MaxConn: -1}}}, "maxconn"},
		{SteerService{Frontend: ap("127.0.0.1:80"), Servers: []SteerServer{{Addr: ap("0.0.0.0:80")}}}, "server"},
	} {
		if _, err := normalizeServices([]SteerService{tc.svc}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want an error about %q", tc.svc, err, tc.want)
		}
	}
	if _, err := normalizeServices([]SteerService{ok[1], ok[1]}); err == nil {
		t.Error("a frontend listed twice accepted")
	}
}

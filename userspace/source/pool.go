package source

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sluicelb/sluice/pkg/config"
)

// Occupancy tells how many sockets the kernel holds per (source, server)
// tuple, in any state (ESTABLISHED, TIME_WAIT, others). pkg/kernel's snapshot
// satisfies it.
type Occupancy interface {
	Occupied(src netip.Addr, server netip.AddrPort) int
}

// Dated is implemented by an Occupancy that is a snapshot: Taken says when the
// kernel was read. The pool then subtracts every connection it chose a
// source for since that time, which the snapshot cannot show yet. An
// Occupancy without it is taken as live, and only the dials still in progress
// are subtracted.
type Dated interface {
	Taken() time.Time
}

// At dates an Occupancy snapshot taken at t (see Dated).
func At(occ Occupancy, t time.Time) Occupancy { return dated{occ, t} }

type dated struct {
	Occupancy
	t time.Time
}

func (d dated) Taken() time.Time { return d.t }

// ErrExhausted is matched (errors.Is) by the error of a Dial for which every
// source of the pool had no free tuple toward the server.
var ErrExhausted = errors.New("source addresses exhausted")

// ExhaustedError is a Dial's failure after every source was tried.
type ExhaustedError struct {
	Server netip.AddrPort
	Tried  int   // sources tried
	Err    error // the last source's error (EADDRNOTAVAIL, EADDRINUSE...)
}

func (e *ExhaustedError) Error() string {
	s := "sources"
	if e.Tried == 1 {
		s = "source"
	}
	return fmt.Sprintf("no free source address toward %s: %d %s tried, last: %v", e.Server, e.Tried, s, e.Err)
}

func (e *ExhaustedError) Unwrap() error        { return e.Err }
func (e *ExhaustedError) Is(target error) bool { return target == ErrExhausted }

// Accounting of recent choices, for dated snapshots: choices are counted in
// time slots; a snapshot older than the ring's span sees every slot.
const (
	slotLen = 500 * time.Millisecond
	slots   = 16
	// A source that just answered EADDRNOTAVAIL toward a server ranks after
	// the others for this long (or until a snapshot taken after it).
	fullCooldown = time.Second
)

// Pool is a parsed `source` setting ready to choose and connect. It is safe
// for concurrent use; one Pool may serve several servers.
type Pool struct {
	spec       Spec
	fam4, fam6 []int // indexes of Addrs usable toward IPv4 / IPv6 servers
	any        bool  // the pool is the unspecified address: the kernel chooses

	now    func() time.Time
	origin time.Time

	ports     atomic.Int64 // ports per (source, server)
	localLo   atomic.Int32 // net.ipv4.ip_local_port_range, as last read
	localHi   atomic.Int32
	kernelRng atomic.Bool   // explicit range inside the local range: IP_LOCAL_PORT_RANGE
	portSeq   atomic.Uint32 // rotating start for explicit port walks

	mu      sync.Mutex
	servers map[netip.AddrPort]*serverState
	order   []netip.AddrPort // servers in the order first seen, for Stats
}

type serverState struct {
	rr  int // position in the family list where the next tie-break starts
	src []srcState
}

type srcState struct {
	selections, connected, exhausted, failed uint64
	inflight                                 int
	fullAt                                   time.Time
	recent                                   *ring
}

// ring counts choices per time slot.
type ring struct {
	epoch [slots]int32
	n     [slots]int32
}

func (r *ring) add(e int32) {
	i := e % slots
	if r.epoch[i] != e {
		r.epoch[i], r.n[i] = e, 0
	}
	r.n[i]++
}

// since sums the slots from epoch from to now (at most the ring's span).
func (r *ring) since(from, now int32) int {
	sum := 0
	for i := range r.epoch {
		if e := r.epoch[i]; e >= from && e > now-slots && e <= now {
			sum += int(r.n[i])
		}
	}
	return sum
}

// ParsePool parses a `source` setting and makes its Pool. Errors carry no
// position; the caller prefixes s.Pos.
func ParsePool(s config.Source) (*Pool, error) {
	sp, err := ParseSpec(s)
	if err != nil {
		return nil, err
	}
	return NewPool(sp)
}

// NewPool makes the Pool of a Spec. Without an explicit port range, the
// ports per (source, server) come from net.ipv4.ip_local_port_range, read
// now (see RefreshPorts).
func NewPool(sp Spec) (*Pool, error) {
	if len(sp.Addrs) == 0 {
		return nil, errors.New("source: empty pool")
	}
	p := &Pool{spec: sp, now: time.Now, servers: map[netip.AddrPort]*serverState{}}
	p.origin = p.now()
	p.any = len(sp.Addrs) == 1 && sp.Addrs[0].IsUnspecified()
	for i, a := range sp.Addrs {
		if p.any || a.Is4() {
			p.fam4 = append(p.fam4, i)
		}
		if p.any || a.Is6() {
			p.fam6 = append(p.fam6, i)
		}
	}
	p.RefreshPorts()
	return p, nil
}

// Spec returns what the pool was made from.
func (p *Pool) Spec() Spec { return p.spec }

// Addrs returns the pool's addresses.
func (p *Pool) Addrs() []netip.Addr { return slices.Clone(p.spec.Addrs) }

// Ports returns the ports each (source, server) tuple may use.
func (p *Pool) Ports() int { return int(p.ports.Load()) }

// RefreshPorts reads net.ipv4.ip_local_port_range again (this process's
// network namespace). When it cannot be read, the kernel's default range
// (32768-60999) is assumed and the error returned.
func (p *Pool) RefreshPorts() error {
	lo, hi, err := localPortRange()
	if err != nil {
		lo, hi = 32768, 60999
	}
	p.localLo.Store(int32(lo))
	p.localHi.Store(int32(hi))
	if n := p.spec.Ports(); n > 0 {
		p.ports.Store(int64(n))
		p.kernelRng.Store(kernelPortRange && int(p.spec.PortLow) >= lo && int(p.spec.PortHigh) <= hi)
	} else {
		p.ports.Store(int64(hi - lo + 1))
	}
	return err
}

// Track makes a server appear in Stats before its first connection.
func (p *Pool) Track(server netip.AddrPort) {
	p.mu.Lock()
	p.stateLocked(normalize(server))
	p.mu.Unlock()
}

func normalize(server netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(server.Addr().Unmap(), server.Port())
}

// stateLocked returns the server's state and the pool indexes of its family.
func (p *Pool) stateLocked(server netip.AddrPort) (*serverState, []int, error) {
	cands := p.fam4
	if server.Addr().Is6() {
		cands = p.fam6
	}
	if len(cands) == 0 {
		fam := "IPv4"
		if server.Addr().Is6() {
			fam = "IPv6"
		}
		return nil, nil, fmt.Errorf("source pool %s has no %s address for server %s", p.spec, fam, server)
	}
	st := p.servers[server]
	if st == nil {
		st = &serverState{src: make([]srcState, len(p.spec.Addrs))}
		p.servers[server] = st
		p.order = append(p.order, server)
	}
	return st, cands, nil
}

// addr is the address a pool index binds to toward server.
func (p *Pool) addr(i int, server netip.AddrPort) netip.Addr {
	if p.any && server.Addr().Is6() {
		return netip.IPv6Unspecified()
	}
	return p.spec.Addrs[i]
}

// epoch is t's slot number; times long before the pool (a zero Taken) all
// land in one slot before every recorded choice.
func (p *Pool) epoch(t time.Time) int32 {
	e := int64(t.Sub(p.origin) / slotLen)
	return int32(max(min(e, 1<<30), -1<<30))
}

// view is what a choice needs to know about the occupancy.
type view struct {
	occ   Occupancy
	dated bool
	since int32 // epoch of the snapshot
	taken time.Time
	now   time.Time
	nowE  int32
}

func (p *Pool) view(occ Occupancy) view {
	v := view{occ: occ, now: p.now()}
	v.nowE = p.epoch(v.now)
	if d, ok := occ.(Dated); ok {
		v.dated, v.taken = true, d.Taken()
		v.since = p.epoch(v.taken)
	}
	return v
}

// freeLocked is the free tuples of source i toward server as the pool sees them.
func (p *Pool) freeLocked(st *serverState, i int, server netip.AddrPort, v *view) int {
	ports := int(p.ports.Load())
	f := ports
	if v.occ != nil {
		f -= v.occ.Occupied(p.addr(i, server), server)
	}
	s := &st.src[i]
	if v.dated {
		if s.recent != nil {
			f -= s.recent.since(v.since, v.nowE)
		}
	} else {
		f -= s.inflight
	}
	if !s.fullAt.IsZero() && v.now.Sub(s.fullAt) < fullCooldown && (!v.dated || v.taken.Before(s.fullAt)) {
		f -= ports + 1
	}
	return f
}

// bestLocked returns the position in cands of the source with the most free
// tuples; ties go to the first one from the round-robin position on.
func (p *Pool) bestLocked(st *serverState, cands []int, server netip.AddrPort, v *view) int {
	n := len(cands)
	best, bestFree := -1, 0
	for k := 0; k < n; k++ {
		pos := (st.rr + k) % n
		if f := p.freeLocked(st, cands[pos], server, v); best < 0 || f > bestFree {
			best, bestFree = pos, f
		}
	}
	return best
}

// chooseLocked records that source i was chosen toward server.
func (p *Pool) chooseLocked(st *serverState, cands []int, pos int, v *view, dialing bool) int {
	i := cands[pos]
	st.rr = (pos + 1) % len(cands)
	s := &st.src[i]
	s.selections++
	if s.recent == nil {
		s.recent = new(ring)
	}
	s.recent.add(v.nowE)
	if dialing {
		s.inflight++
	}
	return i
}

// Pick chooses the source with the most free tuples toward server, given
// the kernel's occupancy (nil: none known). Free = ports in range −
// occupied(src, server) − the pool's own choices the occupancy cannot show
// yet; ties rotate. The choice is recorded as if the caller connects from it.
// Pick fails only when the pool has no address of the server's family; a
// source it returns may still be full (Dial handles that). Its cost is
// linear in the pool (about 20 ns per address: 90 µs for MaxPool).
func (p *Pool) Pick(server netip.AddrPort, occ Occupancy) (netip.Addr, error) {
	server = normalize(server)
	p.mu.Lock()
	defer p.mu.Unlock()
	st, cands, err := p.stateLocked(server)
	if err != nil {
		return netip.Addr{}, err
	}
	v := p.view(occ)
	i := p.chooseLocked(st, cands, p.bestLocked(st, cands, server, &v), &v, false)
	return p.addr(i, server), nil
}

// Dial connects to server from the best source (see Pick), falling back to
// the next best while the kernel answers EADDRNOTAVAIL or EADDRINUSE (no free
// tuple, or an address that cannot be bound). It returns the connection and
// the source used; when every source failed so, an *ExhaustedError
// (errors.Is ErrExhausted). Any other error (refused, timeout, ctx) is
// returned at once: it is the server's or the caller's, not the source's.
// timeout bounds the whole call (0: only ctx).
func (p *Pool) Dial(ctx context.Context, server netip.AddrPort, occ Occupancy, timeout time.Duration) (*net.TCPConn, netip.Addr, error) {
	if p.spec.Transparent() {
		if p.spec.UseSrc.Kind != UseSrcAddr {
			return nil, netip.Addr{}, fmt.Errorf("source %s: needs the client's address: use DialTransparent", p.spec)
		}
		c, err := p.DialTransparent(ctx, server, netip.AddrPort{}, timeout)
		return c, p.spec.UseSrc.Addr.Addr(), err
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	server = normalize(server)
	p.mu.Lock()
	st, cands, err := p.stateLocked(server)
	if err != nil {
		p.mu.Unlock()
		return nil, netip.Addr{}, err
	}
	v := p.view(occ)
	first := p.bestLocked(st, cands, server, &v)
	i := p.chooseLocked(st, cands, first, &v, true)
	p.mu.Unlock()

	c, err := p.attempt(ctx, st, i, server)
	if err == nil || !noTuple(err) || len(cands) == 1 {
		if err != nil && noTuple(err) {
			return nil, netip.Addr{}, &ExhaustedError{Server: server, Tried: 1, Err: err}
		}
		return c, p.addr(i, server), err
	}

	// Fall back: the others, best first, as ranked now.
	p.mu.Lock()
	v = p.view(occ)
	type ranked struct{ pos, free int }
	rest := make([]ranked, 0, len(cands)-1)
	for k := 1; k < len(cands); k++ {
		pos := (first + k) % len(cands)
		rest = append(rest, ranked{pos, p.freeLocked(st, cands[pos], server, &v)})
	}
	p.mu.Unlock()
	slices.SortStableFunc(rest, func(a, b ranked) int { return b.free - a.free })
	tried, last := 1, err
	for _, r := range rest {
		if err := ctx.Err(); err != nil {
			return nil, netip.Addr{}, fmt.Errorf("dial %s: %w (after %d sources without a free tuple, last: %v)", server, err, tried, last)
		}
		p.mu.Lock()
		v = p.view(occ)
		i = p.chooseLocked(st, cands, r.pos, &v, true)
		p.mu.Unlock()
		c, err := p.attempt(ctx, st, i, server)
		tried++
		if err == nil || !noTuple(err) {
			return c, p.addr(i, server), err
		}
		last = err
	}
	return nil, netip.Addr{}, &ExhaustedError{Server: server, Tried: tried, Err: last}
}

// attempt dials from source i and does its accounting.
func (p *Pool) attempt(ctx context.Context, st *serverState, i int, server netip.AddrPort) (*net.TCPConn, error) {
	c, err := p.dialFrom(ctx, p.addr(i, server), server)
	p.mu.Lock()
	s := &st.src[i]
	s.inflight--
	switch {
	case err == nil:
		s.connected++
	case noTuple(err) && !bindNotAvail(err):
		s.exhausted++
		s.fullAt = p.now()
	case noTuple(err):
		s.failed++ // the address cannot be bound here
		s.fullAt = p.now()
	default:
		s.failed++
	}
	p.mu.Unlock()
	return c, err
}

// noTuple reports an error that is the source's: no free tuple, or an
// address that cannot be bound.
func noTuple(err error) bool {
	return errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.EADDRINUSE)
}

// bindNotAvail reports bind's EADDRNOTAVAIL: the address is not the host's.
func bindNotAvail(err error) bool {
	var se *os.SyscallError
	return errors.As(err, &se) && se.Syscall == "bind" && errors.Is(se.Err, syscall.EADDRNOTAVAIL)
}

// Stat is one (server, source) row of Stats.
type Stat struct {
	Server     netip.AddrPort
	Source     netip.Addr
	Ports      int    // ports in range for this tuple
	Selections uint64 // times chosen (Pick, or a Dial attempt)
	Connected  uint64 // Dial attempts that connected
	Exhausted  uint64 // Dial attempts the kernel refused for lack of a free tuple (EADDRNOTAVAIL/EADDRINUSE)
	Failed     uint64 // other failed attempts (address not bindable, refused, timeout...)
	InFlight   int    // Dial attempts in progress
	// With an Occupancy: the kernel's count and the free tuples as Pick
	// sees them; -1 without.
	Occupied, Free int
}

// Stats returns a row per (server, source) for every server the pool has
// served (or Tracks), in the order first seen, sources in pool order. occ
// may be nil.
func (p *Pool) Stats(occ Occupancy) []Stat {
	p.mu.Lock()
	defer p.mu.Unlock()
	v := p.view(occ)
	var out []Stat
	for _, server := range p.order {
		st := p.servers[server]
		cands := p.fam4
		if server.Addr().Is6() {
			cands = p.fam6
		}
		for _, i := range cands {
			s := &st.src[i]
			row := Stat{
				Server: server, Source: p.addr(i, server), Ports: int(p.ports.Load()),
				Selections: s.selections, Connected: s.connected, Exhausted: s.exhausted, Failed: s.failed,
				InFlight: s.inflight, Occupied: -1, Free: -1,
			}
			if occ != nil {
				row.Occupied = occ.Occupied(row.Source, server)
				row.Free = p.freeLocked(st, i, server, &v)
			}
			out = append(out, row)
		}
	}
	return out
}

// LocalPorts is the number of ports of the kernel's ephemeral range
// (net.ipv4.ip_local_port_range): the tuples one source address has toward
// one server when no port range is given. Linux's default range has 28,232.
func LocalPorts() int {
	lo, hi, err := localPortRange()
	if err != nil {
		return 60999 - 32768 + 1
	}
	return hi - lo + 1
}

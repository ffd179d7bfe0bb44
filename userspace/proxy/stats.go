package proxy

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/sluicelb/sluice/userspace/queue"
	"github.com/sluicelb/sluice/userspace/source"
	"github.com/sluicelb/sluice/userspace/tunnel"
)

// Stats is a snapshot of the proxy's counters, for metrics, the stats page
// and the runtime API. Every figure is read from an atomic; the snapshot is
// not taken under one lock, so figures of different objects may be a few
// requests apart.
type Stats struct {
	CurrConns      int64 // client connections being served
	MaxConn        int   // global maxconn, 0 = none
	MaxConnReached int64 // times a listener waited for a maxconn slot
	Frontends      []FrontendStats
	Backends       []BackendStats
	Tunnels        tunnel.Totals // WebSocket and mode tcp tunnels
	// KernelMode is how the kernel figures were obtained: "ebpf",
	// "netlink", or "" when there are none.
	KernelMode string
	// KernelLost counts events the kernel programs could not record (map
	// full): non-zero means the kernel figures are incomplete.
	KernelLost int64
}

// FrontendStats are one frontend's counters.
type FrontendStats struct {
	Name         string
	CurrSessions int64
	MaxSessions  int64 // highest CurrSessions seen
	Sessions     int64 // total
	MaxConn      int   // 0 = unlimited
	// Kernel is the established connections the kernel counts on the
	// frontend's listeners (nil without kernel counters).
	Kernel *int64
	// Steer is the kernel steering's figures (nil when not steered).
	Steer *SteerFrontendStats
}

// SteerFrontendStats count the connect() calls kernel steering saw for a
// frontend.
type SteerFrontendStats struct {
	Steered     int64 // sent straight to a server
	FallThrough int64 // left to sluice's listener: every server full or unusable
}

// BackendStats are one backend's counters.
type BackendStats struct {
	Name         string
	CurrSessions int64 // requests being handled by the backend, queued or not
	Sessions     int64 // total
	QueueCur     int64 // waiting in the backend queue
	QueueMax     int64
	Queued       int64         // requests that had to wait, ever
	QueueTime    time.Duration // total time they waited
	Servers      []ServerStats
}

// ServerStats are one server's counters.
type ServerStats struct {
	Name      string
	Addr      string
	State     string // UP, DOWN, MAINT, DRAIN
	Weight    int
	Cur       int64 // requests holding a slot
	Max       int64
	Total     int64
	Limit     int64 // maxconn in force (dynamic with minconn), 0 = unlimited
	QueueCur  int64 // waiting for this server
	QueueMax  int64
	Failures  int64 // connection failures and retries
	MaxQueue  int
	ConfigMax int   // configured maxconn
	Tunnels   int64 // live tunnels to the server (each also holds a slot: Cur)
	// Kernel is what the kernel counts toward the server (nil without
	// kernel counters): filled by the Proxy's KernelStats hook.
	Kernel *KernelServerStats
	// Steered is the steered connections open to the server now and in
	// total (kernel steering; zero without).
	Steered, SteeredTotal int64
}

// KernelServerStats are the kernel's figures for one server.
type KernelServerStats struct {
	Established int64 // established connections from sluice (sockops)
	TimeWait    int64 // sockets in TIME_WAIT toward the server, all sources (iter/tcp)
	Sources     []SourceStats
}

// SourceStats are the figures of one source address toward one server.
type SourceStats struct {
	Addr        string
	Established int64 // ESTABLISHED sockets (source, server)
	TimeWait    int64
	Occupied    int64 // sockets in any state: the tuples taken
	Free        int64 // ports in range - occupied - dials in flight
	Selections  int64 // times this source was picked
	Exhausted   int64 // connects that failed for lack of a free tuple (EADDRNOTAVAIL)
}

// Stats returns a snapshot of the counters.
func (p *Proxy) Stats() Stats {
	st := Stats{CurrConns: p.actconn.Load(), MaxConn: p.maxconn, MaxConnReached: p.maxconnReached.Load(), Tunnels: p.tunnels.Totals()}
	perServer := map[[2]string]int64{}
	for _, t := range p.tunnels.Snapshots() {
		perServer[[2]string{t.Backend, t.Server}]++
	}
	g := p.g()
	for _, fe := range g.frontends {
		st.Frontends = append(st.Frontends, FrontendStats{
			Name: fe.name, CurrSessions: fe.cur.Load(), MaxSessions: fe.max.Load(), Sessions: fe.total.Load(), MaxConn: cap(fe.sem),
		})
	}
	for _, be := range g.backends {
		bs := BackendStats{
			Name: be.name, CurrSessions: be.q.Sessions.Load(), Sessions: be.total.Load(),
			QueueCur: be.q.QueueCur.Load(), QueueMax: be.q.QueueMax.Load(),
			Queued: be.q.Queued.Load(), QueueTime: time.Duration(be.q.QueueWait.Load()),
		}
		for _, s := range be.servers {
			q := s.q
			bs.Servers = append(bs.Servers, ServerStats{
				Name: q.Name, Addr: q.Addr, State: q.State().String(), Weight: q.Weight,
				Cur: q.Cur.Load(), Max: q.Max.Load(), Total: q.Total.Load(), Limit: q.Limit.Load(),
				QueueCur: q.QueueCur.Load(), QueueMax: q.QueueMax.Load(), Failures: q.Failures.Load(),
				MaxQueue: q.MaxQueue, ConfigMax: q.MaxConn, Tunnels: perServer[[2]string{be.name, q.Name}],
			})
		}
		st.Backends = append(st.Backends, bs)
	}
	if p.KernelStats != nil {
		p.KernelStats(&st)
	}
	p.addSourceStats(&st, g)
	return st
}

// addSourceStats adds what the source pools know (selections, exhaustion,
// free tuples as they count them) to the per-source figures.
func (p *Proxy) addSourceStats(st *Stats, g *generation) {
	if len(g.pools) == 0 {
		return
	}
	var occ source.Occupancy
	if p.Occupancy != nil {
		occ = p.Occupancy()
	}
	type key struct {
		server netip.AddrPort
		src    string
	}
	rows := map[key]source.Stat{}
	for _, pl := range g.pools {
		for _, r := range pl.Stats(occ) {
			rows[key{r.Server, r.Source.String()}] = r
		}
	}
	for bi, be := range g.backends {
		for si, srv := range be.servers {
			if srv.src == nil || bi >= len(st.Backends) || si >= len(st.Backends[bi].Servers) {
				continue
			}
			ss := &st.Backends[bi].Servers[si]
			if ss.Kernel == nil {
				ss.Kernel = &KernelServerStats{}
			}
			seen := map[string]int{}
			for i, src := range ss.Kernel.Sources {
				seen[src.Addr] = i
			}
			var pooled []SourceStats
			for _, a := range srv.src.Addrs() {
				r, ok := rows[key{srv.ap, a.String()}]
				if !ok {
					continue
				}
				row := SourceStats{Addr: a.String()}
				if i, ok := seen[row.Addr]; ok {
					row = ss.Kernel.Sources[i]
				}
				row.Selections, row.Exhausted = int64(r.Selections), int64(r.Exhausted)
				if r.Free >= 0 {
					row.Free, row.Occupied = int64(r.Free), int64(r.Occupied)
				} else {
					row.Free = int64(r.Ports) - row.Occupied
				}
				pooled = append(pooled, row)
			}
			ss.Kernel.Sources = pooled // the pool's sources, in pool order
		}
	}
}

// findServer returns the server backend/name.
func (p *Proxy) findServer(backend, name string) (*server, error) {
	for _, be := range p.g().backends {
		if be.name != backend {
			continue
		}
		for _, s := range be.servers {
			if s.q.Name == name {
				return s, nil
			}
		}
		return nil, fmt.Errorf("no such server '%s' in backend '%s'", name, backend)
	}
	return nil, fmt.Errorf("no such backend '%s'", backend)
}

// SetServerWeight sets a server's weight (0..256).
func (p *Proxy) SetServerWeight(backend, name string, w int) error {
	s, err := p.findServer(backend, name)
	if err != nil {
		return err
	}
	if w < 0 || w > 256 {
		return fmt.Errorf("weight %d out of range 0..256", w)
	}
	s.be.q.SetWeight(s.q, w)
	if p.ServerTuned != nil {
		p.ServerTuned(backend, name)
	}
	return nil
}

// SetServerMaxConn sets a server's maxconn (0: unlimited).
func (p *Proxy) SetServerMaxConn(backend, name string, n int) error {
	s, err := p.findServer(backend, name)
	if err != nil {
		return err
	}
	if n < 0 {
		return fmt.Errorf("maxconn %d is negative", n)
	}
	s.be.q.SetMaxConn(s.q, n)
	if p.ServerTuned != nil {
		p.ServerTuned(backend, name)
	}
	return nil
}

// ClearCounters resets the maximums (queue and sessions), as HAProxy's
// `clear counters`.
func (p *Proxy) ClearCounters() {
	for _, fe := range p.g().frontends {
		fe.max.Store(fe.cur.Load())
	}
	for _, be := range p.g().backends {
		be.q.QueueMax.Store(be.q.QueueCur.Load())
		for _, s := range be.servers {
			s.q.Max.Store(s.q.Cur.Load())
			s.q.QueueMax.Store(s.q.QueueCur.Load())
		}
	}
}

// SessionInfo describes a client connection for `show sess`.
type SessionInfo struct {
	Src      string
	Frontend string // the frontend that accepted it
	Age      time.Duration
}

// Sessions lists the client connections being served.
func (p *Proxy) Sessions() []SessionInfo {
	now := time.Now()
	var out []SessionInfo
	p.conns.Range(func(k, _ any) bool {
		s := k.(*session)
		out = append(out, SessionInfo{Src: s.src.String(), Frontend: s.feName, Age: now.Sub(s.created)})
		return true
	})
	return out
}

// ShutdownServerSessions ends at once every tunnel (WebSocket, mode tcp) to
// a server and closes its idle pooled connections, as HAProxy's
// `shutdown sessions server`. It returns how many tunnels it ended.
// Requests in progress finish: they hold a server slot for a bounded time.
func (p *Proxy) ShutdownServerSessions(backend, name string) (int, error) {
	s, err := p.findServer(backend, name)
	if err != nil {
		return 0, err
	}
	s.pool.closeAll()
	n := p.tunnels.Kill(func(i tunnel.Info) bool { return i.Backend == backend && i.Server == name })
	p.log.Info("sessions shut down", "backend", backend, "server", name, "tunnels", n)
	return n, nil
}

// HasSourcePools reports whether some server connects from a `source` pool.
func (p *Proxy) HasSourcePools() bool { return len(p.g().pools) > 0 }

// ShareSlots makes a server's slots shared with another party (kernel
// steering): see queue.Server.Shared. It applies to the configuration in
// force; call it again after a reload.
func (p *Proxy) ShareSlots(backend, name string, sh queue.SharedSlots) error {
	s, err := p.findServer(backend, name)
	if err != nil {
		return err
	}
	s.be.q.SetShared(s.q, sh)
	return nil
}

// KickServer hands the free slots of the servers at addr to requests
// waiting for them (the other party of a shared count gave places back).
func (p *Proxy) KickServer(addr netip.AddrPort) {
	for _, be := range p.g().backends {
		for _, s := range be.servers {
			if s.ap == addr {
				be.q.Kick(s.q)
			}
		}
	}
}

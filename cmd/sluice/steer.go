package main

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/sluicelb/sluice/pkg/config"
	"github.com/sluicelb/sluice/pkg/kernel"
	"github.com/sluicelb/sluice/userspace/proxy"
	"github.com/sluicelb/sluice/userspace/queue"
)

// steerView connects kernel steering (pkg/kernel's Steerer) to a running
// proxy: the `mode tcp` frontends with `option kernel-steer` become
// services the kernel steers local clients' connect() to, their servers
// share their maxconn slots with the kernel (so that steered connections
// and sluice's own never exceed it together, and requests queued in sluice
// get the places steered connections give back), and server state changes
// reach the kernel at once.
type steerView struct {
	st  *kernel.Steerer
	log *slog.Logger

	mu      sync.Mutex
	fes     map[string][]netip.AddrPort // steered frontend -> its addresses
	backend map[string]string           // steered frontend -> backend
	addrs   map[[2]string]netip.AddrPort
	cfg     *config.Config // last registered
	stop    chan struct{}
}

func openSteer(cfg *config.Config, p *proxy.Proxy, log *slog.Logger) *steerView {
	wanted := false
	for _, f := range cfg.Frontends {
		wanted = wanted || (f.Options.KernelSteer && f.Mode == config.ModeTCP)
	}
	if !wanted {
		return nil
	}
	st, err := kernel.OpenSteerer(kernel.SteerOptions{
		Cgroup:    cfg.Global.KernelSteerCgroup,
		OnRelease: p.KickServer,
		Logger:    log,
	})
	if err != nil {
		log.Warn("kernel steering unavailable: steered frontends serve through sluice's listener", "err", err)
		return nil
	}
	v := &steerView{st: st, log: log, stop: make(chan struct{})}
	v.register(cfg, p)
	p.ServerState = v.serverState
	p.ServerTuned = v.tuned(p)
	prev := p.KernelStats
	p.KernelStats = func(st *proxy.Stats) {
		if prev != nil {
			prev(st)
		}
		v.fill(st)
	}
	go v.recheck(p)
	log.Info("kernel steering: local connect() to steered frontends goes straight to a server", "cgroup", st.Cgroup())
	return v
}

func (v *steerView) Close() {
	if v == nil {
		return
	}
	close(v.stop)
	v.st.Close()
}

// register (re)builds the kernel's services from cfg and shares the slots
// of their servers.
func (v *steerView) register(cfg *config.Config, p *proxy.Proxy) {
	if v == nil {
		return
	}
	backends := map[string]*config.Backend{}
	for _, b := range cfg.Backends {
		backends[b.Name] = b
	}
	// The servers' state, weight and maxconn in force (the runtime API may
	// have changed them since the configuration was read).
	live := map[[2]string]proxy.ServerStats{}
	for _, b := range p.Stats().Backends {
		for _, s := range b.Servers {
			live[[2]string{b.Name, s.Name}] = s
		}
	}
	var services []kernel.SteerService
	fes := map[string][]netip.AddrPort{}
	feBackend := map[string]string{}
	addrs := map[[2]string]netip.AddrPort{}
	for _, f := range cfg.Frontends {
		if !f.Options.KernelSteer || f.Mode != config.ModeTCP {
			continue
		}
		if len(f.UseBackends) > 0 || f.DefaultBackend == "" {
			v.log.Warn("kernel steering: only a frontend with just a default_backend can be steered (the kernel applies no ACL)", "frontend", f.Name)
			continue
		}
		b := backends[f.DefaultBackend]
		algo := b.Balance.Algo
		if algo != "roundrobin" && algo != "static-rr" && algo != "leastconn" {
			v.log.Warn("kernel steering: the kernel balances roundrobin, static-rr or leastconn only; frontend not steered", "frontend", f.Name, "balance", algo)
			continue
		}
		var servers []kernel.SteerServer
		for _, s := range b.Servers {
			if s.Backup {
				continue
			}
			ap, err := resolveAddrPort(s.Addr)
			if err != nil {
				v.log.Warn("kernel steering: server not steered", "backend", b.Name, "server", s.Name, "err", err)
				continue
			}
			addrs[[2]string{b.Name, s.Name}] = ap
			ls := live[[2]string{b.Name, s.Name}]
			servers = append(servers, kernel.SteerServer{Addr: ap, Weight: ls.Weight, MaxConn: ls.ConfigMax,
				Usable: ls.State == "UP"})
		}
		for _, a := range p.Addrs(f.Name) {
			ta, ok := a.(*net.TCPAddr)
			if !ok {
				continue
			}
			ap := netip.AddrPortFrom(ta.AddrPort().Addr().Unmap(), ta.AddrPort().Port())
			if ap.Addr().IsUnspecified() {
				// The kernel matches the address a client connects to:
				// for a wildcard bind, steer the loopback one.
				lo := netip.AddrFrom4([4]byte{127, 0, 0, 1})
				if ap.Addr().Is6() && !ap.Addr().Is4In6() {
					lo = netip.IPv6Loopback()
				}
				ap = netip.AddrPortFrom(lo, ap.Port())
			}
			fes[f.Name] = append(fes[f.Name], ap)
			services = append(services, kernel.SteerService{Frontend: ap, Algo: algo, Servers: servers})
		}
		feBackend[f.Name] = b.Name
	}
	if err := v.st.SetServices(services); err != nil {
		v.log.Warn("kernel steering: registering services", "err", err)
	}
	for key, ap := range addrs {
		if err := p.ShareSlots(key[0], key[1], steerSlots{v.st, ap}); err != nil {
			v.log.Warn("kernel steering: sharing slots", "backend", key[0], "server", key[1], "err", err)
		}
	}
	v.mu.Lock()
	v.fes, v.backend, v.addrs, v.cfg = fes, feBackend, addrs, cfg
	v.mu.Unlock()
}

// tuned rebuilds the kernel's services when the runtime API changed a
// server's weight or maxconn.
func (v *steerView) tuned(p *proxy.Proxy) func(backend, server string) {
	return func(backend, server string) {
		v.mu.Lock()
		cfg := v.cfg
		_, steered := v.addrs[[2]string{backend, server}]
		v.mu.Unlock()
		if steered {
			v.register(cfg, p)
		}
	}
}

// serverState takes a server out of (or back into) kernel selection at
// once when its state changes.
func (v *steerView) serverState(backend, server string, st queue.State) {
	v.mu.Lock()
	defer v.mu.Unlock()
	ap, ok := v.addrs[[2]string{backend, server}]
	if !ok {
		return
	}
	for fe, be := range v.backend {
		if be != backend {
			continue
		}
		for _, fa := range v.fes[fe] {
			if err := v.st.SetServerUsable(fa, ap, st == queue.StateUp); err != nil {
				v.log.Warn("kernel steering: server state", "backend", backend, "server", server, "err", err)
			}
		}
	}
}

// recheck dispatches queued requests to places steered connections gave
// back, in case a release event was lost (the kernel's ring buffer may
// drop them when sluice falls behind).
func (v *steerView) recheck(p *proxy.Proxy) {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			v.mu.Lock()
			addrs := make([]netip.AddrPort, 0, len(v.addrs))
			for _, a := range v.addrs {
				addrs = append(addrs, a)
			}
			v.mu.Unlock()
			for _, a := range addrs {
				p.KickServer(a)
			}
		case <-v.stop:
			return
		}
	}
}

// steerSlots is a server's maxconn shared with the kernel's steering.
type steerSlots struct {
	st   *kernel.Steerer
	addr netip.AddrPort
}

func (s steerSlots) TryTake(limit int) (any, bool) { return s.st.Acquire(s.addr, limit) }
func (s steerSlots) Give(tok any) {
	if pl, ok := tok.(kernel.SteerPlace); ok {
		s.st.Release(pl)
	}
}
func (s steerSlots) Others() int      { return s.st.Established(s.addr) }
func (s steerSlots) SetQueued(q bool) { s.st.SetQueued(s.addr, q) }

// fill adds steering's figures to a Stats snapshot.
func (v *steerView) fill(st *proxy.Stats) {
	ks := v.st.Stats()
	v.mu.Lock()
	defer v.mu.Unlock()
	for i := range st.Frontends {
		f := &st.Frontends[i]
		addrs, ok := v.fes[f.Name]
		if !ok {
			continue
		}
		fs := &proxy.SteerFrontendStats{}
		for _, a := range addrs {
			if s, ok := ks.Service(a); ok {
				fs.Steered += int64(s.Steered)
				fs.FallThrough += int64(s.FallThrough)
			}
		}
		f.Steer = fs
	}
	byAddr := map[netip.AddrPort]kernel.SteerServerStats{}
	for _, s := range ks.Servers {
		byAddr[s.Addr] = s
	}
	for bi := range st.Backends {
		b := &st.Backends[bi]
		for si := range b.Servers {
			s := &b.Servers[si]
			if ap, ok := v.addrs[[2]string{b.Name, s.Name}]; ok {
				k := byAddr[ap]
				s.Steered, s.SteeredTotal = int64(k.Established), int64(k.Steered)
			}
		}
	}
}

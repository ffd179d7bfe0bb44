package main

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicelb/sluice/pkg/config"
	"github.com/sluicelb/sluice/pkg/kernel"
	"github.com/sluicelb/sluice/userspace/proxy"
	"github.com/sluicelb/sluice/userspace/source"
)

// kernelView connects the kernel counters (pkg/kernel) to a running proxy:
// it registers the servers' and listeners' addresses, again after each
// reload, and adds the kernel's figures to the proxy's Stats for the stats
// page, metrics and the runtime API.
type kernelView struct {
	kc  *kernel.Counters // nil: no counters at all
	log *slog.Logger

	occ  atomic.Pointer[kernel.Occupancy] // latest scan, for source selection
	stop chan struct{}

	mu      sync.Mutex
	servers map[[2]string]netip.AddrPort // backend/server -> address registered
	fes     map[string][]netip.AddrPort  // frontend -> listener addresses
	ports   int64                        // ports of ip_local_port_range
}

// openKernel opens the counters for cfg. Failing that, sluice runs without
// kernel figures (logged).
func openKernel(cfg *config.Config, p *proxy.Proxy, log *slog.Logger) *kernelView {
	k := &kernelView{log: log, ports: int64(source.LocalPorts()), stop: make(chan struct{})}
	off := len(cfg.Backends) > 0
	for _, b := range cfg.Backends {
		off = off && b.Options.NoKernelCounters
	}
	kc, err := kernel.OpenCounters(kernel.Options{Cgroup: cfg.Global.KernelCgroup, Disable: off, Logger: log})
	if err != nil {
		log.Warn("kernel counters unavailable: running without kernel figures", "err", err)
		return k
	}
	k.kc = kc
	k.register(cfg, p)
	p.KernelStats = k.fill
	p.Occupancy = func() source.Occupancy {
		if o := k.occ.Load(); o != nil {
			return o
		}
		return nil
	}
	go k.refresh(p)
	return k
}

// refresh keeps a recent occupancy scan for source selection while some
// server has a source pool, so that no connection waits for a scan: the
// pools account for their own connections made since the scan.
func (k *kernelView) refresh(p *proxy.Proxy) {
	t := time.NewTicker(kernel.DefaultMinScanInterval)
	defer t.Stop()
	for {
		if p.HasSourcePools() {
			if occ, err := k.kc.Scan(); err == nil {
				k.occ.Store(occ)
			} else {
				k.log.Debug("kernel scan", "err", err)
			}
		}
		select {
		case <-t.C:
		case <-k.stop:
			return
		}
	}
}

func (k *kernelView) Close() {
	if k != nil && k.kc != nil {
		close(k.stop)
		k.kc.Close()
	}
}

// register (re)registers the addresses of cfg's servers and p's listeners.
func (k *kernelView) register(cfg *config.Config, p *proxy.Proxy) {
	if k == nil || k.kc == nil {
		return
	}
	servers := map[[2]string]netip.AddrPort{}
	var addrs []netip.AddrPort
	for _, b := range cfg.Backends {
		if b.Options.NoKernelCounters {
			continue
		}
		for _, s := range b.Servers {
			ap, err := resolveAddrPort(s.Addr)
			if err != nil {
				k.log.Warn("kernel counters: server address not counted", "backend", b.Name, "server", s.Name, "addr", s.Addr, "err", err)
				continue
			}
			servers[[2]string{b.Name, s.Name}] = ap
			addrs = append(addrs, ap)
		}
	}
	var fes []netip.AddrPort
	byFE := map[string][]netip.AddrPort{}
	for _, f := range cfg.Frontends {
		for _, a := range p.Addrs(f.Name) {
			if ta, ok := a.(*net.TCPAddr); ok {
				ap := ta.AddrPort()
				ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
				fes = append(fes, ap)
				byFE[f.Name] = append(byFE[f.Name], ap)
			}
		}
	}
	if err := k.kc.SetServers(addrs); err != nil {
		k.log.Warn("kernel counters: registering servers", "err", err)
	}
	if err := k.kc.SetFrontends(fes); err != nil {
		k.log.Warn("kernel counters: registering frontends", "err", err)
	}
	k.mu.Lock()
	k.servers, k.fes = servers, byFE
	k.mu.Unlock()
}

// fill adds the kernel's figures to a Stats snapshot.
func (k *kernelView) fill(st *proxy.Stats) {
	st.KernelMode = string(k.kc.Mode())
	st.KernelLost = int64(k.kc.Lost())
	occ, err := k.kc.Scan()
	if err != nil {
		k.log.Debug("kernel scan", "err", err)
	}
	k.mu.Lock()
	servers, fes := k.servers, k.fes
	k.mu.Unlock()
	for i := range st.Frontends {
		f := &st.Frontends[i]
		if addrs, ok := fes[f.Name]; ok {
			var n int64
			for _, a := range addrs {
				n += int64(k.kc.FrontendEstablished(a))
			}
			f.Kernel = &n
		}
	}
	for bi := range st.Backends {
		b := &st.Backends[bi]
		for si := range b.Servers {
			s := &b.Servers[si]
			ap, ok := servers[[2]string{b.Name, s.Name}]
			if !ok {
				continue
			}
			ks := &proxy.KernelServerStats{Established: int64(k.kc.Established(ap)), TimeWait: int64(occ.ServerTimeWait(ap))}
			for _, src := range occ.Sources(ap) {
				c := occ.Get(src, ap)
				ks.Sources = append(ks.Sources, proxy.SourceStats{
					Addr: src.String(), Established: int64(c.Established), TimeWait: int64(c.TimeWait),
					Occupied: int64(c.Occupied), Free: max(0, k.ports-int64(c.Occupied)),
				})
			}
			s.Kernel = ks
		}
	}
}

// resolveAddrPort turns a server's host:port into an address, resolving a
// host name once.
func resolveAddrPort(hostport string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(hostport); err == nil {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return netip.AddrPort{}, err
	}
	pn, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return netip.AddrPort{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil || len(ips) == 0 {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(ips[0].Unmap(), uint16(pn)), nil
}

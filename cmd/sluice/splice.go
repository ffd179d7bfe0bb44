package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/sluicelb/sluice/pkg/config"
	"github.com/sluicelb/sluice/pkg/kernel"
	"github.com/sluicelb/sluice/userspace/proxy"
	"github.com/sluicelb/sluice/userspace/tunnel"
)

// openSplicer loads the kernel splice, unless no tunnel may use it (`no
// option kernel-splice` on every frontend or on every backend), and gives it
// to the proxy's tunnels. Where the kernel cannot (before 6.3, without
// CAP_NET_ADMIN/CAP_BPF, ...), tunnels are copied in userspace: one log line,
// a warning if the configuration asked for it explicitly. It returns a
// function that unloads it.
func openSplicer(cfg *config.Config, p *proxy.Proxy, kv *kernelView, log *slog.Logger) func() {
	fe, be, explicit := false, false, false
	for _, f := range cfg.Frontends {
		fe = fe || !f.Options.NoKernelSplice
		explicit = explicit || f.Options.KernelSplice
	}
	for _, b := range cfg.Backends {
		be = be || !b.Options.NoKernelSplice
		explicit = explicit || b.Options.KernelSplice
	}
	if !fe || !be {
		return func() {}
	}
	cg, why := spliceCgroup(cfg, kv)
	if why != "" {
		log.Info("kernel splice: a slow reader's backlog is copied in userspace", "why", why)
	}
	s, err := kernel.OpenSplicer(log, kernel.SplicerConfig{Cgroup: cg})
	if err != nil {
		level := slog.LevelInfo
		if explicit {
			level = slog.LevelWarn
		}
		log.Log(context.Background(), level, "kernel splice unavailable: tunnels are copied in userspace (splice(2))", "err", err)
		return func() {}
	}
	log.Info("kernel splice: tunnels move their bytes in the kernel (sockhash) unless no option kernel-splice")
	p.Tunnels().Splicer = splicer{s}
	return func() { s.Close() }
}

// spliceCgroup is the cgroup the splicer's in-kernel flow control attaches to
// (see kernel.SplicerConfig.Cgroup): kernel-cgroup, else the counters' or
// sluice's own, but not the root cgroup unless named (every socket of the
// host would then call the program for each segment it sends). Else why not.
func spliceCgroup(cfg *config.Config, kv *kernelView) (cgroup, why string) {
	if cfg.Global.KernelCgroup != "" {
		return cfg.Global.KernelCgroup, ""
	}
	if kv != nil && kv.kc != nil {
		cgroup = kv.kc.Cgroup()
	}
	if cgroup == "" {
		var err error
		if cgroup, err = kernel.OwnCgroup(); err != nil {
			return "", err.Error()
		}
	}
	if kernel.IsRootCgroup(cgroup) {
		return "", "sluice runs in the root cgroup: run it in its own (the systemd unit does) or name one with kernel-cgroup"
	}
	return cgroup, ""
}

// splicer adapts pkg/kernel's Splicer to the tunnel package.
type splicer struct{ s *kernel.Splicer }

func (a splicer) Splice(client, server *net.TCPConn) (tunnel.Spliced, error) {
	p, err := a.s.Splice(client, server)
	if err != nil {
		if errors.Is(err, kernel.ErrSpliceFallback) {
			return nil, fmt.Errorf("%w: %v", tunnel.ErrNotSpliced, err)
		}
		return nil, err
	}
	return splicedPair{p}, nil
}

// FlowTotals reports the kernel's flow-control counters (metrics).
func (a splicer) FlowTotals() (stops, overflowBytes int64) {
	t, err := a.s.Totals()
	if err != nil {
		return 0, 0
	}
	return int64(t.Stops), int64(t.OverflowBytes)
}

type splicedPair struct{ p *kernel.SplicedPair }

func (s splicedPair) Stats() (up, down int64, last time.Time) {
	st := s.p.Stats()
	return int64(st.AtoB), int64(st.BtoA), st.LastActivity
}

func (s splicedPair) Wait(ctx context.Context, idle, clientFin, serverFin time.Duration) (up, down int64, term string) {
	r, _ := s.p.Wait(ctx, idle, clientFin, serverFin)
	switch r.End {
	case kernel.SpliceEndClosed:
		term = tunnel.TermOK
	case kernel.SpliceEndClientReset:
		term = tunnel.TermClient
	case kernel.SpliceEndIdle:
		term = tunnel.TermClientTO
	case kernel.SpliceEndFinTimeout:
		term = tunnel.TermClientTO
		if r.ClientFin { // the client is done: the server side timed out
			term = tunnel.TermServerTO
		}
	case kernel.SpliceEndCanceled:
		term = tunnel.TermKilled
	default:
		term = tunnel.TermServer
	}
	return int64(r.AtoB), int64(r.BtoA), term
}

package proxy

import (
	"errors"
	"fmt"
	"time"

	"github.com/sluicelb/sluice/pkg/config"
	"github.com/sluicelb/sluice/userspace/queue"
	"github.com/sluicelb/sluice/userspace/tunnel"
)

// Reload applies a new configuration without refusing or resetting a
// connection: the listening sockets of addresses still bound are kept (new
// ones opened, removed ones closed), requests in flight finish with the
// configuration they started with, and each keep-alive connection moves to
// the new frontend of the same name at its next request (or closes after
// it, when its frontend is gone). Servers keep their operator and health
// state across the reload when the backend, the name and the address stay.
// An invalid configuration returns its errors and changes nothing.
//
// Global settings that shape the process itself (global maxconn, nbthread,
// stats sockets) need a restart; Reload reports them.
func (p *Proxy) Reload(cfg *config.Config) (warnings []string, err error) {
	warnings, err = p.reload(cfg)
	if err == nil && p.Reloaded != nil {
		p.Reloaded(cfg)
	}
	return warnings, err
}

func (p *Proxy) reload(cfg *config.Config) (warnings []string, err error) {
	p.lmu.Lock()
	defer p.lmu.Unlock()
	if p.closing.Load() {
		return nil, errors.New("reload: stopping")
	}
	g, err := p.build(cfg)
	if err != nil {
		return nil, err
	}
	if err := p.checkSources(g); err != nil {
		return nil, err
	}
	added, err := p.openListeners(g)
	if err != nil {
		return nil, err
	}
	old := p.g()
	carryState(old, g)
	if cfg.Global.MaxConn != p.maxconn {
		warnings = append(warnings, fmt.Sprintf("global maxconn %d -> %d needs a restart; %d stays", p.maxconn, cfg.Global.MaxConn, p.maxconn))
	}
	p.gen.Store(g)

	want := map[string]*frontend{}
	for _, fe := range g.frontends {
		for _, b := range fe.cfg.Binds {
			want[bindKey(b)] = fe
		}
	}
	for k, l := range p.listeners {
		if fe, ok := want[k]; ok {
			l.fe.Store(fe)
		} else {
			l.ln.Close() // its acceptLoop ends
			delete(p.listeners, k)
		}
	}
	if p.listeners == nil {
		p.listeners = map[string]*listener{}
	}
	for k, l := range added {
		p.listeners[k] = l
		if p.serving.Load() {
			p.wg.Add(1)
			go p.acceptLoop(l)
		}
	}
	if p.serving.Load() {
		p.startChecks(g)
	}
	close(old.stop)
	for _, be := range old.backends {
		for _, s := range be.servers {
			s.retired.Store(true)
			s.pool.closeAll()
		}
	}
	p.retireTunnels(g, cfg.Global.HardStopAfter)
	p.log.Info("configuration reloaded", "frontends", len(g.frontends), "backends", len(g.backends),
		"listeners_opened", len(added))
	return warnings, nil
}

// carryState copies the operator state (maint, drain, weight set at run
// time is not kept) and health of servers that stay the same across a reload.
func carryState(old, g *generation) {
	for _, nb := range g.backends {
		for _, ob := range old.backends {
			if ob.name != nb.name {
				continue
			}
			for _, ns := range nb.servers {
				for _, os := range ob.servers {
					if os.q.Name == ns.q.Name && os.addr == ns.addr {
						// The slots the old server holds (requests in
						// flight, tunnels) count against the new one.
						ob.q.HandOver(os.q, nb.q, ns.q)
						if a := queue.State(os.admin.Load()); a != queue.StateUp {
							ns.admin.Store(int32(a))
						}
						ns.down.Store(os.down.Load())
						ns.apply()
					}
				}
			}
		}
	}
}

// follow moves a session whose frontend a reload replaced to the frontend of
// the same name now in force. It returns false when there is none, or no
// free connection slot in it: the session then serves its current request
// with the old configuration and closes.
func (s *session) follow() bool {
	cur := s.p.g()
	if s.fe.gen == cur {
		return true
	}
	var nfe *frontend
	for _, fe := range cur.frontends {
		if fe.name == s.fe.name {
			nfe = fe
		}
	}
	if nfe == nil {
		return false
	}
	if nfe.sem != nil {
		select {
		case nfe.sem <- struct{}{}:
		default:
			return false
		}
	}
	if s.fe.sem != nil {
		<-s.fe.sem
	}
	s.fe.cur.Add(-1)
	nfe.cur.Add(1)
	nfe.total.Add(1)
	s.fe = nfe
	return true
}

// retireTunnels deals with the tunnels whose server the new generation g no
// longer has: they stay up (their bytes need no configuration) until
// hard-stop-after, as an old HAProxy process would keep them, then close;
// without hard-stop-after they live on until they end.
func (p *Proxy) retireTunnels(g *generation, hardStop time.Duration) {
	have := map[[2]string]bool{}
	for _, be := range g.backends {
		for _, s := range be.servers {
			have[[2]string{be.name, s.q.Name}] = true
		}
	}
	orphans := p.tunnels.Select(func(i tunnel.Info) bool { return !have[[2]string{i.Backend, i.Server}] })
	if len(orphans) == 0 {
		return
	}
	p.log.Info("tunnels to servers removed by the reload stay up", "tunnels", len(orphans), "hard_stop_after", hardStop)
	if hardStop <= 0 {
		return
	}
	time.AfterFunc(hardStop, func() {
		n := 0
		for _, t := range orphans {
			if t.Kill() {
				n++
			}
		}
		if n > 0 {
			p.log.Info("hard-stop-after: closed tunnels of removed servers", "tunnels", n)
		}
	})
}

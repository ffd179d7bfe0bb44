package doctor

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/sluicelb/sluice/pkg/config"
	"github.com/sluicelb/sluice/userspace/source"
)

// limit is how many connections may be open to a server at once.
type limit struct {
	n    int    // -1 = unbounded
	desc string // where the bound comes from
}

// frontendLimits sums, per backend, the maxconn of the frontends that route
// to it (global maxconn bounds the sum); -1 when one of them is unbounded.
func frontendLimits(cfg *config.Config) map[string]int {
	out := map[string]int{}
	for _, fe := range cfg.Frontends {
		mc := fe.MaxConn
		if mc == 0 {
			mc = cfg.Global.MaxConn
		}
		seen := map[string]bool{}
		targets := []string{fe.DefaultBackend}
		for _, ub := range fe.UseBackends {
			targets = append(targets, ub.Backend)
		}
		for _, be := range targets {
			if be == "" || seen[be] {
				continue
			}
			seen[be] = true
			switch {
			case out[be] < 0:
			case mc == 0:
				out[be] = -1
			default:
				out[be] += mc
			}
		}
	}
	if g := cfg.Global.MaxConn; g > 0 {
		for be, n := range out {
			if n < 0 || n > g {
				out[be] = g
			}
		}
	}
	return out
}

// serverPlan is what one server line's sources can hold.
type serverPlan struct {
	name     string // backend/server
	addr     string
	spec     source.Spec
	specErr  error
	hasSpec  bool
	sources  int
	ports    int
	explicit bool
	lim      limit
	key      string // servers sharing tuples: same address, same sources
}

func (h *host) servers(cfg *config.Config, checkSource func(source.Spec) ([]string, error)) []Check {
	_, _, localPorts, perr := h.localPorts()
	if perr != nil {
		localPorts = 28232 // the kernel's default range
	}
	reuse, _ := h.sysctlInt("net.ipv4.tcp_tw_reuse")
	feLim := frontendLimits(cfg)
	var plans []*serverPlan
	groups := map[string][]*serverPlan{}
	for _, be := range cfg.Backends {
		for _, srv := range be.Servers {
			p := &serverPlan{name: be.Name + "/" + srv.Name, addr: srv.Addr}
			src := srv.Source
			if src.Addr == "" {
				src = be.Source
			}
			p.ports, p.sources = localPorts, 1
			if src.Addr != "" {
				p.hasSpec = true
				p.spec, p.specErr = source.ParseSpec(src)
				if p.specErr == nil {
					p.sources = familyCount(p.spec.Addrs, srv.Addr)
					if n := p.spec.Ports(); n > 0 {
						p.ports, p.explicit = n, true
					}
				}
			}
			switch fl, routed := feLim[be.Name]; {
			case srv.MaxConn > 0:
				p.lim = limit{srv.MaxConn, fmt.Sprintf("server maxconn %d", srv.MaxConn)}
			case !routed:
				p.lim = limit{0, "no frontend routes to backend '" + be.Name + "'"}
			case fl < 0:
				p.lim = limit{-1, "neither the server nor the frontends routing to '" + be.Name + "' set a maxconn"}
			default:
				p.lim = limit{fl, fmt.Sprintf("no server maxconn: the frontends routing here allow %d, all of which may land on this server when the others are down or full", fl)}
			}
			p.key = p.addr + "|" + src.Addr + " " + strings.Join(src.Args, " ")
			plans = append(plans, p)
			groups[p.key] = append(groups[p.key], p)
		}
	}
	type found struct {
		warns []string
		err   error
	}
	checked := map[string]found{}
	var out []Check
	for _, p := range plans {
		c := p.check(groups[p.key], reuse == 1)
		if checkSource != nil && p.hasSpec && p.specErr == nil {
			k := p.spec.String()
			f, ok := checked[k]
			if !ok {
				f.warns, f.err = checkSource(p.spec)
				checked[k] = f
			}
			switch {
			case f.err != nil:
				c.Status = Warn
				c.Value += "; cannot work on this host"
				c.Recommendation = "fix the source: " + f.err.Error()
			case len(f.warns) > 0:
				c.Status = Warn
				c.Value += fmt.Sprintf("; %d source address(es) cannot be bound here", len(f.warns))
				c.Recommendation = strings.Join(f.warns, "; ")
			}
		}
		out = append(out, c)
	}
	return out
}

// familyCount counts the sources usable toward addr (all, when addr is a
// name).
func familyCount(addrs []netip.Addr, addr string) int {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return len(addrs)
	}
	n := 0
	for _, a := range addrs {
		if a.IsUnspecified() || a.Is4() == ap.Addr().Unmap().Is4() {
			n++
		}
	}
	return n
}

func (p *serverPlan) check(group []*serverPlan, reuse bool) Check {
	c := Check{Name: "server " + p.name}
	from := "the host's own address toward it (no 'source')"
	if p.hasSpec && p.specErr == nil {
		from = "source " + p.spec.String()
	}
	switch {
	case p.specErr != nil:
		c.Value = p.addr + ": invalid 'source'"
		c.Status = Warn
		c.Recommendation = "fix the 'source' setting"
		c.Why = p.specErr.Error()
		return c
	case p.spec.Transparent():
		c.Value = fmt.Sprintf("%s from %s", p.addr, from)
		c.Status = Info
		c.Recommendation = "nothing to count: the sources are the clients' addresses"
		c.Why = "With 'usesrc' each connection leaves from the client's (or the usesrc) address, so the tuples " +
			"toward the server depend on the clients, not on a pool. It needs CAP_NET_ADMIN and TPROXY routing."
		return c
	case p.sources == 0:
		c.Value = fmt.Sprintf("%s from %s", p.addr, from)
		c.Status = Warn
		c.Recommendation = "add a source address of the server's family"
		c.Why = "The pool has no address of the server's family (IPv4/IPv6): no connection can leave."
		return c
	}
	tuples := p.sources * p.ports
	portsFrom := "net.ipv4.ip_local_port_range"
	if p.explicit {
		portsFrom = "the 'source' port range"
	}
	rate := rateString(tuples)
	c.Value = fmt.Sprintf("%s from %s: %d source(s) x %d ports = %d connections at once, %s new connections/s sustained",
		p.addr, from, p.sources, p.ports, tuples, rate)
	c.Why = fmt.Sprintf("Each connection to %s holds one (source address, source port) tuple while open and for 60 s "+
		"after sluice closes it (TIME_WAIT, fixed in Linux: tcp_fin_timeout does not change it). With %d source "+
		"address(es) and %d ports each (from %s), at most %d can be open at once and the sustainable rate of new "+
		"connections is %d x %d / 60 s = %s/s; beyond that connect() fails with EADDRNOTAVAIL and sluice answers 503.",
		p.addr, p.sources, p.ports, portsFrom, tuples, p.sources, p.ports, rate)
	if reuse {
		c.Why += " tcp_tw_reuse = 1 lets the kernel reuse TIME_WAIT tuples older than a second, so the real rate is higher."
	}

	// Connections allowed at once: this line's, or the group's that share its tuples.
	lim := p.lim
	var others []string
	sum, unbounded := 0, false
	for _, q := range group {
		if q != p {
			others = append(others, q.name)
		}
		if q.lim.n < 0 {
			unbounded = true
		}
		sum += max(q.lim.n, 0)
	}
	if len(others) > 0 {
		sort.Strings(others)
		lim.desc = fmt.Sprintf("%s; the same tuples serve %s", lim.desc, strings.Join(others, ", "))
		lim.n = sum
		if unbounded {
			lim.n = -1
		}
	}
	switch {
	case lim.n < 0:
		c.Status = Info
		c.Recommendation = fmt.Sprintf("set a maxconn (server or frontend) of at most %d, so the balancer queues instead of running out of tuples", tuples)
		c.Why += " Connections allowed at once: unbounded (" + lim.desc + ")."
	case lim.n > tuples:
		c.Status = Warn
		need := (lim.n + p.ports - 1) / p.ports
		c.Recommendation = fmt.Sprintf("at least %d source addresses (a pool, e.g. 'source A-B' or a CIDR), a wider port range, or maxconn at most %d",
			need, tuples)
		c.Why += fmt.Sprintf(" Connections allowed at once: %d (%s), more than the sources can hold.", lim.n, lim.desc)
	default:
		c.Status = OK
		c.Recommendation = "nothing to do"
		c.Why += fmt.Sprintf(" Connections allowed at once: %d (%s), within what the sources hold.", lim.n, lim.desc)
	}
	return c
}

// rateString formats tuples / TIME_WAIT per second.
func rateString(tuples int) string {
	if tuples < 10*TimeWait {
		return fmt.Sprintf("%.2f", float64(tuples)/TimeWait)
	}
	return fmt.Sprint(tuples / TimeWait)
}

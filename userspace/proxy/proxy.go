// Package proxy is the glue of sluice's data path: listeners, the HTTP/1
// exchange between a client connection and pooled upstream connections, error
// responses and the access log. It builds on h1 (framing), route (ACLs) and
// queue (server slots and balancing); it does not parse configuration text
// and does not touch eBPF.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicelb/sluice/pkg/config"
	"github.com/sluicelb/sluice/userspace/queue"
	"github.com/sluicelb/sluice/userspace/route"
	"github.com/sluicelb/sluice/userspace/source"
	"github.com/sluicelb/sluice/userspace/tunnel"
)

// Defaults applied when a timeout is not configured (HAProxy warns and waits
// forever; sluice prefers bounded waits).
const (
	defaultConnectTimeout = 5 * time.Second
	defaultClientTimeout  = 50 * time.Second
	defaultServerTimeout  = 50 * time.Second
	idlePurgeDelay        = 5 * time.Second // like HAProxy's pool-purge-delay
)

// Proxy is a running configuration: frontends with their listeners and the
// backends they route to.
type Proxy struct {
	cfg *config.Config
	gen atomic.Pointer[generation] // the configuration in force
	log *slog.Logger

	lmu       sync.Mutex           // listeners and reloads
	listeners map[string]*listener // by network|address
	access    *accessLog

	actconn atomic.Int64 // client connections being served, all frontends
	maxconn int
	sem     chan struct{} // global maxconn slots; nil = no global limit
	// maxconnReached counts the times a listener had to wait for a slot.
	maxconnReached atomic.Int64

	tunnels *tunnel.Registry // WebSocket and mode tcp tunnels

	wg      sync.WaitGroup // serving goroutines
	conns   sync.Map       // *session -> struct{}, for shutdown
	closing atomic.Bool
	serving atomic.Bool // Serve has started the accept loops
	stop    chan struct{}

	// Loops is the number of event loops serving HTTP connections (see
	// loop_linux.go); 0 serves each connection on its own goroutine.
	// Set before Serve; New sets it to GOMAXPROCS where loops exist.
	Loops    int
	loops    []*loop
	nextLoop atomic.Uint32

	// Metrics renders the Prometheus exposition for
	// `http-request use-service prometheus-exporter` (set by the caller,
	// who owns the registry); nil answers 503.
	Metrics func() (body []byte, contentType string, err error)
	// StatsPage renders the stats page (HTML, or HAProxy CSV) for frontends
	// with `stats enable`/`stats uri`; set by the caller; nil answers 503.
	StatsPage func(csv bool, refresh time.Duration) (body []byte, contentType string, err error)
	// KernelStats, if set, adds the kernel's figures (KernelMode and each
	// server's Kernel) to a Stats snapshot; set by the caller that owns the
	// kernel counters.
	KernelStats func(*Stats)
	// Reloaded, if set, is called after a reload took effect (outside the
	// proxy's locks), e.g. to register the new servers with the kernel.
	Reloaded func(*config.Config)
	// Occupancy, if set, returns the kernel's latest view of the sockets
	// per (source, server) (pkg/kernel's Scan, rate-limited), for choosing
	// source addresses; nil or a nil result: the pools count only their own
	// connections.
	Occupancy func() source.Occupancy
	// ServerState, if set, is told every server state change (operator or
	// health checks), e.g. to take a server out of kernel steering at once.
	ServerState func(backend, server string, st queue.State)
	// ServerTuned, if set, is told when the runtime API changed a server's
	// weight or maxconn.
	ServerTuned func(backend, server string)
}

// httpRule is a compiled http-request rule: deny, or the Prometheus
// exporter.
type httpRule struct {
	deny   bool // else use-service prometheus-exporter
	status int
	cond   *route.Cond // nil: always
}

// generation is one configuration's frontends and backends. A reload
// builds a new one and swaps it in; connections move to it at their next
// request.
type generation struct {
	frontends []*frontend
	backends  []*backend
	pools     []*source.Pool
	poolPos   []config.Pos  // where each pool's `source` line is
	stop      chan struct{} // closed when replaced: ends its health checks
}

// listener is a listening socket and the frontend it serves now; it is kept
// across reloads while a frontend still binds its address.
type listener struct {
	key string
	ln  net.Listener
	fe  atomic.Pointer[frontend]
}

type frontend struct {
	rules    []httpRule
	name     string
	cfg      *config.Frontend
	router   *route.Router
	backends []*backend // of its generation: the router's indexes point here
	statsURI []byte     // stats page prefix; nil when disabled
	gen      *generation
	sem      chan struct{} // maxconn slots

	timeoutClient, timeoutHTTPRequest, timeoutKeepAlive time.Duration
	tcp                                                 bool // mode tcp: connections are tunnels
	httplog, dontlognull, forwardFor                    bool
	xffHeader                                           string
	xffExcept                                           netip.Prefix
	serverClose                                         bool

	cur   atomic.Int64
	max   atomic.Int64
	total atomic.Int64
}

type hashKind int

const (
	hashNone hashKind = iota
	hashSource
	hashURI
	hashURIWhole
	hashURLParam
	hashHdr
)

type backend struct {
	name    string
	cfg     *config.Backend
	q       *queue.Backend
	servers []*server

	hash    hashKind
	hashArg string

	timeoutConnect, timeoutServer time.Duration
	retries                       int
	redispatch                    bool
	forwardFor                    bool
	xffHeader                     string
	serverClose                   bool

	cur   atomic.Int64
	total atomic.Int64
}

type server struct {
	q    *queue.Server
	be   *backend
	p    *Proxy
	addr string
	ap   netip.AddrPort // addr as an address, when it is one (source pools need it)
	pool idlePool
	src  *source.Pool // `source`: the addresses to connect from; nil = the kernel's choice

	admin   atomic.Int32 // queue.State set by the operator: up (ready), drain or maint
	down    atomic.Bool  // health checks failed
	retired atomic.Bool  // a reload replaced its configuration: pool nothing more
	check   *checker     // nil without `check`
}

// New builds a proxy from a configuration without opening any socket.
// Errors name FILE:LINE.
func New(cfg *config.Config, log *slog.Logger) (*Proxy, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Proxy{cfg: cfg, log: log, maxconn: cfg.Global.MaxConn, stop: make(chan struct{}), Loops: defaultLoops(),
		tunnels: tunnel.NewRegistry()}
	if p.maxconn > 0 {
		p.sem = make(chan struct{}, p.maxconn)
	}
	if n := cfg.Global.NbThread; n > 0 && p.Loops > 0 {
		p.Loops = n // HAProxy's threads are sluice's event loops
	}
	g, err := p.build(cfg)
	if err != nil {
		return nil, err
	}
	p.gen.Store(g)
	return p, nil
}

// g returns the generation in force.
func (p *Proxy) g() *generation { return p.gen.Load() }

// build makes a generation from a configuration; errors name FILE:LINE.
func (p *Proxy) build(cfg *config.Config) (*generation, error) {
	g := &generation{stop: make(chan struct{})}
	var errs config.Errors
	index := map[string]int{}
	pools := map[string]*source.Pool{} // one pool per distinct source setting
	poolPos := map[*source.Pool]config.Pos{}
	for _, bc := range cfg.Backends {
		be, err := newBackend(bc)
		if err != nil {
			errs = append(errs, config.Diag{Pos: bc.Pos, Msg: err.Error()})
			continue
		}
		// Errors in the sources are reported, but the backend stays known
		// so that its frontends do not report it missing as well.
		errs = append(errs, be.setSources(p, pools, poolPos)...)
		index[bc.Name] = len(g.backends)
		g.backends = append(g.backends, be)
	}
	for _, fc := range cfg.Frontends {
		fe, err := p.newFrontend(fc, index)
		if err != nil {
			var ce config.Errors
			if errors.As(err, &ce) {
				errs = append(errs, ce...)
			} else {
				errs = append(errs, config.Diag{Pos: fc.Pos, Msg: err.Error()})
			}
			continue
		}
		fe.backends, fe.gen = g.backends, g
		g.frontends = append(g.frontends, fe)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	for _, pl := range pools {
		g.pools = append(g.pools, pl)
		g.poolPos = append(g.poolPos, poolPos[pl])
	}
	g.setFullConn()
	return g, nil
}

// setSources gives each server of be its source pool: the server's own
// `source`, else the backend's; servers with the same setting share a pool.
func (be *backend) setSources(p *Proxy, pools map[string]*source.Pool, poolPos map[*source.Pool]config.Pos) config.Errors {
	var errs config.Errors
	for i, srv := range be.servers {
		srv.p = p
		if ap, err := netip.ParseAddrPort(srv.addr); err == nil {
			srv.ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		}
		sc := be.cfg.Servers[i].Source
		if sc.Addr == "" {
			sc = be.cfg.Source
		}
		if sc.Addr == "" {
			continue
		}
		key := sc.Addr + " " + strings.Join(sc.Args, " ")
		pl := pools[key]
		if pl == nil {
			var err error
			if pl, err = source.ParsePool(sc); err != nil {
				errs = append(errs, config.Diag{Pos: sc.Pos, Msg: err.Error()})
				continue
			}
			pools[key] = pl
			poolPos[pl] = sc.Pos
		}
		if !srv.ap.IsValid() {
			errs = append(errs, config.Diag{Pos: be.cfg.Servers[i].Pos, Msg: fmt.Sprintf(
				"server '%s': 'source' needs the server's address as IP:port, not '%s'", srv.q.Name, srv.addr)})
			continue
		}
		pl.Track(srv.ap)
		srv.src = pl
	}
	return errs
}

// checkSources checks on this host that g's source pools can work
// (addresses bindable, interfaces present, capabilities for usesrc). It
// logs the warnings and returns the first error.
func (p *Proxy) checkSources(g *generation) error {
	for i, pl := range g.pools {
		warns, err := pl.Check()
		for _, w := range warns {
			p.log.Warn("source: "+w, "at", g.poolPos[i].String())
		}
		if err != nil {
			return fmt.Errorf("%s: %w", g.poolPos[i], err)
		}
	}
	return nil
}

// setFullConn gives each backend its fullconn: the configured one or, as
// HAProxy does, 10% of the sum of the maxconn of the frontends that may
// route to it.
func (g *generation) setFullConn() {
	for _, be := range g.backends {
		n := be.cfg.FullConn
		if n == 0 {
			sum := 0
			for _, fe := range g.frontends {
				if fe.routesTo(be.name) {
					sum += cap(fe.sem)
				}
			}
			n = sum / 10
		}
		be.q.SetFullConn(n)
	}
}

// routesTo reports whether a use_backend or default_backend rule of fe names
// the backend.
func (fe *frontend) routesTo(name string) bool {
	if fe.cfg.DefaultBackend == name {
		return true
	}
	for _, u := range fe.cfg.UseBackends {
		if u.Backend == name {
			return true
		}
	}
	return false
}

// SetServerState sets a server's state (ready, drain, maint, down), for the
// runtime API and health checks. Requests queued on a server leaving service
// go to the others when the backend has option redispatch.
func (p *Proxy) SetServerState(backend, server string, st queue.State) error {
	s, err := p.findServer(backend, server)
	if err != nil {
		return err
	}
	if st == queue.StateDown {
		s.down.Store(true) // as a failed health check would
	} else {
		s.admin.Store(int32(st))
		if st == queue.StateUp && s.check == nil {
			s.down.Store(false) // no health check to bring it back
		}
	}
	s.apply()
	return nil
}

func newBackend(bc *config.Backend) (*backend, error) {
	bal, err := queue.NewBalancer(bc.Balance.Algo, bc.Balance.Args)
	if err != nil {
		return nil, err
	}
	be := &backend{
		name:           bc.Name,
		cfg:            bc,
		timeoutConnect: orDefault(bc.Timeouts.Connect, defaultConnectTimeout),
		timeoutServer:  orDefault(bc.Timeouts.Server, defaultServerTimeout),
		retries:        bc.Retries,
		redispatch:     bc.Options.Redispatch,
		forwardFor:     bc.Options.ForwardFor,
		xffHeader:      orString(bc.Options.ForwardForHeader, "X-Forwarded-For"),
		serverClose:    bc.Options.HTTPServerClose,
	}
	switch bc.Balance.Algo {
	case "source":
		be.hash = hashSource
	case "uri":
		be.hash = hashURI
		for _, a := range bc.Balance.Args {
			if a == "whole" {
				be.hash = hashURIWhole
			}
		}
	case "url_param":
		be.hash = hashURLParam
		if len(bc.Balance.Args) > 0 {
			be.hashArg = bc.Balance.Args[0]
		}
	case "hdr":
		be.hash = hashHdr
		if len(bc.Balance.Args) > 0 {
			be.hashArg = strings.ToLower(bc.Balance.Args[0])
		}
	}
	// timeout queue defaults to timeout connect, as in HAProxy.
	tq := orDefault(bc.Timeouts.Queue, be.timeoutConnect)
	var qs []*queue.Server
	for _, sc := range bc.Servers {
		qsrv := &queue.Server{
			Name: sc.Name, Addr: sc.Addr, Weight: sc.Weight,
			MaxConn: sc.MaxConn, MinConn: sc.MinConn, MaxQueue: sc.MaxQueue, Backup: sc.Backup,
		}
		srv := &server{q: qsrv, be: be, addr: sc.Addr}
		if sc.Disabled {
			qsrv.SetState(queue.StateMaint)
			srv.admin.Store(int32(queue.StateMaint))
		}
		qs = append(qs, qsrv)
		be.servers = append(be.servers, srv)
	}
	be.q = queue.NewBackend(bc.Name, qs, bal, tq)
	for i, sc := range bc.Servers {
		if sc.Check {
			c, err := newChecker(be, be.servers[i], sc)
			if err != nil {
				return nil, err
			}
			be.servers[i].check = c
		}
	}
	be.q.Redispatch = bc.Options.Redispatch
	return be, nil
}

func (p *Proxy) newFrontend(fc *config.Frontend, index map[string]int) (*frontend, error) {
	r, err := route.Compile(fc, func(name string) (int, bool) { i, ok := index[name]; return i, ok })
	if err != nil {
		return nil, err
	}
	var rules []httpRule
	var rerrs config.Errors
	for _, hr := range fc.HTTPRules {
		rule := httpRule{deny: hr.Action == "deny", status: hr.Status}
		if hr.Cond != nil {
			c, err := r.ACLs().CondFor("http-request "+hr.Action, hr.Cond)
			if err != nil {
				var ce config.Errors
				if errors.As(err, &ce) {
					rerrs = append(rerrs, ce...)
				}
				continue
			}
			rule.cond = c
		}
		rules = append(rules, rule)
	}
	if len(rerrs) > 0 {
		return nil, rerrs
	}
	fe := &frontend{
		rules:         rules,
		name:          fc.Name,
		cfg:           fc,
		router:        r,
		timeoutClient: orDefault(fc.Timeouts.Client, defaultClientTimeout),
		tcp:           fc.Mode == config.ModeTCP,
		httplog:       fc.Options.HTTPLog || fc.Options.TCPLog,
		dontlognull:   fc.Options.DontLogNull,
		forwardFor:    fc.Options.ForwardFor,
		xffHeader:     orString(fc.Options.ForwardForHeader, "X-Forwarded-For"),
		serverClose:   fc.Options.HTTPServerClose,
	}
	if len(fc.Logs) == 0 {
		fe.httplog = false // no log line: nothing to log to
	}
	if fc.Options.ForwardForExcept != "" {
		pfx, err := parsePrefix(fc.Options.ForwardForExcept)
		if err != nil {
			return nil, fmt.Errorf("option forwardfor except: %w", err)
		}
		fe.xffExcept = pfx
	}
	if fc.Stats.Enable {
		fe.statsURI = []byte(fc.Stats.URI)
	}
	fe.timeoutHTTPRequest = orDefault(fc.Timeouts.HTTPRequest, fe.timeoutClient)
	fe.timeoutKeepAlive = orDefault(fc.Timeouts.HTTPKeepAlive, fe.timeoutHTTPRequest)
	mc := fc.MaxConn
	if mc == 0 {
		mc = p.maxconn
	}
	if mc > 0 {
		fe.sem = make(chan struct{}, mc)
	}
	return fe, nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		return netip.ParsePrefix(s)
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func orString(s, def string) string {
	if s != "" {
		return s
	}
	return def
}

// Listen opens every frontend's listeners. On error, those already opened
// are closed.
func (p *Proxy) Listen() error {
	p.lmu.Lock()
	defer p.lmu.Unlock()
	if err := p.checkSources(p.g()); err != nil {
		return err
	}
	added, err := p.openListeners(p.g())
	if err != nil {
		return err
	}
	p.listeners = added
	return nil
}

func bindKey(b config.Bind) string { return b.Network + "|" + b.Addr }

// openListeners opens the binds of g that are not open yet (all of them on
// the first call) and points every listener of g at its frontend when g is
// swapped in. It returns the new ones; on error it closes them.
func (p *Proxy) openListeners(g *generation) (map[string]*listener, error) {
	added := map[string]*listener{}
	for _, fe := range g.frontends {
		for _, b := range fe.cfg.Binds {
			k := bindKey(b)
			if _, ok := p.listeners[k]; ok || added[k] != nil {
				continue
			}
			ln, err := listen(b.Network, b.Addr)
			if err != nil {
				for _, l := range added {
					l.ln.Close()
				}
				return nil, fmt.Errorf("%s: frontend '%s': bind %s: %w", b.Pos, fe.name, b.Addr, err)
			}
			l := &listener{key: k, ln: ln}
			l.fe.Store(fe)
			added[k] = l
		}
	}
	return added, nil
}

func (p *Proxy) closeListeners() {
	p.lmu.Lock()
	defer p.lmu.Unlock()
	for _, l := range p.listeners {
		l.ln.Close()
	}
}

// Addrs returns the listening addresses of a frontend (for tests and the demo).
func (p *Proxy) Addrs(frontend string) []net.Addr {
	p.lmu.Lock()
	defer p.lmu.Unlock()
	var out []net.Addr
	for _, l := range p.listeners {
		if l.fe.Load().name == frontend {
			out = append(out, l.ln.Addr())
		}
	}
	return out
}

// Serve accepts connections until ctx is done, then stops gracefully: the
// listeners close, in-flight requests finish, idle connections close. It
// returns once every connection has ended or grace has passed.
func (p *Proxy) Serve(ctx context.Context, access io.Writer, grace time.Duration) error {
	if access != nil {
		p.access = newAccessLog(access)
		defer p.access.Close()
	}
	if err := p.startLoops(p.Loops); err != nil {
		p.log.Warn("event loops unavailable, serving each connection on a goroutine", "err", err)
	}
	defer p.stopLoops()
	p.lmu.Lock()
	for _, l := range p.listeners {
		p.wg.Add(1)
		go p.acceptLoop(l)
	}
	p.startChecks(p.g())
	p.serving.Store(true)
	p.lmu.Unlock()
	go p.purgeLoop()
	<-ctx.Done()
	p.lmu.Lock()
	p.closing.Store(true)
	p.lmu.Unlock()
	close(p.stop)
	p.closeListeners()
	// Wake idle keep-alive connections so they close now.
	p.wakeLoops()
	p.conns.Range(func(k, _ any) bool { k.(*session).wakeIdle(); return true })
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		p.tunnels.Kill(nil)
		p.abortLoops()
		p.conns.Range(func(k, _ any) bool {
			if s := k.(*session); !s.owned.Load() {
				s.c.Close()
				if uc := s.upstream.Load(); uc != nil {
					uc.Close()
				}
			}
			return true
		})
		<-done
	}
	for _, be := range p.g().backends {
		for _, s := range be.servers {
			s.pool.closeAll()
		}
	}
	return nil
}

func (p *Proxy) startChecks(g *generation) {
	for _, be := range g.backends {
		for _, s := range be.servers {
			if s.check != nil {
				go s.check.run(p, g.stop)
			}
		}
	}
}

func (p *Proxy) acceptLoop(l *listener) {
	defer p.wg.Done()
	ln := l.ln
	var backoff time.Duration
	for {
		fe := l.fe.Load()
		// maxconn: take the slots before accepting, so that excess
		// connections wait in the kernel's backlog, as in HAProxy.
		if !p.takeSlot(p.sem, "global", "", p.maxconn) {
			return
		}
		if !p.takeSlot(fe.sem, "frontend", fe.name, cap(fe.sem)) {
			if p.sem != nil {
				<-p.sem
			}
			return
		}
		c, err := ln.Accept()
		if err != nil {
			p.releaseSlots(fe)
			if p.closing.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and friends: back off rather than spin.
			if backoff == 0 {
				backoff = 5 * time.Millisecond
			} else if backoff < time.Second {
				backoff *= 2
			}
			p.log.Warn("accept failed", "frontend", fe.name, "err", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-p.stop:
				return
			}
			continue
		}
		backoff = 0
		p.wg.Add(1)
		if fe.tcp {
			go p.serveTCP(fe, c.(*net.TCPConn))
			continue
		}
		if lp := p.pickLoop(); lp != nil {
			if s := p.newSession(fe, c.(*net.TCPConn)); s != nil {
				lp.adopt(s)
			}
			continue
		}
		go p.serveConn(fe, c.(*net.TCPConn))
	}
}

// takeSlot takes a connection slot of a maxconn limit (sem nil: no limit),
// waiting while the limit is reached. It logs when it starts waiting, so an
// operator sees the limit at work. It returns false when the proxy stops.
func (p *Proxy) takeSlot(sem chan struct{}, scope, name string, limit int) bool {
	if sem == nil {
		return true
	}
	select {
	case sem <- struct{}{}:
		return true
	default:
	}
	p.maxconnReached.Add(1)
	p.log.Warn("maxconn reached: new connections wait in the listen backlog", "scope", scope, "frontend", name, "maxconn", limit)
	select {
	case sem <- struct{}{}:
		return true
	case <-p.stop:
		return false
	}
}

// releaseSlots gives back the global and frontend connection slots.
func (p *Proxy) releaseSlots(fe *frontend) {
	if fe.sem != nil {
		<-fe.sem
	}
	if p.sem != nil {
		<-p.sem
	}
}

func (p *Proxy) purgeLoop() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case now := <-t.C:
			for _, be := range p.g().backends {
				for _, s := range be.servers {
					s.pool.purge(now.Add(-idlePurgeDelay))
				}
			}
		}
	}
}

// CheckRules compiles the ACLs and conditions of every frontend without
// resolving backends, so that `sluice -c` can report their errors together
// with those of a configuration that did not parse completely.
func CheckRules(cfg *config.Config) config.Errors {
	var errs config.Errors
	for _, fc := range cfg.Frontends {
		r, err := route.Compile(fc, func(string) (int, bool) { return 0, true })
		if err != nil {
			var ce config.Errors
			if errors.As(err, &ce) {
				errs = append(errs, ce...)
			}
			continue
		}
		for _, hr := range fc.HTTPRules {
			if hr.Cond == nil {
				continue
			}
			if _, err := r.ACLs().CondFor("http-request "+hr.Action, hr.Cond); err != nil {
				var ce config.Errors
				if errors.As(err, &ce) {
					errs = append(errs, ce...)
				}
			}
		}
	}
	return errs
}

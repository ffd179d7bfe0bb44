package proxy

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/sluicelb/sluice/pkg/config"
	"github.com/sluicelb/sluice/userspace/queue"
)

// Health checks, as HAProxy's `check`: a server failing `fall` consecutive
// checks goes DOWN (no new requests; its queue waits or is redispatched), one
// passing `rise` consecutive checks while down comes back UP. A check is a
// TCP connection, or with `option httpchk` an HTTP request whose status must
// match `http-check expect` (default: 2xx or 3xx). Checks run every `inter`,
// `fastinter` while a transition is under way and `downinter` while down.

// checker probes one server.
type checker struct {
	srv      *server
	interval time.Duration
	fast     time.Duration
	down     time.Duration
	rise     int
	fall     int
	timeout  time.Duration // connect, and read for HTTP
	httpReq  []byte        // nil: TCP check
	expect   func(status int, line string) bool
}

func newChecker(be *backend, s *server, sc *config.Server) (*checker, error) {
	c := &checker{
		srv: s, interval: sc.Inter, fast: sc.FastInter, down: sc.DownInter,
		rise: max(sc.Rise, 1), fall: max(sc.Fall, 1),
	}
	if c.interval <= 0 {
		c.interval = 2 * time.Second
	}
	if c.fast <= 0 {
		c.fast = c.interval
	}
	if c.down <= 0 {
		c.down = c.interval
	}
	c.timeout = min(be.timeoutConnect, c.interval)
	if t := be.cfg.Timeouts.Check; t > 0 {
		c.timeout = t
	}
	if o := be.cfg.Options; o.HTTPCheck {
		c.httpReq = []byte(o.HTTPCheckMethod + " " + o.HTTPCheckURI + " " + o.HTTPCheckVersion + "\r\n" +
			"Host: " + s.addr + "\r\nUser-Agent: sluice-health-check\r\nConnection: close\r\n\r\n")
		exp, err := compileExpect(be.cfg.CheckExpect)
		if err != nil {
			return nil, err
		}
		c.expect = exp
	}
	return c, nil
}

// compileExpect turns http-check expect into a status matcher.
func compileExpect(ce *config.CheckExpect) (func(int, string) bool, error) {
	if ce == nil {
		return func(st int, _ string) bool { return st >= 200 && st < 400 }, nil
	}
	var match func(int, string) bool
	switch ce.Kind {
	case "rstatus":
		re, err := regexp.Compile(ce.Value)
		if err != nil {
			return nil, fmt.Errorf("%s: http-check expect rstatus: %w", ce.Pos, err)
		}
		match = func(st int, _ string) bool { return re.MatchString(strconv.Itoa(st)) }
	default:
		type span struct{ lo, hi int }
		var spans []span
		for _, code := range strings.Split(ce.Value, ",") {
			lo, hi, found := strings.Cut(code, "-")
			if !found {
				hi = lo
			}
			a, _ := strconv.Atoi(lo)
			b, _ := strconv.Atoi(hi)
			spans = append(spans, span{a, b})
		}
		match = func(st int, _ string) bool {
			for _, s := range spans {
				if st >= s.lo && st <= s.hi {
					return true
				}
			}
			return false
		}
	}
	if ce.Negate {
		return func(st int, l string) bool { return !match(st, l) }, nil
	}
	return match, nil
}

// probe runs one check and says why it failed.
func (c *checker) probe() (ok bool, reason string) {
	start := time.Now()
	conn, err := c.srv.connect(context.Background(), c.timeout, netip.AddrPort{})
	if err != nil {
		return false, "Layer4 connection problem: " + err.Error()
	}
	defer conn.Close()
	if c.httpReq == nil {
		return true, "Layer4 check passed"
	}
	conn.SetDeadline(start.Add(c.timeout))
	if _, err := conn.Write(c.httpReq); err != nil {
		return false, "Layer7 write error: " + err.Error()
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return false, "Layer7 timeout or read error: " + err.Error()
	}
	line = strings.TrimRight(line, "\r\n")
	var st int
	if _, err := fmt.Sscanf(line, "HTTP/1.%*d %d", &st); err != nil {
		if f := strings.Fields(line); len(f) >= 2 && strings.HasPrefix(f[0], "HTTP/") {
			st, _ = strconv.Atoi(f[1])
		}
	}
	if st == 0 {
		return false, "Layer7 invalid response: " + strconv.Quote(line)
	}
	if !c.expect(st, line) {
		return false, "Layer7 wrong status: " + line
	}
	return true, "Layer7 check passed: " + line
}

// run checks until the proxy stops.
func (c *checker) run(p *Proxy, stop <-chan struct{}) {
	s := c.srv
	fails, oks := 0, 0
	t := time.NewTimer(c.interval)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-stop: // a reload replaced this configuration
			return
		case <-t.C:
		}
		ok, reason := c.probe()
		next := c.interval
		if !s.down.Load() {
			if ok {
				fails = 0
			} else if fails++; fails >= c.fall {
				fails = 0
				s.down.Store(true)
				s.apply()
				p.logState(s, "DOWN", reason)
			}
			if fails > 0 {
				next = c.fast
			}
		} else {
			next = c.down
			if !ok {
				oks = 0
			} else if oks++; oks >= c.rise {
				oks = 0
				s.down.Store(false)
				s.apply()
				p.logState(s, "UP", reason)
				next = c.interval
			} else {
				next = c.fast
			}
		}
		t.Reset(next)
	}
}

// apply sets the server's state in its backend from its administrative
// state and its health.
func (s *server) apply() {
	st := queue.StateUp
	switch admin := queue.State(s.admin.Load()); {
	case admin == queue.StateMaint:
		st = queue.StateMaint
	case s.down.Load():
		st = queue.StateDown
	case admin == queue.StateDrain:
		st = queue.StateDrain
	}
	s.be.q.SetServerState(s.q, st)
	if s.p != nil && s.p.ServerState != nil {
		s.p.ServerState(s.be.name, s.q.Name, st)
	}
}

func (p *Proxy) logState(s *server, state, reason string) {
	active, backup := 0, 0
	for _, o := range s.be.servers {
		if o.q.State() == queue.StateUp {
			if o.q.Backup {
				backup++
			} else {
				active++
			}
		}
	}
	p.log.Warn(fmt.Sprintf("Server %s/%s is %s", s.be.name, s.q.Name, state),
		"reason", reason, "active_servers_left", active, "backup_servers_left", backup)
	if active == 0 && backup == 0 {
		p.log.Error(fmt.Sprintf("backend '%s' has no server available!", s.be.name))
	}
}

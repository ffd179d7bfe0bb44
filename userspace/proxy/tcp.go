package proxy

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/sluicelb/sluice/userspace/proxy/h1"
	"github.com/sluicelb/sluice/userspace/queue"
	"github.com/sluicelb/sluice/userspace/tunnel"
)

// tunnelTimeouts are a tunnel's inactivity limits: `timeout tunnel`, or
// without it the longer of the client and server timeouts (HAProxy keeps
// both, one per side; a tunnel idle in both directions is idle on both
// sides); `timeout client-fin` and `timeout server-fin` once a side has
// closed.
func (be *backend) tunnelTimeouts(fe *frontend) tunnel.Timeouts {
	idle := be.cfg.Timeouts.Tunnel
	if idle == 0 {
		idle = max(fe.timeoutClient, be.timeoutServer)
	}
	return tunnel.Timeouts{Idle: idle, ClientFin: fe.cfg.Timeouts.ClientFin, ServerFin: be.cfg.Timeouts.ServerFin}
}

// kernelSplice says whether a tunnel through fe to be asks the kernel to
// carry its bytes: unless `no option kernel-splice` is on either (whether the
// kernel can is the splicer's business: without one, or when it declines a
// pair, tunnels are copied in userspace).
func kernelSplice(fe *frontend, be *backend) bool {
	return !fe.cfg.Options.NoKernelSplice && !be.cfg.Options.NoKernelSplice
}

// serveTCP serves a mode tcp connection: route it (ACLs on the connection's
// addresses), wait for a server slot as an HTTP request would, connect with
// retries, then tunnel until either side is done.
func (p *Proxy) serveTCP(fe *frontend, c *net.TCPConn) {
	s := p.newSession(fe, c)
	if s == nil {
		return
	}
	defer s.finish()
	tm := timings{start: s.created}
	req := h1.Request{Src: s.src.Addr(), SrcPort: s.src.Port(), DstPort: s.dst, ContentLength: -1}
	bi := fe.router.Route(&req)
	if bi < 0 {
		s.logTCP(nil, nil, 0, termSC, tm)
		return
	}
	be := fe.backends[bi]
	be.cur.Add(1)
	be.total.Add(1)
	defer be.cur.Add(-1)
	var key uint64
	if be.hash == hashSource {
		a := s.src.Addr().As16()
		key = hashBytes(a[:])
	}
	var exclude *queue.Server
	for attempt := 0; ; attempt++ {
		qstart := time.Now()
		qs := be.q.TryAcquire(key)
		if qs == nil || exclude != nil {
			if qs != nil {
				be.q.Release(qs)
			}
			var err error
			ctx, stop := s.watchClient()
			qs, err = be.q.AcquireAt(ctx, key, exclude, tm.start)
			gone := stop()
			tm.queued += time.Since(qstart)
			if gone || err != nil {
				if qs != nil {
					be.q.Release(qs)
				}
				term := termCQ
				switch {
				case gone:
				case errors.Is(err, queue.ErrQueueTimeout):
					term = termSQ
				default:
					term = termSC
				}
				s.logTCP(be, nil, 0, term, tm)
				return
			}
		} else {
			tm.queued += time.Since(qstart)
		}
		srv := be.servers[qs.Index]
		cstart := time.Now()
		uc, err := srv.dial(context.Background(), be.timeoutConnect, s.src)
		tm.connect = time.Since(cstart)
		if err != nil {
			be.q.Release(qs)
			srv.q.Failures.Add(1)
			term := termSC
			if isTimeout(err) {
				term = termsC
			}
			srv.logConnectError(err)
			if attempt < be.retries && !p.closing.Load() {
				tm.retries++
				if be.redispatch && attempt == be.retries-1 && len(be.servers) > 1 {
					exclude = qs
				} else {
					select { // HAProxy's turn-around timer before reconnecting
					case <-time.After(min(be.timeoutConnect, time.Second)):
					case <-p.stop:
					}
				}
				continue
			}
			s.logTCP(be, srv, 0, term, tm)
			return
		}
		putBuf(uc.buf)
		uc.buf = nil
		s.c.SetDeadline(time.Time{})
		t := p.tunnels.New(tunnel.Info{Kind: tunnel.TCP, Frontend: fe.name, Backend: be.name, Server: srv.q.Name, Client: s.src,
			KernelSplice: kernelSplice(fe, be)}, s.c, uc.c, be.tunnelTimeouts(fe))
		r := t.Run(nil, nil)
		be.q.Release(qs)
		tm.total = time.Since(tm.start)
		s.logTCP(be, srv, r.Down, r.Term, tm)
		return
	}
}

// logTCP writes one line in HAProxy's `option tcplog` format:
//
//	client:port [date] frontend backend/server Tw/Tc/Tt bytes term actconn/feconn/beconn/srvconn/retries srvqueue/backendqueue
func (s *session) logTCP(be *backend, srv *server, bytes int64, term string, tm timings) {
	l := s.p.access
	if l == nil || !s.fe.httplog {
		return
	}
	if tm.total == 0 {
		tm.total = time.Since(tm.start)
	}
	b := s.appendHead(make([]byte, 0, 160), tm.start, be, srv)
	ms := func(d time.Duration, reached bool) {
		if reached {
			b = itoa(b, d.Milliseconds())
		} else {
			b = append(b, "-1"...)
		}
	}
	ms(tm.queued, be != nil)
	b = append(b, '/')
	ms(tm.connect, srv != nil)
	b = append(b, '/')
	ms(tm.total, true)
	b = append(b, ' ')
	b = itoa(b, bytes)
	b = append(b, ' ')
	b = append(b, term...)
	b = append(b, ' ')
	b = s.appendCounts(b, be, srv, tm.retries)
	b = append(b, '\n')
	l.write(b)
}

// Tunnels returns the registry of live tunnels (runtime API, metrics).
func (p *Proxy) Tunnels() *tunnel.Registry { return p.tunnels }

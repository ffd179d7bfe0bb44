package proxy

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/sluicelb/sluice/userspace/source"

	"github.com/sluicelb/sluice/userspace/proxy/h1"
)

// upConn is a connection to a server, with its own read buffer while in use.
type upConn struct {
	c     *net.TCPConn
	io    *sock
	srv   *server
	buf   []byte
	r, w  int
	res   h1.Response
	uses  int       // requests completed on it
	since time.Time // when it went idle

	// When an event loop holds it (loop_linux.go): its raw descriptor and
	// the session it serves (nil while idle in the loop's pool).
	fd    int
	owner *session
}

// idlePool keeps a server's idle keep-alive connections, most recently used
// first (the warmest, and the least likely to have been closed by the server).
type idlePool struct {
	mu   sync.Mutex
	idle []*upConn
}

// maxIdlePerServer bounds the idle connections kept per server.
const maxIdlePerServer = 1024

func (p *idlePool) get() *upConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := len(p.idle); n > 0 {
		uc := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		return uc
	}
	return nil
}

func (p *idlePool) put(uc *upConn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.idle) >= maxIdlePerServer {
		return false
	}
	p.idle = append(p.idle, uc)
	return true
}

// purge closes connections idle since before cutoff (the oldest are first).
func (p *idlePool) purge(cutoff time.Time) {
	p.mu.Lock()
	n := 0
	for n < len(p.idle) && p.idle[n].since.Before(cutoff) {
		p.idle[n].c.Close()
		n++
	}
	if n > 0 {
		p.idle = append(p.idle[:0], p.idle[n:]...)
	}
	p.mu.Unlock()
}

func (p *idlePool) closeAll() {
	p.mu.Lock()
	for _, uc := range p.idle {
		uc.c.Close()
	}
	p.idle = nil
	p.mu.Unlock()
}

// recheckAfter: an idle connection older than this is checked for a close by
// the server before reuse (a non-blocking peek); younger ones are trusted, and
// a failure on them is retried when the request allows it.
const recheckAfter = 250 * time.Millisecond

// reuse returns an idle connection to s that still looks alive, or nil.
func (s *server) reuse(now time.Time) *upConn {
	for {
		uc := s.pool.get()
		if uc == nil {
			return nil
		}
		if now.Sub(uc.since) < recheckAfter || uc.io.alive() {
			uc.buf = getBuf()
			uc.r, uc.w = 0, 0
			return uc
		}
		uc.c.Close()
	}
}

// dial opens a new connection to s, from a source of its pool when it has
// one (client is the client's address, for `usesrc client`).
func (s *server) dial(ctx context.Context, timeout time.Duration, client netip.AddrPort) (*upConn, error) {
	tc, err := s.connect(ctx, timeout, client)
	if err != nil {
		return nil, err
	}
	tc.SetNoDelay(true)
	io, err := newSock(tc)
	if err != nil {
		tc.Close()
		return nil, err
	}
	return &upConn{c: tc, io: io, srv: s, buf: getBuf()}, nil
}

// release returns uc to its server's pool, or closes it.
func (uc *upConn) release(keep bool, now time.Time) {
	if uc.buf != nil && uc.r == uc.w {
		putBuf(uc.buf)
		uc.buf = nil
	} else {
		keep = false // the server sent more than the response: not reusable
	}
	if keep && !uc.srv.retired.Load() {
		uc.uses++
		uc.since = now
		uc.res.Headers = uc.res.Headers[:0]
		if uc.srv.pool.put(uc) {
			return
		}
	}
	if uc.buf != nil {
		putBuf(uc.buf)
		uc.buf = nil
	}
	uc.c.Close()
}

// connect opens a TCP connection to s: from the best source of its pool
// (the most free tuples toward s as the kernel counts them), or from the
// address the kernel picks.
func (s *server) connect(ctx context.Context, timeout time.Duration, client netip.AddrPort) (*net.TCPConn, error) {
	if s.src == nil {
		d := net.Dialer{Timeout: timeout}
		c, err := d.DialContext(ctx, "tcp", s.addr)
		if err != nil {
			return nil, err
		}
		return c.(*net.TCPConn), nil
	}
	if s.src.Spec().Transparent() && client.IsValid() {
		return s.src.DialTransparent(ctx, s.ap, client, timeout)
	}
	var occ source.Occupancy
	if s.p != nil && s.p.Occupancy != nil {
		occ = s.p.Occupancy()
	}
	c, _, err := s.src.Dial(ctx, s.ap, occ, timeout)
	return c, err
}

// logConnectError logs a failed connection to s: at warning level when no
// source had a free tuple left (the operator must add source addresses),
// else at debug level (health checks report dead servers).
func (s *server) logConnectError(err error) {
	if s.p == nil {
		return
	}
	if errors.Is(err, source.ErrExhausted) {
		s.p.log.Warn("connect failed: source ports exhausted", "backend", s.be.name, "server", s.q.Name, "err", err)
		return
	}
	s.p.log.Debug("connect failed", "backend", s.be.name, "server", s.q.Name, "err", err)
}

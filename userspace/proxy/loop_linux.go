//go:build linux

package proxy

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/sluicelb/sluice/userspace/proxy/h1"
	"github.com/sluicelb/sluice/userspace/queue"
)

// Event loops: the fast path of HTTP keep-alive traffic.
//
// A goroutine per connection parks in Go's netpoller between requests; under
// load on a machine whose CPUs are also busy with other processes, the
// runtime's threads sleep and wake so often that waiting for a CPU after
// each wake-up gave a p99 three times HAProxy's. An event loop is one
// goroutine locked to a thread with its own epoll set: it serves every
// connection it owns in turn, as HAProxy's threads do, and stays busy
// instead of sleeping between requests.
//
// The loop does the common exchange itself: a request whose body (if any)
// is already buffered, a server slot free without queueing, an idle server
// connection at hand, and a response whose whole body arrives with its head.
// Everything else (queueing, connecting, streaming bodies, 100-continue,
// retries, slow clients) is delegated to a goroutine running the ordinary
// session code, which hands the connection back once it is idle again. A
// connection is owned by exactly one of them at a time.

type loopState struct {
	owned     atomic.Bool // an event loop owns the connection
	fd        int
	lstate    uint8
	lindex    int       // position in lp.sessions
	deadline  time.Time // for the current state; zero = none
	readable  bool      // an edge arrived while a response was awaited
	clientEOF bool      // the client shut down its side after sending
	// the request in flight on the fast path
	lbe *backend
	lqs *queue.Server
	luc *upConn
	ltm timings
}

const (
	lsIdle     uint8 = iota // no request bytes buffered
	lsHead                  // part of a request head buffered
	lsWaitResp              // request sent, response awaited
)

type loop struct {
	p      *Proxy
	epfd   int
	wakeR  int
	wakeW  int
	events []syscall.EpollEvent
	now    time.Time

	mu    sync.Mutex
	inbox []*session
	quit  bool
	abort bool

	ents     []ent // by file descriptor
	sessions []*session
	pool     map[*server][]*upConn
	nextScan time.Time
	done     chan struct{}
}

type ent struct {
	s  *session
	uc *upConn
}

const (
	epollET    = 1 << 31
	loopEvents = uint32(syscall.EPOLLIN|syscall.EPOLLRDHUP) | epollET
	scanEvery  = 100 * time.Millisecond
)

// startLoops starts n event loops (n <= 0: none, every connection gets a
// goroutine).
func (p *Proxy) startLoops(n int) error {
	for i := 0; i < n; i++ {
		lp, err := newLoop(p)
		if err != nil {
			p.stopLoops()
			return err
		}
		p.loops = append(p.loops, lp)
		go lp.run()
	}
	return nil
}

func newLoop(p *Proxy) (*loop, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	var pipe [2]int
	if err := syscall.Pipe2(pipe[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
		syscall.Close(epfd)
		return nil, err
	}
	lp := &loop{p: p, epfd: epfd, wakeR: pipe[0], wakeW: pipe[1], events: make([]syscall.EpollEvent, 256),
		pool: map[*server][]*upConn{}, done: make(chan struct{})}
	ev := syscall.EpollEvent{Events: uint32(syscall.EPOLLIN), Fd: int32(lp.wakeR)}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, lp.wakeR, &ev); err != nil {
		lp.closeFDs()
		return nil, err
	}
	return lp, nil
}

func (lp *loop) closeFDs() {
	syscall.Close(lp.epfd)
	syscall.Close(lp.wakeR)
	syscall.Close(lp.wakeW)
}

// pickLoop returns the loop for a new connection, round robin.
func (p *Proxy) pickLoop() *loop {
	if len(p.loops) == 0 {
		return nil
	}
	i := p.nextLoop.Add(1)
	return p.loops[int(i)%len(p.loops)]
}

// stopLoops ends the loops once their connections are gone.
func (p *Proxy) stopLoops() {
	for _, lp := range p.loops {
		lp.mu.Lock()
		lp.quit = true
		lp.mu.Unlock()
		lp.wake()
	}
	for _, lp := range p.loops {
		<-lp.done
	}
	p.loops = nil
}

// abortLoops makes the loops close every connection they own now.
func (p *Proxy) abortLoops() {
	for _, lp := range p.loops {
		lp.mu.Lock()
		lp.abort = true
		lp.mu.Unlock()
		lp.wake()
	}
}

// wakeLoops makes the loops notice a graceful stop.
func (p *Proxy) wakeLoops() {
	for _, lp := range p.loops {
		lp.wake()
	}
}

func (lp *loop) wake() {
	b := [1]byte{1}
	syscall.Write(lp.wakeW, b[:])
}

// adopt gives s to the loop (from the accept loop or a goroutine that
// finished a delegated request).
func (lp *loop) adopt(s *session) {
	lp.mu.Lock()
	lp.inbox = append(lp.inbox, s)
	first := len(lp.inbox) == 1
	lp.mu.Unlock()
	if first {
		lp.wake()
	}
}

func (lp *loop) run() {
	runtime.LockOSThread()
	defer close(lp.done)
	var inbox []*session
	for {
		timeout := int(scanEvery / time.Millisecond)
		n, err := syscall.EpollWait(lp.epfd, lp.events, timeout)
		if err != nil && err != syscall.EINTR {
			lp.p.log.Error("event loop: epoll_wait failed", "err", err)
			time.Sleep(10 * time.Millisecond)
		}
		lp.now = time.Now()
		for i := 0; i < n; i++ {
			fd := int(lp.events[i].Fd)
			if fd == lp.wakeR {
				var b [64]byte
				for {
					if m, _ := syscall.Read(lp.wakeR, b[:]); m <= 0 {
						break
					}
				}
				continue
			}
			if fd >= len(lp.ents) {
				continue
			}
			switch e := lp.ents[fd]; {
			case e.s != nil:
				lp.clientEvent(e.s)
			case e.uc != nil:
				lp.upstreamEvent(e.uc)
			}
		}
		lp.mu.Lock()
		inbox, lp.inbox = lp.inbox, inbox[:0]
		quit, abort := lp.quit, lp.abort
		lp.mu.Unlock()
		for i, s := range inbox {
			inbox[i] = nil
			lp.take(s)
		}
		if abort {
			for len(lp.sessions) > 0 {
				lp.closeSession(lp.sessions[len(lp.sessions)-1])
			}
		}
		if lp.p.closing.Load() {
			// Graceful stop: idle connections close now, busy ones after
			// their response.
			for i := len(lp.sessions) - 1; i >= 0; i-- {
				if i < len(lp.sessions) && lp.sessions[i].lstate == lsIdle {
					lp.closeSession(lp.sessions[i])
				}
			}
		}
		if !lp.now.Before(lp.nextScan) {
			lp.scan()
			lp.nextScan = lp.now.Add(scanEvery)
		}
		if quit && len(lp.sessions) == 0 {
			for srv, conns := range lp.pool {
				for _, uc := range conns {
					lp.dropUpstream(uc)
				}
				delete(lp.pool, srv)
			}
			lp.closeFDs()
			return
		}
	}
}

// take registers a session handed to the loop and serves what it has
// buffered or what arrived meanwhile.
func (lp *loop) take(s *session) {
	s.owned.Store(true)
	fd, err := toRaw(s.c)
	s.c, s.io, s.fd = nil, nil, fd
	if err != nil || !lp.register(s.fd, ent{s: s}) {
		s.finish()
		return
	}
	s.lindex = len(lp.sessions)
	lp.sessions = append(lp.sessions, s)
	s.lstate = lsIdle
	s.deadline = time.Time{}
	if lp.p.closing.Load() && (s.st == nil || s.st.r == s.st.w) {
		lp.closeSession(s)
		return
	}
	if s.st != nil && s.st.r < s.st.w {
		lp.serveBuffered(s)
		if s.lstate != lsIdle || !s.owned.Load() {
			return
		}
	}
	// Bytes may have arrived while another goroutine owned it: with
	// edge-triggered events there will be no new edge for them.
	lp.readClient(s)
}

func (lp *loop) register(fd int, e ent) bool {
	ev := syscall.EpollEvent{Events: loopEvents, Fd: int32(fd)}
	if err := syscall.EpollCtl(lp.epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return false
	}
	for fd >= len(lp.ents) {
		lp.ents = append(lp.ents, make([]ent, len(lp.ents)+64)...)
	}
	lp.ents[fd] = e
	return true
}

func (lp *loop) unregister(fd int) {
	syscall.EpollCtl(lp.epfd, syscall.EPOLL_CTL_DEL, fd, nil)
	if fd < len(lp.ents) {
		lp.ents[fd] = ent{}
	}
}

// release removes s from the loop without closing it.
func (lp *loop) release(s *session) {
	lp.unregister(s.fd)
	last := lp.sessions[len(lp.sessions)-1]
	lp.sessions[s.lindex] = last
	last.lindex = s.lindex
	lp.sessions[len(lp.sessions)-1] = nil
	lp.sessions = lp.sessions[:len(lp.sessions)-1]
}

func (lp *loop) closeSession(s *session) {
	if s.luc != nil {
		lp.dropUpstream(s.luc)
		s.luc = nil
	}
	if s.lqs != nil {
		s.lbe.q.Release(s.lqs)
		s.lbe.cur.Add(-1)
		s.lqs = nil
	}
	lp.release(s)
	s.finish()
}

// delegate hands s to a goroutine that runs fn (the ordinary session code)
// and gives the connection back to the loop when fn says it may continue.
func (lp *loop) delegate(s *session, fn func() bool) {
	lp.release(s)
	c, io, err := fromRaw(s.fd)
	s.fd = -1
	if err != nil {
		lp.p.log.Warn("event loop: hand-over failed", "err", err)
		s.owned.Store(false)
		s.finish()
		return
	}
	s.c, s.io = c, io
	s.owned.Store(false)
	go func() {
		keep := fn() && !s.p.closing.Load()
		if !keep {
			s.finish()
			return
		}
		if st := s.st; st != nil && st.r == st.w {
			putState(st)
			s.st = nil
		}
		lp.adopt(s)
	}()
}

func (lp *loop) clientEvent(s *session) {
	if s.lstate == lsWaitResp {
		s.readable = true // read after the response: requests stay in order
		return
	}
	lp.readClient(s)
}

// rawRead reads without the runtime's syscall bookkeeping (the socket is
// non-blocking).
func rawRead(fd int, p []byte) (int, syscall.Errno) {
	for {
		r, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		if e != syscall.EINTR {
			return int(r), e
		}
	}
}

// rawWrite writes as much of p as the socket takes now.
func rawWrite(fd int, p []byte) (int, syscall.Errno) {
	n := 0
	for n < len(p) {
		r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[n])), uintptr(len(p)-n))
		switch e {
		case 0:
			n += int(r)
		case syscall.EINTR:
		default:
			return n, e
		}
	}
	return n, 0
}

// readClient reads what the client sent and serves it.
func (lp *loop) readClient(s *session) {
	s.readable = false
	st := s.st
	if st == nil {
		buf := getBuf()
		n, e := rawRead(s.fd, buf)
		if e == syscall.EAGAIN {
			putBuf(buf)
			if s.deadline.IsZero() {
				t := s.fe.timeoutKeepAlive
				if s.nreq == 0 {
					t = s.fe.timeoutHTTPRequest
				}
				s.deadline = lp.now.Add(t)
			}
			return
		}
		if e != 0 || n == 0 {
			putBuf(buf)
			lp.closeSession(s)
			return
		}
		st = getState()
		st.buf, st.r, st.w = buf, 0, n
		s.st = st
	}
	for st.w < len(st.buf) {
		n, e := rawRead(s.fd, st.buf[st.w:])
		if e == syscall.EAGAIN {
			break
		}
		if e != 0 || n == 0 {
			if e != 0 || st.r == st.w {
				lp.closeSession(s)
				return
			}
			// The client half-closed after sending: answer what it sent,
			// then close.
			s.clientEOF = true
			break
		}
		st.w += n
	}
	if st.w == len(st.buf) {
		// More than a buffer at once: let a goroutine deal with it.
		lp.delegate(s, s.serveOne)
		return
	}
	lp.serveBuffered(s)
}

// serveOne is the delegated form of one turn of serve: read a head, handle
// it.
func (s *session) serveOne() bool {
	return s.readHead() && s.handle()
}

// serveBuffered parses and serves the requests buffered for s.
func (lp *loop) serveBuffered(s *session) {
	for {
		st := s.st
		if st.r == st.w {
			putState(st)
			s.st = nil
			s.lstate = lsIdle
			s.deadline = lp.now.Add(s.fe.timeoutKeepAlive) // idle keep-alive
			if lp.p.closing.Load() || s.clientEOF {
				lp.closeSession(s)
			}
			return
		}
		if s.lstate == lsIdle {
			s.lstate = lsHead
			// Its own clock reading, not the batch's: it orders queues.
			// A connection's first request keeps its accept time, taken
			// in accept order before any hand-over between threads.
			now := time.Now()
			s.ltm = timings{start: now}
			if s.nreq > 0 {
				s.arrived = now
			}
			s.deadline = lp.now.Add(s.fe.timeoutHTTPRequest)
		}
		st.req.Src, st.req.SrcPort, st.req.DstPort = s.src.Addr(), s.src.Port(), s.dst
		err := h1.ParseRequest(st.buf[st.r:st.w], &st.req)
		if err == h1.ErrIncomplete {
			return
		}
		if err != nil {
			status := 400
			if he, ok := err.(*h1.Error); ok {
				status = he.Status
			}
			s.fail(status, s.ltm.start, termPR, nil)
			lp.closeSession(s)
			return
		}
		if !lp.request(s) {
			return
		}
	}
}

// request starts the exchange of a parsed request on the fast path, or
// delegates it. It returns true when the request was answered and the next
// buffered one may be served.
func (lp *loop) request(s *session) bool {
	st := s.st
	req := &st.req
	if !s.follow() {
		req.Close = true // its frontend is gone after a reload: last request
	}
	fe := s.fe
	bodyLen := int64(0)
	if req.ContentLength > 0 {
		bodyLen = req.ContentLength
	}
	if req.Chunked || req.Expect100 || req.Upgrade || int64(st.w-st.r-req.HeadLen) < bodyLen || lp.p.closing.Load() ||
		(len(fe.rules) > 0 && fe.matchRule(req) != nil) || fe.isStats(req) {
		lp.delegate(s, s.handle)
		return false
	}
	bi := fe.router.Route(req)
	if bi < 0 {
		lp.delegate(s, s.handle)
		return false
	}
	be := fe.backends[bi]
	var key uint64
	if be.hash != hashNone {
		key = s.hashKey(be)
	}
	qs := be.q.TryAcquire(key)
	if qs == nil {
		lp.delegate(s, s.handle) // queue, 503...
		return false
	}
	srv := be.servers[qs.Index]
	// http-reuse safe, as in attempt.
	var uc *upConn
	if s.nreq > 0 || (req.Idempotent() && bodyLen == 0) {
		uc = lp.takeUpstream(srv)
	}
	if uc == nil {
		s.pre, s.preBe = qs, be // the goroutine uses this slot and dials
		lp.delegate(s, s.handle)
		return false
	}
	s.nreq++
	s.reqStart = st.r
	s.ws = false // upgrades never take the fast path
	if lp.p.access != nil && fe.httplog {
		s.keepLine()
	}
	headEnd := st.r + req.HeadLen
	st.out = s.requestHead(be, st.out[:0])
	st.out = append(st.out, st.buf[headEnd:headEnd+int(bodyLen)]...)
	if n, e := rawWrite(uc.fd, st.out); e != 0 || n < len(st.out) {
		// A keep-alive connection the server closed, or a full socket
		// buffer (then the server got part of a request: the connection
		// is useless). Let a goroutine retry on a fresh connection.
		lp.dropUpstream(uc)
		be.q.Release(qs)
		s.nreq--
		lp.delegate(s, s.handle)
		return false
	}
	st.r = headEnd + int(bodyLen)
	be.cur.Add(1)
	be.total.Add(1)
	uc.owner = s
	uc.r, uc.w = 0, 0
	s.lbe, s.lqs, s.luc = be, qs, uc
	s.ltm.head = lp.now
	s.lstate = lsWaitResp
	s.deadline = lp.now.Add(be.timeoutServer)
	return false
}

// takeUpstream returns an idle connection to srv registered with the loop:
// one of the loop's own, or one from the server's shared pool.
func (lp *loop) takeUpstream(srv *server) *upConn {
	if conns := lp.pool[srv]; len(conns) > 0 {
		uc := conns[len(conns)-1]
		conns[len(conns)-1] = nil
		lp.pool[srv] = conns[:len(conns)-1]
		uc.buf = getBuf()
		return uc
	}
	uc := srv.reuse(lp.now)
	if uc == nil {
		return nil
	}
	fd, err := toRaw(uc.c)
	uc.c, uc.io, uc.fd = nil, nil, fd
	if err != nil || !lp.register(uc.fd, ent{uc: uc}) {
		if err == nil {
			syscall.Close(fd)
		}
		if uc.buf != nil {
			putBuf(uc.buf)
			uc.buf = nil
		}
		return nil
	}
	return uc
}

// putUpstream keeps an idle connection in the loop's pool.
func (lp *loop) putUpstream(uc *upConn) {
	uc.owner = nil
	uc.since = lp.now
	uc.uses++
	if uc.buf != nil {
		putBuf(uc.buf)
		uc.buf = nil
	}
	lp.pool[uc.srv] = append(lp.pool[uc.srv], uc)
}

// dropUpstream closes a connection the loop holds (busy or idle).
func (lp *loop) dropUpstream(uc *upConn) {
	lp.unregister(uc.fd)
	syscall.Close(uc.fd)
	uc.owner, uc.fd = nil, -1
	if uc.buf != nil {
		putBuf(uc.buf)
		uc.buf = nil
	}
}

// detachUpstream hands a busy connection over to a goroutine.
func (lp *loop) detachUpstream(uc *upConn) error {
	lp.unregister(uc.fd)
	c, io, err := fromRaw(uc.fd)
	uc.owner, uc.fd = nil, -1
	uc.c, uc.io = c, io
	return err
}

func (lp *loop) upstreamEvent(uc *upConn) {
	s := uc.owner
	if s == nil {
		// Idle in the pool: the server closed it (or sent junk).
		conns := lp.pool[uc.srv]
		for i, c := range conns {
			if c == uc {
				conns[i] = conns[len(conns)-1]
				conns[len(conns)-1] = nil
				lp.pool[uc.srv] = conns[:len(conns)-1]
				break
			}
		}
		lp.dropUpstream(uc)
		return
	}
	eof := false
	for uc.w < len(uc.buf) {
		n, e := rawRead(uc.fd, uc.buf[uc.w:])
		if e == syscall.EAGAIN {
			break
		}
		if e != 0 || n == 0 {
			eof = true
			break
		}
		uc.w += n
	}
	lp.response(s, uc, eof)
}

// response continues an exchange when the server sent something.
func (lp *loop) response(s *session, uc *upConn, eof bool) {
	st := s.st
	req := &st.req
	be := s.lbe
	for {
		err := h1.ParseResponse(uc.buf[uc.r:uc.w], &uc.res)
		if err == h1.ErrIncomplete {
			if !eof && uc.w < len(uc.buf) {
				return // wait for more
			}
			if uc.w == len(uc.buf) && !eof {
				// A head larger than a buffer: the goroutine code grows it.
				lp.delegateResponse(s, uc, false)
				return
			}
			if uc.w == 0 && req.Idempotent() && !req.HasBody() {
				// The server closed an idle connection as we reused it:
				// replay on a fresh one.
				lp.retry(s)
				return
			}
			lp.endError(s, 502, termSH)
			return
		}
		if err != nil {
			lp.endError(s, 502, termSH)
			return
		}
		res := &uc.res
		if res.Status >= 100 && res.Status < 200 && res.Status != 101 {
			if req.Minor == 1 {
				st.out = responseHead(st.out[:0], res, 1, false, false)
				rawWrite(s.fd, st.out)
			}
			uc.r += res.HeadLen
			continue
		}
		break
	}
	res := &uc.res
	s.ltm.response = lp.now.Sub(s.ltm.head)
	if res.Status == 101 {
		lp.endError(s, 502, termSH)
		return
	}
	kind := res.Body(req.IsHead())
	bodyLen := 0
	if kind == h1.BodyLength {
		bodyLen = int(res.ContentLength)
	}
	if (kind != h1.BodyNone && kind != h1.BodyLength) || uc.w-uc.r-res.HeadLen < bodyLen || res.ContentLength > bufSize {
		lp.delegateResponse(s, uc, true)
		return
	}
	closeClient := req.Close || lp.p.closing.Load() || s.clientEOF
	st.out = responseHead(st.out[:0], res, req.Minor, closeClient, false)
	body := uc.buf[uc.r+res.HeadLen : uc.r+res.HeadLen+bodyLen]
	st.out = append(st.out, body...)
	uc.r += res.HeadLen + bodyLen
	keepServer := !res.Close && !s.fe.serverClose && !be.serverClose && uc.r == uc.w && !eof
	status := res.Status
	if keepServer && !uc.srv.retired.Load() {
		lp.putUpstream(uc)
	} else {
		lp.dropUpstream(uc)
	}
	s.luc = nil
	be.q.Release(s.lqs)
	be.cur.Add(-1)
	srv := be.servers[s.lqs.Index]
	s.lqs = nil
	n, e := rawWrite(s.fd, st.out)
	s.ltm.total = lp.now.Sub(s.ltm.start)
	if e != 0 && e != syscall.EAGAIN {
		s.logRequest(be, srv, status, int64(n), termCD, s.ltm)
		lp.closeSession(s)
		return
	}
	s.logRequest(be, srv, status, int64(len(st.out)), termOK, s.ltm)
	if n < len(st.out) {
		// The client reads slowly: a goroutine finishes the write.
		st.out = st.out[:copy(st.out, st.out[n:])]
		lp.delegate(s, func() bool {
			s.c.SetWriteDeadline(time.Now().Add(s.fe.timeoutClient))
			_, err := s.io.Write(st.out)
			return err == nil && !closeClient
		})
		return
	}
	if closeClient {
		lp.closeSession(s)
		return
	}
	s.lstate = lsIdle
	s.deadline = time.Time{}
	if s.readable {
		lp.readClient(s)
		return
	}
	lp.serveBuffered(s)
}

// delegateResponse lets a goroutine relay a response the fast path does not
// handle (streamed, chunked, close-delimited bodies), then go on with the
// connection.
func (lp *loop) delegateResponse(s *session, uc *upConn, parsed bool) {
	if err := lp.detachUpstream(uc); err != nil {
		lp.p.log.Warn("event loop: hand-over failed", "err", err)
		s.luc = nil
		lp.endError(s, 502, termSH)
		return
	}
	be, qs, tm := s.lbe, s.lqs, s.ltm
	s.luc, s.lqs = nil, nil
	srv := be.servers[qs.Index]
	lp.delegate(s, func() bool {
		defer be.cur.Add(-1)
		var o outcome
		if !parsed {
			if err := s.readResponse(be, uc); err != nil {
				uc.release(false, time.Time{})
				be.q.Release(qs)
				st := termSH
				if isTimeout(err) {
					st = termsH
				}
				s.fail(502, tm.start, st, be)
				return false
			}
			tm.response = time.Since(tm.head)
		}
		o.status, o.term = uc.res.Status, termOK
		o = s.relayResponse(be, uc, o, true, nil)
		be.q.Release(qs)
		tm.total = time.Since(tm.start)
		s.logRequest(be, srv, o.status, o.bytes, o.term, tm)
		return o.keep
	})
}

// retry gives a request whose reused server connection failed before any
// response byte to the goroutine code, which replays it on a new one.
func (lp *loop) retry(s *session) {
	lp.dropUpstream(s.luc)
	s.luc = nil
	s.lbe.q.Release(s.lqs)
	s.lbe.cur.Add(-1)
	s.lqs = nil
	s.st.r = s.reqStart
	s.nreq--
	lp.delegate(s, s.handle)
}

// endError ends a fast-path exchange with an error sluice answers itself.
func (lp *loop) endError(s *session, status int, term string) {
	be := s.lbe
	if s.luc != nil {
		lp.dropUpstream(s.luc)
		s.luc = nil
	}
	be.q.Release(s.lqs)
	be.cur.Add(-1)
	s.lqs = nil
	s.fail(status, s.ltm.start, term, be)
	lp.closeSession(s)
}

// scan enforces timeouts and purges idle server connections.
func (lp *loop) scan() {
	now := lp.now
	for i := len(lp.sessions) - 1; i >= 0; i-- {
		if i >= len(lp.sessions) {
			continue
		}
		s := lp.sessions[i]
		if s.deadline.IsZero() || now.Before(s.deadline) {
			continue
		}
		switch s.lstate {
		case lsIdle:
			lp.closeSession(s) // keep-alive timeout: close silently
		case lsHead:
			s.fail(408, s.ltm.start, termcR, nil)
			lp.closeSession(s)
		case lsWaitResp:
			lp.endError(s, 504, termsH)
		}
	}
	cutoff := now.Add(-idlePurgeDelay)
	for srv, conns := range lp.pool {
		k := 0
		for k < len(conns) && conns[k].since.Before(cutoff) {
			lp.dropUpstream(conns[k])
			conns[k] = nil
			k++
		}
		if k > 0 {
			lp.pool[srv] = append(conns[:0], conns[k:]...)
		}
	}
}

func defaultLoops() int {
	if v := os.Getenv("SLUICE_LOOPS"); v != "" { // developer override, for measurements
		if n, err := strconv.Atoi(v); err == nil {
			return n
		}
	}
	return runtime.GOMAXPROCS(0)
}

// toRaw takes a connection out of Go's netpoller for a loop: the loop gets
// a duplicate descriptor and Go's is closed, which removes it from the
// runtime's epoll set (otherwise every event would also wake the runtime's
// poller thread).
func toRaw(c *net.TCPConn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		c.Close()
		return -1, err
	}
	nfd := -1
	var derr error
	if err := rc.Control(func(fd uintptr) {
		nfd, derr = dupCloexec(int(fd))
	}); err != nil {
		derr = err
	}
	c.Close()
	if derr != nil {
		return -1, fmt.Errorf("dup: %w", derr)
	}
	return nfd, nil
}

func dupCloexec(fd int) (int, error) {
	r, _, e := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_DUPFD_CLOEXEC, 0)
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}

// fromRaw gives a loop's descriptor back to Go for a goroutine: the
// connection gets its own duplicate and the loop's is closed.
func fromRaw(fd int) (*net.TCPConn, *sock, error) {
	f := os.NewFile(uintptr(fd), "tcp")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, nil, err
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		c.Close()
		return nil, nil, fmt.Errorf("not a TCP connection")
	}
	io, err := newSock(tc)
	if err != nil {
		tc.Close()
		return nil, nil, err
	}
	return tc, io, nil
}

// closeRaw closes a descriptor a loop owned.
func closeRaw(fd int) { syscall.Close(fd) }

// writeDirect writes an answer sluice generates itself on a connection a
// loop owns (best effort: it is small and the socket buffer empty).
func (s *session) writeDirect(p []byte) (int, error) {
	n, e := rawWrite(s.fd, p)
	if e != 0 {
		return n, e
	}
	return n, nil
}

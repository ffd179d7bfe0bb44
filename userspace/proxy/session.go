package proxy

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/sluicelb/sluice/userspace/proxy/h1"
	"github.com/sluicelb/sluice/userspace/queue"
)

// session is one client connection.
type session struct {
	p    *Proxy
	fe   *frontend
	c    *net.TCPConn
	io   *sock
	src  netip.AddrPort
	dst  uint16
	st   *state // nil while idle between requests
	nreq int
	// reqStart is where the current request starts in st.buf (exchange
	// may run more than once for a request: retries).
	reqStart int
	idle     atomic.Bool // blocked waiting for the next request
	// pre is a server slot the event loop acquired for this request before
	// handing it over (so balancing picks once).
	pre   *queue.Server
	preBe *backend
	// upstream is the server connection the current request uses, so that
	// a hard stop can close it too (closing the client alone does not wake
	// a session waiting for a response).
	upstream atomic.Pointer[net.TCPConn]
	// ws: the current request is a valid WebSocket handshake (the Upgrade
	// goes to the server; a 101 turns the connection into a tunnel).
	ws bool
	// arrived is when the current request's first bytes were seen: its
	// place in a queue.
	arrived time.Time
	// Set at accept and never changed: safe to read from other goroutines
	// (show sess).
	created time.Time
	feName  string

	loopState // when an event loop owns the connection (loop_linux.go)
}

// wakeIdle makes a session waiting for its next request give up now
// (graceful stop).
func (s *session) wakeIdle() {
	if s.idle.Load() {
		s.c.SetReadDeadline(time.Unix(1, 0))
	}
}

// newSession sets up a client connection's session and its counters. On
// failure it undoes the accept (connection, maxconn slot, wait group).
func (p *Proxy) newSession(fe *frontend, c *net.TCPConn) *session {
	s := &session{p: p, fe: fe, c: c, arrived: time.Now(), feName: fe.name}
	s.created = s.arrived
	s.fd = -1
	var err error
	if s.io, err = newSock(c); err != nil {
		c.Close()
		p.releaseSlots(fe)
		p.wg.Done()
		return nil
	}
	if ap, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		s.src = netip.AddrPortFrom(ap.AddrPort().Addr().Unmap(), ap.AddrPort().Port())
	}
	if la, ok := c.LocalAddr().(*net.TCPAddr); ok {
		s.dst = uint16(la.Port)
	}
	p.conns.Store(s, struct{}{})
	p.actconn.Add(1)
	if n := fe.cur.Add(1); n > fe.max.Load() {
		storeMax(&fe.max, n)
	}
	fe.total.Add(1)
	return s
}

// finish closes the connection and undoes what newSession counted.
func (s *session) finish() {
	p, fe := s.p, s.fe
	p.conns.Delete(s)
	p.actconn.Add(-1)
	fe.cur.Add(-1)
	if s.c != nil {
		s.c.Close()
	} else if s.fd >= 0 {
		closeRaw(s.fd) // owned by an event loop
	}
	if s.st != nil {
		putState(s.st)
		s.st = nil
	}
	p.releaseSlots(fe)
	p.wg.Done()
}

// serveConn serves a connection on its own goroutine until it closes.
func (p *Proxy) serveConn(fe *frontend, c *net.TCPConn) {
	if s := p.newSession(fe, c); s != nil {
		s.serve()
	}
}

func (s *session) serve() {
	defer s.finish()
	for {
		if !s.readHead() {
			return
		}
		if !s.handle() || s.p.closing.Load() {
			return
		}
		if st := s.st; st.r == st.w {
			putState(st)
			s.st = nil
		}
	}
}

// readHead waits for and parses the next request head. It answers framing
// errors itself and returns false when the connection must close.
func (s *session) readHead() bool {
	fe := s.fe
	if s.st == nil {
		t := fe.timeoutKeepAlive
		if s.nreq == 0 {
			t = fe.timeoutHTTPRequest
		}
		s.c.SetReadDeadline(time.Now().Add(t))
		s.idle.Store(true)
		if s.p.closing.Load() {
			return false
		}
		buf, n, err := s.io.ReadIdle()
		s.idle.Store(false)
		if err != nil || n == 0 {
			return false // idle timeout, client closed, or stopping: close silently
		}
		st := getState()
		st.buf, st.r, st.w = buf, 0, n
		s.st = st
	}
	st := s.st
	start := time.Now()
	if s.nreq > 0 { // the first request keeps the accept time (newSession)
		s.arrived = start
	}
	st.req.Src, st.req.SrcPort, st.req.DstPort = s.src.Addr(), s.src.Port(), s.dst
	s.c.SetReadDeadline(start.Add(fe.timeoutHTTPRequest))
	for {
		err := h1.ParseRequest(st.buf[st.r:st.w], &st.req)
		if err == nil {
			return true
		}
		var he *h1.Error
		if errors.As(err, &he) {
			s.fail(he.Status, start, termPR, nil)
			return false
		}
		// Incomplete: make room and read more.
		var ok bool
		if st.buf, st.r, st.w, ok = makeRoom(st.buf, st.r, st.w); !ok {
			s.fail(431, start, termPR, nil)
			return false
		}
		n, err := s.io.Read(st.buf[st.w:])
		st.w += n
		if err != nil && n == 0 {
			if errors.Is(err, os.ErrDeadlineExceeded) && !s.p.closing.Load() {
				s.fail(408, start, termcR, nil)
			}
			return false
		}
	}
}

// timings of one request, for the access log.
type timings struct {
	start    time.Time // first byte of the request
	head     time.Time // request head parsed
	queued   time.Duration
	connect  time.Duration
	response time.Duration // request sent -> response head
	total    time.Duration
	retries  int
}

// termination state codes (HAProxy's first two characters).
const (
	termOK = "--"
	termPR = "PR" // proxy refused: bad request
	termcR = "cR" // client timeout while sending the request
	termCR = "CR" // client aborted during the request
	termCD = "CD" // client aborted during data
	termcD = "cD" // client timeout during data
	termSC = "SC" // server refused / connect failed
	termsC = "sC" // connect timeout
	termSH = "SH" // server aborted before headers / bad response
	termsH = "sH" // server timeout waiting for headers
	termSD = "SD" // server aborted during data
	termsD = "sD" // server timeout during data
	termSQ = "sQ" // queue timeout
	termCQ = "CQ" // client aborted while queued
)

// fail answers an error generated by sluice itself and logs it.
func (s *session) fail(status int, start time.Time, term string, be *backend) {
	msg := errorPage(status)
	if s.c == nil {
		s.writeDirect(msg)
	} else {
		s.c.SetWriteDeadline(time.Now().Add(s.fe.timeoutClient))
		s.io.Write(msg)
	}
	if s.st != nil && s.st.req.Method != nil {
		s.keepLine()
	} else if s.st != nil {
		s.st.line = append(s.st.line[:0], "<BADREQ>"...)
	}
	s.logRequest(be, nil, status, int64(len(msg)), term, timings{start: start, total: time.Since(start)})
}

// keepLine copies the request line for the log before the head's buffer is
// reused.
func (s *session) keepLine() {
	st := s.st
	if st.req.Method == nil {
		return
	}
	st.line = append(st.line[:0], st.req.Method...)
	st.line = append(st.line, ' ')
	st.line = append(st.line, st.req.Target...)
	st.line = append(st.line, ' ')
	st.line = append(st.line, st.req.Proto()...)
}

// handle routes and forwards one parsed request. It returns whether the
// client connection may carry another request.
func (s *session) handle() bool {
	st := s.st
	req := &st.req
	s.nreq++
	s.reqStart = st.r
	if !s.follow() {
		req.Close = true // its frontend is gone after a reload: last request
	}
	tm := timings{start: s.arrived, head: time.Now()}
	if tm.start.IsZero() {
		tm.start = tm.head
	}
	if s.p.access != nil && s.fe.httplog {
		s.keepLine()
	}
	if req.Chunked {
		// Validate the chunked framing already received before anything is
		// sent: a malformed body must not even open a server connection.
		var ck h1.Chunked
		if _, err := ck.Scan(st.buf[st.r+req.HeadLen : st.w]); err != nil {
			s.fail(400, tm.start, termPR, nil)
			return false
		}
	}
	ws, status := wsCheck(req)
	if status != 0 {
		s.fail(status, tm.start, termPR, nil)
		return false
	}
	s.ws = ws
	if rule := s.fe.matchRule(req); rule != nil {
		return s.applyRule(rule, &tm)
	}
	if s.fe.isStats(req) {
		csv := bytes.Contains(req.Target, []byte(";csv"))
		refresh := s.fe.cfg.Stats.Refresh
		return s.respondLocal(func() ([]byte, string, error) {
			if s.p.StatsPage == nil {
				return nil, "", errors.New("no stats page renderer")
			}
			return s.p.StatsPage(csv, refresh)
		}, &tm)
	}
	bi := s.fe.router.Route(req)
	if bi < 0 {
		s.fail(503, tm.start, termSC, nil)
		return false
	}
	be := s.fe.backends[bi]
	be.cur.Add(1)
	be.total.Add(1)
	defer be.cur.Add(-1)
	keep := s.forward(be, &tm)
	if s.pre != nil { // not used after all
		s.preBe.q.Release(s.pre)
		s.pre, s.preBe = nil, nil
	}
	return keep
}

// isStats reports whether req asks for the frontend's stats page.
func (fe *frontend) isStats(req *h1.Request) bool {
	return fe.statsURI != nil && bytes.HasPrefix(req.Target, fe.statsURI)
}

// matchRule returns the first http-request rule whose condition matches.
func (fe *frontend) matchRule(req *h1.Request) *httpRule {
	for i := range fe.rules {
		if r := &fe.rules[i]; r.cond == nil || r.cond.Match(req) {
			return r
		}
	}
	return nil
}

// applyRule answers a request an http-request rule takes: deny, or the
// Prometheus exporter.
func (s *session) applyRule(rule *httpRule, tm *timings) bool {
	if rule.deny {
		s.fail(rule.status, tm.start, termPR, nil)
		return false
	}
	return s.respondLocal(s.p.Metrics, tm)
}

// respondLocal answers a request with content sluice produces itself (the
// Prometheus exporter, the stats page): 200, or 503 when render is missing
// or fails.
func (s *session) respondLocal(render func() ([]byte, string, error), tm *timings) bool {
	st := s.st
	req := &st.req
	var body []byte
	ctype := "text/plain"
	err := errors.New("nothing to render")
	if render != nil {
		body, ctype, err = render()
	}
	if err != nil {
		s.p.log.Error("local service", "path", string(req.Path), "err", err)
		s.fail(503, tm.start, termPR, nil)
		return false
	}
	st.r += req.HeadLen
	// A body is not read: then the connection cannot carry another request.
	closeClient := req.Close || req.HasBody() || s.p.closing.Load()
	st.out = append(st.out[:0], "HTTP/1.1 200 OK\r\nContent-Type: "...)
	st.out = append(st.out, ctype...)
	st.out = append(st.out, "\r\nCache-Control: no-cache\r\nContent-Length: "...)
	st.out = itoa(st.out, int64(len(body)))
	if closeClient {
		st.out = append(st.out, "\r\nConnection: close"...)
	}
	st.out = append(st.out, "\r\n\r\n"...)
	if !req.IsHead() {
		st.out = append(st.out, body...)
	}
	s.c.SetWriteDeadline(time.Now().Add(s.fe.timeoutClient))
	n, werr := s.io.Write(st.out)
	tm.total = time.Since(tm.start)
	s.logRequest(nil, nil, 200, int64(n), termOK, *tm)
	return werr == nil && !closeClient
}

// shrink moves the buffered request to a buffer of just its size (back=false)
// while it waits in a queue, or back to a pooled one (back=true). The head is
// parsed again: its fields point into the buffer.
func (s *session) shrink(back bool) {
	st := s.st
	if back == (cap(st.buf) >= bufSize) || st.w-st.r > bufSize {
		return
	}
	var nb []byte
	if back {
		nb = getBuf()
	} else {
		nb = make([]byte, st.w-st.r)
	}
	n := copy(nb, st.buf[st.r:st.w])
	if !back {
		putBuf(st.buf)
	}
	st.buf, st.r, st.w = nb, 0, n
	s.reqStart = 0
	h1.ParseRequest(st.buf[:st.w], &st.req) // parsed before: cannot fail
}

// hashKey computes the key for hashing balance algorithms.
func (s *session) hashKey(be *backend) uint64 {
	req := &s.st.req
	switch be.hash {
	case hashSource:
		a := req.Src.As16()
		return hashBytes(a[:])
	case hashURI:
		return hashBytes(req.Path)
	case hashURIWhole:
		return hashBytes(req.Target)
	case hashURLParam:
		if v, ok := queryParam(req.Query, be.hashArg); ok {
			return hashBytes(v)
		}
	case hashHdr:
		for i := range req.Headers {
			if h1.EqualFold(req.Headers[i].Name, be.hashArg) {
				return hashBytes(req.Headers[i].Value)
			}
		}
	}
	return 0
}

func queryParam(q []byte, name string) ([]byte, bool) {
	for len(q) > 0 {
		var kv []byte
		i := 0
		for i < len(q) && q[i] != '&' {
			i++
		}
		kv, q = q[:i], q[min(i+1, len(q)):]
		if len(kv) > len(name) && string(kv[:len(name)]) == name && kv[len(name)] == '=' {
			return kv[len(name)+1:], true
		}
	}
	return nil, false
}

// outcome of one attempt to forward a request.
type outcome struct {
	status     int   // response status relayed, or to generate when gen is set
	gen        bool  // nothing reached the client: sluice answers status itself
	bytes      int64 // sent to the client
	term       string
	keep       bool // client connection reusable
	notSent    bool // the request never fully reached the server: always retryable
	retry      bool // the server failed before any response byte: retryable if the request is safe
	reusedConn bool
}

func (s *session) forward(be *backend, tm *timings) bool {
	st := s.st
	req := &st.req
	var key uint64
	if be.hash != hashNone {
		key = s.hashKey(be)
	}
	var exclude *queue.Server
	replayed := false
	for attempt := 0; ; attempt++ {
		qstart := time.Now()
		qs, err := s.pre, error(nil)
		if qs != nil && s.preBe == be {
			s.pre, s.preBe = nil, nil // picked by the event loop already
		} else if qs = be.q.TryAcquire(key); qs == nil || exclude != nil {
			if qs != nil {
				be.q.Release(qs)
			}
			// The request may wait in a queue: watch for the client
			// leaving meanwhile, and hold no more memory than it needs.
			s.shrink(false)
			ctx, stop := s.watchClient()
			qs, err = be.q.AcquireAt(ctx, key, exclude, tm.start)
			s.shrink(true)
			if gone := stop(); gone {
				if qs != nil {
					be.q.Release(qs)
				}
				tm.queued += time.Since(qstart)
				tm.total = time.Since(tm.start)
				s.logRequest(be, nil, -1, 0, termCQ, *tm)
				return false
			}
		}
		tm.queued += time.Since(qstart)
		if err != nil {
			term := termSC
			if errors.Is(err, queue.ErrQueueTimeout) {
				term = termSQ
			}
			s.fail(503, tm.start, term, be)
			return false
		}
		srv := be.servers[qs.Index]
		o := s.attempt(be, srv, tm)
		be.q.Release(qs)
		// Retry what is safe: a request that never reached the server, or
		// an idempotent one without body that got no response byte (once
		// on a fresh connection; a reused one the server had closed may be
		// replayed as often as retries allow).
		retry := o.notSent || (o.retry && req.Idempotent() && !req.HasBody() && (o.reusedConn || !replayed))
		if retry && attempt < be.retries && !s.p.closing.Load() {
			if o.retry && !o.reusedConn {
				replayed = true
			}
			tm.retries++
			srv.q.Failures.Add(1)
			if be.redispatch && attempt == be.retries-1 && len(be.servers) > 1 {
				exclude = qs // the last retry goes elsewhere
			} else if o.term == termSC || o.term == termsC {
				// HAProxy's turn-around timer before reconnecting.
				time.Sleep(min(be.timeoutConnect, time.Second))
			}
			continue
		}
		if o.gen {
			s.fail(o.status, tm.start, o.term, be)
			return false
		}
		tm.total = time.Since(tm.start)
		s.logRequest(be, srv, o.status, o.bytes, o.term, *tm)
		return o.keep
	}
}

// attempt forwards the request to srv once.
func (s *session) attempt(be *backend, srv *server, tm *timings) outcome {
	req := &s.st.req
	now := time.Now()
	// http-reuse safe: the first request of a client connection goes on a
	// connection of its own unless a failure on a reused one can be
	// replayed (idempotent, no body).
	var uc *upConn
	if s.nreq > 1 || (req.Idempotent() && !req.HasBody()) {
		uc = srv.reuse(now)
	}
	if uc != nil {
		o := s.exchange(be, srv, uc, tm)
		o.reusedConn = true
		return o
	}
	cstart := time.Now()
	uc, err := srv.dial(ctxNone, be.timeoutConnect, s.src)
	tm.connect = time.Since(cstart)
	if err != nil {
		term := termSC
		if isTimeout(err) {
			term = termsC
		}
		srv.logConnectError(err)
		return outcome{status: 503, gen: true, term: term, notSent: true}
	}
	return s.exchange(be, srv, uc, tm)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// hop-by-hop header names (lower case) that are never forwarded.
func hopByHop(name []byte) bool {
	switch len(name) {
	case 2:
		return h1.EqualFold(name, "te")
	case 7:
		return h1.EqualFold(name, "upgrade")
	case 10:
		return h1.EqualFold(name, "connection") || h1.EqualFold(name, "keep-alive")
	case 14:
		return h1.EqualFold(name, "http2-settings")
	case 16:
		return h1.EqualFold(name, "proxy-connection")
	}
	return false
}

// namedByConnection reports whether a Connection header of hdrs names the
// header name (RFC 9110 7.6.1: such headers are hop-by-hop).
func namedByConnection(hdrs []h1.Header, name []byte) bool {
	found := false
	for i := range hdrs {
		h := &hdrs[i]
		if len(h.Name) != 10 || !h1.EqualFold(h.Name, "connection") {
			continue
		}
		h1.EachToken(h.Value, func(tok []byte) bool {
			if h1.EqualFoldBytes(tok, name) {
				found = true
				return false
			}
			return true
		})
	}
	return found
}

// hasConnectionOptions reports whether Connection headers name anything but
// close/keep-alive/upgrade, so the per-header check can be skipped mostly.
func hasConnectionOptions(hdrs []h1.Header) bool {
	other := false
	for i := range hdrs {
		h := &hdrs[i]
		if len(h.Name) == 10 && h1.EqualFold(h.Name, "connection") {
			h1.EachToken(h.Value, func(tok []byte) bool {
				if !h1.EqualFold(tok, "close") && !h1.EqualFold(tok, "keep-alive") && !h1.EqualFold(tok, "upgrade") {
					other = true
					return false
				}
				return true
			})
		}
	}
	return other
}

// appendHeaders appends the end-to-end headers of hdrs.
func appendHeaders(out []byte, hdrs []h1.Header) []byte {
	named := hasConnectionOptions(hdrs)
	for i := range hdrs {
		h := &hdrs[i]
		if hopByHop(h.Name) || (named && namedByConnection(hdrs, h.Name)) {
			continue
		}
		out = append(out, h.Line...)
	}
	return out
}

// requestHead builds the head sent to the server.
func (s *session) requestHead(be *backend, out []byte) []byte {
	req := &s.st.req
	out = append(out, req.Method...)
	out = append(out, ' ')
	out = append(out, req.Target...)
	out = append(out, ' ')
	out = append(out, req.Proto()...)
	out = append(out, "\r\n"...)
	out = appendHeaders(out, req.Headers)
	if (s.fe.forwardFor || be.forwardFor) && !(s.fe.xffExcept.IsValid() && s.fe.xffExcept.Contains(req.Src)) {
		name := be.xffHeader
		if s.fe.forwardFor {
			name = s.fe.xffHeader
		}
		out = append(out, name...)
		out = append(out, ": "...)
		out = req.Src.AppendTo(out)
		out = append(out, "\r\n"...)
	}
	if s.ws {
		out = append(out, "Connection: Upgrade\r\nUpgrade: websocket\r\n"...)
	} else if s.fe.serverClose || be.serverClose {
		out = append(out, "Connection: close\r\n"...)
	} else if req.Minor == 0 {
		// Keep the server connection reusable for an HTTP/1.0 client.
		out = append(out, "Connection: keep-alive\r\n"...)
	}
	return append(out, "\r\n"...)
}

// responseHead builds the head sent to the client.
func responseHead(out []byte, res *h1.Response, clientMinor int, closeClient, dechunk bool) []byte {
	if clientMinor == 0 {
		out = append(out, "HTTP/1.0"...)
		out = append(out, res.StatusLine[8:]...)
	} else {
		out = append(out, "HTTP/1.1"...)
		out = append(out, res.StatusLine[8:]...)
	}
	out = append(out, "\r\n"...)
	named := hasConnectionOptions(res.Headers)
	for i := range res.Headers {
		h := &res.Headers[i]
		if hopByHop(h.Name) || (named && namedByConnection(res.Headers, h.Name)) {
			continue
		}
		if dechunk && len(h.Name) == 17 && h1.EqualFold(h.Name, "transfer-encoding") {
			continue
		}
		// RFC 9112 6.3: with chunked framing, a Content-Length is wrong and
		// must not reach the client.
		if res.Chunked && len(h.Name) == 14 && h1.EqualFold(h.Name, "content-length") {
			continue
		}
		out = append(out, h.Line...)
	}
	if closeClient {
		out = append(out, "Connection: close\r\n"...)
	} else if clientMinor == 0 {
		out = append(out, "Connection: keep-alive\r\n"...)
	}
	return append(out, "\r\n"...)
}

// itoa appends n.
func itoa(b []byte, n int64) []byte { return strconv.AppendInt(b, n, 10) }

// hashBytes is FNV-1a: deterministic, so that a client or URI maps to the
// same server across restarts and reloads.
func hashBytes(b []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}

// storeMax raises a to v unless it is already higher.
func storeMax(a *atomic.Int64, v int64) {
	for old := a.Load(); v > old && !a.CompareAndSwap(old, v); old = a.Load() {
	}
}

package proxy

import (
	"bufio"
	"io"
	"sync"
	"time"
)

// accessLog writes access log lines through a buffer flushed at least every
// flushEvery, so logging costs no system call per request.
type accessLog struct {
	mu   sync.Mutex
	w    *bufio.Writer
	stop chan struct{}
	done chan struct{}
}

const flushEvery = 100 * time.Millisecond

func newAccessLog(w io.Writer) *accessLog {
	l := &accessLog{w: bufio.NewWriterSize(w, 64<<10), stop: make(chan struct{}), done: make(chan struct{})}
	go l.flusher()
	return l
}

func (l *accessLog) flusher() {
	defer close(l.done)
	t := time.NewTicker(flushEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			l.mu.Lock()
			l.w.Flush()
			l.mu.Unlock()
		case <-l.stop:
			return
		}
	}
}

func (l *accessLog) write(line []byte) {
	l.mu.Lock()
	l.w.Write(line)
	l.mu.Unlock()
}

// Close flushes and stops the flusher.
func (l *accessLog) Close() {
	close(l.stop)
	<-l.done
	l.mu.Lock()
	l.w.Flush()
	l.mu.Unlock()
}

// logRequest writes one line in HAProxy's `option httplog` format:
//
//	client:port [date] frontend backend/server TR/Tw/Tc/Tr/Ta status bytes - - term actconn/feconn/beconn/srvconn/retries srvqueue/backendqueue "request line"
func (s *session) logRequest(be *backend, srv *server, status int, bytes int64, term string, tm timings) {
	l := s.p.access
	if l == nil || !s.fe.httplog {
		return
	}
	st := s.st
	b := st.log[:0]
	b = s.appendHead(b, tm.start, be, srv)
	ms := func(d time.Duration, reached bool) {
		if !reached {
			b = append(b, "-1"...)
			return
		}
		b = itoa(b, d.Milliseconds())
	}
	ms(tm.head.Sub(tm.start), !tm.head.IsZero())
	b = append(b, '/')
	ms(tm.queued, srv != nil)
	b = append(b, '/')
	ms(tm.connect, srv != nil)
	b = append(b, '/')
	ms(tm.response, srv != nil && status > 0)
	b = append(b, '/')
	ms(tm.total, true)
	b = append(b, ' ')
	b = itoa(b, int64(status))
	b = append(b, ' ')
	b = itoa(b, bytes)
	b = append(b, " - - "...)
	b = append(b, term...)
	b = append(b, "-- "...)
	b = s.appendCounts(b, be, srv, tm.retries)
	b = append(b, " \""...)
	b = append(b, st.line...)
	b = append(b, "\"\n"...)
	st.log = b
	l.write(b)
}

// appendHead appends the start of a log line, common to httplog and tcplog:
// client:port [date] frontend backend/server, and a space.
func (s *session) appendHead(b []byte, start time.Time, be *backend, srv *server) []byte {
	b = s.src.Addr().AppendTo(b)
	b = append(b, ':')
	b = itoa(b, int64(s.src.Port()))
	b = append(b, " ["...)
	b = start.AppendFormat(b, "02/Jan/2006:15:04:05.000")
	b = append(b, "] "...)
	b = append(b, s.fe.name...)
	b = append(b, ' ')
	if be != nil {
		b = append(b, be.name...)
	} else {
		b = append(b, s.fe.name...)
	}
	b = append(b, '/')
	if srv != nil {
		b = append(b, srv.q.Name...)
	} else {
		b = append(b, "<NOSRV>"...)
	}
	return append(b, ' ')
}

// appendCounts appends actconn/feconn/beconn/srvconn/retries
// srvqueue/backendqueue.
func (s *session) appendCounts(b []byte, be *backend, srv *server, retries int) []byte {
	num := func(ok bool, v func() int64) {
		if ok {
			b = itoa(b, v())
		} else {
			b = append(b, '0')
		}
	}
	b = itoa(b, s.p.actconn.Load())
	b = append(b, '/')
	b = itoa(b, s.fe.cur.Load())
	b = append(b, '/')
	num(be != nil, func() int64 { return be.cur.Load() })
	b = append(b, '/')
	num(srv != nil, func() int64 { return srv.q.Cur.Load() })
	b = append(b, '/')
	b = itoa(b, int64(retries))
	b = append(b, ' ')
	num(srv != nil, func() int64 { return srv.q.QueueCur.Load() })
	b = append(b, '/')
	num(be != nil, func() int64 { return be.q.QueueCur.Load() })
	return b
}

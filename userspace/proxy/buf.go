package proxy

import (
	"sync"

	"github.com/sluicelb/sluice/userspace/proxy/h1"
)

// bufSize is the size of pooled I/O buffers. A request head larger than this
// (up to h1.MaxHeaderBytes) gets a one-off larger buffer.
const bufSize = 16 << 10

var bufPool = sync.Pool{New: func() any { return new([bufSize]byte) }}

// getBuf returns a pooled buffer of bufSize bytes.
func getBuf() []byte { return bufPool.Get().(*[bufSize]byte)[:] }

// putBuf returns a buffer obtained from getBuf; other buffers are dropped.
func putBuf(b []byte) {
	if cap(b) == bufSize {
		bufPool.Put((*[bufSize]byte)(b[:bufSize:bufSize]))
	}
}

// state is what a client connection needs while a request is in progress.
// It goes back to a pool while the connection is idle, so that idle
// keep-alive connections cost little more than their goroutine.
type state struct {
	buf  []byte // client read buffer; buf[r:w] is unread
	r, w int
	req  h1.Request
	out  []byte // head being written (to the server, then to the client)
	line []byte // request line kept for the log after the head is gone
	log  []byte // access log line being formatted
}

var statePool = sync.Pool{New: func() any {
	return &state{
		req: h1.Request{Headers: make([]h1.Header, 0, 32)},
		out: make([]byte, 0, 4096),
	}
}}

func getState() *state { return statePool.Get().(*state) }

func putState(st *state) {
	if st.buf != nil {
		putBuf(st.buf)
		st.buf = nil
	}
	st.r, st.w = 0, 0
	// Drop references into the buffer.
	clear(st.req.Headers[:cap(st.req.Headers)])
	st.req = h1.Request{Headers: st.req.Headers[:0]}
	if cap(st.out) > 64<<10 {
		st.out = make([]byte, 0, 4096)
	}
	statePool.Put(st)
}

// makeRoom frees space at the end of buf, whose unread bytes buf[r:w] begin
// a message head: it moves them to the front or, when they fill the buffer,
// to a buffer large enough for the largest head allowed. It returns false
// when the head is already larger than that.
func makeRoom(buf []byte, r, w int) ([]byte, int, int, bool) {
	if w < len(buf) {
		return buf, r, w, true
	}
	if r > 0 {
		return buf, 0, copy(buf, buf[r:w]), true
	}
	if len(buf) > h1.MaxHeaderBytes {
		return buf, r, w, false
	}
	nb := make([]byte, h1.MaxHeaderBytes+bufSize)
	copy(nb, buf[:w])
	putBuf(buf)
	return nb, 0, w, true
}

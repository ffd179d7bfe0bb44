//go:build unix

package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"
	"unsafe"
)

func listen(network, addr string) (net.Listener, error) {
	if network == "" {
		network = "tcp"
	}
	lc := net.ListenConfig{}
	return lc.Listen(context.Background(), network, addr)
}

// sock does the data path's reads and writes on a TCP connection with raw,
// non-blocking system calls through the connection's RawConn, so they keep
// Go's netpoller and deadlines but skip the runtime's syscall bookkeeping.
// A non-blocking socket call never blocks, so it need not release its P;
// with the bookkeeping, a loopback write that takes more than the 20 µs
// sysmon tick made the runtime hand the P to another thread on every
// request, and the extra runnable threads fought the load generator and the
// backend for the CPUs (a fat p99 tail). The closures are made once per
// connection so that no call allocates.
type sock struct {
	c  *net.TCPConn
	rc syscall.RawConn

	rp      []byte
	rn      int
	rerr    error
	idle    bool // readFn takes its buffer from the pool
	readFn  func(fd uintptr) bool
	wp      []byte
	wn      int
	werr    error
	writeFn func(fd uintptr) bool
}

func newSock(c *net.TCPConn) (*sock, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	s := &sock{c: c, rc: rc}
	s.readFn = s.doRead
	s.writeFn = s.doWrite
	return s, nil
}

func (s *sock) doRead(fd uintptr) bool {
	if s.idle && s.rp == nil {
		s.rp = getBuf()
	}
	for {
		r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&s.rp[0])), uintptr(len(s.rp)))
		switch e {
		case 0:
			s.rn, s.rerr = int(r), nil
			if r == 0 {
				s.rerr = io.EOF
			}
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			if s.idle {
				putBuf(s.rp)
				s.rp = nil
			}
			return false
		default:
			s.rn, s.rerr = 0, e
			return true
		}
	}
}

func (s *sock) doWrite(fd uintptr) bool {
	for s.wn < len(s.wp) {
		p := s.wp[s.wn:]
		r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		switch e {
		case 0:
			s.wn += int(r)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			s.werr = e
			return true
		}
	}
	return true
}

// Read reads into p (len(p) > 0) like net.Conn.Read, honouring deadlines.
func (s *sock) Read(p []byte) (int, error) {
	s.rp, s.idle = p, false
	err := s.rc.Read(s.readFn)
	n := s.rn
	if err == nil {
		err = s.rerr
	}
	s.rp, s.rn, s.rerr = nil, 0, nil
	if err != nil {
		return n, wrapOp("read", err)
	}
	return n, nil
}

// Write writes all of p like net.Conn.Write, honouring deadlines.
func (s *sock) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.wp, s.wn, s.werr = p, 0, nil
	err := s.rc.Write(s.writeFn)
	n := s.wn
	if err == nil {
		err = s.werr
	}
	s.wp, s.wn, s.werr = nil, 0, nil
	if err != nil {
		return n, wrapOp("write", err)
	}
	return n, nil
}

// ReadIdle reads into a buffer taken from the pool only once data is there,
// so that an idle keep-alive connection holds no buffer while it waits. It
// returns the buffer and the number of bytes read; on error or EOF the
// buffer is nil.
func (s *sock) ReadIdle() ([]byte, int, error) {
	s.rp, s.idle = nil, true
	err := s.rc.Read(s.readFn)
	buf, n := s.rp, s.rn
	if err == nil {
		err = s.rerr
	}
	s.rp, s.rn, s.rerr, s.idle = nil, 0, nil, false
	if err != nil || n <= 0 {
		if buf != nil {
			putBuf(buf)
		}
		if err == nil {
			err = io.EOF
		}
		return nil, 0, err
	}
	return buf, n, nil
}

// wrapOp keeps errors comparable the way callers test them: io.EOF as is,
// deadlines as os.ErrDeadlineExceeded (a net.Error with Timeout()).
func wrapOp(op string, err error) error {
	if err == io.EOF {
		return err
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return &net.OpError{Op: op, Net: "tcp", Err: err}
	}
	return err
}

// alive reports whether an idle connection has neither data nor a FIN/RST
// pending: a server that closed an idle keep-alive connection must not get
// the next request.
func (s *sock) alive() bool {
	ok := false
	var b [1]byte
	s.rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		ok = n < 0 && errors.Is(err, syscall.EAGAIN)
		return true
	})
	return ok
}

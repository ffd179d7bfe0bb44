//go:build unix

package proxy

import (
	"context"
	"errors"
	"net"
	"syscall"
)

func listen(network, addr string) (net.Listener, error) {
	if network == "" {
		network = "tcp"
	}
	lc := net.ListenConfig{}
	return lc.Listen(context.Background(), network, addr)
}

// alive reports whether an idle connection has neither data nor a FIN/RST
// pending: a server that closed an idle keep-alive connection must not get
// the next request.
func alive(c *net.TCPConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	var b [1]byte
	rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		ok = n < 0 && errors.Is(err, syscall.EAGAIN)
		return true
	})
	return ok
}

// readIdle reads from c into a buffer taken from the pool only once data is
// there, so that an idle keep-alive connection holds no buffer while it
// waits. It honours c's read deadline. It returns the buffer (nil on error)
// and the number of bytes read; n == 0 with a nil error means EOF.
func readIdle(c *net.TCPConn) (buf []byte, n int, err error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, 0, err
	}
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		buf = getBuf()
		n, rerr = syscall.Read(int(fd), buf)
		for rerr == syscall.EINTR {
			n, rerr = syscall.Read(int(fd), buf)
		}
		if rerr == syscall.EAGAIN {
			putBuf(buf)
			buf = nil
			return false
		}
		return true
	})
	if err == nil {
		err = rerr
	}
	if err != nil || n <= 0 {
		if buf != nil {
			putBuf(buf)
		}
		if n < 0 {
			n = 0
		}
		return nil, 0, err
	}
	return buf, n, nil
}

package tunnel

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// waiter waits for a socket to become readable without reading from it.
type waiter struct {
	peek [1]byte
}

// sioCINQ (FIONREAD on sockets) returns the bytes in a socket's receive
// queue.
const sioCINQ = 0x541B

// wait blocks (honouring the read deadline) until src has bytes queued, has
// reached EOF, or failed. avail is how many bytes can be moved now.
func (w *waiter) wait(rc syscall.RawConn) (avail int, eof bool, err error) {
	var sockErr error
	rerr := rc.Read(func(fd uintptr) bool {
		if n, e := unix.IoctlGetInt(int(fd), sioCINQ); e == nil && n > 0 {
			avail = n
			return true
		}
		n, _, e := unix.Recvfrom(int(fd), w.peek[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch {
		case e == unix.EAGAIN || e == unix.EINTR:
			return false // wait for the next readiness event
		case e != nil:
			sockErr = e
		case n == 0:
			eof = true
		default:
			avail = 1 // arrived between the two calls
			if m, e := unix.IoctlGetInt(int(fd), sioCINQ); e == nil && m > 0 {
				avail = m
			}
		}
		return true
	})
	if rerr != nil {
		return 0, false, rerr
	}
	return avail, eof, sockErr
}

// queued reports whether c has received bytes not read yet.
func queued(c interface {
	SyscallConn() (syscall.RawConn, error)
}) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	n := 0
	rc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), sioCINQ) })
	return n > 0
}

//go:build !linux

package tunnel

import "syscall"

// waiter on other systems does not wait: pump reads with a buffer.
type waiter struct{}

func (w *waiter) wait(rc syscall.RawConn) (avail int, eof bool, err error) { return 0, false, nil }

func queued(c interface {
	SyscallConn() (syscall.RawConn, error)
}) bool {
	return false
}

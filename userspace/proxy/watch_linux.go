//go:build linux

package proxy

import (
	"context"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// watchClient watches the client connection while its request waits in a
// queue: the returned context is cancelled as soon as the client closes or
// resets the connection, so the request leaves the queue at once and never
// reaches a server. It only polls for a hang-up (POLLRDHUP), never reads, so
// pipelined requests stay where they are. stop ends the watch and reports
// whether the client went away; the caller must call it before using the
// connection again.
func (s *session) watchClient() (ctx context.Context, stop func() bool) {
	ctx, cancel := context.WithCancel(context.Background())
	var gone atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.io.rc.Read(func(fd uintptr) bool {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
			n, err := unix.Poll(fds, 0)
			if err == nil && n > 0 && fds[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0 {
				gone.Store(true)
				cancel()
				return true
			}
			return false // nothing yet (or only pipelined data): wait for the next event
		})
	}()
	return ctx, func() bool {
		s.c.SetReadDeadline(time.Unix(1, 0)) // wakes the watcher
		<-done
		cancel()
		return gone.Load()
	}
}

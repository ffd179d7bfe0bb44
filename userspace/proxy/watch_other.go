//go:build !linux

package proxy

import "context"

// watchClient: without POLLRDHUP, a client that leaves while queued is
// noticed only when its request is dispatched.
func (s *session) watchClient() (context.Context, func() bool) {
	return context.Background(), func() bool { return false }
}

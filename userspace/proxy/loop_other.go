//go:build !linux

package proxy

import "sync/atomic"

// Event loops exist on Linux only; elsewhere every connection is served by
// its own goroutine.

type loopState struct {
	owned atomic.Bool
	fd    int
}

type loop struct{}

func defaultLoops() int               { return 0 }
func (p *Proxy) startLoops(int) error { return nil }
func (p *Proxy) stopLoops()           {}
func (p *Proxy) abortLoops()          {}
func (p *Proxy) wakeLoops()           {}
func (p *Proxy) pickLoop() *loop      { return nil }
func (lp *loop) adopt(s *session)     {}

func closeRaw(fd int) {}

func (s *session) writeDirect(p []byte) (int, error) { return 0, nil }

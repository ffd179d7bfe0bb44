package tunnel

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"time"
)

// Splicer hands a tunnel's two sockets to the kernel, which then moves the
// bytes itself (pkg/kernel's sockhash splice, adapted by the caller). On
// success the Spliced owns the sockets. An error wrapping ErrNotSpliced
// leaves them intact: the tunnel copies in userspace instead; any other
// error leaves them in an unknown state and the tunnel closes them.
type Splicer interface {
	Splice(client, server *net.TCPConn) (Spliced, error)
}

// Spliced is a tunnel the kernel carries.
type Spliced interface {
	// Stats returns the bytes moved each way and the last activity, as
	// the kernel counts them.
	Stats() (up, down int64, last time.Time)
	// Wait runs the tunnel until it ends (both FINs, a reset, the idle or
	// fin timeouts on the kernel's clock, or ctx cancelled) and closes the
	// sockets. term is one of the Term* states.
	Wait(ctx context.Context, idle, clientFin, serverFin time.Duration) (up, down int64, term string)
}

// ErrNotSpliced says a tunnel was not handed to the kernel and its
// sockets are intact.
var ErrNotSpliced = errors.New("not spliced")

// runSpliced tries to hand the tunnel to the kernel. It returns false when
// the tunnel must be copied in userspace (the pending bytes have then been
// written already).
func (t *Tunnel) runSpliced(sp Splicer, toServer, toClient []byte) (Result, bool) {
	// What userspace already read goes out first, with ordinary writes;
	// then the kernel carries what follows, in order.
	for _, w := range []struct {
		dst  *net.TCPConn
		b    []byte
		cnt  *atomic.Int64
		term string
	}{{t.server, toServer, &t.up, TermServer}, {t.client, toClient, &t.down, TermClient}} {
		if len(w.b) == 0 {
			continue
		}
		w.dst.SetWriteDeadline(time.Now().Add(t.to.Idle))
		n, err := w.dst.Write(w.b)
		w.cnt.Add(int64(n))
		if err != nil {
			t.end(w.term, true)
			return t.result(), true
		}
		w.dst.SetWriteDeadline(time.Time{})
	}
	s, err := sp.Splice(t.client, t.server)
	if err != nil {
		if errors.Is(err, ErrNotSpliced) {
			return Result{}, false
		}
		t.end(TermServer, true)
		return t.result(), true
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.mu.Lock()
	// From now on the kernel counts; what userspace wrote comes first.
	t.spliced, t.cancel = s, cancel
	t.pendUp, t.pendDown = t.up.Load(), t.down.Load()
	killed := t.done
	t.mu.Unlock()
	if killed {
		cancel()
	}
	up, down, term := s.Wait(ctx, t.to.Idle, t.to.ClientFin, t.to.ServerFin)
	cancel()
	t.mu.Lock()
	if !t.done {
		t.done, t.term = true, term
	}
	t.up.Store(t.pendUp + up)
	t.down.Store(t.pendDown + down)
	t.counted = true
	t.mu.Unlock()
	return t.result(), true
}

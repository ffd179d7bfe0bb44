// Package tunnel carries the byte streams sluice does not interpret: a
// WebSocket connection after its 101 response, and every mode tcp
// connection. A tunnel joins a client connection to a server connection;
// bytes flow both ways until both sides have closed, one side resets, the
// tunnel has been idle for its timeout, or it is killed (shutdown, the
// runtime API).
//
// The copy path holds no userspace buffer while a tunnel is idle: each
// direction waits for its source to become readable without reading, asks
// the kernel how many bytes are queued, and moves exactly those with
// TCPConn.ReadFrom, which on Linux is splice(2) through a pipe: the bytes
// never enter the process. Waking once per burst keeps the activity clock
// exact, which `timeout tunnel` needs.
//
// Every live tunnel is in a Registry, so that shutdown, reloads, the runtime
// API and metrics can see and close them.
package tunnel

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Kind is what a tunnel carries.
type Kind uint8

const (
	WebSocket Kind = iota // after a 101 Switching Protocols
	TCP                   // a mode tcp connection
)

func (k Kind) String() string {
	if k == WebSocket {
		return "websocket"
	}
	return "tcp"
}

// Info says where a tunnel goes, for the registry and the log.
type Info struct {
	Kind     Kind
	Frontend string
	Backend  string
	Server   string
	Client   netip.AddrPort
	// KernelSplice asks for the kernel to carry the bytes (when the
	// registry has a Splicer); else, or when it declines, userspace copies.
	KernelSplice bool
}

// Timeouts bound a tunnel's inactivity.
type Timeouts struct {
	// Idle is the inactivity timeout (`timeout tunnel`): a byte in either
	// direction resets it.
	Idle time.Duration
	// ClientFin bounds the inactivity on the client side once the server
	// side has closed (`timeout client-fin`); ServerFin the reverse
	// (`timeout server-fin`). Zero keeps Idle.
	ClientFin, ServerFin time.Duration
}

// HAProxy termination states (the first two characters of the log's
// termination field) a tunnel ends with.
const (
	TermOK       = "--" // both sides closed
	TermClientTO = "cD" // idle (the client side expired)
	TermServerTO = "sD"
	TermClient   = "CD" // the client reset or failed
	TermServer   = "SD" // the server reset or failed
	TermKilled   = "KD" // killed: shutdown sessions, hard stop
)

// Result is how a tunnel ended.
type Result struct {
	Up, Down int64 // bytes client->server, server->client (including what was pending at the start)
	Duration time.Duration
	Term     string
}

// Tunnel is one live tunnel.
type Tunnel struct {
	Info
	Start time.Time

	reg            *Registry
	client, server *net.TCPConn
	to             Timeouts

	up, down atomic.Int64
	last     atomic.Int64 // activity: nanoseconds since Start (monotonic)

	clientEOF, serverEOF atomic.Bool // half-closes seen and passed on

	mu   sync.Mutex
	term string // set by whoever ends the tunnel first
	done bool
	// When the kernel carries the tunnel: the pair, and how to stop it.
	spliced          Spliced
	cancel           context.CancelFunc
	pendUp, pendDown int64 // bytes written by userspace before the splice
	counted          bool  // the kernel's final counts are in up and down
}

// Snapshot is a live tunnel as the runtime API and metrics see it.
type Snapshot struct {
	Info
	Start        time.Time
	Up, Down     int64
	LastActivity time.Time
	Spliced      bool // the kernel carries it
}

// Registry knows every live tunnel.
type Registry struct {
	// Splicer, when set, carries the tunnels that ask for it in the
	// kernel. Set before the first tunnel.
	Splicer Splicer

	mu   sync.Mutex
	live map[*Tunnel]struct{}

	spliced atomic.Int64 // tunnels the kernel carried

	total         atomic.Int64 // tunnels opened
	upTotal       atomic.Int64 // bytes of ended tunnels
	downTotal     atomic.Int64
	idleTimeouts  atomic.Int64
	killedTunnels atomic.Int64
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{live: map[*Tunnel]struct{}{}}
}

// New registers a tunnel between two connected sockets. The tunnel owns
// them from now on: Run closes both.
func (r *Registry) New(info Info, client, server *net.TCPConn, to Timeouts) *Tunnel {
	t := &Tunnel{Info: info, Start: time.Now(), reg: r, client: client, server: server, to: to}
	r.mu.Lock()
	r.live[t] = struct{}{}
	r.mu.Unlock()
	r.total.Add(1)
	return t
}

// Len returns the number of live tunnels.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.live)
}

// Totals are a registry's counters.
type Totals struct {
	Live, Opened, IdleTimeouts, Killed int64
	Spliced                            int64 // tunnels the kernel carried
	Up, Down                           int64 // bytes, live tunnels included
	// The splicer's flow control (SplicerTotals), when it counts: slow
	// readers' senders stopped in the kernel, and excess bytes that went
	// through userspace instead.
	KernelStops, KernelOverflowBytes int64
}

// SplicerTotals is what a Splicer that counts its flow control reports.
type SplicerTotals interface {
	FlowTotals() (stops, overflowBytes int64)
}

// Totals returns the registry's counters.
func (r *Registry) Totals() Totals {
	t := Totals{Opened: r.total.Load(), IdleTimeouts: r.idleTimeouts.Load(), Killed: r.killedTunnels.Load(), Spliced: r.spliced.Load()}
	if st, ok := r.Splicer.(SplicerTotals); ok {
		t.KernelStops, t.KernelOverflowBytes = st.FlowTotals()
	}
	r.mu.Lock()
	t.Live = int64(len(r.live))
	for tn := range r.live {
		s := tn.Snapshot()
		t.Up += s.Up
		t.Down += s.Down
	}
	t.Up += r.upTotal.Load()
	t.Down += r.downTotal.Load()
	r.mu.Unlock()
	return t
}

// Snapshots returns the live tunnels.
func (r *Registry) Snapshots() []Snapshot {
	r.mu.Lock()
	out := make([]Snapshot, 0, len(r.live))
	for t := range r.live {
		out = append(out, t.Snapshot())
	}
	r.mu.Unlock()
	return out
}

// Select returns the live tunnels match selects (nil: all).
func (r *Registry) Select(match func(Info) bool) []*Tunnel {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*Tunnel
	for t := range r.live {
		if match == nil || match(t.Info) {
			out = append(out, t)
		}
	}
	return out
}

// Kill ends the live tunnels match selects (nil: all) and returns how many.
func (r *Registry) Kill(match func(Info) bool) int {
	n := 0
	for _, t := range r.Select(match) {
		if t.Kill() {
			n++
		}
	}
	return n
}

// Kill ends the tunnel now (both sides get a FIN). It reports whether the
// tunnel was still live.
func (t *Tunnel) Kill() bool {
	if !t.end(TermKilled, false) {
		return false
	}
	t.reg.killedTunnels.Add(1)
	return true
}

// Snapshot returns the tunnel's counters now (the kernel's, when it
// carries the tunnel).
func (t *Tunnel) Snapshot() Snapshot {
	t.mu.Lock()
	sp, pu, pd, counted := t.spliced, t.pendUp, t.pendDown, t.counted
	t.mu.Unlock()
	if sp != nil && !counted {
		up, down, last := sp.Stats()
		return Snapshot{Info: t.Info, Start: t.Start, Up: pu + up, Down: pd + down, LastActivity: last, Spliced: true}
	}
	return Snapshot{Info: t.Info, Start: t.Start, Up: t.up.Load(), Down: t.down.Load(),
		LastActivity: t.Start.Add(time.Duration(t.last.Load())), Spliced: sp != nil}
}

// Run moves bytes until the tunnel ends, then closes both connections and
// leaves the registry. toServer and toClient are bytes already read from
// one side (early frames behind a handshake) that go out first, in order.
func (t *Tunnel) Run(toServer, toClient []byte) Result {
	t.touch()
	if sp := t.reg.Splicer; sp != nil && t.KernelSplice {
		if res, ok := t.runSpliced(sp, toServer, toClient); ok {
			t.reg.spliced.Add(1)
			return t.finish(res)
		}
		toServer, toClient = nil, nil // written before the attempt
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		t.pump(t.server, t.client, false, toClient)
	}()
	t.pump(t.client, t.server, true, toServer)
	<-done
	t.end(TermOK, false) // both directions ended: close both (no-op if already ended)
	return t.finish(t.result())
}

// result is the tunnel's Result once it has ended.
func (t *Tunnel) result() Result {
	t.mu.Lock()
	term := t.term
	t.mu.Unlock()
	return Result{Up: t.up.Load(), Down: t.down.Load(), Duration: time.Since(t.Start), Term: term}
}

// finish takes an ended tunnel out of the registry.
func (t *Tunnel) finish(res Result) Result {
	// Leaving the live set and adding to the totals is one step under
	// the lock, so that byte counters never go backwards.
	r := t.reg
	r.mu.Lock()
	delete(r.live, t)
	r.upTotal.Add(res.Up)
	r.downTotal.Add(res.Down)
	r.mu.Unlock()
	if res.Term == TermClientTO || res.Term == TermServerTO {
		r.idleTimeouts.Add(1)
	}
	return res
}

func (t *Tunnel) touch() { t.last.Store(int64(time.Since(t.Start))) }

// timeout is the inactivity limit for reading from one side: the fin
// timeout of that side once the other has closed, else Idle.
func (t *Tunnel) timeout(fromClient bool) time.Duration {
	if fromClient && t.serverEOF.Load() && t.to.ClientFin > 0 {
		return t.to.ClientFin
	}
	if !fromClient && t.clientEOF.Load() && t.to.ServerFin > 0 {
		return t.to.ServerFin
	}
	return t.to.Idle
}

// deadline is when reading from one side gives up if nothing moves in
// either direction meanwhile.
func (t *Tunnel) deadline(fromClient bool) time.Time {
	return t.Start.Add(time.Duration(t.last.Load()) + t.timeout(fromClient))
}

// end closes the tunnel once, with the termination state term; reset sends
// an RST to both sides instead of a FIN (a reset is passed on as a reset).
// It returns whether this call ended it.
func (t *Tunnel) end(term string, reset bool) bool {
	t.mu.Lock()
	if t.done {
		t.mu.Unlock()
		return false
	}
	t.done, t.term = true, term
	cancel := t.cancel
	t.mu.Unlock()
	if cancel != nil {
		cancel() // the kernel carries it: Wait closes the sockets
		return true
	}
	if reset {
		t.client.SetLinger(0)
		t.server.SetLinger(0)
	}
	t.client.Close()
	t.server.Close()
	return true
}

// pump moves bytes from src to dst until src closes, an error, or the
// tunnel ends.
func (t *Tunnel) pump(src, dst *net.TCPConn, fromClient bool, pending []byte) {
	cnt, termIdle, termErr := &t.down, TermServerTO, TermServer
	if fromClient {
		cnt, termIdle, termErr = &t.up, TermClientTO, TermClient
	}
	// A write that cannot go out is the peer not reading: inactivity.
	dstIdle := TermClientTO
	if fromClient {
		dstIdle = TermServerTO
	}
	if len(pending) > 0 {
		dst.SetWriteDeadline(time.Now().Add(t.timeout(!fromClient)))
		n, err := dst.Write(pending)
		cnt.Add(int64(n))
		t.touch()
		if err != nil {
			t.fail(err, dstIdle, otherTerm(termErr))
			return
		}
	}
	rc, err := src.SyscallConn()
	if err != nil {
		t.end(termErr, true)
		return
	}
	var w waiter
	lr := io.LimitedReader{R: src}
	for {
		src.SetReadDeadline(t.deadline(fromClient))
		avail, eof, err := w.wait(rc)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if time.Now().Before(t.deadline(fromClient)) {
					continue // the other direction moved meanwhile
				}
				if queued(t.client) || queued(t.server) {
					// Bytes arrived on either side that the other
					// direction has not picked up yet: not idle.
					t.touch()
					continue
				}
				t.end(termIdle, false)
				return
			}
			t.fail(err, termIdle, termErr)
			return
		}
		if eof {
			t.halfClose(src, dst, fromClient)
			return
		}
		t.touch()
		// The bytes are there: the read must not hit the idle deadline
		// armed before they came; the write may wait for the peer as
		// long as it may be idle.
		now := time.Now()
		src.SetReadDeadline(now.Add(t.timeout(fromClient)))
		dst.SetWriteDeadline(now.Add(t.timeout(!fromClient)))
		var n int64
		if avail > 0 {
			lr.N = int64(avail)
			n, err = dst.ReadFrom(&lr)
		} else {
			n, eof, err = copyOnce(dst, src)
		}
		cnt.Add(n)
		if n > 0 {
			t.touch()
		}
		if err != nil {
			t.fail(err, dstIdle, termErr)
			return
		}
		if eof {
			t.halfClose(src, dst, fromClient)
			return
		}
	}
}

// fail ends the tunnel after an I/O error: a timeout is inactivity, a
// connection closed by end is not an error of its own, anything else (a
// reset, a broken pipe) is passed on as a reset.
func (t *Tunnel) fail(err error, termTimeout, termErr string) {
	switch {
	case errors.Is(err, net.ErrClosed):
		return // ended by the other direction or a kill
	case errors.Is(err, os.ErrDeadlineExceeded):
		t.end(termTimeout, false)
	default:
		t.end(termErr, true)
	}
}

func otherTerm(term string) string {
	if term == TermClient {
		return TermServer
	}
	return TermClient
}

// halfClose passes src's FIN on to dst and ends the tunnel once both
// directions have closed.
func (t *Tunnel) halfClose(src, dst *net.TCPConn, fromClient bool) {
	if err := dst.CloseWrite(); err != nil && !errors.Is(err, net.ErrClosed) {
		termDst := TermClient
		if fromClient {
			termDst = TermServer
		}
		t.end(termDst, true)
		return
	}
	var other *atomic.Bool
	if fromClient {
		t.clientEOF.Store(true)
		other = &t.serverEOF
	} else {
		t.serverEOF.Store(true)
		other = &t.clientEOF
	}
	if other.Load() {
		t.end(TermOK, false)
		return
	}
	// The remaining direction now runs on its fin timeout: wake it so it
	// takes the new deadline.
	dst.SetReadDeadline(t.deadline(!fromClient))
}

// copyOnce moves one read's worth of bytes where the kernel cannot say how
// many are queued.
func copyOnce(dst, src *net.TCPConn) (n int64, eof bool, err error) {
	buf := make([]byte, 16<<10)
	m, err := src.Read(buf)
	if m > 0 {
		w, werr := dst.Write(buf[:m])
		if werr != nil {
			return int64(w), false, werr
		}
	}
	if err == io.EOF {
		return int64(m), true, nil
	}
	return int64(m), false, err
}

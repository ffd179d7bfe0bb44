package kernel

import (
	"errors"
	"fmt"
	"time"
)

// Kernel splice (bpf/splice.c): after the proxy has decided a tunnel (a
// WebSocket after its 101, a mode tcp connection), the bytes of its two
// sockets move in the kernel. Each socket's sk_skb verdict program redirects
// every skb it receives to the egress of its peer and keeps per-socket
// counters (bytes, last activity on CLOCK_MONOTONIC), so the daemon still
// enforces `timeout tunnel` and reports traffic without reading a byte.
//
// Use:
//
//	s, err := kernel.OpenSplicer(logger, kernel.SplicerConfig{})  // once; ErrSpliceUnsupported: copy everything
//	...
//	// the tunnel goroutine has stopped reading both conns and has written out
//	// every byte it had read but not yet forwarded (ordinary writes)
//	p, err := s.Splice(client, server)
//	if errors.Is(err, kernel.ErrSpliceFallback) { copy in userspace; return }
//	if err != nil { close both; return }
//	res, err := p.Wait(ctx, timeoutTunnel, timeoutClientFin, timeoutServerFin)
//	// both conns are closed now; res has the byte counts and why it ended
//
// Hand-over protocol (why nothing is lost or reordered):
//  1. The caller stops reading a and b and writes out, with ordinary blocking
//     writes, whatever it had already read from one and not yet written to the
//     other. Those writes complete into the peers' send queues before Splice.
//  2. Splice records each socket's send-queue position, then inserts state,
//     redirect-target and verdict entries, in that order, for both sockets: a
//     socket starts redirecting only when its peer is already a target.
//  3. Bytes that arrived after the caller's last read are still in the
//     socket's receive queue, which the verdict program only sees on the next
//     sk_data_ready. Splice forces it with a non-blocking recv (MSG_PEEK):
//     under the socket lock, tcp_bpf_recvmsg_parser runs tcp_data_ready,
//     which hands the whole queue to the program in order. Data arriving at
//     the same time is serialised by the same lock, so the peer gets: the
//     caller's bytes (already in its send queue), then the queued bytes, then
//     newer ones.
//  4. Wait passes a FIN on only after everything received before it has
//     entered the peer's send queue (the program's counters == growth of the
//     peer's write sequence since step 2), and removes map entries only then:
//     removing a socket from its last map drops what the kernel still queued
//     for it.
//
// Each byte exactly once: the kernel (6.18's tcp_read_skb) hands the program
// whole skbs and ignores copied_seq, so a segment TCP queued although it
// starts before rcv_nxt (a retransmission overlapping bytes already received,
// common on loopback once receive memory runs short) would be forwarded with
// its old bytes again. The program follows the TCP sequence numbers from
// copied_seq at its first skb on and cuts repeats off (SpliceStats.Repeated);
// if it ever meets a hole, or a repeat it cannot cut, it drops everything
// from then on and Wait resets both sides (ErrSpliceBroken) rather than pass
// on a corrupt stream.
//
// Overflow episodes (see SplicerConfig.MaxQueue) keep the order the same way:
// Wait writes the bytes the program passed it only once everything the
// program redirected before them has entered the peer's send queue, and an
// episode ends as soon as Wait has caught up (the program may redirect again
// from then on), so bytes passed later wait for the queue to empty again.
//
// Flow control: the kernel queues redirected skbs for the peer without any
// limit of its own; see bpf/splice.c and SplicerConfig.MaxQueue for how the
// program and Wait bound it.

// ErrSpliceUnsupported is returned by OpenSplicer when the kernel cannot run
// the splice programs (not Linux, no BPF permission, no sockhash, ...).
var ErrSpliceUnsupported = errors.New("kernel splice not supported")

// ErrSpliceFallback wraps every Splice error after which both conns are
// untouched and still the caller's, with no byte consumed: the caller should
// copy the tunnel in userspace. A Splice error that does not wrap it means
// the conns are in an unknown state (bytes may be lost): close them.
var ErrSpliceFallback = errors.New("tunnel not spliced, copy in userspace")

// SplicerConfig sets up a Splicer. The zero value is the default.
type SplicerConfig struct {
	// MaxPairs bounds the tunnels spliced at once (two map entries each).
	// Splice returns ErrSpliceFallback beyond it. Default 32768.
	MaxPairs int
	// MaxQueue bounds, per direction of a tunnel, the bytes the kernel may
	// hold for the peer's send buffer (the psock queue, which no socket
	// buffer limits and which on 6.18 grows by hundreds of MB per second when
	// the sender is faster than the kernel worker that drains it). Past it the
	// receiving socket is stopped in the kernel until the queue is down to a
	// sixteenth (with Cgroup; each stop costs ~1 ms of the process, mostly
	// waking up, so a larger limit means fewer stops), or else the program hands the tunnel's bytes to
	// the pair's Wait goroutine, which lets TCP's window close on the sender,
	// writes them out in order and gives the direction back to the kernel.
	// Default 32 MiB.
	MaxQueue int
	// SndBuf is the SO_SNDBUF given to both sockets of a tunnel whose send
	// buffer is smaller (bytes; the kernel doubles it). It is set with
	// SO_SNDBUFFORCE, which net.core.wmem_max does not cap, falling back to
	// SO_SNDBUF (capped) without CAP_NET_ADMIN. The kernel worker that
	// pushes redirected skbs stalls for good when the send buffer is not
	// well above one 64 KiB skb (measured: <= 64 KiB effective stalls,
	// 96 KiB works), and is much faster with a large one: on 6.18 loopback,
	// 16 MiB (32 MiB effective) with MaxQueue 32 MiB moved a saturating
	// iperf3 stream at ~18-21 Gbit/s with the process at <= 7% CPU, against
	// ~13.5 Gbit/s and ~70% with 4 MiB (8 MiB effective) and 16 MiB.
	// Default 16 MiB; -1 leaves the buffers alone (tests only).
	SndBuf int
	// Cgroup is the cgroup v2 directory the tunnel sockets are created in
	// (the daemon's own, see OwnCgroup). With it, a direction whose queue
	// reaches MaxQueue is stopped in the kernel: a sockops program attached
	// there takes the receiving socket out of the verdict sockhash, TCP's
	// window closes on the sender, and the pair puts it back once the queue
	// has drained — no byte goes through userspace. Only spliced sockets call
	// it for their segments (a cgroup/setsockopt program, attached there too,
	// turns the callback on at Splice). Without it, or if it cannot be
	// attached, the overflow is copied in userspace.
	Cgroup string
}

// Defaults of SplicerConfig.
const (
	DefaultSpliceMaxPairs = 32768
	DefaultSpliceMaxQueue = 32 << 20
	DefaultSpliceSndBuf   = 16 << 20
)

// SpliceTotals are the kernel's counters over every pair a Splicer carried.
type SpliceTotals struct {
	Stops         uint64 // directions stopped in the kernel because the reader was slower (SplicerConfig.Cgroup)
	Overflows     uint64 // overflow episodes: the excess went through userspace instead
	OverflowBytes uint64 // bytes those carried
}

// SpliceStats are the kernel's counters of one spliced pair.
type SpliceStats struct {
	AtoB uint64 // bytes received on a since Splice, to go out of b (kernel-redirected + Overflow)
	BtoA uint64 // bytes received on b since Splice, to go out of a
	// Overflow counts the bytes (both directions) that went through the
	// pair's goroutine because the kernel's queue for a slow reader was full;
	// Overflows the times that happened.
	Overflow, Overflows uint64
	// Stops counts the times a direction was stopped in the kernel because
	// the reader was slower (SplicerConfig.Cgroup).
	Stops uint64
	// Repeated counts the bytes (both directions) the kernel handed the
	// program a second time — TCP retransmissions overlapping bytes
	// already received — which the program cut off instead of forwarding.
	Repeated uint64
	// LastActivityNs is the CLOCK_MONOTONIC time (ns) of the last byte moved
	// in either direction, or of the Splice call if none was.
	LastActivityNs uint64
	// LastActivity is LastActivityNs as wall-clock time.
	LastActivity time.Time
}

// SpliceEnd says why a spliced pair ended.
type SpliceEnd int

const (
	SpliceEndClosed      SpliceEnd = iota + 1 // both sides sent FIN; everything was delivered to the kernel's send queues
	SpliceEndClientReset                      // a got an RST or a socket error; it was passed on to b as an RST
	SpliceEndServerReset                      // b got an RST or a socket error; it was passed on to a as an RST
	SpliceEndIdle                             // no byte either way for the idle timeout
	SpliceEndFinTimeout                       // half-closed, and no byte either way for the fin timeout
	SpliceEndCanceled                         // the context was canceled (shutdown) or the Splicer closed
	SpliceEndError                            // a syscall on the pair failed, or the kernel's stream broke (ErrSpliceBroken); both sides were reset
)

func (e SpliceEnd) String() string {
	switch e {
	case SpliceEndClosed:
		return "closed"
	case SpliceEndClientReset:
		return "client-reset"
	case SpliceEndServerReset:
		return "server-reset"
	case SpliceEndIdle:
		return "idle-timeout"
	case SpliceEndFinTimeout:
		return "fin-timeout"
	case SpliceEndCanceled:
		return "canceled"
	case SpliceEndError:
		return "error"
	}
	return fmt.Sprintf("SpliceEnd(%d)", int(e))
}

// SpliceResult is what Wait returns: the final counters and how it ended.
type SpliceResult struct {
	SpliceStats
	End SpliceEnd
	// ClientFin / ServerFin: a / b sent its FIN and it was passed on.
	ClientFin, ServerFin bool
	// Duration from Splice to the end of Wait.
	Duration time.Duration
}

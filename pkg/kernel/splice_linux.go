//go:build linux

package kernel

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"
)

// Test switches.
var (
	// spliceUseSkbVerdict attaches sk_skb/verdict instead of
	// sk_skb/stream_verdict: the same program through the same kernel path
	// (no stream parser: sk_data_ready -> tcp_read_skb).
	spliceUseSkbVerdict = false
	// spliceNoKick leaves the receive queue alone after insertion.
	spliceNoKick = false
	// spliceNoDrain skips the userspace drain before insertion (hand-over
	// step 1), leaving a partly read skb at the head of a receive queue.
	spliceNoDrain = false
)

// Splicer owns the loaded splice programs and maps. It is safe for concurrent
// use. Close it only when the daemon stops: it ends every pair still spliced.
type Splicer struct {
	log    *slog.Logger
	cfg    SplicerConfig
	objs   spliceObjects
	prog   *ebpf.Program
	attach ebpf.AttachType
	link   link.Link // nil when attached with BPF_PROG_ATTACH (kernels before 6.10)
	// splice_sockops and splice_setsockopt on SplicerConfig.Cgroup (Splice
	// asks the latter to make a pair's sockets call the former); nil
	// without: a slow reader's backlog is copied in userspace.
	cgLinks  []link.Link
	ep       *spliceEpoll
	events   *ringbuf.Reader
	eventsWG sync.WaitGroup
	mu       sync.Mutex
	closed   bool
	nextID   uint64
	pairs    map[uint64]*SplicedPair
	byCookie map[uint64]*SplicedPair
	closeMu  sync.Mutex // serialises Close
}

// OpenSplicer loads bpf/splice.c and attaches its verdict program to the
// verdict sockhash. It fails (wrapping ErrSpliceUnsupported) when the kernel
// or the process's privileges do not allow it: the caller then copies every
// tunnel in userspace.
func OpenSplicer(logger *slog.Logger, cfg SplicerConfig) (*Splicer, error) {
	if logger == nil {
		logger = slog.Default()
	}
	if cfg.MaxPairs <= 0 {
		cfg.MaxPairs = DefaultSpliceMaxPairs
	}
	if cfg.MaxQueue <= 0 {
		cfg.MaxQueue = DefaultSpliceMaxQueue
	}
	if cfg.SndBuf == 0 {
		cfg.SndBuf = DefaultSpliceSndBuf
	}
	spec, err := loadSplice()
	if err != nil {
		return nil, fmt.Errorf("splice: %w: %w", ErrSpliceUnsupported, err)
	}
	for _, name := range []string{spliceMapSpliceState, spliceMapSpliceDrained, spliceMapSpliceTargets, spliceMapSpliceSocks} {
		spec.Maps[name].MaxEntries = uint32(2 * cfg.MaxPairs)
	}
	if err := spec.Variables["splice_queue_max"].Set(uint32(min(cfg.MaxQueue, 1<<30))); err != nil {
		return nil, fmt.Errorf("splice: set splice_queue_max: %w", err)
	}
	s := &Splicer{log: logger, cfg: cfg, pairs: make(map[uint64]*SplicedPair), byCookie: make(map[uint64]*SplicedPair)}
	if err := spec.LoadAndAssign(&s.objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("splice: load programs: %w: %+v", ErrSpliceUnsupported, ve)
		}
		return nil, fmt.Errorf("splice: load programs: %w: %w", ErrSpliceUnsupported, err)
	}
	s.prog, s.attach = s.objs.SpliceStreamVerdict, ebpf.AttachSkSKBStreamVerdict
	if spliceUseSkbVerdict {
		s.prog, s.attach = s.objs.SpliceSkbVerdict, ebpf.AttachSkSKBVerdict
	}
	mode := "link"
	s.link, err = link.AttachRawLink(link.RawLinkOptions{Target: s.objs.SpliceSocks.FD(), Program: s.prog, Attach: s.attach})
	if err != nil {
		// Sockmap links are new in 6.10; older kernels attach to the map,
		// which holds the program until the map goes away.
		mode = "prog-attach"
		if err2 := link.RawAttachProgram(link.RawAttachProgramOptions{Target: s.objs.SpliceSocks.FD(), Program: s.prog, Attach: s.attach}); err2 != nil {
			s.objs.Close()
			return nil, fmt.Errorf("splice: attach %s to sockhash: %w: %w (link: %v)", s.attach, ErrSpliceUnsupported, err2, err)
		}
	}
	stops := "userspace copy"
	if cfg.Cgroup != "" {
		if err := s.attachSockops(cfg.Cgroup); err != nil {
			logger.Warn("splice: a slow reader's backlog will be copied in userspace", "err", err)
		} else {
			stops = "in the kernel (sockops on " + cfg.Cgroup + ")"
		}
	}
	if s.events, err = ringbuf.NewReader(s.objs.SpliceEvents); err != nil {
		s.detach()
		s.objs.Close()
		return nil, fmt.Errorf("splice: ring buffer reader: %w: %w", ErrSpliceUnsupported, err)
	}
	if s.ep, err = newSpliceEpoll(); err != nil {
		s.events.Close()
		s.detach()
		s.objs.Close()
		return nil, fmt.Errorf("splice: %w", err)
	}
	s.eventsWG.Add(1)
	go s.readEvents()
	logger.Info("kernel splice ready", "attach", s.attach.String(), "mode", mode, "max_pairs", cfg.MaxPairs, "max_queue", cfg.MaxQueue, "sndbuf", cfg.SndBuf, "flow_control", stops)
	return s, nil
}

// Totals reads the kernel's counters over all pairs (one map lookup).
func (s *Splicer) Totals() (SpliceTotals, error) {
	var per []spliceSpliceTotal
	if err := s.objs.SpliceTotals.Lookup(uint32(0), &per); err != nil {
		return SpliceTotals{}, fmt.Errorf("splice: read totals: %w", err)
	}
	var t SpliceTotals
	for _, c := range per {
		t.Stops += c.Stops
		t.Overflows += c.Overflows
		t.OverflowBytes += c.OverflowBytes
	}
	return t, nil
}

// readEvents wakes the pairs whose program reported something (overflow,
// stop, a broken stream).
func (s *Splicer) readEvents() {
	defer s.eventsWG.Done()
	readRing(s.events, s.log, "splice: read events", func(sample []byte) {
		if len(sample) < 8 {
			return
		}
		cookie := binary.NativeEndian.Uint64(sample)
		s.mu.Lock()
		p := s.byCookie[cookie]
		s.mu.Unlock()
		if p != nil {
			p.wake()
		}
	})
}

// attachSockops attaches splice_sockops and splice_setsockopt to cgroup and
// tells the verdict program to use them.
func (s *Splicer) attachSockops(cgroup string) error {
	links, err := attachCgroup(cgroup,
		cgroupProg{s.objs.SpliceSockops, ebpf.AttachCGroupSockOps},
		cgroupProg{s.objs.SpliceSetsockopt, ebpf.AttachCGroupSetsockopt})
	if err != nil {
		return err
	}
	if err := s.objs.SpliceStopSockops.Set(uint32(1)); err != nil {
		for _, l := range links {
			l.Close()
		}
		return fmt.Errorf("enable sockops flow control: %w", err)
	}
	s.cgLinks = links
	return nil
}

// tcpBPFSockOpsCBFlags is TCP_BPF_SOCK_OPS_CB_FLAGS: with level SOL_TCP,
// splice_setsockopt takes it as the request to call splice_sockops for the
// socket's segments.
const tcpBPFSockOpsCBFlags = 1008

func (s *Splicer) detach() {
	for _, l := range s.cgLinks {
		l.Close()
	}
	s.cgLinks = nil
	if s.link != nil {
		s.link.Close()
		s.link = nil
		return
	}
	link.RawDetachProgram(link.RawDetachProgramOptions{Target: s.objs.SpliceSocks.FD(), Program: s.prog, Attach: s.attach})
}

// Close ends every pair still spliced (as if its context had been canceled;
// a pair whose Wait was never called is torn down and its sockets closed),
// then unloads the programs and maps.
func (s *Splicer) Close() error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	pairs := make([]*SplicedPair, 0, len(s.pairs))
	for _, p := range s.pairs {
		pairs = append(pairs, p)
	}
	s.mu.Unlock()
	for _, p := range pairs {
		p.stopOnce.Do(func() { close(p.stop) })
		if p.waitStarted.CompareAndSwap(false, true) {
			p.finish(SpliceEndCanceled)
		}
	}
	for _, p := range pairs {
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			s.log.Warn("splice: pair did not end within 5s of Close", "pair", p.id)
		}
	}
	s.events.Close()
	s.eventsWG.Wait()
	s.ep.close()
	s.detach()
	return s.objs.Close()
}

// SplicedPair is one tunnel whose bytes the kernel moves. Wait runs it.
type SplicedPair struct {
	s           *Splicer
	id          uint64
	fd          [2]int    // our own descriptors of a and b (dups; the TCPConns are closed)
	cookie      [2]uint64 // socket cookies: the map keys
	base        [2]uint64 // write position (bytes acked + unacked) of a and b when spliced
	start       time.Time
	notify      chan struct{} // a state change, an overflow, writable/readable during one
	stop        chan struct{} // closed by Splicer.Close
	stopOnce    sync.Once
	done        chan struct{} // closed when the pair is torn down
	waitStarted atomic.Bool
	result      SpliceResult
	finishOnce  sync.Once

	// Owned by the goroutine running Wait.
	fin       [2]bool   // FIN received on side i has been passed on (shutdown of the peer's write side)
	wrote     [2]uint64 // overflow bytes received on i that Wait wrote into the peer
	drained   [2]uint64 // of those, the ones consumed from i and recorded in splice_drained
	ov        [2]spliceOverflow
	evs       [2]uint32 // epoll events registered for fd[i]
	stopped   [2]bool   // i is out of splice_socks (splice_sockops stopped it)
	tail      [2]spliceTail
	stopQ     [2]uint64 // queue towards the peer at stopSeen, while i is stopped
	stopSeen  [2]time.Time
	drainRate [2]float64       // bytes/s the peer took i\'s queue at, last seen
	stopWait  [2]time.Duration // the last drainWait
	// tailBytes counts the bytes copyTail moved (read by Stats from any
	// goroutine).
	tailBytes [2]atomic.Uint64
}

// spliceOverflow is one direction's overflow episode: the program passes the
// bytes received on side i to userspace until Wait has written them all out.
type spliceOverflow struct {
	started bool    // the kernel's queue for the peer has been seen empty: Wait may write
	buf     *[]byte // peek buffer (pooled), nil outside an episode
	peeked  int     // bytes of buf peeked from i (not consumed yet)
	sent    int     // bytes of buf already written to the peer
}

const (
	spliceBufShift = 18 // spliceBufSize = 256 KiB
	spliceBufSize  = 1 << spliceBufShift
)

var spliceBufPool = sync.Pool{New: func() any { b := make([]byte, spliceBufSize); return &b }}

// spliceMaxPeek bounds one overflow read: about the most a sender can have
// put into a receive buffer (tcp_rmem's maximum is 6 MiB by default, 32 MiB
// on the bench machine).
const (
	spliceMaxPeekShift = 25 // spliceMaxPeek = 32 MiB
	spliceMaxPeek      = 1 << spliceMaxPeekShift
)

// spliceBigPools hold overflow buffers larger than spliceBufSize, one pool
// per power of two up to spliceMaxPeek: allocating (and zeroing, and
// faulting in) a fresh buffer of megabytes per overflow was the largest cost
// of the overflow path in a profile of a saturated tunnel.
var spliceBigPools [spliceMaxPeekShift - spliceBufShift]sync.Pool

// spliceBigPool is the pool of size (a power of two above spliceBufSize).
func spliceBigPool(size int) *sync.Pool {
	return &spliceBigPools[bits.Len(uint(size-1))-spliceBufShift-1]
}

// grow makes the episode's buffer hold n bytes (up to spliceMaxPeek). It
// only happens when n is already queued, so the memory is bounded by what
// the socket's receive buffer holds anyway.
func (ov *spliceOverflow) grow(n uint64) {
	n = min(n, spliceMaxPeek)
	if uint64(len(*ov.buf)) >= n || ov.peeked > 0 {
		return
	}
	ov.release()
	size := 1 << bits.Len(uint(n-1)) // a power of two above spliceBufSize
	if b, ok := spliceBigPool(size).Get().(*[]byte); ok {
		ov.buf = b
		return
	}
	b := make([]byte, size)
	ov.buf = &b
}

// release gives the episode's buffer back.
func (ov *spliceOverflow) release() {
	if ov.buf == nil {
		return
	}
	if n := len(*ov.buf); n == spliceBufSize {
		spliceBufPool.Put(ov.buf)
	} else {
		spliceBigPool(n).Put(ov.buf)
	}
	ov.buf = nil
}

func (p *SplicedPair) wake() {
	select {
	case p.notify <- struct{}{}:
	default:
	}
}

// Splice hands the two connected sockets of a tunnel to the kernel: from now
// on bytes arriving on a leave through b and the other way round, without
// passing through userspace. a is the client side (accepted), b the server
// side (dialed); the names only matter for the fin timeouts and SpliceEnd.
//
// Before calling it, the caller must have stopped reading a and b and written
// out, with ordinary writes, every byte it had read from one side and not yet
// forwarded to the other. Bytes the sockets received after the caller's last
// read are forwarded by the kernel, in order, after those (see "Hand-over
// protocol" in splice.go).
//
// On success the pair owns the sockets: a and b are closed (the pair keeps
// its own duplicates of their descriptors, outside Go's netpoller, so that the
// runtime is not woken for every skb) and must not be used again; call Wait
// exactly once, which closes the duplicates when the tunnel ends.
// On error the caller still owns a and b: if the error wraps
// ErrSpliceFallback they are intact (copy in userspace); otherwise close them.
func (s *Splicer) Splice(a, b *net.TCPConn) (*SplicedPair, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, fmt.Errorf("splice: splicer closed: %w", ErrSpliceFallback)
	}
	s.nextID++
	p := &SplicedPair{
		s: s, id: s.nextID, fd: [2]int{-1, -1}, start: time.Now(),
		notify: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
	}
	s.mu.Unlock()

	for i, c := range []*net.TCPConn{a, b} {
		fd, err := spliceDupConn(c)
		if err != nil {
			p.closeFDs()
			return nil, fmt.Errorf("splice: dup %s: %w: %w", sideName(i), ErrSpliceFallback, err)
		}
		p.fd[i] = fd
	}
	for i, fd := range p.fd {
		if s.cfg.SndBuf > 0 {
			// getsockopt reports the doubled value setsockopt stores.
			// SO_SNDBUFFORCE (CAP_NET_ADMIN, which loading sk_skb
			// programs needs too, or CAP_SYS_ADMIN; without it this
			// falls back to SO_SNDBUF) is not capped by net.core.wmem_max,
			// which would cut SndBuf down (4 MiB on the bench machine; the
			// kernel default is 208 KiB).
			if cur, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF); err == nil && cur < 2*s.cfg.SndBuf {
				if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, s.cfg.SndBuf) != nil {
					unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, s.cfg.SndBuf)
				}
			}
		}
		if s.cgLinks != nil {
			// Only tunnel sockets call splice_sockops (see
			// splice_setsockopt). Without it this pair's slow
			// directions take the overflow path.
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, tcpBPFSockOpsCBFlags, 1); err != nil {
				s.log.Debug("splice: no sockops callback for this pair", "err", err)
			}
		}
		var err error
		if p.cookie[i], err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE); err != nil {
			p.closeFDs()
			return nil, fmt.Errorf("splice: cookie of %s: %w: %w", sideName(i), ErrSpliceFallback, err)
		}
	}
	if !spliceNoDrain {
		if err := spliceDrainQueues(a, b, p.fd); err != nil {
			p.closeFDs()
			return nil, fmt.Errorf("splice: %w", err) // wraps ErrSpliceFallback when the conns are intact
		}
	}
	for i, fd := range p.fd {
		var err error
		if p.base[i], err = spliceWritten(fd); err != nil {
			p.closeFDs()
			return nil, fmt.Errorf("splice: send queue of %s: %w: %w", sideName(i), ErrSpliceFallback, err)
		}
	}
	// Known before insertion, so an overflow right away finds the pair.
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		p.closeFDs()
		return nil, fmt.Errorf("splice: splicer closed: %w", ErrSpliceFallback)
	}
	if len(s.pairs) >= s.cfg.MaxPairs {
		// Also keeps room in splice_socks for every stopped socket to
		// go back in (restart).
		s.mu.Unlock()
		p.closeFDs()
		return nil, fmt.Errorf("splice: %d pairs already (MaxPairs): %w", len(s.pairs), ErrSpliceFallback)
	}
	s.pairs[p.id] = p
	s.byCookie[p.cookie[0]] = p
	s.byCookie[p.cookie[1]] = p
	s.mu.Unlock()
	forget := func() {
		s.mu.Lock()
		delete(s.pairs, p.id)
		delete(s.byCookie, p.cookie[0])
		delete(s.byCookie, p.cookie[1])
		s.mu.Unlock()
	}
	if err := p.insert(); err != nil {
		forget()
		p.closeFDs()
		return nil, err
	}
	// Both sockets redirect now. Hand whatever waited in their receive
	// queues to the program (see "Hand-over protocol", step 3).
	p.kick(0)
	p.kick(1)
	if err := s.ep.add(p); err != nil {
		// Cannot watch the pair: undo. Bytes already redirected must reach
		// the peers' send queues first, or they are lost.
		ferr := p.rollback()
		forget()
		p.closeFDs()
		if ferr != nil {
			return nil, fmt.Errorf("splice: watch pair: %w; undo: %w", err, ferr)
		}
		return nil, fmt.Errorf("splice: watch pair: %w: %w", ErrSpliceFallback, err)
	}
	p.evs = [2]uint32{spliceEpollBase, spliceEpollBase}
	a.Close()
	b.Close()
	return p, nil
}

// spliceDrainQueues reads, in userspace, everything waiting in the receive
// queues of a and b and writes it to the other side, until one pass finds
// both empty. This is step 2 of the hand-over protocol, and it is needed for
// more than tidiness: tcp_read_skb (6.18) hands the verdict program whole skbs
// from the head of the queue and ignores how much of the head skb a previous
// read() already consumed (measured: the peer got the stream's first bytes
// twice). The program now cuts such repeats itself (bpf/splice.c), but only
// by copying them out of the skb; a read that returns EAGAIN has consumed and
// unlinked every skb, so skbs arriving after it are whole and new.
// An error wraps ErrSpliceFallback when the caller's conns are intact (every
// byte read was written, in order); a failed write leaves them in an unknown
// state (part of a read was not forwarded) and does not.
func spliceDrainQueues(a, b *net.TCPConn, fd [2]int) error {
	conns := [2]*net.TCPConn{a, b}
	bp := spliceBufPool.Get().(*[]byte)
	defer spliceBufPool.Put(bp)
	buf := *bp
	const maxBytes = 16 << 20 // a sender that never pauses: copy it in userspace instead
	moved := 0
	for quiet := false; !quiet; {
		quiet = true
		for i := 0; i < 2; i++ {
			for {
				n, _, err := unix.Recvfrom(fd[i], buf, unix.MSG_DONTWAIT)
				if n <= 0 {
					if err == unix.EINTR {
						continue
					}
					if err != nil && err != unix.EAGAIN {
						return fmt.Errorf("read %s: %w: %w", sideName(i), ErrSpliceFallback, err)
					}
					break // EAGAIN, or EOF: the FIN is seen by Wait
				}
				quiet = false
				peer := conns[1-i]
				peer.SetWriteDeadline(time.Now().Add(5 * time.Second))
				_, werr := peer.Write(buf[:n])
				peer.SetWriteDeadline(time.Time{})
				if werr != nil {
					return fmt.Errorf("write %s: %w", sideName(1-i), werr)
				}
				// Checked only once the bytes read are written: the
				// caller copies on from here, so none may be held back.
				if moved += n; moved > maxBytes {
					return fmt.Errorf("%s kept sending (%d bytes) while being handed over: %w", sideName(i), moved, ErrSpliceFallback)
				}
			}
		}
	}
	return nil
}

// ErrSpliceBroken: the verdict program met bytes it could not forward exactly
// once and in order (see SPLICE_BROKEN_* in bpf/splice_maps.h); Wait then
// resets both sides rather than pass on a stream with a hole or a repeat.
var ErrSpliceBroken = errors.New("kernel stream broken")

func spliceBrokenError(why uint32) error {
	switch why {
	case spliceBrokenGap:
		return fmt.Errorf("%w: bytes skipped by the kernel", ErrSpliceBroken)
	case spliceBrokenTrim:
		return fmt.Errorf("%w: repeated bytes could not be cut", ErrSpliceBroken)
	}
	return fmt.Errorf("%w: reason %d", ErrSpliceBroken, why)
}

// Values of splice_sock.broken (SPLICE_BROKEN_* in bpf/splice_maps.h).
const (
	spliceBrokenGap  = 1
	spliceBrokenTrim = 2
)

func sideName(i int) string {
	if i == 0 {
		return "client side (a)"
	}
	return "server side (b)"
}

// spliceDupConn returns a close-on-exec duplicate of c's descriptor that Go's
// netpoller knows nothing about. It shares the original's O_NONBLOCK.
func spliceDupConn(c *net.TCPConn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	nfd := -1
	var derr error
	if err := rc.Control(func(fd uintptr) {
		nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, err
	}
	return nfd, derr
}

// spliceWritten is the number of bytes written into the socket so far, as
// bytes acked + bytes still in the send queue (SIOCOUTQ: write_seq - snd_una),
// give or take a constant (the SYN). It is read acked-first, so a concurrent
// ACK can only make it smaller than the truth: a flush check that compares it
// with the program's counter never passes early.
func spliceWritten(fd int) (uint64, error) {
	ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return 0, fmt.Errorf("TCP_INFO: %w", err)
	}
	outq, err := unix.IoctlGetInt(fd, unix.SIOCOUTQ)
	if err != nil {
		return 0, fmt.Errorf("SIOCOUTQ: %w", err)
	}
	return ti.Bytes_acked + uint64(outq), nil
}

func spliceMonoNs() uint64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}

// The insertion steps, in order; removal goes backwards.
func (p *SplicedPair) steps() []*ebpf.Map {
	m := &p.s.objs
	return []*ebpf.Map{m.SpliceState, m.SpliceState, m.SpliceDrained, m.SpliceDrained, m.SpliceTargets, m.SpliceTargets, m.SpliceSocks, m.SpliceSocks}
}

const (
	spliceStepsBeforeSocks = 6 // entries inserted before any socket redirects
	spliceStepsAll         = 8
)

// insert puts both sockets in the maps: state, drained, then redirect
// targets, then the verdict sockhash, so a socket only starts redirecting once
// its peer can be redirected to. On failure everything inserted is undone.
func (p *SplicedPair) insert() error {
	now := spliceMonoNs()
	var err error
	n := 0
	for k, m := range p.steps() {
		i := k % 2
		switch k / 2 {
		case 0:
			err = m.Update(p.cookie[i], spliceSpliceSock{Peer: p.cookie[1-i], LastNs: now}, ebpf.UpdateNoExist)
		case 1:
			err = m.Update(p.cookie[i], uint64(0), ebpf.UpdateNoExist)
		default:
			err = m.Update(p.cookie[i], uint64(p.fd[i]), ebpf.UpdateNoExist)
		}
		if err != nil {
			break
		}
		n++
	}
	if err == nil {
		return nil
	}
	what := "insert into splice maps"
	if errors.Is(err, unix.E2BIG) || errors.Is(err, unix.ENOMEM) {
		what = "splice maps full"
	}
	if n <= spliceStepsBeforeSocks {
		// No socket was redirecting yet: nothing can have moved.
		p.removeUpTo(n)
		return fmt.Errorf("splice: %s: %w: %w", what, ErrSpliceFallback, err)
	}
	if ferr := p.rollback(); ferr != nil {
		return fmt.Errorf("splice: %s: %w; undo: %w", what, err, ferr)
	}
	return fmt.Errorf("splice: %s: %w: %w", what, ErrSpliceFallback, err)
}

// removeUpTo deletes the first n entries insert made, in reverse order.
// Entries the kernel already removed (a socket that reached TCP_CLOSE leaves
// its sockhashes) are fine.
func (p *SplicedPair) removeUpTo(n int) {
	steps := p.steps()
	for k := n - 1; k >= 0; k-- {
		steps[k].Delete(p.cookie[k%2])
	}
}

// rollback undoes a splice that has (maybe) started moving bytes: it stops
// the verdicts, waits (bounded) until everything the kernel redirected has
// entered the peers' send queues, then removes the rest. An error means bytes
// may have been lost (also if the program had already passed bytes to
// userspace: they stay in the kernel's ingress queue of the socket, which is
// dropped with it).
func (p *SplicedPair) rollback() error {
	m := &p.s.objs
	for i := 0; i < 2; i++ {
		m.SpliceSocks.Delete(p.cookie[i])
	}
	deadline := time.Now().Add(2 * time.Second)
	var err error
	for i := 0; i < 2 && err == nil; i++ {
		for {
			st, lerr := p.lookup(i)
			if lerr != nil {
				err = lerr
				break
			}
			if st.Passed != 0 {
				err = fmt.Errorf("%d bytes from %s were in overflow", st.Passed, sideName(i))
				break
			}
			ok, ferr := p.flushed(i, st)
			if ferr != nil {
				err = ferr
				break
			}
			if ok {
				break
			}
			if time.Now().After(deadline) {
				err = fmt.Errorf("bytes redirected from %s still queued after 2s", sideName(i))
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	p.removeUpTo(spliceStepsBeforeSocks)
	return err
}

func (p *SplicedPair) closeFDs() {
	for i, fd := range p.fd {
		if fd >= 0 {
			unix.Close(fd)
			p.fd[i] = -1
		}
	}
}

// kick makes the kernel run side i's receive queue through the verdict
// program now: tcp_bpf_recvmsg_parser calls tcp_data_ready under the socket
// lock when the queue is not empty. MSG_PEEK: bytes the program passed to
// userspace stay where they are.
func (p *SplicedPair) kick(i int) {
	if spliceNoKick {
		return
	}
	var b [1]byte
	unix.Recvfrom(p.fd[i], b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
}

func (p *SplicedPair) lookup(i int) (spliceSpliceSock, error) {
	var st spliceSpliceSock
	if err := p.s.objs.SpliceState.Lookup(p.cookie[i], &st); err != nil {
		return st, fmt.Errorf("lookup counters of %s: %w", sideName(i), err)
	}
	return st, nil
}

// flushed reports whether the peer's psock holds nothing more from side i:
// every byte the program redirected from i, and every overflow byte Wait wrote
// for i, has entered the peer's send queue.
func (p *SplicedPair) flushed(i int, st spliceSpliceSock) (bool, error) {
	q, err := p.queued(i, st)
	return q == 0, err
}

// queued is how many bytes from side i the peer's psock holds: redirected
// by the program, or written by Wait, and not yet in the peer's send queue.
func (p *SplicedPair) queued(i int, st spliceSpliceSock) (uint64, error) {
	w, err := spliceWritten(p.fd[1-i])
	if err != nil {
		return 0, fmt.Errorf("send queue of %s: %w", sideName(1-i), err)
	}
	in, out := st.Bytes+p.wrote[i], w-p.base[1-i]
	if out >= in {
		return 0, nil
	}
	return in - out, nil
}

// restart puts side i, stopped by splice_sockops, back into the verdict
// sockhash and runs what its receive queue gathered meanwhile through the
// program, in order (it goes on at the sequence number it stopped at). While
// i is out of splice_socks no program writes its state (the verdict does not
// run for it, splice_sockops only writes a socket it is stopping), so the
// flags are cleared with a plain update first. Returns i's counters after.
func (p *SplicedPair) restart(i int) (spliceSpliceSock, error) {
	ks, err := p.lookup(i)
	if err != nil {
		return ks, err
	}
	ks.Stop, ks.Stopped = 0, 0
	if err := p.s.objs.SpliceState.Update(p.cookie[i], ks, ebpf.UpdateExist); err != nil {
		return ks, fmt.Errorf("restart %s: %w", sideName(i), err)
	}
	if err := p.s.objs.SpliceSocks.Update(p.cookie[i], uint64(p.fd[i]), ebpf.UpdateNoExist); err != nil {
		if ti, terr := unix.GetsockoptTCPInfo(p.fd[i], unix.IPPROTO_TCP, unix.TCP_INFO); terr == nil && ti.State != unix.BPF_TCP_ESTABLISHED {
			return ks, fmt.Errorf("restart %s: %w", sideName(i), errSpliceClosing)
		}
		return ks, fmt.Errorf("restart %s: give it back to the kernel: %w", sideName(i), err)
	}
	p.stopped[i] = false
	p.kick(i)
	return p.lookup(i)
}

// writePeer writes buf[*sent:], bytes received on side i, to the peer,
// advancing *sent and the count of bytes Wait wrote for i. done is false when
// the caller must return (end, err): the peer's buffer is full (EPOLLOUT
// asked for in want, end 0), it reset, or the write failed.
func (p *SplicedPair) writePeer(i int, buf []byte, sent *int, want *[2]uint32, what string) (done bool, end SpliceEnd, err error) {
	for *sent < len(buf) {
		n, werr := unix.Write(p.fd[1-i], buf[*sent:])
		if n > 0 {
			*sent += n
			p.wrote[i] += uint64(n)
		}
		switch {
		case werr == nil || werr == unix.EINTR:
		case werr == unix.EAGAIN:
			want[1-i] |= unix.EPOLLOUT
			return false, 0, nil
		case werr == unix.EPIPE || werr == unix.ECONNRESET:
			if i == 0 {
				return false, SpliceEndServerReset, nil
			}
			return false, SpliceEndClientReset, nil
		default:
			return false, SpliceEndError, fmt.Errorf("splice: write %s of %s to %s: %w", what, sideName(i), sideName(1-i), werr)
		}
	}
	return true, 0, nil
}

// errSpliceClosing: a stopped socket could not go back into the verdict
// sockhash because its sender has closed (a TCP socket past ESTABLISHED
// cannot enter a sockhash).
var errSpliceClosing = errors.New("the sender closed while its socket was stopped")

// restartOrTail restarts side i or, when its sender has closed meanwhile,
// switches it to copyTail.
func (p *SplicedPair) restartOrTail(i int) (spliceSpliceSock, error) {
	ks, err := p.restart(i)
	if errors.Is(err, errSpliceClosing) {
		p.stopped[i] = false
		p.tail[i].on = true
		return ks, nil
	}
	return ks, err
}

// spliceTail is a side copied to its end in userspace (copyTail).
type spliceTail struct {
	on, started, eof bool
	buf              *[]byte
	n, sent          int // bytes in buf, of which written to the peer
}

// copyTail moves in userspace what side i received while it was stopped,
// when its sender closed meanwhile (see errSpliceClosing): once the peer has
// taken everything the kernel queued for it, it reads i to its FIN and
// writes it all to the peer, then the FIN is passed on as usual. At most a
// receive buffer's worth, once, at the end of the stream. It never blocks:
// it asks for EPOLLIN / EPOLLOUT in want, or for a retry.
func (p *SplicedPair) copyTail(i int, ks spliceSpliceSock, st *spliceStepState, want *[2]uint32) (SpliceEnd, error) {
	tl := &p.tail[i]
	src := p.fd[i]
	if !tl.started {
		ok, err := p.flushed(i, ks)
		if err != nil {
			return SpliceEndError, fmt.Errorf("splice: %w", err)
		}
		if !ok {
			st.retry = true
			return 0, nil
		}
		tl.started = true
		tl.buf = spliceBufPool.Get().(*[]byte)
	}
	for !tl.eof || tl.sent < tl.n {
		if tl.sent < tl.n {
			sent := tl.sent
			done, end, err := p.writePeer(i, (*tl.buf)[:tl.n], &tl.sent, want, "the rest")
			p.tailBytes[i].Add(uint64(tl.sent - sent))
			if !done {
				return end, err
			}
			continue
		}
		n, _, err := unix.Recvfrom(src, *tl.buf, unix.MSG_DONTWAIT)
		switch {
		case n > 0:
			tl.n, tl.sent = n, 0
			st.lastNs = spliceMonoNs()
		case n == 0 && err == nil:
			tl.eof = true
		case err == unix.EINTR:
		case err == unix.EAGAIN:
			want[i] |= unix.EPOLLIN
			return 0, nil
		default:
			return SpliceEndError, fmt.Errorf("splice: read the rest of %s: %w", sideName(i), err)
		}
	}
	if tl.buf != nil {
		spliceBufPool.Put(tl.buf)
		tl.buf = nil
	}
	return 0, nil
}

// Stats reads the kernel's counters of the pair. After Wait has returned it
// returns the final counters.
func (p *SplicedPair) Stats() SpliceStats {
	select {
	case <-p.done:
		return p.result.SpliceStats
	default:
	}
	st, _ := p.readStats()
	return st
}

func (p *SplicedPair) readStats() (SpliceStats, error) {
	var v [2]spliceSpliceSock
	var err error
	for i := range v {
		if e := p.s.objs.SpliceState.Lookup(p.cookie[i], &v[i]); e != nil && err == nil {
			err = e
		}
	}
	st := SpliceStats{
		AtoB: v[0].Bytes + v[0].Passed + p.tailBytes[0].Load(), BtoA: v[1].Bytes + v[1].Passed + p.tailBytes[1].Load(),
		Overflow: v[0].Passed + v[1].Passed, Overflows: v[0].Overflows + v[1].Overflows,
		Repeated: v[0].Trimmed + v[1].Trimmed, Stops: v[0].Stops + v[1].Stops,
	}
	st.LastActivityNs = max(v[0].LastNs, v[1].LastNs)
	if st.LastActivityNs != 0 {
		st.LastActivity = time.Now().Add(-time.Duration(spliceMonoNs() - st.LastActivityNs))
	}
	return st, err
}

// Wait runs the pair until the tunnel ends and returns the final counters and
// the reason. It reads no data while the kernel keeps up: it watches both
// sockets for FIN, RST and errors (one epoll shared by all pairs, woken only
// by state changes), and
//   - passes a FIN on as a FIN (shutdown(SHUT_WR) of the peer), once every
//     byte received before it has entered the peer's send queue; the other
//     direction keeps flowing;
//   - passes an RST (or any socket error) on as an RST (SO_LINGER 0 + close),
//     and resets both sides if the program met bytes it could not forward
//     exactly once and in order (returns an error wrapping ErrSpliceBroken);
//   - when a reader is slower than its writer and the kernel's queue for it
//     reaches SplicerConfig.MaxQueue, writes out, in order, the bytes the
//     program hands it until the kernel takes over again;
//   - ends the tunnel when no byte moved in either direction for idle (from
//     the kernel's last-activity clock; 0: no idle timeout); once the server's
//     FIN has been passed to the client, clientFin bounds the inactivity
//     instead if it is shorter, and serverFin once the client's FIN has been
//     passed to the server (HAProxy's timeout client-fin/server-fin);
//   - ends it when ctx is done (returns ctx.Err()) or the Splicer closes.
//
// When both FINs have been passed on, the sockets are closed normally (the
// kernel still delivers their send queues); on timeouts and cancellation they
// are closed normally too (the kernel sends an RST if unread bytes remain).
// In every case Wait removes the pair's map entries and closes both sockets
// before it returns. The error is nil unless ctx ended the pair or a syscall
// failed.
func (p *SplicedPair) Wait(ctx context.Context, idle, clientFin, serverFin time.Duration) (SpliceResult, error) {
	if !p.waitStarted.CompareAndSwap(false, true) {
		<-p.done
		return p.result, errors.New("splice: Wait called twice or after Splicer.Close")
	}
	end, err := p.run(ctx, idle, clientFin, serverFin)
	p.finish(end)
	return p.result, err
}

func (p *SplicedPair) run(ctx context.Context, idle, clientFin, serverFin time.Duration) (SpliceEnd, error) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	last := spliceMonoNs() // activity seen so far (kernel clock), or a half-close
	var retry time.Duration
	for {
		end, st, err := p.step()
		if end != 0 {
			return end, err
		}
		// Timeout in force: the idle one, or a fin timeout once half-closed.
		timeout, endKind := idle, SpliceEndIdle
		if p.fin[0] && serverFin > 0 && (timeout <= 0 || serverFin < timeout) {
			timeout, endKind = serverFin, SpliceEndFinTimeout
		}
		if p.fin[1] && clientFin > 0 && (timeout <= 0 || clientFin < timeout) {
			timeout, endKind = clientFin, SpliceEndFinTimeout
		}
		now := spliceMonoNs()
		last = max(last, st.halfClosedAt, st.lastNs)
		var next time.Duration = -1
		if timeout > 0 {
			if now >= last+uint64(timeout) {
				// Maybe: ask the kernel when bytes last moved.
				if s, err := p.readStats(); err == nil {
					last = max(last, s.LastActivityNs)
				}
				if now >= last+uint64(timeout) {
					return endKind, nil
				}
			}
			next = time.Duration(last + uint64(timeout) - now)
		}
		if st.wait > 0 && (next < 0 || st.wait < next) {
			next = st.wait
		}
		if st.retry {
			// Waiting for the kernel to push bytes out (a FIN or an
			// overflow waits for them); no event says when.
			if retry == 0 {
				retry = 500 * time.Microsecond
			} else if retry < 32*time.Millisecond {
				retry *= 2
			}
			if next < 0 || retry < next {
				next = retry
			}
		} else {
			retry = 0
		}
		if next < 0 {
			next = time.Hour
		}
		timer.Reset(next)
		select {
		case <-p.notify:
		case <-timer.C:
		case <-p.stop:
			return SpliceEndCanceled, nil
		case <-ctx.Done():
			return SpliceEndCanceled, ctx.Err()
		}
	}
}

type spliceStepState struct {
	retry        bool          // something waits for the kernel with no event to say when: poll again soon
	wait         time.Duration // poll again after this long (0: not asked)
	halfClosedAt uint64        // CLOCK_MONOTONIC ns of a FIN passed on in this step
	lastNs       uint64        // last activity read from the kernel in this step
}

// wake asks for another step after d at the latest.
func (st *spliceStepState) wake(d time.Duration) {
	if st.wait == 0 || d < st.wait {
		st.wait = d
	}
}

// drainWait guesses how long the peer takes to take need more of the q
// bytes queued for it from side i, from the rate it took them at since the
// last look, or during the last stop (a first stop looks again after 1 ms).
// Each look is a wake-up of the process, which costs more than the look
// itself (measured: most of a stop's cost was waking up), so the guess
// aims at one look per stop, and never sooner than 500 µs.
//
// A peer that took nothing since the last look (a reader that stopped
// reading) is looked at again after twice as long, up to a second, and when
// its socket has room in its send buffer again (stalled: the caller asks for
// EPOLLOUT on it), so that a reader that resumes is not kept waiting.
func (p *SplicedPair) drainWait(i int, q, need uint64) (d time.Duration, stalled bool) {
	now := time.Now()
	d = time.Millisecond
	switch {
	case p.stopSeen[i].IsZero():
	case q < p.stopQ[i]:
		p.drainRate[i] = float64(p.stopQ[i]-q) / now.Sub(p.stopSeen[i]).Seconds() // bytes/s
	default:
		p.stopSeen[i] = now
		p.stopWait[i] = min(2*p.stopWait[i], time.Second)
		return p.stopWait[i], true
	}
	if p.drainRate[i] > 0 {
		d = time.Duration(float64(need) / p.drainRate[i] * float64(time.Second))
	}
	p.stopSeen[i], p.stopQ[i] = now, q
	p.stopWait[i] = min(max(d, 500*time.Microsecond), 50*time.Millisecond)
	return p.stopWait[i], false
}

// step looks at both sockets once and does what their state asks.
func (p *SplicedPair) step() (SpliceEnd, spliceStepState, error) {
	var st spliceStepState
	pfd := []unix.PollFd{
		{Fd: int32(p.fd[0]), Events: unix.POLLRDHUP},
		{Fd: int32(p.fd[1]), Events: unix.POLLRDHUP},
	}
	for {
		_, err := unix.Poll(pfd, 0)
		if err == nil {
			break
		}
		if err != unix.EINTR {
			return SpliceEndError, st, fmt.Errorf("splice: poll: %w", err)
		}
	}
	for i := 0; i < 2; i++ {
		re := pfd[i].Revents
		if re&unix.POLLNVAL != 0 {
			return SpliceEndError, st, fmt.Errorf("splice: %s descriptor closed under the pair", sideName(i))
		}
		if re&unix.POLLERR != 0 {
			if i == 0 {
				return SpliceEndClientReset, st, nil
			}
			return SpliceEndServerReset, st, nil
		}
	}
	want := [2]uint32{spliceEpollBase, spliceEpollBase}
	for i := 0; i < 2; i++ {
		rdhup := !p.fin[i] && pfd[i].Revents&unix.POLLRDHUP != 0
		if rdhup && p.stopped[i] {
			// The sender is done: what it sent is in the receive queue.
			if _, err := p.restartOrTail(i); err != nil {
				return SpliceEndError, st, fmt.Errorf("splice: %w", err)
			}
		}
		if rdhup {
			// i sent its FIN: make the program see everything before it.
			p.kick(i)
		}
		ks, err := p.lookup(i)
		if err != nil {
			return SpliceEndError, st, fmt.Errorf("splice: %w", err)
		}
		if ks.Broken != 0 {
			// The program met bytes it cannot forward as received and
			// drops everything since: a reset, not a corrupt stream.
			return SpliceEndError, st, fmt.Errorf("splice: %s: %w", sideName(i), spliceBrokenError(ks.Broken))
		}
		st.lastNs = max(st.lastNs, ks.LastNs)
		if ks.Stopped != 0 || p.stopped[i] {
			// Stopped in the kernel (splice_sockops): start again once
			// the peer has taken most of the queue.
			p.stopped[i] = true
			q, err := p.queued(i, ks)
			if err != nil {
				return SpliceEndError, st, fmt.Errorf("splice: %w", err)
			}
			// Restart when the queue and what waits in i's receive
			// queue (which the restart runs through the program at once)
			// fit in half the limit, or the queue is empty; no event says
			// when, so look again when it should be, from the rate the
			// peer has been taking it at.
			if lim := uint64(p.s.cfg.MaxQueue) / 16; q > lim {
				d, stalled := p.drainWait(i, q, q-lim)
				st.wake(d)
				if stalled {
					want[1-i] |= unix.EPOLLOUT
				}
				continue
			}
			p.stopSeen[i] = time.Time{}
			if ks, err = p.restartOrTail(i); err != nil {
				return SpliceEndError, st, fmt.Errorf("splice: %w", err)
			}
		}
		if ks.Passed > p.drained[i] || p.ov[i].peeked > 0 {
			end, err := p.drain(i, &ks, &st, &want)
			if end != 0 {
				return end, st, err
			}
		}
		if ks.Passed > p.drained[i] || p.ov[i].peeked > 0 {
			continue // an overflow's bytes go first (they precede the rest)
		}
		if p.tail[i].on {
			end, err := p.copyTail(i, ks, &st, &want)
			if end != 0 {
				return end, st, err
			}
			if !p.tail[i].eof || p.tail[i].sent < p.tail[i].n {
				continue
			}
		}
		if !rdhup {
			continue
		}
		ok, err := p.flushed(i, ks)
		if err != nil {
			return SpliceEndError, st, fmt.Errorf("splice: %w", err)
		}
		if !ok {
			st.retry = true
			continue
		}
		if err := unix.Shutdown(p.fd[1-i], unix.SHUT_WR); err != nil && err != unix.ENOTCONN {
			return SpliceEndError, st, fmt.Errorf("splice: pass FIN to %s: %w", sideName(1-i), err)
		}
		p.fin[i] = true
		st.halfClosedAt = spliceMonoNs()
	}
	for i := 0; i < 2; i++ {
		if want[i] != p.evs[i] {
			if err := p.s.ep.mod(p, i, want[i]); err != nil {
				return SpliceEndError, st, fmt.Errorf("splice: %w", err)
			}
			p.evs[i] = want[i]
		}
	}
	if p.fin[0] && p.fin[1] {
		return SpliceEndClosed, st, nil
	}
	return 0, st, nil
}

// drain moves the overflow of side i — bytes the program passed to userspace
// because the kernel's queue for the peer was full — into the peer, in order,
// and hands the direction back to the kernel:
//  1. it waits until that queue has emptied (everything redirected before the
//     overflow is in the peer's send queue). Meanwhile it reads nothing: the
//     passed bytes stay charged to i's receive buffer, so TCP's window closes
//     on the sender — the backpressure the redirect path lacks;
//  2. it peeks at everything i holds (one read: the window is shut, so that
//     is all the sender could send), writes it to the peer, records it in
//     splice_drained, and only then consumes it. Consuming reopens the
//     window, and the program resumes redirecting at the first skb, which
//     finds drained == passed. (Reading in smaller pieces, or recording
//     after consuming, let a saturating sender refill the window as fast as
//     this loop copied: a direction stayed in userspace for most of 4 GiB.)
//     So an overflow costs one receive buffer's worth of copying.
//
// It never blocks: it asks for EPOLLIN on i / EPOLLOUT on the peer in want,
// or for a retry.
func (p *SplicedPair) drain(i int, ks *spliceSpliceSock, st *spliceStepState, want *[2]uint32) (SpliceEnd, error) {
	ov := &p.ov[i]
	src := p.fd[i]
	for {
		if !ov.started {
			ok, err := p.flushed(i, *ks)
			if err != nil {
				return SpliceEndError, fmt.Errorf("splice: %w", err)
			}
			if !ok {
				st.retry = true
				return 0, nil
			}
			ov.started = true
			ov.buf = spliceBufPool.Get().(*[]byte)
			p.s.log.Debug("splice: overflow episode", "pair", p.id, "side", sideName(i), "passed", ks.Passed-p.drained[i])
		}
		if ov.peeked > 0 {
			if done, end, err := p.writePeer(i, (*ov.buf)[:ov.peeked], &ov.sent, want, "the overflow"); !done {
				return end, err
			}
			// Written: tell the program, then consume what was peeked
			// (the same bytes: only this goroutine reads i). In this
			// order, because consuming reopens the receive window: a
			// sender that is waiting for it sends at once, and its skb
			// must find drained == passed (all written out) or the
			// direction stays in userspace as long as the sender keeps up
			// with this loop (measured: hundreds of MB per episode).
			// Bytes written but not yet consumed are behind any the
			// program now redirects only in the socket's ingress queue,
			// which the peer never sees.
			p.drained[i] += uint64(ov.peeked)
			if err := p.s.objs.SpliceDrained.Update(p.cookie[i], p.drained[i], ebpf.UpdateExist); err != nil {
				return SpliceEndError, fmt.Errorf("splice: record overflow of %s: %w", sideName(i), err)
			}
			for done := 0; done < ov.peeked; {
				n, _, err := unix.Recvfrom(src, (*ov.buf)[done:ov.peeked], unix.MSG_DONTWAIT)
				if n > 0 {
					done += n
					continue
				}
				if err != unix.EINTR {
					return SpliceEndError, fmt.Errorf("splice: consume overflow of %s: %d of %d bytes: %w", sideName(i), done, ov.peeked, err)
				}
			}
			ov.peeked, ov.sent = 0, 0
		}
		if p.drained[i] >= ks.Passed {
			// Caught up with what the program had passed when we looked.
			// From the record above on, its next skb may be redirected
			// again, and one after that passed again: bytes passed now
			// may have redirected bytes in front of them, still queued
			// for the peer. So the episode ends here; passed bytes found
			// now start a new one, which first waits for the peer's
			// queue to empty like the first.
			ov.started = false
			ov.release()
			if err := p.s.objs.SpliceState.Lookup(p.cookie[i], ks); err != nil {
				return SpliceEndError, fmt.Errorf("splice: lookup counters of %s: %w", sideName(i), err)
			}
			if ks.Passed <= p.drained[i] {
				return 0, nil
			}
			continue
		}
		// Peek everything passed and not yet written in one go: the
		// window stays shut until it is consumed, so the last byte the
		// sender could send is in this read and, once written and
		// recorded, the program finds drained == passed at the next skb.
		// A smaller read reopens the window before the end and the sender
		// refills it as fast as this loop copies.
		ov.grow(ks.Passed - p.drained[i])
		n, _, err := unix.Recvfrom(src, *ov.buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch {
		case n > 0:
			ov.peeked = n
		case err == unix.EINTR:
		case err == nil || err == unix.EAGAIN:
			// Passed but not readable yet: the kernel worker delivers it
			// behind skbs still queued for i's own egress.
			want[i] |= unix.EPOLLIN
			st.retry = true
			return 0, nil
		default:
			return SpliceEndError, fmt.Errorf("splice: read overflow from %s: %w", sideName(i), err)
		}
	}
}

// finish tears the pair down once: stop watching, read the final counters,
// remove the map entries, pass an RST on if that is how it ended, close.
func (p *SplicedPair) finish(end SpliceEnd) {
	p.finishOnce.Do(func() {
		s := p.s
		s.ep.remove(p)
		st, _ := p.readStats()
		if s.log.Enabled(context.Background(), slog.LevelDebug) {
			for i := 0; i < 2; i++ {
				ks, _ := p.lookup(i)
				w, _ := spliceWritten(p.fd[1-i])
				s.log.Debug("splice: pair ended", "pair", p.id, "end", end, "side", sideName(i),
					"redirected", ks.Bytes, "passed", ks.Passed, "overflows", ks.Overflows, "queued_max", ks.QueuedMax,
					"repeated", ks.Trimmed, "broken", ks.Broken, "wrote", p.wrote[i], "peer_written", w-p.base[1-i], "fin", p.fin[i])
			}
		}
		p.removeUpTo(spliceStepsAll)
		switch end {
		case SpliceEndClientReset, SpliceEndServerReset, SpliceEndError:
			// An RST answers an RST: SO_LINGER 0 makes close send one.
			for _, fd := range p.fd {
				unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
			}
		}
		p.closeFDs()
		for i := range p.ov {
			p.ov[i].release()
			if p.tail[i].buf != nil {
				spliceBufPool.Put(p.tail[i].buf)
				p.tail[i].buf = nil
			}
		}
		p.result = SpliceResult{SpliceStats: st, End: end, ClientFin: p.fin[0], ServerFin: p.fin[1], Duration: time.Since(p.start)}
		s.mu.Lock()
		delete(s.pairs, p.id)
		delete(s.byCookie, p.cookie[0])
		delete(s.byCookie, p.cookie[1])
		s.mu.Unlock()
		close(p.done)
	})
}

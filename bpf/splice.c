// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// splice: moves the bytes of a tunnel (two connected TCP sockets owned by the
// proxy) between its sockets inside the kernel.
//
// Every tunnel socket is in these maps, keyed by its socket cookie:
//   splice_state   its peer's cookie and what this program counts;
//   splice_drained how much of the overflow the daemon has written out;
//   splice_targets a SOCKHASH without programs: the redirect targets. A
//                  socket is here before any socket may redirect to it;
//   splice_socks   the SOCKHASH the verdict program is attached to: a socket
//                  here has its receive path taken over by the program.
// The daemon inserts state, drained, targets, then socks, so the first socket
// that starts redirecting always finds its peer, and removes them in reverse,
// only once nothing is left queued for the peer (removing a socket from its
// last map drops whatever the kernel still queued for it).
//
// The program runs for each skb that arrives on a tunnel socket (and, right
// after insertion, for those already waiting in its receive queue: the daemon
// forces a data_ready with a non-blocking recv), cuts off any bytes it has
// already seen (by TCP sequence number, see splice_redirect), redirects it to
// the egress of the peer, and counts it.
//
// Flow control. A redirected skb is queued on the peer's psock and sent by a
// kernel worker as the peer's send buffer allows; on the way it stops being
// charged to the receiving socket (tcp_read_skb orphans it), so nothing
// limits that queue: with a slow reader on the peer it grows without bound
// (hundreds of MB per second on loopback). So the program measures it —
// bytes redirected minus bytes that entered the peer's send queue (the peer's
// write_seq) — and when it exceeds splice_queue_max:
//
// With splice_sockops attached (the daemon's cgroup), it asks for the socket
// to be stopped: splice_sockops takes it out of splice_socks (see there why
// there), the socket then queues what arrives like any TCP socket nobody
// reads, its window closes on the sender, and the daemon puts it back once
// the queue has drained; the program goes on from the receive queue. No byte
// leaves the kernel. If the sender closes meanwhile, the socket cannot go
// back (a sockhash takes only established sockets) and the daemon copies the
// rest, once.
//
// Without it, it stops redirecting:
// each skb is then passed to the socket's own ingress queue, where it stays
// charged to the socket's receive buffer, so TCP's window closes on the sender
// as it would for any slow reader. It tells the daemon (splice_events), which
// waits for the peer's psock queue to empty, reads the passed bytes and writes
// them to the peer in order, and records that in splice_drained. When drained
// has caught up with passed, the next skb is redirected again.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "splice_maps.h"

char __license[] SEC("license") = "Dual BSD/GPL";

extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;

// Most bytes that may wait in a peer's psock queue before the program passes
// to userspace instead (set at load time).
const volatile __u32 splice_queue_max = 4 << 20;

// Set by the daemon once splice_sockops is attached to its cgroup.
volatile __u32 splice_stop_sockops = 0;

// bpf_skb_adjust_room cuts at most 4095 bytes per call from an sk_skb; an
// overlap needing more than SPLICE_TRIM_STEPS calls (2 MiB) breaks the stream.
#define SPLICE_TRIM_STEP 4095
#define SPLICE_TRIM_STEPS 512

static __always_inline struct splice_total *splice_totals_get(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&splice_totals, &zero);
}

// splice_trim cuts the first n bytes off skb.
static __always_inline int splice_trim(struct __sk_buff *skb, __u32 n)
{
	for (int i = 0; i < SPLICE_TRIM_STEPS && n > 0; i++) {
		__u32 step = n < SPLICE_TRIM_STEP ? n : SPLICE_TRIM_STEP;

		if (bpf_skb_adjust_room(skb, -(__s32)step, 0, 0) != 0)
			return -1;
		n -= step;
	}
	return n ? -1 : 0;
}

// splice_break marks s broken (see SPLICE_BROKEN_*) and wakes the daemon,
// which resets the tunnel. Everything received from now on is dropped.
static __always_inline int splice_break(struct splice_sock *s, __u64 *cookie, __u32 why)
{
	if (!s->broken) {
		s->broken = why;
		bpf_ringbuf_output(&splice_events, cookie, sizeof(*cookie), 0);
	}
	return SK_DROP;
}

static __always_inline int splice_redirect(struct __sk_buff *skb)
{
	__u64 cookie = bpf_get_socket_cookie(skb);
	struct splice_sock *s = bpf_map_lookup_elem(&splice_state, &cookie);
	__u32 len = skb->len;

	if (!s)
		return SK_PASS; // not one of ours: leave it to userspace
	if (s->broken)
		return SK_DROP; // the daemon resets the tunnel

	// Each byte exactly once. tcp_read_skb (6.18) hands the program whole
	// skbs and ignores copied_seq, but TCP queues a segment that starts
	// before rcv_nxt (a retransmission overlapping bytes already
	// received: loopback drops segments under receive-memory pressure, and
	// an overflowing tunnel keeps its receive buffer full) without cutting
	// the old bytes off, leaving that to the reader's copied_seq offset.
	// Measured: the peer got a 64 KiB segment twice. So the program keeps
	// the sequence number of the next new byte and cuts any repeat off the
	// front of the skb; it starts from copied_seq, where the daemon's last
	// read stopped (a partly read skb is cut the same way).
	struct sk_buff *kskb = bpf_cast_to_kern_ctx(skb);
	struct tcp_skb_cb *cb = (struct tcp_skb_cb *)&kskb->cb[0];
	__u32 seq = BPF_CORE_READ(cb, seq);
	if (!s->rcv_next_set) {
		struct tcp_sock *rtp = (struct tcp_sock *)BPF_CORE_READ(kskb, sk);
		if (!rtp)
			return splice_break(s, &cookie, SPLICE_BROKEN_GAP);
		s->rcv_next = BPF_CORE_READ(rtp, copied_seq);
		s->rcv_next_set = 1;
	}
	__s32 ahead = (__s32)(seq - s->rcv_next);
	if (ahead > 0)
		return splice_break(s, &cookie, SPLICE_BROKEN_GAP); // bytes we never saw
	if (ahead < 0) {
		__u32 dup = -ahead;
		if (dup >= len) {
			s->trimmed += len;
			return SK_DROP; // nothing new (or the FIN again)
		}
		if (splice_trim(skb, dup) != 0 || skb->len != len - dup)
			return splice_break(s, &cookie, SPLICE_BROKEN_TRIM);
		s->trimmed += dup;
		seq += dup;
		len -= dup;
	}
	s->rcv_next = seq + len;

	// An skb without payload is the FIN: tcp_fin() has already recorded it
	// on the socket (the daemon sees POLLRDHUP and passes it on once the
	// bytes before it have left). Redirecting an empty skb would make the
	// peer's psock worker report EPIPE, so drop it: it carries no bytes.
	if (len == 0)
		return SK_DROP;

	__u64 *dp = bpf_map_lookup_elem(&splice_drained, &cookie);
	__u64 drained = dp ? *dp : 0;
	__u64 peer = s->peer;
	struct bpf_sock *psk = bpf_map_lookup_elem(&splice_targets, &peer);
	if (!psk)
		goto overflow; // peer gone (teardown): keep the bytes in order
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(psk);
	__u32 wseq = tp ? BPF_CORE_READ(tp, write_seq) : 0;
	bpf_sk_release(psk);
	if (!tp)
		goto overflow;
	if (!s->seq0_set) {
		// Nothing was redirected from here yet and the daemon writes to
		// the peer only in overflow: everything after this point of the
		// peer's stream comes from this socket.
		s->seq0 = wseq;
		s->seq0_set = 1;
	}
	// Bytes from here still queued on the peer's psock (mod 2^32).
	__u32 queued = (__u32)(s->bytes + drained) - (wseq - s->seq0);

	if (s->paused) {
		if (drained != s->passed)
			goto pass;
		s->paused = 0; // the daemon has written out all it was handed
	} else if (queued > splice_queue_max) {
		// With splice_sockops attached, stop this socket's receive path
		// instead (see the flow control note): ask, and keep redirecting
		// until it is done, at an ACK the socket sends with its receive
		// queue empty. A restart runs a whole receive buffer through here
		// at once, so only a queue past twice the limit plus the receive
		// buffer (no such ACK came: something is wrong) falls back to the
		// overflow path.
		__u64 backstop = 2 * (__u64)splice_queue_max + (__u32)BPF_CORE_READ(kskb, sk, sk_rcvbuf);
		if (!splice_stop_sockops || queued > backstop)
			goto overflow;
		s->stop = 1;
	}
	if (bpf_sk_redirect_hash(skb, &splice_targets, &peer, 0) != SK_PASS)
		goto overflow;
	// One socket's verdicts are serialised by its lock; the atomic add
	// keeps the counter exact even if that changes.
	__sync_fetch_and_add(&s->bytes, len);
	s->last_ns = bpf_ktime_get_ns();
	if (queued + len > s->queued_max)
		s->queued_max = queued + len;
	return SK_PASS;

overflow:
	if (!s->paused) {
		// Wake the daemon. If the ring is full, keep redirecting: the
		// next skb tries again (a pause nobody hears of would stall).
		if (bpf_ringbuf_output(&splice_events, &cookie, sizeof(cookie), 0) != 0) {
			if (bpf_sk_redirect_hash(skb, &splice_targets, &peer, 0) == SK_PASS) {
				__sync_fetch_and_add(&s->bytes, len);
				s->last_ns = bpf_ktime_get_ns();
				return SK_PASS;
			}
			// Not redirectable and no way to tell: keep the bytes
			// readable, in order, for the daemon's next look.
		}
		s->paused = 1;
		s->overflows++;
		struct splice_total *t = splice_totals_get();
		if (t)
			t->overflows++;
	}
pass:
	__sync_fetch_and_add(&s->passed, len);
	struct splice_total *tot = splice_totals_get();
	if (tot)
		tot->overflow_bytes += len;
	s->last_ns = bpf_ktime_get_ns();
	return SK_PASS; // no redirect set: to this socket's own ingress queue
}

// The two attach types run the same code; the daemon attaches one (without a
// stream parser both take the sk_data_ready -> tcp_read_skb path).
SEC("sk_skb/stream_verdict")
int splice_stream_verdict(struct __sk_buff *skb)
{
	return splice_redirect(skb);
}

SEC("sk_skb/verdict")
int splice_skb_verdict(struct __sk_buff *skb)
{
	return splice_redirect(skb);
}

// splice_sockops stops a tunnel socket's receive path when its peer's queue
// is over the limit: it takes the socket out of splice_socks, which stops the
// verdict program for it, so that TCP queues what arrives in the receive
// queue and closes its window on the sender, as for any slow reader; the
// daemon puts it back when the queue has drained, and the program goes on
// from the receive queue, in order. No byte goes through userspace.
//
// Why here: taking a socket out of the sockhash from userspace races with a
// verdict in progress on another CPU, and the kernel drops the skb it is
// handing over when it finds the program gone (sk_psock_verdict_recv). This
// program runs with the socket locked (it is called when the socket sends a
// segment, an ACK typically, and every data skb makes it send one), and
// deletes only when the receive queue is empty, i.e. when no verdict loop
// can have an skb left to hand over.
//
// Only tunnel sockets call it: splice_setsockopt asks for the callback when
// the daemon splices them, so the daemon's other sockets (HTTP) pay nothing.
SEC("sockops")
int splice_sockops(struct bpf_sock_ops *skops)
{
	if (skops->op != BPF_SOCK_OPS_HDR_OPT_LEN_CB)
		return 1;
	__u64 cookie = bpf_get_socket_cookie(skops);
	struct splice_sock *s = bpf_map_lookup_elem(&splice_state, &cookie);
	if (!s || !s->stop || s->stopped)
		return 1;
	struct bpf_sock *sk = skops->sk;
	if (!sk)
		return 1;
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	if (!tp || tp->inet_conn.icsk_inet.sk.sk_receive_queue.qlen != 0)
		return 1;
	if (bpf_map_delete_elem(&splice_socks, &cookie) == 0) {
		s->stopped = 1;
		s->stops++;
		struct splice_total *t = splice_totals_get();
		if (t)
			t->stops++;
		bpf_ringbuf_output(&splice_events, &cookie, sizeof(cookie), 0);
	}
	return 1;
}

#define SOL_TCP 6

// splice_setsockopt: the daemon's setsockopt(fd, SOL_TCP,
// TCP_BPF_SOCK_OPS_CB_FLAGS) — not an option userspace can set otherwise —
// asks for splice_sockops on that socket, for each segment it sends
// (BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG; the other flags, the counters', stay).
// The kernel does not see the call.
SEC("cgroup/setsockopt")
int splice_setsockopt(struct bpf_sockopt *ctx)
{
	if (ctx->level != SOL_TCP || ctx->optname != TCP_BPF_SOCK_OPS_CB_FLAGS) {
		if (ctx->optlen > 4096)
			ctx->optlen = 0; // a large optval stays the kernel's own buffer
		return 1;
	}
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return 0; // EPERM
	int flags = 0;
	if (bpf_getsockopt(sk, SOL_TCP, TCP_BPF_SOCK_OPS_CB_FLAGS, &flags, sizeof(flags)))
		flags = BPF_SOCK_OPS_STATE_CB_FLAG; // keep the counters' (harmless where unset)
	flags |= BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG;
	if (bpf_setsockopt(sk, SOL_TCP, TCP_BPF_SOCK_OPS_CB_FLAGS, &flags, sizeof(flags)))
		return 0;
	ctx->optlen = -1; // handled: the kernel does not see it
	return 1;
}

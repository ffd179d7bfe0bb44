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
// forces a data_ready with a non-blocking recv), redirects it to the egress of
// the peer, and counts it.
//
// Flow control. A redirected skb is queued on the peer's psock and sent by a
// kernel worker as the peer's send buffer allows; on the way it stops being
// charged to the receiving socket (tcp_read_skb orphans it), so nothing
// limits that queue: with a slow reader on the peer it grows without bound
// (hundreds of MB per second on loopback). So the program measures it —
// bytes redirected minus bytes that entered the peer's send queue (the peer's
// write_seq) — and when it exceeds splice_queue_max it stops redirecting:
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

// Most bytes that may wait in a peer's psock queue before the program passes
// to userspace instead (set at load time).
const volatile __u32 splice_queue_max = 4 << 20;

static __always_inline int splice_redirect(struct __sk_buff *skb)
{
	__u64 cookie = bpf_get_socket_cookie(skb);
	struct splice_sock *s = bpf_map_lookup_elem(&splice_state, &cookie);
	__u32 len = skb->len;

	if (!s)
		return SK_PASS; // not one of ours: leave it to userspace
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
		goto overflow;
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
	}
pass:
	__sync_fetch_and_add(&s->passed, len);
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

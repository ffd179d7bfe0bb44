// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// Maps of splice.c. The sizes are defaults: the daemon sets max_entries at
// load time (two entries per tunnel).
#ifndef SPLICE_MAPS_H
#define SPLICE_MAPS_H

#define SPLICE_MAX_SOCKETS 65536

// One tunnel socket, keyed by its socket cookie. The daemon writes it once at
// insertion (peer, last_ns = now, the rest 0); from then on only the verdict
// program writes it (the daemon reads).
struct splice_sock {
	__u64 peer;       // socket cookie of the other socket of the tunnel
	__u64 bytes;      // bytes received here and redirected to the peer's egress
	__u64 passed;     // bytes received here and handed to userspace (overflow)
	__u64 last_ns;    // bpf_ktime_get_ns() (CLOCK_MONOTONIC) of the last byte
	__u64 overflows;  // times the peer's queue went over the limit
	__u64 trimmed;    // bytes handed to the program a second time and cut off
	__u64 stops;      // times splice_sockops took the socket out of splice_socks
	__u32 queued_max; // most bytes seen queued in the peer's psock
	__u32 seq0;       // the peer's write_seq at the first verdict
	__u32 rcv_next;   // TCP sequence number of the next byte not yet seen here
	__u32 broken;     // SPLICE_BROKEN_*: the stream can no longer be forwarded as received
	__u8 seq0_set;    // seq0 is valid
	__u8 paused;      // overflow: passing to userspace until it has caught up
	__u8 rcv_next_set; // rcv_next is valid
	__u8 stop;        // the peer's queue is over the limit: splice_sockops takes this socket out of splice_socks
	__u8 stopped;     // splice_sockops has taken it out; the daemon puts it back (and clears both)
	__u8 pad[3];
};

// Why a socket's stream broke (splice_sock.broken). The program then drops
// everything it receives and wakes the daemon, which resets the tunnel: a
// peer sees an RST instead of a stream with a hole or a repeat in it.
#define SPLICE_BROKEN_GAP 1  // an skb started after the next expected byte
#define SPLICE_BROKEN_TRIM 2 // an skb repeating bytes could not be cut

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SPLICE_MAX_SOCKETS);
	__type(key, __u64);
	__type(value, struct splice_sock);
} splice_state SEC(".maps");

// Written by the daemon only: of the bytes passed to it, how many it has
// written into the peer's send queue. The program resumes redirecting when
// this catches up with splice_sock.passed.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SPLICE_MAX_SOCKETS);
	__type(key, __u64);
	__type(value, __u64);
} splice_drained SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, SPLICE_MAX_SOCKETS);
	__type(key, __u64);
	__type(value, __u64);
} splice_targets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, SPLICE_MAX_SOCKETS);
	__type(key, __u64);
	__type(value, __u64);
} splice_socks SEC(".maps");

// Totals over all tunnels, for the metrics: per CPU, summed by the daemon.
struct splice_total {
	__u64 stops;          // sockets splice_sockops stopped (flow control in the kernel)
	__u64 overflows;      // overflow episodes (flow control through userspace)
	__u64 overflow_bytes; // bytes passed to userspace by them
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct splice_total);
} splice_totals SEC(".maps");

// Socket cookies of sockets that just went into overflow: wakes the daemon.
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} splice_events SEC(".maps");

#endif

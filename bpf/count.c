// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// count: the kernel's own view of sluice's connections.
//
// count_sockops (cgroup sockops, attached to the daemon's cgroup) keeps live
// counters of ESTABLISHED TCP sockets: per backend server and per (source IP,
// server) for connections the daemon opens, per frontend for connections it
// accepts. Only addresses that the daemon registered in `servers` /
// `frontends` are counted. A socket is counted when it enters ESTABLISHED and
// uncounted when it leaves it, so the counters equal what `ss state
// established` reports for those tuples (for sockets of this cgroup).
//
// count_scan (iter/tcp) walks every TCP socket of the reader's network
// namespace, including timewait and request minisocks, and aggregates per
// (source IP, registered server) how many are ESTABLISHED, TIME_WAIT, and in
// any state at all, into `occupancy`, tagged with the pass number `scan_gen`.

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "count_keys.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AF_INET 2
#define AF_INET6 10

// Which counters a socket was added to, remembered in its mark so that it is
// taken out of exactly those (and only once), whatever happens to the
// registered sets in between. A counter that could not be created (map full)
// is not flagged, so the socket is never subtracted from it either.
#define COUNTED_SERVER 1
#define COUNTED_PAIR 2
#define COUNTED_FRONTEND 4
// Tracked but not ESTABLISHED yet: a passive socket gets its
// PASSIVE_ESTABLISHED_CB just before it enters ESTABLISHED (a fast-open one
// while the handshake is still going on); it is counted when it does.
#define PENDING 8

#define KIND_SERVER 1   // active side: src + server
#define KIND_FRONTEND 2 // passive side: key.server is the frontend

struct mark {
	struct pair key;
	__u32 kind;    // KIND_*
	__u32 counted; // COUNTED_* bits still owed a decrement, or PENDING
};

// Registered addresses (value unused). Userspace replaces them on reload.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, COUNT_MAX_ADDRS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct endpoint);
	__type(value, __u8);
} servers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, COUNT_MAX_ADDRS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct endpoint);
	__type(value, __u8);
} frontends SEC(".maps");

// Live ESTABLISHED counters. Entries are never deleted by the programs (a
// delete racing with another CPU's add would lose it); userspace removes
// entries that are zero and whose address has been unregistered for a while.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, COUNT_MAX_ADDRS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct endpoint);
	__type(value, __s64);
} server_established SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, COUNT_MAX_PAIRS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pair);
	__type(value, __s64);
} pair_established SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, COUNT_MAX_ADDRS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct endpoint);
	__type(value, __s64);
} frontend_established SEC(".maps");

// One mark per counted socket, private to this instance of the program: other
// instances attached to the same cgroup have their own.
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct mark);
} marks SEC(".maps");

// Results of count_scan; entries whose gen is not the current pass are stale.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, COUNT_MAX_PAIRS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pair);
	__type(value, struct occupancy);
} occupancy SEC(".maps");

// Set by userspace before each pass of count_scan.
__u32 scan_gen;
// Sockets that could not be counted (a map was full, or no mark could be
// stored): the counters are then low by this much.
__u64 lost;

static __always_inline void ep_v4(struct endpoint *e, __u32 ip, __u16 port)
{
	e->ip[0] = ip;
	e->port = port;
	e->family = AF_INET;
}

// IPv4-mapped IPv6 addresses (an AF_INET6 socket talking IPv4) are keyed as
// plain IPv4, so that one server has one key whatever the socket family.
static __always_inline void ep_v6(struct endpoint *e, __u32 a, __u32 b, __u32 c, __u32 d, __u16 port)
{
	if (a == 0 && b == 0 && c == bpf_htonl(0xffff)) {
		ep_v4(e, d, port);
		return;
	}
	e->ip[0] = a;
	e->ip[1] = b;
	e->ip[2] = c;
	e->ip[3] = d;
	e->port = port;
	e->family = AF_INET6;
}

static __always_inline int inc(void *map, const void *key)
{
	__s64 one = 1, *v;

	v = bpf_map_lookup_elem(map, key);
	if (v) {
		__sync_fetch_and_add(v, 1);
		return 1;
	}
	if (bpf_map_update_elem(map, key, &one, BPF_NOEXIST) == 0)
		return 1;
	// Another CPU created it in between, or the map is full.
	v = bpf_map_lookup_elem(map, key);
	if (v) {
		__sync_fetch_and_add(v, 1);
		return 1;
	}
	__sync_fetch_and_add(&lost, 1);
	return 0;
}

static __always_inline void dec(void *map, const void *key)
{
	__s64 *v = bpf_map_lookup_elem(map, key);

	if (v)
		__sync_fetch_and_add(v, -1);
}

// Fills the socket's local and remote endpoints; 0 if not IPv4/IPv6.
static __always_inline int sockops_eps(struct bpf_sock_ops *skops, struct endpoint *local, struct endpoint *remote)
{
	__u16 lport = skops->local_port;            // host order
	__u16 rport = bpf_ntohl(skops->remote_port); // network order, in the upper half

	if (skops->family == AF_INET) {
		ep_v4(local, skops->local_ip4, lport);
		ep_v4(remote, skops->remote_ip4, rport);
		return 1;
	}
	if (skops->family == AF_INET6) {
		ep_v6(local, skops->local_ip6[0], skops->local_ip6[1], skops->local_ip6[2], skops->local_ip6[3], lport);
		ep_v6(remote, skops->remote_ip6[0], skops->remote_ip6[1], skops->remote_ip6[2], skops->remote_ip6[3],
		      rport);
		return 1;
	}
	return 0;
}

// Asks for BPF_SOCK_OPS_STATE_CB on this socket without clearing flags that
// other programs (or other instances of this one) have set.
static __always_inline void want_state_cb(struct bpf_sock_ops *skops)
{
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
}

static __always_inline void count_mark(struct mark *m)
{
	struct pair key = m->key;
	__u32 counted = 0;

	if (m->kind == KIND_SERVER) {
		if (inc(&server_established, &key.server))
			counted |= COUNTED_SERVER;
		if (inc(&pair_established, &key))
			counted |= COUNTED_PAIR;
	} else {
		if (inc(&frontend_established, &key.server))
			counted |= COUNTED_FRONTEND;
	}
	m->counted = counted;
}

// track marks the socket with its key and counts it now, or when it enters
// ESTABLISHED; either way it asks to hear of its state changes.
static __always_inline void track(struct bpf_sock_ops *skops, __u32 kind, const struct pair *key)
{
	struct bpf_sock *sk = skops->sk;
	struct mark *m;

	if (!sk)
		return;
	m = bpf_sk_storage_get(&marks, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!m) {
		__sync_fetch_and_add(&lost, 1);
		return;
	}
	if (m->counted) // already tracked
		return;
	m->key = *key;
	m->kind = kind;
	if (skops->state == BPF_TCP_ESTABLISHED)
		count_mark(m);
	else
		m->counted = PENDING;
	want_state_cb(skops);
}

static __always_inline void on_active(struct bpf_sock_ops *skops)
{
	struct endpoint local = {}, server = {};
	struct pair key = {};

	if (!sockops_eps(skops, &local, &server))
		return;
	if (!bpf_map_lookup_elem(&servers, &server))
		return;
	key.src = local;
	key.src.port = 0;
	key.server = server;
	track(skops, KIND_SERVER, &key);
}

static __always_inline void on_passive(struct bpf_sock_ops *skops)
{
	struct endpoint local = {}, remote = {};
	struct pair key = {};

	if (!sockops_eps(skops, &local, &remote))
		return;
	// The frontend is the listening address: the accepted socket's own local
	// address, or the wildcard of its family, or [::] for IPv4 clients of a
	// dual-stack listener. Linux refuses overlapping listeners, so at most
	// one of these is a frontend.
	key.server = local;
	if (!bpf_map_lookup_elem(&frontends, &key.server)) {
		key.server.ip[0] = key.server.ip[1] = key.server.ip[2] = key.server.ip[3] = 0;
		if (!bpf_map_lookup_elem(&frontends, &key.server)) {
			if (skops->family != AF_INET6 || local.family != AF_INET)
				return;
			key.server.family = AF_INET6;
			if (!bpf_map_lookup_elem(&frontends, &key.server))
				return;
		}
	}
	track(skops, KIND_FRONTEND, &key);
}

static __always_inline void on_state(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	struct mark *m;
	struct pair key;
	__u32 counted;

	if (!sk)
		return;
	m = bpf_sk_storage_get(&marks, sk, 0, 0);
	if (!m)
		return;
	if (skops->args[1] == BPF_TCP_ESTABLISHED) {
		if (m->counted == PENDING)
			count_mark(m);
		return;
	}
	// Any other new state leaves ESTABLISHED (or gives up before it). State
	// changes of one socket are serialised by its lock; the exchange still
	// makes "decrement once" independent of that.
	counted = __sync_lock_test_and_set(&m->counted, 0);
	if (!(counted & (COUNTED_SERVER | COUNTED_PAIR | COUNTED_FRONTEND)))
		return;
	key = m->key;
	if (counted & COUNTED_SERVER)
		dec(&server_established, &key.server);
	if (counted & COUNTED_PAIR)
		dec(&pair_established, &key);
	if (counted & COUNTED_FRONTEND)
		dec(&frontend_established, &key.server);
}

SEC("sockops")
int count_sockops(struct bpf_sock_ops *skops)
{
	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		on_active(skops);
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		on_passive(skops);
		break;
	case BPF_SOCK_OPS_STATE_CB: // args: old state, new state
		on_state(skops);
		break;
	}
	return 1;
}

SEC("iter/tcp")
int count_scan(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct tcp_timewait_sock *tw;
	struct occupancy *o, fresh = {};
	struct pair key = {};
	__u32 gen = scan_gen;
	__u16 family, dport;
	__u8 state;

	if (!skc)
		return 0;
	dport = bpf_ntohs(skc->skc_dport);
	if (dport == 0) // listeners
		return 0;
	family = skc->skc_family;
	if (family == AF_INET) {
		ep_v4(&key.src, skc->skc_rcv_saddr, 0);
		ep_v4(&key.server, skc->skc_daddr, dport);
	} else if (family == AF_INET6) {
		ep_v6(&key.src, skc->skc_v6_rcv_saddr.in6_u.u6_addr32[0], skc->skc_v6_rcv_saddr.in6_u.u6_addr32[1],
		      skc->skc_v6_rcv_saddr.in6_u.u6_addr32[2], skc->skc_v6_rcv_saddr.in6_u.u6_addr32[3], 0);
		ep_v6(&key.server, skc->skc_v6_daddr.in6_u.u6_addr32[0], skc->skc_v6_daddr.in6_u.u6_addr32[1],
		      skc->skc_v6_daddr.in6_u.u6_addr32[2], skc->skc_v6_daddr.in6_u.u6_addr32[3], dport);
	} else {
		return 0;
	}
	if (!bpf_map_lookup_elem(&servers, &key.server))
		return 0;

	state = skc->skc_state;
	// A timewait minisock's skc_state is always TIME_WAIT; what ss reports
	// (and what the socket really is) is its substate, which is FIN_WAIT2
	// for sockets orphaned in FIN_WAIT2.
	if (state == BPF_TCP_TIME_WAIT) {
		tw = bpf_skc_to_tcp_timewait_sock(skc);
		if (tw)
			state = tw->tw_sk.tw_substate;
	}

	o = bpf_map_lookup_elem(&occupancy, &key);
	if (!o || o->gen != gen) {
		fresh.gen = gen;
		if (bpf_map_update_elem(&occupancy, &key, &fresh, BPF_ANY)) {
			__sync_fetch_and_add(&lost, 1);
			return 0;
		}
		o = bpf_map_lookup_elem(&occupancy, &key);
		if (!o)
			return 0;
	}
	// One pass at a time (the daemon serialises them) and the program runs
	// sequentially within a pass: plain increments are enough.
	o->occupied++;
	if (state == BPF_TCP_ESTABLISHED)
		o->established++;
	else if (state == BPF_TCP_TIME_WAIT)
		o->time_wait++;
	return 0;
}

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// steer: a TCP connect() from a process of the steered cgroup to a sluice
// frontend goes straight to a backend server chosen here, so the connection
// never passes through the daemon; when every server is full the address is
// left alone and the client reaches the daemon's listener, which queues.
//
//   steer_connect4/6     look the destination up in steer_frontends, pick a
//                        server of the service (weighted round robin or least
//                        connections) that is usable and below maxconn, take
//                        a place on it (steer_counts.used, compare-and-swap),
//                        remember the original destination in the socket's
//                        steer_marks storage and rewrite the address.
//   steer_getpeername4/6 report the original destination as the peer, so the
//                        client sees the address it connected to.
//   steer_sockops        asks for state callbacks on marked sockets when
//                        their handshake starts, and gives the place back
//                        when the socket leaves ESTABLISHED or the handshake
//                        fails.
//   steer_release        gives the place back at close() for sockets whose
//                        connect() failed before the handshake started (no
//                        state callback then), or that were never connected.
// A place is given back exactly once (atomic exchange of steer_mark.held),
// by whichever of these comes first.
//
// The daemon's own connect() calls are never steered (steer_daemon).
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "steer_maps.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define IPPROTO_TCP 6

// Slots of the round-robin sequence tried before the least-loaded scan.
#define STEER_PROBES 4
// Compare-and-swap attempts on one server's `used` before calling it full.
#define STEER_CAS_TRIES 8

// Whether bpf_get_ns_current_pid_tgid is available to cgroup programs
// (Linux 6.10); without it the daemon is matched by its init-namespace tgid.
// Set at load time; the branch not taken is removed by the verifier.
const volatile __u32 steer_ns_pid = 1;

#define READ_ONCE32(x) (*(volatile __u32 *)&(x))
#define READ_ONCE64(x) (*(volatile __s64 *)&(x))

// from_daemon says whether the caller is the daemon. The daemon is matched
// by its process (tgid: every thread), not by its cgroup: the steered cgroup
// is the whole host by default, and the daemon often shares its cgroup with
// clients that must be steered (a shell's session scope, a container or a
// pod with one cgroup, the root cgroup itself); a process also stays itself
// when a service manager moves it to another cgroup. The tgid is taken in
// the daemon's own pid namespace, so it is right inside containers too.
// Only connects to a frontend get this far.
static __always_inline int from_daemon(void)
{
	__u32 zero = 0;
	struct steer_config *cfg = bpf_map_lookup_elem(&steer_daemon, &zero);
	struct bpf_pidns_info ns = {};

	if (!cfg || !cfg->tgid)
		return 0;
	if (steer_ns_pid) {
		// Fails unless the caller's active pid namespace is the daemon's.
		if (bpf_get_ns_current_pid_tgid(cfg->pidns_dev, cfg->pidns_ino, &ns, sizeof(ns)))
			return 0;
		return ns.tgid == cfg->tgid;
	}
	return (__u32)(bpf_get_current_pid_tgid() >> 32) == cfg->tgid;
}

static __always_inline struct steer_conns *conns_of(__u32 slot)
{
	return bpf_map_lookup_elem(&steer_counts, &slot);
}

// take_place takes a place on a server unless it is at maxconn (counting the
// daemon's own connections) or the daemon queues for it.
static __always_inline int take_place(struct steer_conns *c, __u32 maxconn)
{
	__s64 cur;
	int i;

	if (READ_ONCE32(c->queued))
		return 0;
	if (!maxconn) {
		__sync_fetch_and_add(&c->used, 1);
		goto taken;
	}
	for (i = 0; i < STEER_CAS_TRIES; i++) {
		cur = READ_ONCE64(c->used);
		if (cur >= (__s64)maxconn)
			return 0;
		if (__sync_val_compare_and_swap(&c->used, cur, cur + 1) == cur)
			goto taken;
	}
	return 0;
taken:
	__sync_fetch_and_add(&c->steered, 1);
	__sync_fetch_and_add(&c->total, 1);
	return 1;
}

// put_place returns a place taken on a slot; report says it was held by a
// steered socket (else the connect was never steered: no release counted).
static __always_inline void put_place_(__u32 slot, int report)
{
	struct steer_event ev = {};
	struct steer_conns *c = conns_of(slot);

	if (!c)
		return;
	__sync_fetch_and_add(&c->used, -1);
	__sync_fetch_and_add(&c->steered, -1);
	if (!report) {
		__sync_fetch_and_add(&c->total, -1);
		return;
	}
	__sync_fetch_and_add(&c->released, 1);
	if (READ_ONCE32(c->queued)) {
		ev.slot = slot;
		bpf_ringbuf_output(&steer_events, &ev, sizeof(ev), 0);
	}
}

#define put_place(slot) put_place_(slot, 0)

// give_back returns the socket's place, once whatever calls it.
static __always_inline void give_back(struct steer_mark *m)
{
	if (__sync_lock_test_and_set(&m->held, 0))
		put_place_(m->slot, 1);
}

// The least-loaded scan runs under bpf_loop: a plain loop over 64 servers
// would be verified once per iteration and path, past the verifier's limit.
struct least_ctx {
	__u32 tid;    // steer_tables index
	__u32 n;      // servers in the table
	__u32 start;  // first index scanned, so that ties rotate
	__u32 family; // of the connect
	__u64 tried;  // bit i: server i was tried already
	__u64 best_used;
	__u64 best_w;
	__s32 best; // -1: none yet
	__s32 any_up;
};

// least_step looks at the j-th server from start: usable, not full, queued
// or tried, and lower (places taken + 1) / weight than the best so far.
static long least_step(__u32 j, void *data)
{
	struct least_ctx *lc = data;
	struct steer_server *s;
	struct steer_table *t;
	struct steer_conns *c;
	__u32 i, tid = lc->tid;
	__u64 used;
	__s64 u;

	if (j >= lc->n)
		return 1;
	t = bpf_map_lookup_elem(&steer_tables, &tid);
	if (!t)
		return 1;
	i = lc->start + j;
	if (i >= lc->n)
		i -= lc->n;
	i &= STEER_MAX_SERVERS - 1;
	if (lc->tried & (1ULL << i))
		return 0;
	s = &t->servers[i];
	if (!READ_ONCE32(s->usable) || !s->weight || s->addr.family != lc->family)
		return 0;
	lc->any_up = 1;
	c = conns_of(s->slot);
	if (!c || READ_ONCE32(c->queued))
		return 0;
	u = READ_ONCE64(c->used);
	used = u < 0 ? 0 : u;
	if (s->maxconn && used >= s->maxconn)
		return 0;
	if (lc->best < 0 || (used + 1) * lc->best_w < (lc->best_used + 1) * s->weight) {
		lc->best = i;
		lc->best_used = used;
		lc->best_w = s->weight;
	}
	return 0;
}

// try_server takes a place on server i of t if it may take this connect.
static __always_inline int try_server(struct steer_table *t, __u32 i, __u32 family, int *any_up)
{
	struct steer_server *s = &t->servers[i & (STEER_MAX_SERVERS - 1)];
	struct steer_conns *c;

	if (!READ_ONCE32(s->usable) || !s->weight || s->addr.family != family)
		return 0;
	*any_up = 1;
	c = conns_of(s->slot);
	return c && take_place(c, s->maxconn);
}

// pick chooses a server of table t (index tid) for a connect of the given
// family and takes a place on it; it returns the server's index, or -1 when
// every server is full or unusable (*any_up tells which).
static __always_inline int pick(struct steer_service *svc, struct steer_table *t, __u32 tid, __u32 family,
				int *any_up)
{
	__u32 n = t->nservers, len = t->wrr_len, i;
	struct least_ctx lc = {};
	__u64 pos;
	int k;

	if (n == 0 || n > STEER_MAX_SERVERS)
		return -1;
	pos = __sync_fetch_and_add(&svc->rr, 1);
	if (t->algo == STEER_ALGO_RR && len > 0 && len <= STEER_WRR_SLOTS) {
		for (k = 0; k < STEER_PROBES; k++) {
			i = t->wrr[((pos + k) % len) & (STEER_WRR_SLOTS - 1)];
			if (i >= n || lc.tried & (1ULL << i))
				continue;
			lc.tried |= 1ULL << i;
			if (try_server(t, i, family, any_up))
				return i;
		}
		// The next servers of the sequence are unusable or full: take the
		// least loaded of the others (so a full heavy server does not hide
		// a light one with room), or give up when none has room.
	}
	lc.tid = tid;
	lc.n = n;
	lc.start = pos % n;
	lc.family = family;
	for (k = 0; k < 3; k++) {
		lc.best = -1;
		lc.best_used = 0;
		lc.best_w = 1;
		bpf_loop(STEER_MAX_SERVERS, least_step, &lc, 0);
		if (lc.any_up)
			*any_up = 1;
		if (lc.best < 0)
			return -1;
		i = lc.best & (STEER_MAX_SERVERS - 1);
		if (try_server(t, i, family, any_up))
			return i;
		lc.tried |= 1ULL << i; // taken by another CPU in between
	}
	return -1;
}

// steer handles a connect() to key; v6 says which hook runs (connect6),
// mapped that key came from an IPv4-mapped IPv6 destination. Both are
// constants in each caller, so each program only touches its own ctx fields.
static __always_inline void steer(struct bpf_sock_addr *ctx, struct steer_addr *key, const int v6, const int mapped)
{
	struct steer_service *svc;
	struct steer_server *s;
	struct steer_table *t;
	struct steer_mark *m;
	__u32 *idp, id, tid;
	int any_up = 0, i;

	idp = bpf_map_lookup_elem(&steer_frontends, key);
	if (!idp)
		return;
	id = *idp;
	svc = bpf_map_lookup_elem(&steer_services, &id);
	if (!svc || !READ_ONCE32(svc->enabled))
		return;
	if (from_daemon())
		return;
	// connect() again on a socket whose previous attempt failed before its
	// handshake started (no state callback): that attempt's place first.
	m = bpf_sk_storage_get(&steer_marks, ctx->sk, 0, 0);
	if (m) {
		give_back(m);
		m->steered = 0;
	}
	tid = id * 2 + (READ_ONCE32(svc->active) & 1);
	t = bpf_map_lookup_elem(&steer_tables, &tid);
	if (!t)
		return;
	i = pick(svc, t, tid, key->family, &any_up);
	if (i < 0) {
		if (any_up)
			__sync_fetch_and_add(&svc->full, 1);
		else
			__sync_fetch_and_add(&svc->down, 1);
		return;
	}
	s = &t->servers[i & (STEER_MAX_SERVERS - 1)];
	// The mark is created only for a socket that is steered: its storage
	// is most of the program's cost (~1 µs).
	if (!m)
		m = bpf_sk_storage_get(&steer_marks, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!m) {
		put_place(s->slot);
		__sync_fetch_and_add(&svc->lost, 1);
		return;
	}
	m->slot = s->slot;
	m->held = 1;
	m->steered = 1;
	m->orig_port = ctx->user_port;
	if (v6) {
		m->family = AF_INET6;
		m->orig_ip[0] = ctx->user_ip6[0];
		m->orig_ip[1] = ctx->user_ip6[1];
		m->orig_ip[2] = ctx->user_ip6[2];
		m->orig_ip[3] = ctx->user_ip6[3];
		if (mapped) {
			ctx->user_ip6[0] = 0;
			ctx->user_ip6[1] = 0;
			ctx->user_ip6[2] = bpf_htonl(0xffff);
			ctx->user_ip6[3] = s->addr.ip[0];
		} else {
			ctx->user_ip6[0] = s->addr.ip[0];
			ctx->user_ip6[1] = s->addr.ip[1];
			ctx->user_ip6[2] = s->addr.ip[2];
			ctx->user_ip6[3] = s->addr.ip[3];
		}
	} else {
		m->family = AF_INET;
		m->orig_ip[0] = ctx->user_ip4;
		ctx->user_ip4 = s->addr.ip[0];
	}
	ctx->user_port = bpf_htons(s->addr.port);
	__sync_fetch_and_add(&svc->steered, 1);
}

static __always_inline int is_tcp(struct bpf_sock_addr *ctx)
{
	return ctx->type == SOCK_STREAM && ctx->protocol == IPPROTO_TCP;
}

SEC("cgroup/connect4")
int steer_connect4(struct bpf_sock_addr *ctx)
{
	struct steer_addr key = {};

	if (!is_tcp(ctx))
		return 1;
	key.ip[0] = ctx->user_ip4;
	key.port = bpf_ntohs((__u16)ctx->user_port);
	key.family = AF_INET;
	steer(ctx, &key, 0, 0);
	return 1;
}

SEC("cgroup/connect6")
int steer_connect6(struct bpf_sock_addr *ctx)
{
	struct steer_addr key = {};
	__u32 a, b, c, d;

	if (!is_tcp(ctx))
		return 1;
	a = ctx->user_ip6[0];
	b = ctx->user_ip6[1];
	c = ctx->user_ip6[2];
	d = ctx->user_ip6[3];
	key.port = bpf_ntohs((__u16)ctx->user_port);
	if (a == 0 && b == 0 && c == bpf_htonl(0xffff)) {
		// An AF_INET6 socket connecting to an IPv4 address: the IPv4
		// frontend's service, IPv4 servers only.
		key.ip[0] = d;
		key.family = AF_INET;
		steer(ctx, &key, 1, 1);
		return 1;
	}
	key.ip[0] = a;
	key.ip[1] = b;
	key.ip[2] = c;
	key.ip[3] = d;
	key.family = AF_INET6;
	steer(ctx, &key, 1, 0);
	return 1;
}

SEC("cgroup/getpeername4")
int steer_getpeername4(struct bpf_sock_addr *ctx)
{
	struct steer_mark *m = bpf_sk_storage_get(&steer_marks, ctx->sk, 0, 0);

	if (m && m->steered && m->family == AF_INET) {
		ctx->user_ip4 = m->orig_ip[0];
		ctx->user_port = m->orig_port;
	}
	return 1;
}

SEC("cgroup/getpeername6")
int steer_getpeername6(struct bpf_sock_addr *ctx)
{
	struct steer_mark *m = bpf_sk_storage_get(&steer_marks, ctx->sk, 0, 0);

	if (m && m->steered && m->family == AF_INET6) {
		ctx->user_ip6[0] = m->orig_ip[0];
		ctx->user_ip6[1] = m->orig_ip[1];
		ctx->user_ip6[2] = m->orig_ip[2];
		ctx->user_ip6[3] = m->orig_ip[3];
		ctx->user_port = m->orig_port;
	}
	return 1;
}

SEC("sockops")
int steer_sockops(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	struct steer_mark *m;
	__u32 state;

	if (!sk)
		return 1;
	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		// The SYN is about to leave: hear of every state change from now
		// on, without clearing flags set by other programs.
		m = bpf_sk_storage_get(&steer_marks, sk, 0, 0);
		if (m && m->held)
			bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
		break;
	case BPF_SOCK_OPS_STATE_CB: // args: old state, new state
		state = skops->args[1];
		if (state == BPF_TCP_ESTABLISHED || state == BPF_TCP_SYN_SENT)
			break;
		m = bpf_sk_storage_get(&steer_marks, sk, 0, 0);
		if (m)
			give_back(m);
		break;
	}
	return 1;
}

SEC("cgroup/sock_release")
int steer_release(struct bpf_sock *sk)
{
	struct steer_mark *m;

	if (sk->protocol != IPPROTO_TCP)
		return 1;
	m = bpf_sk_storage_get(&steer_marks, sk, 0, 0);
	if (m)
		give_back(m);
	return 1;
}

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// Types and maps of steer.c, mirrored in Go by bpf2go (steerAddr,
// steerServer, steerTable, steerService, steerConns, steerMark,
// steerConfig; steer_event is decoded by hand): change them only together with pkg/kernel.
//
// Who writes what (the daemon writes through mmap'ed memory, never with a
// map update that would overwrite the kernel's counters):
//   steer_frontends  daemon: frontend address -> service id (ids are stable
//                    while the frontend exists).
//   steer_services   per service id: daemon writes `active`/`enabled`,
//                    the kernel its counters.
//   steer_tables     two per service (double buffer, selected by `active`):
//                    daemon only. A table is rewritten only while inactive,
//                    and only after an RCU grace period since it was last
//                    active (membarrier), so no program reads a half-written
//                    table. `usable` is flipped in place (one u32 store).
//   steer_counts     per server address (slot): `used` is shared (kernel and
//                    daemon take places with compare-and-swap against
//                    maxconn), `queued` is the daemon's, the rest the kernel's.
#ifndef STEER_MAPS_H
#define STEER_MAPS_H

// Servers per service: the bound of every loop over a service's servers.
#define STEER_MAX_SERVERS 64
// Length of the weighted round-robin sequence of a service (a power of 2).
#define STEER_WRR_SLOTS 1024
// Defaults; the daemon sets max_entries at load time.
#define STEER_MAX_SERVICES 64
#define STEER_MAX_SLOTS 4096

#define STEER_ALGO_RR 0
#define STEER_ALGO_LEASTCONN 1

// An IPv4 or IPv6 address and port. IPv4 (also IPv4-mapped IPv6) has
// family AF_INET and the address in ip[0]; the other words are zero.
struct steer_addr {
	__u32 ip[4];  // network byte order
	__u16 port;   // host byte order
	__u16 family; // AF_INET or AF_INET6
};

struct steer_server {
	struct steer_addr addr;
	__u32 slot;    // index into steer_counts (one per server address)
	__u32 maxconn; // 0: no limit
	__u32 weight;  // 1..256; 0 is never selected
	__u32 usable;  // 0 when down, in maint or drain (flipped in place)
};

struct steer_table {
	__u32 algo;     // STEER_ALGO_*
	__u32 nservers; // <= STEER_MAX_SERVERS
	__u32 wrr_len;  // entries of wrr in use (<= STEER_WRR_SLOTS)
	__u32 pad;
	struct steer_server servers[STEER_MAX_SERVERS];
	__u8 wrr[STEER_WRR_SLOTS]; // server indexes in smooth weighted round-robin order
};

// One cache line per service.
struct steer_service {
	__u32 active;      // daemon: table 0 or 1 of this service is live
	__u32 enabled;     // daemon: 0 = leave every connect alone
	__u64 rr;          // kernel: round-robin position (also rotates leastconn ties)
	__u64 steered;     // kernel: connects steered to a server
	__u64 full;        // kernel: connects left alone, some server up but all full or queued
	__u64 down;        // kernel: connects left alone, no server usable at all
	__u64 lost;        // kernel: connects left alone, no socket storage for the mark
	__u64 pad[2];
};

// One cache line per server address.
struct steer_conns {
	__s64 used;     // places taken: steered sockets + the daemon's own; checked against maxconn
	__s64 steered;  // kernel: steered sockets holding a place (connecting or established)
	__u64 total;    // kernel: connects steered here
	__u64 released; // kernel: places given back by steered sockets
	__u32 queued;   // daemon: its queue waits for this server: do not steer here, report releases
	__u32 pad;
	__u64 pad2[3];
};

// Per socket (sk_storage): what connect() did to it.
struct steer_mark {
	__u32 orig_ip[4]; // the destination the client asked for, as in the ctx (user_ip4 or user_ip6)
	__u32 orig_port;  // as in the ctx (network byte order in the low 16 bits)
	__u32 family;     // AF_INET: steered by connect4; AF_INET6: by connect6
	__u32 slot;       // the server's steer_counts slot
	__u32 held;       // 1 while the socket holds a place in steer_counts[slot]
	__u32 steered;    // 1: getpeername reports orig_ip/orig_port
	__u32 pad;
};

// The daemon, whose own connect() calls are never steered: a thread group
// id as seen in the daemon's pid namespace (dev/ino of /proc/PID/ns/pid).
struct steer_config {
	__u64 pidns_dev;
	__u64 pidns_ino;
	__u32 tgid; // 0: nobody is exempt
	__u32 pad;
};

// A steered socket gave back its place on a server the daemon queues for.
struct steer_event {
	__u32 slot;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, STEER_MAX_SERVICES);
	__type(key, struct steer_addr);
	__type(value, __u32);
} steer_frontends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, STEER_MAX_SERVICES);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct steer_service);
} steer_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * STEER_MAX_SERVICES);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct steer_table);
} steer_tables SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, STEER_MAX_SLOTS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct steer_conns);
} steer_counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct steer_mark);
} steer_marks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct steer_config);
} steer_daemon SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} steer_events SEC(".maps");

#endif

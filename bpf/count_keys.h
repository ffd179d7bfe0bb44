// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// Keys and values of count.c's maps, mirrored in Go by bpf2go (countEndpoint,
// countPair, countOccupancy): change them only together with pkg/kernel.
#ifndef COUNT_KEYS_H
#define COUNT_KEYS_H

#define COUNT_MAX_ADDRS 16384
#define COUNT_MAX_PAIRS 65536

// An IPv4 or IPv6 address and port. IPv4 (also IPv4-mapped IPv6) has
// family AF_INET and the address in ip[0]; the other words are zero.
struct endpoint {
	__u32 ip[4];  // network byte order, as the kernel stores addresses
	__u16 port;   // host byte order; 0 for a source address
	__u16 family; // AF_INET or AF_INET6
};

struct pair {
	struct endpoint src; // the local address of the daemon's socket, port 0
	struct endpoint server;
};

struct occupancy {
	__u32 gen; // the pass (scan_gen) that wrote the counts
	__u32 established;
	__u32 time_wait;
	__u32 occupied; // sockets in any state, the two above included
};

#endif

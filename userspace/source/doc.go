// Package source owns source-address pools and the choice of a source address
// for each new connection to a server.
//
// A `source` setting (HAProxy syntax, extended so that one setting may name
// several addresses, a range or a CIDR) becomes a Pool. For every new upstream
// connection the pool picks the address with the most free (source, port)
// tuples toward that server: the ports in range minus what the kernel holds
// for (source, server) in any state (ESTABLISHED, TIME_WAIT...), minus the
// connections the daemon opened that the kernel's snapshot cannot show yet.
// It then connects with IP_BIND_ADDRESS_NO_PORT, so the kernel picks the port
// with the whole 4-tuple in view, and falls back to the next-best source when
// the kernel answers EADDRNOTAVAIL; ErrExhausted comes only when every source
// failed.
//
// The kernel's view comes in through the small Occupancy interface (pkg/kernel
// satisfies it; tests use fakes or sock_diag). This package neither loads eBPF
// nor reads sockets' state itself, and knows nothing of HTTP, backends or
// queues.
package source

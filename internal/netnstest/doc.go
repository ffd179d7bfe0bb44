// Package netnstest creates network namespaces for tests: two (or more)
// joined by a veth pair with addresses in 198.18.0.0/15, sysctls set inside
// them, commands run inside them, and everything removed by t.Cleanup (also
// when the test fails). It also reads TCP sockets per (source, server) with
// sock_diag, as an Occupancy for userspace/source that sees every process's
// sockets. It is for tests and benchmarks only and never touches the host's
// own namespace beyond creating and deleting its namespaces, named
// sluice-LABEL-PID-N. Linux only.
package netnstest

package kernel

// steer.c: cgroup/connect4+6, getpeername4+6, sockops and sock_release that
// steer local clients of a frontend straight to a backend server.
// -mcpu=v3 for the atomic fetch, exchange and compare-and-swap.
//go:generate go tool bpf2go -tags linux -cc clang-19 -cflags "-O2 -g -Wall -Werror -mcpu=v3" -target bpfel -go-package kernel -type steer_addr -type steer_server -type steer_table -type steer_service -type steer_conns -type steer_mark -type steer_config steer ../../bpf/steer.c -- -I../../bpf/headers

package kernel

// count_bpfel.{go,o} are generated from bpf/count.c and committed; regenerate
// with scripts/gen-bpf.sh (clang-19). -mcpu=v3 for the atomic exchange.
//go:generate go tool bpf2go -tags linux -cc clang-19 -cflags "-O2 -g -Wall -Werror -mcpu=v3" -target bpfel -go-package kernel count ../../bpf/count.c -- -I../../bpf/headers

package kernel

// splice.c: sk_skb verdict + SOCKHASH maps that move tunnel bytes in the kernel.
//go:generate go tool bpf2go -tags linux -cc clang-19 -cflags "-O2 -g -Wall -Werror" -target bpfel -go-package kernel -type splice_sock -type splice_total splice ../../bpf/splice.c -- -I../../bpf/headers

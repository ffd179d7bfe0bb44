#!/usr/bin/env bash
# Regenerates the eBPF objects and their Go bindings (pkg/kernel/*_bpfel.{go,o})
# from bpf/*.c with bpf2go (pinned as a tool in go.mod) and clang-19.
#   scripts/gen-bpf.sh           regenerate
#   scripts/gen-bpf.sh -check    regenerate, then fail if anything differs from what is committed
# vmlinux.h is generated once from the running kernel's BTF and committed:
#   bpftool btf dump file /sys/kernel/btf/vmlinux format c > bpf/headers/vmlinux.h
set -euo pipefail
cd "$(dirname "$0")/.."
export BPF2GO_CC=clang-19 BPF2GO_STRIP=llvm-strip-19
go generate ./pkg/kernel/...
if [ "${1:-}" = "-check" ]; then
  if ! git diff --exit-code --stat -- pkg/kernel bpf; then
    echo "generated eBPF files differ from the committed ones: run scripts/gen-bpf.sh and commit" >&2
    exit 1
  fi
  untracked=$(git ls-files --others --exclude-standard -- pkg/kernel)
  if [ -n "$untracked" ]; then
    echo "generated files not committed: $untracked" >&2
    exit 1
  fi
fi

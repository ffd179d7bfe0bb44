#!/usr/bin/env bash
# Provisions an Ubuntu 24.04 / Debian 13 host (a Vagrant VM or a fresh machine) to build and test
# sluice: Go, clang-19/llvm-19/libbpf-dev/bpftool for the eBPF programs, the test and benchmark
# tools, the recommended sysctls. Idempotent: run it again at will.
#   sudo scripts/provision.sh            # provision only
#   sudo scripts/provision.sh --test     # then build and run the tests
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
GO_VERSION=${GO_VERSION:-1.26.0}
export DEBIAN_FRONTEND=noninteractive

[ "$(id -u)" -eq 0 ] || { echo "provision.sh: run as root" >&2; exit 1; }

apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  ca-certificates curl git gcc make iproute2 socat netcat-openbsd \
  clang-19 llvm-19 libbpf-dev bpftool \
  wrk haproxy nginx-light iperf3 >/dev/null
# The stats page's browser test needs Chromium (Debian's package; Ubuntu's is a snap stub, where the test
# skips outside CI).
if grep -q '^ID=debian' /etc/os-release; then
  apt-get install -y -qq --no-install-recommends chromium >/dev/null || echo "provision.sh: no chromium; the browser test will skip" >&2
fi
# Distribution packages must not occupy ports the tests and benchmarks use.
systemctl disable --now haproxy nginx >/dev/null 2>&1 || true

# Go: the distribution's (Ubuntu 24.04: 1.22, Debian 13: 1.24) is enough to start; as any Go >= 1.21
# it fetches the toolchain go.mod names through the Go module proxy (GOTOOLCHAIN=auto).
if ! command -v go >/dev/null 2>&1; then
  apt-get install -y -qq --no-install-recommends golang-go >/dev/null
fi
export GOTOOLCHAIN=auto
minor=$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
if [ "${minor:-0}" -lt 21 ]; then
  echo "provision.sh: $(go env GOVERSION) is too old to fetch go.mod's toolchain; install Go >= 1.21" >&2
  exit 1
fi
echo "go: $(cd "$repo" && go version)"

install -m 0644 "$repo/scripts/sysctl.conf" /etc/sysctl.d/60-sluice.conf
sysctl --system >/dev/null || echo "provision.sh: some sysctls were refused (container?)" >&2

# cgroup v2 must be mounted for the eBPF programs (the kernel-counters issue).
if ! grep -q ' cgroup2 ' /proc/mounts; then
  echo "provision.sh: warning: no cgroup2 mount; eBPF features will fall back" >&2
fi

cd "$repo"
go build -o /usr/local/bin/sluice ./cmd/sluice
echo "built /usr/local/bin/sluice ($(sluice version))"

if [ "${1:-}" = "--test" ]; then
  go test -race ./...
fi

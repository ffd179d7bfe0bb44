#!/usr/bin/env bash
# Installs the Debian packages a task needs, only those missing.
#   scripts/install-deps.sh test    what CI needs (gcc for -race, iproute2, curl; shellcheck and ruby to check scripts and the Vagrantfile; chromium for the stats page browser test)
#   scripts/install-deps.sh bpf     clang-19, llvm-19, libbpf-dev, bpftool: regenerate the eBPF objects (scripts/gen-bpf.sh)
#   scripts/install-deps.sh bench   wrk, haproxy, nginx-light, iperf3 for scripts/bench
set -euo pipefail
want=()
case "${1:-test}" in
  test)  cmds=(gcc:gcc ip:iproute2 curl:curl shellcheck:shellcheck ruby:ruby chromium:chromium) ;;
  bpf)   cmds=(clang-19:clang-19 llvm-strip-19:llvm-19 bpftool:bpftool /usr/include/bpf/bpf_helpers.h:libbpf-dev) ;;
  bench) cmds=(wrk:wrk haproxy:haproxy nginx:nginx-light curl:curl iperf3:iperf3) ;;
  *) echo "usage: $0 test|bpf|bench" >&2; exit 2 ;;
esac
for pair in "${cmds[@]}"; do
  cmd=${pair%%:*} pkg=${pair#*:}
  if [[ $cmd == /* ]]; then [ -e "$cmd" ] || want+=("$pkg"); continue; fi
  command -v "$cmd" >/dev/null 2>&1 || want+=("$pkg")
done
[ ${#want[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing packages: ${want[*]} (run as root, or install them: apt-get install ${want[*]})" >&2
  exit 1
fi
echo "installing: ${want[*]}"
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null

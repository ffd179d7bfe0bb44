#!/usr/bin/env bash
# Installs the Debian packages a task needs, only those missing.
#   scripts/install-deps.sh test    what CI needs (gcc for -race, iproute2, curl; shellcheck and ruby to check scripts and the Vagrantfile)
#   scripts/install-deps.sh bench   wrk, haproxy, nginx-light for scripts/bench
set -euo pipefail
want=()
case "${1:-test}" in
  test)  cmds=(gcc:gcc ip:iproute2 curl:curl shellcheck:shellcheck ruby:ruby) ;;
  bench) cmds=(wrk:wrk haproxy:haproxy nginx:nginx-light curl:curl) ;;
  *) echo "usage: $0 test|bench" >&2; exit 2 ;;
esac
for pair in "${cmds[@]}"; do
  cmd=${pair%%:*} pkg=${pair#*:}
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

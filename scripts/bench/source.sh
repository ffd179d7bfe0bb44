#!/usr/bin/env bash
# Source-address pools against port exhaustion: the new-connection rate sustained without error toward one server,
# 1 source vs 4, in a network namespace whose ip_local_port_range is shrunk to PORTS ports, with tcp_tw_reuse=0 (as
# on a real network; loopback would reuse TIME_WAIT tuples) and tcp_rfc1337=1 (no RST ends a TIME_WAIT early).
#
#   scripts/bench/source.sh                          # PORTS=100, bursts, then 0.9x and 1.2x capacity for 125 s each
#   PORTS=1000 DURATION=70s FACTORS="0.9 1.1" scripts/bench/source.sh
#   SOURCES_LIST="4" FACTORS="" scripts/bench/source.sh   # bursts only
#
# Each run gets fresh namespaces: B holds the server (198.18.0.1:8080, reads until EOF, closes), A the client
# (sourcebench dial, through userspace/source's Pool, with a sock_diag snapshot of A every 100 ms as the kernel's
# view), joined by veth; A's sources are 198.18.0.2 upwards. The client closes each connection first, so every
# connection leaves a TIME_WAIT (60 s in Linux, whatever tcp_fin_timeout says) on A's side. Capacity is then
# sources x PORTS tuples per 60 s:
#   burst      connections one after the other as fast as possible until the first error: how many fit (should be
#              sources x PORTS) and how fast the dialer goes meanwhile;
#   sustained  a steady rate of FACTOR x capacity for DURATION: below capacity there must be no error; above,
#              errors start once the tuples run out (at 60/FACTOR s), and over 60-120 s (one whole TIME_WAIT, as
#              tuples come back as fast as they were taken 60 s earlier) the successes average the sustainable rate
#              (needs DURATION >= 120s).
#
# Env: PORTS (100), PORT_LO (40000), SOURCES_LIST ("1 4"), FACTORS ("0.9 1.2"), DURATION (125s), BURST_MAX (30s),
#      RESULTS_DIR. Needs root and iproute2. Namespaces are named sluice-bencha-PID-N / sluice-benchb-PID-N and
#      deleted on exit (also on failure or Ctrl-C).
set -euo pipefail
# shellcheck source=scripts/bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PORTS=${PORTS:-100}
PORT_LO=${PORT_LO:-40000}
SOURCES_LIST=${SOURCES_LIST:-1 4}
FACTORS=${FACTORS-0.9 1.2}
DURATION=${DURATION:-125s}
BURST_MAX=${BURST_MAX:-30s}

bench_init source
[[ $(id -u) -eq 0 ]] || die "needs root (creates network namespaces)"
ensure_tools ip:iproute2
command -v go >/dev/null || die "go is needed to build scripts/bench/sourcebench"

declare -a NAMESPACES=()
NS_SEQ=0
ns_cleanup() {
	local ns
	for ns in "${NAMESPACES[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
	NAMESPACES=()
}
# Namespaces first (processes still inside keep theirs alive until cleanup stops them), then lib.sh's cleanup,
# which sees the script's exit status.
on_exit() {
	local rc=$?
	ns_cleanup
	(exit "$rc")
	cleanup
}
trap on_exit EXIT

log "building sourcebench"
(cd "$REPO_ROOT" && go build -o "$WORK/sourcebench" ./scripts/bench/sourcebench) >"$RESULTS/sourcebench-build.log" 2>&1 ||
	{ cat "$RESULTS/sourcebench-build.log" >&2; die "cannot build scripts/bench/sourcebench"; }
SB=$WORK/sourcebench

{
	echo "date: $(date -Is)"
	echo "kernel: $(uname -r)  cpus: $(nproc)"
	echo "sluice commit: $(cd "$REPO_ROOT" && git rev-parse --short HEAD 2>/dev/null)$(cd "$REPO_ROOT" && git diff --quiet -- userspace/source 2>/dev/null || echo ' (+ uncommitted changes)')"
	echo "params: PORTS=$PORTS PORT_LO=$PORT_LO SOURCES_LIST=$SOURCES_LIST FACTORS=$FACTORS DURATION=$DURATION BURST_MAX=$BURST_MAX"
} >"$RESULTS/env.txt"

# pair: fresh namespaces A (4 sources, shrunk port range) and B (the server); sets NS_A, NS_B, SERVER_PID.
pair() {
	NS_SEQ=$((NS_SEQ + 1))
	NS_A=sluice-bencha-$$-$NS_SEQ
	NS_B=sluice-benchb-$$-$NS_SEQ
	ip netns add "$NS_A"
	NAMESPACES+=("$NS_A")
	ip netns add "$NS_B"
	NAMESPACES+=("$NS_B")
	ip link add veth-a netns "$NS_A" type veth peer name veth-b netns "$NS_B"
	ip -n "$NS_B" addr add 198.18.0.1/24 dev veth-b
	local i
	for i in 2 3 4 5; do ip -n "$NS_A" addr add "198.18.0.$i/24" dev veth-a; done
	ip -n "$NS_A" link set lo up
	ip -n "$NS_B" link set lo up
	ip -n "$NS_A" link set veth-a up
	ip -n "$NS_B" link set veth-b up
	ip netns exec "$NS_A" sh -c 'echo "$1" >/proc/sys/net/ipv4/ip_local_port_range' sh "$PORT_LO $((PORT_LO + PORTS - 1))"
	ip netns exec "$NS_A" sh -c 'echo 0 >/proc/sys/net/ipv4/tcp_tw_reuse; echo 1 >/proc/sys/net/ipv4/tcp_rfc1337'
	start_bg "$RESULTS/server.$NS_SEQ.log" ip netns exec "$NS_B" "$SB" server -listen 198.18.0.1:8080
	SERVER_PID=$LAST_PID
	local deadline=$((SECONDS + 10))
	until grep -q ready "$RESULTS/server.$NS_SEQ.log" 2>/dev/null; do
		kill -0 "$SERVER_PID" 2>/dev/null || die "server exited: $(cat "$RESULTS/server.$NS_SEQ.log")"
		((SECONDS < deadline)) || die "server not ready after 10 s"
		sleep 0.05
	done
}

unpair() {
	stop_pid "$SERVER_PID" 5
	ns_cleanup
}

sources_spec() { # N: 198.18.0.2 .. 198.18.0.(N+1)
	local n=$1 i spec=""
	for ((i = 2; i < n + 2; i++)); do spec+="${spec:+,}198.18.0.$i"; done
	echo "$spec"
}

# run LABEL SOURCES RATE DURATION
run() {
	local label=$1 n=$2 rate=$3 dur=$4 out
	out=$RESULTS/$label.txt
	pair
	log "$label: $n source(s), $PORTS ports, rate $rate/s, $dur"
	run_tracked ip netns exec "$NS_A" "$SB" dial -server 198.18.0.1:8080 -source "$(sources_spec "$n")" \
		-rate "$rate" -duration "$dur" -label "$label" >"$out" 2>&1 || { cat "$out" >&2; die "$label failed"; }
	grep '^RESULT' "$out" >>"$RESULTS/results.txt"
	unpair
}

for n in $SOURCES_LIST; do
	run "burst-s$n" "$n" 0 "$BURST_MAX"
done
for n in $SOURCES_LIST; do
	for f in $FACTORS; do
		rate=$(awk -v f="$f" -v n="$n" -v p="$PORTS" 'BEGIN { printf "%.3f", f * n * p / 60 }')
		run "sustained-s$n-x$f" "$n" "$rate" "$DURATION"
	done
done

field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<"$1"; }
{
	echo "source pools vs port exhaustion: $PORTS ports per (source, server), TIME_WAIT 60 s, tcp_tw_reuse=0"
	echo "capacity = sources x $PORTS / 60 s"
	echo
	printf '%-22s %7s %9s %9s %9s %6s %9s %11s %10s %11s  %s\n' run sources capacity/s target/s achieved ok exhausted first_error ok/s@60-120 err@60-120 per_source
	while read -r line; do
		n=$(field "$line" sources)
		cap=$(awk -v n="$n" -v p="$PORTS" 'BEGIN { printf "%.2f", n * p / 60 }')
		printf '%-22s %7s %9s %9s %9s %6s %9s %11s %10s %11s  %s\n' "$(field "$line" label)" "$n" "$cap" \
			"$(field "$line" target_rate)" "$(field "$line" achieved_rate)" "$(field "$line" ok)" \
			"$(field "$line" exhausted)" "$(field "$line" first_error_at)" "$(field "$line" ok_rate_60_120s)" \
			"$(field "$line" errors_60_120s)" "$(field "$line" per_source)"
	done <"$RESULTS/results.txt"
	echo
	echo "burst: target 0 = one connection after another, as fast as possible, until the first error; achieved is"
	echo "that speed. sustained: ok/s@60-120 is the rate served over one whole TIME_WAIT once the first ones expire:"
	echo "the sustainable rate when the target is above capacity."
} | tee "$RESULTS/report.txt"

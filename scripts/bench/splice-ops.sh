#!/usr/bin/env bash
# What the kernel-splice flow control costs sockets that are not tunnels: runs `sluice demo` (HTTP, built-in
# backends) in a cgroup of its own, so that it attaches splice_sockops and splice_setsockopt there, drives it with wrk
# (keep-alive, then one connection per request), and reads the programs' run counts and run times from the kernel
# (kernel.bpf_stats_enabled, restored at exit): calls per request and ns per call, next to the counters' sockops.
#
#   scripts/bench/splice-ops.sh                 # DURATION=5
#
# Env: DURATION (seconds per wrk run, 5), RESULTS_DIR. Needs root and a cgroup v2 hierarchy.
set -euo pipefail
# shellcheck source=scripts/bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-5}
[[ $(id -u) -eq 0 ]] || die "needs root (eBPF, cgroups)"
bench_init splice-ops
ensure_tools wrk:wrk bpftool:bpftool python3:python3
build_sluice
[[ -n $SLUICE ]] || die "sluice: $SLUICE_WHY"
bench_cgroup splice-ops
[[ -n $BENCH_CGROUP ]] || die "no writable cgroup v2 hierarchy"

stats_was=$(sysctl -n kernel.bpf_stats_enabled)
restore_stats() { sysctl -qw kernel.bpf_stats_enabled="$stats_was"; }
trap 'restore_stats; cleanup' EXIT
sysctl -qw kernel.bpf_stats_enabled=1

free_port port
# shellcheck disable=SC2016 # $$ and $1.. are the inner shell's
start_bg "$RESULTS/sluice.log" bash -c 'echo $$ >"$1/cgroup.procs" && exec "$2" demo -listen "127.0.0.1:$3"' _ \
	"$BENCH_CGROUP" "$SLUICE" "$port"
SLUICE_PID=$LAST_PID
wait_listen sluice "$SLUICE_PID" "$port" 10 "$RESULTS/sluice.log" || die "sluice demo did not start"
for ((i = 0; i < 100; i++)); do # the splicer is loaded just after the listeners open
	grep -q 'kernel splice ready' "$RESULTS/sluice.log" && break
	sleep 0.05
done
grep -q 'flow_control="in the kernel' "$RESULTS/sluice.log" || {
	cat "$RESULTS/sluice.log" >&2
	die "sluice did not attach the splice flow control to $BENCH_CGROUP"
}

# prog_stats: "name run_cnt run_time_ns" for the programs of interest, from the process's own attachments.
prog_stats() {
	bpftool -j prog show | python3 -c '
import json, sys
for p in json.load(sys.stdin):
    if p.get("name") in ("splice_sockops", "splice_setsockopt", "count_sockops"):
        print(p["name"], p.get("run_cnt", 0), p.get("run_time_ns", 0))'
}

# run NAME WRK-ARGS...: one wrk run; prints per-program calls per request and ns per call.
run() {
	local name=$1 reqs
	shift
	prog_stats | sort >"$RESULTS/$name.before"
	wrk -t1 -d"${DURATION}s" "$@" "http://127.0.0.1:$port/" >"$RESULTS/$name.wrk" 2>&1
	prog_stats | sort >"$RESULTS/$name.after"
	reqs=$(awk '/requests in/ {print $1}' "$RESULTS/$name.wrk")
	[[ -n $reqs && $reqs -gt 0 ]] || die "wrk ($name) made no request: $(cat "$RESULTS/$name.wrk")"
	join "$RESULTS/$name.before" "$RESULTS/$name.after" | awk -v n="$name" -v r="$reqs" '{
		c = $4 - $2; t = $5 - $3
		printf "%-12s %-18s %9d requests  %6.2f calls/request  %6.0f ns/call  %6.0f ns/request\n", n, $1, r, c / r, (c ? t / c : 0), t / r
	}' | tee -a "$RESULTS/report.txt"
}

run keepalive -c20
run close -c50 -H "Connection: close"
stop_pid "$SLUICE_PID" 10
log "report: $RESULTS/report.txt"

#!/usr/bin/env bash
# Memory cost of idle WebSocket tunnels in the proxy process (VmRSS delta / N): sluice vs HAProxy.
#
#   scripts/bench/ws-idle.sh                       # N=5000 against sluice and haproxy
#   N=1000 TARGETS=sluice scripts/bench/ws-idle.sh
#
# Env: N (5000), TARGETS ("sluice haproxy"), HOLD_MIN (15: seconds the tunnels stay idle at least, longer than the
#      10s client/server timeouts, so a tunnel that wrongly obeys them is caught), WARMUP_N (200), RESULTS_DIR,
#      SLUICE_BIN.
# Each target runs alone (fresh process) in front of the same WebSocket echo backend (scripts/bench/wsidle).
# See scripts/bench/README.md.
set -euo pipefail
# shellcheck source=scripts/bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

N=${N:-5000}
TARGETS=${TARGETS:-sluice haproxy}
HOLD_MIN=${HOLD_MIN:-15}
WARMUP_N=${WARMUP_N:-200}
MAXCONN=$((N + 1000))

bench_init wsidle
ensure_tools haproxy:haproxy curl:curl
command -v go >/dev/null || die "go is needed to build scripts/bench/wsidle"
log "results: $RESULTS"

hard=$(ulimit -Hn)
# The proxy holds 2 fds per tunnel (client + server side), the backend and the client process one each.
((hard >= 2 * N + 200)) || die "hard RLIMIT_NOFILE $hard < 2N+200 (the proxy needs 2 fds per tunnel); lower N"
{
	echo "date: $(date -Is)"
	echo "kernel: $(uname -r)  cpus: $(nproc)  GOMAXPROCS env: ${GOMAXPROCS:-<unset>}  RLIMIT_NOFILE hard: $hard"
	echo "haproxy: $(haproxy -v | head -n1)"
	echo "sluice commit: $(cd "$REPO_ROOT" && git rev-parse --short HEAD 2>/dev/null)$(cd "$REPO_ROOT" && git diff --quiet -- cmd userspace pkg 2>/dev/null || echo ' (+ uncommitted changes)')"
	echo "params: N=$N TARGETS=$TARGETS HOLD_MIN=$HOLD_MIN WARMUP_N=$WARMUP_N MAXCONN=$MAXCONN"
} >"$RESULTS/env.txt"

log "building wsidle"
(cd "$REPO_ROOT" && go build -o "$WORK/wsidle" ./scripts/bench/wsidle) >"$RESULTS/wsidle-build.log" 2>&1 ||
	{ cat "$RESULTS/wsidle-build.log" >&2; die "cannot build scripts/bench/wsidle"; }
WSIDLE=$WORK/wsidle

# The WebSocket echo backend (its own process: the clients' process then needs only N fds).
free_port BPORT
start_bg "$RESULTS/backend.log" "$WSIDLE" -mode backend -listen "127.0.0.1:$BPORT"
BACKEND_PID=$LAST_PID
wait_http backend "$BACKEND_PID" "http://127.0.0.1:$BPORT/" 10 "$RESULTS/backend.log" || die "backend did not start"
log "WebSocket echo backend pid $BACKEND_PID on 127.0.0.1:$BPORT"
backend_live() { curl -fsS --max-time 2 "http://127.0.0.1:$BPORT/stats" 2>/dev/null | sed -n 's/^live=\([0-9]*\).*/\1/p'; }

# write_ws_conf FILE KIND PORT METRICS_PORT: the seed config's routing (ACL path_beg /websockets -> backend ws),
# maxconn N+1000 globally, per frontend (defaults) and per server; `timeout tunnel 1h` with 10s client/server
# timeouts. A second frontend serves the Prometheus exporter (both proxies have one): the proxy's own count of live
# tunnels, and for sluice the Go runtime's goroutines, stack and heap, for HAProxy its pool memory.
write_ws_conf() {
	local f=$1 kind=$2 port=$3 mport=$4
	{
		printf 'global\n    maxconn %s\n' "$MAXCONN"
		[[ $kind == haproxy ]] && printf '    nbthread 1\n    # no "log" line: logging off\n'
		cat <<EOF

defaults
    mode http
    timeout connect 5s
    timeout client 10s
    timeout server 10s
    timeout tunnel 1h
    maxconn $MAXCONN

frontend fe
    bind 127.0.0.1:$port
    acl is_websocket path_beg -i /websockets
    use_backend ws if is_websocket
    default_backend servers

backend servers
    server web1 127.0.0.1:$BPORT maxconn $MAXCONN

backend ws
    server ws1 127.0.0.1:$BPORT maxconn $MAXCONN

frontend metrics
    bind 127.0.0.1:$mport
    http-request use-service prometheus-exporter if { path /metrics }
EOF
	} >"$f"
}

# scrape PORT OUT: fetch the proxy's /metrics into OUT (empty if that fails).
scrape() { curl -fsS --max-time 5 "http://127.0.0.1:$1/metrics" >"$2" 2>/dev/null || : >"$2"; }
# metrics_of FILE: "tunnels goroutines stack_bytes heap_bytes pool_bytes" from a scrape ("-" where absent).
metrics_of() {
	awk 'function put(k, v) { m[k] = sprintf("%.0f", v) }
		$1 == "sluice_tunnels_current" || $1 == "haproxy_backend_current_sessions{proxy=\"ws\"}" { put("tun", $2) }
		$1 == "go_goroutines" { put("gor", $2) }
		$1 == "go_memstats_stack_inuse_bytes" { put("stack", $2) }
		$1 == "go_memstats_heap_inuse_bytes" { put("heap", $2) }
		$1 == "haproxy_process_pool_used_bytes" { put("pool", $2) }
		END { printf "%s %s %s %s %s\n", ("tun" in m) ? m["tun"] : "-", ("gor" in m) ? m["gor"] : "-", ("stack" in m) ? m["stack"] : "-",
			("heap" in m) ? m["heap"] : "-", ("pool" in m) ? m["pool"] : "-" }' "$1"
}

# wait_ready PID FILE TIMEOUT_S: wait for wsidle's READY line (bounded); 1 if it exited or timed out.
wait_ready() {
	local pid=$1 f=$2 timeout=$3 deadline
	deadline=$(($(date +%s) + timeout))
	while ! grep -q '^READY ' "$f" 2>/dev/null; do
		kill -0 "$pid" 2>/dev/null || return 1
		(($(date +%s) < deadline)) || return 1
		sleep 0.1
	done
}

# wait_exit PID TIMEOUT_S: wait (bounded) for a process we started to exit; 1 if it is still running.
wait_exit() {
	local pid=$1 i
	for ((i = 0; i < $2 * 10; i++)); do
		kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; untrack_pid "$pid"; return 0; }
		sleep 0.1
	done
	return 1
}

: >"$RESULTS/results.txt"
: >"$RESULTS/metrics.txt"
NOTES=()
for t in $TARGETS; do
	free_port p
	free_port mp
	case $t in
	sluice)
		[[ -n ${SLUICE+x} ]] || build_sluice
		if [[ -z $SLUICE ]]; then
			NOTES+=("sluice: not measured ($SLUICE_WHY)")
			continue
		fi
		write_ws_conf "$RESULTS/sluice.cfg" sluice "$p" "$mp"
		check_sluice_conf "$RESULTS/sluice.cfg" || { NOTES+=("sluice: not measured ($SLUICE_WHY)"); continue; }
		conf=$RESULTS/sluice.cfg
		;;
	haproxy)
		write_ws_conf "$RESULTS/haproxy.cfg" haproxy "$p" "$mp"
		conf=$RESULTS/haproxy.cfg
		;;
	*) die "unknown target '$t' (want sluice, haproxy)" ;;
	esac
	wait_quiet 0
	start_target "$t" "$conf" "$p" || { NOTES+=("sluice: not measured ($SLUICE_WHY)"); continue; }
	pid=$TARGET_PID
	log "$t ready on 127.0.0.1:$p (pid $pid), metrics on 127.0.0.1:$mp"
	scrape "$mp" "$RESULTS/$t.metrics0" # the exporter's own first-use allocations go into the baseline

	# Warm-up: WARMUP_N tunnels opened, used and closed, so pools and buffers exist before the baseline.
	run_tracked timeout 60 "$WSIDLE" -mode ws -addr "127.0.0.1:$p" -n "$WARMUP_N" -until 0 -label "$t-warmup" \
		>"$RESULTS/$t.warmup.txt" 2>&1 || { cat "$RESULTS/$t.warmup.txt" >&2; die "$t: warm-up failed (see $RESULTS/$t.warmup.txt)"; }
	read -r rss0 anon0 st0 took0 < <(settle_rss "$pid" 15) || die "$t died after the warm-up (see $RESULTS/$t.log)"
	fds0=$(proc_fds "$pid")
	scrape "$mp" "$RESULTS/$t.metrics.before"
	log "$t before: VmRSS $rss0 KiB (RssAnon $anon0), $fds0 fds (settled=$st0 in ${took0}s); opening $N WebSocket tunnels"

	start_bg "$RESULTS/$t.txt" "$WSIDLE" -mode ws -addr "127.0.0.1:$p" -n "$N" -until signal -max-hold 5m -label "$t"
	gpid=$LAST_PID
	if ! wait_ready "$gpid" "$RESULTS/$t.txt" 150; then
		cat "$RESULTS/$t.txt" >&2
		die "$t: wsidle did not get ready (see $RESULTS/$t.txt)"
	fi
	ready_at=$(date +%s%N)
	grep -E '^(READY|first error)' "$RESULTS/$t.txt" >&2
	read -r rss1 anon1 st1 took1 < <(settle_rss "$pid" 20) || die "$t died holding the tunnels (see $RESULTS/$t.log)"
	fds1=$(proc_fds "$pid")
	blive=$(backend_live)
	scrape "$mp" "$RESULTS/$t.metrics.after"
	log "$t after:  VmRSS $rss1 KiB (RssAnon $anon1), $fds1 fds (settled=$st1 in ${took1}s), backend live WebSockets: $blive"
	# Idle at least HOLD_MIN s (beyond timeout client/server): only `timeout tunnel` may apply to the tunnels.
	while ((($(date +%s%N) - ready_at) / 1000000 < HOLD_MIN * 1000)); do sleep 0.2; done
	kill -TERM "$gpid" 2>/dev/null || true # wsidle then echoes on every tunnel once more and reports
	wait_exit "$gpid" 90 || { log "$t: wsidle did not finish its check, stopping it"; stop_pid "$gpid" 5; }
	sed '1,/^READY /d' "$RESULTS/$t.txt" >&2
	res=$(grep '^RESULT ' "$RESULTS/$t.txt" || true)
	[[ -n $res ]] || NOTES+=("$t: no RESULT line from wsidle (see $RESULTS/$t.txt)")
	kill -0 "$pid" 2>/dev/null || die "$t died during the measurement (see $RESULTS/$t.log)"
	# After closing everything: does the proxy give the fds back, and how much memory does it keep?
	read -r rss2 _ st2 took2 < <(settle_rss "$pid" 15) || die "$t died after the tunnels closed"
	fds2=$(proc_fds "$pid")
	log "$t after close: VmRSS $rss2 KiB, $fds2 fds (settled=$st2 in ${took2}s)"
	echo "$res rss_before_kib=$rss0 anon_before_kib=$anon0 rss_after_kib=$rss1 anon_after_kib=$anon1 fds_before=$fds0 fds_after=$fds1 backend_live=$blive rss_closed_kib=$rss2 fds_closed=$fds2 stable=$((st0 && st1))" \
		>>"$RESULTS/results.txt"
	echo "$t $(metrics_of "$RESULTS/$t.metrics.before") $(metrics_of "$RESULTS/$t.metrics.after")" >>"$RESULTS/metrics.txt"
	[[ -s $RESULTS/$t.log ]] && grep -qiE 'error|warn|too many' "$RESULTS/$t.log" &&
		NOTES+=("$t: its log has warnings/errors: $(grep -ciE 'error|warn|too many' "$RESULTS/$t.log") lines, see $RESULTS/$t.log")
	stop_pid "$pid" 5
done

{
	echo
	echo "idle WebSocket tunnels: N=$N, handshake + one echo each through the proxy, then idle >= ${HOLD_MIN}s, then one more echo each;"
	echo "VmRSS of the proxy process"
	awk '
		{ for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
		  ok = v["ok"] + 0
		  per = ok ? (v["rss_after_kib"] - v["rss_before_kib"]) / ok : 0
		  pera = ok ? (v["anon_after_kib"] - v["anon_before_kib"]) / ok : 0
		  flags = ""
		  if (v["alive"] != v["n"]) flags = flags " alive!=N"
		  if (v["backend_live"] != v["ok"]) flags = flags " backend!=ok"
		  if (v["stable"] != 1) flags = flags " unsettled"
		  rows[NR] = sprintf("%-8s %5s %5s %12s %12s %9.2f %10.2f %7s %8s %7s %11s %9s %7s  %s", v["label"], v["ok"], v["alive"],
			v["rss_before_kib"], v["rss_after_kib"], per, pera, v["fds_after"] - v["fds_before"], v["backend_live"], v["open_s"],
			v["rss_closed_kib"], v["fds_closed"] - v["fds_before"], v["held_s"], flags == "" ? "ok" : flags) }
		END {
			printf "%-8s %5s %5s %12s %12s %9s %10s %7s %8s %7s %11s %9s %7s  %s\n", "target", "ok", "alive", "RSS before",
				"RSS after", "KiB/tun", "anon/tun", "+fds", "bk live", "open s", "RSS closed", "+fds cl", "held s", "checks"
			for (i = 1; i <= NR; i++) print rows[i]
		}' "$RESULTS/results.txt"
	echo "RSS in KiB (VmRSS); KiB/tun = (after - before) / ok; anon/tun = same for RssAnon; +fds = proxy fds added (2 per tunnel);"
	echo "bk live = WebSockets the backend holds; alive = tunnels that still echoed after the idle time; RSS closed / +fds cl ="
	echo "VmRSS and extra fds once every tunnel is closed again"
	echo
	echo "where it goes, from the proxy's own /metrics, (after - before) / ok:"
	awk 'NR == FNR { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }; ok[v["label"]] = v["ok"]; next }
		function per(a, b, div, k) { return (a == "-" || b == "-" || !k) ? "-" : sprintf("%.2f", (b - a) / div / k) }
		{ k = ok[$1] + 0
		  rows[++n] = sprintf("%-8s %12s %14s %14s %13s %13s", $1, $7, per($3, $8, 1, k), per($4, $9, 1024, k), per($5, $10, 1024, k), per($6, $11, 1024, k)) }
		END {
			printf "%-8s %12s %14s %14s %13s %13s\n", "target", "own tunnels", "goroutines/tun", "stack KiB/tun", "heap KiB/tun", "pool KiB/tun"
			for (i = 1; i <= n; i++) print rows[i]
		}' "$RESULTS/results.txt" "$RESULTS/metrics.txt"
	echo "own tunnels: the proxy's count of live tunnels (sluice_tunnels_current; HAProxy: current sessions of backend ws);"
	echo "goroutines, stack, heap: Go runtime (sluice); pool: haproxy_process_pool_used_bytes (HAProxy's allocator pools)"
	for x in "${NOTES[@]}"; do echo "$x"; done
	echo "raw outputs, configs and logs: $RESULTS"
} | tee "$RESULTS/report.txt"

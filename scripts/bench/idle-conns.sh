#!/usr/bin/env bash
# Memory cost of idle keep-alive client connections in the proxy process (VmRSS delta / N).
#
#   scripts/bench/idle-conns.sh                    # N=10000 against sluice, haproxy, nginx
#   N=5000 TARGETS="haproxy" scripts/bench/idle-conns.sh
#
# Env: N (10000), TARGETS ("sluice haproxy nginx"), LIMIT_KIB (16, the sluice target), RESULTS_DIR, SLUICE_BIN.
# Each target runs alone (fresh process, nothing else proxying) in front of the same nginx backend.
# See scripts/bench/README.md.
set -euo pipefail
# shellcheck source=scripts/bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

N=${N:-10000}
TARGETS=${TARGETS:-sluice haproxy nginx}
LIMIT_KIB=${LIMIT_KIB:-16}
MAXCONN=$((N + 2000))

bench_init idle
ensure_tools haproxy:haproxy nginx:nginx-light curl:curl
command -v go >/dev/null || die "go is needed to build scripts/bench/idleconns"
log "results: $RESULTS"

hard=$(ulimit -Hn)
((hard >= N + 64)) || die "hard RLIMIT_NOFILE $hard < N+64; lower N"

log "building idleconns"
(cd "$REPO_ROOT" && go build -o "$WORK/idleconns" ./scripts/bench/idleconns) >"$RESULTS/idleconns-build.log" 2>&1 ||
	{ cat "$RESULTS/idleconns-build.log" >&2; die "cannot build scripts/bench/idleconns"; }

free_port BPORT
write_nginx_backend "$RESULTS/backend.conf" "$BPORT"
start_target backend "$RESULTS/backend.conf" "$BPORT"
log "backend nginx pid $TARGET_PID on 127.0.0.1:$BPORT"

# Keep-alive timeouts well above the measurement's length (idleconns gives up after 50s).
export LB_TIMEOUT_CLIENT=60s LB_TIMEOUT_SERVER=60s
LB_DEFAULTS="    timeout http-keep-alive 60s
    maxconn $MAXCONN"
LB_GLOBAL="    maxconn $MAXCONN"
# HAProxy wants 2*maxconn fds and cannot go beyond the hard limit without CAP_SYS_RESOURCE; an idle client connection
# needs only one fd, so pin ulimit-n to the hard limit and let HAProxy merely warn about it.
HAP_GLOBAL="$LB_GLOBAL
    ulimit-n $hard
    no strict-limits"

: >"$RESULTS/results.txt"
SKIPPED=""
for t in $TARGETS; do
	free_port p
	case $t in
	sluice)
		[[ -n ${SLUICE+x} ]] || build_sluice
		if [[ -z $SLUICE ]]; then
			log "skipping sluice: $SLUICE_WHY"
			SKIPPED="sluice: not measured ($SLUICE_WHY)"
			continue
		fi
		conf=$RESULTS/sluice.cfg
		write_lb_conf "$conf" "$p" "$BPORT" sluice "$LB_DEFAULTS" "$LB_GLOBAL"
		check_sluice_conf "$conf" || { SKIPPED="sluice: not measured ($SLUICE_WHY)"; continue; }
		;;
	haproxy)
		conf=$RESULTS/haproxy.cfg
		write_lb_conf "$conf" "$p" "$BPORT" haproxy "$LB_DEFAULTS" "$HAP_GLOBAL"
		;;
	nginx)
		conf=$RESULTS/nginx.conf
		write_nginx_proxy "$conf" "$p" "$BPORT" 60s
		;;
	*) die "unknown target '$t' (want sluice, haproxy, nginx)" ;;
	esac
	wait_quiet 0
	if ! start_target "$t" "$conf" "$p"; then
		SKIPPED="sluice: not measured ($SLUICE_WHY)"
		continue
	fi
	pid=$TARGET_PID
	log "$t ready on 127.0.0.1:$p (pid $pid); opening $N idle connections"
	rc=0
	run_tracked timeout 70 "$WORK/idleconns" -addr "127.0.0.1:$p" -pid "$pid" -n "$N" -label "$t" >"$RESULTS/$t.txt" 2>&1 ||
		rc=$?
	cat "$RESULTS/$t.txt" >&2
	((rc == 0)) || log "$t: idleconns exited with status $rc (see $RESULTS/$t.txt)"
	grep '^RESULT ' "$RESULTS/$t.txt" >>"$RESULTS/results.txt" || log "$t: no RESULT line"
	kill -0 "$pid" 2>/dev/null || die "$t died during the measurement (see $RESULTS/$t.log)"
	stop_pid "$pid" 5
done

{
	echo
	echo "idle keep-alive client connections: N=$N, one GET each, then idle; VmRSS of the proxy process (tree)"
	awk -v limit="$LIMIT_KIB" '
		{ for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
		  verdict = v["per_conn_kib"] + 0 <= limit ? "ok" : "OVER"
		  if (v["label"] != "sluice") verdict = "(ref)"
		  if (v["alive"] != v["n"]) verdict = verdict " alive!=N"
		  if (v["stable"] != "true") verdict = verdict " unsettled"
		  rows[NR] = sprintf("%-8s %6s %6s %12s %12s %9s %10s %8s %8s  %s", v["label"], v["ok"], v["alive"],
			v["rss_before_kib"], v["rss_after_kib"], v["per_conn_kib"], v["anon_per_conn_kib"], v["fds_delta"], v["open_s"], verdict) }
		END {
			printf "%-8s %6s %6s %12s %12s %9s %10s %8s %8s  %s\n", "target", "ok", "alive", "RSS before", "RSS after",
				"KiB/conn", "anon/conn", "+fds", "open s", "target <= " limit " KiB"
			for (i = 1; i <= NR; i++) print rows[i]
		}' "$RESULTS/results.txt"
	[[ -z $SKIPPED ]] || echo "$SKIPPED"
	echo "RSS in KiB (VmRSS); KiB/conn = (after - before) / ok; anon/conn = same for RssAnon; alive = still open at the end"
	echo "raw outputs, configs and logs: $RESULTS"
} | tee "$RESULTS/report.txt"

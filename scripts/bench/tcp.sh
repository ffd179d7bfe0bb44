#!/usr/bin/env bash
# mode tcp: iperf3 throughput and small-message request/response latency through sluice vs HAProxy vs no proxy.
#
#   scripts/bench/tcp.sh                          # 3 rounds x 4 iperf3 tests x 5s per target, then the latency test
#   ROUNDS=1 TESTS="P1 R4" scripts/bench/tcp.sh
#   TARGETS="sluice haproxy haproxy-splice direct" scripts/bench/tcp.sh   # add HAProxy with forced kernel splicing
#   SLUICE_BIN=/path/to/sluice scripts/bench/tcp.sh
#
# Env: DURATION (5: iperf3 -t, seconds), ROUNDS (3), TESTS ("P1 P4 R1 R4": P = client sends, R = iperf3 -R, the
#      server sends; the digit is -P), TARGETS ("sluice haproxy direct"; also haproxy-splice), HAPROXY_NBTHREAD (1),
#      LAT_N (20000: ping-pongs per latency run), LAT_SIZE (64), LAT_ROUNDS (ROUNDS), LAT_MODES ("awake idle": awake =
#      one SCHED_IDLE busy loop per CPU during the runs, so idle vCPUs do not halt and the hypervisor's wake-up latency
#      does not dominate; idle = as the host is), QUIET_WAIT (30), NOISE_MAX (25),
#      NOISE_RETRIES (1) as in http.sh, QUIET_BUDGET (60: seconds the whole run may spend waiting for a quiet host and
#      redoing noisy runs; once spent, noisy runs are kept and flagged, so a busy host cannot stretch the run much
#      beyond ~5 minutes), RESULTS_DIR, SLUICE_BIN.
# See scripts/bench/README.md.
set -euo pipefail
# shellcheck source=scripts/bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-3}
TESTS=${TESTS:-P1 P4 R1 R4}
TARGETS=${TARGETS:-sluice haproxy direct}
HAPROXY_NBTHREAD=${HAPROXY_NBTHREAD:-1}
LAT_N=${LAT_N:-20000}
LAT_SIZE=${LAT_SIZE:-64}
LAT_ROUNDS=${LAT_ROUNDS:-$ROUNDS}
LAT_MODES=${LAT_MODES:-awake idle}
QUIET_WAIT=${QUIET_WAIT:-30}
NOISE_MAX=${NOISE_MAX:-25}
NOISE_RETRIES=${NOISE_RETRIES:-1}
QUIET_BUDGET=${QUIET_BUDGET:-60}

for x in $TESTS; do [[ $x =~ ^[PR][1-9][0-9]*$ ]] || die "TESTS: '$x' is not P<n> or R<n>"; done
for m in $LAT_MODES; do [[ $m == awake || $m == idle ]] || die "LAT_MODES: '$m' is not awake or idle"; done

bench_init tcp
ensure_tools iperf3:iperf3 haproxy:haproxy jq:jq chrt:util-linux
command -v go >/dev/null || die "go is needed to build scripts/bench/wsidle"
CLK_TCK=$(getconf CLK_TCK)
log "results: $RESULTS"
{
	echo "date: $(date -Is)"
	echo "kernel: $(uname -r)  cpus: $(nproc)  GOMAXPROCS env: ${GOMAXPROCS:-<unset>}"
	echo "iperf3: $(iperf3 -v | head -n1)"
	echo "haproxy: $(haproxy -v | head -n1)"
	echo "sluice commit: $(cd "$REPO_ROOT" && git rev-parse --short HEAD 2>/dev/null)$(cd "$REPO_ROOT" && git diff --quiet -- cmd userspace pkg 2>/dev/null || echo ' (+ uncommitted changes)')"
	echo "params: DURATION=$DURATION ROUNDS=$ROUNDS TESTS=$TESTS TARGETS=$TARGETS HAPROXY_NBTHREAD=$HAPROXY_NBTHREAD LAT_N=$LAT_N LAT_SIZE=$LAT_SIZE LAT_ROUNDS=$LAT_ROUNDS LAT_MODES=$LAT_MODES"
} >"$RESULTS/env.txt"
[[ -n ${GOMAXPROCS:-} ]] && log "note: GOMAXPROCS=$GOMAXPROCS is set in the environment and sluice inherits it"

log "building wsidle (echo server and latency client)"
(cd "$REPO_ROOT" && go build -o "$WORK/wsidle" ./scripts/bench/wsidle) >"$RESULTS/wsidle-build.log" 2>&1 ||
	{ cat "$RESULTS/wsidle-build.log" >&2; die "cannot build scripts/bench/wsidle"; }
WSIDLE=$WORK/wsidle

# ---- servers -------------------------------------------------------------------------------------------------
free_port IPORT
start_bg "$RESULTS/iperf3-server.log" iperf3 -s -B 127.0.0.1 -p "$IPORT"
IPERF_PID=$LAST_PID
wait_listen iperf3-server "$IPERF_PID" "$IPORT" 10 "$RESULTS/iperf3-server.log" || die "iperf3 server did not start"
free_port EPORT
start_bg "$RESULTS/echo.log" "$WSIDLE" -mode echo -listen "127.0.0.1:$EPORT"
ECHO_PID=$LAST_PID
wait_listen echo "$ECHO_PID" "$EPORT" 10 "$RESULTS/echo.log" || die "echo server did not start"
log "iperf3 server pid $IPERF_PID on 127.0.0.1:$IPORT, echo server pid $ECHO_PID on 127.0.0.1:$EPORT"

# write_tcp_conf FILE KIND PORT_IPERF PORT_ECHO: two mode tcp listeners, one per server. KIND haproxy* adds
# `global nbthread`; haproxy-splice forces kernel splicing both ways (HAProxy's default copies through its buffers;
# sluice always splices). sluice gets no global section, so nothing pins its GOMAXPROCS.
write_tcp_conf() {
	local f=$1 kind=$2 pi=$3 pe=$4
	{
		if [[ $kind == haproxy* ]]; then
			printf 'global\n    nbthread %s\n    # no "log" line: logging off\n\n' "$HAPROXY_NBTHREAD"
		fi
		cat <<EOF
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout tunnel 1h
EOF
		if [[ $kind == haproxy-splice ]]; then
			printf '    option splice-request\n    option splice-response\n'
		fi
		cat <<EOF

listen iperf
    bind 127.0.0.1:$pi
    server s1 127.0.0.1:$IPORT

listen echo
    bind 127.0.0.1:$pe
    server s1 127.0.0.1:$EPORT
EOF
	} >"$f"
}

# iperf_args TEST: iperf3 options of a test name (P4 -> -P 4, R1 -> -R -P 1).
iperf_args() {
	local x=$1
	[[ $x == R* ]] && printf -- '-R '
	printf -- '-P %s' "${x:1}"
}
test_label() { # TEST: human-readable name
	local x=$1 dir=fwd
	[[ $x == R* ]] && dir=rev
	printf '%s x%s' "$dir" "${x:1}"
}

# iperf_once PORT SECONDS OUT [ARGS...]: one iperf3 client run (JSON to OUT). The iperf3 server takes one test at a
# time and may still be finishing the previous one ("the server is busy"): that is retried, bounded.
iperf_once() {
	local port=$1 secs=$2 out=$3 i rc
	shift 3
	for ((i = 0; i < 5; i++)); do
		rc=0
		run_tracked timeout $((secs + 20)) iperf3 -c 127.0.0.1 -p "$port" -t "$secs" -J "$@" >"$out" 2>"$out.err" || rc=$?
		((rc == 0)) && return 0
		grep -q 'busy' "$out" "$out.err" 2>/dev/null || return "$rc"
		sleep 0.5
	done
	return 1
}

# ---- targets -------------------------------------------------------------------------------------------------
declare -A PI=() PE=() PID=() FAILED=()
ACTIVE=()
for t in $TARGETS; do
	case $t in
	direct) PI[$t]=$IPORT PE[$t]=$EPORT PID[$t]="" ;;
	sluice)
		build_sluice
		if [[ -z $SLUICE ]]; then
			log "skipping sluice: $SLUICE_WHY"
			continue
		fi
		free_port pi
		free_port pe
		write_tcp_conf "$RESULTS/sluice.cfg" sluice "$pi" "$pe"
		check_sluice_conf "$RESULTS/sluice.cfg" || { log "skipping sluice"; continue; }
		start_bg "$RESULTS/sluice.log" "$SLUICE" -f "$RESULTS/sluice.cfg"
		if ! wait_listen sluice "$LAST_PID" "$pi" 15 "$RESULTS/sluice.log" || ! wait_listen sluice "$LAST_PID" "$pe" 5; then
			SLUICE_WHY="did not start, see $RESULTS/sluice.log"
			log "skipping sluice: $SLUICE_WHY"
			stop_pid "$LAST_PID" 5
			continue
		fi
		PI[$t]=$pi PE[$t]=$pe PID[$t]=$LAST_PID
		;;
	haproxy | haproxy-splice)
		free_port pi
		free_port pe
		write_tcp_conf "$RESULTS/$t.cfg" "$t" "$pi" "$pe"
		haproxy -c -q -f "$RESULTS/$t.cfg" >"$RESULTS/$t-check.log" 2>&1 || { cat "$RESULTS/$t-check.log" >&2; die "haproxy rejects $RESULTS/$t.cfg"; }
		start_bg "$RESULTS/$t.log" haproxy -db -f "$RESULTS/$t.cfg"
		{ wait_listen "$t" "$LAST_PID" "$pi" 15 "$RESULTS/$t.log" && wait_listen "$t" "$LAST_PID" "$pe" 5; } || die "$t did not start"
		PI[$t]=$pi PE[$t]=$pe PID[$t]=$LAST_PID
		;;
	*) die "unknown target '$t' (want sluice, haproxy, haproxy-splice, direct)" ;;
	esac
	# The path must work before it is measured (also a warm-up): a 1 s iperf3 run that moves data, and a few echoes.
	ok=1
	iperf_once "${PI[$t]}" 1 "$RESULTS/$t.check.json" -P 1 || ok=0
	b=$(jq -r '.end.sum_received.bytes // 0' "$RESULTS/$t.check.json" 2>/dev/null || echo 0)
	((ok && b > 0)) || ok=0
	run_tracked timeout 20 "$WSIDLE" -mode latency -addr "127.0.0.1:${PE[$t]}" -n 500 -warmup 0 -size "$LAT_SIZE" \
		>"$RESULTS/$t.check.lat" 2>&1 || ok=0
	if ((!ok)); then
		why="the path does not work (see $RESULTS/$t.check.json, $t.check.json.err, $t.check.lat)"
		[[ $t == sluice ]] || die "$t: $why"
		SLUICE_WHY=$why
		log "skipping sluice: $why"
		stop_pid "${PID[$t]}" 5
		continue
	fi
	: >"$RESULTS/$t.tsv"
	for m in $LAT_MODES; do : >"$RESULTS/$t.lat-$m.tsv"; done
	ACTIVE+=("$t")
	log "$t ready: iperf via 127.0.0.1:${PI[$t]}, echo via 127.0.0.1:${PE[$t]}${PID[$t]:+ (pid ${PID[$t]})}"
done
((${#ACTIVE[@]})) || die "no target to benchmark"

target_failed() {
	FAILED[$1]=$2
	log "$1 FAILED: $2; dropping it from the remaining runs"
}
target_alive() {
	local t=$1
	kill -0 "$IPERF_PID" 2>/dev/null || die "the iperf3 server (pid $IPERF_PID) died, see $RESULTS/iperf3-server.log"
	kill -0 "$ECHO_PID" 2>/dev/null || die "the echo server (pid $ECHO_PID) died, see $RESULTS/echo.log"
	[[ -z ${PID[$t]} ]] || kill -0 "${PID[$t]}" 2>/dev/null || { target_failed "$t" "process ${PID[$t]} died, see $RESULTS/$t.log"; return 1; }
}

# host CPU ticks: busy without irq/softirq (user nice system steal), irq+softirq
host_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $9, $7 + $8; exit }' /proc/stat; }
# children_cpu FILE: user+sys seconds of reaped children, from bash's `times` output (second line)
children_cpu() { awk 'function sec(x) { split(x, a, "m"); return a[1] * 60 + a[2] } NR == 2 { printf "%.3f\n", sec($1) + sec($2) }' "$1"; }

# measure_start / measure_end OUT: CPU accounting around one client run. Writes to OUT.cpu:
# "wall_s proxy_cpu_s server_cpu_s client_cpu_s other_cpu_s sirq_cpu_s" (other excludes the SPIN_PIDS busy loops).
SPIN_PIDS=()
measure_start() {
	local t=$1 srv=$2
	M_P0=0 M_X0=0
	((${#SPIN_PIDS[@]})) && M_X0=$(proc_cpu_ticks "${SPIN_PIDS[@]}")
	[[ -n ${PID[$t]} ]] && M_P0=$(proc_cpu_ticks "${PID[$t]}")
	M_S0=$(proc_cpu_ticks "$srv")
	read -r M_H0 M_I0 < <(host_ticks)
	times >"$WORK/times0"
	M_T0=$(date +%s%N)
}
measure_end() {
	local t=$1 srv=$2 out=$3 p1=0 s1 h1 i1 t1 c0 c1 x1=0
	t1=$(date +%s%N)
	times >"$WORK/times1"
	((${#SPIN_PIDS[@]})) && x1=$(proc_cpu_ticks "${SPIN_PIDS[@]}")
	[[ -n ${PID[$t]} ]] && p1=$(proc_cpu_ticks "${PID[$t]}")
	s1=$(proc_cpu_ticks "$srv")
	read -r h1 i1 < <(host_ticks)
	c0=$(children_cpu "$WORK/times0")
	c1=$(children_cpu "$WORK/times1")
	awk -v w=$(((t1 - M_T0) / 1000)) -v p=$((p1 - M_P0)) -v s=$((s1 - M_S0)) -v h=$((h1 - M_H0 - (x1 - M_X0))) -v i=$((i1 - M_I0)) \
		-v c="$(awk -v a="$c0" -v b="$c1" 'BEGIN { print b - a }')" -v hz="$CLK_TCK" 'BEGIN {
			o = h / hz - p / hz - s / hz - c; if (o < 0) o = 0
			printf "%.3f %.3f %.3f %.3f %.3f %.3f\n", w / 1e6, p / hz, s / hz, c, o, i / hz }' >"$out.cpu"
}

# run_iperf TARGET TEST OUT: one measured iperf3 run; writes OUT.row:
# "gbps bytes retransmits proxy_ms_per_gb proxy% iperf% other% sirq%"
run_iperf() {
	local t=$1 x=$2 out=$3
	measure_start "$t" "$IPERF_PID"
	# shellcheck disable=SC2046 # iperf_args gives separate words
	iperf_once "${PI[$t]}" "$DURATION" "$out" $(iperf_args "$x") || return 1
	measure_end "$t" "$IPERF_PID" "$out"
	jq -r '[.end.sum_received.bits_per_second, .end.sum_received.bytes, (.end.sum_sent.retransmits // 0)] | @tsv' "$out" |
		awk -v cpu="$(cat "$out.cpu")" -v isproxy="${PID[$t]:+1}" '{
			split(cpu, c, " "); w = c[1]
			gb = $2 / 1e9
			pms = (isproxy && gb > 0) ? sprintf("%.0f", c[2] * 1000 / gb) : "-"
			pp = isproxy ? sprintf("%.0f", c[2] * 100 / w) : "-"
			printf "%.2f %d %d %s %s %.0f %.0f %.0f\n", $1 / 1e9, $2, $3, pms, pp, (c[3] + c[4]) * 100 / w, c[5] * 100 / w, c[6] * 100 / w
		}' >"$out.row"
	[[ -s $out.row ]] && read -r g _ <"$out.row" && [[ $g != 0.00 ]] || return 1
}

# run_lat TARGET OUT: one latency run; writes OUT.row: "p50 p90 p99 p999 max mean proxy_cpu_us_per_rt other%"
run_lat() {
	local t=$1 out=$2
	measure_start "$t" "$ECHO_PID"
	run_tracked timeout 120 "$WSIDLE" -mode latency -addr "127.0.0.1:${PE[$t]}" -n "$LAT_N" -size "$LAT_SIZE" -label "$t" >"$out" 2>&1 ||
		return 1
	measure_end "$t" "$ECHO_PID" "$out"
	grep '^RESULT ' "$out" | awk -v cpu="$(cat "$out.cpu")" -v isproxy="${PID[$t]:+1}" -v n="$LAT_N" '{
		for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
		split(cpu, c, " ")
		printf "%s %s %s %s %s %s %s %.0f\n", v["p50_us"], v["p90_us"], v["p99_us"], v["p999_us"], v["max_us"], v["mean_us"],
			isproxy ? sprintf("%.1f", c[2] * 1e6 / n) : "-", c[5] * 100 / c[1] }' >"$out.row"
	[[ -s $out.row ]]
}

# ---- runs ----------------------------------------------------------------------------------------------------
# budget_wait: wait_quiet within what is left of QUIET_BUDGET (seconds); 1 if nothing is left.
QUIET_SPENT=0
budget_wait() {
	local left=$((QUIET_BUDGET - QUIET_SPENT)) t0
	((left > 0)) || return 1
	t0=$(date +%s)
	wait_quiet $((QUIET_WAIT < left ? QUIET_WAIT : left))
	QUIET_SPENT=$((QUIET_SPENT + $(date +%s) - t0))
}
NOISY=0
budget_wait || true
ntests=$(wc -w <<<"$TESTS")
log "throughput: $ROUNDS rounds x $ntests tests x ${#ACTIVE[@]} targets x ${DURATION}s (about $((ROUNDS * ntests * ${#ACTIVE[@]} * (DURATION + 1)))s)"
for ((r = 1; r <= ROUNDS; r++)); do
	for x in $TESTS; do
		for t in "${ACTIVE[@]}"; do
			[[ -z ${FAILED[$t]:-} ]] || continue
			log "round $r/$ROUNDS: $(test_label "$x"): $t (iperf3 -t $DURATION $(iperf_args "$x"))"
			for ((try = 0; ; try++)); do
				out=$RESULTS/$t.$x.round$r.json
				if ! run_iperf "$t" "$x" "$out"; then
					target_failed "$t" "iperf3 failed in round $r ($x), see $out and $out.err"
					break
				fi
				target_alive "$t" || break
				read -r -a row <"$out.row"
				if ((row[6] > NOISE_MAX && try < NOISE_RETRIES && QUIET_SPENT + DURATION < QUIET_BUDGET)); then
					log "round $r: $t $x: other processes used ${row[6]}% of a core (> NOISE_MAX=$NOISE_MAX), redoing it"
					mv "$out" "$out.noisy$try"
					mv "$out.row" "$out.noisy$try.row"
					QUIET_SPENT=$((QUIET_SPENT + DURATION + 1)) # the redo itself counts against the budget
					budget_wait || true
					continue
				fi
				((row[6] <= NOISE_MAX)) || NOISY=$((NOISY + 1))
				echo "$x $(cat "$out.row")" >>"$RESULTS/$t.tsv"
				break
			done
		done
	done
done

for m in $LAT_MODES; do
	log "latency ($m CPUs): $LAT_ROUNDS rounds x ${#ACTIVE[@]} targets x $LAT_N sequential ${LAT_SIZE}-byte ping-pongs"
	if [[ $m == awake ]]; then
		# One SCHED_IDLE busy loop per CPU: it runs only when nothing else wants the CPU (any wake-up preempts it at
		# once), so no vCPU halts between ping-pongs. Its CPU is left out of other%.
		for ((i = 0; i < $(nproc); i++)); do
			start_bg /dev/null chrt -i 0 bash -c 'while :; do :; done'
			SPIN_PIDS+=("$LAST_PID")
		done
		sleep 0.2
	fi
	for ((r = 1; r <= LAT_ROUNDS; r++)); do
		for t in "${ACTIVE[@]}"; do
			[[ -z ${FAILED[$t]:-} ]] || continue
			out=$RESULTS/$t.lat-$m.round$r.txt
			if ! run_lat "$t" "$out"; then
				target_failed "$t" "latency run $r ($m) failed, see $out"
				continue
			fi
			target_alive "$t" || continue
			cat "$out.row" >>"$RESULTS/$t.lat-$m.tsv"
		done
	done
	for p in "${SPIN_PIDS[@]}"; do stop_pid "$p" 2; done
	SPIN_PIDS=()
done

# ---- report --------------------------------------------------------------------------------------------------
AWK_MED='function med(a, n,   i, j, x) { for (i = 2; i <= n; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] > x; j--) a[j+1] = a[j]; a[j+1] = x }
	return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2 }'

# summary: one line per (test, target): test target gbps_med rounds ms_per_gb_med proxy%_med iperf%_med other%_max retr_sum sirq%_med
for x in $TESTS; do
	for t in "${ACTIVE[@]}"; do
		[[ -s $RESULTS/$t.tsv ]] || continue
		awk -v x="$x" -v t="$t" "$AWK_MED"'
			$1 == x { n++; g[n] = $2; rounds = rounds (n > 1 ? "/" : "") sprintf("%.1f", $2); retr += $4
				if ($5 != "-") { nm++; m[nm] = $5; pp[nm] = $6 }
				ip[n] = $7; si[n] = $9; if ($8 > oc) oc = $8 }
			END { if (!n) exit
				printf "%s %s %.2f %s %s %s %.0f %.0f %d %.0f\n", x, t, med(g, n), rounds, nm ? sprintf("%.0f", med(m, nm)) : "-",
					nm ? sprintf("%.0f", med(pp, nm)) : "-", med(ip, n), oc, retr, med(si, n) }' "$RESULTS/$t.tsv"
	done
done >"$RESULTS/summary.txt"

for m in $LAT_MODES; do
	for t in "${ACTIVE[@]}"; do
		[[ -s $RESULTS/$t.lat-$m.tsv ]] || continue
		awk -v t="$t" "$AWK_MED"'
		{ n++; for (k = 1; k <= 6; k++) v[k, n] = $k; r50 = r50 (n > 1 ? "/" : "") $1; r99 = r99 (n > 1 ? "/" : "") $3
		  if ($7 != "-") { nc++; cu[nc] = $7 }; if ($8 > oc) oc = $8 }
		END { printf "%s", t
			for (k = 1; k <= 6; k++) { for (i = 1; i <= n; i++) a[i] = v[k, i]; printf " %.1f", med(a, n) }
			printf " %s %s %s %.0f\n", r50, r99, nc ? sprintf("%.1f", med(cu, nc)) : "-", oc }' "$RESULTS/$t.lat-$m.tsv"
	done >"$RESULTS/latency-$m-summary.txt"
done

report() {
	awk -v lbl="$(for x in $TESTS; do printf '%s=%s,' "$x" "$(test_label "$x")"; done)" '
		BEGIN { n = split(lbl, L, ","); for (i = 1; i < n; i++) { split(L[i], kv, "="); name[kv[1]] = kv[2] } }
		{ k = $1 SUBSEP $2; rows[NR] = k; x[NR] = $1; t[NR] = $2; g[k] = $3; rd[k] = $4; ms[k] = $5; pp[k] = $6; ip[k] = $7; oc[k] = $8; re[k] = $9; si[k] = $10 }
		function ratio(a, b) { return (b == "" || b == "-" || b == 0 || a == "-") ? "-" : sprintf("%.2f", a / b) }
		END {
			hdr = "%-7s %-15s %7s  %-17s %6s %7s %8s %6s %7s %6s %6s %6s %6s\n"
			printf hdr, "test", "target", "Gbit/s", "rounds Gbit/s", "xHAP", "xdirect", "CPU ms/GB", "xHAP", "proxy%", "iperf%", "sirq%", "other%", "retr"
			for (i = 1; i <= NR; i++) {
				k = rows[i]; h = x[i] SUBSEP "haproxy"; d = x[i] SUBSEP "direct"
				if (i > 1 && x[i] != x[i-1]) print ""
				printf hdr, name[x[i]], t[i], g[k], rd[k], ratio(g[k], g[h]), ratio(g[k], g[d]), ms[k], ratio(ms[k], ms[h]), pp[k], ip[k], si[k], oc[k], re[k]
			}
		}' "$RESULTS/summary.txt"
}
lat_report() { # MODE
	awk '
		{ t[NR] = $1; for (k = 2; k <= 7; k++) v[$1, k] = $k; r50[$1] = $8; r99[$1] = $9; cu[$1] = $10; oc[$1] = $11 }
		function ratio(a, b) { return (b == "" || b == 0) ? "-" : sprintf("%.2f", a / b) }
		END {
			hdr = "%-15s %7s %7s %7s %8s %8s %7s %9s %9s %8s %9s  %-20s %-20s %6s\n"
			printf hdr, "target", "p50 us", "p90 us", "p99 us", "p99.9 us", "max us", "mean us", "+p50 dir", "+p99 dir", "p99xHAP", "CPU us/rt", "rounds p50", "rounds p99", "other%"
			for (i = 1; i <= NR; i++) {
				k = t[i]
				a50 = (v["direct", 2] == "") ? "-" : sprintf("%.1f", v[k, 2] - v["direct", 2])
				a99 = (v["direct", 4] == "") ? "-" : sprintf("%.1f", v[k, 4] - v["direct", 4])
				printf hdr, k, v[k, 2], v[k, 3], v[k, 4], v[k, 5], v[k, 6], v[k, 7], a50, a99, ratio(v[k, 4], v["haproxy", 4]), cu[k], r50[k], r99[k], oc[k]
			}
		}' "$RESULTS/latency-$1-summary.txt"
}
{
	echo
	echo "iperf3 -t $DURATION through mode tcp, $ROUNDS interleaved rounds, $(nproc) CPUs; Gbit/s (receiver) and CPU figures = median of rounds"
	report
	echo
	echo "xHAP/xdirect: Gbit/s relative to haproxy/direct (higher is better); CPU ms/GB: proxy CPU (user+sys, /proc/PID/stat) per GB"
	echo "received, and its xHAP (lower is better); proxy%/iperf%: CPU of the proxy / the iperf3 client+server, % of one core;"
	echo "sirq%: irq+softirq time of the host (the loopback TCP work that no process is charged with); other%: worst round's"
	echo "CPU used by everything else; retr: TCP retransmits summed over rounds. HAProxy: nbthread $HAPROXY_NBTHREAD; sluice: all CPUs."
	echo
	for m in $LAT_MODES; do
		echo "request/response latency, $m CPUs: $LAT_N sequential ${LAT_SIZE}-byte ping-pongs on one connection to a Go echo server, $LAT_ROUNDS rounds; median of rounds"
		lat_report "$m"
		echo
	done
	echo "+p50/+p99 dir: added to the direct path's p50/p99 (µs); p99xHAP: p99 relative to haproxy; CPU us/rt: proxy CPU per round trip"
	echo "awake: a SCHED_IDLE busy loop per CPU keeps vCPUs from halting (the proxy's own path); idle: as the host is (includes"
	echo "the wake-up latency of idle CPUs, which on a VM can exceed the proxy's own cost)"
	[[ " ${ACTIVE[*]} " == *" sluice "* ]] || [[ " $TARGETS " != *" sluice "* ]] || echo "sluice: not measured (${SLUICE_WHY})"
	((NOISY == 0)) || echo "WARNING: $NOISY of $((ROUNDS * ntests * ${#ACTIVE[@]})) kept iperf3 run(s) had other% > $NOISE_MAX: other processes competed for the CPUs, treat these numbers as unreliable"
	echo "waited for a quiet host / redid noisy runs: ${QUIET_SPENT}s of QUIET_BUDGET=${QUIET_BUDGET}s"
	for t in "${!FAILED[@]}"; do echo "$t: FAILED (${FAILED[$t]}); its rows, if any, have only the runs before that"; done
	echo "raw iperf3 JSON, latency outputs, configs and logs: $RESULTS"
} | tee "$RESULTS/report.txt"
((${#FAILED[@]} == 0)) || exit 1

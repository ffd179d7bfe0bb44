#!/usr/bin/env bash
# HTTP/1.1 keep-alive throughput and latency: sluice vs HAProxy vs nginx vs the backend directly.
#
#   scripts/bench/http.sh                         # 3 rounds x 10s per target
#   DURATION=5s ROUNDS=5 scripts/bench/http.sh
#   TARGETS="haproxy direct" scripts/bench/http.sh
#   SLUICE_BIN=/path/to/sluice scripts/bench/http.sh   # skip the build
#
# Env: DURATION (10s), ROUNDS (3), WARMUP (2s), CONNS (50), THREADS (1), TARGETS ("sluice haproxy nginx direct"),
#      RESULTS_DIR (default: a new /tmp/sluice-http-DATE.XXXX), SLUICE_BIN, QUIET_WAIT (30: seconds to wait for
#      other processes to stop using the CPUs before starting; then it warns and goes on), NOISE_MAX (25) and
#      NOISE_RETRIES (1): a run in which other processes used more than NOISE_MAX % of a core is redone after waiting
#      (QUIET_WAIT) for the host to calm down, at most NOISE_RETRIES times; the last try is kept whatever its noise.
# See scripts/bench/README.md for what the numbers mean.
set -euo pipefail
# shellcheck source=scripts/bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-2s}
CONNS=${CONNS:-50}
THREADS=${THREADS:-1}
TARGETS=${TARGETS:-sluice haproxy nginx direct}
QUIET_WAIT=${QUIET_WAIT:-30}
NOISE_MAX=${NOISE_MAX:-25}
NOISE_RETRIES=${NOISE_RETRIES:-1}

bench_init http
ensure_tools wrk:wrk haproxy:haproxy nginx:nginx-light curl:curl
CLK_TCK=$(getconf CLK_TCK)

log "results: $RESULTS"
{
	echo "date: $(date -Is)"
	echo "kernel: $(uname -r)  cpus: $(nproc)  GOMAXPROCS env: ${GOMAXPROCS:-<unset>}"
	echo "wrk: $(wrk -v 2>&1 | head -n1)"
	echo "haproxy: $(haproxy -v | head -n1)"
	echo "nginx: $(nginx -v 2>&1)"
	echo "params: DURATION=$DURATION ROUNDS=$ROUNDS WARMUP=$WARMUP CONNS=$CONNS THREADS=$THREADS TARGETS=$TARGETS"
} >"$RESULTS/env.txt"
[[ -n ${GOMAXPROCS:-} ]] && log "note: GOMAXPROCS=$GOMAXPROCS is set in the environment and sluice inherits it"

# ---- backend -------------------------------------------------------------------------------------------------
free_port BPORT
write_nginx_backend "$RESULTS/backend.conf" "$BPORT"
start_target backend "$RESULTS/backend.conf" "$BPORT"
BACKEND_PID=$TARGET_PID
log "backend nginx pid $BACKEND_PID on 127.0.0.1:$BPORT"

# ---- targets -------------------------------------------------------------------------------------------------
declare -A PORT=() PID=()
ACTIVE=()
for t in $TARGETS; do
	case $t in
	direct)
		PORT[$t]=$BPORT PID[$t]=""
		;;
	sluice)
		build_sluice
		if [[ -z $SLUICE ]]; then
			log "skipping sluice: $SLUICE_WHY"
			continue
		fi
		free_port p
		write_lb_conf "$RESULTS/sluice.cfg" "$p" "$BPORT" sluice
		check_sluice_conf "$RESULTS/sluice.cfg" || { log "skipping sluice"; continue; }
		start_target sluice "$RESULTS/sluice.cfg" "$p" || { log "skipping sluice: $SLUICE_WHY"; continue; }
		PORT[$t]=$p PID[$t]=$TARGET_PID
		;;
	haproxy)
		free_port p
		write_lb_conf "$RESULTS/haproxy.cfg" "$p" "$BPORT" haproxy
		start_target haproxy "$RESULTS/haproxy.cfg" "$p"
		PORT[$t]=$p PID[$t]=$TARGET_PID
		;;
	nginx)
		free_port p
		write_nginx_proxy "$RESULTS/nginx.conf" "$p" "$BPORT" 30s
		start_target nginx "$RESULTS/nginx.conf" "$p"
		PORT[$t]=$p PID[$t]=$TARGET_PID
		;;
	*) die "unknown target '$t' (want sluice, haproxy, nginx, direct)" ;;
	esac
	# Same answer through every target: a proxy that answers an error fast must not look good.
	body=$(curl -fsS --max-time 2 "http://127.0.0.1:${PORT[$t]}/" 2>&1) || body="request failed: $body"
	if [[ $body != "$BACKEND_BODY" ]]; then
		[[ $t == sluice ]] || die "$t: unexpected answer: ${body:0:120}"
		SLUICE_WHY="wrong answer through sluice: ${body:0:120}"
		log "skipping sluice: $SLUICE_WHY"
		stop_pid "${PID[$t]}" 5
		continue
	fi
	curl -sS -o /dev/null -D "$RESULTS/$t.headers" --max-time 2 "http://127.0.0.1:${PORT[$t]}/"
	: >"$RESULTS/$t.tsv"
	ACTIVE+=("$t")
	log "$t ready on 127.0.0.1:${PORT[$t]}${PID[$t]:+ (pid ${PID[$t]})}"
done
((${#ACTIVE[@]})) || die "no target to benchmark"

# ---- runs ----------------------------------------------------------------------------------------------------
# run_wrk TARGET DURATION OUTFILE: one wrk run; writes "rps p50_ms p99_ms errors proxy% backend% wrk% other% steal%"
# to OUTFILE.row
sys_cpu_ticks() { # busy (all CPUs, not idle/iowait) and steal ticks from /proc/stat
	awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9, $9; exit }' /proc/stat
}

run_wrk() {
	local t=$1 d=$2 out=$3 t0 t1 p0 p1 b0 b1 s0 s1 st0 st1 wall cpu
	p0=0 p1=0
	[[ -n ${PID[$t]} ]] && p0=$(proc_cpu_ticks "${PID[$t]}")
	b0=$(proc_cpu_ticks "$BACKEND_PID")
	read -r s0 st0 < <(sys_cpu_ticks)
	t0=$(date +%s%N)
	# wrk's own CPU: the builtin `times` (no fork) before and after; wrk is the only child reaped in between.
	times >"$out.times0"
	run_tracked wrk -t"$THREADS" -c"$CONNS" -d"$d" --latency "http://127.0.0.1:${PORT[$t]}/" >"$out" 2>&1 || return 1
	times >"$out.times1"
	t1=$(date +%s%N)
	[[ -n ${PID[$t]} ]] && p1=$(proc_cpu_ticks "${PID[$t]}")
	b1=$(proc_cpu_ticks "$BACKEND_PID")
	read -r s1 st1 < <(sys_cpu_ticks)
	wall=$(((t1 - t0) / 1000000)) # ms
	# second line of `times`: children's user and system time, e.g. "0m1.234s 0m2.345s"
	read -r wu ws < <(cat "$out.times0" "$out.times1" | awk 'function sec(x) { split(x, a, "m"); return a[1] * 60 + a[2] }
		NR == 2 { u0 = sec($1); s0 = sec($2) } NR == 4 { printf "%.3f %.3f\n", sec($1) - u0, sec($2) - s0 }')
	rm -f "$out.times0" "$out.times1"
	# other% = everything else the machine ran (all CPUs busy time minus proxy, backend, wrk): noise indicator.
	cpu=$(awk -v p=$((p1 - p0)) -v b=$((b1 - b0)) -v s=$((s1 - s0)) -v st=$((st1 - st0)) -v hz="$CLK_TCK" -v w="$wall" \
		-v wu="$wu" -v ws="$ws" 'BEGIN { o = (s - p - b) / hz - wu - ws; if (o < 0) o = 0
			printf "%.0f %.0f %.0f %.0f %.0f", p/hz*100000/w, b/hz*100000/w, (wu+ws)*100000/w, o*100000/w, st/hz*100000/w }')
	[[ -n ${PID[$t]} ]] || cpu="- ${cpu#* }"
	awk -v cpu="$cpu" '
		function ms(s) {   # wrk prints 512.00us, 1.23ms, 1.01s, 1.50m
			if (s ~ /us$/) return substr(s, 1, length(s)-2) / 1000
			if (s ~ /ms$/) return substr(s, 1, length(s)-2) + 0
			if (s ~ /s$/)  return substr(s, 1, length(s)-1) * 1000
			if (s ~ /m$/)  return substr(s, 1, length(s)-1) * 60000
			if (s ~ /h$/)  return substr(s, 1, length(s)-1) * 3600000
			return -1
		}
		/^Requests\/sec:/ { rps = $2 }
		$1 == "50%" { p50 = ms($2) }
		$1 == "99%" { p99 = ms($2) }
		/Non-2xx or 3xx responses:/ { err += $NF }
		/Socket errors:/ { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) err += $i + 0 }
		END {
			if (rps == "") { print "no Requests/sec in wrk output" > "/dev/stderr"; exit 1 }
			printf "%s %.3f %.3f %d %s\n", rps, p50, p99, err, cpu
		}' "$out" >"$out.row" || return 1
}

# A target that fails (wrk error, process died) is dropped from the remaining runs and reported; the others go on.
# The backend dying ends the benchmark.
declare -A FAILED=()
target_failed() {
	local t=$1 why=$2
	FAILED[$t]=$why
	log "$t FAILED: $why; dropping it from the remaining runs"
}
target_alive() {
	local t=$1
	kill -0 "$BACKEND_PID" 2>/dev/null || die "the backend (pid $BACKEND_PID) died, see $RESULTS/backend.log"
	[[ -z ${PID[$t]} ]] || kill -0 "${PID[$t]}" 2>/dev/null || { target_failed "$t" "process ${PID[$t]} died, see $RESULTS/$t.log"; return 1; }
}

wait_quiet "$QUIET_WAIT"
log "warm-up: $WARMUP per target"
for t in "${ACTIVE[@]}"; do
	if ! run_tracked wrk -t"$THREADS" -c"$CONNS" -d"$WARMUP" "http://127.0.0.1:${PORT[$t]}/" >"$RESULTS/$t.warmup.txt" 2>&1; then
		target_failed "$t" "wrk failed in warm-up, see $RESULTS/$t.warmup.txt"
	fi
	target_alive "$t" || true
done

NOISY=0
for ((r = 1; r <= ROUNDS; r++)); do
	for t in "${ACTIVE[@]}"; do
		[[ -z ${FAILED[$t]:-} ]] || continue
		log "round $r/$ROUNDS: $t (wrk -t$THREADS -c$CONNS -d$DURATION --latency)"
		for ((try = 0; ; try++)); do
			out=$RESULTS/$t.round$r.txt
			if ! run_wrk "$t" "$DURATION" "$out"; then
				target_failed "$t" "wrk failed in round $r, see $out"
				break
			fi
			target_alive "$t" || break
			read -r -a row <"$out.row"
			# A round during which other processes used the CPUs is redone (bounded); the noisy output is kept aside.
			if ((row[7] > NOISE_MAX && try < NOISE_RETRIES)); then
				log "round $r/$ROUNDS: $t: other processes used ${row[7]}% of a core (> NOISE_MAX=$NOISE_MAX), redoing it"
				mv "$out" "$out.noisy$try"
				mv "$out.row" "$out.noisy$try.row"
				wait_quiet "$QUIET_WAIT"
				continue
			fi
			((row[7] <= NOISE_MAX)) || NOISY=$((NOISY + 1))
			cat "$out.row" >>"$RESULTS/$t.tsv"
			break
		done
	done
done

# ---- report --------------------------------------------------------------------------------------------------
# Median of each column across rounds, then ratios against haproxy and direct.
summary() {
	local t
	for t in "${ACTIVE[@]}"; do
		[[ -s $RESULTS/$t.tsv ]] || continue
		awk -v t="$t" '
			function med(a, n,   i, j, x) {   # insertion sort, n is small
				for (i = 2; i <= n; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] > x; j--) a[j+1] = a[j]; a[j+1] = x }
				return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
			}
			{ n++; rps[n] = $1; p50[n] = $2; p99[n] = $3; err += $4; pc[n] = $5; bc[n] = $6; wc[n] = $7
			  if ($8 > oc) oc = $8; if ($9 > sc) sc = $9
			  rounds = rounds (n > 1 ? "/" : "") sprintf("%.0f", $1) }
			END {
				printf "%s %.0f %s %.3f %.3f %d %s %.0f %.0f %.0f %.0f\n", t, med(rps, n), rounds, med(p50, n), med(p99, n), err,
					(pc[1] == "-" ? "-" : sprintf("%.0f", med(pc, n))), med(bc, n), med(wc, n), oc, sc
			}' "$RESULTS/$t.tsv"
	done
}
summary >"$RESULTS/summary.txt"

report() {
	awk '
		{ t[NR] = $1; rps[$1] = $2; rounds[$1] = $3; p50[$1] = $4; p99[$1] = $5; err[$1] = $6; pc[$1] = $7; bc[$1] = $8; wc[$1] = $9
		  oc[$1] = $10; sc[$1] = $11 }
		function ratio(a, b) { return (b == "" || b == 0) ? "-" : sprintf("%.2f", a / b) }
		END {
			hdr = "%-8s %9s  %-23s %8s %8s %7s %7s %8s %6s %6s %6s %6s %9s %7s\n"
			row = "%-8s %9s  %-23s %8.3f %8.3f %7s %7s %8s %6s %6s %6s %6s %9s %7s\n"
			printf hdr, "target", "req/s", "rounds req/s", "p50 ms", "p99 ms", "xHAP", "xdirect", "p99xHAP", "errors", "proxy%", "bknd%", "wrk%", "req/core", "other%"
			for (i = 1; i <= NR; i++) {
				k = t[i]
				percore = (pc[k] == "-" || pc[k] == 0) ? "-" : sprintf("%.0f", rps[k] * 100 / pc[k])
				printf row, k, rps[k], rounds[k], p50[k], p99[k], ratio(rps[k], rps["haproxy"]), ratio(rps[k], rps["direct"]),
					ratio(p99[k], p99["haproxy"]), err[k], pc[k], bc[k], wc[k], percore, oc[k] (sc[k] > 0 ? "/st" sc[k] : "")
			}
		}' "$RESULTS/summary.txt"
}
{
	echo
	echo "wrk -t$THREADS -c$CONNS -d$DURATION --latency, $ROUNDS interleaved rounds, $(nproc) CPUs; req/s, p50, p99, CPU% = median of rounds"
	report
	echo
	echo "xHAP/xdirect: req/s relative to haproxy/direct (higher is better); p99xHAP: p99 relative to haproxy (lower is better)"
	echo "errors: non-2xx + socket errors summed over rounds; CPU% of one core during the run (proxy, backend nginx, wrk)"
	echo "other%: worst round's CPU used by everything else on the host (/st: of which hypervisor steal); high = noisy run"
	echo "req/core: req/s per fully busy proxy core (req/s * 100 / proxy%): efficiency independent of how many cores the proxy grabbed"
	[[ " ${ACTIVE[*]} " == *" sluice "* ]] || [[ " $TARGETS " != *" sluice "* ]] || echo "sluice: not measured (${SLUICE_WHY})"
	((NOISY == 0)) || echo "WARNING: $NOISY kept run(s) had other% > $NOISE_MAX: other processes competed for the CPUs, treat these numbers as unreliable"
	for t in "${!FAILED[@]}"; do echo "$t: FAILED (${FAILED[$t]}); its row, if any, has only the rounds before that"; done
	echo "raw wrk outputs, configs and logs: $RESULTS"
} | tee "$RESULTS/report.txt"
((${#FAILED[@]} == 0)) || exit 1

#!/usr/bin/env bash
# Server queue (maxconn reached, requests wait in the balancer): memory per queued request and dispatch latency
# from a freed slot to the next request reaching the server. sluice vs HAProxy.
#
#   scripts/bench/queue.sh                         # N=10000 queued; dispatch with K=1000 and 10000, 3 rounds each
#   N=2000 KS="1000" ROUNDS=1 scripts/bench/queue.sh
#   TARGETS="sluice direct" SLUICE_BIN=/path/to/sluice scripts/bench/queue.sh
#
# Env: N (10000: requests queued for the memory measurement), KS ("1000 10000": queue lengths for the dispatch
#      measurement), ROUNDS (3: dispatch runs per K), MAXCONN (1: the server's maxconn), TARGETS ("sluice haproxy
#      haproxy-always direct"), GOAL_P99_US (1000), QUIET_WAIT (30: seconds to wait for other processes to leave the
#      CPUs idle before each target, then warn and go on), RESULTS_DIR, SLUICE_BIN.
# See scripts/bench/README.md.
set -euo pipefail
# shellcheck source=scripts/bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

N=${N:-10000}
KS=${KS:-1000 10000}
ROUNDS=${ROUNDS:-3}
MAXCONN=${MAXCONN:-1}
TARGETS=${TARGETS:-sluice haproxy haproxy-always direct}
GOAL_P99_US=${GOAL_P99_US:-1000}
QUIET_WAIT=${QUIET_WAIT:-30}

bench_init queue
ensure_tools haproxy:haproxy curl:curl
command -v go >/dev/null || die "go is needed to build scripts/bench/queuebench"
log "results: $RESULTS"

kmax=$N
for k in $KS; do ((k > kmax)) && kmax=$k; done
hard=$(ulimit -Hn)
# The client holds one fd per queued request, and so does the proxy (separate processes, separate limits).
((hard >= kmax + 64)) || die "hard RLIMIT_NOFILE $hard < $kmax+64; lower N/KS"
PMAX=$((kmax + 2000)) # proxy maxconn: every client connection must be accepted

log "building queuebench"
(cd "$REPO_ROOT" && go build -o "$WORK/queuebench" ./scripts/bench/queuebench) >"$RESULTS/queuebench-build.log" 2>&1 ||
	{ cat "$RESULTS/queuebench-build.log" >&2; die "cannot build scripts/bench/queuebench"; }
QB=$WORK/queuebench

{
	echo "date: $(date -Is)"
	echo "kernel: $(uname -r)  cpus: $(nproc)  GOMAXPROCS env: ${GOMAXPROCS:-<unset>}  RLIMIT_NOFILE hard: $hard"
	echo "haproxy: $(haproxy -v | head -n1)"
	echo "sluice commit: $(cd "$REPO_ROOT" && git rev-parse --short HEAD 2>/dev/null)$(cd "$REPO_ROOT" && git diff --quiet -- cmd userspace pkg 2>/dev/null || echo ' (+ uncommitted changes)')"
	echo "params: N=$N KS=$KS ROUNDS=$ROUNDS MAXCONN=$MAXCONN TARGETS=$TARGETS"
} >"$RESULTS/env.txt"

# The backend: answers at once, or holds every request while told to (queuebench's control port).
free_port BPORT
free_port CPORT
start_bg "$RESULTS/backend.log" "$QB" backend -listen "127.0.0.1:$BPORT" -control "127.0.0.1:$CPORT" -lifetime 3h
BACKEND_PID=$LAST_PID
wait_http backend "$BACKEND_PID" "http://127.0.0.1:$BPORT/" 10 "$RESULTS/backend.log" || die "backend did not start"
wait_http backend-control "$BACKEND_PID" "http://127.0.0.1:$CPORT/stats" 10 "$RESULTS/backend.log" ||
	die "backend control port did not start"
log "backend pid $BACKEND_PID on 127.0.0.1:$BPORT (control $CPORT)"

# One server with maxconn, timeout queue 120s, client/server timeouts far above the measurement.
export LB_TIMEOUT_CLIENT=180s LB_TIMEOUT_SERVER=180s LB_SERVER_OPTS="maxconn $MAXCONN"
LB_DEFAULTS="    timeout queue 120s
    maxconn $PMAX"
LB_GLOBAL="    maxconn $PMAX"
# HAProxy wants 2*maxconn fds; a queued request holds only its client fd. Same reasoning as idle-conns.sh.
HAP_GLOBAL="$LB_GLOBAL
    ulimit-n $hard
    no strict-limits"

# add_metrics_frontend FILE PORT: a second frontend serving the Prometheus exporter (HAProxy and sluice alike), so
# the proxy's own queue counters can be read once the queue is full.
add_metrics_frontend() {
	printf '\nfrontend metrics\n    bind 127.0.0.1:%s\n    http-request use-service prometheus-exporter if { path /metrics }\n' \
		"$2" >>"$1"
}

RUN_TIMEOUT=200 # queuebench run bounds itself at fill 60 + 2 x settle 15 + drain 60 + 30 s

# qrun TARGET CYCLE ROUND OUTBASE ARGS...: one queuebench run; its RESULT line goes to results.txt with the cycle.
qrun() {
	local t=$1 cycle=$2 round=$3 out=$4 rc=0
	shift 4
	run_tracked timeout "$RUN_TIMEOUT" "$QB" run -control "127.0.0.1:$CPORT" -backend-pid "$BACKEND_PID" \
		-maxconn "$MAXCONN" -label "$t" -raw-events "$out.events" -raw-latencies "$out.lat" "$@" >"$out.txt" 2>&1 || rc=$?
	sed 's/^/    /' "$out.txt" >&2
	((rc == 0)) || log "$t ($cycle, round $round): queuebench exited with status $rc (see $out.txt)"
	if grep -q '^RESULT ' "$out.txt"; then
		grep '^RESULT ' "$out.txt" | sed "s/^RESULT /RESULT cycle=$cycle round=$round /" >>"$RESULTS/results.txt"
	else
		echo "RESULT cycle=$cycle round=$round label=$t failed=status_$rc" >>"$RESULTS/results.txt"
	fi
	return "$rc"
}

: >"$RESULTS/results.txt"
NOTES=()
for t in $TARGETS; do
	extra_args=()
	case $t in
	sluice)
		[[ -n ${SLUICE+x} ]] || build_sluice
		if [[ -z $SLUICE ]]; then
			NOTES+=("sluice: not measured ($SLUICE_WHY)")
			continue
		fi
		free_port p
		conf=$RESULTS/sluice.cfg
		free_port mp
		write_lb_conf "$conf" "$p" "$BPORT" sluice "$LB_DEFAULTS" "$LB_GLOBAL"
		add_metrics_frontend "$conf" "$mp"
		check_sluice_conf "$conf" || { NOTES+=("sluice: not measured ($SLUICE_WHY)"); continue; }
		kind=sluice
		extra_args=(-metrics-url "http://127.0.0.1:$mp/metrics")
		;;
	haproxy | haproxy-always)
		free_port p
		conf=$RESULTS/$t.cfg
		d=$LB_DEFAULTS
		g=$HAP_GLOBAL
		# http-reuse always: a queued request may go out on the connection the previous one just released (as
		# sluice does for a first request without body). HAProxy stops keeping idle server connections once 20 %
		# (pool-low-fd-ratio) of its fds are in use (here 10000 queued clients are ~40 %): lift that, or every
		# queued request would get a new connection again at K=10000.
		[[ $t == haproxy-always ]] && d="$d
    http-reuse always" && g="$g
    tune.pool-low-fd-ratio 100
    tune.pool-high-fd-ratio 100"
		free_port mp
		write_lb_conf "$conf" "$p" "$BPORT" haproxy "$d" "$g"
		add_metrics_frontend "$conf" "$mp"
		kind=haproxy
		extra_args=(-metrics-url "http://127.0.0.1:$mp/metrics")
		;;
	direct) kind=direct ;;
	*) die "unknown target '$t' (want sluice, haproxy, haproxy-always, direct)" ;;
	esac
	wait_quiet "$QUIET_WAIT"

	if [[ $kind == direct ]]; then
		for k in $KS; do
			for ((r = 1; r <= ROUNDS; r++)); do
				log "direct: K=$k round $r/$ROUNDS (one keep-alive connection, back to back, no proxy)"
				qrun direct disp "$r" "$RESULTS/direct.K$k.r$r" -direct -addr "127.0.0.1:$BPORT" -n "$k" || true
			done
		done
		continue
	fi

	if ! start_target "$kind" "$conf" "$p"; then
		NOTES+=("sluice: not measured ($SLUICE_WHY)")
		continue
	fi
	pid=$TARGET_PID
	[[ $kind == haproxy && $t != haproxy ]] && mv -f "$RESULTS/haproxy.log" "$RESULTS/$t.log" 2>/dev/null || true
	log "$t ready on 127.0.0.1:$p (pid $pid)"

	log "$t: memory: $N requests queued behind maxconn $MAXCONN"
	qrun "$t" mem 1 "$RESULTS/$t.mem" -addr "127.0.0.1:$p" -pid "$pid" -mem -n "$N" "${extra_args[@]}" ||
		NOTES+=("$t: the memory run reported a problem, see $RESULTS/$t.mem.txt")
	for k in $KS; do
		for ((r = 1; r <= ROUNDS; r++)); do
			kill -0 "$pid" 2>/dev/null || break 2
			log "$t: dispatch: K=$k round $r/$ROUNDS"
			qrun "$t" disp "$r" "$RESULTS/$t.K$k.r$r" -addr "127.0.0.1:$p" -pid "$pid" -n "$k" "${extra_args[@]}" ||
				NOTES+=("$t: K=$k round $r reported a problem, see $RESULTS/$t.K$k.r$r.txt")
		done
	done
	if ! kill -0 "$pid" 2>/dev/null; then
		NOTES+=("$t: the process died during the measurement (see $RESULTS/$t.log)")
		log "$t died (see $RESULTS/$t.log)"
	fi
	stop_pid "$pid" 5
	[[ $kind == haproxy && $t != haproxy ]] && mv -f "$RESULTS/haproxy.log" "$RESULTS/$t.log" 2>/dev/null || true
done

# pooled_pcts FILES...: p50 p90 p99 p99.9 max count over all the dispatch latencies in FILES (nearest rank).
pooled_pcts() {
	cat "$@" 2>/dev/null | sort -g | awk '
		{ v[NR] = $1 }
		function pct(p,  i) { i = int(p / 100 * NR); if (i < p / 100 * NR) i++; if (i < 1) i = 1; return v[i] }
		END { if (NR == 0) { print "- - - - - 0"; exit }
		      printf "%.0f %.0f %.0f %.0f %.0f %d\n", pct(50), pct(90), pct(99), pct(99.9), v[NR], NR }'
}

{
	echo
	echo "== memory: N=$N requests queued behind one server with maxconn $MAXCONN (VmRSS of the proxy process) =="
	awk '$2 == "cycle=mem" {
		delete v
		for (i = 2; i <= NF; i++) { j = index($i, "="); if (j) v[substr($i, 1, j - 1)] = substr($i, j + 1) }
		if (v["failed"] != "") { printf "%-15s run failed (%s)\n", v["label"], v["failed"]; next }
		note = ""
		if (v["queued"] != "true") note = note " queue-not-full"
		if (v["stable"] != "true") note = note " unsettled"
		if (v["early"] + 0 > 0) note = note " answered-early=" v["early"]
		if (v["max_active"] + 0 > v["maxconn"] + 0) note = note " maxconn-exceeded"
		if (v["ok"] != v["n"]) note = note " LOST"
		if (v["other_cpu"] + 0 > 25) note = note " noisy(other%=" v["other_cpu"] ")"
		rows[++nr] = sprintf("%-15s %6s %6s %5s %6s %5s %10s %10s %8s %9s %7s %10s %7s %7s %8s  %-16s %s", v["label"], v["n"], v["ok"],
			v["non200"], v["errors"], v["hung"], v["rss_before_kib"], v["rss_after_kib"], v["per_req_kib"], v["anon_per_req_kib"],
			v["fds_delta"], v["rss_drained_kib"], v["p50_us"], v["p99_us"], v["max_us"], v["proxy_queue"], note) }
	END {
		printf "%-15s %6s %6s %5s %6s %5s %10s %10s %8s %9s %7s %10s %7s %7s %8s  %-16s %s\n", "target", "N", "200s", "other", "errors", "hung",
			"RSS before", "RSS after", "KiB/req", "anon/req", "+fds", "RSS drain", "p50 us", "p99 us", "max us", "own queue", "notes"
		for (i = 1; i <= nr; i++) print rows[i] }' "$RESULTS/results.txt"
	echo "other = non-200 responses; errors = no response (connection error, or hung = none within the drain timeout)"
	echo "KiB/req = (after - before) / N of VmRSS, anon/req the same for RssAnon; RSS drain = one VmRSS sample right after"
	echo "all responses arrived; p50/p99/max = dispatch latency during that drain (the queue started at N-$MAXCONN);"
	echo "own queue = the proxy's own counters once the queue was full (Prometheus exporter: backend queue, server queue);"
	echo "noisy = other processes used more than 25 % of a core during the drain (latencies unreliable, memory is not affected)"

	echo
	echo "== dispatch latency: backend's 'response written' -> next request's first byte, maxconn $MAXCONN, all rounds pooled (us) =="
	printf "%-15s %6s %6s %7s %7s %7s %7s %7s %12s %7s %7s %7s %11s %9s  %s\n" target K pairs p50 p90 p99 p99.9 max \
		"rounds p99" "req/s" "bconns" "200s/K" "FIFO inv/d" "proxy%" "verdict (p99 <= $GOAL_P99_US us)"
	for t in $TARGETS; do
		for k in $KS; do
			files=() r99="" rps="" bc="" oks=0 fifo=0 maxd=0 cpu="" bad=0 other=0
			for ((r = 1; r <= ROUNDS; r++)); do
				line=$(awk -v t="$t" -v r="$r" -v k="$k" '$2 == "cycle=disp" && $3 == "round=" r && $0 ~ (" label=" t " ") && $0 ~ (" n=" k " ")' "$RESULTS/results.txt")
				[[ -n $line ]] || continue
				declare -A v=()
				for kv in $line; do [[ $kv == *=* ]] && v[${kv%%=*}]=${kv#*=}; done
				if [[ -n ${v[failed]:-} ]]; then bad=$((bad + 1)); unset v; continue; fi
				files+=("$RESULTS/$t.K$k.r$r.lat")
				r99+="${r99:+/}${v[p99_us]%.*}"
				rps+="${v[backend_rps]} "
				bc=${v[backend_conns]}
				oks=$((oks + v[ok]))
				fifo=$((fifo + v[fifo_inversions]))
				((v[max_displacement] <= maxd)) || maxd=${v[max_displacement]}
				[[ ${v[proxy_cpu]} == -1 ]] || cpu+="${cpu:+/}${v[proxy_cpu]}"
				((v[ok] == k)) || bad=$((bad + 1))
				((${v[other_cpu]} <= 25)) || other=$((other + 1))
				unset v
			done
			((${#files[@]})) || continue
			read -r p50 p90 p99 p999 pmax cnt < <(pooled_pcts "${files[@]}")
			rps=$(printf '%s\n' $rps | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }') # median
			verdict="(ref)"
			if ((cnt == 0)); then
				verdict="no pairs (no request was dispatched from the queue)"
			elif [[ $t == sluice ]]; then
				((p99 <= GOAL_P99_US)) && verdict=ok || verdict=OVER
			fi
			((bad == 0)) || verdict="$verdict, $bad round(s) with lost/failed requests"
			((other == 0)) || verdict="$verdict, noisy: $other round(s) with other% > 25"
			printf "%-15s %6s %6s %7s %7s %7s %7s %7s %12s %7s %7s %7s %11s %9s  %s\n" "$t" "$k" "$cnt" "$p50" "$p90" "$p99" \
				"$p999" "$pmax" "$r99" "$rps" "$bc" "$((oks / ${#files[@]}))" "$fifo/$maxd" "${cpu:--}" "$verdict"
		done
	done
	echo "pairs = consecutive (slot freed, next request) pairs over all $ROUNDS rounds; rounds p99 = each round's p99;"
	echo "req/s = median over rounds of the completions per second at the backend; bconns = new backend connections in the last"
	echo "round (~K: a connection per queued request); 200s/K = mean per round; FIFO inv/d = requests that reached the"
	echo "backend after one the client had sent later (all rounds) / the largest such overtaking, in requests (the client"
	echo "sends them one after the other); proxy% = proxy CPU during each round's drain, % of one core"
	echo "direct = no proxy: one Go client connection, back to back (loopback + backend + Go client turn-around): a"
	echo "reference, not a floor (HAProxy with reuse turns requests around faster than the Go client)."
	for n in "${NOTES[@]}"; do echo "NOTE: $n"; done
	echo "raw outputs (*.txt), latencies (*.lat, us), backend events (*.events), configs and logs: $RESULTS"
} | tee "$RESULTS/report.txt"

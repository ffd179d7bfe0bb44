#!/usr/bin/env bash
# Tunnel benchmark: TCP tunnels through sluice (mode tcp; kernel splice, the default, and with no option
# kernel-splice), the bare spliced and userspace-copy forwarders of pkg/kernel, HAProxy (mode tcp, nbthread 1) and
# direct, interleaved; iperf3 throughput, small-message request/response latency (p50/p99), and memory per idle
# tunnel. See README.md.
#   scripts/bench/tunnel/tunnel.sh
#   DURATION=5 ROUNDS=3 TARGETS="sluice sluice-copy splice copy haproxy direct" IDLE_N=5000 scripts/bench/tunnel/tunnel.sh
#   TARGETS="custom" CUSTOM_CMD='/path/sluice -f {CONF}' ... (see README.md)
set -euo pipefail
# shellcheck source=../lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-3}
TARGETS=${TARGETS:-"sluice sluice-copy splice copy haproxy direct"}
IDLE_N=${IDLE_N:-5000}
IDLE_TARGETS=${IDLE_TARGETS:-"sluice sluice-copy"}
LAT_N=${LAT_N:-20000}
[[ $(id -u) -eq 0 ]] || die "needs root (kernel splice)"

bench_init tunnel
ensure_tools iperf3:iperf3 haproxy:haproxy python3:python3
log "building scripts/bench/tunnel"
(cd "$REPO_ROOT" && go build -o "$WORK/tunnel" ./scripts/bench/tunnel) || die "build failed"
TB=$WORK/tunnel
if [[ " $TARGETS $IDLE_TARGETS " == *" sluice"* ]]; then
	build_sluice
	[[ -n $SLUICE ]] || die "sluice: $SLUICE_WHY"
	bench_cgroup tunnel # sluice runs in its own cgroup, as under systemd
fi

# start_waiting LOG CMD...: start CMD, wait for its "ready ADDR" line; sets LAST_PID.
start_waiting() {
	local lf=$1 i
	shift
	start_bg "$lf" "$@"
	for ((i = 0; i < 100; i++)); do
		grep -q '^ready' "$lf" 2>/dev/null && return 0
		kill -0 "$LAST_PID" 2>/dev/null || { cat "$lf" >&2; die "$* exited"; }
		sleep 0.05
	done
	die "$* not ready"
}

# start_target NAME PORT BACKEND_PORT: a forwarder on PORT to BACKEND_PORT; sets FWD_PID ("" for direct).
start_fwd() {
	local name=$1 port=$2 bport=$3 lf=$RESULTS/$1.$2.log conf
	FWD_PID=""
	case $name in
	splice | copy) start_waiting "$lf" "$TB" forward -mode "$name" -listen "127.0.0.1:$port" -to "127.0.0.1:$bport" ;;
	haproxy)
		conf=$RESULTS/haproxy.$port.cfg
		printf 'global\n    nbthread 1\n    ulimit-n 20000\n    no strict-limits\ndefaults\n    mode tcp\n    timeout connect 5s\n    timeout client 1h\n    timeout server 1h\nlisten t\n    bind 127.0.0.1:%s\n    server s 127.0.0.1:%s\n' "$port" "$bport" >"$conf"
		start_bg "$lf" haproxy -db -f "$conf"
		sleep 0.3
		;;
	sluice | sluice-copy)
		conf=$RESULTS/$name.$port.cfg
		extra=""
		[[ $name == sluice-copy ]] && extra=$'    no option kernel-splice\n'
		printf 'global\n    maxconn 20000\ndefaults\n    mode tcp\n    timeout connect 5s\n    timeout client 1h\n    timeout server 1h\n%slisten t\n    bind 127.0.0.1:%s\n    server s 127.0.0.1:%s\n' \
			"$extra" "$port" "$bport" >"$conf"
		check_sluice_conf "$conf" || die "sluice: $SLUICE_WHY"
		if [[ -n $BENCH_CGROUP ]]; then
			# shellcheck disable=SC2016 # $$ and $1.. are the inner shell's
			start_bg "$lf" bash -c 'echo $$ >"$1/cgroup.procs" && exec "$2" -f "$3"' _ "$BENCH_CGROUP" "$SLUICE" "$conf"
		else
			start_bg "$lf" "$SLUICE" -f "$conf"
		fi
		wait_listen "$name" "$LAST_PID" "$port" 10 "$lf" || die "$name did not start"
		;;
	custom)
		[[ -n ${CUSTOM_CMD:-} ]] || die "TARGETS=custom needs CUSTOM_CMD"
		conf=$RESULTS/custom.$port.cfg
		printf 'defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 1h\n    timeout server 1h\n    option kernel-splice\nlisten t\n    bind 127.0.0.1:%s\n    server s 127.0.0.1:%s\n' "$port" "$bport" >"$conf"
		# shellcheck disable=SC2086 # CUSTOM_CMD is a command line
		start_bg "$lf" ${CUSTOM_CMD//\{CONF\}/$conf}
		sleep 0.5
		;;
	direct) return 0 ;;
	*) die "unknown target $name" ;;
	esac
	FWD_PID=$LAST_PID
}

free_port IPERF_PORT
start_bg "$RESULTS/iperf3.log" iperf3 -s -p "$IPERF_PORT"
IPERF_PID=$LAST_PID
free_port ECHO_PORT
start_waiting "$RESULTS/echo.log" "$TB" echo -listen "127.0.0.1:$ECHO_PORT"
sleep 0.3
cat /proc/sys/kernel/osrelease >"$RESULTS/env.txt"

declare -A TPUT LATS
for ((r = 1; r <= ROUNDS; r++)); do
	for t in $TARGETS; do
		wait_quiet 10
		if [[ $t == direct ]]; then
			tport=$IPERF_PORT lport=$ECHO_PORT
		else
			free_port tport
			start_fwd "$t" "$tport" "$IPERF_PORT"
			p1=$FWD_PID
			free_port lport
			start_fwd "$t" "$lport" "$ECHO_PORT"
			p2=$FWD_PID
		fi
		c0=0
		[[ -n ${p1:-} && $t != direct ]] && c0=$(proc_cpu_ticks "$p1")
		iperf3 -c 127.0.0.1 -p "$tport" -t "$DURATION" -J >"$RESULTS/$t.r$r.iperf.json" || log "iperf3 through $t failed"
		c1=0
		[[ -n ${p1:-} && $t != direct ]] && c1=$(proc_cpu_ticks "$p1")
		gbps=$(python3 -c 'import json,sys; print("%.2f" % (json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"]/1e9))' "$RESULTS/$t.r$r.iperf.json" 2>/dev/null || echo 0)
		cpu=$(((c1 - c0) * 100 / $(getconf CLK_TCK) / DURATION))
		lat=$("$TB" latency -addr "127.0.0.1:$lport" -n "$LAT_N" -size 64 2>&1 | tail -n 1)
		log "round $r $t: ${gbps} Gbit/s, fwd CPU ${cpu}%, $lat"
		TPUT[$t]+="$gbps "
		LATS[$t]+="$(awk '{print $2"/"$4}' <<<"$lat") "
		printf '%s\tround%d\t%s\t%s\t%s\n' "$t" "$r" "$gbps" "$cpu" "$lat" >>"$RESULTS/rounds.tsv"
		if [[ $t != direct ]]; then
			stop_pid "$p1" 5
			stop_pid "$p2" 5
		fi
		p1="" p2=""
	done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
{
	printf '%-11s %10s %-28s %-30s\n' target Gbit/s rounds "p50/p99 us (rounds)"
	for t in $TARGETS; do
		printf '%-11s %10s %-28s %-30s\n' "$t" "$(median <<<"${TPUT[$t]}")" "${TPUT[$t]}" "${LATS[$t]}"
	done
} | tee "$RESULTS/report.txt"

for t in $IDLE_TARGETS; do
	free_port iport
	start_fwd "$t" "$iport" "$ECHO_PORT"
	out=$("$TB" idle -addr "127.0.0.1:$iport" -pid "$FWD_PID" -n "$IDLE_N" 2>&1 | tail -n 1)
	log "idle $t: $out"
	printf 'idle %s: %s\n' "$t" "$out" | tee -a "$RESULTS/report.txt"
	stop_pid "$FWD_PID" 10
done
stop_pid "$IPERF_PID" 5
log "report: $RESULTS/report.txt"

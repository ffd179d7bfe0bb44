# shellcheck shell=bash
# Shared helpers for scripts/bench/*.sh. Sourced, not executed.
#
# Everything a script starts goes through start_bg, which records the PID; cleanup (installed as the EXIT trap by
# bench_init) stops exactly those PIDs (TERM, bounded wait, then KILL) and removes the work dir. Nothing is ever
# stopped by name. All listeners are on 127.0.0.1.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$BENCH_DIR/../.." && pwd)

WORK=""            # temp dir, removed on exit
RESULTS=""         # kept: raw outputs, configs, logs
declare -a STARTED_PIDS=()
declare -A USED_PORTS=()
_APT_UPDATED=0
_POLICY_RC_CREATED=0

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

# bench_init NAME: create the work and results dirs, install the EXIT trap.
bench_init() {
	local name=$1
	trap cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	WORK=$(mktemp -d "/tmp/sluice-${name}-work.XXXXXX")
	chmod 755 "$WORK" # nginx workers run as nobody
	if [[ -n ${RESULTS_DIR:-} ]]; then
		RESULTS=$RESULTS_DIR
		mkdir -p "$RESULTS"
	else
		RESULTS=$(mktemp -d "/tmp/sluice-${name}-$(date +%Y%m%d-%H%M%S).XXXX")
	fi
}

# descendants PID: PID's children, grandchildren, ... (one per line). Used to reach nginx workers.
descendants() {
	local p c
	for p in "$@"; do
		for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do
			echo "$c"
			descendants "$c"
		done
	done
}

# stop_pid PID [GRACE_SECONDS]: TERM, wait (bounded), KILL the process and anything left of its children.
stop_pid() {
	local pid=$1 grace=${2:-5} kids i
	kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
	kids=$(descendants "$pid")
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < grace * 20; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.05
	done
	if kill -0 "$pid" 2>/dev/null; then
		log "pid $pid did not exit after ${grace}s, sending KILL"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
	# Children of the process we started (nginx workers, wrk under its timing subshell) normally exit with it.
	for i in $kids; do kill -0 "$i" 2>/dev/null && kill -KILL "$i" 2>/dev/null || true; done
	untrack_pid "$pid"
	return 0
}

# untrack_pid PID: forget a PID that has exited and been reaped, so cleanup never signals a recycled PID.
untrack_pid() {
	local i
	for i in "${!STARTED_PIDS[@]}"; do
		[[ ${STARTED_PIDS[$i]} == "$1" ]] && unset 'STARTED_PIDS[i]'
	done
	STARTED_PIDS=("${STARTED_PIDS[@]}")
}

# run_tracked CMD...: run CMD in the background and wait for it, so a TERM/INT to the script is handled at once
# (bash defers traps while a foreground child runs) and cleanup can stop CMD. Returns CMD's status.
run_tracked() {
	local rc=0
	"$@" &
	local pid=$!
	STARTED_PIDS+=("$pid")
	wait "$pid" || rc=$?
	untrack_pid "$pid"
	return "$rc"
}

cleanup() {
	local rc=$? i
	trap - EXIT INT TERM
	for ((i = ${#STARTED_PIDS[@]} - 1; i >= 0; i--)); do
		stop_pid "${STARTED_PIDS[$i]}" 5
	done
	for i in "${BENCH_CGROUPS[@]}"; do
		# rmdir fails while a dying process is still in it
		for _ in 1 2 3 4 5 6 7 8 9 10; do rmdir "$i" 2>/dev/null && break; sleep 0.2; done
	done
	if ((_POLICY_RC_CREATED)); then rm -f /usr/sbin/policy-rc.d; fi
	if [[ -n $WORK && -d $WORK ]]; then rm -rf "$WORK"; fi
	if [[ -n $RESULTS && -d $RESULTS ]]; then log "results kept in $RESULTS"; fi
	exit "$rc"
}

# bench_cgroup NAME: a new cgroup v2 directory for processes the bench starts (removed at exit), in BENCH_CGROUP;
# empty if there is no cgroup2 hierarchy. sluice attaches its per-socket programs to its own cgroup, and does not
# when it runs in the root cgroup (as a systemd service it has its own).
BENCH_CGROUPS=()
bench_cgroup() {
	local root
	BENCH_CGROUP=""
	root=$(awk '$3 == "cgroup2" {print $2; exit}' /proc/mounts)
	[[ -n $root && -w $root ]] || return 0
	BENCH_CGROUP=$root/sluice-bench-$1-$$
	mkdir "$BENCH_CGROUP" || { BENCH_CGROUP=""; return 0; }
	BENCH_CGROUPS+=("$BENCH_CGROUP")
}

# start_bg LOGFILE CMD...: start CMD in the background; sets LAST_PID.
start_bg() {
	local logfile=$1
	shift
	"$@" >"$logfile" 2>&1 &
	LAST_PID=$!
	STARTED_PIDS+=("$LAST_PID")
}

# ensure_tools CMD:PKG ...: apt-get install the packages whose command is missing (apt-get update at most once).
ensure_tools() {
	local spec cmd pkg missing=()
	for spec in "$@"; do
		cmd=${spec%%:*}
		pkg=${spec#*:}
		command -v "$cmd" >/dev/null 2>&1 || [[ -x /usr/sbin/$cmd ]] || missing+=("$pkg")
	done
	((${#missing[@]})) || return 0
	[[ $(id -u) -eq 0 ]] || die "missing ${missing[*]}; run as root or: sudo apt-get install -y ${missing[*]}"
	command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get"
	# Keep Debian's maintainer scripts from starting system nginx/haproxy services on :80 that we would not own.
	if [[ ! -e /usr/sbin/policy-rc.d ]]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		_POLICY_RC_CREATED=1
	fi
	if ((!_APT_UPDATED)); then
		log "apt-get update"
		DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || die "apt-get update failed"
		_APT_UPDATED=1
	fi
	log "apt-get install -y ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 ||
		die "apt-get install ${missing[*]} failed"
	if ((_POLICY_RC_CREATED)); then rm -f /usr/sbin/policy-rc.d; _POLICY_RC_CREATED=0; fi
	PATH=$PATH:/usr/sbin:/sbin
}

# free_port VAR: a loopback TCP port nobody uses (no socket in any state), outside the ephemeral range so client
# sockets cannot collide with it, and not handed out before in this run.
free_port() {
	local __var=$1 __p __i __lo __hi
	read -r __lo __hi </proc/sys/net/ipv4/ip_local_port_range
	for ((__i = 0; __i < 500; __i++)); do
		__p=$((10000 + RANDOM % 20000))
		((__p >= __lo && __p <= __hi)) && continue
		[[ -n ${USED_PORTS[$__p]:-} ]] && continue
		if [[ -z $(ss -Htan "( sport = :$__p )" 2>/dev/null) ]]; then
			USED_PORTS[$__p]=1
			printf -v "$__var" '%s' "$__p"
			return 0
		fi
	done
	die "no free port found"
}

# wait_http NAME PID URL [TIMEOUT_S [LOGFILE]]: poll URL until it answers 200, bounded; fail early if PID died.
# Returns 1 (after showing the log's tail) if it never got ready.
wait_http() {
	local name=$1 pid=$2 url=$3 timeout=${4:-10} logfile=${5:-} deadline
	deadline=$(($(date +%s%N) + timeout * 1000000000))
	while :; do
		if ! kill -0 "$pid" 2>/dev/null; then
			[[ -n $logfile ]] && tail -n 20 "$logfile" >&2
			log "$name (pid $pid) exited before becoming ready"
			return 1
		fi
		if curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null; then return 0; fi
		if (($(date +%s%N) > deadline)); then
			[[ -n $logfile ]] && tail -n 20 "$logfile" >&2
			log "$name not ready on $url after ${timeout}s"
			return 1
		fi
		sleep 0.05
	done
}

# The backend's response body: exactly 100 bytes (99 + newline).
BACKEND_BODY=$(printf 'sluice-bench backend %078d' 0)

_nginx_temp_paths() { # DIR: keep every temp path nginx knows about inside DIR (nginx-light lacks some modules)
	local d=$1 m cfg
	cfg=$(nginx -V 2>&1)
	echo "    client_body_temp_path $d/body;"
	echo "    proxy_temp_path $d/proxy;"
	for m in fastcgi uwsgi scgi; do
		[[ $cfg == *"--without-http_${m}_module"* ]] || echo "    ${m}_temp_path $d/$m;"
	done
}

# write_nginx_backend FILE PORT: 1 worker, `return 200` with a 100-byte body, keep-alive that never ends on its own.
write_nginx_backend() {
	local f=$1 port=$2 d
	d=$WORK/nginx-backend
	mkdir -p "$d"
	cat >"$f" <<EOF
# sluice bench backend: one worker, fixed 100-byte answer, keep-alive without request limit.
worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
$(_nginx_temp_paths "$d")
    server_tokens off;
    keepalive_requests 1000000000;
    keepalive_timeout 300s;
    server {
        listen 127.0.0.1:$port backlog=4096;
        location / {
            default_type text/plain;
            return 200 "$BACKEND_BODY\n";
        }
    }
}
EOF
}

# write_nginx_proxy FILE PORT BACKEND_PORT KEEPALIVE_TIMEOUT: nginx as reverse proxy, 1 worker, upstream keep-alive pool.
write_nginx_proxy() {
	local f=$1 port=$2 bport=$3 kat=${4:-30s} d
	d=$WORK/nginx-proxy
	mkdir -p "$d"
	cat >"$f" <<EOF
# nginx reverse proxy, equivalent to the HAProxy/sluice configs: 1 worker, keep-alive both sides, no logging.
worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
$(_nginx_temp_paths "$d")
    keepalive_requests 1000000000;    # HAProxy does not cap requests per client connection
    keepalive_timeout $kat;
    client_header_timeout 30s;        # ~ timeout client
    send_timeout 30s;
    upstream be {
        server 127.0.0.1:$bport;
        keepalive 128;                # idle pool > wrk's 50 connections: no upstream reconnects
        keepalive_requests 1000000000;
        keepalive_timeout 60s;
    }
    server {
        listen 127.0.0.1:$port backlog=4096;
        location / {
            proxy_pass http://be;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 5s; # ~ timeout connect
            proxy_read_timeout 30s;   # ~ timeout server
            proxy_send_timeout 30s;
        }
    }
}
EOF
}

# write_lb_conf FILE PORT BACKEND_PORT KIND [EXTRA_DEFAULTS [EXTRA_GLOBAL]]: HAProxy-syntax config used for both
# HAProxy and sluice (LB_TIMEOUT_CLIENT / LB_TIMEOUT_SERVER override the 30s timeouts; LB_SERVER_OPTS is appended to
# the server line, e.g. "maxconn 1").
# KIND=haproxy adds `global nbthread 1`; sluice gets no global section, so nothing pins its GOMAXPROCS.
write_lb_conf() {
	local f=$1 port=$2 bport=$3 kind=$4 extra=${5:-} extra_global=${6:-}
	{
		if [[ $kind == haproxy ]]; then
			printf 'global\n    nbthread 1\n'
			[[ -n $extra_global ]] && printf '%s\n' "$extra_global"
			printf '    # no "log" line: logging off\n\n'
		elif [[ -n $extra_global ]]; then
			printf 'global\n%s\n\n' "$extra_global"
		fi
		cat <<EOF
defaults
    mode http
    timeout connect 5s
    timeout client ${LB_TIMEOUT_CLIENT:-30s}
    timeout server ${LB_TIMEOUT_SERVER:-30s}
    option http-keep-alive
    # http-reuse safe is the default
$extra
frontend fe
    bind 127.0.0.1:$port
    default_backend be

backend be
    server s1 127.0.0.1:$bport${LB_SERVER_OPTS:+ $LB_SERVER_OPTS}
EOF
	} >"$f"
}

# build_sluice: sets SLUICE (path) or leaves it empty with the reason in SLUICE_WHY. SLUICE_BIN overrides.
build_sluice() {
	SLUICE="" SLUICE_WHY=""
	if [[ -n ${SLUICE_BIN:-} ]]; then
		[[ -x $SLUICE_BIN ]] || die "SLUICE_BIN=$SLUICE_BIN is not executable"
		SLUICE=$SLUICE_BIN
		return 0
	fi
	command -v go >/dev/null || { SLUICE_WHY="go not found"; return 0; }
	log "building sluice (go build ./cmd/sluice)"
	if (cd "$REPO_ROOT" && go build -o "$WORK/sluice" ./cmd/sluice) >"$RESULTS/sluice-build.log" 2>&1; then
		SLUICE=$WORK/sluice
	else
		SLUICE_WHY="does not build yet, see $RESULTS/sluice-build.log"
		log "sluice $SLUICE_WHY"
	fi
}

# check_sluice_conf FILE: `sluice -c -f FILE`; warnings are kept in the results dir. Returns non-zero if invalid.
check_sluice_conf() {
	local f=$1
	if ! "$SLUICE" -c -f "$f" >"$RESULTS/sluice-check.log" 2>&1; then
		SLUICE_WHY="rejects the config, see $RESULTS/sluice-check.log"
		log "sluice -c -f: $SLUICE_WHY"
		cat "$RESULTS/sluice-check.log" >&2
		return 1
	fi
	[[ -s $RESULTS/sluice-check.log ]] && { log "sluice -c -f output:"; cat "$RESULTS/sluice-check.log" >&2; }
	return 0
}

# start_target NAME CONF PORT: start one proxy (sluice|haproxy|nginx|backend) and wait until a request through it
# succeeds. Sets TARGET_PID. A sluice that does not come up is stopped and reported (return 1, reason in SLUICE_WHY);
# anything else not coming up is fatal.
start_target() {
	local name=$1 conf=$2 port=$3 lf
	lf=$RESULTS/$name.log
	case $name in
	sluice) start_bg "$lf" "$SLUICE" -f "$conf" ;;
	haproxy)
		haproxy -c -q -f "$conf" >"$RESULTS/haproxy-check.log" 2>&1 || { cat "$RESULTS/haproxy-check.log" >&2; die "haproxy rejects $conf"; }
		start_bg "$lf" haproxy -db -f "$conf"
		;;
	nginx | backend)
		nginx -t -q -p "$WORK" -e "$WORK/$name-startup.log" -c "$conf" >"$RESULTS/$name-check.log" 2>&1 ||
			{ cat "$RESULTS/$name-check.log" >&2; die "nginx rejects $conf"; }
		start_bg "$lf" nginx -p "$WORK" -e "$WORK/$name-startup.log" -c "$conf"
		;;
	*) die "unknown target $name" ;;
	esac
	TARGET_PID=$LAST_PID
	if ! wait_http "$name" "$TARGET_PID" "http://127.0.0.1:$port/" 15 "$lf"; then
		[[ $name == sluice ]] || die "$name did not start, see $lf"
		stop_pid "$TARGET_PID" 5
		SLUICE_WHY="did not start or answer, see $lf"
		return 1
	fi
}

# proc_cpu_ticks PID...: utime+stime (clock ticks) summed over the PIDs and their descendants (threads included).
proc_cpu_ticks() {
	local p sum=0 f
	for p in "$@" $(descendants "$@"); do
		f=$(cat /proc/"$p"/stat 2>/dev/null) || continue
		f=${f##*) } # fields after "(comm) "; utime/stime are fields 14/15 of the full line -> 12/13 here
		read -r -a a <<<"$f"
		sum=$((sum + a[11] + a[12]))
	done
	echo "$sum"
}

# proc_rss_kib PID...: VmRSS summed over the PIDs and their descendants.
proc_rss_kib() {
	local p sum=0 v
	for p in "$@" $(descendants "$@"); do
		v=$(awk '/^VmRSS:/ {print $2}' /proc/"$p"/status 2>/dev/null) || continue
		sum=$((sum + ${v:-0}))
	done
	echo "$sum"
}

# host_busy_pct: % of one core the whole host used over the last second (before we start anything heavy).
host_busy_pct() {
	local a b
	a=$(awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat)
	sleep 1
	b=$(awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat)
	echo $(((b - a) * 100 / $(getconf CLK_TCK)))
}

# wait_quiet MAX_SECONDS: warn if other processes keep the CPUs busy (benchmarks on 2 cores are then meaningless);
# waits up to MAX_SECONDS for the host to go below 10% of a core.
wait_quiet() {
	local max=${1:-0} busy waited=0
	while :; do
		busy=$(host_busy_pct)
		((busy < 10)) && return 0
		if ((waited >= max)); then
			log "WARNING: the host is busy with other processes (${busy}% of a core); results will be noisy"
			ps -eo pcpu,pid,comm --sort=-pcpu | head -n 4 >&2
			return 0
		fi
		((waited == 0)) && log "host busy (${busy}% of a core), waiting up to ${max}s for it to calm down"
		waited=$((waited + 1))
	done
}

# wait_listen NAME PID PORT [TIMEOUT_S [LOGFILE]]: poll (bounded) until a socket listens on 127.0.0.1:PORT, without
# connecting to it (a probe connection would count as a client for iperf3 or a tunnel for a proxy); fail early if
# PID died. Returns 1 (after showing the log's tail) if it never got ready.
wait_listen() {
	local name=$1 pid=$2 port=$3 timeout=${4:-10} logfile=${5:-} deadline
	deadline=$(($(date +%s%N) + timeout * 1000000000))
	while :; do
		if ! kill -0 "$pid" 2>/dev/null; then
			[[ -n $logfile ]] && tail -n 20 "$logfile" >&2
			log "$name (pid $pid) exited before listening on port $port"
			return 1
		fi
		[[ -n $(ss -Hltn "( sport = :$port )" 2>/dev/null) ]] && return 0
		if (($(date +%s%N) > deadline)); then
			[[ -n $logfile ]] && tail -n 20 "$logfile" >&2
			log "$name not listening on port $port after ${timeout}s"
			return 1
		fi
		sleep 0.05
	done
}

# proc_mem_kib PID...: "VmRSS RssAnon" in KiB, summed over the PIDs and their descendants.
proc_mem_kib() {
	local p r a sum_r=0 sum_a=0
	for p in "$@" $(descendants "$@"); do
		read -r r a < <(awk '/^VmRSS:/ { r = $2 } /^RssAnon:/ { a = $2 } END { print r + 0, a + 0 }' /proc/"$p"/status 2>/dev/null) ||
			continue
		sum_r=$((sum_r + r)) sum_a=$((sum_a + a))
	done
	echo "$sum_r $sum_a"
}

# proc_fds PID: number of open file descriptors of PID.
proc_fds() {
	local fds=(/proc/"$1"/fd/*)
	[[ -e ${fds[0]} ]] || { echo 0; return 0; }
	echo "${#fds[@]}"
}

# settle_rss PID [MAX_S]: wait for PID's memory (tree) to settle, the rule of scripts/bench/internal/procstat.Settle:
# sample every 250 ms until the last 8 VmRSS samples lie within max(64 KiB, 0.2 %), or MAX_S (15) is over. Prints
# "RSS ANON STABLE SECONDS": the window's medians (KiB), 1 if it settled (0 if MAX_S ended it), the time taken.
# Returns 1 if PID is gone.
settle_rss() {
	local pid=$1 max=${2:-15} t0 r a n=0 win=8
	local -a rs=() as=()
	t0=$(date +%s%N)
	while :; do
		kill -0 "$pid" 2>/dev/null || return 1
		read -r r a < <(proc_mem_kib "$pid")
		rs+=("$r") as+=("$a")
		n=$((n + 1))
		if ((n >= win)); then
			if awk -v max="$max" -v el=$((($(date +%s%N) - t0) / 1000000)) -v w="$win" -v r="${rs[*]: -win}" -v a="${as[*]: -win}" '
				function med(s,   v, n, i, j, x) { n = split(s, v, " ")
					for (i = 2; i <= n; i++) { x = v[i] + 0; for (j = i - 1; j >= 1 && v[j] + 0 > x; j--) v[j+1] = v[j]; v[j+1] = x }
					return v[int((n + 1) / 2)] }
				BEGIN { n = split(r, v, " "); lo = hi = v[1] + 0
					for (i = 2; i <= n; i++) { if (v[i] + 0 < lo) lo = v[i] + 0; if (v[i] + 0 > hi) hi = v[i] + 0 }
					tol = hi / 500; if (tol < 64) tol = 64
					stable = (hi - lo <= tol)
					if (!stable && el < max * 1000) exit 1
					printf "%d %d %d %.2f\n", med(r), med(a), stable, el / 1000 }'; then
				return 0
			fi
		fi
		sleep 0.25
	done
}

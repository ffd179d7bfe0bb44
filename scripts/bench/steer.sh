#!/usr/bin/env bash
# Kernel steering (issue #8): connection setup rate and small-message request/response latency for a client whose
# connect() to a frontend is steered by the kernel straight to a backend, against the same client going direct to
# the backend and through userspace proxies (sluice mode tcp, and a minimal Go proxy), in one run.
#
#   scripts/bench/steer.sh                      # 3 rounds: 3 s connection-rate run + 20000 ping-pongs per target
#   ROUNDS=5 DUR=5s scripts/bench/steer.sh
#   CONC=2 scripts/bench/steer.sh               # two concurrent connect loops
#
# Env: ROUNDS (3), DUR (3s), CONC (1), LAT_N (20000), SIZE (64), TARGETS (direct,steered,sluice,goproxy),
#      QUIET_WAIT (30: seconds to wait for other processes to leave the CPUs idle first), RESULTS_DIR, SLUICE_BIN.
# Needs root (eBPF, a cgroup of its own under the cgroup v2 root, removed at exit).
#
# What runs (scripts/bench/steerbench): two echo backends; sluice with two mode tcp listeners over them, one of which
# is the steered frontend (so what falls through would reach sluice: nothing should); a Steerer attached to the
# benchmark's cgroup; the client, a process started inside that cgroup. Targets are interleaved round by round;
# the table shows medians and ratios to direct; other% is the worst CPU share taken by unrelated processes during a
# run (on a 2-core box anything above ~10 makes the figures noise). A last section measures direct and steered
# paired, alternating operation by operation, which cancels drift: quote its steered/direct ratio.
set -euo pipefail
# shellcheck source=scripts/bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS=${ROUNDS:-3}
DUR=${DUR:-3s}
CONC=${CONC:-1}
LAT_N=${LAT_N:-20000}
SIZE=${SIZE:-64}
TARGETS=${TARGETS:-direct,steered,sluice,goproxy}
QUIET_WAIT=${QUIET_WAIT:-30}

[[ $(id -u) -eq 0 ]] || die "needs root (eBPF programs, cgroups)"
bench_init steer
command -v go >/dev/null || die "go is needed to build scripts/bench/steerbench"
log "results: $RESULTS"
{
	echo "date: $(date -Is)"
	echo "kernel: $(uname -r)  cpus: $(nproc)"
	echo "sluice commit: $(cd "$REPO_ROOT" && git rev-parse --short HEAD 2>/dev/null)$(cd "$REPO_ROOT" && git diff --quiet -- cmd userspace pkg 2>/dev/null || echo ' (+ uncommitted changes)')"
	echo "params: ROUNDS=$ROUNDS DUR=$DUR CONC=$CONC LAT_N=$LAT_N SIZE=$SIZE TARGETS=$TARGETS"
	echo "sysctl: tcp_tw_reuse=$(cat /proc/sys/net/ipv4/tcp_tw_reuse) ip_local_port_range=$(tr '\t' ' ' </proc/sys/net/ipv4/ip_local_port_range)"
} >"$RESULTS/env.txt"

log "building steerbench"
(cd "$REPO_ROOT" && go build -o "$WORK/steerbench" ./scripts/bench/steerbench) >"$RESULTS/steerbench-build.log" 2>&1 ||
	{ cat "$RESULTS/steerbench-build.log" >&2; die "cannot build scripts/bench/steerbench"; }
build_sluice
[[ -n $SLUICE ]] || log "no sluice row: $SLUICE_WHY"

wait_quiet "$QUIET_WAIT"
log "running: $ROUNDS rounds of $DUR connection-rate runs and $LAT_N ping-pongs per target"
run_tracked "$WORK/steerbench" -sluice "${SLUICE:-}" -results "$RESULTS" -rounds "$ROUNDS" -dur "$DUR" -conc "$CONC" \
	-lat-n "$LAT_N" -size "$SIZE" -targets "$TARGETS" >"$RESULTS/report.txt"
cat "$RESULTS/report.txt"
cat "$RESULTS/env.txt"

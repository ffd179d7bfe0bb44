#!/usr/bin/env bash
# Kernel counters (pkg/kernel): cost of one pass over the TCP sockets with 20,000 TIME_WAIT sockets to the
# registered servers (iter/tcp against a netlink sock_diag dump), and loopback connections/s without the sockops
# program, with it attached but nothing registered, and with server and frontend registered.
#
#   scripts/bench/kernel.sh                        # BENCHTIME=2s COUNT=5
#   BENCHTIME=5s COUNT=10 scripts/bench/kernel.sh
#
# Env: BENCHTIME (2s), COUNT (5), RESULTS_DIR. Needs root (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON): without it the
# eBPF variants skip. The TIME_WAIT sockets stay in the kernel for 60 s after the run (they hold no fd).
# See scripts/bench/README.md.
set -euo pipefail
# shellcheck source=scripts/bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BENCHTIME=${BENCHTIME:-2s}
COUNT=${COUNT:-5}

bench_init kernel
command -v go >/dev/null || die "go is needed"
[[ $(id -u) == 0 ]] || log "WARNING: not root: the eBPF variants will skip"
log "results: $RESULTS"

log "building the pkg/kernel test binary"
(cd "$REPO_ROOT" && go test -c -o "$WORK/kernel.test" ./pkg/kernel) >"$RESULTS/build.log" 2>&1 ||
	{ cat "$RESULTS/build.log" >&2; die "cannot build the pkg/kernel tests"; }

cmd=("$WORK/kernel.test" -test.run '^$' -test.bench '^(BenchmarkScan|BenchmarkConnect)$'
	-test.benchtime "$BENCHTIME" -test.count "$COUNT")
printf '%q ' "${cmd[@]}" >"$RESULTS/command.txt"
echo >>"$RESULTS/command.txt"
log "running: ${cmd[*]}"
(cd "$WORK" && "${cmd[@]}") 2>&1 | grep -v 'level=' | tee "$RESULTS/bench.txt" >&2

# Median of each metric per benchmark over the COUNT rounds.
awk '
/^Benchmark/ {
	name = $1; sub(/-[0-9]+$/, "", name)
	for (i = 3; i + 1 <= NF; i += 2) { key = name SUBSEP $(i + 1); v[key, ++n[key]] = $i; units[name] = units[name] " " $(i + 1) }
	names[name] = 1
}
END {
	for (name in names) {
		line = sprintf("%-36s", name); split(units[name], us, " "); delete seen
		for (j = 1; j in us; j++) {
			u = us[j]; if (u in seen) continue; seen[u] = 1; key = name SUBSEP u; m = n[key]
			for (a = 1; a <= m; a++) s[a] = v[key, a]
			for (a = 1; a <= m; a++) for (c = a + 1; c <= m; c++) if (s[c] + 0 < s[a] + 0) { t = s[a]; s[a] = s[c]; s[c] = t }
			med = (m % 2) ? s[(m + 1) / 2] : (s[m / 2] + s[m / 2 + 1]) / 2
			line = line sprintf("  %12.4g %s", med, u)
		}
		print line
	}
}' "$RESULTS/bench.txt" | sort | tee "$RESULTS/report.txt"
log "median over $COUNT rounds; raw output in $RESULTS/bench.txt"

#!/usr/bin/env bash
# Runs every fuzz target of the module for a short time (default 10s each).
# The committed seed corpora always run as part of `go test`; this explores.
# A run that fails without a crasher (go's fuzz coordinator sometimes ends
# with "context deadline exceeded" when the machine is loaded) is retried
# once; a crasher fails at once and its input is left in testdata/fuzz.
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:-10s}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for f in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //'); do
    for try in 1 2; do
      echo "fuzz $pkg $f ($t, try $try)"
      if go test -run '^$' -fuzz "^$f\$" -fuzztime "$t" -fuzzminimizetime 5s "$pkg" >"$log" 2>&1; then
        break
      fi
      if grep -q 'Failing input written' "$log" || [ "$try" = 2 ]; then
        cat "$log"
        exit 1
      fi
      echo "  (no crasher: $(grep -m1 -E 'deadline|FAIL' "$log" || true); retrying)"
    done
  done
done

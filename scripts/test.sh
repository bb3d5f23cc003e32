#!/usr/bin/env bash
# The whole test suite: set-up, formatting and lint gates, unit, property and end-to-end tests.
# Ends with one line "tests: N passed, N failed" summed over every test binary.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --locked --bins
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked 2>&1 | tee "$log" || status=$?
# SocketCAN tests on a real kernel, in a small Linux guest (scripts/canvm); their "test result:"
# lines are counted below with the others.
scripts/canvm/test.sh 2>&1 | tee -a "$log" || status=$?
read -r passed failed < <(awk '/^test result:/ {
  for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i }
} END { print p + 0, f + 0 }' "$log")
echo
echo "tests: ${passed} passed, ${failed} failed"
exit "$status"

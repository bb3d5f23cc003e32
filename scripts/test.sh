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
# The Debian package: contents, lintian, systemd-analyze, an install into a throwaway root
# (packaging/test-deb.sh); the unit tests cross-built for arm64 under qemu (scripts/test-arm64.sh).
if [ "${PITLINK_SKIP_PACKAGE:-0}" != 1 ]; then
  packaging/test-deb.sh 2>&1 | tee -a "$log" || status=$?
fi
# The arm64 run is opt-in (PITLINK_ARM64_TESTS=1): its cross build of the three crates' tests
# costs more CI time than the rest of the package checks together.
if [ "${PITLINK_ARM64_TESTS:-0}" = 1 ]; then
  scripts/test-arm64.sh 2>&1 | tee -a "$log" || status=$?
fi
# Every fuzz target for a short while (scripts/fuzz.sh); a crash fails the run.
fuzz_line="fuzz: skipped (PITLINK_SKIP_FUZZ=1)"
if [ "${PITLINK_SKIP_FUZZ:-0}" != 1 ]; then
  fuzz_log=$(mktemp)
  FUZZ_SECONDS=${FUZZ_SECONDS:-15} scripts/fuzz.sh 2>&1 | tee "$fuzz_log" || status=$?
  fuzz_line=$(grep '^fuzz: [0-9]* targets' "$fuzz_log" | tail -1 || echo "fuzz: did not finish")
  rm -f "$fuzz_log"
fi
read -r passed failed < <(awk '/^test result:/ {
  for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i }
} END { print p + 0, f + 0 }' "$log")
echo
echo "$fuzz_line"
echo "tests: ${passed} passed, ${failed} failed"
exit "$status"

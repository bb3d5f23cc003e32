#!/usr/bin/env bash
# Runs the SocketCAN tests (sensor-drivers/tests/socketcan_vm.rs) on a real Linux kernel: builds
# the test binary on the host, boots the test guest with it (setup.sh prepares the guest once,
# run.sh boots it) and runs the binary there with --ignored. Prints the test harness output,
# including its "test result:" line, and then one summary line; exits non-zero on failure.
# When the guest cannot be prepared or gives no verdict, a "test result: FAILED. 0 passed;
# 1 failed" line stands for the whole step, so a tally of test results counts it as failed.
# env: PITLINK_SKIP_CANVM=1  skip (prints why, exits 0)
#      PITLINK_CANVM_DIR, PITLINK_CANVM_BACKEND, CANVM_TIMEOUT: see setup.sh and run.sh
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
if [ "${PITLINK_SKIP_CANVM:-0}" = 1 ]; then
  echo "socketcan-vm: skipped (PITLINK_SKIP_CANVM=1)"
  exit 0
fi
fail() {
  echo "test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s"
  echo "socketcan-vm: FAILED: $*"
  exit 1
}
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

t0=$(now)
"$here/setup.sh" || fail "could not prepare the test guest (scripts/canvm/setup.sh)"
t1=$(now)
json=$(cargo test -p sensor-drivers --test socketcan_vm --no-run --locked --message-format=json) \
  || fail "could not build the socketcan_vm test binary"
bin=$(printf '%s\n' "$json" | grep '"reason":"compiler-artifact"' | grep '"name":"socketcan_vm"' \
  | grep -o '"executable":"[^"]*"' | tail -1 | cut -d'"' -f4)
[ -x "$bin" ] || fail "cargo named no socketcan_vm test binary"
t2=$(now)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
"$here/run.sh" "RUST_BACKTRACE=1 exec $bin --ignored --test-threads=1" "$bin" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
t3=$(now)
backend=$(sed -n 1p "${PITLINK_CANVM_DIR:-/var/tmp/pitlink-canvm}/backend" 2>/dev/null)
timing="setup $(secs "$t0" "$t1") s, build $(secs "$t1" "$t2") s, guest $(secs "$t2" "$t3") s (${PITLINK_CANVM_BACKEND:-$backend})"
result=$(grep '^test result:' "$log" | tail -1)
[ -n "$result" ] || fail "the guest gave no test result (status $rc; $timing)"
read -r passed failed < <(echo "$result" | sed -E 's/.* ([0-9]+) passed; ([0-9]+) failed.*/\1 \2/')
if [ "$rc" -eq 0 ]; then
  echo "socketcan-vm: ok: $passed passed, $failed failed; $timing"
else
  echo "socketcan-vm: FAILED (status $rc): $passed passed, $failed failed; $timing"
fi
exit "$rc"

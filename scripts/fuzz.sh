#!/usr/bin/env bash
# Runs every fuzz target under fuzz/ for a short while (default 20 s each; FUZZ_SECONDS to
# change). A crash fails the run and leaves its input under fuzz/artifacts/<target>/.
# Ends with "fuzz: N targets, N clean, N failed".
set -uo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${FUZZ_SECONDS:-20}
targets=$(cargo +nightly fuzz list 2>/dev/null)
[ -n "$targets" ] || { echo "fuzz: no targets found (is cargo-fuzz installed?)" >&2; exit 1; }
# One build for all targets, so the timed runs are only fuzzing.
cargo +nightly fuzz build -O 2>&1 | tail -2 || { echo "fuzz: build failed" >&2; exit 1; }
n=0; ok=0; bad=0
for t in $targets; do
  n=$((n + 1))
  mkdir -p "corpus/$t"
  # The wire decoders start from the golden messages of every format version.
  case "$t" in
    wire_message) cp -n ../agent/tests/golden/*.bin "corpus/$t/" 2>/dev/null ;;
  esac
  if cargo +nightly fuzz run -O "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=1024 \
      -max_len=4096 >"/tmp/fuzz-$t.log" 2>&1; then
    ok=$((ok + 1))
    echo "fuzz: $t clean ($(grep -o 'Done [0-9]* runs' "/tmp/fuzz-$t.log" | tail -1))"
  else
    bad=$((bad + 1))
    echo "fuzz: $t FAILED; last lines of /tmp/fuzz-$t.log:" >&2
    tail -30 "/tmp/fuzz-$t.log" >&2
  fi
done
echo "fuzz: $n targets, $ok clean, $bad failed"
[ "$bad" -eq 0 ]

#!/usr/bin/env bash
# The unit tests of pitlink, modem-hal and sensor-drivers cross-built for aarch64 and run under
# qemu-aarch64-static (binfmt_misc is not assumed: cargo's runner variable starts qemu). Prints
# cargo's "test result:" lines, which scripts/test.sh counts.
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-gnu
rustup target list --installed | grep -qx "$target" || rustup target add "$target" >&2
for tool in aarch64-linux-gnu-gcc qemu-aarch64-static; do
  command -v "$tool" >/dev/null || { echo "test-arm64: $tool missing (scripts/setup.sh installs it)" >&2; exit 1; }
done
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64-static -L /usr/aarch64-linux-gnu"
# Proptest cases are emulated ~10x slower; fewer cases keep the run short (the host run has all).
export PROPTEST_CASES=${PROPTEST_CASES:-32}
cargo test --locked --target "$target" -p pitlink -p modem-hal -p sensor-drivers --lib

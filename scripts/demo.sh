#!/usr/bin/env bash
# One command for the demo: set-up, release build, `pitlink demo` (arguments are passed on).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked -q -p pitlink
exec target/release/pitlink demo "$@"

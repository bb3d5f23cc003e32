#!/usr/bin/env bash
# Installs what pitlink's demo and test suite need on a Debian 12 machine. Idempotent: a package
# or tool already present is left alone. Needs root (or sudo) for apt-get.
set -euo pipefail

need_pkgs=()
# python3-zstandard: the independent wire-format decoder (scripts/wire_decode.py) of the tests.
# dbus-daemon: the private bus of the ModemManager backend's tests.
# lintian, debootstrap: the package tests (packaging/test-deb.sh). gcc-aarch64-linux-gnu,
# libc6-dev-arm64-cross, qemu-user-static: the arm64 build and its unit tests under emulation.
pkgs=(mosquitto mosquitto-clients python3 python3-zstandard dbus-daemon)
[ "${PITLINK_SKIP_PACKAGE:-0}" = 1 ] || pkgs+=(lintian debootstrap)
[ "${PITLINK_SKIP_ARM64:-0}" = 1 ] || pkgs+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static)
for pkg in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$pkg")
done

if [ ${#need_pkgs[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup: need root or sudo to install: ${need_pkgs[*]}" >&2; exit 1; }
    SUDO="sudo"
  fi
  echo "setup: installing ${need_pkgs[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

# Debian starts a system mosquitto on port 1883 where systemd runs; pitlink's tests and demo
# start their own brokers on unix sockets and free ports, so a system broker does not interfere.
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || { echo "setup: mosquitto missing after install" >&2; exit 1; }
command -v dbus-daemon >/dev/null || { echo "setup: dbus-daemon missing after install" >&2; exit 1; }
/usr/bin/python3 -c 'import zstandard' 2>/dev/null || { echo "setup: /usr/bin/python3 cannot import zstandard after install" >&2; exit 1; }

command -v cargo >/dev/null || { echo "setup: cargo not found: install Rust (rustup) first" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt >/dev/null 2>&1 || true

# The .deb (packaging/build-deb) and the arm64 cross build.
if [ "${PITLINK_SKIP_PACKAGE:-0}" != 1 ]; then
  cargo deb --version >/dev/null 2>&1 || cargo install cargo-deb --locked --quiet
fi
if [ "${PITLINK_SKIP_ARM64:-0}" != 1 ]; then
  rustup target list --installed | grep -qx aarch64-unknown-linux-gnu || rustup target add aarch64-unknown-linux-gnu >/dev/null
fi

# Fuzzing (scripts/fuzz.sh): libFuzzer through cargo-fuzz needs a nightly compiler.
if [ "${PITLINK_SKIP_FUZZ:-0}" != 1 ]; then
  rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal >/dev/null
  cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked --quiet
fi

# SocketCAN tests (scripts/canvm/test.sh): a small Linux guest with vcan and can-utils, cached.
if [ "${PITLINK_SKIP_CANVM:-0}" != 1 ]; then
  "$(dirname "$0")/canvm/setup.sh"
fi
echo "setup: ok" >&2

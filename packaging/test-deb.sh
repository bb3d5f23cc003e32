#!/usr/bin/env bash
# Tests of the Debian package (amd64): contents and metadata (dpkg-deb), lintian, the unit's
# `systemd-analyze verify` and `security --offline=true` score, and an install into a throwaway
# Debian root (a debootstrap minbase chroot, cached) where `pitlink check-config` validates the
# shipped config and the daemon starts as the pitlink user, recovers its queue and serves
# `pitlink status`.
#
# The root is bookworm minbase plus systemd-standalone-sysusers (the package's user comes from
# sysusers.d; a system with systemd has systemd-sysusers already).
#
# A chroot rather than `dpkg --root`: the maintainer scripts must really run (the pitlink user,
# the config's group) and the binary must run against the target's own libc and paths
# (/etc/pitlink, /var/lib/pitlink, /run/pitlink); `dpkg --root` runs neither in a usable way.
#
# Ends with "test result: ok|FAILED. N passed; M failed" like cargo's, so scripts/test.sh counts
# these checks with the others. Needs root (chroot). env:
#   PITLINK_DEB            an already built .deb (default: packaging/build-deb amd64)
#   PITLINK_DEBROOT_CACHE  cached chroot tarball (default /var/tmp/pitlink-debroot/bookworm-sysusers.tar)
set -uo pipefail
cd "$(dirname "$0")/.."

passed=0
failed=0
check() { # check <name> <command...>
  local name=$1; shift
  if out=$("$@" 2>&1); then
    passed=$((passed + 1)); echo "test deb::$name ... ok"
  else
    failed=$((failed + 1)); echo "test deb::$name ... FAILED"; printf '%s\n' "$out" | tail -n 30 | sed 's/^/    /'
  fi
}
finish() {
  local r=ok; [ "$failed" -eq 0 ] || r=FAILED
  echo "test result: $r. $passed passed; $failed failed"
  [ "$failed" -eq 0 ]
  exit
}

[ "$(id -u)" -eq 0 ] || { echo "test-deb: needs root (chroot)" >&2; failed=1; finish; }

deb=${PITLINK_DEB:-}
if [ -z "$deb" ]; then
  deb=$(packaging/build-deb amd64 | tail -n 1) || { echo "test-deb: build-deb failed" >&2; failed=1; finish; }
fi
echo "test-deb: $deb" >&2
work=$(mktemp -d /var/tmp/pitlink-debtest.XXXXXX)
root="$work/root"
cleanup() {
  if [ -n "${daemon_pid:-}" ]; then kill -9 "$daemon_pid" 2>/dev/null; fi
  for m in proc dev/pts dev; do umount -l "$root/$m" 2>/dev/null; done
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

# --- contents and metadata -------------------------------------------------------------------
dpkg-deb -c "$deb" > "$work/contents"
dpkg-deb -I "$deb" > "$work/info"
has_file() { grep -qE " \./$1\$" "$work/contents" || { echo "missing /$1"; cat "$work/contents"; return 1; }; }
check contains_binary has_file usr/bin/pitlink
check contains_unit has_file usr/lib/systemd/system/pitlink.service
check contains_config has_file etc/pitlink/pitlink.toml
check contains_sysusers has_file usr/lib/sysusers.d/pitlink.conf
check contains_udev_example has_file usr/share/doc/pitlink/examples/77-pitlink-mm-ignore.rules
check contains_lintian_overrides has_file usr/share/lintian/overrides/pitlink
conffile() { dpkg-deb --ctrl-tarfile "$deb" | tar -xOf - ./conffiles | grep -qx /etc/pitlink/pitlink.toml; }
check config_is_conffile conffile
scripts() { for s in postinst prerm postrm; do dpkg-deb --ctrl-tarfile "$deb" | tar -tf - "./$s" >/dev/null || return 1; done; }
check maintainer_scripts scripts
arch() { grep -qE '^ Architecture: amd64$' "$work/info"; }
check architecture arch

# --- lintian ----------------------------------------------------------------------------------
lint() {
  command -v lintian >/dev/null || { echo "lintian missing (scripts/setup.sh installs it)"; return 1; }
  local o; o=$(lintian "$deb" 2>&1)
  printf '%s\n' "$o"
  ! printf '%s\n' "$o" | grep -q '^E: '
}
check lintian_no_errors lint

# --- the unit -----------------------------------------------------------------------------------
mkdir -p "$work/x" && dpkg-deb -x "$deb" "$work/x"
unit="$work/x/usr/lib/systemd/system/pitlink.service"
# verify checks ExecStart's binary exists: point it at the packaged one (the only change).
mkdir -p "$work/v" && sed "s#/usr/bin/pitlink#$work/x/usr/bin/pitlink#g" "$unit" > "$work/v/pitlink.service"
verify() { local o; o=$(systemd-analyze verify "$work/v/pitlink.service" 2>&1); printf '%s\n' "$o"; [ -z "$o" ]; }
check systemd_analyze_verify verify
security() {
  local o score
  o=$(systemd-analyze security --offline=true "$unit" 2>&1)
  score=$(printf '%s\n' "$o" | sed -n 's/.*Overall exposure level for pitlink.service: \([0-9.]*\).*/\1/p')
  echo "exposure score: ${score:-none}"
  [ -n "$score" ] && awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }'
}
check systemd_analyze_security_le_2 security

# --- install into a throwaway Debian root -------------------------------------------------------
cache=${PITLINK_DEBROOT_CACHE:-/var/tmp/pitlink-debroot/bookworm-sysusers.tar}
make_root() {
  if [ ! -s "$cache" ]; then
    command -v debootstrap >/dev/null || { echo "debootstrap missing (scripts/setup.sh installs it)"; return 1; }
    mkdir -p "$(dirname "$cache")"
    local b="$work/bootstrap"
    debootstrap --variant=minbase --include=systemd-standalone-sysusers bookworm "$b" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 ||
      { tail -n 20 "$work/debootstrap.log"; return 1; }
    tar -C "$b" -cf "$cache.tmp" . && mv "$cache.tmp" "$cache"
    rm -rf --one-file-system "$b"
  fi
  mkdir -p "$root" && tar -C "$root" -xf "$cache"
  mount -t proc proc "$root/proc" && mount --bind /dev "$root/dev"
}
check chroot_ready make_root
install_deb() {
  cp "$deb" "$root/tmp/pitlink.deb"
  chroot "$root" dpkg -i /tmp/pitlink.deb
}
check dpkg_install install_deb
user() { chroot "$root" getent passwd pitlink && chroot "$root" id -nG pitlink | grep -qw dialout; }
check system_user user
cfgperm() { [ "$(chroot "$root" stat -c '%U:%G %a' /etc/pitlink/pitlink.toml)" = "root:pitlink 640" ]; }
check config_owner_mode cfgperm
shipped() { chroot "$root" setpriv --reuid=pitlink --regid=pitlink --init-groups /usr/bin/pitlink --config /etc/pitlink/pitlink.toml check-config; }
check shipped_config_validates shipped

# The daemon as the service would run it: user pitlink, StateDirectory and RuntimeDirectory as
# systemd makes them (0750 pitlink), the shipped config.
run_daemon() {
  install -d -o pitlink -g pitlink -m 0750 "$root/var/lib/pitlink" "$root/run/pitlink" 2>/dev/null ||
    { chroot "$root" install -d -o pitlink -g pitlink -m 0750 /var/lib/pitlink /run/pitlink || return 1; }
  chroot "$root" setpriv --reuid=pitlink --regid=pitlink --init-groups \
    /usr/bin/pitlink --config /etc/pitlink/pitlink.toml run >"$work/daemon.log" 2>&1 &
  daemon_pid=$!
  local st="" i
  for i in $(seq 1 150); do
    st=$(chroot "$root" /usr/bin/pitlink --config /etc/pitlink/pitlink.toml status --json 2>/dev/null) && break
    kill -0 "$daemon_pid" 2>/dev/null || break
    sleep 0.2
  done
  echo "$st" | head -c 400; echo
  cat "$work/daemon.log" | tail -n 5
  grep -q 'queue recovered from /var/lib/pitlink/queue' "$work/daemon.log" &&
    printf '%s' "$st" | grep -Eq '"vehicle": ?"car-01"' || return 1
  local sock; sock=$(chroot "$root" stat -c '%U:%G %a' /run/pitlink/pitlink.sock)
  echo "socket: $sock"
  [ "$sock" = "pitlink:pitlink 660" ] || return 1
  kill -TERM "$daemon_pid"; wait "$daemon_pid"; local rc=$?
  daemon_pid=""
  [ "$rc" -eq 0 ]
}
check daemon_runs_and_serves_status run_daemon
purge() { chroot "$root" dpkg --purge pitlink && [ ! -e "$root/etc/pitlink/pitlink.toml" ] && [ ! -e "$root/var/lib/pitlink" ]; }
check dpkg_purge purge
finish

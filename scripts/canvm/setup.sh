#!/usr/bin/env bash
# Prepares the SocketCAN test guest in a cache directory. Idempotent: what is in the cache stays,
# and an initramfs is rebuilt only when one of its inputs changes.
#
# The guest is User-Mode Linux (Debian package user-mode-linux: a kernel that runs as an ordinary
# process, with the can, can-raw, can-dev and vcan modules) when it works on this host, otherwise
# qemu without KVM (TCG) booting Debian's kernel. UML 6.1 cannot run on hosts whose CPUs have
# large register state (AMX): it dies at the first process with "ptrace set fp regs failed". Which
# one works is found out once per host (a 2-5 s boot) and remembered in the cache.
#
# Installs with apt (root or sudo needed for that step only): can-utils and busybox-static, and
# qemu-system-x86 only when UML does not work. Kernels are fetched with `apt-get download` and
# unpacked into the cache, no root needed.
# env: PITLINK_CANVM_DIR      cache directory (default /var/tmp/pitlink-canvm)
#      PITLINK_CANVM_BACKEND  uml | qemu: skip the probe and use this one
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=${PITLINK_CANVM_DIR:-/var/tmp/pitlink-canvm}
mkdir -p "$dir"
say() { echo "canvm-setup: $*" >&2; }
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else say "need root or sudo to run: $*"; return 1; fi
}
apt_install() { # packages that are not installed yet
  local need=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
  done
  [ ${#need[@]} -eq 0 ] && return 0
  say "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}
download() { # package, target dir: apt-get download, refreshing the lists once if needed
  local opts=()
  [ "$(id -u)" -eq 0 ] && opts=(-o APT::Sandbox::User=root)
  (cd "$2" && apt-get download -qq "${opts[@]}" "$1" 2>/dev/null) && return 0
  say "apt-get download $1 failed; refreshing the package lists"
  as_root apt-get update -qq
  (cd "$2" && apt-get download -qq "${opts[@]}" "$1")
}
scratch=$(mktemp -d "$dir/.scratch.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

apt_install can-utils busybox-static

# --- kernels: UML always (small, and the preferred guest); Debian's kernel for qemu on demand
uml=$dir/uml/usr/bin/linux.uml
if [ ! -x "$uml" ]; then
  t0=$SECONDS
  download user-mode-linux "$scratch"
  dpkg-deb -x "$scratch"/user-mode-linux_*.deb "$scratch/uml"
  rm -rf "$dir/uml" && mv "$scratch/uml" "$dir/uml"
  say "user-mode-linux unpacked into $dir/uml ($((SECONDS - t0)) s)"
fi
fetch_qemu_kernel() {
  [ -s "$dir/kernel/vmlinux" ] && return 0
  local t0=$SECONDS pkg z off
  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ { print $2; exit }')
  [ -n "$pkg" ] || { as_root apt-get update -qq; pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/ { print $2; exit }'); }
  download "$pkg" "$scratch"
  mkdir -p "$scratch/kernel"
  dpkg-deb --fsys-tarfile "$scratch/$pkg"_*.deb | tar -x -C "$scratch/kernel" --wildcards \
    './boot/vmlinuz-*' './lib/modules/*/kernel/net/can/*' './lib/modules/*/kernel/drivers/net/can/*'
  # qemu boots the uncompressed kernel through its PVH entry: no BIOS, no decompression (~5 s
  # less under TCG). The bzImage carries it as an xz stream.
  z=$(ls "$scratch"/kernel/boot/vmlinuz-* | head -1)
  off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$z" | head -1 | cut -d: -f1)
  tail -c +$((off + 1)) "$z" | xz -dc --single-stream > "$scratch/kernel/vmlinux" 2>/dev/null || true
  [ -s "$scratch/kernel/vmlinux" ] || { say "could not extract vmlinux from $z"; return 1; }
  rm -rf "$dir/kernel" && mv "$scratch/kernel" "$dir/kernel"
  say "$pkg unpacked into $dir/kernel ($((SECONDS - t0)) s)"
}

# --- initramfs: busybox, can-utils, the CAN modules in load order, /init
build_initrd() { # flavour (uml|qemu), module tree; prints the image path
  local flavour=$1 modtree=$2 kver key img root t0=$SECONDS
  kver=$(basename "$modtree")
  key=$({ cat "$here/init.sh" "$0"; echo "$flavour $kver"; dpkg-query -W can-utils busybox-static libc6; } | sha256sum | cut -c1-16)
  img=$dir/initrd-$flavour-$key.cpio.gz
  if [ ! -s "$img" ]; then
    root=$scratch/root-$flavour
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,mnt,root}
    cp /bin/busybox "$root/bin/busybox"
    for a in $("$root/bin/busybox" --list); do
      [ -e "$root/bin/$a" ] || ln -s busybox "$root/bin/$a"
    done
    for b in cangen candump cansend canbusload; do
      install -D -m 0755 "$(command -v $b)" "$root/usr/bin/$b"
      ldd "$(command -v $b)" | grep -o '/[^ )]*' | while read -r lib; do
        [ -e "$root$lib" ] || install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
      done
    done
    : > "$root/etc/modules.list"
    add_module() { # name; its dependencies first (from the module's own depends= field)
      local m=${1//_/-} ko rel dep
      ko=$(find "$modtree/kernel" \( -name "$m.ko*" -o -name "${m//-/_}.ko*" \) | head -1)
      [ -n "$ko" ] || { say "module $1 not found under $modtree"; return 1; }
      rel=/lib/modules/$kver/${ko#"$modtree/"}; rel=${rel%.xz}; rel=${rel%.zst}
      grep -qx "$rel" "$root/etc/modules.list" && return 0
      for dep in $(grep -a -o -m1 'depends=[^[:cntrl:]]*' "$ko" | head -1 | cut -d= -f2 | tr ',' ' '); do
        add_module "$dep"
      done
      mkdir -p "$(dirname "$root$rel")"
      case $ko in
        *.xz) xz -dc "$ko" > "$root$rel" ;;
        *.zst) zstd -qdc "$ko" > "$root$rel" ;;
        *) cp "$ko" "$root$rel" ;;
      esac
      echo "$rel" >> "$root/etc/modules.list"
    }
    for m in can can-raw can-dev vcan; do add_module "$m"; done
    install -m 0755 "$here/init.sh" "$root/init"
    (cd "$root" && find . | "$root/bin/busybox" cpio -o -H newc 2>/dev/null) | gzip -1 > "$scratch/img"
    mv "$scratch/img" "$img"
    find "$dir" -maxdepth 1 -name "initrd-$flavour-*.cpio.gz" ! -name "$(basename "$img")" -delete
    say "$flavour initramfs built ($(du -h "$img" | cut -f1), $((SECONDS - t0)) s): $(sed 's|.*/||' "$root/etc/modules.list" | tr '\n' ' ')"
  fi
  ln -sfn "$(basename "$img")" "$dir/initrd-$flavour.cpio.gz"
}
build_initrd uml "$(ls -d "$dir"/uml/usr/lib/uml/modules/* | sort -V | tail -1)"

# --- which guest works here (probed once per host, kernel and UML version)
host=$(uname -r; grep -m1 'model name' /proc/cpuinfo; basename "$(ls -d "$dir"/uml/usr/lib/uml/modules/*)")
host=$(echo "$host" | sha256sum | cut -c1-16)
backend=${PITLINK_CANVM_BACKEND:-}
if [ -z "$backend" ]; then
  if [ -f "$dir/backend" ] && [ "$(sed -n 2p "$dir/backend")" = "$host" ]; then
    backend=$(sed -n 1p "$dir/backend")
  else
    t0=$SECONDS
    if out=$(PITLINK_CANVM_BACKEND=uml CANVM_TIMEOUT=30 CANVM_VERBOSE=1 "$here/run.sh" 'cat /sys/class/net/vcan0/mtu' 2>&1); then
      backend=uml
    else
      backend=qemu
      say "User-Mode Linux does not run on this host; using qemu (TCG). It said:"
      echo "$out" | grep -m2 -E 'regs failed|ptrace.*failed|Kernel panic' | sed 's/^/    /' >&2
    fi
    printf '%s\n%s\n' "$backend" "$host" > "$dir/backend"
    say "probed the guest: $backend ($((SECONDS - t0)) s)"
  fi
fi
case $backend in
  uml) ;;
  qemu)
    apt_install qemu-system-x86
    fetch_qemu_kernel
    build_initrd qemu "$(ls -d "$dir"/kernel/lib/modules/* | sort -V | tail -1)"
    ;;
  *) say "unknown PITLINK_CANVM_BACKEND '$backend' (uml or qemu)"; exit 1 ;;
esac
say "ok: $backend guest in $dir"

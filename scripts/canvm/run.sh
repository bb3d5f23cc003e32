#!/usr/bin/env bash
# Runs a command as root inside the SocketCAN test guest made by setup.sh and exits with the
# command's status. The guest is User-Mode Linux (an ordinary host process) or qemu without KVM,
# whichever setup.sh found to work on this host.
# usage: run.sh 'COMMAND' [FILE...]
#   COMMAND  busybox sh, run in /canvm; can-utils, ip and vcan0 are there, PITLINK_CANVM=1 is set
#   FILE     host files copied into the guest at the same absolute path, with the shared
#            libraries they need (ELF files lose their debug sections on the way)
# env: PITLINK_CANVM_DIR      cache made by setup.sh (default /var/tmp/pitlink-canvm)
#      PITLINK_CANVM_BACKEND  uml | qemu (default: what setup.sh found)
#      CANVM_TIMEOUT          seconds the command may take (default 300)
#      CANVM_VERBOSE=1        show the guest kernel's messages
# exit: the command's status; 125 when the guest gave no verdict
set -uo pipefail
cmd=$1; shift
dir=${PITLINK_CANVM_DIR:-/var/tmp/pitlink-canvm}
backend=${PITLINK_CANVM_BACKEND:-$(sed -n 1p "$dir/backend" 2>/dev/null)}
timeout=${CANVM_TIMEOUT:-300}
say() { echo "canvm-run: $*" >&2; }
base=$dir/initrd-$backend.cpio.gz
[ -n "$backend" ] && [ -s "$base" ] || { say "no ${backend:-probed} guest in $dir: run scripts/canvm/setup.sh"; exit 125; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/canvm-run.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/root/canvm"
printf 'export PITLINK_CANVM=1\n%s\n' "$cmd" > "$tmp/root/canvm/cmd.sh"
for f in "$@"; do
  f=$(realpath "$f")
  mkdir -p "$tmp/root$(dirname "$f")"
  objcopy --strip-debug "$f" "$tmp/root$f" 2>/dev/null || cp "$f" "$tmp/root$f"
  ldd "$f" 2>/dev/null | grep -o '/[^ )]*' | while read -r lib; do
    [ -e "$tmp/root$lib" ] || install -D -m 0755 "$(readlink -f "$lib")" "$tmp/root$lib"
  done
done
# the kernel unpacks concatenated compressed cpio archives one after the other
(cd "$tmp/root" && find . | busybox cpio -o -H newc 2>/dev/null) | gzip -1 > "$tmp/payload.cpio.gz"
cat "$base" "$tmp/payload.cpio.gz" > "$tmp/initrd.cpio.gz"

args="panic=-1 CANVM_TIMEOUT=$timeout"
[ "${CANVM_VERBOSE:-0}" = 1 ] || args="quiet loglevel=1 $args"
case $backend in
  uml)
    guest=("$dir/uml/usr/bin/linux.uml" mem=512M initrd="$tmp/initrd.cpio.gz" uml_dir="$tmp"
           con0=null,fd:1 con=null ssl=null $args) ;;
  qemu)
    accel=(-accel tcg,thread=multi)
    if [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo && [ ! -d /sys/module/kvm_pvm ]; then
      accel=(-accel kvm -cpu host)
    fi
    guest=(qemu-system-x86_64 "${accel[@]}" -smp 2 -m 512 -no-reboot -nodefaults -no-user-config
           -display none -serial stdio -kernel "$dir/kernel/vmlinux" -initrd "$tmp/initrd.cpio.gz"
           -append "console=ttyS0 $args") ;;
  *) say "unknown backend '$backend'"; exit 125 ;;
esac
timeout $((timeout + 60)) "${guest[@]}" < /dev/null 2>&1 | tr -d '\r' | tee "$tmp/console.log"
status=${PIPESTATUS[0]}
rc=$(sed -n 's/^CANVM_RC=\([0-9]*\).*/\1/p' "$tmp/console.log" | tail -1)
[ -n "$rc" ] && exit "$rc"
say "the $backend guest gave no verdict (exit status $status)"
exit 125

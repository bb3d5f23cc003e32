#!/bin/sh
# /init of the SocketCAN test guest (busybox sh as PID 1, under User-Mode Linux or qemu). Loads the
# CAN modules, creates vcan0 and runs /canvm/cmd.sh, which the host appends to the initramfs
# together with the files it needs (scripts/canvm/run.sh). The command's output goes to the
# console; its exit status follows as the last line "CANVM_RC=<n>". /init must never exit (that
# would panic the kernel): it ends with poweroff -f.
# Kernel command-line words KEY=VAL arrive here as environment variables:
#   CANVM_TIMEOUT  seconds before the command is killed (default 300)
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
up() { cut -d' ' -f1 /proc/uptime; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp

while read -r ko; do
  insmod "$ko" || echo "CANVM: insmod $ko failed"
done < /etc/modules.list
ip link set lo up
ip link add dev vcan0 type vcan && ip link set vcan0 up
echo "CANVM: ready uptime=$(up)"

rc=125
if [ -f /canvm/cmd.sh ]; then
  cd /canvm
  timeout "${CANVM_TIMEOUT:-300}" sh /canvm/cmd.sh < /dev/null 2>&1
  rc=$?
else
  echo "CANVM: no /canvm/cmd.sh in the initramfs"
fi
echo "CANVM_RC=$rc uptime=$(up)"
sync
poweroff -f

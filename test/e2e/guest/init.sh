#!/bin/sh
# /init of the gpio-fabric e2e guest (initramfs built by test/e2e/provision.sh).
# Mounts the pseudo file systems, loads the gpio-virtio driver and the levelirq test
# module, prints a ready marker and runs a shell on the serial console (ttyS0).
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || true
mkdir -p /dev/pts /tmp /run /root
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
# keep kernel messages off the serial console (read them with dmesg)
dmesg -n 1
hostname guest
loaded=""
for m in gpio-virtio levelirq; do
  if insmod "/lib/modules/$m.ko"; then
    loaded="$loaded $m"
  else
    echo "GPIOFABRIC-MODULE-FAILED $m"
  fi
done
echo "GPIOFABRIC-READY kernel=$(uname -r) modules=${loaded# }"
# gpiofabric.serve=1 on the kernel command line: serve the TypeScript harness (no echo,
# no prompt); otherwise an interactive shell. Either gets the console as its controlling
# tty; when it exits the guest powers off.
case " $(cat /proc/cmdline) " in
  *" gpiofabric.serve=1 "*) setsid cttyhack /bin/gf-serve ;;
  *) setsid cttyhack sh ;;
esac
poweroff -f

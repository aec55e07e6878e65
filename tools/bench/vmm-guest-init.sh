#!/bin/busybox sh
# SPDX-License-Identifier: GPL-2.0
#
# /init of the guest that the VMM tests boot (tools/bench/vmm.sh). It reports, on its
# serial console, one line the test reads:
#   RKVM-VMM-GUEST cpus=<online CPUs> want=<CPUs in the kernel's possible mask>
#                  ticks=<timer interrupts in 100 ms of guest time> uptime=<s>
# then counts on (vmm.count=1: one "RKVM-VMM-COUNT <n>" line per 100 ms, for the
# migration test) or reboots, which ends QEMU started with -no-reboot.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
arg() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" /proc/cmdline; }
# Local APIC timer and IRQ 0 interrupts on every CPU (whichever the kernel ticks with).
ticks() { awk '/^ *(LOC|0):/ { for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) n += $i } END { print n + 0 }' /proc/interrupts; }
t0=$(ticks)
usleep 100000
t1=$(ticks)
echo "RKVM-VMM-GUEST cpus=$(grep -c ^processor /proc/cpuinfo) want=$(cat /sys/devices/system/cpu/possible) online=$(cat /sys/devices/system/cpu/online) ticks=$((t1 - t0)) uptime=$(cut -d' ' -f1 /proc/uptime)"
if [ "$(arg vmm.count)" = 1 ]; then
	n=0
	while :; do
		n=$((n + 1))
		echo "RKVM-VMM-COUNT $n"
		usleep 100000
	done
fi
reboot -f

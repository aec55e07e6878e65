#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# CPU hotplug with the hypervisor loaded (it enables virtualization on CPUs as they come
# online and disables it as they go). Twice: once with no VM, once with a VM held open
# across the offline/online cycle. Each time: offline cpu1, the device must still answer
# and create a VM; online cpu1, it must answer and create a VM from cpu1. The kernel log
# must show no BUG/WARNING/Oops. Needs two CPUs (SMP configurations); skips otherwise.
#
# Environment (from /init): RKVM_HV=kvm|rkvm, RKVM_VENDOR=intel|amd.
. "${RKVM_TESTS_LIB:-/tests/lib}/tap.sh"
. "${RKVM_TESTS_LIB:-/tests/lib}/hv.sh"

hv=${RKVM_HV:?}
cpu1=/sys/devices/system/cpu/cpu1/online
[ "$(grep -c ^processor /proc/cpuinfo)" -ge 2 ] || tap_skip_all "needs 2 CPUs"
[ -f $cpu1 ] || tap_skip_all "cpu1 cannot be offlined ($cpu1 absent)"
hv_loaded $hv || tap_bail "$hv is not loaded at the start"
[ "$(cat $cpu1)" = 1 ] || tap_bail "cpu1 is offline at the start"
tap_plan 13
mark=$(dmesg_mark)
taint0=$(taint_bad)

# cycle WHAT: offline cpu1, probe, online cpu1, probe (on cpu1); 5 checks.
cycle() {
	echo 0 >$cpu1
	[ "$(cat $cpu1)" = 0 ] && ! grep -q '^processor[[:space:]]*: 1$' /proc/cpuinfo
	tap_ok $? "$1: cpu1 offline (online = $(cat $cpu1))"
	out=$(hv_probe --vm)
	tap_ok $? "$1: with cpu1 offline: $out"
	echo 1 >$cpu1
	[ "$(cat $cpu1)" = 1 ]
	tap_ok $? "$1: cpu1 online again (online = $(cat $cpu1))"
	out=$(taskset -c 1 sh -c '. "${RKVM_TESTS_LIB:-/tests/lib}/hv.sh"; hv_probe --vm')
	tap_ok $? "$1: with cpu1 back, from cpu1: $out"
	out=$(taskset -c 0 sh -c '. "${RKVM_TESTS_LIB:-/tests/lib}/hv.sh"; hv_probe --vm')
	tap_ok $? "$1: from cpu0: $out"
}

cycle "no VM"

# The same with a VM open all along (virtualization in use while cpu1 goes and comes).
fifo=/tmp/cpu_hotplug.fifo
rm -f $fifo
mkfifo $fifo
# (A file left by the other hypervisor's run would already say "VM created".)
rm -f /tmp/cpu_hotplug.hold
hv_probe --hold <$fifo >/tmp/cpu_hotplug.hold 2>&1 &
holder=$!
exec 3>$fifo
hv_wait_for "VM created" /tmp/cpu_hotplug.hold || tap_diag "holder: $(cat /tmp/cpu_hotplug.hold)"
cycle "VM held"
exec 3>&-
wait $holder
tap_ok $? "the VM held across the cycle still answers: $(tr '\n' ' ' </tmp/cpu_hotplug.hold)"

[ "$(cat $cpu1)" = 1 ] || echo 1 >$cpu1
bad=$(dmesg_bad "$mark")
[ -z "$bad" ] && [ "$(taint_bad)" = "$taint0" ]
tap_ok $? "kernel log has no BUG/WARNING/Oops, no new bad taint (tainted $(cat /proc/sys/kernel/tainted))" ||
	tap_diag "$bad"
out=$(hv_probe --vm)
tap_ok $? "at the end: $out"
tap_done

#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# Suspend/resume with the hypervisor loaded, through the kernel's "core" PM test: devices
# suspend, the non-boot CPUs go offline, interrupts off, syscore_suspend (where KVM turns
# virtualization off), then - instead of entering S3 - syscore_resume and everything back
# up. Twice: once with no VM, once with a VM held open across the cycle. Each time the
# write to /sys/power/state must succeed, and after it the device must answer and create
# a VM; the kernel log must show no BUG/WARNING/Oops. Skips when the kernel lacks the PM
# test (/sys/power/pm_test) or the machine has no S3 ("deep" in /sys/power/mem_sleep).
#
# Environment (from /init): RKVM_HV=kvm|rkvm, RKVM_VENDOR=intel|amd.
. "${RKVM_TESTS_LIB:-/tests/lib}/tap.sh"
. "${RKVM_TESTS_LIB:-/tests/lib}/hv.sh"

hv=${RKVM_HV:?}
[ -f /sys/power/pm_test ] || tap_skip_all "no /sys/power/pm_test (CONFIG_PM_DEBUG)"
grep -qw mem /sys/power/state || tap_skip_all "no 'mem' in /sys/power/state: $(cat /sys/power/state)"
# The core test level exists for S3 only (suspend-to-idle refuses it).
grep -qw deep /sys/power/mem_sleep 2>/dev/null ||
	tap_skip_all "no S3: /sys/power/mem_sleep is '$(cat /sys/power/mem_sleep 2>/dev/null)'"
hv_loaded $hv || tap_bail "$hv is not loaded at the start"
tap_plan 8
mark=$(dmesg_mark)
taint0=$(taint_bad)
mem_sleep0=$(sed -n 's/.*\[\([a-z0-9]*\)\].*/\1/p' /sys/power/mem_sleep)
echo deep >/sys/power/mem_sleep
# One second at the core level instead of five.
[ -w /sys/module/suspend/parameters/pm_test_delay ] &&
	echo 1 >/sys/module/suspend/parameters/pm_test_delay

# cycle WHAT: suspend to the core test level and back, then probe; 2 checks.
cycle() {
	echo core >/sys/power/pm_test
	err=$( (echo mem >/sys/power/state) 2>&1)
	rc=$?
	echo none >/sys/power/pm_test
	tap_ok $rc "$1: echo mem > /sys/power/state (pm_test core) succeeded${err:+: $err}" ||
		tap_diag "$(dmesg_since "$mark" | tail -20)"
	out=$(hv_probe --vm)
	tap_ok $? "$1: after resume: $out"
}

out=$(hv_probe --vm)
tap_ok $? "before: $out"
cycle "no VM"

fifo=/tmp/suspend_resume.fifo
rm -f $fifo
mkfifo $fifo
# (A file left by the other hypervisor's run would already say "VM created".)
rm -f /tmp/suspend_resume.hold
hv_probe --hold <$fifo >/tmp/suspend_resume.hold 2>&1 &
holder=$!
exec 3>$fifo
hv_wait_for "VM created" /tmp/suspend_resume.hold || tap_diag "holder: $(cat /tmp/suspend_resume.hold)"
cycle "VM held"
exec 3>&-
wait $holder
tap_ok $? "the VM held across the cycle still answers: $(tr '\n' ' ' </tmp/suspend_resume.hold)"

[ -n "$mem_sleep0" ] && echo "$mem_sleep0" >/sys/power/mem_sleep
# The PM core logs the test's progress; it must have reached the core level both times.
n=$(dmesg_since "$mark" | grep -c 'suspend debug: Waiting for')
[ "$n" -eq 2 ]
tap_ok $? "the kernel log shows both cycles reached the core test level ($n)"
bad=$(dmesg_bad "$mark")
[ -z "$bad" ] && [ "$(taint_bad)" = "$taint0" ]
tap_ok $? "kernel log has no BUG/WARNING/Oops, no new bad taint (tainted $(cat /proc/sys/kernel/tainted))" ||
	tap_diag "$bad"
tap_done

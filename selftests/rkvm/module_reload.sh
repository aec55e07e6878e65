#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# Module lifecycle: with the hypervisor loaded, unload and load it 20 times in a row. Each
# time the device node must go away and come back, answer KVM_GET_API_VERSION and create a
# VM, and the kernel log must show no BUG/WARNING/Oops. Before that: while a VM fd is open
# the module must refuse to unload (the fd pins it), and the VM must still work after.
# Leaves the hypervisor loaded.
#
# Environment (from /init): RKVM_HV=kvm|rkvm, RKVM_VENDOR=intel|amd.
. "${RKVM_TESTS_LIB:-/tests/lib}/tap.sh"
. "${RKVM_TESTS_LIB:-/tests/lib}/hv.sh"

N=20
hv=${RKVM_HV:?}
dev=$(hv_dev $hv)
hv_loaded $hv || tap_bail "$hv is not loaded at the start"
tap_plan $((N + 5))
mark=$(dmesg_mark)
taint0=$(taint_bad)

out=$(hv_probe --vm)
tap_ok $? "before: $out"

# A VM fd pins the module: rmmod must fail and leave everything working.
fifo=/tmp/module_reload.fifo
rm -f $fifo
mkfifo $fifo
# (A file left by the other hypervisor's run would already say "VM created".)
rm -f /tmp/module_reload.hold
hv_probe --hold <$fifo >/tmp/module_reload.hold 2>&1 &
holder=$!
exec 3>$fifo
hv_wait_for "VM created" /tmp/module_reload.hold
unload_hv $hv >/tmp/module_reload.out 2>&1
rc=$?
hv_loaded $hv && [ -c $dev ] && [ $rc -ne 0 ]
tap_ok $? "unloading $hv with a VM fd open fails (rmmod status $rc) and $hv stays loaded" ||
	tap_diag "$(cat /tmp/module_reload.out; cat /proc/modules)"
out=$(hv_probe --vm)
tap_ok $? "$dev still answers: $out"
exec 3>&-
wait $holder
rc=$?
tap_ok $rc "the held VM still answered when its holder let go: $(tr '\n' ' ' </tmp/module_reload.hold)"
if ! hv_loaded $hv; then
	# The refusal test failed: get back to a loaded hypervisor for the loop.
	load_hv $hv >/dev/null 2>&1
fi

i=1
while [ $i -le $N ]; do
	err=
	unload_hv $hv >/tmp/module_reload.out 2>&1 || err="unload failed: $(tail -1 /tmp/module_reload.out)"
	[ -z "$err" ] && hv_loaded $hv && err="still loaded after unload"
	[ -z "$err" ] && [ -e $dev ] && err="$dev still exists after unload"
	[ -z "$err" ] && { load_hv $hv >/tmp/module_reload.out 2>&1 ||
		err="load failed: $(tail -1 /tmp/module_reload.out)"; }
	[ -z "$err" ] && { [ -c $dev ] || err="$dev missing after load"; }
	[ -z "$err" ] && { out=$(hv_probe --vm) || err="$out"; }
	if [ -z "$err" ]; then
		bad=$(dmesg_bad "$mark")
		[ -n "$bad" ] && err="kernel log: $bad"
	fi
	if [ -n "$err" ]; then
		tap_ok 1 "reload $i: $err"
		tap_diag "$(dmesg_since "$mark" | tail -20)"
		hv_loaded $hv || load_hv $hv >/dev/null 2>&1
	else
		tap_ok 0 "reload $i: unloaded ($dev gone), loaded, $out"
	fi
	i=$((i + 1))
done

bad=$(dmesg_bad "$mark")
[ -z "$bad" ] && [ "$(taint_bad)" = "$taint0" ]
tap_ok $? "kernel log has no BUG/WARNING/Oops, no new bad taint (tainted $(cat /proc/sys/kernel/tainted))" ||
	tap_diag "$bad"
tap_done

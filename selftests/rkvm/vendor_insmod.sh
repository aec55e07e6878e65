#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# rkvm-bench: runs-without-hv
#
# rkvm only (skips for kvm). rkvm has a VMX backend only, so:
#   Intel: rkvm is loaded and /dev/rkvm answers; a second insmod fails and leaves it loaded.
#   AMD:   insmod rkvm.ko fails, the kernel log says "rkvm: no backend for this CPU
#          vendor", no module and no /dev/rkvm remain.
# The runner runs this test even when rkvm did not load (the flag line above), with
# RKVM_HV_LOADED=0, so the AMD refusal is actually asserted.
#
# Environment (from /init): RKVM_HV=kvm|rkvm, RKVM_VENDOR=intel|amd, RKVM_HV_LOADED=0|1.
. "${RKVM_TESTS_LIB:-/tests/lib}/tap.sh"
. "${RKVM_TESTS_LIB:-/tests/lib}/hv.sh"

[ "${RKVM_HV:?}" = rkvm ] || tap_skip_all "rkvm only"
vendor=${RKVM_VENDOR:-$(hv_vendor)}
ko=$HV_MODDIR/rkvm.ko
[ -f $ko ] || tap_bail "no $ko in the image"

case $vendor in
intel)
	tap_plan 5
	mark=$(dmesg_mark)
	hv_loaded rkvm
	tap_ok $? "rkvm is loaded on Intel (RKVM_HV_LOADED=${RKVM_HV_LOADED:-?})"
	[ -c /dev/rkvm ]
	tap_ok $? "/dev/rkvm is a character device"
	out=$(hv_probe --vm)
	tap_ok $? "/dev/rkvm answers: $out"
	err=$(insmod $ko 2>&1)
	rc=$?
	[ $rc -ne 0 ] && hv_loaded rkvm && [ -c /dev/rkvm ]
	tap_ok $? "a second insmod fails (status $rc: $err) and rkvm stays loaded"
	bad=$(dmesg_bad "$mark")
	[ -z "$bad" ]
	tap_ok $? "kernel log has no BUG/WARNING/Oops" || tap_diag "$bad"
	;;
amd)
	tap_plan 4
	# The runner's own attempt failed already; make sure, and try again ourselves.
	unload_hv rkvm >/dev/null 2>&1
	mark=$(dmesg_mark)
	err=$(insmod $ko 2>&1)
	rc=$?
	[ $rc -ne 0 ]
	tap_ok $? "insmod rkvm.ko fails on AMD (status $rc: $err)"
	log=$(dmesg_since "$mark")
	printf '%s\n' "$log" | grep -q 'rkvm: no backend for this CPU vendor'
	tap_ok $? "the kernel log says \"rkvm: no backend for this CPU vendor\"" ||
		tap_diag "kernel log: $log"
	! hv_loaded rkvm && [ ! -e /dev/rkvm ]
	tap_ok $? "no rkvm module and no /dev/rkvm left behind"
	bad=$(dmesg_bad "$mark")
	[ -z "$bad" ]
	tap_ok $? "kernel log has no BUG/WARNING/Oops" || tap_diag "$bad"
	;;
*)
	tap_skip_all "neither VMX nor SVM ($vendor)"
	;;
esac
tap_done

#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# rkvm-bench: runs-without-hv
#
# rkvm only (skips for kvm). rkvm picks its backend from the CPU: on Intel (VMX) and on
# AMD (SVM) it is loaded, names the backend in the kernel log, and /dev/rkvm answers; a
# second insmod fails and leaves it loaded. The runner runs this test even when rkvm did
# not load (the flag line above), with RKVM_HV_LOADED=0, so a refusal to load fails here.
#
# Environment (from /init): RKVM_HV=kvm|rkvm, RKVM_VENDOR=intel|amd, RKVM_HV_LOADED=0|1.
. "${RKVM_TESTS_LIB:-/tests/lib}/tap.sh"
. "${RKVM_TESTS_LIB:-/tests/lib}/hv.sh"

[ "${RKVM_HV:?}" = rkvm ] || tap_skip_all "rkvm only"
vendor=${RKVM_VENDOR:-$(hv_vendor)}
ko=$HV_MODDIR/rkvm.ko
[ -f $ko ] || tap_bail "no $ko in the image"

case $vendor in
intel) backend=vmx ;;
amd) backend=svm ;;
*) tap_skip_all "neither VMX nor SVM ($vendor)" ;;
esac
tap_plan 6
mark=$(dmesg_mark)
hv_loaded rkvm
tap_ok $? "rkvm is loaded on $vendor (RKVM_HV_LOADED=${RKVM_HV_LOADED:-?})"
# Loaded once more, the kernel log names the backend it picked.
unload_hv rkvm >/dev/null 2>&1
m2=$(dmesg_mark)
insmod $ko >/dev/null 2>&1
log=$(dmesg_since "$m2")
printf '%s\n' "$log" | grep -q "rkvm: loaded: /dev/rkvm ready, $backend backend"
tap_ok $? "reloaded, the kernel log names the $backend backend" || tap_diag "kernel log: $log"
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
tap_done

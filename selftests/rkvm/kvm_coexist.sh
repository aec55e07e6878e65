#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# rkvm next to KVM (rkvm only). kvm-intel (kvm-amd) turns VMX (SVM) on in every CPU when
# it loads and keeps it on, so rkvm must refuse to load while it is there - with EBUSY
# and "VMX (SVM) is in use by another hypervisor" in the kernel log - without disturbing
# KVM; once KVM is gone, rkvm loads again. Steps: unload rkvm; load kvm + kvm-intel (or
# kvm-amd); insmod rkvm.ko fails; /dev/kvm still works; unload KVM; insmod rkvm.ko
# succeeds and /dev/rkvm works. Leaves rkvm loaded.
#
# Environment (from /init): RKVM_HV=kvm|rkvm, RKVM_VENDOR=intel|amd.
. "${RKVM_TESTS_LIB:-/tests/lib}/tap.sh"
. "${RKVM_TESTS_LIB:-/tests/lib}/hv.sh"

[ "${RKVM_HV:?}" = rkvm ] || tap_skip_all "rkvm only"
vendor=${RKVM_VENDOR:-$(hv_vendor)}
case $vendor in
intel) ext=VMX vmod=kvm-intel ;;
amd) ext=SVM vmod=kvm-amd ;;
*) tap_skip_all "neither VMX nor SVM ($vendor)" ;;
esac
hv_loaded rkvm || tap_bail "rkvm is not loaded at the start"
ko=$HV_MODDIR/rkvm.ko
tap_plan 9
mark=$(dmesg_mark)
taint0=$(taint_bad)

unload_hv rkvm >/tmp/kvm_coexist.out 2>&1 && ! hv_loaded rkvm && [ ! -e /dev/rkvm ]
tap_ok $? "rkvm unloaded" || tap_diag "$(cat /tmp/kvm_coexist.out)"

load_hv kvm >/tmp/kvm_coexist.out 2>&1 && hv_loaded kvm
tap_ok $? "kvm + $vmod loaded" || tap_diag "$(cat /tmp/kvm_coexist.out)"

m2=$(dmesg_mark)
err=$(insmod $ko 2>&1)
rc=$?
[ $rc -ne 0 ] && ! hv_loaded rkvm && [ ! -e /dev/rkvm ]
tap_ok $? "insmod rkvm.ko with $vmod loaded fails (status $rc: $err), nothing left behind"
case $err in
*"Device or resource busy"* | *EBUSY*) rc=0 ;;
*) rc=1 ;;
esac
tap_ok $rc "the failure is EBUSY ($err)"
log=$(dmesg_since "$m2")
printf '%s\n' "$log" | grep -q "rkvm: .*$ext is in use by another hypervisor"
tap_ok $? "the kernel log says \"$ext is in use by another hypervisor\"" || tap_diag "kernel log: $log"

out=$(KVM_DEVICE=/dev/kvm "$HV_BIN/api_version" --vm)
tap_ok $? "/dev/kvm still works: $out"

unload_hv kvm >/tmp/kvm_coexist.out 2>&1 && ! hv_loaded kvm && ! mod_loaded kvm
tap_ok $? "$vmod + kvm unloaded" || tap_diag "$(cat /tmp/kvm_coexist.out)"

out=
err=$(insmod $ko 2>&1)
rc=$?
[ $rc -eq 0 ] && hv_loaded rkvm && out=$(KVM_DEVICE=/dev/rkvm "$HV_BIN/api_version" --vm)
tap_ok $? "insmod rkvm.ko succeeds now (status $rc${err:+: $err}), /dev/rkvm: $out"

bad=$(dmesg_bad "$mark")
[ -z "$bad" ] && [ "$(taint_bad)" = "$taint0" ]
tap_ok $? "kernel log has no BUG/WARNING/Oops, no new bad taint (tainted $(cat /proc/sys/kernel/tainted))" ||
	tap_diag "$bad"
# Whatever happened, leave rkvm loaded (and kvm not).
hv_loaded kvm && unload_hv kvm >/dev/null 2>&1
hv_loaded rkvm || insmod $ko >/dev/null 2>&1
tap_done

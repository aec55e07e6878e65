#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# The debug kernel's leak check, run last in the debug leg of `make check`: kmemleak
# scans the kernel's memory twice (an object must stay unreferenced across both scans
# to be reported) and no reported object may have been allocated by the hypervisor under
# test: a backtrace through rkvm (or kvm/kvm_intel) fails the test. Leaks elsewhere in
# the kernel are printed for information. Skips on a kernel without kmemleak.
. "${RKVM_TESTS_LIB:-/tests/lib}/tap.sh"

hv=${RKVM_HV:?}
km=/sys/kernel/debug/kmemleak
[ -w $km ] || tap_skip_all "no kmemleak in this kernel"
tap_plan 1
echo scan >$km
sleep 6
echo scan >$km
report=$(cat $km)
case $hv in
rkvm) mods='\[rkvm\]' ;;
*) mods='\[kvm\]|\[kvm_intel\]|\[kvm_amd\]' ;;
esac
# One report per object: "unreferenced object ..." then its backtrace.
mine=$(printf '%s\n' "$report" | awk -v re="$mods" '
	/^unreferenced object/ { if (obj != "" && hit) print obj; obj = $0; hit = 0; next }
	{ obj = obj "\n" $0; if ($0 ~ re) hit = 1 }
	END { if (obj != "" && hit) print obj }')
others=$(printf '%s\n' "$report" | grep -c '^unreferenced object')
[ -z "$mine" ] || tap_diag "$mine"
tap_ok "$([ -z "$mine" ] && echo 0 || echo 1)" \
	"no leaked object allocated by $hv ($others unreferenced objects in the whole kernel)"
tap_done

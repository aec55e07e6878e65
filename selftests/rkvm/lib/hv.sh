# SPDX-License-Identifier: GPL-2.0
#
# Loading and unloading the hypervisors inside the test image, plus what the shell tests
# need around it. Shipped as /tests/lib/hv.sh; sourced by /init (tools/bench/init.sh) and
# by the shell tests. POSIX sh as busybox ash runs it.
#
#   hv_vendor            intel | amd | none (VMX, SVM or neither in /proc/cpuinfo)
#   hv_dev HV            the device node of HV (kvm -> /dev/kvm, rkvm -> /dev/rkvm)
#   load_hv HV           insmod HV's modules (kvm: irqbypass, kvm, kvm-intel|kvm-amd)
#   unload_hv HV         rmmod whichever of HV's modules are loaded; 1 if one stays
#   hv_loaded HV         whether HV is loaded (kvm: kvm plus a vendor module)
#   hv_probe [ARGS]      run the api_version helper on $(hv_dev $RKVM_HV)
#   hv_wait_for TEXT FILE  wait (up to 20 s) until FILE contains TEXT
#   dmesg_mark           write a marker into the kernel log, print its name
#   dmesg_since MARK     the kernel log after MARK
#   dmesg_bad MARK       lines after MARK that show a kernel bug (BUG, WARNING, Oops, ...)
#   taint_bad            the taint bits that mean a kernel bug (B, D, W, L)
#
# Kernel command line: bench.apicv=N is passed to kvm-intel as enable_apicv;
# bench.l1d=MODE to kvm-intel and rkvm as vmentry_l1d_flush (Intel only).

HV_MODDIR=${HV_MODDIR:-/lib/modules}
HV_BIN=${RKVM_TESTS_BIN:-/tests/bin}

hv_vendor() {
	if grep -q '^flags.* vmx' /proc/cpuinfo; then echo intel
	elif grep -q '^flags.* svm' /proc/cpuinfo; then echo amd
	else echo none; fi
}

hv_dev() { if [ "$1" = kvm ]; then echo /dev/kvm; else echo /dev/rkvm; fi; }

# mod_loaded NAME: NAME is in /proc/modules (whatever its state).
mod_loaded() { grep -q "^$1 " /proc/modules; }

hv_loaded() {
	case $1 in
	kvm) mod_loaded kvm && { mod_loaded kvm_intel || mod_loaded kvm_amd; } ;;
	rkvm) mod_loaded rkvm ;;
	*) return 1 ;;
	esac
}

load_hv() {
	local apicv l1d
	l1d=$(sed -n 's/.*\bbench\.l1d=\([^ ]*\).*/\1/p' /proc/cmdline)
	[ "$(hv_vendor)" = intel ] || l1d=
	case $1 in
	kvm)
		if [ -f "$HV_MODDIR/irqbypass.ko" ] && ! mod_loaded irqbypass; then
			insmod "$HV_MODDIR/irqbypass.ko" || return 1
		fi
		insmod "$HV_MODDIR/kvm.ko" || return 1
		case $(hv_vendor) in
		intel)
			apicv=$(sed -n 's/.*\bbench\.apicv=\([^ ]*\).*/\1/p' /proc/cmdline)
			insmod "$HV_MODDIR/kvm-intel.ko" ${apicv:+enable_apicv=$apicv} \
				${l1d:+vmentry_l1d_flush=$l1d} || return 1
			;;
		amd) insmod "$HV_MODDIR/kvm-amd.ko" || return 1 ;;
		*) echo "load_hv: neither VMX nor SVM"; return 1 ;;
		esac
		;;
	rkvm) insmod "$HV_MODDIR/rkvm.ko" ${l1d:+vmentry_l1d_flush=$l1d} || return 1 ;;
	*) echo "load_hv: unknown hypervisor $1"; return 1 ;;
	esac
}

unload_hv() {
	local mods m rc=0
	case $1 in
	kvm) mods="kvm_intel kvm_amd kvm irqbypass" ;;
	rkvm) mods=rkvm ;;
	*) echo "unload_hv: unknown hypervisor $1"; return 1 ;;
	esac
	for m in $mods; do
		mod_loaded $m || continue
		rmmod $m || rc=1
	done
	return $rc
}

# hv_wait_for TEXT FILE: waits up to 20 s for TEXT to show up in FILE.
hv_wait_for() {
	local i=0
	while [ $i -lt 200 ]; do
		grep -q "$1" "$2" 2>/dev/null && return 0
		usleep 100000
		i=$((i + 1))
	done
	return 1
}

hv_probe() { KVM_DEVICE=$(hv_dev "${RKVM_HV:?}") "$HV_BIN/api_version" "$@"; }

dmesg_mark() {
	local m
	m="selftest mark $(cat /proc/sys/kernel/random/uuid)"
	echo "$m" >/dev/kmsg
	echo "$m"
}
# Without the mark (log cleared or wrapped), the whole log: never less than asked for.
dmesg_since() { dmesg | awk -v m="$1" 'index($0, m) { n = 0; next } { l[n++] = $0 } END { for (i = 0; i < n; i++) print l[i] }'; }
dmesg_bad() {
	dmesg_since "$1" | grep -E '(^|[^A-Za-z_])(BUG|WARNING|Oops)([^A-Za-z_]|$)|Call Trace|general protection fault|kernel panic'
}
# Bad page (B, 32), died (D, 128), warning (W, 512), soft lockup (L, 16384).
taint_bad() { echo $(($(cat /proc/sys/kernel/tainted) & (32 | 128 | 512 | 16384))); }

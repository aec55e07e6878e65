#!/bin/busybox sh
# SPDX-License-Identifier: GPL-2.0
#
# /init of the rkvm test image. Runs the differential suite (or the demo) and powers off.
#
# Kernel command line:
#   bench.mode=check|demo|shell   what to do (default check)
#   bench.from=N                  resume the plan at step N (after a hung batch)
#   bench.apicv=0                 passed to kvm-intel as enable_apicv
#
# Protocol on the console, read by the host (tools/bench/run.sh):
#   @@ PLAN <n>                         steps in this boot's plan
#   @@ START <i> <hv> <test>            a step begins
#   @@ RESULT <i> <hv> <test> <pass|fail|skip> <ms> <reason>
#   @@ DONE                             the plan ran to the end
# A test's own TAP output is indented by four spaces.

/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug
mount -t tmpfs tmp /tmp
exec </dev/console >/dev/console 2>&1

arg() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" /proc/cmdline; }
mode=$(arg bench.mode); mode=${mode:-check}
from=$(arg bench.from); from=${from:-0}
apicv=$(arg bench.apicv)

if grep -q '^flags.* vmx' /proc/cpuinfo; then vendor=intel
elif grep -q '^flags.* svm' /proc/cpuinfo; then vendor=amd
else vendor=none; fi
ncpu=$(grep -c ^processor /proc/cpuinfo)
echo "@@ INFO vendor=$vendor cpus=$ncpu kernel=$(uname -r) mode=$mode from=$from"

now_ms() { read up _ </proc/uptime; echo "${up%.*}${up#*.}0"; }

# load_hv HV: loads the hypervisor modules of HV; prints why on failure.
load_hv() {
	case $1 in
	kvm)
		[ -f /lib/modules/irqbypass.ko ] && { insmod /lib/modules/irqbypass.ko || return 1; }
		insmod /lib/modules/kvm.ko || return 1
		if [ $vendor = intel ]; then
			insmod /lib/modules/kvm-intel.ko ${apicv:+enable_apicv=$apicv} || return 1
		else
			insmod /lib/modules/kvm-amd.ko || return 1
		fi
		;;
	rkvm)
		insmod /lib/modules/rkvm.ko || return 1
		;;
	esac
}
unload_hv() {
	case $1 in
	kvm) rmmod kvm_intel kvm_amd kvm irqbypass 2>/dev/null ;;
	rkvm) rmmod rkvm 2>/dev/null ;;
	esac
}
hv_dev() { [ $1 = kvm ] && echo /dev/kvm || echo /dev/rkvm; }

run_check() {
	# The plan: every test against reference KVM, then against rkvm.
	tests=$(cat /tests/list)
	plan=""
	for hv in kvm rkvm; do for t in $tests; do plan="$plan $hv:$t"; done; done
	set -- $plan
	echo "@@ PLAN $#"
	i=0 loaded="" load_err=""
	for step; do
		hv=${step%%:*} t=${step#*:}
		if [ $i -lt $from ]; then i=$((i + 1)); continue; fi
		if [ "$loaded" != $hv ]; then
			[ -n "$loaded" ] && unload_hv $loaded
			loaded=$hv load_err=""
			load_hv $hv >/tmp/load.log 2>&1 ||
				load_err="$(tail -1 /tmp/load.log | tr -d '\n') ($(dmesg | grep -E 'rkvm|kvm' | tail -1 | sed 's/^\[[^]]*\] //'))"
			[ -n "$load_err" ] && echo "# loading $hv failed: $load_err"
			dmesg | grep -E "^\[[ 0-9.]*\] (rkvm|kvm)" | tail -20 | sed 's/^/# dmesg: /'
			dmesg -c >/dev/null
		fi
		echo "@@ START $i $hv $t"
		t0=$(now_ms)
		if [ -n "$load_err" ]; then
			# rkvm without a backend for this CPU vendor refuses to load by design.
			if [ $hv = rkvm ] && dmesg | grep -q 'rkvm: no backend'; then
				verdict="skip no rkvm backend for this CPU vendor"
			else
				verdict="fail $hv did not load: $load_err"
			fi
		else
			name=${t%@*} pin=""
			[ "$name" != "$t" ] && pin="taskset -c ${t#*@cpu}"
			{
				KVM_DEVICE=$(hv_dev $hv) timeout -s KILL 600 $pin /tests/bin/$name 2>&1
				echo $? >/tmp/rc
			} | sed 's/^/    /'
			rc=$(cat /tmp/rc)
			case $rc in
			0) verdict="pass ok" ;;
			4) verdict="skip test requirement not met" ;;
			137) verdict="fail killed after 600 s" ;;
			*) verdict="fail exit status $rc" ;;
			esac
		fi
		echo "@@ RESULT $i $hv $t ${verdict%% *} $(($(now_ms) - t0)) ${verdict#* }"
		i=$((i + 1))
	done
	[ -n "$loaded" ] && unload_hv $loaded
	echo "@@ DONE"
}

run_demo() {
	echo "== loading rkvm.ko"
	if insmod /lib/modules/rkvm.ko; then
		echo "== running a guest through /dev/rkvm"
		KVM_DEVICE=/dev/rkvm /tests/bin/demo_guest
		echo "== rkvm debugfs stats (/sys/kernel/debug/rkvm)"
		for f in /sys/kernel/debug/rkvm/*; do
			[ -f "$f" ] && printf '%-28s %s\n' "${f##*/}" "$(cat "$f")"
		done
		rmmod rkvm
	else
		dmesg | grep rkvm | tail -3
	fi
	echo "@@ DONE"
}

case $mode in
check) run_check ;;
demo) run_demo ;;
shell) setsid cttyhack sh ;;
esac
sync
poweroff -f

#!/bin/busybox sh
# SPDX-License-Identifier: GPL-2.0
#
# /init of the rkvm test image. Runs the differential suite (or the demo) and powers off.
#
# Kernel command line:
#   bench.mode=check|demo|shell   what to do (default check)
#   bench.from=N                  resume the plan at step N (after a hung batch)
#   bench.apicv=0                 passed to kvm-intel as enable_apicv
#   bench.retry=1                 a failed test runs once more; passing then, its result
#                                 is "pass" with the reason "retried: ..." (QEMU's nested
#                                 SVM emulation races now and then, see check.sh)
# Used by `make conformance` (tools/conformance), off by default:
#   bench.hvs=kvm,rkvm            the hypervisors of the plan, in order (default both)
#   bench.timeout=N               in-guest limit per test in seconds (default 600)
#   bench.kvmnode=1               while rkvm is loaded, /dev/kvm is a node with rkvm's
#                                 major:minor (for programs that hard-code /dev/kvm)
#   bench.kmsg=1                  after each test, print the kernel log it produced
# Used by the debug-kernel leg of `make check`:
#   bench.splat=1                 a test during which the kernel logged a splat (KASAN,
#                                 UBSAN, lockdep, BUG, WARNING, soft lockup, RCU stall,
#                                 hung task) fails, with the report's first line as the
#                                 reason and the report on the console ("# kmsg:")
#
# Protocol on the console, read by the host (tools/bench/run.sh):
#   @@ PLAN <n>                         steps in this boot's plan
#   @@ START <i> <hv> <test>            a step begins
#   @@ RESULT <i> <hv> <test> <pass|fail|skip> <ms> <reason>
#   @@ DONE                             the plan ran to the end
# A test's own TAP output is indented by four spaces.
#
# A test is /tests/bin/NAME (NAME@cpuN: pinned to CPU N), a static binary or a shell
# script (run with sh), with KVM_DEVICE=/dev/kvm|/dev/rkvm, RKVM_HV=kvm|rkvm,
# RKVM_VENDOR=intel|amd, RKVM_HV_LOADED=1|0, RKVM_TESTS_BIN and RKVM_TESTS_LIB in its
# environment. Exit status 0 = pass, 4 = skip, anything else = fail.

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
# Conformance hooks (see above); their defaults are `make check`'s behaviour.
hvs=$(arg bench.hvs | tr , ' '); hvs=${hvs:-kvm rkvm}
step_timeout=$(arg bench.timeout); step_timeout=${step_timeout:-600}
kvm_node=$(arg bench.kvmnode)
kmsg=$(arg bench.kmsg)
retry=$(arg bench.retry)
splat=$(arg bench.splat)
# What counts as a splat in the kernel log (bench.splat=1).
SPLAT_RE='BUG:|WARNING:|KASAN|UBSAN|kernel BUG|Oops|general protection fault|possible recursive locking|possible circular locking|inconsistent lock state|suspicious RCU usage|soft lockup|hard LOCKUP|rcu.*detected stall|blocked for more than|list_add corruption|list_del corruption|refcount_t:|Kernel panic'

# Loading and unloading the hypervisors (load_hv, unload_hv, hv_loaded, hv_dev, ...): the
# same functions the shell tests use (selftests/rkvm/lib/hv.sh).
. /tests/lib/hv.sh
vendor=$(hv_vendor)
ncpu=$(grep -c ^processor /proc/cpuinfo)
echo "@@ INFO vendor=$vendor cpus=$ncpu kernel=$(uname -r) mode=$mode from=$from"

# Milliseconds of uptime; /proc/uptime has two decimals ("1" prefix: no octal).
now_ms() { read up _ </proc/uptime; echo $(( ${up%.*} * 1000 + 1${up#*.}0 - 1000 )); }

# A test is a static binary or a shell script (run with sh). A script with the line
# "# rkvm-bench: runs-without-hv" also runs when its hypervisor failed to load (with
# RKVM_HV_LOADED=0), to assert the failure itself.
is_script() { [ "$(head -c 2 "$1")" = "#!" ]; }
runs_without_hv() { is_script "$1" && grep -q '^# rkvm-bench: .*runs-without-hv' "$1"; }

# bench.kvmnode=1: after HV was loaded (or unloaded), /dev/kvm is rkvm's device while rkvm
# is loaded, and /sys/module/kvm and /sys/module/kvm_intel (kvm_amd on AMD) show rkvm's
# module directory (rkvm carries kvm's, kvm_intel's and kvm_amd's parameter names:
# programs written for KVM read them there). sysfs takes no symlinks, so /sys/module becomes a tmpfs of links into a
# bind mount of the real one for that time. Reference KVM's own /dev/kvm (devtmpfs) and
# /sys/module are never touched.
sysmod_aliased() { grep -q ' /sys/module tmpfs ' /proc/mounts; }
sysmod_alias() {
	sysmod_aliased && return 0
	mkdir -p /run/sysmodule && mount --bind /sys/module /run/sysmodule || return 1
	mount -t tmpfs -o mode=755 sysmodule /sys/module || { umount /run/sysmodule; return 1; }
	for m in /run/sysmodule/*; do ln -s "$m" "/sys/module/${m##*/}"; done
	local vmod=kvm_intel
	grep -q '^flags.* svm' /proc/cpuinfo && vmod=kvm_amd
	ln -s /run/sysmodule/rkvm /sys/module/kvm
	ln -s /run/sysmodule/rkvm /sys/module/$vmod
	echo "# runner: /sys/module/kvm and /sys/module/$vmod show /sys/module/rkvm"
}
sysmod_unalias() {
	sysmod_aliased || return 0
	umount /sys/module && umount /run/sysmodule
}
kvm_node_sync() {
	[ "$kvm_node" = 1 ] || return 0
	mod_loaded kvm && return 0
	rm -f /dev/kvm
	sysmod_unalias
	if mod_loaded rkvm && [ -r /sys/class/misc/rkvm/dev ]; then
		IFS=: read -r maj min </sys/class/misc/rkvm/dev
		mknod /dev/kvm c "$maj" "$min" && echo "# runner: /dev/kvm is rkvm's device $maj:$min"
		sysmod_alias
	fi
}

# One run of test $t (binary $bin, pinning $pin) on $hv; sets verdict. A test may unload
# and reload modules: if it left the wrong state behind, the hypervisor under test is
# restored so the next tests are not blamed.
run_step() {
	run=$bin
	is_script $bin && run="sh $bin"
	{
		KVM_DEVICE=$(hv_dev $hv) RKVM_HV=$hv RKVM_VENDOR=$vendor \
			RKVM_HV_LOADED=$([ -z "$load_err" ] && echo 1 || echo 0) \
			RKVM_TESTS_BIN=/tests/bin RKVM_TESTS_LIB=/tests/lib \
			timeout -s KILL $step_timeout $pin $run 2>&1
		echo $? >/tmp/rc
	} | sed 's/^/    /'
	rc=$(cat /tmp/rc)
	case $rc in
	0) verdict="pass ok" ;;
	4) verdict="skip test requirement not met" ;;
	137) verdict="fail killed after $step_timeout s" ;;
	*) verdict="fail exit status $rc" ;;
	esac
	if [ -z "$load_err" ] && ! { hv_loaded $hv && [ -c $(hv_dev $hv) ]; }; then
		echo "# runner: $hv is not loaded after $t; reloading it"
		unload_hv kvm >/dev/null 2>&1
		unload_hv rkvm >/dev/null 2>&1
		load_hv $hv >/tmp/load.log 2>&1 ||
			load_err="$(tail -1 /tmp/load.log | tr -d '\n') (reload after $t)"
		kvm_node_sync
	fi
}

run_check() {
	# The plan: every test against reference KVM, then against rkvm.
	tests=$(cat /tests/list)
	plan=""
	for hv in $hvs; do for t in $tests; do plan="$plan $hv:$t"; done; done
	set -- $plan
	echo "@@ PLAN $#"
	i=0 loaded="" load_err=""
	for step; do
		hv=${step%%:*} t=${step#*:}
		if [ $i -lt $from ]; then i=$((i + 1)); continue; fi
		if [ "$loaded" != $hv ]; then
			[ -n "$loaded" ] && unload_hv $loaded
			loaded=$hv load_err="" no_backend=""
			load_hv $hv >/tmp/load.log 2>&1 ||
				load_err="$(tail -1 /tmp/load.log | tr -d '\n') ($(dmesg | grep -E 'rkvm|kvm' | tail -1 | sed 's/^\[[^]]*\] //'))"
			kvm_node_sync
			[ -n "$load_err" ] && echo "# loading $hv failed: $load_err"
			dmesg | grep -q 'rkvm: no backend for this CPU vendor' && no_backend=1
			dmesg | grep -E "^\[[ 0-9.]*\] (rkvm|kvm)" | tail -20 | sed 's/^/# dmesg: /'
			# Load messages stay for the splat check of the next step.
			if [ "$splat" = 1 ]; then dmesg -c >>/tmp/kmsg.pending; else dmesg -c >/dev/null; fi
		fi
		echo "@@ START $i $hv $t"
		t0=$(now_ms)
		name=${t%@*} pin=""
		[ "$name" != "$t" ] && pin="taskset -c ${t#*@cpu}"
		bin=/tests/bin/$name
		if [ -n "$load_err" ] && ! runs_without_hv $bin; then
			# rkvm without a backend for this CPU vendor refuses to load by design.
			if [ $hv = rkvm ] && [ -n "$no_backend" ]; then
				verdict="skip no rkvm backend for this CPU vendor"
			else
				verdict="fail $hv did not load: $load_err"
			fi
		else
			run_step
			if [ "$retry" = 1 ] && [ "${verdict%% *}" = fail ] && [ -z "$load_err" ]; then
				first=${verdict#* }
				echo "# runner: $t failed ($first); running it once more (bench.retry=1)"
				run_step
				if [ "${verdict%% *}" = pass ]; then
					verdict="pass retried: the first run failed ($first)"
				else
					verdict="$verdict (the first run too: $first)"
				fi
			fi
			if [ "$splat" = 1 ]; then
				{ cat /tmp/kmsg.pending 2>/dev/null; dmesg -c; } >/tmp/kmsg.step
				rm -f /tmp/kmsg.pending
				first=$(grep -E "$SPLAT_RE" /tmp/kmsg.step | head -1 | sed 's/^\[[^]]*\] //')
				if [ -n "$first" ]; then
					grep -E -A60 "$SPLAT_RE" /tmp/kmsg.step | head -200 | sed 's/^/# kmsg: /'
					verdict="fail kernel splat: $first"
				fi
			elif [ "$kmsg" = 1 ]; then
				dmesg -c | sed 's/^/# kmsg: /' | tail -40
			fi
		fi
		echo "@@ RESULT $i $hv $t ${verdict%% *} $(($(now_ms) - t0)) ${verdict#* }"
		i=$((i + 1))
	done
	[ -n "$loaded" ] && unload_hv $loaded
	kvm_node_sync
	if [ "$splat" = 1 ]; then
		# Splats while the last hypervisor unloaded: no step to blame, the host counts them.
		dmesg -c >/tmp/kmsg.step
		grep -E -A60 "$SPLAT_RE" /tmp/kmsg.step | head -200 | sed 's/^/# kmsg: /'
		grep -E "$SPLAT_RE" /tmp/kmsg.step | head -3 | sed 's/^\[[^]]*\] //; s/^/@@ SPLAT /'
	fi
	echo "@@ DONE"
}

# `make bench`: the exit-cost benchmark against each hypervisor, and module sizes.
run_bench() {
	for hv in kvm rkvm; do
		if load_hv $hv >/tmp/load.log 2>&1; then
			KVM_DEVICE=$(hv_dev $hv) /tests/bin/bench_exits | sed "s/^bench /@@ BENCH $hv /"
			[ $hv = rkvm ] && for f in exits io_exits tlb_flush pf_taken; do
				echo "# rkvm $f $(cat /sys/kernel/debug/rkvm/$f)"
			done
			grep -E '^(kvm|kvm_intel|kvm_amd|rkvm) ' /proc/modules |
				awk -v hv=$hv '{print "@@ BENCH " hv " module_" $1 " - " $2}'
			unload_hv $hv
		else
			echo "# $hv did not load: $(tail -1 /tmp/load.log)"
		fi
	done
	echo "@@ DONE"
}

# The demo: Linux booted by rkvm-run (tools/rkvm-run, from the image's /vmm) on
# /dev/rkvm, with two vCPUs, the in-kernel irqchip and PIT and a serial console through
# an irqfd; then the VM's statistics as rkvm-run read them from KVM_GET_STATS_FD.
run_demo() {
	echo "== loading rkvm.ko"
	if insmod /lib/modules/rkvm.ko; then
		grep . /sys/module/rkvm/parameters/* | sed 's|/sys/module/rkvm/parameters/|   parameter |'
		echo "== booting Linux under rkvm-run on /dev/rkvm: 2 vCPUs, 128 MiB, in-kernel irqchip and PIT"
		local t0=$(cut -d' ' -f1 /proc/uptime)
		/vmm/bin/rkvm-run --dev /dev/rkvm --kernel /vmm/bzImage --initrd /vmm/initrd --cpus 2 \
			--cmdline "console=ttyS0 reboot=k panic=-1 quiet" --stats </dev/null 2>/tmp/demo.err |
			tr -d '\r' | sed 's/^/   guest| /'
		echo "== the guest reset its machine after $(awk -v a=$t0 '{ printf "%.2f", $1 - a }' /proc/uptime) s of this machine's time; rkvm-run said:"
		grep -v '^rkvm-run: stat ' /tmp/demo.err | sed 's/^/   /'
		echo "== the VM's statistics (the VM's own, then its vCPUs' summed):"
		sed -n 's/^rkvm-run: stat /   /p' /tmp/demo.err
		echo "== unloading rkvm"
		rmmod rkvm && echo "rkvm unloaded"
	else
		dmesg | grep rkvm | tail -3
	fi
	echo "@@ DONE"
}

case $mode in
check) run_check ;;
demo) run_demo ;;
bench) run_bench ;;
shell) setsid cttyhack sh ;;
esac
sync
poweroff -f

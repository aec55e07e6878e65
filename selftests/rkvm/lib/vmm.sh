# SPDX-License-Identifier: GPL-2.0
#
# What the VMM tests (vmm_*.sh) share: the payload under /vmm (tools/bench/vmm.sh), the
# guest's report line, and a watchdog. Shipped as /tests/lib/vmm.sh, after tap.sh.
#
#   vmm_now_ms             this machine's monotonic clock, in ms
#   vmm_wait OUT COND      poll until COND holds or the VMM ($pid) exits; sets $rc
#   vmm_wait_exit OUT      wait for the VMM ($pid) to exit, to the moment it does; sets $rc
#   vmm_guest_line OUT     the guest init's report line in OUT (sets $cpus, $ticks)
#   vmm_counts OUT         the guest's counter lines in OUT, one number per line
#   vmm_learn MS           a boot took MS ms: lengthen the watchdog to 10 times that
#
# A test may define vmm_diag OUT, called when the watchdog fires, before the VMM is
# killed; its default logs the VMM's threads and the hypervisor's debugfs statistics.

[ -d /vmm ] || tap_skip_all "no /vmm payload in this image"
[ -c /dev/kvm ] || tap_skip_all "no /dev/kvm (run with bench.kvmnode=1)"

# The "now" of /proc/timer_list, in ns (/proc/uptime only counts 10 ms steps).
vmm_now_ms() {
	local ns=$(sed -n '/^now at /{s/[^0-9]//g;p;q;}' /proc/timer_list)
	echo $((ns / 1000000))
}

# The watchdog, in 100 ms steps. A boot takes about 0.6 s of this machine's clock on the
# test kernel and 15 s on the debug kernel; under Bochs that clock runs 5 to 30 times
# slower than the wall's while a nested guest runs, so the watchdog is short: 10 s, or
# 10 times the longest boot so far if that is longer.
VMM_LIMIT=100

vmm_learn() { [ $VMM_LIMIT -lt $(($1 / 10)) ] && VMM_LIMIT=$(($1 / 10)); }

vmm_threads() {
	tap_diag "the VMM's threads (state, wchan, syscall):"
	for t in /proc/$pid/task/*; do
		tap_diag "  $(cut -d' ' -f2-3 $t/stat) $(cat $t/wchan 2>/dev/null) $(cut -d' ' -f1-3 $t/syscall 2>/dev/null)"
	done
	for f in /sys/kernel/debug/kvm/*-*/* /sys/kernel/debug/rkvm/*-*/*; do
		[ -f "$f" ] && tap_diag "  ${f#/sys/kernel/debug/} $(cat $f 2>/dev/null | head -1)"
	done
}

vmm_diag() {
	tap_diag "the guest's console:"
	tap_diag "$(tail -15 $1)"
	vmm_threads
}

vmm_wait() {
	local i=0
	while [ $i -lt $VMM_LIMIT ]; do
		if eval "$2"; then
			rc=0
			return
		fi
		kill -0 $pid 2>/dev/null || break
		usleep 100000
		i=$((i + 1))
	done
	if kill -0 $pid 2>/dev/null; then
		tap_diag "the VMM runs on after $((VMM_LIMIT / 10)) s"
		vmm_diag $1
		kill -9 $pid
		wait $pid
		rc=137
	else
		wait $pid
		rc=$?
	fi
}

# A boot's time is measured across this wait, so it ends when the VMM does: the
# watchdog polls beside it (vmm_wait's 100 ms polling would round every boot up to the
# next step).
vmm_wait_exit() {
	(
		i=0
		while [ $i -lt $VMM_LIMIT ]; do
			usleep 100000
			kill -0 $pid 2>/dev/null || exit 0
			i=$((i + 1))
		done
		tap_diag "the VMM runs on after $((VMM_LIMIT / 10)) s"
		vmm_diag $1
		kill -9 $pid
	) &
	local dog=$!
	wait $pid
	rc=$?
	kill $dog 2>/dev/null
	wait $dog 2>/dev/null
}

vmm_guest_line() {
	# (Firmware's screen codes may precede the guest's line.)
	local line=$(grep -a 'RKVM-VMM-GUEST' $1 | tr -d '\r' | sed 's/.*RKVM-VMM-GUEST/RKVM-VMM-GUEST/')
	cpus=$(echo "$line" | sed -n 's/.* cpus=\([0-9]*\).*/\1/p')
	ticks=$(echo "$line" | sed -n 's/.* ticks=\([0-9]*\).*/\1/p')
}

vmm_counts() { grep -s -a -o 'RKVM-VMM-COUNT [0-9]*' $1 | cut -d' ' -f2; }

#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# rkvm's own VMM on the rust-vmm crates (tools/rkvm-run, in the image's /vmm/bin) boots
# the test kernel as a guest the way Firecracker sets up a microVM: the in-kernel irqchip
# and PIT, COM1 in userspace with its interrupt through an irqfd, an MP table, no
# firmware. The guest's init reports its CPUs and timer interrupts, then resets the
# machine through the i8042, which ends the VMM. On 1 and 2 vCPUs
# (VMM_RKVM_RUN_CPUS, environment or kernel command line, e.g. "1,2"), on /dev/kvm
# (rkvm's device under bench.kvmnode=1 while rkvm is loaded). Each boot's time is
# reported on this machine's clock.
#
# rkvm-stat (/vmm/bin/rkvm-stat) watches each boot from outside the VMM: refreshing
# every 100 ms, it must find the VM with its N vCPUs and see its exits counted and
# their rate; and --once, run until the guest has exits, must print them.
. "${RKVM_TESTS_LIB:-/tests/lib}/tap.sh"
. "${RKVM_TESTS_LIB:-/tests/lib}/vmm.sh"

run=/vmm/bin/rkvm-run
stat=/vmm/bin/rkvm-stat
[ -x $run ] || tap_skip_all "no rkvm-run in this image's /vmm"
[ -x $stat ] || tap_skip_all "no rkvm-stat in this image's /vmm"
configs=$(echo "${VMM_RKVM_RUN_CPUS:-1 2}" | tr , " ")
set -- $configs
tap_plan $(($# * 3))

for n in $configs; do
	out=/tmp/vmm_rkvm_run.$n
	rm -f $out.stat $out.once
	t0=$(vmm_now_ms)
	$run --dev /dev/kvm --kernel /vmm/bzImage --initrd /vmm/initrd --cpus $n --mem 128 \
		--cmdline "console=ttyS0 reboot=k panic=-1 quiet" --stats </dev/null >$out 2>$out.err &
	pid=$!
	$stat --pid $pid --interval 0.1 >$out.stat 2>&1 &
	spid=$!
	(
		until grep -q '^exits [1-9]' $out.once 2>/dev/null; do
			kill -0 $pid 2>/dev/null || break
			$stat --once --pid $pid >$out.once 2>&1
		done
	) &
	opid=$!
	vmm_wait_exit $out
	ms=$(($(vmm_now_ms) - t0))
	wait $spid $opid
	vmm_guest_line $out
	end=$(grep 'rkvm-run: the guest reset' $out.err)
	[ $rc -eq 0 ] && [ "$cpus" = "$n" ] && [ "${ticks:-0}" -gt 0 ] && [ -n "$end" ]
	ok=$?
	[ $ok -eq 0 ] && vmm_learn $ms
	exits=$(sed -n 's/^rkvm-run: stat exits = //p' $out.err)
	tap_ok $ok "rkvm-run --cpus $n: the guest's init ran with $cpus of $n CPUs, $ticks timer interrupts in 100 ms, and reset the machine; exit status $rc after $ms ms, ${exits:-no} exits" ||
		tap_diag "$(tail -25 $out; tail -5 $out.err)"
	# The live view: the VM's header with its vCPUs, and the exits line with the
	# highest total and the highest rate of any refresh.
	header=$(grep -c "^vm $pid [0-9]* vcpus $n " $out.stat)
	total=$(awk '$1 == "exits" && $2 > m { m = $2 } END { print m + 0 }' $out.stat)
	rate=$(awk '$1 == "exits" && $3 > m { m = $3 } END { print m + 0 }' $out.stat)
	[ "$header" -gt 0 ] && [ "$total" -gt 0 ] && [ "$rate" -gt 0 ]
	tap_ok $? "rkvm-stat --pid: $header refreshes showed the VM with $n vCPUs; exits up to $total, at up to $rate per second" ||
		tap_diag "$(head -30 $out.stat)"
	once=$(sed -n 's/^exits //p' $out.once)
	grep -q "^vm $pid [0-9]* vcpus $n hv " $out.once && [ "${once:-0}" -gt 0 ]
	tap_ok $? "rkvm-stat --once: the VM with $n vCPUs and ${once:-no} exits" ||
		tap_diag "$(head -30 $out.once)"
done
tap_done

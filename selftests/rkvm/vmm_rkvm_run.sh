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
. "${RKVM_TESTS_LIB:-/tests/lib}/tap.sh"
. "${RKVM_TESTS_LIB:-/tests/lib}/vmm.sh"

run=/vmm/bin/rkvm-run
[ -x $run ] || tap_skip_all "no rkvm-run in this image's /vmm"
configs=$(echo "${VMM_RKVM_RUN_CPUS:-1 2}" | tr , " ")
set -- $configs
tap_plan $#

for n in $configs; do
	out=/tmp/vmm_rkvm_run.$n
	t0=$(vmm_now_ms)
	$run --dev /dev/kvm --kernel /vmm/bzImage --initrd /vmm/initrd --cpus $n --mem 128 \
		--cmdline "console=ttyS0 reboot=k panic=-1 quiet" --stats </dev/null >$out 2>$out.err &
	pid=$!
	vmm_wait $out false
	ms=$(($(vmm_now_ms) - t0))
	vmm_guest_line $out
	end=$(grep 'rkvm-run: the guest reset' $out.err)
	[ $rc -eq 0 ] && [ "$cpus" = "$n" ] && [ "${ticks:-0}" -gt 0 ] && [ -n "$end" ]
	ok=$?
	[ $ok -eq 0 ] && vmm_learn $ms
	exits=$(sed -n 's/^rkvm-run: stat exits = //p' $out.err)
	tap_ok $ok "rkvm-run --cpus $n: the guest's init ran with $cpus of $n CPUs, $ticks timer interrupts in 100 ms, and reset the machine; exit status $rc after $ms ms, ${exits:-no} exits" ||
		tap_diag "$(tail -25 $out; tail -5 $out.err)"
done
tap_done

#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# A real VMM on the hypervisor: Debian's QEMU (7.2, from the image's /vmm, see
# tools/bench/vmm.sh) boots the test kernel as a guest, whose init reports how many
# CPUs came online and how many timer interrupts it took in 100 ms, then reboots (QEMU
# runs with -no-reboot, so it exits). QEMU opens /dev/kvm: the image runs this test with
# bench.kvmnode=1, so that is rkvm's device while rkvm is loaded.
#
# Configurations (in this order; see testing.rst for the stall an other order showed): the
# in-kernel irqchip (kernel-irqchip=on: PIC, I/O APIC and PIT in the
# hypervisor) and the split one, with -cpu host and no other CPU flag, on 1 and 2 vCPUs;
# QEMU's userspace irqchip (kernel-irqchip=off) with -cpu qemu64, since QEMU 7.2 with
# -cpu host there stops at MSR_KVM_POLL_CONTROL on KVM itself. Each boot's time is
# reported on this machine's clock (an emulator's guest clock under the bench).
#
# VMM_QEMU_CONFIGS (environment or kernel command line) restricts the list, e.g.
# "on:1,split:2".
. "${RKVM_TESTS_LIB:-/tests/lib}/tap.sh"

qemu=/vmm/bin/qemu-system-x86_64
[ -x $qemu ] || tap_skip_all "no /vmm payload in this image"
[ -c /dev/kvm ] || tap_skip_all "no /dev/kvm (run with bench.kvmnode=1)"
configs=$(echo "${VMM_QEMU_CONFIGS:-off:1 on:1 split:1 on:2 split:2}" | tr , " ")
set -- $configs
tap_plan $#

now_ms() { echo $(($(cut -d' ' -f1 /proc/uptime | tr -d .) * 10)); }

for c in $configs; do
	irqchip=${c%%:*} n=${c##*:}
	cpu=host
	[ "$irqchip" = off ] && cpu=qemu64
	out=/tmp/vmm_qemu.$irqchip.$n
	t0=$(now_ms)
	$qemu -L /vmm/share -machine pc,accel=kvm,kernel-irqchip=$irqchip \
		-cpu $cpu -smp $n -m 160 -nodefaults -nographic -no-reboot -serial stdio \
		-kernel /vmm/bzImage -initrd /vmm/initrd \
		-append "console=ttyS0 panic=-1 quiet" </dev/null >$out 2>&1 &
	pid=$!
	# Up to 120 s: then the hypervisor's view of the stuck VMM goes to the log.
	i=0
	while kill -0 $pid 2>/dev/null && [ $i -lt 1200 ]; do
		usleep 100000
		i=$((i + 1))
	done
	if kill -0 $pid 2>/dev/null; then
		tap_diag "QEMU still runs after 120 s; its threads (state, wchan, syscall):"
		for t in /proc/$pid/task/*; do
			tap_diag "  $(cut -d' ' -f2-3 $t/stat) $(cat $t/wchan 2>/dev/null) $(cut -d' ' -f1-3 $t/syscall 2>/dev/null)"
		done
		for f in /sys/kernel/debug/kvm/*-*/* /sys/kernel/debug/rkvm/*-*/*; do
			[ -f "$f" ] && tap_diag "  ${f#/sys/kernel/debug/} $(cat $f 2>/dev/null | head -1)"
		done
		kill -9 $pid
		rc=137
	else
		wait $pid
		rc=$?
	fi
	ms=$(($(now_ms) - t0))
	# (SeaBIOS's screen codes may precede the guest's line.)
	line=$(grep -a 'RKVM-VMM-GUEST' $out | tr -d '\r' | sed 's/.*RKVM-VMM-GUEST/RKVM-VMM-GUEST/')
	cpus=$(echo "$line" | sed -n 's/.* cpus=\([0-9]*\).*/\1/p')
	ticks=$(echo "$line" | sed -n 's/.* ticks=\([0-9]*\).*/\1/p')
	[ $rc -eq 0 ] && [ "$cpus" = "$n" ] && [ "${ticks:-0}" -gt 0 ]
	tap_ok $? "kernel-irqchip=$irqchip -cpu $cpu -smp $n: the guest's init ran with $cpus of $n CPUs, $ticks timer interrupts in 100 ms; QEMU exit status $rc after $ms ms" ||
		tap_diag "$(tail -25 $out)"
done
tap_done

#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# A real VMM on the hypervisor: Debian's QEMU (7.2, from the image's /vmm, see
# tools/bench/vmm.sh) boots the test kernel as a guest, whose init reports how many
# CPUs came online and how many timer interrupts it took in 100 ms, then reboots (QEMU
# runs with -no-reboot, so it exits). QEMU opens /dev/kvm: the image runs this test with
# bench.kvmnode=1, so that is rkvm's device while rkvm is loaded.
#
# Configurations: the in-kernel irqchip (kernel-irqchip=on: PIC, I/O APIC and PIT in the
# hypervisor) and the split one, with -cpu host and no other CPU flag, on 1 and 2 vCPUs;
# QEMU's userspace irqchip (kernel-irqchip=off) with -cpu qemu64, since QEMU 7.2 with
# -cpu host there stops at MSR_KVM_POLL_CONTROL on KVM itself; and "migrate": a guest
# that counts (one line per 100 ms) is saved by QEMU's migrate to a file while it runs,
# and a second QEMU started with -incoming from that file goes on counting from there.
# Each boot's time is reported on this machine's clock (an emulator's guest clock under
# the bench).
#
# VMM_QEMU_CONFIGS (environment or kernel command line) restricts the list, e.g.
# "on:1,split:2,migrate:1".
. "${RKVM_TESTS_LIB:-/tests/lib}/tap.sh"
. "${RKVM_TESTS_LIB:-/tests/lib}/vmm.sh"

qemu=/vmm/bin/qemu-system-x86_64
[ -x $qemu ] || tap_skip_all "no QEMU in this image's /vmm"
configs=$(echo "${VMM_QEMU_CONFIGS:-off:1 on:1 split:1 on:2 split:2 migrate:1}" | tr , " ")
set -- $configs
tap_plan $#
mon=/tmp/vmm_qemu.mon

# qemu_start OUT IRQCHIP CPU N APPEND [QEMU ARGS...]: starts QEMU in the background, its
# serial console in OUT and its monitor reading the FIFO $mon.in and writing the file
# $mon.out (QEMU's pipe backend opens both read-write: a plain file takes the output);
# sets $pid.
qemu_start() {
	local out=$1 irqchip=$2 cpu=$3 n=$4 append=$5
	shift 5
	rm -f $mon.in $mon.out
	# Emptied here, not only by QEMU's redirection in the background: a wait that looks
	# at OUT before QEMU starts must not see the other hypervisor's run's console (its
	# counts made a migration's wait end before the loaded guest had printed anything).
	: >$out
	mkfifo $mon.in
	: >$mon.out
	$qemu -L /vmm/share -machine pc,accel=kvm,kernel-irqchip=$irqchip \
		-cpu $cpu -smp $n -m 160 -nodefaults -nographic -no-reboot -serial stdio \
		-chardev pipe,id=mon,path=$mon -mon chardev=mon,mode=readline \
		-kernel /vmm/bzImage -initrd /vmm/initrd \
		-append "console=ttyS0 panic=-1 quiet $append" "$@" </dev/null >$out 2>&1 &
	pid=$!
}

# monitor CMD: QEMU's answer to a monitor command: what it wrote after the command until
# its next prompt, or in 2 s. Writing to the FIFO would block with QEMU gone (nobody
# holds it open then): hence the timeout.
monitor() {
	local before=$(wc -c <$mon.out) i=0
	echo "$1" | timeout 2 sh -c "cat >$mon.in" 2>/dev/null
	while [ $i -lt 20 ]; do
		[ $(wc -c <$mon.out) -gt $((before + ${#1})) ] &&
			[ "$(tail -c 7 $mon.out)" = "(qemu) " ] && break
		usleep 100000
		i=$((i + 1))
	done
	# (Less the line editor's echo of the command.)
	tail -c +$((before + 1)) $mon.out | tr -d '\r\033' | sed 's/.*\[K//'
}

# The stuck VM's state, as QEMU and the hypervisor see it.
vmm_diag() {
	tap_diag "the guest's console:"
	tap_diag "$(tail -15 $1)"
	for cmd in "info registers -a" "info lapic" "info pic" "info irq" "info migrate"; do
		monitor "$cmd" | while read -r l; do tap_diag "  mon: $l"; done
	done
	vmm_threads
}

boot() {
	local irqchip=$1 n=$2 cpu=host out=/tmp/vmm_qemu.$1.$2
	[ "$irqchip" = off ] && cpu=qemu64
	local t0=$(vmm_now_ms)
	qemu_start $out $irqchip $cpu $n ""
	vmm_wait_exit $out
	local ms=$(($(vmm_now_ms) - t0))
	vmm_guest_line $out
	[ $rc -eq 0 ] && [ "$cpus" = "$n" ] && [ "${ticks:-0}" -gt 0 ]
	local ok=$?
	[ $ok -eq 0 ] && vmm_learn $ms
	tap_ok $ok "kernel-irqchip=$irqchip -cpu $cpu -smp $n: the guest's init ran with $cpus of $n CPUs, $ticks timer interrupts in 100 ms; QEMU exit status $rc after $ms ms" ||
		tap_diag "$(cat $out)"
}

# The guest counts on the in-kernel irqchip; QEMU saves it to a file while it runs (the
# guest's memory is copied while the guest writes to it, so dirty logging takes part),
# then a new QEMU loads it and the count goes on.
migrate() {
	local n=$1 out=/tmp/vmm_qemu.migrate file=/tmp/vmm_qemu.state
	local why="" last=0 first=0 after=0 size=0
	rm -f $file
	qemu_start $out.src on host $n vmm.count=1
	vmm_wait $out.src '[ "$(vmm_counts $out.src | tail -1)" -ge 3 ] 2>/dev/null'
	[ $rc -eq 0 ] || why="the source guest did not count to 3 (QEMU status $rc)"
	if [ -z "$why" ]; then
		monitor "migrate \"exec:cat >$file\"" >/dev/null
		vmm_wait $out.src 'monitor "info migrate" | grep -q "Migration status: \(completed\|failed\)"'
		monitor "info migrate" | grep -q "Migration status: completed" ||
			why="the migration did not complete (QEMU status $rc)"
		last=$(vmm_counts $out.src | tail -1)
		size=$(wc -c <$file)
		monitor quit >/dev/null
		kill -9 $pid 2>/dev/null
		wait $pid
	fi
	if [ -z "$why" ]; then
		qemu_start $out.dst on host $n vmm.count=1 -incoming "exec:cat $file"
		vmm_wait $out.dst '[ "$(vmm_counts $out.dst | wc -l)" -ge 3 ] 2>/dev/null'
		[ $rc -eq 0 ] || why="the loaded guest did not count 3 times (QEMU status $rc)"
		first=$(vmm_counts $out.dst | head -1)
		after=$(vmm_counts $out.dst | sed -n 3p)
		monitor quit >/dev/null
		kill -9 $pid 2>/dev/null
		wait $pid
	fi
	# The first line after the load continues the count (the line in flight at the
	# migration may be lost, or printed twice).
	if [ -z "$why" ] && { [ "${first:-0}" -lt "$last" ] || [ "$first" -gt $((last + 2)) ] ||
		[ "${after:-0}" -ne $((first + 2)) ]; }; then
		why="the count went $last before, then $first, $after after the load"
	fi
	tap_ok $([ -z "$why" ]; echo $?) "migrate -smp $n: the guest counted to $last, was saved ($size bytes) and loaded, and counted on: $first, $after${why:+: $why}" || {
		tap_diag "source: $(tail -5 $out.src)"
		tap_diag "loaded: $(tail -5 $out.dst 2>/dev/null)"
	}
}

for c in $configs; do
	case ${c%%:*} in
	migrate) migrate ${c##*:} ;;
	*) boot ${c%%:*} ${c##*:} ;;
	esac
done
tap_done

#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# The global statistics in debugfs (kvm_init_debug): /sys/kernel/debug/kvm for KVM,
# /sys/kernel/debug/rkvm for rkvm. Every stat name of KVM's x86 VM and vCPU stats
# (KVM_GENERIC_VM_STATS + kvm_vm_stats_desc, KVM_GENERIC_VCPU_STATS + kvm_vcpu_stats_desc
# in include/linux/kvm_host.h and arch/x86/kvm/x86.c) that rkvm also counts must be a file
# there, and every file there must read as one non-negative decimal integer. Extra files
# (KVM's per-VM directories, ...) are allowed. Read once with no VM and once with a VM
# open. rkvm leaves out the stats whose event cannot happen in it (shadow paging, nested
# virtualization, s390's invalid wake-ups, INVLPG exits, lockless and MMIO-cache faults):
# on rkvm they must be absent, on KVM present.
#
# Environment (from /init): RKVM_HV=kvm|rkvm, RKVM_VENDOR=intel|amd.
. "${RKVM_TESTS_LIB:-/tests/lib}/tap.sh"
. "${RKVM_TESTS_LIB:-/tests/lib}/hv.sh"

VM_STATS="remote_tlb_flush remote_tlb_flush_requests pages_4k pages_2m pages_1g
	nx_lpage_splits"
VCPU_STATS="halt_successful_poll halt_attempted_poll halt_wakeup
	halt_poll_success_ns halt_poll_fail_ns halt_wait_ns halt_poll_success_hist
	halt_poll_fail_hist halt_wait_hist blocking
	pf_taken pf_fixed pf_emulate pf_spurious pf_guest
	tlb_flush exits io_exits mmio_exits signal_exits irq_window_exits
	nmi_window_exits l1d_flush halt_exits request_irq_exits irq_exits host_state_reload
	fpu_reload insn_emulation insn_emulation_fail hypercalls irq_injections nmi_injections
	req_event directed_yield_attempted directed_yield_successful
	preemption_reported preemption_other"
KVM_ONLY="mmu_shadow_zapped mmu_pte_write mmu_pde_zapped mmu_flooded mmu_recycled
	mmu_cache_miss mmu_unsync mmu_shadow_pages max_mmu_rmap_size
	max_mmu_page_hash_collisions halt_poll_invalid pf_fast pf_mmio_spte_created
	invlpg nested_run guest_mode notify_window_exits"

hv=${RKVM_HV:?}
dir=/sys/kernel/debug/$hv
grep -q ' /sys/kernel/debug debugfs' /proc/mounts || tap_skip_all "debugfs is not mounted"
hv_loaded $hv || tap_bail "$hv is not loaded at the start"
tap_plan 7

[ -d $dir ]
tap_ok $? "$dir exists" || tap_done

missing=
for s in $VM_STATS $VCPU_STATS; do
	[ -f $dir/$s ] || missing="$missing $s"
done
[ -z "$missing" ]
tap_ok $? "all $(echo $VM_STATS $VCPU_STATS | wc -w) KVM VM and vCPU stats are files in $dir" ||
	tap_diag "missing:$missing"

# read_all: every regular file in $dir reads as a non-negative integer; 1 check.
read_all() {
	local f v bad= n=0
	for f in $dir/*; do
		[ -f "$f" ] || continue
		n=$((n + 1))
		v=$(cat "$f" 2>&1)
		case $v in
		'' | *[!0-9]*) bad="$bad ${f##*/}='$v'" ;;
		esac
	done
	[ -z "$bad" ] && [ $n -gt 0 ]
	tap_ok $? "$1: each of the $n files in $dir reads as a non-negative integer" ||
		tap_diag "not an integer:$bad"
}

others=
for s in $KVM_ONLY; do
	if [ $hv = rkvm ]; then [ ! -e $dir/$s ] || others="$others $s"
	else [ -f $dir/$s ] || others="$others $s"; fi
done
[ -z "$others" ]
st=$?
if [ $hv = rkvm ]; then
	tap_ok $st "the $(echo $KVM_ONLY | wc -w) stats rkvm cannot count are absent" ||
		tap_diag "present:$others"
else
	tap_ok $st "the $(echo $KVM_ONLY | wc -w) stats rkvm leaves out are files here" ||
		tap_diag "missing:$others"
fi

read_all "no VM"

fifo=/tmp/debugfs_stats.fifo
rm -f $fifo
mkfifo $fifo
# (A file left by the other hypervisor's run would already say "VM created".)
rm -f /tmp/debugfs_stats.hold
hv_probe --hold <$fifo >/tmp/debugfs_stats.hold 2>&1 &
holder=$!
exec 3>$fifo
hv_wait_for "VM created" /tmp/debugfs_stats.hold
tap_ok $? "a VM is open: $(cat /tmp/debugfs_stats.hold)"
read_all "a VM open"
exec 3>&-
wait $holder
tap_ok $? "the VM answered while the stats were read: $(tr '\n' ' ' </tmp/debugfs_stats.hold)"
tap_done

// SPDX-License-Identifier: GPL-2.0

//! `KVM_CHECK_EXTENSION`: what rkvm advertises. A capability appears here only once it
//! works; Documentation/rkvm/api.rst lists the rest and why.

use super::Kvm;
use crate::uapi::*;

/// KVM's default limits, which rkvm shares.
pub(crate) const MAX_VCPUS: u32 = 1024;
pub(crate) const MAX_VCPU_IDS: u32 = 4096;
/// KVM_CAP_X2APIC_API flags rkvm honours: 32-bit IDs and disabling the broadcast quirk
/// (not the suppress-EOI-broadcast controls, which need EOI exits to a userspace I/O APIC).
pub(crate) const X2APIC_API_FLAGS: u64 =
    (RKVM_X2APIC_API_USE_32BIT_IDS | RKVM_X2APIC_API_DISABLE_BROADCAST_QUIRK) as u64;

/// The answer to KVM_CHECK_EXTENSION(`cap`), on the system fd (`vm` = None) or a VM fd.
pub(crate) fn check_extension(k: &Kvm, vm: Option<&super::vm::Vm>, cap: usize) -> isize {
    let Ok(cap) = u32::try_from(cap) else {
        return 0;
    };
    match cap {
        // System ioctls.
        KVM_CAP_GET_MSR_FEATURES
        | KVM_CAP_EXT_CPUID
        | KVM_CAP_EXT_EMUL_CPUID
        | KVM_CAP_SYS_ATTRIBUTES => 1,
        KVM_CAP_NR_VCPUS => crate::sys::cpu::num_online().min(MAX_VCPUS) as isize,
        KVM_CAP_MAX_VCPUS => MAX_VCPUS as isize,
        KVM_CAP_MAX_VCPU_ID => MAX_VCPU_IDS as isize,
        KVM_CAP_VM_TYPES => 1 << KVM_X86_DEFAULT_VM,
        KVM_CAP_CHECK_EXTENSION_VM | KVM_CAP_HALT_POLL => 1,
        KVM_CAP_VM_DISABLE_NX_HUGE_PAGES => 1,
        // VMs, vCPUs and guest memory.
        KVM_CAP_USER_MEMORY
        | KVM_CAP_USER_MEMORY2
        | KVM_CAP_SET_TSS_ADDR
        | KVM_CAP_SET_IDENTITY_MAP_ADDR
        | KVM_CAP_DESTROY_MEMORY_REGION_WORKS
        | KVM_CAP_JOIN_MEMORY_REGIONS_WORKS
        | KVM_CAP_READONLY_MEM
        | KVM_CAP_SYNC_MMU
        | KVM_CAP_MP_STATE => 1,
        // Two-dimensional paging is always on (EPT).
        KVM_CAP_PRE_FAULT_MEMORY => 1,
        KVM_CAP_NR_MEMSLOTS => super::memslot::USER_MEM_SLOTS as isize,
        KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 => KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE as isize,
        // x86 orders stores (TSO), so both ring flavours are the same ring.
        KVM_CAP_DIRTY_LOG_RING | KVM_CAP_DIRTY_LOG_RING_ACQ_REL => super::dirty_ring::MAX_BYTES,
        // vCPU state.
        KVM_CAP_DEBUGREGS
        | KVM_CAP_XCRS
        | KVM_CAP_VCPU_EVENTS
        | KVM_CAP_INTR_SHADOW
        | KVM_CAP_SET_GUEST_DEBUG
        | KVM_CAP_SREGS2
        | KVM_CAP_IMMEDIATE_EXIT
        | KVM_CAP_INTERNAL_ERROR_DATA => 1,
        KVM_CAP_XSAVE => i32::from(crate::sys::cpu::boot_cpu_has(
            crate::sys::cpu::Feature::Xsave,
        )) as isize,
        KVM_CAP_XSAVE2 => super::vcpu::xsave2_size(k) as isize,
        KVM_CAP_SYNC_REGS => {
            (KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS | KVM_SYNC_X86_EVENTS) as isize
        }
        KVM_CAP_GET_TSC_KHZ => 1,
        // KVM_SET_TSC_KHZ (vCPU, and VM before its vCPUs) at any rate: with TSC scaling.
        KVM_CAP_TSC_CONTROL | KVM_CAP_VM_TSC_CONTROL => isize::from(k.backend.tsc_scaling()),
        // KVM_NMI on the vCPU fd.
        KVM_CAP_USER_NMI => 1,
        // Single-stepping with KVM_GUESTDBG_SINGLESTEP does not show userspace a TF it
        // did not set (VMX steps with the monitor trap flag; SVM's TF is taken out of
        // RFLAGS again) and ends after instructions rkvm completes itself, as KVM's.
        KVM_CAP_X86_ROBUST_SINGLESTEP => 1,
        KVM_CAP_MCE => crate::x86::mce::MAX_BANKS as isize,
        // KVM_GET/SET_ONE_REG of MSRs, KVM_GET_REG_LIST (empty without CET).
        KVM_CAP_ONE_REG => 1,
        // The in-kernel local APIC (userspace keeps the PIC and I/O APIC).
        KVM_CAP_SPLIT_IRQCHIP | KVM_CAP_SIGNAL_MSI | KVM_CAP_TSC_DEADLINE_TIMER => 1,
        // KVM_CREATE_IRQCHIP: PIC and I/O APIC in the kernel too; KVM_IRQ_LINE_STATUS.
        KVM_CAP_IRQCHIP | KVM_CAP_IRQ_INJECT_STATUS => 1,
        // The in-kernel PIT (KVM_CREATE_PIT2, KVM_GET/SET_PIT2, KVM_REINJECT_CONTROL).
        KVM_CAP_PIT | KVM_CAP_PIT2 | KVM_CAP_PIT_STATE2 | KVM_CAP_REINJECT_CONTROL => 1,
        KVM_CAP_SET_BOOT_CPU_ID | KVM_CAP_BINARY_STATS_FD => 1,
        KVM_CAP_X2APIC_API => X2APIC_API_FLAGS as isize,
        KVM_CAP_X86_USER_SPACE_MSR | KVM_CAP_X86_MSR_FILTER => 1,
        KVM_CAP_COALESCED_MMIO => KVM_COALESCED_MMIO_PAGE_OFFSET as isize,
        KVM_CAP_COALESCED_PIO => 1,
        KVM_CAP_IRQ_ROUTING => super::irq::MAX_IRQ_ROUTES as isize,
        KVM_CAP_IRQFD | KVM_CAP_IOEVENTFD | KVM_CAP_IOEVENTFD_ANY_LENGTH => 1,
        // KVM_SET_VAPIC_ADDR and KVM_TPR_ACCESS_REPORTING.
        KVM_CAP_VAPIC => 1,
        // KVM_IRQFD_FLAG_RESAMPLE (with the in-kernel I/O APIC and PIC).
        KVM_CAP_IRQFD_RESAMPLE => 1,
        KVM_CAP_VCPU_ATTRIBUTES | KVM_CAP_EXIT_ON_EMULATION_FAILURE => 1,
        KVM_CAP_MSR_PLATFORM_INFO | KVM_CAP_DISABLE_QUIRKS => 1,
        // rkvm has no paravirtual MSRs (they #GP either way); the hypercalls check it.
        KVM_CAP_ENFORCE_PV_FEATURE_CPUID => 1,
        // kvmclock: the KVM_GET_CLOCK flags rkvm can report.
        KVM_CAP_ADJUST_CLOCK => (KVM_CLOCK_REALTIME | KVM_CLOCK_HOST_TSC) as isize,
        KVM_CAP_KVMCLOCK_CTRL => 1,
        KVM_CAP_DISABLE_QUIRKS2 => crate::x86::quirks::SUPPORTED as isize,
        // On a VM fd: the VM's current value.
        KVM_CAP_X86_APIC_BUS_CYCLES_NS => vm.map_or(crate::x86::lapic::BUS_CYCLE_NS_DEFAULT, |v| {
            v.apic_bus_cycle_ns
                .load(core::sync::atomic::Ordering::Relaxed)
        }) as isize,
        _ => 0,
    }
}

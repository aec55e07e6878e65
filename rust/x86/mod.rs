// SPDX-License-Identifier: GPL-2.0

//! x86 common code (the part of KVM in `arch/x86/kvm/x86.c`): the backend interface,
//! architecture init (`kvm_arch_init`), CPUID and MSR tables, user-return MSRs, the MMU's
//! module state, the timer and the local APIC defaults.

pub(crate) mod backend;
pub(crate) mod cpuid;
pub(crate) mod emulate;
pub(crate) mod events;
pub(crate) mod exit;
pub(crate) mod fpu;
pub(crate) mod hostdbg;
pub(crate) mod ibpb;
pub(crate) mod insn;
pub(crate) mod ioapic;
pub(crate) mod lapic;
pub(crate) mod mce;
pub(crate) mod mmu;
pub(crate) mod msr_access;
pub(crate) mod msrs;
pub(crate) mod pic;
pub(crate) mod pit;
pub(crate) mod quirks;
pub(crate) mod state;
pub(crate) mod stats;
pub(crate) mod tdp;
pub(crate) mod tsc;
pub(crate) mod uret;
pub(crate) mod validate;

use crate::sys::cpu::{self, Feature};
use crate::sys::kmem::KmemCache;
use kernel::prelude::*;

pub(crate) use backend::{RunCtx, VcpuOps, X86Ops};

/// The guest FPU state as kept in the `x86_fpu` cache: an XSAVE area, 64-byte aligned, of
/// the size the supported XSAVE components need (the cache's object size).
#[repr(C, align(64))]
#[derive(FromBytes, IntoBytes)]
pub(crate) struct GuestFpu {
    /// The legacy region (x87, SSE) and the XSAVE header; the rest follows in the object.
    pub(crate) legacy_and_header: [u8; 576],
}

/// Scratch state of the instruction decoder used for MMIO exits (the seed's
/// `x86_emulator` cache object).
#[derive(Default)]
pub(crate) struct EmulateCtxt {
    /// The instruction bytes fetched from the guest.
    pub(crate) insn: [u8; 15],
}

/// Host timing facts (the seed's `kvm_timer_init`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timer {
    /// TSC frequency in kHz (KVM_GET_TSC_KHZ).
    pub(crate) tsc_khz: u32,
}

/// Local APIC defaults (the seed's `kvm_lapic_init`): the reset value of IA32_APIC_BASE
/// that vCPUs start with. The local APIC itself is per vCPU ([`lapic::Lapic`]), present
/// when the VM enabled `KVM_CAP_SPLIT_IRQCHIP`; otherwise the VMM provides one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LapicDefaults {
    /// Default APIC base address with the global-enable bit.
    pub(crate) apic_base: u64,
    /// IA32_APIC_BASE.BSP, set for vCPU 0 only.
    pub(crate) bsp: u64,
}

/// Architecture state built by `kvm_arch_init` and `kvm_arch_hardware_setup`.
pub(crate) struct Arch {
    pub(crate) fpu_cache: KmemCache<GuestFpu>,
    /// Bytes of the guest XSAVE area.
    pub(crate) fpu_size: u32,
    pub(crate) emulator_cache: KmemCache<EmulateCtxt>,
    pub(crate) uret: uret::UserReturnMsrs,
    pub(crate) mmu: mmu::MmuModule,
    pub(crate) timer: Timer,
    pub(crate) lapic: LapicDefaults,
}

/// Host physical address width (CPUID.0x80000008:EAX[7:0]).
pub(crate) fn host_phys_bits() -> u32 {
    if cpu::cpuid(0x8000_0000, 0)[0] >= 0x8000_0008 {
        cpu::cpuid(0x8000_0008, 0)[0] & 0xff
    } else {
        36
    }
}

/// The common part of `kvm_arch_init`'s checks (4.1.1 in the seed), after the backend's
/// own (VMX or SVM present and not disabled by the firmware): FPU and FXSR.
pub(crate) fn check_cpu_support() -> Result {
    if !cpu::boot_cpu_has(Feature::Fpu) || !cpu::boot_cpu_has(Feature::Fxsr) {
        pr_err!("inadequate FPU support (FPU and FXSR are required)\n");
        return Err(EOPNOTSUPP);
    }
    Ok(())
}

/// `kmem_cache_create("x86_fpu")`: guest XSAVE areas sized for the supported components.
pub(crate) fn fpu_cache_create() -> Result<(KmemCache<GuestFpu>, u32)> {
    let size = if cpu::boot_cpu_has(Feature::Xsave) {
        cpuid::xsave_size(cpuid::supported_xcr0())
    } else {
        512 + 64
    };
    let bytes = usize::try_from(size).map_err(|_| EINVAL)?;
    // The whole area may be copied to and from userspace (KVM_GET/SET_XSAVE).
    let cache = KmemCache::new(c"rkvm_x86_fpu", bytes, 64, (0, bytes))?;
    Ok((cache, size))
}

/// `kmem_alloc_emulator_cache()`.
pub(crate) fn emulator_cache_create() -> Result<KmemCache<EmulateCtxt>> {
    KmemCache::new(c"rkvm_x86_emulator", size_of::<EmulateCtxt>(), 0, (0, 0))
}

/// `kvm_timer_init()`.
pub(crate) fn timer_init() -> Result<Timer> {
    let tsc_khz = cpu::tsc_khz();
    if tsc_khz == 0 {
        pr_err!("the host TSC frequency is unknown\n");
        return Err(EINVAL);
    }
    if !cpu::boot_cpu_has(Feature::ConstantTsc) {
        pr_warn!("the host TSC is not constant: guest TSC rates follow the host's\n");
    }
    Ok(Timer { tsc_khz })
}

/// `kvm_lapic_init()`.
pub(crate) fn lapic_init() -> LapicDefaults {
    LapicDefaults {
        apic_base: lapic::base::DEFAULT | lapic::base::EN,
        bsp: lapic::base::BSP,
    }
}

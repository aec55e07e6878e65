// SPDX-License-Identifier: GPL-2.0

//! RDMSR and WRMSR on the software vCPU state (KVM's `kvm_get_msr_common` and
//! `kvm_set_msr_common`): what the guest, or userspace through KVM_GET/SET_MSRS, reads and
//! writes, with the checks a real CPU makes (#GP for the guest, an error for userspace).
//! The machine-check MSRs are [`super::mce`]'s.

use super::mce::Mce;
use super::state::{efer, VcpuState};
use crate::sys::msr::index;

/// Valid PAT: every byte a defined memory type.
fn pat_valid(v: u64) -> bool {
    v.to_le_bytes()
        .iter()
        .all(|&b| matches!(b, 0 | 1 | 4 | 5 | 6 | 7))
}

/// Host-side facts MSR emulation needs.
pub(crate) struct MsrEnv<'a> {
    pub(crate) host_tsc: u64,
    pub(crate) cpuid: &'a [crate::uapi::kvm_cpuid_entry2],
    pub(crate) arch_capabilities: u64,
    /// KVM_SET_MSRS / KVM_GET_MSRS rather than the guest.
    pub(crate) host_initiated: bool,
    /// KVM_CAP_MSR_PLATFORM_INFO: the guest may read MSR_PLATFORM_INFO.
    pub(crate) platform_info_readable: bool,
    /// The VM's disabled quirks.
    pub(crate) quirks: super::quirks::Quirks,
    /// With KVM_CAP_ENFORCE_PV_FEATURE_CPUID: the guest's KVM_CPUID_FEATURES EAX.
    pub(crate) pv_features: Option<u32>,
}

impl MsrEnv<'_> {
    /// Whether the guest has paravirtual feature `bit` (always, unless enforced).
    pub(crate) fn pv_has(&self, bit: u32) -> bool {
        self.pv_features.is_none_or(|f| f & (1 << bit) != 0)
    }

    /// MSR_KVM_STEAL_TIME exists: the kernel accounts run delays, and the guest may.
    fn has_steal_time(&self) -> bool {
        crate::sys::cpu::sched_info_on() && self.pv_has(crate::uapi::KVM_FEATURE_STEAL_TIME)
    }
}

/// Whether the guest has IA32_TSC_AUX: its CPUID offers RDTSCP or RDPID (userspace may
/// always reach it, as with KVM).
fn guest_has_tsc_aux(env: &MsrEnv<'_>) -> bool {
    env.host_initiated || super::cpuid::guest_has_rdtscp_or_rdpid(env.cpuid)
}

/// Whether the guest's CPUID offers XSAVES, which brings IA32_XSS.
fn guest_has_xsaves(env: &MsrEnv<'_>) -> bool {
    super::cpuid::guest_has_xsaves(env.cpuid)
}

fn guest_has_lm_and_nx(env: &MsrEnv<'_>) -> (bool, bool) {
    let rt = super::cpuid::Runtime::FEATURES;
    let [_, _, _, d] = super::cpuid::guest_cpuid(env.cpuid, 0x8000_0001, 0, rt);
    (d & (1 << 29) != 0, d & (1 << 20) != 0)
}

/// MSRs whose guest writes change nothing but their own field of the vCPU state, a field
/// no backend loads into the hardware and nothing else reads until the guest's next
/// access or an ioctl: a backend may finish such a write during its run.
pub(crate) fn write_is_local(m: u32) -> bool {
    matches!(
        m,
        index::IA32_MISC_ENABLE
            | index::IA32_MCG_STATUS
            | index::IA32_UCODE_REV
            | index::K7_HWCR
            | index::MISC_FEATURES_ENABLES
            | index::IA32_POWER_CTL
            | index::MTRR_DEF_TYPE
            | index::MTRR_PHYS_BASE0..=index::MTRR_PHYS_MASK7
            | index::MTRR_FIX64K_00000
            | index::MTRR_FIX16K_80000
            | index::MTRR_FIX16K_A0000
            | index::MTRR_FIX4K_C0000..=index::MTRR_FIX4K_F8000
    ) || Mce::owns(m)
}

/// RDMSR; `None` for an MSR the guest does not have (#GP).
pub(crate) fn get_msr(s: &VcpuState, env: &MsrEnv<'_>, m: u32) -> Option<u64> {
    let r = &s.msrs;
    Some(match m {
        index::IA32_TSC => s.tsc_rate.scale(env.host_tsc).wrapping_add(s.tsc_offset),
        index::IA32_TSC_ADJUST => r.tsc_adjust,
        index::EFER => s.efer,
        index::STAR => r.star,
        index::LSTAR => r.lstar,
        index::CSTAR => r.cstar,
        index::SYSCALL_MASK => r.sfmask,
        index::KERNEL_GS_BASE => r.kernel_gs_base,
        index::FS_BASE => s.segs[super::state::FS].base,
        index::GS_BASE => s.segs[super::state::GS].base,
        index::TSC_AUX if guest_has_tsc_aux(env) => r.tsc_aux,
        // rkvm supports no supervisor state component: IA32_XSS holds 0.
        index::IA32_XSS if env.host_initiated || guest_has_xsaves(env) => 0,
        index::IA32_SYSENTER_CS => r.sysenter_cs,
        index::IA32_SYSENTER_ESP => r.sysenter_esp,
        index::IA32_SYSENTER_EIP => r.sysenter_eip,
        index::IA32_CR_PAT => r.pat,
        index::IA32_DEBUGCTL => r.debugctl,
        index::IA32_MISC_ENABLE => r.misc_enable,
        index::IA32_APICBASE => s.apic_base,
        index::IA32_MCG_STATUS => r.mcg_status,
        m if Mce::owns(m) => return r.mce.get(m, env.host_initiated),
        index::IA32_UCODE_REV => r.ucode_rev,
        index::K7_HWCR => r.hwcr,
        index::PLATFORM_INFO if env.host_initiated || env.platform_info_readable => r.platform_info,
        index::MISC_FEATURES_ENABLES => r.misc_features,
        index::IA32_POWER_CTL => r.power_ctl,
        crate::uapi::MSR_KVM_STEAL_TIME if env.has_steal_time() => r.steal_time,
        crate::uapi::MSR_KVM_SYSTEM_TIME if env.pv_has(crate::uapi::KVM_FEATURE_CLOCKSOURCE) => {
            r.kvm_system_time
        }
        crate::uapi::MSR_KVM_SYSTEM_TIME_NEW
            if env.pv_has(crate::uapi::KVM_FEATURE_CLOCKSOURCE2) =>
        {
            r.kvm_system_time
        }
        index::IA32_ARCH_CAPABILITIES => env.arch_capabilities,
        index::IA32_PERF_CAPABILITIES => 0,
        index::IA32_PLATFORM_ID => 0,
        index::MTRR_CAP => 0x500 | 8,
        index::MTRR_DEF_TYPE => r.mtrr_def_type,
        index::MTRR_PHYS_BASE0..=index::MTRR_PHYS_MASK7 => {
            *r.mtrr_var.get((m - index::MTRR_PHYS_BASE0) as usize)?
        }
        index::MTRR_FIX64K_00000 => r.mtrr_fixed[0],
        index::MTRR_FIX16K_80000 => r.mtrr_fixed[1],
        index::MTRR_FIX16K_A0000 => r.mtrr_fixed[2],
        index::MTRR_FIX4K_C0000..=index::MTRR_FIX4K_F8000 => *r
            .mtrr_fixed
            .get((m - index::MTRR_FIX4K_C0000) as usize + 3)?,
        _ => return None,
    })
}

/// WRMSR; `Err` for a write the guest's CPU would reject (#GP).
pub(crate) fn set_msr(
    s: &mut VcpuState,
    env: &MsrEnv<'_>,
    m: u32,
    v: u64,
) -> core::result::Result<(), ()> {
    let canonical = super::validate::canonical_msr_addr;
    match m {
        index::IA32_TSC => {
            // The guest TSC becomes `v`; a guest write also moves TSC_ADJUST.
            let host = s.tsc_rate.scale(env.host_tsc);
            let old = host.wrapping_add(s.tsc_offset);
            s.tsc_offset = v.wrapping_sub(host);
            if !env.host_initiated {
                s.msrs.tsc_adjust = s.msrs.tsc_adjust.wrapping_add(v.wrapping_sub(old));
            }
        }
        index::IA32_TSC_ADJUST => {
            if !env.host_initiated {
                s.tsc_offset = s.tsc_offset.wrapping_add(v.wrapping_sub(s.msrs.tsc_adjust));
            }
            s.msrs.tsc_adjust = v;
        }
        index::EFER => {
            let (lm, nx) = guest_has_lm_and_nx(env);
            // SCE is always writable, whatever CPUID says (as on KVM).
            let mut valid = efer::SCE;
            if lm {
                valid |= efer::LME | efer::LMA;
            }
            if nx {
                valid |= efer::NX;
            }
            if v & !valid != 0 {
                return Err(());
            }
            if !env.host_initiated {
                // LME cannot change with paging on; LMA is the CPU's.
                if s.paging() && (v ^ s.efer) & efer::LME != 0 {
                    return Err(());
                }
                s.efer = v & !efer::LMA | s.efer & efer::LMA;
            } else {
                s.efer = v;
            }
        }
        index::STAR => s.msrs.star = v,
        index::LSTAR | index::CSTAR | index::KERNEL_GS_BASE | index::FS_BASE | index::GS_BASE
            if !canonical(v) =>
        {
            return Err(())
        }
        index::LSTAR => s.msrs.lstar = v,
        index::CSTAR => s.msrs.cstar = v,
        index::SYSCALL_MASK => s.msrs.sfmask = v & 0xffff_ffff,
        index::KERNEL_GS_BASE => s.msrs.kernel_gs_base = v,
        index::FS_BASE => s.segs[super::state::FS].base = v,
        index::GS_BASE => s.segs[super::state::GS].base = v,
        index::TSC_AUX => {
            if !guest_has_tsc_aux(env) || v >> 32 != 0 {
                return Err(());
            }
            s.msrs.tsc_aux = v;
        }
        index::IA32_XSS => {
            // Every bit names a component rkvm does not support (as KVM without CET).
            if !guest_has_xsaves(env) || v != 0 {
                return Err(());
            }
        }
        index::IA32_SYSENTER_CS => s.msrs.sysenter_cs = v & 0xffff_ffff,
        // Made canonical (as KVM does): VM entry checks these fields.
        index::IA32_SYSENTER_ESP => s.msrs.sysenter_esp = super::validate::canonicalize_msr_addr(v),
        index::IA32_SYSENTER_EIP => s.msrs.sysenter_eip = super::validate::canonicalize_msr_addr(v),
        index::IA32_CR_PAT => {
            if !pat_valid(v) {
                return Err(());
            }
            s.msrs.pat = v;
        }
        index::IA32_DEBUGCTL => {
            // Only BTF and LBR are architectural here; rkvm keeps neither active.
            if v & !0x3 != 0 {
                return Err(());
            }
            s.msrs.debugctl = 0;
        }
        index::IA32_MISC_ENABLE => {
            // PEBS_UNAVAILABLE and BTS_UNAVAILABLE are read-only for the guest, and
            // its writes to EMON (bit 7) are dropped; userspace sets anything.
            const RO: u64 = (1 << 12) | (1 << 11);
            const EMON: u64 = 1 << 7;
            let old = s.msrs.misc_enable;
            let v = if env.host_initiated {
                v
            } else if (old ^ v) & RO != 0 {
                return Err(());
            } else {
                v & !EMON | old & EMON
            };
            // With the quirk off, the MWAIT bit enables MONITOR/MWAIT (and shows in
            // CPUID), which needs SSE3 in the guest's CPUID.
            let mwait = super::quirks::MISC_ENABLE_MWAIT;
            if !env.quirks.has(super::quirks::MISC_ENABLE_NO_MWAIT) && (old ^ v) & mwait != 0 {
                let rt = super::cpuid::Runtime::FEATURES;
                let [_, _, c, _] = super::cpuid::guest_cpuid(env.cpuid, 1, 0, rt);
                if c & super::quirks::LEAF1_ECX_SSE3 == 0 {
                    return Err(());
                }
            }
            s.msrs.misc_enable = v;
        }
        index::PLATFORM_INFO => {
            // Userspace only; it cannot withdraw CPUID faulting while the guest uses it.
            let faulting = s.msrs.misc_features & 1 != 0;
            if !env.host_initiated || (v & super::state::PLATFORM_INFO_CPUID_FAULT == 0 && faulting)
            {
                return Err(());
            }
            s.msrs.platform_info = v;
        }
        index::IA32_POWER_CTL => s.msrs.power_ctl = v,
        crate::uapi::MSR_KVM_SYSTEM_TIME | crate::uapi::MSR_KVM_SYSTEM_TIME_NEW => {
            let feature = if m == crate::uapi::MSR_KVM_SYSTEM_TIME {
                crate::uapi::KVM_FEATURE_CLOCKSOURCE
            } else {
                crate::uapi::KVM_FEATURE_CLOCKSOURCE2
            };
            if !env.pv_has(feature) {
                return Err(());
            }
            // Bit 0 enables; the record is written before the vCPU next runs.
            s.msrs.kvm_system_time = v;
        }
        crate::uapi::MSR_KVM_STEAL_TIME => {
            if !env.has_steal_time() || v & u64::from(crate::uapi::KVM_STEAL_RESERVED_MASK) != 0 {
                return Err(());
            }
            s.msrs.steal_time = v;
        }
        index::MISC_FEATURES_ENABLES => {
            if v & !1 != 0
                || (v & 1 != 0
                    && s.msrs.platform_info & super::state::PLATFORM_INFO_CPUID_FAULT == 0)
            {
                return Err(());
            }
            s.msrs.misc_features = v;
        }
        index::K7_HWCR => {
            // Flush-filter disable, IGNNE emulation and TLB cache disable are dropped;
            // McStatusWrEn (18) and TscFreqSel (24) are kept; anything else is #GP.
            let v = v & !((1 << 6) | (1 << 8) | (1 << 3));
            if v & !((1 << 18) | (1 << 24)) != 0 {
                return Err(());
            }
            s.msrs.hwcr = v;
        }
        index::IA32_APICBASE => {
            // Without an in-kernel APIC only the value is kept (KVM checks the same bits).
            if v & 0xffff_fff0_0000_02ff != 0 {
                return Err(());
            }
            s.apic_base = v;
        }
        index::IA32_MCG_STATUS => s.msrs.mcg_status = v,
        m if Mce::owns(m) => {
            let amd = super::cpuid::guest_is_amd_compatible(env.cpuid);
            let hwcr = s.msrs.hwcr;
            return s.msrs.mce.set(m, v, env.host_initiated, amd, hwcr);
        }
        index::IA32_UCODE_REV => {
            if env.host_initiated {
                s.msrs.ucode_rev = v;
            }
        }
        index::IA32_ARCH_CAPABILITIES | index::IA32_PERF_CAPABILITIES => {
            if !env.host_initiated {
                return Err(());
            }
        }
        index::MTRR_DEF_TYPE => {
            if v & !0xcff != 0 {
                return Err(());
            }
            s.msrs.mtrr_def_type = v;
        }
        index::MTRR_PHYS_BASE0..=index::MTRR_PHYS_MASK7 => {
            *s.msrs
                .mtrr_var
                .get_mut((m - index::MTRR_PHYS_BASE0) as usize)
                .ok_or(())? = v;
        }
        index::MTRR_FIX64K_00000 => s.msrs.mtrr_fixed[0] = v,
        index::MTRR_FIX16K_80000 => s.msrs.mtrr_fixed[1] = v,
        index::MTRR_FIX16K_A0000 => s.msrs.mtrr_fixed[2] = v,
        index::MTRR_FIX4K_C0000..=index::MTRR_FIX4K_F8000 => {
            *s.msrs
                .mtrr_fixed
                .get_mut((m - index::MTRR_FIX4K_C0000) as usize + 3)
                .ok_or(())? = v;
        }
        _ => return Err(()),
    }
    Ok(())
}

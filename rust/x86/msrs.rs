// SPDX-License-Identifier: GPL-2.0

//! The three MSR lists of `kvm_init_msr_list()`: `msrs_to_save` (MSRs that need the host
//! to have them, probed with a fault-safe RDMSR), `emulated_msrs` (MSRs rkvm emulates
//! whatever the host has) and `msr_based_features` (MSRs that describe features, readable
//! with KVM_GET_MSRS on /dev/rkvm).
//!
//! Each list holds exactly the MSRs rkvm's vCPUs implement for KVM_GET_MSRS/KVM_SET_MSRS.

use super::X86Ops;
use crate::sys::cpu::{self, Feature};
use crate::sys::msr::{self, index};
use kernel::prelude::*;

/// Candidates for `msrs_to_save`, in KVM's order.
const MSRS_TO_SAVE_ALL: &[u32] = &[
    index::IA32_SYSENTER_CS,
    index::IA32_SYSENTER_ESP,
    index::IA32_SYSENTER_EIP,
    index::STAR,
    index::CSTAR,
    index::KERNEL_GS_BASE,
    index::SYSCALL_MASK,
    index::LSTAR,
    index::IA32_TSC,
    index::IA32_CR_PAT,
    index::TSC_AUX,
    index::IA32_DEBUGCTL,
];

/// Candidates for `emulated_msrs`, in KVM's order.
const EMULATED_MSRS_ALL: &[u32] = &[
    index::IA32_TSC_ADJUST,
    index::IA32_TSC_DEADLINE,
    index::IA32_ARCH_CAPABILITIES,
    index::IA32_PERF_CAPABILITIES,
    index::IA32_MISC_ENABLE,
    index::IA32_MCG_STATUS,
    index::IA32_MCG_CTL,
    index::PLATFORM_INFO,
    index::MISC_FEATURES_ENABLES,
    index::IA32_POWER_CTL,
    index::IA32_UCODE_REV,
    index::K7_HWCR,
];

/// Candidates for `msr_based_features` (besides the VMX MSRs, which only nested VMX would
/// offer).
const MSR_BASED_FEATURES_ALL: &[u32] = &[
    index::IA32_UCODE_REV,
    index::IA32_ARCH_CAPABILITIES,
    index::IA32_PERF_CAPABILITIES,
];

/// Bits of IA32_ARCH_CAPABILITIES rkvm passes to guests: statements that the CPU is not
/// affected by a vulnerability, which stay true inside a guest.
const SUPPORTED_ARCH_CAP: u64 = (1 << 0) // RDCL_NO
    | (1 << 1) // IBRS_ALL
    | (1 << 2) // RSBA
    | (1 << 3) // SKIP_VMENTRY_L1DFLUSH
    | (1 << 4) // SSB_NO
    | (1 << 5) // MDS_NO
    | (1 << 6) // PSCHANGE_MC_NO
    | (1 << 8) // TAA_NO
    | (1 << 13) // SBDR_SSDP_NO
    | (1 << 14) // FBSDP_NO
    | (1 << 15) // PSDP_NO
    | (1 << 17) // FB_CLEAR
    | (1 << 19) // RRSBA
    | (1 << 24) // PBRSB_NO
    | (1 << 26) // GDS_NO
    | (1 << 27); // RFDS_NO

/// The lists, computed once at `hardware_setup`.
pub(crate) struct MsrLists {
    pub(crate) to_save: KVec<u32>,
    pub(crate) emulated: KVec<u32>,
    pub(crate) features: KVec<u32>,
    /// The guest's IA32_ARCH_CAPABILITIES (what KVM_GET_MSRS on /dev/rkvm reports).
    pub(crate) arch_capabilities: u64,
}

impl MsrLists {
    /// `kvm_init_msr_list()`.
    pub(crate) fn init(ops: &dyn X86Ops, rdtscp: bool) -> Result<Self> {
        let mut arch_capabilities = 0;
        if cpu::boot_cpu_has(Feature::ArchCapabilities) {
            arch_capabilities = msr::read(index::IA32_ARCH_CAPABILITIES).unwrap_or(0);
        }
        arch_capabilities &= SUPPORTED_ARCH_CAP;
        // Page-size changes never cause a machine check under EPT (no NX huge page
        // workaround needed), and the L1D flush on entry covers a nested hypervisor.
        arch_capabilities |= 1 << 6;
        if !cpu::boot_cpu_has(Feature::BugL1tf) {
            arch_capabilities |= 1 << 3;
        }

        let mut lists = Self {
            to_save: KVec::new(),
            emulated: KVec::new(),
            features: KVec::new(),
            arch_capabilities,
        };
        for &m in MSRS_TO_SAVE_ALL {
            if m == index::TSC_AUX && !rdtscp {
                continue;
            }
            // A fault-safe read tells whether the host (or the emulator) has the MSR.
            if msr::read(m).is_ok() {
                lists.to_save.push(m, GFP_KERNEL)?;
            }
        }
        // The paravirtual MSRs rkvm has come first, as in KVM's list.
        for m in [
            crate::uapi::MSR_KVM_SYSTEM_TIME,
            crate::uapi::MSR_KVM_WALL_CLOCK,
            crate::uapi::MSR_KVM_SYSTEM_TIME_NEW,
            crate::uapi::MSR_KVM_WALL_CLOCK_NEW,
        ] {
            lists.emulated.push(m, GFP_KERNEL)?;
        }
        if cpu::sched_info_on() {
            lists
                .emulated
                .push(crate::uapi::MSR_KVM_STEAL_TIME, GFP_KERNEL)?;
        }
        for &m in EMULATED_MSRS_ALL {
            if ops.has_emulated_msr(m) {
                lists.emulated.push(m, GFP_KERNEL)?;
            }
        }
        for &m in MSR_BASED_FEATURES_ALL {
            if lists.feature_msr(ops, m).is_some() {
                lists.features.push(m, GFP_KERNEL)?;
            }
        }
        Ok(lists)
    }

    /// `kvm_get_feature_msr()`: the value of a feature MSR, `None` if it is not one.
    pub(crate) fn feature_msr(&self, ops: &dyn X86Ops, m: u32) -> Option<u64> {
        match m {
            index::IA32_ARCH_CAPABILITIES => Some(self.arch_capabilities),
            // No PMU is virtualized, so no performance-monitoring capabilities.
            index::IA32_PERF_CAPABILITIES => Some(0),
            // The microcode revision is in the high half; a host without the MSR reads 0.
            index::IA32_UCODE_REV => Some(msr::read(m).unwrap_or(0)),
            _ => ops.get_feature_msr(m),
        }
    }
}

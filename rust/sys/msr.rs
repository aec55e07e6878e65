// SPDX-License-Identifier: GPL-2.0

//! Model-specific registers.
//!
//! Every access goes through the kernel's exception-table protected `rdmsrq_safe` /
//! `wrmsrq_safe`, so an MSR the CPU (or the emulator) does not model returns an error
//! instead of faulting the host.

use super::ffi;
use kernel::prelude::*;

/// Architectural MSR numbers rkvm uses.
pub(crate) mod index {
    pub(crate) const IA32_TSC: u32 = 0x10;
    pub(crate) const IA32_PLATFORM_ID: u32 = 0x17;
    pub(crate) const IA32_APICBASE: u32 = 0x1b;
    pub(crate) const IA32_FEAT_CTL: u32 = 0x3a;
    pub(crate) const IA32_TSC_ADJUST: u32 = 0x3b;
    pub(crate) const IA32_PRED_CMD: u32 = 0x49;
    pub(crate) const IA32_UCODE_REV: u32 = 0x8b;
    pub(crate) const K7_HWCR: u32 = 0xc001_0015;
    pub(crate) const PLATFORM_INFO: u32 = 0xce;
    pub(crate) const MISC_FEATURES_ENABLES: u32 = 0x140;
    pub(crate) const IA32_POWER_CTL: u32 = 0x1fc;
    pub(crate) const IA32_PERF_CAPABILITIES: u32 = 0x345;
    pub(crate) const IA32_ARCH_CAPABILITIES: u32 = 0x10a;
    pub(crate) const IA32_FLUSH_CMD: u32 = 0x10b;
    pub(crate) const IA32_SYSENTER_CS: u32 = 0x174;
    pub(crate) const IA32_SYSENTER_ESP: u32 = 0x175;
    pub(crate) const IA32_SYSENTER_EIP: u32 = 0x176;
    pub(crate) const IA32_MCG_CAP: u32 = 0x179;
    pub(crate) const IA32_MCG_STATUS: u32 = 0x17a;
    pub(crate) const IA32_MCG_CTL: u32 = 0x17b;
    pub(crate) const IA32_MISC_ENABLE: u32 = 0x1a0;
    pub(crate) const IA32_DEBUGCTL: u32 = 0x1d9;
    pub(crate) const MTRR_CAP: u32 = 0xfe;
    pub(crate) const MTRR_PHYS_BASE0: u32 = 0x200;
    pub(crate) const MTRR_PHYS_MASK7: u32 = 0x20f;
    pub(crate) const MTRR_FIX64K_00000: u32 = 0x250;
    pub(crate) const MTRR_FIX16K_80000: u32 = 0x258;
    pub(crate) const MTRR_FIX16K_A0000: u32 = 0x259;
    pub(crate) const MTRR_FIX4K_C0000: u32 = 0x268;
    pub(crate) const MTRR_FIX4K_F8000: u32 = 0x26f;
    pub(crate) const IA32_CR_PAT: u32 = 0x277;
    pub(crate) const MTRR_DEF_TYPE: u32 = 0x2ff;
    pub(crate) const IA32_VMX_BASIC: u32 = 0x480;
    pub(crate) const IA32_VMX_PINBASED_CTLS: u32 = 0x481;
    pub(crate) const IA32_VMX_PROCBASED_CTLS: u32 = 0x482;
    pub(crate) const IA32_VMX_EXIT_CTLS: u32 = 0x483;
    pub(crate) const IA32_VMX_ENTRY_CTLS: u32 = 0x484;
    pub(crate) const IA32_VMX_MISC: u32 = 0x485;
    pub(crate) const IA32_VMX_CR0_FIXED0: u32 = 0x486;
    pub(crate) const IA32_VMX_CR0_FIXED1: u32 = 0x487;
    pub(crate) const IA32_VMX_CR4_FIXED0: u32 = 0x488;
    pub(crate) const IA32_VMX_CR4_FIXED1: u32 = 0x489;
    pub(crate) const IA32_VMX_PROCBASED_CTLS2: u32 = 0x48b;
    pub(crate) const IA32_VMX_EPT_VPID_CAP: u32 = 0x48c;
    pub(crate) const IA32_VMX_TRUE_PINBASED_CTLS: u32 = 0x48d;
    pub(crate) const IA32_VMX_TRUE_PROCBASED_CTLS: u32 = 0x48e;
    pub(crate) const IA32_VMX_TRUE_EXIT_CTLS: u32 = 0x48f;
    pub(crate) const IA32_VMX_TRUE_ENTRY_CTLS: u32 = 0x490;
    pub(crate) const IA32_VMX_VMFUNC: u32 = 0x491;
    pub(crate) const IA32_XSS: u32 = 0xda0;
    pub(crate) const IA32_TSC_DEADLINE: u32 = 0x6e0;
    pub(crate) const EFER: u32 = 0xc000_0080;
    pub(crate) const STAR: u32 = 0xc000_0081;
    pub(crate) const LSTAR: u32 = 0xc000_0082;
    pub(crate) const CSTAR: u32 = 0xc000_0083;
    pub(crate) const SYSCALL_MASK: u32 = 0xc000_0084;
    pub(crate) const FS_BASE: u32 = 0xc000_0100;
    pub(crate) const GS_BASE: u32 = 0xc000_0101;
    pub(crate) const KERNEL_GS_BASE: u32 = 0xc000_0102;
    pub(crate) const TSC_AUX: u32 = 0xc000_0103;
    pub(crate) const VM_CR: u32 = 0xc001_0114;
    pub(crate) const VM_HSAVE_PA: u32 = 0xc001_0117;
}

/// Reads an MSR; `EIO` if the CPU does not have it.
pub(crate) fn read(msr: u32) -> Result<u64> {
    let mut value = 0u64;
    // SAFETY: `value` is a valid location for the shim to write to; the read itself is
    // fault-safe.
    super::to_result(unsafe { ffi::rkvm_rdmsr_safe(msr, &mut value) })?;
    Ok(value)
}

/// Writes an MSR; `EIO` if the CPU refuses the value or does not have the MSR.
///
/// Only for MSRs whose host value rkvm owns (guest values loaded around VM entry, the
/// L1D flush command, ...): the caller is responsible for what the write means.
pub(crate) fn write(msr: u32, value: u64) -> Result {
    // SAFETY: The write is fault-safe; callers only write MSRs that hold guest state or
    // commands, never ones the host kernel depends on without restoring them.
    super::to_result(unsafe { ffi::rkvm_wrmsr_safe(msr, value) })
}

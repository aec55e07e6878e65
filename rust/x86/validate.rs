// SPDX-License-Identifier: GPL-2.0

//! Checks of values from userspace or from the guest before they can reach the hardware:
//! MSRs holding linear addresses, guest-physical addresses, XCR0 from KVM_SET_XCRS.

use crate::sys::cpu::{self, Feature};
use crate::uapi::kvm_xcrs;
use kernel::prelude::*;

/// Width of the linear addresses WRMSR accepts in MSRs such as LSTAR: 57 bits when the
/// host CPU has 5-level paging, else 48. It depends on the CPU, not on the guest's CR4.LA57,
/// as on hardware (and in KVM).
fn msr_addr_bits() -> u32 {
    if cpu::boot_cpu_has(Feature::La57) {
        57
    } else {
        48
    }
}

/// `v` sign-extended from bit `bits - 1`.
fn sign_extend(v: u64, bits: u32) -> u64 {
    let shift = 64u32.saturating_sub(bits).min(63);
    (((v << shift) as i64) >> shift) as u64
}

/// Whether `v` is a canonical address for an MSR that holds one (FS/GS base,
/// KERNEL_GS_BASE, LSTAR, CSTAR): otherwise WRMSR raises #GP and KVM_SET_MSRS refuses it.
pub(crate) fn canonical_msr_addr(v: u64) -> bool {
    sign_extend(v, msr_addr_bits()) == v
}

/// The canonical form of `v`, for IA32_SYSENTER_ESP/EIP: KVM makes them canonical rather
/// than refusing them (AMD ignores their upper half), so that VM entry never fails on them.
pub(crate) fn canonicalize_msr_addr(v: u64) -> u64 {
    sign_extend(v, msr_addr_bits())
}

/// Whether `gpa` fits the guest's physical-address width `phys_bits` (no bit at or above
/// it set).
pub(crate) fn legal_gpa(gpa: u64, phys_bits: u32) -> bool {
    phys_bits >= 64 || gpa >> phys_bits == 0
}

/// `KVM_SET_XCRS`: the XCR0 it sets, if any. As KVM: the flags must be 0 and at most
/// `KVM_MAX_XCRS` entries given; only the first entry for XCR0 counts (entries for other
/// XCRs are ignored); the value must be a valid XCR0 within `allowed`. Hosts without
/// XSAVE have no XCRs to set.
pub(crate) fn set_xcrs(x: &kvm_xcrs, allowed: u64) -> Result<Option<u64>> {
    if !cpu::boot_cpu_has(Feature::Xsave) {
        return Err(EINVAL);
    }
    if x.nr_xcrs as usize > x.xcrs.len() || x.flags != 0 {
        return Err(EINVAL);
    }
    let Some(e) = x.xcrs.iter().take(x.nr_xcrs as usize).find(|e| e.xcr == 0) else {
        return Ok(None);
    };
    if !crate::x86::cpuid::xcr0_valid(e.value, allowed) {
        return Err(EINVAL);
    }
    Ok(Some(e.value))
}

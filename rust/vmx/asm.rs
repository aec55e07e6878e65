// SPDX-License-Identifier: GPL-2.0

//! The VMX instructions. Every function here is `unsafe`: each one is only sound in the
//! processor state its `# Safety` section names, which the window code in `window.rs`
//! establishes. Failures (VMfailInvalid / VMfailValid) come back as [`VmxFail`].

use core::arch::asm;

/// A failed VMX instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VmxFail {
    /// VMfailInvalid: no current VMCS, or the operand is bad (CF=1).
    Invalid,
    /// VMfailValid: the VM-instruction error field of the current VMCS says why (ZF=1).
    Valid,
}

/// Result of a VMX instruction.
pub(crate) type VmxResult<T = ()> = core::result::Result<T, VmxFail>;

#[inline(always)]
fn check(cf: u8, zf: u8) -> VmxResult {
    if cf != 0 {
        Err(VmxFail::Invalid)
    } else if zf != 0 {
        Err(VmxFail::Valid)
    } else {
        Ok(())
    }
}

/// Enters VMX operation with the VMXON region at `phys`.
///
/// # Safety
///
/// CR4.VMXE is set, IA32_FEATURE_CONTROL allows VMXON outside SMX, CR0/CR4 satisfy the
/// VMX fixed bits, and `phys` is a 4 KiB aligned page holding the VMCS revision id.
#[inline(always)]
pub(crate) unsafe fn vmxon(phys: u64) -> VmxResult {
    let (cf, zf): (u8, u8);
    // SAFETY: The caller guarantees the preconditions above; VMXON reads 8 bytes at the
    // pointer.
    unsafe {
        asm!("vmxon [{p}]", "setc {cf}", "setz {zf}",
             p = in(reg) &phys, cf = out(reg_byte) cf, zf = out(reg_byte) zf,
             options(nostack))
    };
    check(cf, zf)
}

/// Leaves VMX operation.
///
/// # Safety
///
/// The CPU is in VMX root operation (after a successful [`vmxon`]).
#[inline(always)]
pub(crate) unsafe fn vmxoff() -> VmxResult {
    let (cf, zf): (u8, u8);
    // SAFETY: The caller guarantees VMX operation.
    unsafe {
        asm!("vmxoff", "setc {cf}", "setz {zf}",
             cf = out(reg_byte) cf, zf = out(reg_byte) zf, options(nostack))
    };
    check(cf, zf)
}

/// Flushes the VMCS at `phys` to memory and marks it clear (not current, not launched).
///
/// # Safety
///
/// VMX root operation; `phys` is a VMCS region of this module.
#[inline(always)]
pub(crate) unsafe fn vmclear(phys: u64) -> VmxResult {
    let (cf, zf): (u8, u8);
    // SAFETY: The caller guarantees VMX operation and a valid VMCS address.
    unsafe {
        asm!("vmclear [{p}]", "setc {cf}", "setz {zf}",
             p = in(reg) &phys, cf = out(reg_byte) cf, zf = out(reg_byte) zf,
             options(nostack))
    };
    check(cf, zf)
}

/// Makes the VMCS at `phys` current.
///
/// # Safety
///
/// VMX root operation; `phys` is a VMCS region of this module with the right revision id.
#[inline(always)]
pub(crate) unsafe fn vmptrld(phys: u64) -> VmxResult {
    let (cf, zf): (u8, u8);
    // SAFETY: The caller guarantees VMX operation and a valid VMCS address.
    unsafe {
        asm!("vmptrld [{p}]", "setc {cf}", "setz {zf}",
             p = in(reg) &phys, cf = out(reg_byte) cf, zf = out(reg_byte) zf,
             options(nostack))
    };
    check(cf, zf)
}

/// Reads a field of the current VMCS.
///
/// # Safety
///
/// VMX root operation with a current VMCS.
///
/// A failed VMREAD (a field this CPU does not have) leaves its destination alone, so it
/// reads as 0 here without a flag test: this runs tens of times per exit.
#[inline(always)]
pub(crate) unsafe fn vmread(field: u64) -> u64 {
    let mut v = 0u64;
    // SAFETY: The caller guarantees a current VMCS; an unsupported field only fails.
    unsafe {
        asm!("vmread {v}, {f}", f = in(reg) field, v = inout(reg) v,
             options(nostack))
    };
    v
}

/// Writes a field of the current VMCS.
///
/// # Safety
///
/// VMX root operation with a current VMCS, and `value` must keep the VMCS consistent
/// with what the host relies on (host-state fields are only written by the window code).
#[inline(always)]
pub(crate) unsafe fn vmwrite(field: u64, value: u64) -> VmxResult {
    let (cf, zf): (u8, u8);
    // SAFETY: The caller guarantees a current VMCS and a meaningful value.
    unsafe {
        asm!("vmwrite {f}, {v}", "setc {cf}", "setz {zf}",
             f = in(reg) field, v = in(reg) value, cf = out(reg_byte) cf, zf = out(reg_byte) zf,
             options(nostack))
    };
    check(cf, zf)
}

/// INVEPT of the given type (1 = single context, 2 = all contexts).
///
/// # Safety
///
/// VMX root operation, and the CPU supports this INVEPT type.
#[inline(always)]
pub(crate) unsafe fn invept(kind: u64, eptp: u64) -> VmxResult {
    let desc: [u64; 2] = [eptp, 0];
    let (cf, zf): (u8, u8);
    // SAFETY: The caller guarantees VMX operation and support; the descriptor is 16 bytes.
    unsafe {
        asm!("invept {k}, [{d}]", "setc {cf}", "setz {zf}",
             k = in(reg) kind, d = in(reg) &desc, cf = out(reg_byte) cf, zf = out(reg_byte) zf,
             options(nostack))
    };
    check(cf, zf)
}

/// INVVPID of the given type (1 = single context, 2 = all contexts).
///
/// # Safety
///
/// VMX root operation, and the CPU supports this INVVPID type.
#[inline(always)]
pub(crate) unsafe fn invvpid(kind: u64, vpid: u16, gva: u64) -> VmxResult {
    let desc: [u64; 2] = [u64::from(vpid), gva];
    let (cf, zf): (u8, u8);
    // SAFETY: The caller guarantees VMX operation and support; the descriptor is 16 bytes.
    unsafe {
        asm!("invvpid {k}, [{d}]", "setc {cf}", "setz {zf}",
             k = in(reg) kind, d = in(reg) &desc, cf = out(reg_byte) cf, zf = out(reg_byte) zf,
             options(nostack))
    };
    check(cf, zf)
}

// SPDX-License-Identifier: GPL-2.0

//! The SVM instructions used outside the entry routine. Each is only sound in the state
//! its `# Safety` section names, which the run window (`vcpu/mod.rs`) establishes:
//! EFER.SVME set, interrupts off.

use core::arch::asm;

/// Clears the global interrupt flag: interrupts, NMIs and SMIs are held until [`stgi`].
///
/// # Safety
///
/// EFER.SVME is set, and [`stgi`] runs before EFER.SVME is cleared again.
#[inline(always)]
pub(crate) unsafe fn clgi() {
    // SAFETY: The caller guarantees EFER.SVME.
    unsafe { asm!("clgi", options(nostack, nomem)) };
}

/// Sets the global interrupt flag: what [`clgi`] held is delivered.
///
/// # Safety
///
/// EFER.SVME is set.
#[inline(always)]
pub(crate) unsafe fn stgi() {
    // SAFETY: The caller guarantees EFER.SVME.
    unsafe { asm!("stgi", options(nostack, nomem)) };
}

/// Stores this CPU's FS, GS, TR, LDTR (hidden state included), KERNEL_GS_BASE, STAR,
/// LSTAR, CSTAR, SFMASK and the SYSENTER MSRs into the VMCB-format page at `pa`.
///
/// # Safety
///
/// EFER.SVME is set, and `pa` is a 4 KiB page this CPU may write.
#[inline(always)]
pub(crate) unsafe fn vmsave(pa: u64) {
    // SAFETY: The caller guarantees the preconditions; VMSAVE writes only that page.
    unsafe { asm!("vmsave rax", in("rax") pa, options(nostack)) };
}

/// Sets RFLAGS.IF for the next VMRUN: with GIF clear nothing is delivered to the host,
/// and the host's IF at VMRUN lets physical interrupts end the guest's run (the VMCB
/// asks for virtual interrupt masking).
///
/// # Safety
///
/// GIF is clear (after [`clgi`]), and [`cli`] runs before [`stgi`].
#[inline(always)]
pub(crate) unsafe fn sti() {
    // SAFETY: The caller guarantees GIF is clear, so no interrupt is taken here.
    unsafe { asm!("sti", options(nostack, nomem)) };
}

/// Clears RFLAGS.IF again after VMRUN.
///
/// # Safety
///
/// Called with GIF clear, after [`sti`].
#[inline(always)]
pub(crate) unsafe fn cli() {
    // SAFETY: Only restores the interrupts-off state the caller's guard promised.
    unsafe { asm!("cli", options(nostack, nomem)) };
}

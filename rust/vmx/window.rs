// SPDX-License-Identifier: GPL-2.0

//! The VMX window: the only span of time in which a CPU is in VMX operation.
//!
//! # Why a window (the CR4 trap)
//!
//! Linux keeps a per-CPU shadow of CR4 and rewrites the register from it on several paths
//! (`prctl(PR_SET_TSC)`, context switches toggling TSD/PCE, the perf `rdpmc` IPI, text
//! poking). The helpers that would put VMXE into that shadow are exported to KVM only. A
//! rewrite while the CPU is in VMX operation would clear CR4.VMXE, which raises #GP: a
//! host oops. So rkvm enters VMX operation only with interrupts disabled on this CPU, and
//! leaves it (VMCLEAR of the loaded VMCS, VMXOFF, CR4 restored) before interrupts are
//! enabled again: no IPI, no schedule, no return to userspace can run on a CPU while its
//! CR4 holds a VMXE bit the shadow does not know about. The cost is paid once per window
//! (VMXON/VMPTRLD/VMCLEAR/VMXOFF), not per VM exit: exits handled in the kernel stay
//! inside the window. See Documentation/rkvm/init.rst.

use super::asm;
use crate::sys::cpu::{regs, IrqGuard};
use crate::sys::page::Hpa;

/// Why VMX operation could not be entered on this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EnterError {
    /// CR4.VMXE is already set: another hypervisor (kvm_intel) holds VMX on this CPU.
    Busy,
    /// VMXON failed although every precondition was checked.
    VmxonFailed,
}

/// This CPU in VMX root operation. Dropping it leaves VMX operation and restores CR4.
pub(crate) struct VmxOn<'a> {
    _irq: &'a IrqGuard,
}

impl<'a> VmxOn<'a> {
    /// Enters VMX operation using the VMXON region at `vmxon`. The IRQ guard proves
    /// interrupts stay off for the life of the result.
    pub(crate) fn enter(vmxon: Hpa, irq: &'a IrqGuard) -> Result<Self, EnterError> {
        let cr4 = regs::cr4();
        if cr4 & regs::CR4_VMXE != 0 {
            return Err(EnterError::Busy);
        }
        // SAFETY: Interrupts stay off for the life of the result (`irq`), whose drop
        // clears VMXE again after VMXOFF.
        unsafe { regs::set_cr4_vmxe(true) };
        // SAFETY: CR4.VMXE is set; hardware_setup checked IA32_FEATURE_CONTROL and the CR0
        // fixed bits on this CPU; `vmxon` is this CPU's region holding the revision id.
        if unsafe { asm::vmxon(vmxon.0) }.is_err() {
            // SAFETY: Not in VMX operation (VMXON failed); interrupts are still off.
            unsafe { regs::set_cr4_vmxe(false) };
            return Err(EnterError::VmxonFailed);
        }
        Ok(Self { _irq: irq })
    }
}

impl Drop for VmxOn<'_> {
    fn drop(&mut self) {
        // SAFETY: `enter` succeeded, so the CPU is in VMX root operation; every VMCS used
        // in the window was cleared by its own guard (which borrows this one).
        let _ = unsafe { asm::vmxoff() };
        // SAFETY: Out of VMX operation now; interrupts are still off (`_irq`).
        unsafe { regs::set_cr4_vmxe(false) };
    }
}

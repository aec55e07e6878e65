// SPDX-License-Identifier: GPL-2.0

//! The host's debug state across a run window (VMX or SVM).
//!
//! A VMX exit sets DR7 to 0x400 and IA32_DEBUGCTL to 0 (an SVM #VMEXIT leaves DEBUGCTL
//! alone); DR0-DR3 and DR6 are not switched
//! by the CPU at all. [`HostDebug`] records the host's DR7 and DEBUGCTL when the window
//! opens, puts DEBUGCTL back after every exit (only when the host had a non-zero value,
//! to keep the WRMSR off the common path), and, when the guest's DR0-DR3/DR6 must be in
//! the hardware, first disarms the host's breakpoints (DR7 = 0x400) so that no host
//! breakpoint ever fires on a guest-chosen address, then loads the guest's values. On
//! drop it restores DR0-DR3 and DR6 first and DR7 last, so the host's breakpoints are
//! re-armed only on the host's own addresses. (The kernel's `hw_breakpoint_restore()`
//! is exported to KVM only, so the values saved here are what gets written back.)

use crate::sys::cpu::{regs, IrqGuard};
use crate::sys::msr::{self, index};

/// DR7 with no breakpoint enabled (its reserved bit 10 set), as a VM exit leaves it.
const DR7_DISARMED: u64 = 0x400;

/// The host's debug state, for one window. Lives only while interrupts are off.
pub(crate) struct HostDebug<'a> {
    dr7: u64,
    debugctl: u64,
    /// The host's DR0-DR3 and DR6 while the guest's are loaded.
    saved: Option<[u64; 5]>,
    _irq: &'a IrqGuard,
}

impl<'a> HostDebug<'a> {
    /// Records the host's DR7 and DEBUGCTL (before the window's first entry).
    pub(crate) fn save(irq: &'a IrqGuard) -> Self {
        Self {
            dr7: regs::dr(7),
            // An emulator without the MSR reads as 0: nothing to restore then.
            debugctl: msr::read(index::IA32_DEBUGCTL).unwrap_or(0),
            saved: None,
            _irq: irq,
        }
    }

    /// Puts the guest's DR0-DR3 and DR6 in the hardware for the window.
    pub(crate) fn load_guest(&mut self, db: [u64; 4], dr6: u64) {
        if self.saved.is_none() {
            self.saved = Some([0u8, 1, 2, 3, 6].map(regs::dr));
        }
        if self.dr7 != DR7_DISARMED {
            // SAFETY: Interrupts are off (`_irq`); DR7 = 0x400 arms nothing, and the
            // host's value is restored in `drop`.
            unsafe { regs::set_dr(7, DR7_DISARMED) };
        }
        for (n, val) in [0u8, 1, 2, 3].into_iter().zip(db) {
            // SAFETY: Interrupts are off; no breakpoint is armed in DR7 (disarmed above,
            // or the guest's own while it runs); the host's values go back in `drop`.
            unsafe { regs::set_dr(n, val) };
        }
        // SAFETY: As above.
        unsafe { regs::set_dr(6, dr6) };
    }

    /// Whether the guest's DR0-DR3/DR6 are in the hardware.
    pub(crate) fn guest_loaded(&self) -> bool {
        self.saved.is_some()
    }

    /// Right after a VM exit: the host's DEBUGCTL again (the exit cleared it).
    pub(crate) fn after_exit(&self) {
        if self.debugctl != 0 {
            let _ = msr::write(index::IA32_DEBUGCTL, self.debugctl);
        }
    }
}

impl Drop for HostDebug<'_> {
    fn drop(&mut self) {
        if let Some(saved) = self.saved.take() {
            for (n, val) in [0u8, 1, 2, 3, 6].into_iter().zip(saved) {
                // SAFETY: The host's own values, interrupts still off; DR7 is still
                // disarmed (a VM exit leaves 0x400), so nothing fires on the way.
                unsafe { regs::set_dr(n, val) };
            }
        }
        if self.dr7 != DR7_DISARMED {
            // SAFETY: The host's own DR7, written last, interrupts still off.
            unsafe { regs::set_dr(7, self.dr7) };
        }
    }
}

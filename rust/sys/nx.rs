// SPDX-License-Identifier: GPL-2.0

//! kvm's `nx_huge_pages` parameters (the iTLB multihit mitigation) and the module-wide
//! work item that recovers split huge pages, kept by the C side (`shim_params.c`).

use super::ffi;

/// The parameters as they read now.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NxParams {
    /// Changes with every change of `enabled`: VMs built under another value drop their
    /// two-dimensional page table.
    pub(crate) gen: u32,
    /// Each recovery unmaps 1/ratio of a VM's split huge pages.
    pub(crate) ratio: u32,
    /// The recovery period in ms, when recovery runs.
    pub(crate) period_ms: Option<u32>,
}

/// Reads the parameters.
pub(crate) fn params() -> NxParams {
    let mut p = ffi::rkvm_nx_params::default();
    // SAFETY: Fills `p` from the module's parameters.
    unsafe { ffi::rkvm_nx_params(&mut p) };
    NxParams {
        gen: p.gen,
        ratio: p.ratio,
        period_ms: (p.recovery != 0).then_some(p.period_ms),
    }
}

/// `nx_huge_pages` and its generation (see [`NxParams`]), as a fault needs them.
pub(crate) fn state() -> (bool, u32) {
    // SAFETY: Reads two of the module's parameters.
    let w = unsafe { ffi::rkvm_nx_state() };
    (w & 1 != 0, (w >> 1) as u32)
}

/// The recovery work while it may run: resolved "auto" at start; dropping it waits for a
/// running recovery and keeps it from being queued again (module exit).
pub(crate) struct Recovery(());

impl Recovery {
    /// Lets the recovery work run `f` (module init).
    pub(crate) fn start(f: extern "C" fn()) -> Self {
        // SAFETY: `f` is a function of this module; the returned value's drop stops the
        // work before the module goes.
        unsafe { ffi::rkvm_nx_start(Some(f)) };
        Self(())
    }
}

impl Drop for Recovery {
    fn drop(&mut self) {
        // SAFETY: Module exit, no lock held; may sleep.
        unsafe { ffi::rkvm_nx_stop() };
    }
}

/// Runs the recovery in `ms` unless it is queued already.
pub(crate) fn kick(ms: u32) {
    // SAFETY: Queues the module's static work item (a no-op once stopped).
    unsafe { ffi::rkvm_nx_recovery_kick(ms) };
}

/// A VM came (`true`) or went: `nx_huge_pages=never` is refused while any exists.
pub(crate) fn vm_count(add: bool) {
    // SAFETY: Updates a counter under the C side's lock.
    unsafe { ffi::rkvm_nx_vm_count(if add { 1 } else { -1 }) };
}

/// Whether the caller may reboot the machine (CAP_SYS_BOOT in the initial namespace).
pub(crate) fn capable_sys_boot() -> bool {
    // SAFETY: Checks the current task's credentials.
    unsafe { ffi::rkvm_capable_sys_boot() != 0 }
}

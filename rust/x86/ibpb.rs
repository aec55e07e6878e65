// SPDX-License-Identifier: GPL-2.0

//! IBPB between VMs: a CPU remembers the VM whose vCPU it entered last, and issues an
//! indirect branch prediction barrier (IA32_PRED_CMD) before it enters a vCPU of another,
//! so that no VM runs on branch predictions another trained. Gated on the CPU having IBPB
//! and mitigations being on (the kernel's finer `spectre_v2_user` choice is not visible
//! to modules). Both backends use it.

use crate::sys::cpu::{self, Feature, IrqGuard};
use crate::sys::msr::{self, index};
use core::sync::atomic::{AtomicUsize, Ordering};

/// IA32_PRED_CMD.IBPB.
const PRED_CMD_IBPB: u64 = 1;

/// A VM's identity for the tag: any address unique to the VM while it lives (its vCPUs
/// forget it on every CPU before it goes, see [`LastVm::forget`]).
pub(crate) type VmTag = usize;

/// Whether the host wants the barrier.
pub(crate) fn wanted() -> bool {
    cpu::boot_cpu_has(Feature::Ibpb) && !cpu::mitigations_off()
}

/// One CPU's tag of the VM it entered last (0: none).
pub(crate) struct LastVm(AtomicUsize);

impl LastVm {
    pub(crate) const fn new() -> Self {
        Self(AtomicUsize::new(0))
    }

    /// Called on this CPU, with interrupts off, before it enters a vCPU of VM `tag`.
    pub(crate) fn switch(&self, tag: VmTag, ibpb: bool, _irq: &IrqGuard) {
        if self.0.load(Ordering::Relaxed) == tag {
            return;
        }
        if ibpb {
            let _ = msr::write(index::IA32_PRED_CMD, PRED_CMD_IBPB);
        }
        self.0.store(tag, Ordering::Relaxed);
    }

    /// A vCPU of VM `tag` goes away: the CPU may not keep the tag, which a later VM at the
    /// same address would otherwise inherit (and skip its barrier).
    pub(crate) fn forget(&self, tag: VmTag) {
        if tag != 0 {
            let _ = self
                .0
                .compare_exchange(tag, 0, Ordering::Relaxed, Ordering::Relaxed);
        }
    }
}

// SPDX-License-Identifier: GPL-2.0

//! Speculative-execution hygiene around VM entry and exit, limited to what a module that
//! is not `kvm`/`kvm-intel` can reach (the kernel exports its own helpers for this, such as
//! `x86_verw_sel`, `clear_bhb_loop`, `write_ibpb` and the `switch_vcpu_ibpb` key, to KVM
//! only).
//!
//! What rkvm does, each step gated on the host kernel's own choice (its synthetic CPU
//! feature bits, read once at `hardware_setup`):
//!
//! - VERW right before VMLAUNCH/VMRESUME when the host clears CPU buffers for guests
//!   (`CLEAR_CPU_BUF_VM`, `CLEAR_CPU_BUF_VM_MMIO`, or `CLEAR_CPU_BUF`): the operand is
//!   rkvm's own copy of the kernel data segment selector (`entry.rs`). rkvm cannot tell
//!   whether a vCPU maps host MMIO, so the MMIO-only variant clears on every entry.
//! - After every exit, before the first RET: all GPRs zeroed, then the return stack
//!   buffer overwritten with 32 entries (`RSB_VMEXIT`) or one retired CALL
//!   (`RSB_VMEXIT_LITE`), both followed by LFENCE (`entry.rs`).
//! - IBPB (IA32_PRED_CMD) when a CPU enters a vCPU of another VM than the last one it
//!   ran, if the CPU has IBPB and mitigations are on (the kernel's finer `spectre_v2_user`
//!   choice is not visible to modules).
//! - The L1D flush (`l1d.rs`).
//!
//! Not done: the branch-history clearing sequence on exit (`clear_bhb_loop`, KVM only);
//! saving/restoring a guest IA32_SPEC_CTRL (the MSR is not passed through, so the host's
//! value stays in force while the guest runs).

use super::entry::flags;
use super::Vmx;
use crate::sys::cpu::{self, Feature, IrqGuard};
use crate::sys::msr::{self, index};
use core::sync::atomic::{AtomicUsize, Ordering};

/// IA32_PRED_CMD.IBPB.
const PRED_CMD_IBPB: u64 = 1;

/// The hygiene steps this host wants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Spec {
    /// [`flags::VERW`], [`flags::RSB_FILL`], [`flags::RSB_ONE`] for `vmenter`.
    pub(crate) entry_flags: u64,
    /// IBPB on a switch between VMs.
    pub(crate) ibpb: bool,
}

impl Spec {
    /// Reads the host kernel's mitigation choices.
    pub(crate) fn probe() -> Self {
        let has = cpu::boot_cpu_has;
        let mut entry_flags = 0;
        if has(Feature::ClearCpuBufVm)
            || has(Feature::ClearCpuBufVmMmio)
            || has(Feature::ClearCpuBuf)
        {
            entry_flags |= flags::VERW;
        }
        if has(Feature::RsbVmexit) {
            entry_flags |= flags::RSB_FILL;
        } else if has(Feature::RsbVmexitLite) {
            entry_flags |= flags::RSB_ONE;
        }
        Self {
            entry_flags,
            ibpb: has(Feature::Ibpb) && !cpu::mitigations_off(),
        }
    }
}

/// A VM's identity for the per-CPU "last VM" tag: any address unique to the VM while it
/// lives (its vCPUs forget it on every CPU before it goes, see [`Vmx::forget_vm`]).
pub(crate) type VmTag = usize;

impl Vmx {
    /// Called with interrupts off before this CPU enters a vCPU of VM `tag`: a barrier
    /// against indirect-branch predictions trained by another VM.
    pub(crate) fn switch_vm(&self, tag: VmTag, irq: &IrqGuard) {
        let last = &self.cpus.this_cpu(irq).last_vm;
        if last.load(Ordering::Relaxed) == tag {
            return;
        }
        if self.spec.ibpb {
            let _ = msr::write(index::IA32_PRED_CMD, PRED_CMD_IBPB);
        }
        last.store(tag, Ordering::Relaxed);
    }

    /// A vCPU of VM `tag` goes away: no CPU may keep the tag, which a later VM at the same
    /// address would otherwise inherit (and skip its barrier).
    pub(crate) fn forget_vm(&self, tag: VmTag) {
        if tag == 0 {
            return;
        }
        for c in self.cpus.iter() {
            let _ = c
                .last_vm
                .compare_exchange(tag, 0, Ordering::Relaxed, Ordering::Relaxed);
        }
    }
}

/// The per-CPU tag.
pub(crate) fn new_tag() -> AtomicUsize {
    AtomicUsize::new(0)
}

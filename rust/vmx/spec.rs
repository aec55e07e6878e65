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
pub(crate) use crate::x86::ibpb::VmTag;

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
            ibpb: crate::x86::ibpb::wanted(),
        }
    }
}

impl Vmx {
    /// Called with interrupts off before this CPU enters a vCPU of VM `tag`.
    pub(crate) fn switch_vm(&self, tag: VmTag, irq: &IrqGuard) {
        self.cpus
            .this_cpu(irq)
            .last_vm
            .switch(tag, self.spec.ibpb, irq);
    }

    /// A vCPU of VM `tag` goes away: no CPU may keep its tag.
    pub(crate) fn forget_vm(&self, tag: VmTag) {
        for c in self.cpus.iter() {
            c.last_vm.forget(tag);
        }
    }
}

// SPDX-License-Identifier: GPL-2.0

//! User-return MSRs (the seed's `kvm_shared_msrs`, later `kvm_user_return_msrs`).
//!
//! Some MSRs matter to the host only in userspace (SYSCALL targets, TSC_AUX). A guest
//! value is written when it is first needed and the host value is restored lazily, just
//! before the CPU returns to userspace, by a per-CPU user-return notifier. Exits handled
//! in the kernel never pay for these MSRs.

use crate::sys::cpu::{self, IrqGuard};
use crate::sys::msr::{self, index};
use crate::sys::notifiers::UserReturn;
use crate::sys::percpu::{LocalCell, PerCpu};
use kernel::prelude::*;

/// The MSRs switched this way, by slot.
pub(crate) const SLOTS: [u32; 5] = [
    index::STAR,
    index::LSTAR,
    index::CSTAR,
    index::SYSCALL_MASK,
    index::TSC_AUX,
];

/// A slot of [`SLOTS`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Slot(usize);

impl Slot {
    /// The slot of `msr`, if it is switched lazily.
    pub(crate) fn of(msr: u32) -> Option<Self> {
        SLOTS.iter().position(|&m| m == msr).map(Self)
    }
}

#[derive(Default, Clone, Copy)]
struct Values {
    /// The host's value, read when the slot was first changed on this CPU (the kernel
    /// writes these MSRs when it brings a CPU up, never afterwards; KVM reads them once
    /// per CPU too).
    host: u64,
    /// `host` was read.
    host_known: bool,
    /// What the MSR holds now.
    curr: u64,
    /// Whether `curr` differs from `host`.
    dirty: bool,
}

/// Per-CPU state.
pub(crate) struct UretCpu {
    values: LocalCell<[Values; SLOTS.len()]>,
}

/// All CPUs' user-return MSR state (the seed's `alloc_percpu(user_return_msrs)`).
pub(crate) struct UserReturnMsrs {
    cpus: PerCpu<UretCpu>,
    notifier: UserReturn,
}

impl UserReturnMsrs {
    /// Allocates the per-CPU state and the notifiers; `on_return` must call
    /// [`UserReturnMsrs::on_user_return`].
    pub(crate) fn new(on_return: extern "C" fn(cpu: c_uint)) -> Result<Self> {
        Ok(Self {
            cpus: PerCpu::new(|cpu| {
                Ok(UretCpu {
                    values: LocalCell::new(cpu, [Values::default(); SLOTS.len()]),
                })
            })?,
            notifier: UserReturn::init(on_return)?,
        })
    }

    /// Loads `value` into the slot's MSR on this CPU until the next return to userspace.
    pub(crate) fn set(&self, slot: Slot, value: u64, irq: &IrqGuard) -> Result {
        let cpu = self.cpus.this_cpu(irq);
        let mut vals = cpu.values.borrow(irq).ok_or(EBUSY)?;
        let v = vals.get_mut(slot.0).ok_or(EINVAL)?;
        let msr = SLOTS[slot.0 % SLOTS.len()];
        if !v.host_known {
            v.host = msr::read(msr)?;
            v.host_known = true;
        }
        if !v.dirty {
            v.curr = v.host;
        }
        if v.curr == value {
            return Ok(());
        }
        msr::write(msr, value)?;
        v.curr = value;
        v.dirty = true;
        self.notifier.arm(irq);
        Ok(())
    }

    /// The user-return notifier of `cpu` fired: restore the host values there.
    pub(crate) fn on_user_return(&self, _cpu: u32) {
        let irq = IrqGuard::new();
        let cpu = self.cpus.this_cpu(&irq);
        let Some(mut vals) = cpu.values.borrow(&irq) else {
            return;
        };
        for (v, &msr) in vals.iter_mut().zip(SLOTS.iter()) {
            if v.dirty {
                let _ = msr::write(msr, v.host);
                v.curr = v.host;
                v.dirty = false;
            }
        }
    }
}

impl UserReturnMsrs {
    /// Puts the host values back on every CPU now. Module exit calls this while the
    /// notifiers can still reach this object: once the module state is retracted, a
    /// notifier firing on a CPU that still holds a guest's SYSCALL target would find
    /// nothing to restore, and the next system call there would jump to it.
    pub(crate) fn restore_all(&self) {
        cpu::run_on_each(|| self.on_user_return(cpu::this_cpu()));
    }
}

impl Drop for UserReturnMsrs {
    fn drop(&mut self) {
        // Nothing can have switched an MSR since `restore_all` (no VM exists at module
        // exit), but restore again in case the state goes away on another path.
        self.restore_all();
    }
}

// SPDX-License-Identifier: GPL-2.0

//! Steal time (`MSR_KVM_STEAL_TIME`, `KVM_FEATURE_STEAL_TIME`): the guest gives a 64-byte
//! aligned guest-physical address; before the vCPU runs guest code after a KVM_RUN call or
//! after its thread waited for a CPU, rkvm adds the thread's new run delay (the time it
//! was runnable but not running, from the scheduler's sched_info) to `steal` there,
//! with `version` odd during the update, and clears `preempted`. rkvm never sets
//! `preempted` (it offers no PV TLB flush), so guests never see a vCPU as preempted.

use core::mem::offset_of;

use super::vcpu::Vcpu;
use super::vm::{Vm, VmMem};
use crate::uapi::{kvm_steal_time, KVM_MSR_ENABLED, KVM_STEAL_VALID_BITS};
use crate::x86::emulate::GuestMem;

/// A vCPU's steal-time bookkeeping.
#[derive(Default)]
pub(crate) struct StealTime {
    /// The run delay already accounted to the guest (KVM starts from 0).
    last_delay: u64,
    /// The MSR value of the last update (a new value updates at once).
    last_msr: u64,
}

impl StealTime {
    /// Brings the guest's record up to date if `force` (a new KVM_RUN), if the MSR
    /// changed or if the thread has waited since the last update.
    pub(crate) fn update(
        &mut self,
        vm: &Vm,
        vcpu: &Vcpu,
        msr: u64,
        delay: impl FnOnce() -> u64,
        force: bool,
    ) {
        if msr & u64::from(KVM_MSR_ENABLED) == 0 {
            self.last_msr = msr;
            return;
        }
        let delay = delay();
        if !force && msr == self.last_msr && delay == self.last_delay {
            return;
        }
        self.last_msr = msr;
        let gpa = msr & KVM_STEAL_VALID_BITS as u64;
        let mem = VmMem::of(vm, vcpu);
        let field = |off: usize| gpa + off as u64;
        // Without memory at the address (no memslot), nothing is recorded, as in KVM.
        let _ = (|| -> kernel::error::Result {
            mem.write(field(offset_of!(kvm_steal_time, preempted)), &[0])?;
            let mut v = [0u8; 4];
            mem.read(field(offset_of!(kvm_steal_time, version)), &mut v)?;
            let mut version = u32::from_ne_bytes(v);
            // An odd version is junk from before the first update.
            version = version.wrapping_add(if version & 1 != 0 { 2 } else { 1 });
            mem.write(
                field(offset_of!(kvm_steal_time, version)),
                &version.to_ne_bytes(),
            )?;
            let mut st = [0u8; 8];
            mem.read(field(offset_of!(kvm_steal_time, steal)), &mut st)?;
            let steal = u64::from_ne_bytes(st).wrapping_add(delay.wrapping_sub(self.last_delay));
            self.last_delay = delay;
            mem.write(
                field(offset_of!(kvm_steal_time, steal)),
                &steal.to_ne_bytes(),
            )?;
            version = version.wrapping_add(1);
            mem.write(
                field(offset_of!(kvm_steal_time, version)),
                &version.to_ne_bytes(),
            )
        })();
    }
}

// SPDX-License-Identifier: GPL-2.0

//! `KVM_ENABLE_CAP` on the VM fd: the VM-wide capabilities userspace turns on.

use super::vm::Vm;
use super::{caps, uaccess};
use crate::uapi::*;
use core::sync::atomic::Ordering;
use kernel::prelude::*;

/// `KVM_ENABLE_CAP(cap)` for a VM.
pub(crate) fn enable_cap(this: &Vm, arg: usize) -> Result<isize> {
    let cap: kvm_enable_cap = uaccess::read(arg)?;
    // KVM's generic capabilities ignore the flags; its x86 ones refuse any.
    let generic = matches!(
        cap.cap,
        KVM_CAP_DIRTY_LOG_RING | KVM_CAP_DIRTY_LOG_RING_ACQ_REL
    );
    if cap.flags != 0 && !generic {
        return Err(EINVAL);
    }
    match cap.cap {
        KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 => {
            let valid =
                u64::from(KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | KVM_DIRTY_LOG_INITIALLY_SET);
            if cap.args[0] & !valid != 0
                || cap.args[0] & u64::from(KVM_DIRTY_LOG_INITIALLY_SET) != 0
            {
                return Err(EINVAL);
            }
            this.manual_protect
                .store(cap.args[0] != 0, Ordering::Release);
            Ok(0)
        }
        KVM_CAP_DIRTY_LOG_RING | KVM_CAP_DIRTY_LOG_RING_ACQ_REL => {
            // KVM takes the size as a u32 (the high bits are dropped).
            let bytes = super::dirty_ring::check_size(cap.args[0] as u32)?;
            if this.dirty_ring_bytes.load(Ordering::Relaxed) != 0 {
                return Err(EINVAL);
            }
            let l = this.locked.lock();
            if !l.vcpus.is_empty() {
                return Err(EINVAL);
            }
            this.dirty_ring_bytes.store(bytes, Ordering::Relaxed);
            drop(l);
            Ok(0)
        }
        KVM_CAP_SPLIT_IRQCHIP => super::irq::enable_split(this, cap.args[0]),
        KVM_CAP_VM_DISABLE_NX_HUGE_PAGES => super::nx_huge::disable(this, &cap),
        KVM_CAP_HALT_POLL => {
            // The longest halt poll of this VM's vCPUs, in place of `halt_poll_ns`.
            let ns = u32::try_from(cap.args[0]).map_err(|_| EINVAL)?;
            this.max_halt_poll_ns
                .store(u64::from(ns), Ordering::Release);
            Ok(0)
        }
        KVM_CAP_X86_USER_SPACE_MSR => {
            if cap.args[0] & !u64::from(KVM_MSR_EXIT_REASON_VALID_MASK) != 0 {
                return Err(EINVAL);
            }
            this.user_space_msr
                .store(cap.args[0] as u32, Ordering::Relaxed);
            Ok(0)
        }
        KVM_CAP_MSR_PLATFORM_INFO => {
            this.platform_info_readable
                .store(cap.args[0] != 0, Ordering::Relaxed);
            Ok(0)
        }
        KVM_CAP_EXIT_ON_EMULATION_FAILURE => {
            if cap.args[0] & !1 != 0 {
                return Err(EINVAL);
            }
            this.exit_on_emulation_failure
                .store(cap.args[0] != 0, Ordering::Relaxed);
            Ok(0)
        }
        KVM_CAP_X2APIC_API => {
            // The suppress-EOI-broadcast controls are not offered (see caps.rs).
            let valid = caps::X2APIC_API_FLAGS;
            if cap.args[0] & !valid != 0 {
                return Err(EINVAL);
            }
            if cap.args[0] & u64::from(RKVM_X2APIC_API_USE_32BIT_IDS) != 0 {
                this.x2apic_format.store(true, Ordering::Relaxed);
            }
            if cap.args[0] & u64::from(RKVM_X2APIC_API_DISABLE_BROADCAST_QUIRK) != 0 {
                this.x2apic_broadcast_quirk_disabled
                    .store(true, Ordering::Relaxed);
            }
            Ok(0)
        }
        // The second form refuses quirks rkvm cannot turn off; the first
        // ignores them (as KVM does with quirks a host does not support).
        KVM_CAP_DISABLE_QUIRKS2 | KVM_CAP_DISABLE_QUIRKS => {
            let q = cap.args[0];
            if cap.cap == KVM_CAP_DISABLE_QUIRKS2 && q & !crate::x86::quirks::SUPPORTED != 0 {
                return Err(EINVAL);
            }
            this.disabled_quirks
                .fetch_or(q & crate::x86::quirks::SUPPORTED, Ordering::Relaxed);
            Ok(0)
        }
        KVM_CAP_X86_APIC_BUS_CYCLES_NS => {
            let ns = cap.args[0];
            if !crate::x86::lapic::bus_cycle_ns_valid(ns) {
                return Err(EINVAL);
            }
            let l = this.locked.lock();
            if !this.lapic_in_kernel.load(Ordering::Acquire) {
                return Err(ENXIO);
            }
            if !l.vcpus.is_empty() {
                return Err(EINVAL);
            }
            this.apic_bus_cycle_ns.store(ns, Ordering::Relaxed);
            Ok(0)
        }
        KVM_CAP_MAX_VCPU_ID => {
            let ids = u32::try_from(cap.args[0]).map_err(|_| EINVAL)?;
            if ids > caps::MAX_VCPU_IDS {
                return Err(EINVAL);
            }
            // Once set (or fixed by the first vCPU) it cannot change, and it
            // cannot drop below the boot vCPU's id.
            let mut l = this.locked.lock();
            if l.bsp_vcpu_id > ids || (l.max_vcpu_ids != 0 && l.max_vcpu_ids != ids) {
                return Err(EINVAL);
            }
            l.max_vcpu_ids = ids;
            Ok(0)
        }
        _ => Err(EINVAL),
    }
}

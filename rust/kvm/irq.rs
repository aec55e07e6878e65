// SPDX-License-Identifier: GPL-2.0

//! Interrupt delivery between local APICs (the split irqchip: local APICs in the kernel,
//! PIC and I/O APIC in userspace): IPIs from the ICR, `KVM_SIGNAL_MSI`, and
//! `KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)`.

use super::uaccess;
use super::vm::Vm;
use crate::uapi::*;
use crate::x86::lapic::IrqRequest;
use core::sync::atomic::Ordering;
use kernel::prelude::*;

/// KVM's limit on the routes (and so the I/O APIC pins) a VM may reserve.
const MAX_IRQ_ROUTES: u64 = 4096;

/// `KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP, pins)`: local APICs in the kernel from now on.
pub(crate) fn enable_split(vm: &Vm, pins: u64) -> Result<isize> {
    let l = vm.locked.lock();
    if pins > MAX_IRQ_ROUTES {
        return Err(EINVAL);
    }
    if vm.split_irqchip.load(Ordering::Acquire) || !l.vcpus.is_empty() {
        return Err(EEXIST);
    }
    vm.split_irqchip.store(true, Ordering::Release);
    Ok(0)
}

/// Delivers `irq` to the local APICs it addresses (KVM's `kvm_irq_delivery_to_apic`).
/// Returns how many accepted it (0 when none was a destination, as KVM's APIC-map path
/// answers).
pub(crate) fn deliver(vm: &Vm, irq: &IrqRequest) -> u32 {
    let mut irq = *irq;
    // A physical broadcast is never arbitrated.
    if !irq.logical && irq.dest == 0xff && irq.lowest_priority() {
        irq.delivery = crate::x86::lapic::dm::FIXED;
    }
    let quirk = !vm.x2apic_broadcast_quirk_disabled.load(Ordering::Relaxed);
    let l = vm.locked.lock();
    let mut delivered = 0u32;
    let mut candidates = 0u32;
    for v in l.vcpus.iter() {
        let Some(mb) = v.apic.as_ref() else { continue };
        let a = mb.addressing();
        if !a.hw_enabled || !a.matches(v.id, &irq, quirk) {
            continue;
        }
        if !irq.lowest_priority() {
            let taken = mb.accept(&irq);
            delivered += u32::from(taken);
            if taken {
                v.kick_apic();
            }
        } else if a.sw_enabled {
            candidates += 1;
        }
    }
    if candidates == 0 {
        return delivered;
    }
    // Lowest priority: KVM's vector hashing picks the (vector mod n)-th candidate.
    let mut pick = u32::from(irq.vector) % candidates;
    for v in l.vcpus.iter() {
        let Some(mb) = v.apic.as_ref() else { continue };
        let a = mb.addressing();
        if !a.hw_enabled || !a.sw_enabled || !a.matches(v.id, &irq, quirk) {
            continue;
        }
        if pick == 0 {
            let taken = mb.accept(&irq);
            if taken {
                v.kick_apic();
            }
            return u32::from(taken);
        }
        pick -= 1;
    }
    delivered
}

/// `KVM_SIGNAL_MSI`: the number of APICs that took it.
pub(crate) fn signal_msi(vm: &Vm, arg: usize) -> Result<isize> {
    let msi: kvm_msi = uaccess::read(arg)?;
    if !vm.split_irqchip.load(Ordering::Acquire) || msi.flags & !KVM_MSI_VALID_DEVID != 0 {
        return Err(EINVAL);
    }
    let irq = IrqRequest::from_msi(msi.address_lo, msi.data);
    Ok(deliver(vm, &irq) as isize)
}

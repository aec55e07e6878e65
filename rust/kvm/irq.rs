// SPDX-License-Identifier: GPL-2.0

//! Interrupt delivery to local APICs (IPIs from the ICR, `KVM_SIGNAL_MSI`), GSI routing
//! (`KVM_SET_GSI_ROUTING`, irqfds), and `KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)`: local
//! APICs in the kernel, PIC and I/O APIC in userspace. The full irqchip is in
//! `irqchip.rs`.

use super::uaccess;
use super::vm::Vm;
use crate::sys::irqfd::{EventCtx, IrqFd, RESAMPLE_TAG};
use crate::uapi::*;
use crate::x86::lapic::{Addressing, IrqRequest};
use crate::x86::pic::Source;
use core::sync::atomic::Ordering;
use kernel::prelude::*;

/// `KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP, pins)`: local APICs in the kernel from now on.
pub(crate) fn enable_split(vm: &Vm, pins: u64) -> Result<isize> {
    let l = vm.locked.lock();
    if pins > u64::from(MAX_IRQ_ROUTES) {
        return Err(EINVAL);
    }
    if vm.lapic_in_kernel.load(Ordering::Acquire) || !l.vcpus.is_empty() {
        return Err(EEXIST);
    }
    vm.split_pins.store(pins as u32, Ordering::Relaxed);
    vm.lapic_in_kernel.store(true, Ordering::Release);
    Ok(0)
}

/// Delivers `irq` to the local APICs it addresses (KVM's `kvm_irq_delivery_to_apic`).
/// Returns how many accepted it (0 when none was a destination, as KVM's APIC-map path
/// answers).
pub(crate) fn deliver(vm: &Vm, irq: &IrqRequest) -> u32 {
    deliver_to(vm, irq, &mut |_| {})
}

/// [`deliver`], telling `took` the id of each vCPU whose APIC took the interrupt.
pub(crate) fn deliver_to(vm: &Vm, irq: &IrqRequest, took: &mut dyn FnMut(u32)) -> u32 {
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
                took(v.id);
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
                took(v.id);
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
    if !vm.lapic_in_kernel.load(Ordering::Acquire) || msi.flags & !KVM_MSI_VALID_DEVID != 0 {
        return Err(EINVAL);
    }
    let irq = IrqRequest::from_msi(msi.address_lo, msi.data);
    Ok(deliver(vm, &irq) as isize)
}

/// `KVM_MAX_IRQ_ROUTES` on x86: GSIs are below this, a table has at most this many, and
/// a split irqchip reserves at most this many I/O APIC pins.
pub(crate) const MAX_IRQ_ROUTES: u32 = 4096;

/// Where a GSI goes.
#[derive(Clone, Copy)]
pub(crate) enum Target {
    Msi {
        address_lo: u32,
        data: u32,
    },
    /// A pin of the in-kernel PIC master (0), slave (1) or I/O APIC (2).
    Irqchip {
        chip: u32,
        pin: u32,
    },
}

/// A routing entry.
#[derive(Clone, Copy)]
pub(crate) struct Route {
    pub(crate) gsi: u32,
    pub(crate) target: Target,
}

/// `KVM_SET_GSI_ROUTING`: replaces the whole table.
pub(crate) fn set_gsi_routing(vm: &Vm, arg: usize) -> Result<isize> {
    let nr: u32 = uaccess::read(arg)?;
    let flags: u32 = uaccess::read(uaccess::offset(arg, 4)?)?;
    if !vm.lapic_in_kernel.load(Ordering::Acquire) || nr > MAX_IRQ_ROUTES || flags != 0 {
        return Err(EINVAL);
    }
    let full = vm.full_irqchip.load(Ordering::Acquire);
    let mut routes: KVec<Route> = KVec::with_capacity(nr as usize, GFP_KERNEL_ACCOUNT)?;
    let entries = uaccess::offset(arg, core::mem::size_of::<kvm_irq_routing>())?;
    for i in 0..nr as usize {
        // struct kvm_irq_routing_entry: gsi, type, flags, pad, then the 32-byte union.
        let at = i
            .checked_mul(core::mem::size_of::<kvm_irq_routing_entry>())
            .ok_or(EINVAL)?;
        let e: [u32; 12] = uaccess::read(uaccess::offset(entries, at)?)?;
        let [gsi, ty, eflags, _pad, u0, u1, u2, ..] = e;
        if gsi >= MAX_IRQ_ROUTES || eflags & !KVM_MSI_VALID_DEVID != 0 {
            return Err(EINVAL);
        }
        let target = match ty {
            // PIC and I/O APIC pins exist only with the full in-kernel irqchip.
            KVM_IRQ_ROUTING_IRQCHIP if full => {
                let (chip, pin) = (u0, u1);
                let pins = match chip {
                    KVM_IRQCHIP_PIC_MASTER | KVM_IRQCHIP_PIC_SLAVE => 8,
                    KVM_IRQCHIP_IOAPIC => crate::x86::ioapic::PINS,
                    _ => return Err(EINVAL),
                };
                if pin >= pins {
                    return Err(EINVAL);
                }
                Target::Irqchip { chip, pin }
            }
            KVM_IRQ_ROUTING_MSI => {
                let (address_lo, address_hi, data) = (u0, u1, u2);
                // With 32-bit x2APIC IDs, bits 7:0 of address_hi must be clear (as KVM).
                if vm.x2apic_format.load(Ordering::Relaxed) && address_hi & 0xff != 0 {
                    return Err(EINVAL);
                }
                Target::Msi { address_lo, data }
            }
            _ => return Err(EINVAL),
        };
        // A GSI reaches each irqchip at most once, and an MSI route is its only one.
        let clash = routes.iter().any(|r| {
            r.gsi == gsi
                && match (r.target, target) {
                    (Target::Irqchip { chip: a, .. }, Target::Irqchip { chip: b, .. }) => a == b,
                    _ => true,
                }
        });
        if clash {
            return Err(EINVAL);
        }
        routes.push(Route { gsi, target }, GFP_KERNEL_ACCOUNT)?;
    }
    // The vectors whose EOI userspace's I/O APIC may need (KVM's ioapic_handled_vectors
    // with the split irqchip): a superset of what `split_eoi_exit` answers, for the run
    // window, which cannot look at the routes.
    let pins = vm.split_pins.load(Ordering::Relaxed);
    let mut vectors = [0u64; 4];
    for r in routes.iter().filter(|r| r.gsi < pins) {
        if let Target::Msi { address_lo, data } = r.target {
            let irq = IrqRequest::from_msi(address_lo, data);
            if irq.level_triggered {
                if let Some(w) = vectors.get_mut(usize::from(irq.vector >> 6)) {
                    *w |= 1 << (irq.vector & 63);
                }
            }
        }
    }
    let mut l = vm.locked.lock();
    l.routes = routes;
    for (a, v) in vm.split_eoi_vectors.iter().zip(vectors) {
        a.store(v, Ordering::Release);
    }
    drop(l);
    Ok(0)
}

/// Whether the EOI of `vector` by the APIC of vCPU `id` (with `addressing`) must reach
/// userspace's I/O APIC (KVM's `ioapic_handled_vectors` of a split irqchip): some GSI
/// below the reserved I/O APIC pins routes a level-triggered MSI with that vector to it.
pub(crate) fn split_eoi_exit(vm: &Vm, id: u32, addressing: &Addressing, vector: u8) -> bool {
    let pins = vm.split_pins.load(Ordering::Relaxed);
    if pins == 0 {
        return false;
    }
    let quirk = !vm.x2apic_broadcast_quirk_disabled.load(Ordering::Relaxed);
    vm.locked.lock().routes.iter().any(|r| match r.target {
        Target::Msi { address_lo, data } if r.gsi < pins => {
            let irq = IrqRequest::from_msi(address_lo, data);
            irq.level_triggered && irq.vector == vector && addressing.matches(id, &irq, quirk)
        }
        _ => false,
    })
}

/// The GSI routed to pin `pin` of irqchip `chip`, if any.
pub(crate) fn gsi_of(vm: &Vm, chip: u32, pin: u32) -> Option<u32> {
    vm.locked
        .lock()
        .routes
        .iter()
        .find(|r| matches!(r.target, Target::Irqchip { chip: c, pin: p } if c == chip && p == pin))
        .map(|r| r.gsi)
}

/// Raises or lowers GSI `gsi` for `source` through every route it has (KVM's
/// `kvm_set_irq`): -1 when no route took it, else the sum of what the routes returned.
/// `line_status`: the caller is `KVM_IRQ_LINE_STATUS`.
pub(crate) fn set_irq(vm: &Vm, source: Source, gsi: u32, level: bool, line_status: bool) -> i32 {
    // At most one route per irqchip, or a single MSI route.
    let mut targets = [None; 3];
    {
        let l = vm.locked.lock();
        let mut n = 0;
        for r in l.routes.iter().filter(|r| r.gsi == gsi) {
            if let Some(t) = targets.get_mut(n) {
                *t = Some(r.target);
                n += 1;
            }
        }
    }
    let mut ret = -1i32;
    for t in targets.into_iter().flatten() {
        let r = match t {
            Target::Msi { address_lo, data } => {
                if !level {
                    continue;
                }
                deliver(vm, &IrqRequest::from_msi(address_lo, data)) as i32
            }
            Target::Irqchip { chip, pin } => {
                super::irqchip::set_pin(vm, chip, pin, source, level, line_status)
            }
        };
        if r < 0 {
            continue;
        }
        ret = r.saturating_add(ret.max(0));
    }
    ret
}

/// An irqfd fired: a pulse on its GSI (nothing happens when the GSI has no route); a
/// resampling irqfd holds the line up until the guest acknowledges the interrupt.
///
/// # Safety
///
/// `owner` is the `Vm` that assigned the irqfd; the VM drops its irqfds (waiting for
/// this callback) before it is freed.
unsafe extern "C" fn irqfd_fire(owner: *const c_void, tagged: u32) {
    // SAFETY: See the function's contract.
    let vm = unsafe { &*owner.cast::<Vm>() };
    let gsi = tagged & !RESAMPLE_TAG;
    if tagged & RESAMPLE_TAG != 0 {
        set_irq(vm, Source::Resample, gsi, true, false);
        return;
    }
    set_irq(vm, Source::User, gsi, true, false);
    set_irq(vm, Source::User, gsi, false, false);
}

/// The guest acknowledged GSI `gsi`: resampling irqfds on it drop their hold on the line
/// and signal their resamplefds (KVM's `irqfd_resampler_ack`), for the device to raise it
/// again if it still wants to.
pub(crate) fn resample(vm: &Vm, gsi: u32) {
    if vm.resamplers.load(Ordering::Acquire) == 0 {
        return;
    }
    let any = vm
        .locked
        .lock()
        .irqfds
        .iter()
        .any(|f| f.gsi == gsi && f.resample.is_some());
    if !any {
        return;
    }
    set_irq(vm, Source::Resample, gsi, false, false);
    for f in vm.locked.lock().irqfds.iter().filter(|f| f.gsi == gsi) {
        if let Some(r) = f.resample.as_ref() {
            r.signal();
        }
    }
}

/// Irqfds were removed: a GSI that no resampling irqfd holds any more is lowered.
fn release_resampled(vm: &Vm, gone: &[IrqFd]) {
    for f in gone.iter().filter(|f| f.resample.is_some()) {
        vm.resamplers.fetch_sub(1, Ordering::AcqRel);
        let held = vm
            .locked
            .lock()
            .irqfds
            .iter()
            .any(|g| g.gsi == f.gsi && g.resample.is_some());
        if !held {
            set_irq(vm, Source::Resample, f.gsi, false, false);
        }
    }
}

/// `KVM_IRQFD`: assign or (with `KVM_IRQFD_FLAG_DEASSIGN`) remove an irqfd.
pub(crate) fn irqfd(vm: &Vm, arg: usize) -> Result<isize> {
    let a: [u32; 4] = uaccess::read(arg)?;
    let [fd, gsi, flags, resamplefd] = a;
    if flags & !(KVM_IRQFD_FLAG_DEASSIGN | KVM_IRQFD_FLAG_RESAMPLE) != 0 {
        return Err(EINVAL);
    }
    let fd = fd as i32;
    if flags & KVM_IRQFD_FLAG_DEASSIGN != 0 {
        crate::sys::irqfd::check_eventfd(fd)?;
        let gone = {
            let mut l = vm.locked.lock();
            let mut gone = KVec::new();
            let mut i = 0;
            while i < l.irqfds.len() {
                if l.irqfds
                    .get(i)
                    .is_some_and(|f| f.gsi == gsi && f.is_for(fd))
                {
                    gone.push(l.irqfds.remove(i)?, GFP_KERNEL_ACCOUNT)?;
                } else {
                    i += 1;
                }
            }
            gone
        };
        // Freed outside the lock: a running callback may be taking it.
        release_resampled(vm, &gone);
        drop(gone);
        return Ok(0);
    }
    // Resampling needs the in-kernel I/O APIC and PIC, whose EOIs it listens to.
    let resample = flags & KVM_IRQFD_FLAG_RESAMPLE != 0;
    let allowed = if resample {
        vm.full_irqchip.load(Ordering::Acquire)
    } else {
        vm.lapic_in_kernel.load(Ordering::Acquire)
    };
    if !allowed {
        return Err(EINVAL);
    }
    let resample = if resample {
        Some(EventCtx::get(resamplefd as i32)?)
    } else {
        None
    };
    let counts = resample.is_some();
    // SAFETY: The VM drops every irqfd in its destructor, before it is freed.
    let f = unsafe {
        IrqFd::assign(
            fd,
            gsi,
            resample,
            irqfd_fire,
            core::ptr::from_ref(vm).cast(),
        )
    }?;
    if counts {
        vm.resamplers.fetch_add(1, Ordering::AcqRel);
    }
    let dead = {
        // (A second irqfd on the same eventfd, in any VM, failed in `assign` with EBUSY.)
        let mut l = vm.locked.lock();
        // Reap irqfds whose eventfds were closed, then add the new one.
        let mut dead = KVec::new();
        let mut i = 0;
        while i < l.irqfds.len() {
            if l.irqfds.get(i).is_some_and(|g| g.is_dead()) {
                dead.push(l.irqfds.remove(i)?, GFP_KERNEL_ACCOUNT)?;
            } else {
                i += 1;
            }
        }
        l.irqfds.push(f, GFP_KERNEL_ACCOUNT)?;
        dead
    };
    release_resampled(vm, &dead);
    drop(dead);
    Ok(0)
}

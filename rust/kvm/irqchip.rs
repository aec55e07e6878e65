// SPDX-License-Identifier: GPL-2.0

//! The full in-kernel irqchip: `KVM_CREATE_IRQCHIP` (a PIC pair and an I/O APIC beside
//! the local APICs), `KVM_IRQ_LINE(_STATUS)`, `KVM_GET/SET_IRQCHIP`, and the guest's
//! accesses to those chips.
//!
//! Locking: the chips are under `Vm::irqchip` (a mutex: an I/O APIC delivery takes the
//! VM mutex to find its destinations, so the order is irqchip, then `Vm::locked`).
//! Nothing holds `Vm::locked` while it takes the irqchip.

use super::irq::{self, Route, Target};
use super::uaccess;
use super::vm::Vm;
use crate::uapi::*;
use crate::x86::ioapic::{self, Ioapic};
use crate::x86::lapic::IrqRequest;
use crate::x86::pic::{self, Pic, Source};
use core::mem::{offset_of, size_of};
use core::sync::atomic::Ordering;
use kernel::prelude::*;

/// The chips of a VM with the full in-kernel irqchip.
pub(crate) struct Chips {
    pic: Pic,
    ioapic: Ioapic,
}

/// Delivery of the I/O APIC's messages to the VM's local APICs.
struct ToApics<'a>(&'a Vm);

impl ioapic::Deliver for ToApics<'_> {
    fn deliver(&mut self, irq: &IrqRequest, took: &mut dyn FnMut(u32)) -> u32 {
        irq::deliver_to(self.0, irq, took)
    }
}

/// KVM's default routing: GSIs 0-23 to the I/O APIC pin of the same number, GSIs 0-15
/// also to the PIC pin of that number.
fn default_routes() -> Result<KVec<Route>> {
    let mut r = KVec::with_capacity(40, GFP_KERNEL_ACCOUNT)?;
    for gsi in 0..ioapic::PINS {
        r.push(
            Route {
                gsi,
                target: Target::Irqchip {
                    chip: KVM_IRQCHIP_IOAPIC,
                    pin: gsi,
                },
            },
            GFP_KERNEL_ACCOUNT,
        )?;
        if gsi < pic::PINS {
            r.push(
                Route {
                    gsi,
                    target: Target::Irqchip {
                        chip: gsi / 8,
                        pin: gsi % 8,
                    },
                },
                GFP_KERNEL_ACCOUNT,
            )?;
        }
    }
    Ok(r)
}

/// `KVM_CREATE_IRQCHIP`.
pub(crate) fn create(vm: &Vm) -> Result<isize> {
    // The irqchip lock comes before the VM mutex (see the module's comment).
    let mut chips = vm.irqchip.lock();
    let mut l = vm.locked.lock();
    if vm.lapic_in_kernel.load(Ordering::Acquire) {
        return Err(EEXIST);
    }
    if !l.vcpus.is_empty() {
        return Err(EINVAL);
    }
    let routes = default_routes()?;
    *chips = Some(Chips {
        pic: Pic::new(),
        ioapic: Ioapic::new(),
    });
    l.routes = routes;
    vm.full_irqchip.store(true, Ordering::Release);
    vm.lapic_in_kernel.store(true, Ordering::Release);
    Ok(0)
}

/// What the chips asked of the VM during an operation, acted on once the irqchip lock
/// is dropped.
#[must_use]
struct After {
    wake: bool,
    pic: crate::x86::pic::Effect,
    ioapic: ioapic::Effect,
}

/// After an operation: publish the PIC's output and collect the chips' requests.
fn finish(vm: &Vm, c: &mut Chips) -> After {
    vm.pic_output.store(c.pic.output, Ordering::Release);
    let pic = c.pic.take_effect();
    After {
        wake: pic.wake,
        pic,
        ioapic: c.ioapic.take_effect(),
    }
}

impl After {
    /// Wakes the vCPU that takes ExtINT when the PIC's output rose (as KVM's
    /// `pic_unlock`), and runs the ack and mask notifiers (the PIT's reinjection).
    fn run(self, vm: &Vm) {
        if self.wake {
            wake_extint(vm);
        }
        let pins = |bits: u32, n: u32| (0..n).filter(move |p| bits & 1 << p != 0);
        for pin in pins(u32::from(self.pic.acked), pic::PINS) {
            notify(vm, pin / 8, pin % 8, true);
        }
        for pin in pins(u32::from(self.pic.unmasked), pic::PINS) {
            notify(vm, pin / 8, pin % 8, false);
        }
        for pin in pins(self.ioapic.unmasked, ioapic::PINS) {
            notify(vm, KVM_IRQCHIP_IOAPIC, pin, false);
        }
    }
}

/// An interrupt on (chip, pin) was acknowledged (`ack`) or the pin unmasked: the
/// listeners of the GSI routed there hear of it (KVM's `kvm_notify_acked_irq` and
/// `kvm_fire_mask_notifiers`): the PIT on GSI 0, resampling irqfds on theirs.
fn notify(vm: &Vm, chip: u32, pin: u32, ack: bool) {
    let pit = super::pit::listening(vm);
    if !pit && (!ack || vm.resamplers.load(Ordering::Acquire) == 0) {
        return;
    }
    let Some(gsi) = irq::gsi_of(vm, chip, pin) else {
        return;
    };
    if ack {
        irq::resample(vm, gsi);
    }
    if pit && gsi == 0 {
        if ack {
            super::pit::acked(vm);
        } else {
            super::pit::unmasked(vm);
        }
    }
}

fn wake_extint(vm: &Vm) {
    let l = vm.locked.lock();
    for v in l.vcpus.iter() {
        if let Some(mb) = v.apic.as_ref() {
            if mb.addressing().pic_intr {
                mb.post_extint();
                v.kick_apic();
                return;
            }
        }
    }
}

/// Whether some vCPU's local APIC passes ExtINT now.
fn any_accepts_extint(vm: &Vm) -> bool {
    vm.locked
        .lock()
        .vcpus
        .iter()
        .any(|v| v.apic.as_ref().is_some_and(|mb| mb.addressing().pic_intr))
}

/// Drives pin `pin` of irqchip `chip` (a routing entry's target); KVM's `set` result.
/// `line_status`: for `KVM_IRQ_LINE_STATUS` (the RTC pin's EOI tracking).
pub(crate) fn set_pin(
    vm: &Vm,
    chip: u32,
    pin: u32,
    source: Source,
    level: bool,
    line_status: bool,
) -> i32 {
    let mut g = vm.irqchip.lock();
    let Some(c) = (*g).as_mut() else {
        return -1;
    };
    let ret = match chip {
        KVM_IRQCHIP_IOAPIC => c
            .ioapic
            .set_irq(pin, source, level, line_status, &mut ToApics(vm)),
        _ => c
            .pic
            .set_irq(chip.saturating_mul(8).saturating_add(pin), source, level),
    };
    let after = finish(vm, c);
    drop(g);
    after.run(vm);
    ret
}

/// `KVM_IRQ_LINE` and `KVM_IRQ_LINE_STATUS`.
pub(crate) fn irq_line(vm: &Vm, arg: usize, status: bool) -> Result<isize> {
    // struct kvm_irq_level: the GSI (or, on the way back, the status), then the level.
    let mut ev: [u8; size_of::<kvm_irq_level>()] = uaccess::read(arg)?;
    if !vm.lapic_in_kernel.load(Ordering::Acquire) {
        return Err(ENXIO);
    }
    let gsi = get_u32(&ev, 0)?;
    let level = get_u32(&ev, offset_of!(kvm_irq_level, level))?;
    let r = irq::set_irq(vm, Source::User, gsi, level != 0, status);
    if status {
        put(&mut ev, 0, &r.to_le_bytes())?;
        uaccess::write(arg, &ev)?;
    }
    Ok(0)
}

/// The PIC's vector for the vCPU's interrupt acknowledge cycle, if it has one to give.
pub(crate) fn pic_ack(vm: &Vm) -> Option<u8> {
    let mut g = vm.irqchip.lock();
    let c = (*g).as_mut()?;
    if !c.pic.output {
        return None;
    }
    let v = c.pic.ack();
    let after = finish(vm, c);
    drop(g);
    after.run(vm);
    Some(v)
}

/// Whether an in-kernel device (PIC, ELCR, PIT, speaker port) claims `size` bytes at
/// I/O port `port`.
pub(crate) fn device_claims(vm: &Vm, port: u16, size: u8) -> bool {
    (vm.full_irqchip.load(Ordering::Acquire) && Pic::claims(port, size))
        || super::pit::claims(vm, port, size)
}

/// A guest IN or OUT to an in-kernel device's port: the value read (0 for an OUT), or
/// `None` when no device claims it.
pub(crate) fn device_pio(vm: &Vm, port: u16, size: u8, input: bool, value: u32) -> Option<u32> {
    super::pit::pio(vm, port, size, input, value).or_else(|| pio(vm, port, size, input, value))
}

/// A guest IN or OUT the in-kernel PIC claims; `None` when it claims nothing.
fn pio(vm: &Vm, port: u16, size: u8, input: bool, value: u32) -> Option<u32> {
    if !vm.full_irqchip.load(Ordering::Acquire) || !Pic::claims(port, size) {
        return None;
    }
    // An ICW1 clears latched edges from ISR only while some APIC takes ExtINT (KVM).
    let accepting = !input && port & 1 == 0 && value & 0x10 != 0 && any_accepts_extint(vm);
    let mut g = vm.irqchip.lock();
    let c = (*g).as_mut()?;
    let v = if input {
        u32::from(c.pic.io_read(port, size))
    } else {
        c.pic.io_write(port, size, value as u8, accepting);
        0
    };
    let after = finish(vm, c);
    drop(g);
    after.run(vm);
    Some(v)
}

/// A guest MMIO access the in-kernel I/O APIC claims; `None` when it is not its window.
pub(crate) fn mmio(vm: &Vm, gpa: u64, size: u8, write: bool, value: u64) -> Option<u64> {
    if !vm.full_irqchip.load(Ordering::Acquire) {
        return None;
    }
    let mut g = vm.irqchip.lock();
    let c = (*g).as_mut()?;
    if !c.ioapic.claims(gpa) {
        return None;
    }
    let v = if write {
        c.ioapic.mmio_write(gpa, size, value, &mut ToApics(vm));
        0
    } else {
        c.ioapic.mmio_read(gpa)
    };
    let after = finish(vm, c);
    drop(g);
    after.run(vm);
    Some(v)
}

/// vCPU `vcpu_id`'s local APIC EOI'd `vector` (level-triggered there when `level`). As
/// in KVM, the listeners hear of the acknowledgement (a resampling irqfd lowers its
/// line) before the I/O APIC decides whether a level interrupt is still asserted.
pub(crate) fn eoi(vm: &Vm, vcpu_id: u32, vector: u8, level: bool) {
    if !vm.full_irqchip.load(Ordering::Acquire) {
        return;
    }
    let pins = match (*vm.irqchip.lock()).as_mut() {
        Some(c) => {
            c.ioapic.eoi_from(vcpu_id, vector);
            c.ioapic.eoi_pins(vector)
        }
        None => return,
    };
    for pin in (0..ioapic::PINS).filter(|p| pins & 1 << p != 0) {
        notify(vm, KVM_IRQCHIP_IOAPIC, pin, true);
    }
    if !level || pins == 0 {
        return;
    }
    let now = crate::sys::wait::now_ns();
    let mut g = vm.irqchip.lock();
    let Some(c) = (*g).as_mut() else {
        return;
    };
    c.ioapic.eoi_level(pins, now, &mut ToApics(vm));
    vm.ioapic_deferred_ns
        .store(deferred_deadline(&c.ioapic), Ordering::Release);
    let after = finish(vm, c);
    drop(g);
    after.run(vm);
}

fn deferred_deadline(io: &Ioapic) -> u64 {
    if io.deferred != 0 {
        io.deferred_until_ns
    } else {
        0
    }
}

/// Before an entry: sends the level interrupts the EOI-storm guard held back once
/// their delay is over. Returns when to look again (ns; `None`: nothing waits).
pub(crate) fn run_deferred(vm: &Vm) -> Option<u64> {
    let until = vm.ioapic_deferred_ns.load(Ordering::Acquire);
    if until == 0 {
        return None;
    }
    let now = crate::sys::wait::now_ns();
    if now < until {
        return Some(until - now);
    }
    let mut g = vm.irqchip.lock();
    if let Some(c) = (*g).as_mut() {
        c.ioapic.run_deferred(now, &mut ToApics(vm));
        vm.ioapic_deferred_ns
            .store(deferred_deadline(&c.ioapic), Ordering::Release);
    }
    None
}

/// Offset of the chip union in `struct kvm_irqchip`.
const CHIP: usize = offset_of!(kvm_irqchip, chip);

fn pic_state(buf: &[u8]) -> Result<kvm_pic_state> {
    let b = buf.get(CHIP..).ok_or(EINVAL)?;
    let mut s = kvm_pic_state::default();
    let f = [
        &mut s.last_irr,
        &mut s.irr,
        &mut s.imr,
        &mut s.isr,
        &mut s.priority_add,
        &mut s.irq_base,
        &mut s.read_reg_select,
        &mut s.poll,
        &mut s.special_mask,
        &mut s.init_state,
        &mut s.auto_eoi,
        &mut s.rotate_on_auto_eoi,
        &mut s.special_fully_nested_mode,
        &mut s.init4,
        &mut s.elcr,
        &mut s.elcr_mask,
    ];
    for (dst, src) in f.into_iter().zip(b.iter()) {
        *dst = *src;
    }
    Ok(s)
}

fn put_pic_state(buf: &mut [u8], s: &kvm_pic_state) -> Result {
    let b = buf
        .get_mut(CHIP..CHIP + size_of::<kvm_pic_state>())
        .ok_or(EINVAL)?;
    let f = [
        s.last_irr,
        s.irr,
        s.imr,
        s.isr,
        s.priority_add,
        s.irq_base,
        s.read_reg_select,
        s.poll,
        s.special_mask,
        s.init_state,
        s.auto_eoi,
        s.rotate_on_auto_eoi,
        s.special_fully_nested_mode,
        s.init4,
        s.elcr,
        s.elcr_mask,
    ];
    b.copy_from_slice(&f);
    Ok(())
}

fn get_u32(buf: &[u8], at: usize) -> Result<u32> {
    let b = buf.get(at..at + 4).ok_or(EINVAL)?;
    Ok(u32::from_le_bytes(b.try_into().map_err(|_| EINVAL)?))
}

fn get_u64(buf: &[u8], at: usize) -> Result<u64> {
    let b = buf.get(at..at + 8).ok_or(EINVAL)?;
    Ok(u64::from_le_bytes(b.try_into().map_err(|_| EINVAL)?))
}

fn put(buf: &mut [u8], at: usize, v: &[u8]) -> Result {
    buf.get_mut(at..at + v.len())
        .ok_or(EINVAL)?
        .copy_from_slice(v);
    Ok(())
}

const IO_BASE: usize = CHIP + offset_of!(kvm_ioapic_state, base_address);
const IO_SEL: usize = CHIP + offset_of!(kvm_ioapic_state, ioregsel);
const IO_ID: usize = CHIP + offset_of!(kvm_ioapic_state, id);
const IO_IRR: usize = CHIP + offset_of!(kvm_ioapic_state, irr);
const IO_REDIR: usize = CHIP + offset_of!(kvm_ioapic_state, redirtbl);

type ChipBuf = [u8; size_of::<kvm_irqchip>()];

/// `KVM_GET_IRQCHIP`.
pub(crate) fn get(vm: &Vm, arg: usize) -> Result<isize> {
    let mut buf: ChipBuf = uaccess::read(arg)?;
    let chip = get_u32(&buf, 0)?;
    {
        let g = vm.irqchip.lock();
        let Some(c) = (*g).as_ref() else {
            return Err(ENXIO);
        };
        match chip {
            KVM_IRQCHIP_PIC_MASTER | KVM_IRQCHIP_PIC_SLAVE => {
                let s = c.pic.chips.get(chip as usize).ok_or(EINVAL)?;
                put_pic_state(&mut buf, s)?;
            }
            KVM_IRQCHIP_IOAPIC => {
                let io = &c.ioapic;
                put(&mut buf, IO_BASE, &io.base.to_le_bytes())?;
                put(&mut buf, IO_SEL, &io.ioregsel.to_le_bytes())?;
                put(&mut buf, IO_ID, &io.id.to_le_bytes())?;
                put(&mut buf, IO_IRR, &io.reported_irr().to_le_bytes())?;
                for (i, e) in io.redirtbl.iter().enumerate() {
                    put(&mut buf, IO_REDIR + 8 * i, &e.to_le_bytes())?;
                }
            }
            _ => return Err(EINVAL),
        }
    }
    uaccess::write(arg, &buf)?;
    Ok(0)
}

/// `KVM_SET_IRQCHIP`: every value is taken, as in KVM; the models mask what they use.
pub(crate) fn set(vm: &Vm, arg: usize) -> Result<isize> {
    let buf: ChipBuf = uaccess::read(arg)?;
    let chip = get_u32(&buf, 0)?;
    let mut g = vm.irqchip.lock();
    let Some(c) = (*g).as_mut() else {
        return Err(ENXIO);
    };
    let r = match chip {
        KVM_IRQCHIP_PIC_MASTER | KVM_IRQCHIP_PIC_SLAVE => {
            let s = pic_state(&buf)?;
            if let Some(dst) = c.pic.chips.get_mut(chip as usize) {
                *dst = s;
            }
            Ok(0)
        }
        KVM_IRQCHIP_IOAPIC => {
            let mut redir = [0u64; ioapic::PINS as usize];
            for (i, e) in redir.iter_mut().enumerate() {
                *e = get_u64(&buf, IO_REDIR + 8 * i)?;
            }
            c.ioapic.load(
                get_u64(&buf, IO_BASE)?,
                get_u32(&buf, IO_SEL)?,
                get_u32(&buf, IO_ID)?,
                get_u32(&buf, IO_IRR)?,
                &redir,
                &mut ToApics(vm),
            );
            Ok(0)
        }
        _ => Err(EINVAL),
    };
    // KVM recomputes the PIC's output whichever chip was loaded.
    c.pic.update();
    let after = finish(vm, c);
    drop(g);
    after.run(vm);
    r
}

// SPDX-License-Identifier: GPL-2.0

//! The in-kernel PIT: `KVM_CREATE_PIT2` (and the old `KVM_CREATE_PIT`),
//! `KVM_GET/SET_PIT(2)`, `KVM_REINJECT_CONTROL`, the guest's port accesses, and counter
//! 0's ticks on GSI 0 with KVM's reinjection policy.
//!
//! Locking: the model and its host timer are under `Vm::pit`. A tick runs from the
//! timer's work item and takes the irqchip and `Vm::locked` but never `Vm::pit`, so code
//! holding `Vm::pit` may wait for a running tick (rearming the timer does) as long as it
//! holds neither of the others.

use super::irq;
use super::uaccess;
use super::vm::Vm;
use crate::sys::ptimer::PTimer;
use crate::uapi::*;
use crate::x86::pic::Source;
use crate::x86::pit::{Pit, TimerOp};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use kernel::prelude::*;

/// Ticks waiting for the guest to acknowledge the previous one are counted up to this
/// (a guest that never acknowledges must not make the count grow without end).
const PENDING_MAX: u32 = 1 << 20;

/// The PIT's device state.
pub(crate) struct PitDev {
    model: Pit,
    /// KVM_PIT_SPEAKER_DUMMY: port 0x61 is the PIT's too.
    speaker: bool,
    timer: PTimer,
}

/// Counter 0's interrupt bookkeeping, shared with the timer's work item.
#[derive(Default)]
pub(crate) struct PitIrq {
    /// A PIT exists.
    exists: AtomicBool,
    /// Its port 0x61 too (KVM_PIT_SPEAKER_DUMMY).
    speaker: AtomicBool,
    /// KVM_REINJECT_CONTROL: every tick is delivered, each after the guest acknowledged
    /// the one before (KVM's default).
    reinject: AtomicBool,
    /// Ticks not yet acknowledged (with reinjection).
    pending: AtomicU32,
    /// The last tick was acknowledged (or none was sent).
    irq_ack: AtomicBool,
}

impl PitIrq {
    fn reset(&self) {
        self.pending.store(0, Ordering::Release);
        self.irq_ack.store(true, Ordering::Release);
    }
}

fn now() -> u64 {
    crate::sys::wait::now_ns()
}

/// Sends one tick on GSI 0 unless reinjection waits for the previous one's
/// acknowledgement (KVM's `pit_do_work`).
fn inject(vm: &Vm) {
    let p = &vm.pit_irq;
    if p.reinject.load(Ordering::Acquire) && !p.irq_ack.swap(false, Ordering::AcqRel) {
        return;
    }
    irq::set_irq(vm, Source::Pit, 0, true, false);
    irq::set_irq(vm, Source::Pit, 0, false, false);
}

/// Counter 0's timer expired `n` times.
///
/// # Safety
///
/// `owner` is the `Vm` whose PIT owns the timer; the VM frees the timer (which waits for
/// this callback) before it is freed.
unsafe extern "C" fn tick(owner: *const c_void, n: u32) {
    // SAFETY: See the function's contract.
    let vm = unsafe { &*owner.cast::<Vm>() };
    let p = &vm.pit_irq;
    if p.reinject.load(Ordering::Acquire) {
        let _ = p
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(v.saturating_add(n).min(PENDING_MAX))
            });
    }
    inject(vm);
}

/// Whether the PIT listens for GSI 0's acknowledgements.
pub(crate) fn listening(vm: &Vm) -> bool {
    vm.pit_irq.exists.load(Ordering::Acquire) && vm.pit_irq.reinject.load(Ordering::Acquire)
}

/// The guest acknowledged GSI 0 (KVM's `kvm_pit_ack_irq`): the next waiting tick goes.
pub(crate) fn acked(vm: &Vm) {
    let p = &vm.pit_irq;
    p.irq_ack.store(true, Ordering::Release);
    let left = p
        .pending
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| v.checked_sub(1));
    if matches!(left, Ok(v) if v > 1) {
        inject(vm);
    }
}

/// The guest unmasked GSI 0 (KVM's `pit_mask_notifier`): ticks missed while it was
/// masked are forgotten.
pub(crate) fn unmasked(vm: &Vm) {
    vm.pit_irq.reset();
}

fn apply(timer: &PTimer, op: TimerOp) {
    match op {
        TimerOp::Keep => {}
        TimerOp::Stop => timer.stop(),
        TimerOp::Start {
            delay_ns,
            period_ns,
        } => timer.start(delay_ns, period_ns),
    }
}

/// `KVM_CREATE_PIT2` (`flags` from `struct kvm_pit_config`) and `KVM_CREATE_PIT`.
pub(crate) fn create(vm: &Vm, flags: u32) -> Result<isize> {
    let mut g = vm.pit.lock();
    if g.is_some() {
        return Err(EEXIST);
    }
    if !vm.full_irqchip.load(Ordering::Acquire) {
        return Err(ENOENT);
    }
    // SAFETY: The VM drops its PIT, and with it the timer, before it is freed.
    let timer = unsafe { PTimer::new(tick, core::ptr::from_ref(vm).cast()) }?;
    *g = Some(PitDev {
        model: Pit::new(now()),
        speaker: flags & KVM_PIT_SPEAKER_DUMMY != 0,
        timer,
    });
    vm.pit_irq.reset();
    vm.pit_irq.reinject.store(true, Ordering::Release);
    vm.pit_irq
        .speaker
        .store(flags & KVM_PIT_SPEAKER_DUMMY != 0, Ordering::Release);
    vm.pit_irq.exists.store(true, Ordering::Release);
    Ok(0)
}

/// `KVM_CREATE_PIT2`.
pub(crate) fn create2(vm: &Vm, arg: usize) -> Result<isize> {
    let cfg: kvm_pit_config = uaccess::read(arg)?;
    create(vm, cfg.flags)
}

/// Whether the PIT claims `size` bytes at I/O port `port`.
pub(crate) fn claims(vm: &Vm, port: u16, size: u8) -> bool {
    vm.pit_irq.exists.load(Ordering::Acquire)
        && Pit::claims(port, size, vm.pit_irq.speaker.load(Ordering::Acquire))
}

/// A guest IN or OUT the PIT claims; `None` when it claims nothing.
pub(crate) fn pio(vm: &Vm, port: u16, size: u8, input: bool, value: u32) -> Option<u32> {
    if !vm.pit_irq.exists.load(Ordering::Acquire) || !Pit::claims(port, size, true) {
        return None;
    }
    let mut g = vm.pit.lock();
    let d = (*g).as_mut()?;
    if !Pit::claims(port, size, d.speaker) {
        return None;
    }
    if input {
        return Some(u32::from(d.model.io_read(port, now())));
    }
    let op = d.model.io_write(port, value, now());
    // A newly armed counter starts its reinjection count afresh (KVM's
    // `create_pit_timer`).
    if matches!(op, TimerOp::Start { .. }) {
        vm.pit_irq.reset();
    }
    apply(&d.timer, op);
    Some(0)
}

/// `KVM_GET_PIT` and `KVM_GET_PIT2`.
pub(crate) fn get(vm: &Vm, arg: usize, two: bool) -> Result<isize> {
    let (channels, flags) = {
        let g = vm.pit.lock();
        let d = (*g).as_ref().ok_or(ENXIO)?;
        (d.model.channels, d.model.flags)
    };
    if two {
        let s = kvm_pit_state2 {
            channels,
            flags,
            reserved: [0; 9],
        };
        uaccess::write(arg, &s)?;
    } else {
        uaccess::write(arg, &kvm_pit_state { channels })?;
    }
    Ok(0)
}

/// `KVM_SET_PIT` and `KVM_SET_PIT2`: the state as given (KVM checks none of it).
pub(crate) fn set(vm: &Vm, arg: usize, two: bool) -> Result<isize> {
    let (channels, flags) = if two {
        let s: kvm_pit_state2 = uaccess::read(arg)?;
        (s.channels, Some(s.flags))
    } else {
        let s: kvm_pit_state = uaccess::read(arg)?;
        (s.channels, None)
    };
    let mut g = vm.pit.lock();
    let d = (*g).as_mut().ok_or(ENXIO)?;
    let op = d.model.load(&channels, flags, now());
    // A newly armed counter starts its reinjection count afresh (KVM's
    // `create_pit_timer`).
    if matches!(op, TimerOp::Start { .. }) {
        vm.pit_irq.reset();
    }
    apply(&d.timer, op);
    Ok(0)
}

/// `KVM_REINJECT_CONTROL`.
pub(crate) fn reinject_control(vm: &Vm, arg: usize) -> Result<isize> {
    let c: kvm_reinject_control = uaccess::read(arg)?;
    let g = vm.pit.lock();
    if g.is_none() {
        return Err(ENXIO);
    }
    let on = c.pit_reinject != 0;
    if on && !vm.pit_irq.reinject.load(Ordering::Acquire) {
        // Turning it on starts from a clean count, as KVM's.
        vm.pit_irq.reset();
    }
    vm.pit_irq.reinject.store(on, Ordering::Release);
    Ok(0)
}

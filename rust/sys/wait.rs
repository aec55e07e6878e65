// SPDX-License-Identifier: GPL-2.0

//! Blocking a halted vCPU: a wait queue other vCPUs and VM ioctls wake, the monotonic
//! clock its timeouts are measured in, and the kick that forces a vCPU out of guest mode
//! without waiting for it.

use super::ffi;
use kernel::prelude::*;

/// How a wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Woken {
    /// The condition held.
    Ready,
    /// A signal is pending.
    Signal,
    /// The timeout passed.
    Timeout,
}

/// A kernel wait queue (`wait_queue_head_t`), owned.
pub(crate) struct WaitQueue(*mut c_void);

// SAFETY: A wait queue is made for concurrent waking and waiting from any task.
unsafe impl Send for WaitQueue {}
// SAFETY: As above.
unsafe impl Sync for WaitQueue {}

impl WaitQueue {
    pub(crate) fn new() -> Result<Self> {
        // SAFETY: Allocates and initializes a wait queue head.
        let p = unsafe { ffi::rkvm_waitq_alloc() };
        if p.is_null() {
            return Err(ENOMEM);
        }
        Ok(Self(p))
    }

    /// Wakes every task waiting here (they re-check their conditions).
    pub(crate) fn wake(&self) {
        // SAFETY: `self.0` is a live wait queue.
        unsafe { ffi::rkvm_waitq_wake(self.0) };
    }

    /// Sleeps until `cond` holds, a signal arrives, or `timeout_ns` passed (`None`: no
    /// timeout). `cond` runs in this task, before sleeping and after every wake-up.
    pub(crate) fn wait(&self, cond: &dyn Fn() -> bool, timeout_ns: Option<u64>) -> Woken {
        extern "C" fn trampoline(ctx: *mut c_void) -> c_int {
            // SAFETY: `ctx` is the `&&dyn Fn` below, alive for the whole wait.
            let f = unsafe { &*ctx.cast::<&dyn Fn() -> bool>() };
            c_int::from(f())
        }
        let mut f: &dyn Fn() -> bool = cond;
        let ctx = core::ptr::from_mut(&mut f).cast::<c_void>();
        // A zero timeout would mean "forever" to the shim.
        let ns = timeout_ns.map_or(0, |n| n.max(1));
        // SAFETY: `self.0` is live; `trampoline` and `ctx` stay valid until it returns.
        match unsafe { ffi::rkvm_waitq_wait(self.0, Some(trampoline), ctx, ns) } {
            0 => Woken::Ready,
            r if r == -(bindings_errno::EINTR) => Woken::Signal,
            _ => Woken::Timeout,
        }
    }
}

impl Drop for WaitQueue {
    fn drop(&mut self) {
        // SAFETY: Nobody waits on a queue whose owner is being dropped.
        unsafe { ffi::rkvm_waitq_free(self.0) };
    }
}

mod bindings_errno {
    pub(super) const EINTR: i32 = kernel::bindings::EINTR as i32;
}

/// kvm's halt-polling parameters (module parameters, writable at run time).
pub(crate) struct HaltPoll {
    /// The longest poll, in ns (0: no polling).
    pub(crate) max_ns: u32,
    /// The factor a vCPU's poll grows by.
    pub(crate) grow: u32,
    /// The first poll, in ns.
    pub(crate) grow_start: u32,
    /// The divisor a vCPU's poll shrinks by.
    pub(crate) shrink: u32,
}

/// The halt-polling parameters as they read now.
pub(crate) fn halt_poll() -> HaltPoll {
    let mut p = ffi::rkvm_halt_poll::default();
    // SAFETY: Fills `p` from the module's parameters.
    unsafe { ffi::rkvm_halt_poll_params(&mut p) };
    HaltPoll {
        max_ns: p.ns,
        grow: p.grow,
        grow_start: p.grow_start,
        shrink: p.shrink,
    }
}

/// CLOCK_MONOTONIC, in nanoseconds.
pub(crate) fn now_ns() -> u64 {
    // SAFETY: Reads the clock.
    unsafe { ffi::rkvm_ktime_get_ns() }
}

/// CLOCK_BOOTTIME (counts across suspend), in nanoseconds.
pub(crate) fn boot_ns() -> u64 {
    // SAFETY: Reads the clock.
    unsafe { ffi::rkvm_ktime_get_boottime_ns() }
}

/// Interrupts `cpu` (a VM exit if it is in guest mode) without waiting.
pub(crate) fn kick_cpu(cpu: u32) {
    // SAFETY: An asynchronous no-op cross call; `cpu` out of range is refused by the
    // kernel's own checks.
    unsafe { ffi::rkvm_kick_cpu_async(cpu) };
}

/// The per-CPU deadline timers: an interrupt on this CPU at a chosen time (the SVM
/// window's stand-in for VMX's preemption timer). Exist while the value lives.
///
/// # Invariants
///
/// `rkvm_deadline_timers_init` ran, and `rkvm_deadline_timers_exit` runs in `drop`.
pub(crate) struct DeadlineTimers(());

impl DeadlineTimers {
    pub(crate) fn new() -> Self {
        // SAFETY: Initializes the module's own per-CPU timers, once per instance (the
        // SVM backend holds the only one).
        unsafe { ffi::rkvm_deadline_timers_init() };
        // INVARIANT: initialized just above.
        Self(())
    }

    /// Arms this CPU's timer for `monotonic_ns` (CLOCK_MONOTONIC).
    pub(crate) fn arm(&self, monotonic_ns: u64, _irq: &super::cpu::IrqGuard) {
        // SAFETY: The timers are initialized (invariant); interrupts are off, so this CPU
        // stays the one armed.
        unsafe { ffi::rkvm_deadline_timer_arm(monotonic_ns) };
    }

    /// Disarms this CPU's timer (if it has not fired).
    pub(crate) fn cancel(&self, _irq: &super::cpu::IrqGuard) {
        // SAFETY: As in `arm`.
        unsafe { ffi::rkvm_deadline_timer_cancel() };
    }
}

impl Drop for DeadlineTimers {
    fn drop(&mut self) {
        // SAFETY: By the invariant they were initialized; nothing arms them any more (the
        // backend is going away, with no vCPU left).
        unsafe { ffi::rkvm_deadline_timers_exit() };
    }
}

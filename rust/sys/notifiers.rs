// SPDX-License-Identifier: GPL-2.0

//! Registrations with the kernel's notifier chains, each an RAII object that unregisters
//! when dropped: CPU hotplug states, the reboot notifier, syscore ops, preempt notifiers
//! and user-return notifiers. Callbacks are plain `extern "C"` functions of the core.

use super::{ffi, to_result};
use core::marker::PhantomData;
use core::ptr::NonNull;
use kernel::prelude::*;

/// A dynamic CPU hotplug state in the online section (`cpuhp_setup_state_nocalls`).
pub(crate) struct CpuHotplug {
    state: c_int,
}

impl CpuHotplug {
    /// Registers `online`/`offline`, run on each CPU as it comes up or goes down. CPUs
    /// already online are not called back ("nocalls").
    pub(crate) fn register(
        name: &'static CStr,
        online: extern "C" fn(cpu: c_uint) -> c_int,
        offline: extern "C" fn(cpu: c_uint) -> c_int,
    ) -> Result<Self> {
        // SAFETY: `name` is 'static; the callbacks are valid functions of this module,
        // which removes the state before it is unloaded (`Drop`).
        let state =
            unsafe { ffi::rkvm_cpuhp_setup(name.as_char_ptr(), Some(online), Some(offline)) };
        to_result(state)?;
        Ok(Self { state })
    }
}

impl Drop for CpuHotplug {
    fn drop(&mut self) {
        // SAFETY: `state` was returned by a successful setup.
        unsafe { ffi::rkvm_cpuhp_remove(self.state) };
    }
}

/// The module's reboot notifier (one per module).
pub(crate) struct RebootNotifier(PhantomData<*mut ()>);

// SAFETY: Unregistering may happen from any thread.
unsafe impl Send for RebootNotifier {}
// SAFETY: No `&self` methods.
unsafe impl Sync for RebootNotifier {}

impl RebootNotifier {
    /// Registers `on_reboot`, called before the machine reboots, halts or powers off.
    pub(crate) fn register(on_reboot: extern "C" fn()) -> Result<Self> {
        // SAFETY: `on_reboot` is a function of this module; unregistered in `drop`.
        to_result(unsafe { ffi::rkvm_reboot_notifier_register(Some(on_reboot)) })?;
        Ok(Self(PhantomData))
    }
}

impl Drop for RebootNotifier {
    fn drop(&mut self) {
        // SAFETY: Registered in `register`.
        unsafe { ffi::rkvm_reboot_notifier_unregister() };
    }
}

/// The module's syscore ops (one per module): suspend, resume, shutdown.
pub(crate) struct Syscore(PhantomData<*mut ()>);

// SAFETY: Unregistering may happen from any thread.
unsafe impl Send for Syscore {}
// SAFETY: No `&self` methods.
unsafe impl Sync for Syscore {}

impl Syscore {
    /// Registers the three callbacks; they run on one CPU with interrupts off.
    pub(crate) fn register(
        suspend: extern "C" fn() -> c_int,
        resume: extern "C" fn(),
        shutdown: extern "C" fn(),
    ) -> Self {
        // SAFETY: The callbacks are functions of this module; unregistered in `drop`.
        unsafe { ffi::rkvm_syscore_register(Some(suspend), Some(resume), Some(shutdown)) };
        Self(PhantomData)
    }
}

impl Drop for Syscore {
    fn drop(&mut self) {
        // SAFETY: Registered in `register`.
        unsafe { ffi::rkvm_syscore_unregister() };
    }
}

/// The preempt notifier ops (`kvm_preempt_ops`): the two callbacks every notifier calls.
pub(crate) struct PreemptOps(PhantomData<*mut ()>);

// SAFETY: Tearing down may happen from any thread.
unsafe impl Send for PreemptOps {}
// SAFETY: No `&self` methods.
unsafe impl Sync for PreemptOps {}

impl PreemptOps {
    /// Sets `sched_in(ctx, cpu)` and `sched_out(ctx)` and enables preempt notifiers.
    pub(crate) fn init(
        sched_in: extern "C" fn(ctx: *mut c_void, cpu: c_int),
        sched_out: extern "C" fn(ctx: *mut c_void),
    ) -> Self {
        // SAFETY: The callbacks are functions of this module; no notifier outlives the
        // module (each is unregistered when its vCPU leaves KVM_RUN).
        unsafe { ffi::rkvm_preempt_ops_init(Some(sched_in), Some(sched_out)) };
        Self(PhantomData)
    }
}

impl Drop for PreemptOps {
    fn drop(&mut self) {
        // SAFETY: Balances `init`.
        unsafe { ffi::rkvm_preempt_ops_exit() };
    }
}

/// One preempt notifier; `ctx` is handed to the callbacks of [`PreemptOps`].
///
/// # Invariants
///
/// `raw` is a live notifier from `rkvm_preempt_notifier_alloc`, attached to at most one
/// task, and only between `attach` and the drop of the returned guard.
pub(crate) struct PreemptNotifier {
    raw: NonNull<c_void>,
}

// SAFETY: The notifier is just memory until attached; attaching is scoped by a guard.
unsafe impl Send for PreemptNotifier {}
// SAFETY: `attach` takes `&mut self`.
unsafe impl Sync for PreemptNotifier {}

impl PreemptNotifier {
    /// A notifier whose callbacks get `ctx`. The caller keeps `ctx` valid while attached.
    pub(crate) fn new(ctx: *mut c_void) -> Result<Self> {
        // SAFETY: Allocation only.
        let raw = unsafe { ffi::rkvm_preempt_notifier_alloc(ctx) };
        Ok(Self {
            raw: NonNull::new(raw).ok_or(ENOMEM)?,
        })
    }

    /// Attaches the notifier to the current task until the guard is dropped.
    pub(crate) fn attach(&mut self) -> PreemptAttached<'_> {
        // SAFETY: Not attached anywhere (exclusive borrow); detached by the guard on the
        // same task.
        unsafe { ffi::rkvm_preempt_notifier_register(self.raw.as_ptr()) };
        PreemptAttached {
            n: self,
            _not_send: PhantomData,
        }
    }
}

impl Drop for PreemptNotifier {
    fn drop(&mut self) {
        // SAFETY: Not attached (any guard borrowed `self` and is gone).
        unsafe { ffi::rkvm_preempt_notifier_free(self.raw.as_ptr()) };
    }
}

/// A preempt notifier attached to the current task.
pub(crate) struct PreemptAttached<'a> {
    n: &'a mut PreemptNotifier,
    _not_send: PhantomData<*mut ()>,
}

impl Drop for PreemptAttached<'_> {
    fn drop(&mut self) {
        // SAFETY: Attached by `attach` to this same task (the guard is not `Send`).
        unsafe { ffi::rkvm_preempt_notifier_unregister(self.n.raw.as_ptr()) };
    }
}

/// The per-CPU user-return notifiers.
pub(crate) struct UserReturn(PhantomData<*mut ()>);

// SAFETY: Tearing down may happen from any thread.
unsafe impl Send for UserReturn {}
// SAFETY: `arm` only touches this CPU's notifier with preemption off.
unsafe impl Sync for UserReturn {}

impl UserReturn {
    /// Sets up one notifier per CPU calling `on_return(cpu)`.
    pub(crate) fn init(on_return: extern "C" fn(cpu: c_uint)) -> Result<Self> {
        // SAFETY: `on_return` is a function of this module; `drop` disarms every CPU.
        to_result(unsafe { ffi::rkvm_user_return_init(Some(on_return)) })?;
        Ok(Self(PhantomData))
    }

    /// Arms this CPU's notifier: `on_return` runs before the CPU next enters userspace.
    pub(crate) fn arm(&self, _irq: &super::cpu::IrqGuard) {
        // SAFETY: Interrupts (hence preemption) are off, as the shim requires.
        unsafe { ffi::rkvm_user_return_arm() };
    }
}

impl Drop for UserReturn {
    fn drop(&mut self) {
        // SAFETY: Runs every armed notifier now and frees them.
        unsafe { ffi::rkvm_user_return_exit() };
    }
}

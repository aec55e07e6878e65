// SPDX-License-Identifier: GPL-2.0

//! irqfds: eventfds hooked so that a signal runs a callback (from a work item) with the
//! owner and GSI they were assigned with. The hook itself (wait-queue entry, poll table,
//! work) lives in the C shim.

use super::ffi;
use kernel::prelude::*;

/// What a signalled irqfd calls: `fire(owner, gsi)`, in process context.
pub(crate) type Fire = unsafe extern "C" fn(owner: *const c_void, gsi: u32);

/// Set in the `gsi` a resampling irqfd's callback receives.
pub(crate) const RESAMPLE_TAG: u32 = 1 << 31;

/// An eventfd context held by reference (a resamplefd): signalled from any task.
pub(crate) struct EventCtx {
    ptr: *mut c_void,
}

// SAFETY: The context is reference counted and eventfd_signal() may run in any task.
unsafe impl Send for EventCtx {}
// SAFETY: As above.
unsafe impl Sync for EventCtx {}

impl EventCtx {
    /// The eventfd behind `fd` (`EBADF`, or `EINVAL` for another kind of file).
    pub(crate) fn get(fd: i32) -> Result<Self> {
        let mut err = 0;
        // SAFETY: Looks the fd up in the current task; `err` is a valid out-pointer.
        let ptr = unsafe { ffi::rkvm_eventfd_get(fd, &mut err) };
        if ptr.is_null() {
            return Err(Error::from_errno(err));
        }
        Ok(Self { ptr })
    }

    /// Adds 1 to the eventfd's count and wakes its readers.
    pub(crate) fn signal(&self) {
        // SAFETY: `ptr` holds a reference taken in `get`.
        unsafe { ffi::rkvm_eventfd_signal(self.ptr) };
    }
}

impl Drop for EventCtx {
    fn drop(&mut self) {
        // SAFETY: Drops the reference `get` took, once.
        unsafe { ffi::rkvm_eventfd_put(self.ptr) };
    }
}

/// An assigned irqfd. Dropping it unhooks it and waits for a running callback.
pub(crate) struct IrqFd {
    ptr: *mut c_void,
    pub(crate) gsi: u32,
    /// KVM_IRQFD_FLAG_RESAMPLE's eventfd: signalled when the guest acknowledges.
    pub(crate) resample: Option<EventCtx>,
}

// SAFETY: The shim's irqfd is only touched through its functions, which do their own
// locking against the eventfd's wake-ups.
unsafe impl Send for IrqFd {}
// SAFETY: As above; `&IrqFd` only reads.
unsafe impl Sync for IrqFd {}

impl IrqFd {
    /// Hooks eventfd `fd`.
    ///
    /// # Safety
    ///
    /// `owner` must stay valid for `fire` until the returned `IrqFd` is dropped.
    /// With `resample`, `fire` receives `gsi | RESAMPLE_TAG`.
    pub(crate) unsafe fn assign(
        fd: i32,
        gsi: u32,
        resample: Option<EventCtx>,
        fire: Fire,
        owner: *const c_void,
    ) -> Result<Self> {
        let mut err = 0;
        let tagged = if resample.is_some() {
            gsi | RESAMPLE_TAG
        } else {
            gsi
        };
        // SAFETY: `fire` and `owner` stay valid while the irqfd exists (the caller's
        // promise); `err` is a valid out-pointer.
        let ptr = unsafe { ffi::rkvm_irqfd_assign(fd, tagged, Some(fire), owner, &mut err) };
        if ptr.is_null() {
            return Err(Error::from_errno(err));
        }
        Ok(Self { ptr, gsi, resample })
    }

    /// Whether this irqfd was assigned for eventfd `fd`.
    pub(crate) fn is_for(&self, fd: i32) -> bool {
        // SAFETY: `ptr` is a live irqfd.
        unsafe { ffi::rkvm_irqfd_matches(self.ptr, fd) != 0 }
    }

    /// Whether its eventfd was closed (it no longer fires).
    pub(crate) fn is_dead(&self) -> bool {
        // SAFETY: `ptr` is a live irqfd.
        unsafe { ffi::rkvm_irqfd_dead(self.ptr) != 0 }
    }
}

/// Whether `fd` is an eventfd (`EBADF` or `EINVAL` otherwise), as KVM checks before
/// removing an irqfd.
pub(crate) fn check_eventfd(fd: i32) -> Result {
    // SAFETY: Looks the fd up in the current task and drops the reference at once.
    let r = unsafe { ffi::rkvm_eventfd_check(fd) };
    if r < 0 {
        return Err(Error::from_errno(r));
    }
    Ok(())
}

impl Drop for IrqFd {
    fn drop(&mut self) {
        // SAFETY: `ptr` is live and dropped once; after this nothing uses it.
        unsafe { ffi::rkvm_irqfd_free(self.ptr) };
    }
}

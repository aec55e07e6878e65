// SPDX-License-Identifier: GPL-2.0

//! Host timers for guest devices: an hrtimer whose expiries call back into rkvm from a
//! work item (process context), one-shot or periodic. The hrtimer and the work live in
//! the C shim.

use super::ffi;
use core::ptr::NonNull;
use kernel::prelude::*;

/// What expiries call: `fire(owner, expiries since the last call)`, in process context.
pub(crate) type Fire = unsafe extern "C" fn(owner: *const c_void, expiries: u32);

/// A device timer. Dropping it disarms it and waits for a running callback.
pub(crate) struct PTimer {
    ptr: NonNull<c_void>,
}

// SAFETY: The shim's timer is only touched through its functions, which synchronize
// with the hrtimer and the work item themselves.
unsafe impl Send for PTimer {}
// SAFETY: As above.
unsafe impl Sync for PTimer {}

impl PTimer {
    /// A disarmed timer.
    ///
    /// # Safety
    ///
    /// `owner` must stay valid for `fire` until the returned `PTimer` is dropped.
    pub(crate) unsafe fn new(fire: Fire, owner: *const c_void) -> Result<Self> {
        // SAFETY: `fire` and `owner` stay valid while the timer exists (the caller's
        // promise).
        let ptr = unsafe { ffi::rkvm_ptimer_new(Some(fire), owner) };
        Ok(Self {
            ptr: NonNull::new(ptr).ok_or(ENOMEM)?,
        })
    }

    /// Arms it `delay_ns` from now, then every `period_ns` (0: once). Waits for a
    /// running callback of the previous arming first, so the caller must not hold a
    /// lock that `fire` takes.
    pub(crate) fn start(&self, delay_ns: u64, period_ns: u64) {
        // SAFETY: `ptr` is a live timer.
        unsafe { ffi::rkvm_ptimer_start(self.ptr.as_ptr(), delay_ns, period_ns) };
    }

    /// Disarms it, waiting for a running callback (same rule as `start`).
    pub(crate) fn stop(&self) {
        // SAFETY: `ptr` is a live timer.
        unsafe { ffi::rkvm_ptimer_stop(self.ptr.as_ptr()) };
    }
}

impl Drop for PTimer {
    fn drop(&mut self) {
        // SAFETY: `ptr` is live and freed once; nothing uses it afterwards.
        unsafe { ffi::rkvm_ptimer_free(self.ptr.as_ptr()) };
    }
}

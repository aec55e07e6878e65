// SPDX-License-Identifier: GPL-2.0

//! An owned workqueue (`alloc_workqueue` / `destroy_workqueue`); the `kernel` crate only
//! offers the system queues.

use core::ptr::NonNull;
use kernel::bindings;
use kernel::prelude::*;

/// A workqueue of this module, destroyed (after draining) on drop.
pub(crate) struct OwnedQueue {
    raw: NonNull<bindings::workqueue_struct>,
}

// SAFETY: Workqueues may be used and destroyed from any thread.
unsafe impl Send for OwnedQueue {}
// SAFETY: Queueing work is thread-safe.
unsafe impl Sync for OwnedQueue {}

impl OwnedQueue {
    /// Allocates an unbound queue named `name`.
    pub(crate) fn new(name: &'static CStr) -> Result<Self> {
        // SAFETY: `name` is a 'static string used as a format without arguments.
        let raw = unsafe {
            bindings::alloc_workqueue_noprof(name.as_char_ptr(), bindings::wq_flags_WQ_UNBOUND, 0)
        };
        Ok(Self {
            raw: NonNull::new(raw).ok_or(ENOMEM)?,
        })
    }
}

impl Drop for OwnedQueue {
    fn drop(&mut self) {
        // SAFETY: Allocated in `new`; drains pending work first.
        unsafe { bindings::destroy_workqueue(self.raw.as_ptr()) };
    }
}

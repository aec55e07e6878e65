// SPDX-License-Identifier: GPL-2.0

//! The module's one global object, reachable from callbacks that get no context pointer
//! (CPU hotplug, reboot, syscore, user-return).

use core::pin::Pin;
use core::sync::atomic::{AtomicPtr, Ordering};
use kernel::prelude::*;

/// A published, pinned `T` that lives from [`Global::publish`] to [`Global::retract`].
///
/// # Invariants
///
/// `ptr` is null or comes from `KBox::into_raw` of a pinned box that only `retract` frees.
pub(crate) struct Global<T> {
    ptr: AtomicPtr<T>,
}

impl<T: Sync> Global<T> {
    /// An empty global.
    pub(crate) const fn new() -> Self {
        Self {
            ptr: AtomicPtr::new(core::ptr::null_mut()),
        }
    }

    /// Publishes `value`. `EBUSY` if something is already published.
    pub(crate) fn publish(&self, value: Pin<KBox<T>>) -> Result {
        // SAFETY: The box stays pinned: it is only turned back into a pinned box.
        let raw = KBox::into_raw(unsafe { Pin::into_inner_unchecked(value) });
        if self
            .ptr
            .compare_exchange(
                core::ptr::null_mut(),
                raw,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            // SAFETY: `raw` was not published; take it back.
            drop(unsafe { Pin::new_unchecked(KBox::from_raw(raw)) });
            return Err(EBUSY);
        }
        Ok(())
    }

    /// The published object, if any.
    pub(crate) fn get(&self) -> Option<&'static T> {
        let p = self.ptr.load(Ordering::Acquire);
        // SAFETY: By the invariant and the contract of `retract`, a non-null pointer is a
        // live object that outlives every caller of `get`.
        unsafe { p.as_ref() }
    }

    /// Takes the object back.
    ///
    /// # Safety
    ///
    /// No reference returned by [`Global::get`] may be alive or be taken afterwards: every
    /// callback that could call `get` has been unregistered and has finished.
    pub(crate) unsafe fn retract(&self) -> Option<Pin<KBox<T>>> {
        let p = self.ptr.swap(core::ptr::null_mut(), Ordering::AcqRel);
        if p.is_null() {
            return None;
        }
        // SAFETY: By the invariant `p` came from `KBox::into_raw` of a pinned box.
        Some(unsafe { Pin::new_unchecked(KBox::from_raw(p)) })
    }
}

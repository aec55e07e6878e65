// SPDX-License-Identifier: GPL-2.0

//! A memory shrinker (`shrinker_alloc` / `shrinker_register`): lets the kernel ask rkvm to
//! give back memory it can rebuild (EPT tables refault on demand) under memory pressure.

use core::ptr::NonNull;
use kernel::bindings;
use kernel::prelude::*;

/// A registered shrinker; freed (and unregistered) on drop.
pub(crate) struct Shrinker {
    raw: NonNull<bindings::shrinker>,
}

// SAFETY: `shrinker_free` may be called from any thread.
unsafe impl Send for Shrinker {}
// SAFETY: No `&self` methods touch the shrinker.
unsafe impl Sync for Shrinker {}

/// `count(): objects that could be freed`; `scan(n): free up to n, return how many`.
pub(crate) type CountFn = fn() -> u64;
/// See [`CountFn`].
pub(crate) type ScanFn = fn(u64) -> u64;

struct Callbacks {
    count: CountFn,
    scan: ScanFn,
}

/// # Safety
///
/// `s` is a shrinker registered by [`Shrinker::register`].
unsafe extern "C" fn count_trampoline(
    s: *mut bindings::shrinker,
    _sc: *mut bindings::shrink_control,
) -> c_ulong {
    // SAFETY: `private_data` is the 'static `Callbacks` set in `register`.
    let cb = unsafe { &*(*s).private_data.cast::<Callbacks>() };
    (cb.count)() as c_ulong
}

/// # Safety
///
/// `s` is a shrinker registered by [`Shrinker::register`]; `sc` is valid for the call.
unsafe extern "C" fn scan_trampoline(
    s: *mut bindings::shrinker,
    sc: *mut bindings::shrink_control,
) -> c_ulong {
    // SAFETY: `private_data` is the 'static `Callbacks` set in `register`; `sc` is valid for
    // the call.
    let (cb, n) = unsafe { (&*(*s).private_data.cast::<Callbacks>(), (*sc).nr_to_scan) };
    let freed = (cb.scan)(n as u64);
    if freed == 0 {
        bindings::SHRINK_STOP as c_ulong
    } else {
        freed as c_ulong
    }
}

impl Shrinker {
    /// Registers a shrinker named `name` with the two callbacks.
    pub(crate) fn register(name: &'static CStr, count: CountFn, scan: ScanFn) -> Result<Self> {
        // The callbacks live in a box owned by the shrinker, freed in `drop` once
        // `shrinker_free` guarantees that no callback runs any more.
        let cb = KBox::new(Callbacks { count, scan }, GFP_KERNEL)?;
        // SAFETY: `name` is a 'static C string used as the format with no arguments.
        let raw = unsafe { bindings::shrinker_alloc(0, name.as_char_ptr()) };
        let raw = NonNull::new(raw).ok_or(ENOMEM)?;
        // SAFETY: `raw` is a freshly allocated, not yet registered shrinker.
        unsafe {
            (*raw.as_ptr()).count_objects = Some(count_trampoline);
            (*raw.as_ptr()).scan_objects = Some(scan_trampoline);
            (*raw.as_ptr()).private_data = KBox::into_raw(cb).cast();
            bindings::shrinker_register(raw.as_ptr());
        }
        Ok(Self { raw })
    }
}

impl Drop for Shrinker {
    fn drop(&mut self) {
        // SAFETY: Registered in `register`; after `shrinker_free` returns no callback runs.
        let private = unsafe { (*self.raw.as_ptr()).private_data };
        // SAFETY: See above.
        unsafe { bindings::shrinker_free(self.raw.as_ptr()) };
        // SAFETY: `private` came from `KBox::into_raw` in `register`.
        drop(unsafe { KBox::from_raw(private.cast::<Callbacks>()) });
    }
}

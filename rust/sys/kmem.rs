// SPDX-License-Identifier: GPL-2.0

//! Typed kmem caches (`kmem_cache_create_usercopy`) and boxes allocated from them.
//!
//! A [`KmemCache<T>`] hands out [`KmemBox<T>`]s. The cache may name a *usercopy region*
//! inside `T`: the only bytes hardened usercopy lets the kernel copy to or from
//! userspace, as KVM does for the architecture part of its vCPU.

use super::ffi;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;
use kernel::prelude::*;
use kernel::sync::Arc;

struct Cache {
    raw: NonNull<c_void>,
    size: usize,
}

// SAFETY: kmem caches may be used and destroyed from any thread.
unsafe impl Send for Cache {}
// SAFETY: kmem cache operations are thread-safe.
unsafe impl Sync for Cache {}

impl Drop for Cache {
    fn drop(&mut self) {
        // SAFETY: Created in `KmemCache::new`; every object holds a reference to this
        // `Cache`, so all objects are gone.
        unsafe { ffi::rkvm_kmem_cache_destroy(self.raw.as_ptr()) };
    }
}

/// A kmem cache of `T`s.
pub(crate) struct KmemCache<T> {
    cache: Arc<Cache>,
    _t: PhantomData<T>,
}

impl<T> KmemCache<T> {
    /// Creates the cache `name` for objects of `size` bytes (at least `size_of::<T>()`,
    /// more when `T` ends in a variable part) aligned to `align`, with the usercopy region
    /// `user` (offset, size) inside.
    pub(crate) fn new(
        name: &'static CStr,
        size: usize,
        align: usize,
        user: (usize, usize),
    ) -> Result<Self> {
        let size = size.max(size_of::<T>());
        let align = align.max(align_of::<T>());
        if user.0.checked_add(user.1).is_none_or(|end| end > size) {
            return Err(EINVAL);
        }
        let to_u32 = |v: usize| u32::try_from(v).map_err(|_| EINVAL);
        // SAFETY: `name` is a 'static C string; the sizes were checked above.
        let raw = unsafe {
            ffi::rkvm_kmem_cache_create(
                name.as_char_ptr(),
                to_u32(size)?,
                to_u32(align)?,
                to_u32(user.0)?,
                to_u32(user.1)?,
            )
        };
        let raw = NonNull::new(raw).ok_or(ENOMEM)?;
        Ok(Self {
            cache: Arc::new(Cache { raw, size }, GFP_KERNEL)?,
            _t: PhantomData,
        })
    }

    /// Allocates a zeroed object and initializes it in place. The object is all zeros
    /// when `init` runs (`kmem_cache_zalloc`, and rkvm's caches have no constructor):
    /// [`KmemCache::alloc_zeroed`] relies on it.
    pub(crate) fn alloc(&self, init: impl Init<T, Error>) -> Result<KmemBox<T>> {
        // SAFETY: The cache is alive (we hold it).
        let obj = unsafe { ffi::rkvm_kmem_cache_zalloc(self.cache.raw.as_ptr()) };
        let obj = NonNull::new(obj.cast::<T>()).ok_or(ENOMEM)?;
        // SAFETY: `obj` is valid, aligned memory for a `T`, all zeros but not yet a `T`;
        // on error the initializer has cleaned up after itself.
        if let Err(e) = unsafe { init.__init(obj.as_ptr()) } {
            // SAFETY: Allocated above from this cache, holds no live `T`.
            unsafe { ffi::rkvm_kmem_cache_free(self.cache.raw.as_ptr(), obj.as_ptr().cast()) };
            return Err(e);
        }
        Ok(KmemBox {
            obj,
            cache: self.cache.clone(),
        })
    }
}

impl<T: zerocopy::FromZeros> KmemCache<T> {
    /// Allocates an object left as the allocator zeroed it (all zeros is a valid `T`).
    pub(crate) fn alloc_zeroed(&self) -> Result<KmemBox<T>> {
        // SAFETY: The object is zeroed by the allocation, and `T: FromZeros` makes zeros a
        // valid `T`.
        let init = unsafe { pin_init::init_from_closure(|_slot: *mut T| Ok(())) };
        self.alloc(init)
    }
}

impl<T> KmemCache<T> {
    /// Allocates an object holding `value`.
    pub(crate) fn alloc_value(&self, value: T) -> Result<KmemBox<T>> {
        // SAFETY: The closure writes a valid `T` into the slot and cannot fail.
        let init = unsafe {
            pin_init::init_from_closure(move |slot: *mut T| {
                slot.write(value);
                Ok(())
            })
        };
        self.alloc(init)
    }
}

/// An owned `T` in a kmem cache object.
///
/// # Invariants
///
/// `obj` points at a live, initialized `T` in an object of `cache`.
pub(crate) struct KmemBox<T> {
    obj: NonNull<T>,
    cache: Arc<Cache>,
}

// SAFETY: A `KmemBox<T>` owns its `T` like a `Box<T>` does.
unsafe impl<T: Send> Send for KmemBox<T> {}
// SAFETY: Shared access to the box is shared access to the `T`.
unsafe impl<T: Sync> Sync for KmemBox<T> {}

impl<T: FromBytes + IntoBytes> KmemBox<T> {
    /// The whole object as bytes: the `T` and whatever the cache's object size adds after
    /// it (e.g. the variable part of an XSAVE area).
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: The object is `cache.size` bytes, zeroed at allocation; `T` has no padding
        // and no invalid bit patterns, so every byte is initialized and plain.
        unsafe { core::slice::from_raw_parts(self.obj.as_ptr().cast::<u8>(), self.cache.size) }
    }

    /// The whole object as mutable bytes.
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: As in `bytes`; `T: FromBytes` accepts any bytes written; `&mut self` is
        // exclusive.
        unsafe { core::slice::from_raw_parts_mut(self.obj.as_ptr().cast::<u8>(), self.cache.size) }
    }
}

impl<T> Deref for KmemBox<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: By the invariant.
        unsafe { self.obj.as_ref() }
    }
}

impl<T> DerefMut for KmemBox<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: By the invariant; `&mut self` is exclusive.
        unsafe { self.obj.as_mut() }
    }
}

impl<T> Drop for KmemBox<T> {
    fn drop(&mut self) {
        // SAFETY: By the invariant the `T` is live; it is not used after this.
        unsafe { core::ptr::drop_in_place(self.obj.as_ptr()) };
        // SAFETY: The object came from this cache and holds no live value any more.
        unsafe { ffi::rkvm_kmem_cache_free(self.cache.raw.as_ptr(), self.obj.as_ptr().cast()) };
    }
}

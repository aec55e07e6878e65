// SPDX-License-Identifier: GPL-2.0

//! Copying ABI structs between userspace and the kernel.
//!
//! The ABI structs come from bindgen with zerocopy's derives (see `Kbuild`), so the
//! compiler has checked that they have no padding and accept any bit pattern: they can
//! be copied byte for byte in both directions.

use core::mem::MaybeUninit;
use kernel::prelude::*;
use kernel::uaccess::{UserPtr, UserSlice};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A userspace address plus an offset, without overflow.
pub(crate) fn offset(addr: usize, off: usize) -> Result<usize> {
    addr.checked_add(off).ok_or(EFAULT)
}

/// Reads a `T` from userspace address `addr`.
///
/// The bytes go straight from userspace into the result, with no zeroing first.
pub(crate) fn read<T: FromBytes + IntoBytes + KnownLayout>(addr: usize) -> Result<T> {
    let mut v = MaybeUninit::<T>::uninit();
    // SAFETY: `v` is `size_of::<T>()` bytes of writable memory, and `MaybeUninit<u8>` has
    // no validity requirement.
    let bytes = unsafe {
        core::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<MaybeUninit<u8>>(), size_of::<T>())
    };
    UserSlice::new(UserPtr::from_addr(addr), size_of::<T>())
        .reader()
        .read_raw(bytes)?;
    // SAFETY: `read_raw` succeeded, so it initialized every byte; `T: FromBytes` makes any
    // bytes a valid `T`.
    Ok(unsafe { v.assume_init() })
}

/// Reads a `T` from userspace address `addr` into `out`, in place: for structs big enough
/// that moving the result of [`read`] would cost more than zeroing them first.
pub(crate) fn read_to<T: FromBytes + IntoBytes>(addr: usize, out: &mut T) -> Result {
    UserSlice::new(UserPtr::from_addr(addr), size_of::<T>())
        .reader()
        .read_slice(out.as_mut_bytes())
}

/// Writes `v` to userspace address `addr`.
pub(crate) fn write<T: IntoBytes + Immutable>(addr: usize, v: &T) -> Result {
    UserSlice::new(UserPtr::from_addr(addr), size_of::<T>())
        .writer()
        .write_slice(v.as_bytes())
}

/// Writes a slice of `T`s to userspace address `addr`.
pub(crate) fn write_slice<T: IntoBytes + Immutable>(addr: usize, v: &[T]) -> Result {
    let bytes = v.as_bytes();
    UserSlice::new(UserPtr::from_addr(addr), bytes.len())
        .writer()
        .write_slice(bytes)
}

/// Reads `n` `T`s from userspace address `addr` into a new vector.
pub(crate) fn read_vec<T: FromBytes + IntoBytes + KnownLayout + Clone>(
    addr: usize,
    n: usize,
) -> Result<KVVec<T>> {
    let mut v = KVVec::with_capacity(n, GFP_KERNEL_ACCOUNT)?;
    v.resize(n, T::new_zeroed(), GFP_KERNEL_ACCOUNT)?;
    let len = n.checked_mul(size_of::<T>()).ok_or(E2BIG)?;
    UserSlice::new(UserPtr::from_addr(addr), len)
        .reader()
        .read_slice(v.as_mut_slice().as_mut_bytes())?;
    Ok(v)
}

/// Reads the 8-byte header of `struct kvm_cpuid2` / `struct kvm_msrs` (a count and
/// padding, both copied as KVM copies the whole header) and returns the count.
pub(crate) fn read_header8(addr: usize) -> Result<u32> {
    let [count, _pad]: [u32; 2] = read(addr)?;
    Ok(count)
}

/// Reads `buf.len()` bytes from userspace address `addr`.
pub(crate) fn read_into(addr: usize, buf: &mut [u8]) -> Result {
    UserSlice::new(UserPtr::from_addr(addr), buf.len())
        .reader()
        .read_slice(buf)
}

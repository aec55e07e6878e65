// SPDX-License-Identifier: GPL-2.0

//! Per-CPU memory (`alloc_percpu`) with a safe API.
//!
//! [`PerCpu<T>`] holds one `T` per possible CPU. Any CPU may read any slot through `&T`,
//! so `T` is `Sync`: shared state uses atomics, state that only its own CPU touches uses
//! [`LocalCell`], which hands out `&mut` only on that CPU with interrupts off.

use super::{cpu, ffi};
use core::cell::{Cell, UnsafeCell};
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;
use kernel::prelude::*;

/// One `T` per possible CPU.
///
/// # Invariants
///
/// `ptr` is a live `alloc_percpu` allocation of a `T`, and the slot of every possible CPU
/// holds an initialized `T`.
pub(crate) struct PerCpu<T: Send + Sync> {
    ptr: NonNull<c_void>,
    _t: PhantomData<T>,
}

// SAFETY: The slots are `T: Send + Sync`; the allocation itself is just memory.
unsafe impl<T: Send + Sync> Send for PerCpu<T> {}
// SAFETY: Shared access only hands out `&T`, and `T: Sync`.
unsafe impl<T: Send + Sync> Sync for PerCpu<T> {}

impl<T: Send + Sync> PerCpu<T> {
    /// Allocates the slots and fills each with `init(cpu)`.
    pub(crate) fn new(mut init: impl FnMut(u32) -> Result<T>) -> Result<Self> {
        let size = size_of::<T>().max(1) as u64;
        let align = align_of::<T>() as u64;
        // SAFETY: Plain allocation; freed in `drop` (or below on error).
        let raw = unsafe { ffi::rkvm_percpu_alloc(size, align) };
        let ptr = NonNull::new(raw).ok_or(ENOMEM)?;
        let mut done: KVec<u32> = KVec::new();
        for c in cpu::possible_cpus() {
            let value = match init(c)
                .and_then(|v| done.push(c, GFP_KERNEL).map(|()| v).map_err(Into::into))
            {
                Ok(v) => v,
                Err(e) => {
                    for &d in done.iter() {
                        // SAFETY: Slot `d` was initialized below in an earlier iteration.
                        unsafe { core::ptr::drop_in_place(Self::slot(ptr, d)) };
                    }
                    // SAFETY: Allocated above, no longer used.
                    unsafe { ffi::rkvm_percpu_free(ptr.as_ptr()) };
                    return Err(e);
                }
            };
            // SAFETY: The slot is valid, suitably aligned memory for a `T`.
            unsafe { Self::slot(ptr, c).write(value) };
        }
        // INVARIANT: Every possible CPU's slot was initialized above.
        Ok(Self {
            ptr,
            _t: PhantomData,
        })
    }

    fn slot(ptr: NonNull<c_void>, cpu: u32) -> *mut T {
        // SAFETY: `per_cpu_ptr` is a pure address computation.
        unsafe { ffi::rkvm_percpu_ptr(ptr.as_ptr(), cpu).cast() }
    }

    /// Every possible CPU's slot (for state other CPUs may update, e.g. with atomics).
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        // SAFETY: By the invariant, every possible CPU's slot holds a live `T`, shared
        // access is fine (`T: Sync`), and it lives as long as `self`.
        cpu::possible_cpus().map(move |c| unsafe { &*Self::slot(self.ptr, c) })
    }

    /// The slot of the CPU this runs on; the guard keeps it from changing.
    pub(crate) fn this_cpu<'a>(&'a self, _irq: &'a cpu::IrqGuard) -> &'a T {
        // SAFETY: The running CPU is online, hence possible: its slot holds a live `T`.
        unsafe { &*Self::slot(self.ptr, cpu::this_cpu()) }
    }
}

impl<T: Send + Sync> Drop for PerCpu<T> {
    fn drop(&mut self) {
        for c in cpu::possible_cpus() {
            // SAFETY: By the invariant, the slot holds a live `T`; nothing uses it after.
            unsafe { core::ptr::drop_in_place(Self::slot(self.ptr, c)) };
        }
        // SAFETY: Allocated in `new`; all slots were dropped.
        unsafe { ffi::rkvm_percpu_free(self.ptr.as_ptr()) };
    }
}

/// A value that only its own CPU may touch, with interrupts off.
///
/// # Invariants
///
/// `value` is only accessed through a [`LocalRef`], which exists only on CPU `cpu`, with
/// interrupts disabled, and while `busy` is set (so at most one exists).
pub(crate) struct LocalCell<U> {
    cpu: u32,
    busy: Cell<bool>,
    value: UnsafeCell<U>,
}

// SAFETY: By the invariant, the value is only accessed from its own CPU with interrupts
// off, one borrower at a time; other CPUs never touch it, whatever reference they hold.
unsafe impl<U: Send> Sync for LocalCell<U> {}

impl<U> LocalCell<U> {
    /// A cell owned by `cpu`.
    pub(crate) fn new(cpu: u32, value: U) -> Self {
        Self {
            cpu,
            busy: Cell::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// Borrows the value; `None` when called off its CPU or while already borrowed.
    pub(crate) fn borrow<'a>(&'a self, _irq: &'a cpu::IrqGuard) -> Option<LocalRef<'a, U>> {
        if cpu::this_cpu() != self.cpu || self.busy.get() {
            return None;
        }
        self.busy.set(true);
        Some(LocalRef { cell: self })
    }
}

/// Exclusive access to a [`LocalCell`]'s value.
pub(crate) struct LocalRef<'a, U> {
    cell: &'a LocalCell<U>,
}

impl<U> Deref for LocalRef<'_, U> {
    type Target = U;
    fn deref(&self) -> &U {
        // SAFETY: By the invariant of `LocalCell`, this is the only access right now.
        unsafe { &*self.cell.value.get() }
    }
}

impl<U> DerefMut for LocalRef<'_, U> {
    fn deref_mut(&mut self) -> &mut U {
        // SAFETY: By the invariant of `LocalCell`, this is the only access right now.
        unsafe { &mut *self.cell.value.get() }
    }
}

impl<U> Drop for LocalRef<'_, U> {
    fn drop(&mut self) {
        self.cell.busy.set(false);
    }
}

// SPDX-License-Identifier: GPL-2.0

//! The guest's memory as the host sees it: the owner process's mm, its pages, and the
//! MMU notifier that tells rkvm before the host unmaps, migrates or frees any of them.

use super::ffi;
use core::ptr::NonNull;
use kernel::prelude::*;
use kernel::uaccess::{UserPtr, UserSlice};

/// The identity of an mm (compared, never dereferenced).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MmId(usize);

/// The current process's mm.
pub(crate) fn current_mm() -> MmId {
    // SAFETY: A pure query on `current`.
    MmId(unsafe { ffi::rkvm_current_mm() } as usize)
}

/// The first frame of the host mapping of `hva` by one leaf entry at `level` (2: a 2 MiB
/// PMD, 3: a 1 GiB PUD) in the current process, writable if `write`; `None` when smaller
/// pages map it. Racy by nature: the caller checks the MMU notifier's sequence before it
/// relies on the answer.
pub(crate) fn host_leaf_pfn(hva: u64, write: bool, level: u8) -> Option<u64> {
    // SAFETY: Walks the current process's page tables with interrupts off (in the shim);
    // `hva` is only used as an address to look up.
    let pfn = unsafe { ffi::rkvm_host_leaf_pfn(hva, c_int::from(write), c_int::from(level)) };
    (pfn != 0).then_some(pfn)
}

/// A referenced page of the owner process; the reference drops with the value.
pub(crate) struct UserPage {
    page: NonNull<c_void>,
}

impl UserPage {
    /// Takes a reference on the page mapped at `hva` in the current process, faulting it
    /// in (writable if `write`). May sleep.
    pub(crate) fn get(hva: u64, write: bool) -> Result<Self> {
        let mut page = core::ptr::null_mut();
        // SAFETY: `page` is a valid out-pointer; `hva` is only used as a user address.
        super::to_result(unsafe { ffi::rkvm_get_user_page(hva, write.into(), &mut page) })?;
        Ok(Self {
            page: NonNull::new(page).ok_or(EFAULT)?,
        })
    }

    /// The page frame number.
    pub(crate) fn pfn(&self) -> u64 {
        // SAFETY: The page is referenced by `self`.
        unsafe { ffi::rkvm_page_to_pfn(self.page.as_ptr()) }
    }
}

impl Drop for UserPage {
    fn drop(&mut self) {
        // SAFETY: Drops the reference taken in `get`.
        unsafe { ffi::rkvm_put_page(self.page.as_ptr()) };
    }
}

/// Reads guest memory at `hva` of the current (owner) process.
pub(crate) fn read_user(hva: u64, out: &mut [u8]) -> Result {
    let addr = usize::try_from(hva).map_err(|_| EFAULT)?;
    UserSlice::new(UserPtr::from_addr(addr), out.len())
        .reader()
        .read_slice(out)
}

/// Writes guest memory at `hva` of the current (owner) process.
pub(crate) fn write_user(hva: u64, data: &[u8]) -> Result {
    let addr = usize::try_from(hva).map_err(|_| EFAULT)?;
    UserSlice::new(UserPtr::from_addr(addr), data.len())
        .writer()
        .write_slice(data)
}

/// The callbacks every rkvm MMU notifier calls (set once at module init).
pub(crate) fn notifier_ops_init(
    start: extern "C" fn(ctx: *mut c_void, start: u64, end: u64),
    end: extern "C" fn(ctx: *mut c_void, start: u64, end: u64),
    release: extern "C" fn(ctx: *mut c_void),
    age: extern "C" fn(ctx: *mut c_void, start: u64, end: u64, clear: c_int) -> c_int,
) {
    // SAFETY: The callbacks are functions of this module; every notifier is unregistered
    // (which waits for running callbacks) before the module goes away.
    unsafe { ffi::rkvm_mmu_notifier_ops_init(Some(start), Some(end), Some(release), Some(age)) };
}

/// An MMU notifier on the process that created it.
pub(crate) struct MmuNotifier {
    raw: NonNull<c_void>,
}

// SAFETY: Unregistering may happen from any thread.
unsafe impl Send for MmuNotifier {}
// SAFETY: No `&self` methods.
unsafe impl Sync for MmuNotifier {}

impl MmuNotifier {
    /// Registers on the current mm; the callbacks get `ctx`, which the caller keeps valid
    /// until the notifier is dropped.
    pub(crate) fn register(ctx: *mut c_void) -> Result<Self> {
        let mut err = 0;
        // SAFETY: `err` is a valid out-pointer; `ctx` is opaque to the shim.
        let raw = unsafe { ffi::rkvm_mmu_notifier_register(ctx, &mut err) };
        match NonNull::new(raw) {
            Some(raw) => Ok(Self { raw }),
            None => Err(Error::from_errno(err)),
        }
    }
}

impl Drop for MmuNotifier {
    fn drop(&mut self) {
        // SAFETY: Registered in `register`; waits for callbacks in flight. May sleep.
        unsafe { ffi::rkvm_mmu_notifier_unregister(self.raw.as_ptr()) };
    }
}

// SPDX-License-Identifier: GPL-2.0

//! File descriptors for kernel objects (`anon_inode_getfd`), as KVM gives out for VMs
//! and vCPUs. The object behind the fd is an `Arc<T>`; the file operations are built
//! here once per type, owned by this module (it cannot be unloaded while an fd is open).

use super::ffi;
use core::marker::PhantomData;
use kernel::bindings;
use kernel::mm::virt::VmaNew;
use kernel::page::Page;
use kernel::prelude::*;
use kernel::sync::{Arc, ArcBorrow};
use kernel::types::ForeignOwnable;

/// A kernel object that userspace reaches through an anonymous-inode fd.
pub(crate) trait AnonFile: Send + Sync + Sized + 'static {
    /// The name shown in /proc/<pid>/fd (e.g. "kvm-vm").
    const NAME: &'static CStr;
    /// Whether the file can be mmapped.
    const HAS_MMAP: bool = false;
    /// Whether its mappings get their pages at the first touch of each (`fault`).
    const HAS_FAULT: bool = false;
    /// Whether the file is read-only and readable (with `read` and `pread`).
    const HAS_READ: bool = false;

    /// An ioctl on the fd.
    fn ioctl(this: ArcBorrow<'_, Self>, cmd: u32, arg: usize) -> Result<isize>;

    /// read/pread of `len` bytes at `*pos` into the user buffer `buf` (only called when
    /// `HAS_READ`); advances `*pos` and returns the bytes copied.
    fn read(_this: ArcBorrow<'_, Self>, _buf: usize, _len: usize, _pos: &mut i64) -> Result<usize> {
        Err(EINVAL)
    }

    /// mmap of the fd (only called when `HAS_MMAP`).
    fn mmap(_this: ArcBorrow<'_, Self>, _vma: &VmaNew) -> Result {
        Err(ENODEV)
    }

    /// The first touch of page `pgoff` (in the file) of a mapping (only called when
    /// `HAS_FAULT`): calls `map` with the page to map there, or fails (`ENOMEM`: out of
    /// memory; anything else: SIGBUS for the toucher).
    fn fault(_this: ArcBorrow<'_, Self>, _pgoff: usize, _map: &mut dyn FnMut(&Page)) -> Result {
        Err(EINVAL)
    }

    /// The last close of the fd; the default just drops the reference.
    fn release(this: Arc<Self>) {
        drop(this);
    }
}

struct Vtable<T>(PhantomData<T>);

impl<T: AnonFile> Vtable<T> {
    const FOPS: bindings::file_operations = bindings::file_operations {
        owner: kernel::module::this_module::<crate::LocalModule>().as_ptr(),
        release: Some(Self::release),
        unlocked_ioctl: Some(Self::ioctl),
        mmap: if T::HAS_MMAP { Some(Self::mmap) } else { None },
        read: if T::HAS_READ { Some(Self::read) } else { None },
        llseek: Some(bindings::noop_llseek),
        ..pin_init::zeroed()
    };

    /// # Safety
    ///
    /// `file` is a file created by [`install`] for a `T`, being released.
    unsafe extern "C" fn release(_inode: *mut bindings::inode, file: *mut bindings::file) -> c_int {
        // SAFETY: The release call owns the private data, which `install` set from
        // `Arc::into_foreign`.
        let this = unsafe { <Arc<T> as ForeignOwnable>::from_foreign((*file).private_data) };
        T::release(this);
        0
    }

    /// # Safety
    ///
    /// `file` is a live file created by [`install`] for a `T`.
    unsafe extern "C" fn ioctl(file: *mut bindings::file, cmd: c_uint, arg: c_ulong) -> c_long {
        // SAFETY: The private data is an `Arc<T>` (set by `install`) that lives until
        // `release`, which cannot run during an ioctl on the file.
        let this = unsafe { <Arc<T> as ForeignOwnable>::borrow((*file).private_data) };
        match T::ioctl(this, cmd, arg) {
            Ok(r) => r as c_long,
            Err(e) => e.to_errno() as c_long,
        }
    }

    /// # Safety
    ///
    /// `file` is a live file created by [`install`] for a `T`; `pos` is the VFS's valid
    /// position for this call.
    unsafe extern "C" fn read(
        file: *mut bindings::file,
        buf: *mut c_char,
        len: usize,
        pos: *mut bindings::loff_t,
    ) -> isize {
        // SAFETY: As in `ioctl`.
        let this = unsafe { <Arc<T> as ForeignOwnable>::borrow((*file).private_data) };
        // SAFETY: The VFS passes a valid position that nothing else touches during the call.
        let pos = unsafe { &mut *pos };
        match T::read(this, buf as usize, len, pos) {
            Ok(n) => n as isize,
            Err(e) => e.to_errno() as isize,
        }
    }

    /// # Safety
    ///
    /// `file` is a live file created by [`install`] for a `T`; `vma` is being mmapped.
    unsafe extern "C" fn mmap(
        file: *mut bindings::file,
        vma: *mut bindings::vm_area_struct,
    ) -> c_int {
        // SAFETY: As in `ioctl`.
        let this = unsafe { <Arc<T> as ForeignOwnable>::borrow((*file).private_data) };
        // SAFETY: The caller provides a VMA under initial setup.
        let vma = unsafe { VmaNew::from_raw(vma) };
        match T::mmap(this, vma) {
            Ok(()) => {
                if T::HAS_FAULT {
                    let ops: &'static bindings::vm_operations_struct = &Self::VM_OPS;
                    // SAFETY: The VMA is under setup by this mmap call; `ops` is 'static
                    // (module data, and the module outlives every mapping of its files).
                    unsafe { (*vma.as_ptr()).vm_ops = ops };
                }
                0
            }
            Err(e) => e.to_errno(),
        }
    }

    const VM_OPS: bindings::vm_operations_struct = bindings::vm_operations_struct {
        fault: Some(Self::fault),
        ..pin_init::zeroed()
    };

    /// # Safety
    ///
    /// `vmf` is the mm's fault descriptor for a mapping that `mmap` above made.
    unsafe extern "C" fn fault(vmf: *mut bindings::vm_fault) -> bindings::vm_fault_t {
        // SAFETY: `vmf` and its VMA are valid during the call; the VMA maps a file of
        // this type and holds a reference on it, so the private data (the `Arc<T>` that
        // `install` set) lives.
        let (this, pgoff) = unsafe {
            let f = &(*vmf).__bindgen_anon_1;
            let file = (*f.vma).vm_file;
            (
                <Arc<T> as ForeignOwnable>::borrow((*file).private_data),
                f.pgoff,
            )
        };
        let mut got: Option<*mut bindings::page> = None;
        let r = T::fault(this, pgoff, &mut |p: &Page| {
            if got.is_none() {
                // SAFETY: `p` is a live page; this reference is the mapping's, which
                // the mm drops when it unmaps the page.
                unsafe { ffi::rkvm_get_page(p.as_ptr().cast()) };
                got = Some(p.as_ptr());
            }
        });
        match (r, got) {
            (Ok(()), Some(page)) => {
                // SAFETY: `vmf` is valid; the mm maps this page and owns the reference.
                unsafe { (*vmf).page = page };
                0
            }
            (r, got) => {
                if let Some(page) = got {
                    // SAFETY: Drops the reference taken above, which the mm never got.
                    unsafe { ffi::rkvm_put_page(page.cast()) };
                }
                match r {
                    Err(e) if e == ENOMEM => bindings::vm_fault_reason_VM_FAULT_OOM,
                    _ => bindings::vm_fault_reason_VM_FAULT_SIGBUS,
                }
            }
        }
    }
}

/// Creates an fd (O_RDWR | O_CLOEXEC) for `obj` in the current process.
pub(crate) fn install<T: AnonFile>(obj: Arc<T>) -> Result<i32> {
    install_named(obj, T::NAME)
}

/// [`install`] with a name of the caller's (what /proc/PID/fd shows after
/// "anon_inode:"; KVM puts the vCPU id in its vCPU files' names). The name is copied.
pub(crate) fn install_named<T: AnonFile>(obj: Arc<T>, name: &CStr) -> Result<i32> {
    let fops: &'static bindings::file_operations = &Vtable::<T>::FOPS;
    let private = obj.into_foreign();
    let fd = if T::HAS_READ {
        let flags = (bindings::O_RDONLY | bindings::O_CLOEXEC) as c_int;
        // SAFETY: `fops` is 'static and matches `private` (an `Arc<T>`), which the file's
        // release takes back.
        unsafe {
            ffi::rkvm_anon_inode_getfd_pread(
                name.as_char_ptr(),
                core::ptr::from_ref(fops).cast(),
                private,
                flags,
            )
        }
    } else {
        let flags = (bindings::O_RDWR | bindings::O_CLOEXEC) as c_int;
        // SAFETY: `fops` is 'static and matches `private` (an `Arc<T>`), which the file's
        // release takes back.
        unsafe {
            ffi::rkvm_anon_inode_getfd(
                name.as_char_ptr(),
                core::ptr::from_ref(fops).cast(),
                private,
                flags,
            )
        }
    };
    if fd < 0 {
        // SAFETY: The fd was not created, so the reference is still ours.
        drop(unsafe { <Arc<T> as ForeignOwnable>::from_foreign(private) });
        return Err(Error::from_errno(fd));
    }
    Ok(fd)
}

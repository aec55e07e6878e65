// SPDX-License-Identifier: GPL-2.0

//! The kvm-vfio device (`KVM_DEV_TYPE_VFIO`, the seed's `kvm_vfio_ops_init`): userspace
//! tells the VM which VFIO group or device files its guest uses (`KVM_DEV_VFIO_FILE_ADD`,
//! `KVM_DEV_VFIO_FILE_DEL`). One per VM, as in KVM; it lives as long as its fd.
//!
//! Only VFIO files are taken, as the VFIO core judges them (`vfio_file_is_valid`, asked
//! only if the vfio module is loaded; without it every file is refused with `EINVAL`, as
//! KVM refuses them). What KVM does next with such a file, `vfio_file_set_kvm()` and the
//! non-coherent-DMA accounting, takes a `struct kvm`, which only KVM has: rkvm keeps the
//! file listed and referenced, nothing more (see api.rst).

use super::device_ops::DeviceOps;
use super::uaccess;
use super::vm::Vm;
use crate::sys::anon_fd::{self, AnonFile};
use crate::uapi::*;
use core::sync::atomic::Ordering;
use kernel::fs::file::{File, LocalFile};
use kernel::new_mutex;
use kernel::prelude::*;
use kernel::sync::aref::ARef;
use kernel::sync::{Arc, ArcBorrow, Mutex};

/// The device type.
pub(crate) struct VfioOps;

/// The registered instance.
pub(crate) static VFIO_OPS: VfioOps = VfioOps;

impl DeviceOps for VfioOps {
    fn create(&self, vm: Arc<Vm>) -> Result<isize> {
        // Only one per VM (KVM's kvm_vfio_create).
        if vm
            .vfio_device
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(EBUSY);
        }
        let held = vm.clone();
        let dev = Arc::pin_init(
            try_pin_init!(VfioDevice {
                vm: held,
                files <- new_mutex!(KVec::new()),
            }? Error),
            GFP_KERNEL_ACCOUNT,
        )
        .inspect_err(|_| vm.vfio_device.store(false, Ordering::Release))?;
        // On failure `install` drops the device, whose drop frees the VM's slot again.
        Ok(anon_fd::install(dev)? as isize)
    }
}

/// A kvm-vfio device and the VFIO files it was given.
#[pin_data(PinnedDrop)]
struct VfioDevice {
    vm: Arc<Vm>,
    #[pin]
    files: Mutex<KVec<ARef<File>>>,
}

#[pinned_drop]
impl PinnedDrop for VfioDevice {
    fn drop(self: Pin<&mut Self>) {
        // The files' references go with the list; the VM may have a new device now.
        self.vm.vfio_device.store(false, Ordering::Release);
    }
}

impl VfioDevice {
    /// KVM_SET_DEVICE_ATTR: `KVM_DEV_VFIO_FILE` with ADD or DEL, the fd at `addr`.
    fn set_attr(&self, a: &kvm_device_attr) -> Result<isize> {
        if a.group != KVM_DEV_VFIO_FILE {
            return Err(ENXIO);
        }
        let add = match u32::try_from(a.attr) {
            Ok(KVM_DEV_VFIO_FILE_ADD) => true,
            Ok(KVM_DEV_VFIO_FILE_DEL) => false,
            _ => return Err(ENXIO),
        };
        let addr = usize::try_from(a.addr).map_err(|_| EFAULT)?;
        let fd: i32 = uaccess::read(addr)?;
        let local = LocalFile::fget(fd as u32).map_err(|_| EBADF)?;
        // SAFETY: This thread is in an ioctl on the device's own fd, not in a read or
        // write of `fd`'s file, so it holds no `fdget_pos` on it.
        let file = unsafe { LocalFile::assume_no_fdget_pos(local) };
        if add && !crate::sys::vfio::file_is_valid(&file) {
            return Err(EINVAL);
        }
        let mut files = self.files.lock();
        let pos = files
            .iter()
            .position(|f| core::ptr::eq(f.as_ptr(), file.as_ptr()));
        match (add, pos) {
            (true, Some(_)) => Err(EEXIST),
            (true, None) => {
                files.push(file, GFP_KERNEL_ACCOUNT)?;
                Ok(0)
            }
            (false, Some(i)) => {
                let _ = files.remove(i);
                Ok(0)
            }
            (false, None) => Err(ENOENT),
        }
    }
}

impl AnonFile for VfioDevice {
    const NAME: &'static CStr = c"kvm-vfio";

    fn ioctl(this: ArcBorrow<'_, Self>, cmd: u32, arg: usize) -> Result<isize> {
        this.vm.check_mm()?;
        match cmd {
            RKVM_KVM_SET_DEVICE_ATTR => {
                let a: kvm_device_attr = uaccess::read(arg)?;
                this.set_attr(&a)
            }
            RKVM_KVM_HAS_DEVICE_ATTR => {
                let a: kvm_device_attr = uaccess::read(arg)?;
                let known = a.group == KVM_DEV_VFIO_FILE
                    && (a.attr == u64::from(KVM_DEV_VFIO_FILE_ADD)
                        || a.attr == u64::from(KVM_DEV_VFIO_FILE_DEL));
                if known {
                    Ok(0)
                } else {
                    Err(ENXIO)
                }
            }
            // The device has no readable attributes (KVM: no get_attr, EPERM).
            RKVM_KVM_GET_DEVICE_ATTR => Err(EPERM),
            _ => Err(ENOTTY),
        }
    }
}

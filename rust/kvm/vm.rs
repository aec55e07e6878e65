// SPDX-License-Identifier: GPL-2.0

//! Virtual machines: `KVM_CREATE_VM` and the VM fd.

use super::{caps, Kvm};
use crate::sys::anon_fd::{self, AnonFile};
use crate::uapi::*;
use kernel::prelude::*;
use kernel::sync::{Arc, ArcBorrow};

/// A VM.
pub(crate) struct Vm {
    kvm: &'static Kvm,
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kvm.hw.put(&self.kvm.vmx);
    }
}

/// `KVM_CREATE_VM(type)`.
pub(crate) fn create(k: &'static Kvm, ty: usize) -> Result<isize> {
    if ty != KVM_X86_DEFAULT_VM as usize {
        return Err(EINVAL);
    }
    k.hw.get(&k.vmx)?;
    let vm = Arc::new(Vm { kvm: k }, GFP_KERNEL).inspect_err(|_| k.hw.put(&k.vmx))?;
    Ok(anon_fd::install(vm)? as isize)
}

impl AnonFile for Vm {
    const NAME: &'static CStr = c"kvm-vm";

    fn ioctl(this: ArcBorrow<'_, Self>, cmd: u32, arg: usize) -> Result<isize> {
        match cmd {
            RKVM_KVM_CHECK_EXTENSION => Ok(caps::check_extension(this.kvm, Some(&this), arg)),
            _ => Err(ENOTTY),
        }
    }
}

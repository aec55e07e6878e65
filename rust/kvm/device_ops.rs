// SPDX-License-Identifier: GPL-2.0

//! The device-type registry behind `KVM_CREATE_DEVICE` (the seed's
//! `kvm_register_device_ops`, and `kvm_vfio_ops_init` for the VFIO type).
//!
//! No device type is registered today. In particular KVM_DEV_TYPE_VFIO is not: the VFIO
//! core's KVM hooks (`vfio_file_set_kvm()` and friends) take a `struct kvm`, which only
//! KVM itself has, so rkvm cannot provide that device even on kernels built with VFIO.
//! `KVM_CREATE_DEVICE` for an unregistered type fails with `ENODEV`, as in KVM.

use kernel::prelude::*;

/// A device type userspace can create in a VM.
pub(crate) trait DeviceOps: Send + Sync {
    /// The device's name.
    #[allow(dead_code)] // Read once a device type is registered.
    fn name(&self) -> &'static CStr;
}

/// The registry: one slot per `KVM_DEV_TYPE_*` value KVM defines.
pub(crate) struct Registry {
    slots: [Option<&'static dyn DeviceOps>; Self::SLOTS],
}

impl Registry {
    /// KVM_DEV_TYPE_MAX in `<linux/kvm.h>`.
    pub(crate) const SLOTS: usize = crate::uapi::KVM_DEV_TYPE_MAX as usize;

    /// `kvm_vfio_ops_init()` and friends: the registry with what rkvm implements (nothing
    /// yet; see the module documentation).
    pub(crate) fn init() -> Self {
        Self {
            slots: [None; Self::SLOTS],
        }
    }

    /// The ops of `ty`; `ENODEV` when the type is unknown or not provided.
    pub(crate) fn lookup(&self, ty: u32) -> Result<&'static dyn DeviceOps> {
        self.slots.get(ty as usize).copied().flatten().ok_or(ENODEV)
    }
}

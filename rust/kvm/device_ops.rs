// SPDX-License-Identifier: GPL-2.0

//! The device-type registry behind `KVM_CREATE_DEVICE` (the seed's
//! `kvm_register_device_ops`, and `kvm_vfio_ops_init` for the VFIO type, the one type
//! rkvm registers: see `vfio.rs`). `KVM_CREATE_DEVICE` for an unregistered type fails
//! with `ENODEV`, as in KVM; with `KVM_CREATE_DEVICE_TEST` it only says whether the type
//! exists.

use super::vm::Vm;
use kernel::prelude::*;
use kernel::sync::Arc;

/// A device type userspace can create in a VM.
pub(crate) trait DeviceOps: Send + Sync {
    /// A new device of this type in `vm`, installed as a new fd (`create`).
    fn create(&self, vm: Arc<Vm>) -> Result<isize>;
}

/// The registry: one slot per `KVM_DEV_TYPE_*` value KVM defines.
pub(crate) struct Registry {
    slots: [Option<&'static dyn DeviceOps>; Self::SLOTS],
}

impl Registry {
    /// KVM_DEV_TYPE_MAX in `<linux/kvm.h>`.
    pub(crate) const SLOTS: usize = crate::uapi::KVM_DEV_TYPE_MAX as usize;

    /// `kvm_vfio_ops_init()`: the registry with the device types rkvm implements.
    pub(crate) fn init() -> Self {
        let mut slots: [Option<&'static dyn DeviceOps>; Self::SLOTS] = [None; Self::SLOTS];
        if let Some(s) = slots.get_mut(crate::uapi::KVM_DEV_TYPE_VFIO as usize) {
            *s = Some(&super::vfio::VFIO_OPS);
        }
        Self { slots }
    }

    /// The ops of `ty`; `ENODEV` when the type is unknown or not provided.
    pub(crate) fn lookup(&self, ty: u32) -> Result<&'static dyn DeviceOps> {
        self.slots.get(ty as usize).copied().flatten().ok_or(ENODEV)
    }
}

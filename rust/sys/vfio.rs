// SPDX-License-Identifier: GPL-2.0

//! What rkvm asks of the VFIO core for the kvm-vfio device.

use super::ffi;
use kernel::fs::File;

/// Whether `f` is a VFIO group or device file (`vfio_file_is_valid`); false when the
/// VFIO core is not loaded or not built.
pub(crate) fn file_is_valid(f: &File) -> bool {
    // SAFETY: `f` is a live file for the duration of the call; the shim only passes it to
    // the VFIO core.
    unsafe { ffi::rkvm_vfio_file_is_valid(f.as_ptr().cast()) != 0 }
}

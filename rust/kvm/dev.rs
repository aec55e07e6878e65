// SPDX-License-Identifier: GPL-2.0

//! `/dev/rkvm` and its system ioctls (the seed's `kvm_dev` misc device and
//! `kvm_chardev_ops`; `kvm_dev_ioctl` + `kvm_arch_dev_ioctl`). Semantics and errnos are
//! KVM's: an ioctl the system fd does not know answers `EINVAL`, as in KVM.

use super::{caps, kvm, uaccess, Kvm};
use crate::uapi::{self, *};
use kernel::fs::File;
use kernel::miscdevice::{MiscDevice, MiscDeviceRegistration};
use kernel::prelude::*;

/// The misc device; opening it needs no per-file state.
pub(crate) struct DevFile;

/// Size of the vCPU mmap: `struct kvm_run`, the PIO data page, the coalesced MMIO ring.
pub(crate) const VCPU_MMAP_SIZE: usize = 3 * 4096;
/// KVM's limit on the entries of one KVM_GET_MSRS / KVM_SET_MSRS call.
pub(crate) const MAX_IO_MSRS: u32 = 256;

#[vtable]
impl MiscDevice for DevFile {
    type Ptr = ();

    fn open(_file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result<()> {
        Ok(())
    }

    fn ioctl(_dev: (), _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        let k = kvm().ok_or(ENODEV)?;
        dev_ioctl(k, cmd, arg)
    }
}

fn dev_ioctl(k: &'static Kvm, cmd: u32, arg: usize) -> Result<isize> {
    match cmd {
        RKVM_KVM_GET_API_VERSION => {
            if arg != 0 {
                return Err(EINVAL);
            }
            Ok(KVM_API_VERSION as isize)
        }
        RKVM_KVM_CREATE_VM => super::vm::create(k, arg),
        RKVM_KVM_CHECK_EXTENSION => Ok(caps::check_extension(k, None, arg)),
        RKVM_KVM_GET_VCPU_MMAP_SIZE => {
            if arg != 0 {
                return Err(EINVAL);
            }
            Ok(VCPU_MMAP_SIZE as isize)
        }
        RKVM_KVM_GET_MSR_INDEX_LIST => {
            let all = Iterator::chain(k.msrs.to_save.iter(), k.msrs.emulated.iter());
            msr_list(arg, all.copied())
        }
        RKVM_KVM_GET_MSR_FEATURE_INDEX_LIST => msr_list(arg, k.msrs.features.iter().copied()),
        RKVM_KVM_GET_SUPPORTED_CPUID => cpuid_list(arg, &k.cpuid_supported, false),
        RKVM_KVM_X86_GET_MCE_CAP_SUPPORTED => {
            let cap = crate::x86::mce::supported_cap(k.backend.has_cmci());
            super::uaccess::write(arg, &cap)?;
            Ok(0)
        }
        RKVM_KVM_GET_EMULATED_CPUID => cpuid_list(arg, &k.cpuid_emulated, true),
        RKVM_KVM_GET_MSRS => get_feature_msrs(k, arg),
        RKVM_KVM_GET_DEVICE_ATTR | RKVM_KVM_HAS_DEVICE_ATTR => {
            let attr: kvm_device_attr = uaccess::read(arg)?;
            let val = dev_attr(&attr)?;
            if cmd == RKVM_KVM_GET_DEVICE_ATTR {
                uaccess::write(attr.addr as usize, &val)?;
            }
            Ok(0)
        }
        _ => Err(EINVAL),
    }
}

/// The system attributes (group 0): the XSAVE components a guest may use.
fn dev_attr(attr: &kvm_device_attr) -> Result<u64> {
    if attr.group != 0 {
        return Err(ENXIO);
    }
    if attr.attr == u64::from(uapi::KVM_X86_XCOMP_GUEST_SUPP) {
        Ok(crate::x86::cpuid::supported_xcr0())
    } else {
        Err(ENXIO)
    }
}

/// KVM's MSR-list protocol: the count is always written back; `E2BIG` if the caller's
/// array is too small; then the indices.
fn msr_list(arg: usize, msrs: impl Iterator<Item = u32> + Clone) -> Result<isize> {
    let n: u32 = uaccess::read(arg)?;
    let count = u32::try_from(msrs.clone().count()).map_err(|_| E2BIG)?;
    uaccess::write(arg, &count)?;
    if n < count {
        return Err(E2BIG);
    }
    let mut indices = KVec::with_capacity(count as usize, GFP_KERNEL)?;
    for m in msrs {
        indices.push(m, GFP_KERNEL)?;
    }
    uaccess::write_slice(uaccess::offset(arg, 4)?, &indices)?;
    Ok(0)
}

/// KVM's CPUID-list protocol: `E2BIG` (nothing written back) unless the caller's array
/// has room; then the entries and the real count. For the emulated list, the caller's
/// entries must have zeroed padding.
fn cpuid_list(arg: usize, table: &[kvm_cpuid_entry2], emulated: bool) -> Result<isize> {
    // `struct kvm_cpuid2` starts with `__u32 nent`; the entries follow the header.
    let nent = uaccess::read_header8(arg)?;
    if nent < 1 {
        return Err(E2BIG);
    }
    let nent = (nent as usize).min(crate::x86::cpuid::MAX_ENTRIES);
    let entries_addr = uaccess::offset(arg, size_of::<kvm_cpuid2>())?;
    if emulated {
        // KVM's sanity check: the caller's padding must be zero, and an unreadable entry
        // counts as a bad one (EINVAL, not EFAULT).
        let user: KVVec<kvm_cpuid_entry2> =
            uaccess::read_vec(entries_addr, nent).map_err(|_| EINVAL)?;
        if user.iter().any(|e| e.padding != [0; 3]) {
            return Err(EINVAL);
        }
    }
    if table.len() > nent {
        return Err(E2BIG);
    }
    uaccess::write_slice(entries_addr, table)?;
    uaccess::write(arg, &(table.len() as u32))?;
    Ok(0)
}

/// KVM_GET_MSRS on the system fd: feature MSRs. Returns how many entries were read; stops
/// at the first MSR that is not a feature MSR (advertised MSRs read as 0, as in KVM).
fn get_feature_msrs(k: &Kvm, arg: usize) -> Result<isize> {
    // `struct kvm_msrs` starts with `__u32 nmsrs`; the entries follow the header.
    let nmsrs = uaccess::read_header8(arg)?;
    if nmsrs >= MAX_IO_MSRS {
        return Err(E2BIG);
    }
    let addr = uaccess::offset(arg, size_of::<kvm_msrs>())?;
    let mut entries: KVVec<kvm_msr_entry> = uaccess::read_vec(addr, nmsrs as usize)?;
    let mut done = 0;
    for e in entries.iter_mut() {
        match k.msrs.feature_msr(&*k.backend, e.index) {
            Some(v) => e.data = v,
            None if k.msrs.to_save.contains(&e.index) || k.msrs.emulated.contains(&e.index) => {
                e.data = 0
            }
            None => {
                e.data = 0;
                break;
            }
        }
        done += 1;
    }
    uaccess::write_slice(addr, &entries)?;
    Ok(done)
}

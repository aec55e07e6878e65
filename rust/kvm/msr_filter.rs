// SPDX-License-Identifier: GPL-2.0

//! `KVM_X86_SET_MSR_FILTER`: which guest RDMSR/WRMSR the kernel may handle. A denied
//! access exits to userspace with `KVM_MSR_EXIT_REASON_FILTER` when the VM asked for
//! those exits (`KVM_CAP_X86_USER_SPACE_MSR`), and raises #GP otherwise. Userspace's own
//! KVM_GET/SET_MSRS are never filtered, nor are the x2APIC MSRs.
//!
//! A VM holds its filter behind an `Arc` with a generation number; each vCPU keeps the
//! `Arc` it last saw and refreshes it before entering the guest when the number moved.

use core::mem::{offset_of, size_of};
use kernel::prelude::*;
use kernel::sync::Arc;

use super::uaccess;
use crate::uapi::*;

/// One range of a filter: MSRs `base .. base + nmsrs` for the accesses in `flags`; a set
/// bit in `bitmap` allows the MSR.
struct Range {
    flags: u32,
    base: u32,
    nmsrs: u32,
    bitmap: KVec<u8>,
}

/// An installed filter.
pub(crate) struct MsrFilter {
    default_allow: bool,
    ranges: KVec<Range>,
}

impl crate::x86::backend::MsrAllow for MsrFilter {
    /// Whether the guest may `write` (else read) MSR `index` through the kernel.
    fn allowed(&self, index: u32, write: bool) -> bool {
        if (0x800..=0x8ff).contains(&index) {
            return true;
        }
        let kind = if write {
            KVM_MSR_FILTER_WRITE
        } else {
            KVM_MSR_FILTER_READ
        };
        for r in self.ranges.iter() {
            let Some(bit) = index.checked_sub(r.base) else {
                continue;
            };
            if bit < r.nmsrs && r.flags & kind != 0 {
                let byte = r.bitmap.get((bit / 8) as usize).copied().unwrap_or(0);
                return byte & (1 << (bit % 8)) != 0;
            }
        }
        self.default_allow
    }
}

/// A u32 or u64 field of the user's `struct kvm_msr_filter`, at an offset taken from
/// bindgen's layout.
fn field_u32(buf: &[u8], off: usize) -> Result<u32> {
    let b = buf
        .get(off..off.checked_add(4).ok_or(EINVAL)?)
        .ok_or(EINVAL)?;
    Ok(u32::from_ne_bytes(b.try_into().map_err(|_| EINVAL)?))
}

fn field_u64(buf: &[u8], off: usize) -> Result<u64> {
    let b = buf
        .get(off..off.checked_add(8).ok_or(EINVAL)?)
        .ok_or(EINVAL)?;
    Ok(u64::from_ne_bytes(b.try_into().map_err(|_| EINVAL)?))
}

/// Reads and checks the user's filter (KVM's rules: only DEFAULT_DENY as a flag; a
/// range with MSRs needs READ and/or WRITE and at most 1536 bytes of bitmap, rounded up
/// to whole longs; a deny-by-default filter needs a range).
fn read_filter(arg: usize) -> Result<MsrFilter> {
    let mut buf = [0u8; size_of::<kvm_msr_filter>()];
    uaccess::read_into(arg, &mut buf)?;
    let flags = field_u32(&buf, offset_of!(kvm_msr_filter, flags))?;
    if flags & !KVM_MSR_FILTER_VALID_MASK != 0 {
        return Err(EINVAL);
    }
    let mut ranges = KVec::new();
    let mut empty = true;
    for i in 0..KVM_MSR_FILTER_MAX_RANGES as usize {
        let at = offset_of!(kvm_msr_filter, ranges) + i * size_of::<kvm_msr_filter_range>();
        let nmsrs = field_u32(&buf, at + offset_of!(kvm_msr_filter_range, nmsrs))?;
        if nmsrs == 0 {
            continue;
        }
        empty = false;
        let rflags = field_u32(&buf, at + offset_of!(kvm_msr_filter_range, flags))?;
        let base = field_u32(&buf, at + offset_of!(kvm_msr_filter_range, base))?;
        let ptr = field_u64(&buf, at + offset_of!(kvm_msr_filter_range, bitmap))?;
        if rflags & !KVM_MSR_FILTER_RANGE_VALID_MASK != 0 || rflags == 0 {
            return Err(EINVAL);
        }
        let bytes = (nmsrs as usize).div_ceil(64) * 8;
        if bytes > KVM_MSR_FILTER_MAX_BITMAP_SIZE as usize {
            return Err(EINVAL);
        }
        let mut bitmap = KVec::with_capacity(bytes, GFP_KERNEL_ACCOUNT)?;
        bitmap.resize(bytes, 0, GFP_KERNEL_ACCOUNT)?;
        uaccess::read_into(usize::try_from(ptr).map_err(|_| EFAULT)?, &mut bitmap)?;
        ranges.push(
            Range {
                flags: rflags,
                base,
                nmsrs,
                bitmap,
            },
            GFP_KERNEL_ACCOUNT,
        )?;
    }
    let default_allow = flags & KVM_MSR_FILTER_DEFAULT_DENY == 0;
    if empty && !default_allow {
        return Err(EINVAL);
    }
    Ok(MsrFilter {
        default_allow,
        ranges,
    })
}

/// `KVM_X86_SET_MSR_FILTER` on `vm`: replaces the filter and makes every vCPU pick it
/// up before it next runs guest code.
pub(crate) fn set(vm: &super::vm::Vm, arg: usize) -> Result<isize> {
    let f = Arc::new(read_filter(arg)?, GFP_KERNEL_ACCOUNT)?;
    vm.install_msr_filter(f);
    Ok(0)
}

// SPDX-License-Identifier: GPL-2.0

//! `KVM_IOEVENTFD`: a guest write to a registered MMIO address or I/O port (optionally
//! only with a given value) signals an eventfd instead of exiting to userspace, the
//! doorbell of virtio devices.

use super::uaccess;
use super::vm::Vm;
use crate::sys::ffi;
use crate::uapi::*;
use core::sync::atomic::Ordering;
use kernel::prelude::*;

/// Which bus a registration listens on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Bus {
    Mmio,
    Pio,
    /// s390's virtio-ccw notifications: accepted as KVM does, never reached on x86.
    Ccw,
}

/// One registration; holds a reference on its eventfd.
pub(crate) struct IoEventFd {
    ctx: *mut c_void,
    bus: Bus,
    addr: u64,
    /// 0: any access length.
    len: u32,
    datamatch: Option<u64>,
}

// SAFETY: The eventfd context is reference counted and signalled from any task.
unsafe impl Send for IoEventFd {}
// SAFETY: As above; `&IoEventFd` only reads its fields and signals.
unsafe impl Sync for IoEventFd {}

impl Drop for IoEventFd {
    fn drop(&mut self) {
        // SAFETY: `ctx` holds the reference `rkvm_eventfd_get` took; dropped once.
        unsafe { ffi::rkvm_eventfd_put(self.ctx) };
    }
}

impl IoEventFd {
    /// KVM's `ioeventfd_in_range`: same address, the registered length (or any), the
    /// value when it matches on data.
    fn hit(&self, bus: Bus, addr: u64, len: u32, val: u64) -> bool {
        if self.bus != bus || self.addr != addr || (self.len != 0 && self.len != len) {
            return false;
        }
        let Some(want) = self.datamatch else {
            return true;
        };
        let mask = if len >= 8 {
            u64::MAX
        } else {
            (1u64 << (len * 8)) - 1
        };
        val & mask == want & mask
    }

    /// KVM's collision rule: the same bus, address and length, and either of them
    /// matching any data or both the same datamatch.
    fn collides(&self, o: &IoEventFd) -> bool {
        self.bus == o.bus
            && self.addr == o.addr
            && self.len == o.len
            && (self.datamatch.is_none() || o.datamatch.is_none() || self.datamatch == o.datamatch)
    }
}

/// `KVM_IOEVENTFD`: assign or (`KVM_IOEVENTFD_FLAG_DEASSIGN`) remove.
pub(crate) fn ioctl(vm: &Vm, arg: usize) -> Result<isize> {
    let a: kvm_ioeventfd = uaccess::read(arg)?;
    let flags = a.flags;
    if flags & !(RKVM_IOEVENTFD_VALID_FLAGS) != 0 {
        return Err(EINVAL);
    }
    if !matches!(a.len, 0 | 1 | 2 | 4 | 8)
        || a.addr.checked_add(u64::from(a.len)).is_none()
        || (a.len == 0 && flags & RKVM_IOEVENTFD_FLAG_DATAMATCH != 0)
    {
        return Err(EINVAL);
    }
    let bus = if flags & RKVM_IOEVENTFD_FLAG_PIO != 0 {
        Bus::Pio
    } else if flags & !(RKVM_IOEVENTFD_FLAG_DATAMATCH | RKVM_IOEVENTFD_FLAG_DEASSIGN) != 0 {
        Bus::Ccw
    } else {
        Bus::Mmio
    };
    let mut err = 0;
    // SAFETY: Looks the fd up in the current task; `err` is a valid out-pointer.
    let ctx = unsafe { ffi::rkvm_eventfd_get(a.fd, &mut err) };
    if ctx.is_null() {
        return Err(Error::from_errno(err));
    }
    let new = IoEventFd {
        ctx,
        bus,
        addr: a.addr,
        len: a.len,
        datamatch: (flags & RKVM_IOEVENTFD_FLAG_DATAMATCH != 0).then_some(a.datamatch),
    };
    let mut l = vm.locked.lock();
    if flags & RKVM_IOEVENTFD_FLAG_DEASSIGN != 0 {
        let pos = l.ioeventfds.iter().position(|e| {
            e.ctx == new.ctx
                && e.bus == new.bus
                && e.addr == new.addr
                && e.len == new.len
                && e.datamatch == new.datamatch
        });
        let gone = pos.map(|i| l.ioeventfds.remove(i)).ok_or(ENOENT)??;
        vm.ioeventfd_count.store(
            u32::try_from(l.ioeventfds.len()).unwrap_or(u32::MAX),
            Ordering::Release,
        );
        drop(l);
        drop(gone);
        return Ok(0);
    }
    if l.ioeventfds.iter().any(|e| e.collides(&new)) {
        return Err(EEXIST);
    }
    // As in KVM, ioeventfds do not count against a bus's device limit (the memory they
    // take is charged to the caller's memory cgroup instead), but a bus whose other
    // devices, the coalesced zones, already reach it takes no ioeventfd either.
    if new.bus != Bus::Ccw && super::coalesced::bus_full(&l.coalesced, new.bus == Bus::Pio) {
        return Err(ENOSPC);
    }
    l.ioeventfds.push(new, GFP_KERNEL_ACCOUNT)?;
    vm.ioeventfd_count.store(
        u32::try_from(l.ioeventfds.len()).unwrap_or(u32::MAX),
        Ordering::Release,
    );
    Ok(0)
}

/// A guest write of `len` bytes of `val` to `addr` (a port when `pio`): `true` if an
/// ioeventfd took it (and was signalled).
pub(crate) fn write(vm: &Vm, addr: u64, len: u32, pio: bool, val: u64) -> bool {
    if vm.ioeventfd_count.load(Ordering::Acquire) == 0 {
        return false;
    }
    let bus = if pio { Bus::Pio } else { Bus::Mmio };
    let l = vm.locked.lock();
    let Some(e) = l.ioeventfds.iter().find(|e| e.hit(bus, addr, len, val)) else {
        return false;
    };
    // SAFETY: `e.ctx` holds a reference while `e` is registered (the lock is held).
    unsafe { ffi::rkvm_eventfd_signal(e.ctx) };
    true
}

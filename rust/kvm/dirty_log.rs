// SPDX-License-Identifier: GPL-2.0

//! Dirty page logging by bitmap: `KVM_GET_DIRTY_LOG` and `KVM_CLEAR_DIRTY_LOG` (with and
//! without `KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2`). The bitmaps live in the runtime slots
//! (`memslot.rs`); pages are marked in them by the fault path and by rkvm's own writes
//! (`vm.rs`). VMs with dirty rings (`dirty_ring.rs`) have no bitmaps: `ENXIO`.

use super::memslot;
use super::uaccess;
use super::vm::{MmuState, Vm, VmLocked};
use crate::uapi::*;
use core::sync::atomic::Ordering;
use kernel::prelude::*;

impl Vm {
    pub(super) fn get_dirty_log(&self, arg: usize) -> Result<isize> {
        let log: KvmDirtyLogHeader = read_dirty_header(arg)?;
        if self.dirty_ring_bytes.load(Ordering::Relaxed) != 0 {
            return Err(ENXIO);
        }
        let l = self.locked.lock();
        let meta = dirty_logged_slot(&l, log.slot)?;
        self.sync_cpu_logs(&l);
        let words = meta.bitmap_words();
        let mut snapshot = KVVec::with_capacity(words, GFP_KERNEL_ACCOUNT)?;
        for _ in 0..words {
            snapshot.push(0u64, GFP_KERNEL_ACCOUNT)?;
        }
        let manual = self.manual_protect.load(Ordering::Acquire);
        let gen = {
            let mut m = self.mmu.lock();
            let MmuState { tdp, slots, .. } = &mut *m;
            let s = memslot::find_mut(slots, meta.base_gfn).ok_or(ENOENT)?;
            let d = s.dirty.as_mut().ok_or(ENOENT)?;
            for (a, b) in snapshot.iter_mut().zip(d.iter_mut()) {
                *a = *b;
                if !manual {
                    *b = 0;
                }
            }
            let changed =
                !manual && tdp.track_writes(meta.base_gfn, meta.end_gfn(), Some(&snapshot));
            m.ept_changed(changed)
        };
        drop(l);
        self.flush_upto(gen, false);
        uaccess::write_slice(log.bitmap as usize, &snapshot)?;
        Ok(0)
    }

    pub(super) fn clear_dirty_log(&self, arg: usize) -> Result<isize> {
        let c: ClearDirtyLog = read_clear_header(arg)?;
        if self.dirty_ring_bytes.load(Ordering::Relaxed) != 0 {
            return Err(ENXIO);
        }
        let l = self.locked.lock();
        let meta = dirty_logged_slot(&l, c.slot)?;
        self.sync_cpu_logs(&l);
        // KVM's rules: first_page 64-aligned; num_pages a multiple of 64 unless the range
        // ends at the end of the slot.
        let end = c
            .first_page
            .checked_add(u64::from(c.num_pages))
            .ok_or(EINVAL)?;
        if c.first_page & 63 != 0
            || (c.num_pages & 63 != 0 && end != meta.npages)
            || end > meta.npages
        {
            return Err(EINVAL);
        }
        let words = (c.num_pages as usize).div_ceil(64);
        let mask: KVVec<u64> = uaccess::read_vec(c.bitmap as usize, words)?;
        let first_word = (c.first_page / 64) as usize;
        let gen = {
            let mut m = self.mmu.lock();
            let MmuState { tdp, slots, .. } = &mut *m;
            let s = memslot::find_mut(slots, meta.base_gfn).ok_or(ENOENT)?;
            let d = s.dirty.as_mut().ok_or(ENOENT)?;
            for (i, &bits) in mask.iter().enumerate() {
                if let Some(w) = d.get_mut(first_word + i) {
                    *w &= !bits;
                }
            }
            let start = meta.base_gfn + c.first_page;
            let changed = tdp.track_writes(start, meta.base_gfn + end, Some(&mask));
            m.ept_changed(changed)
        };
        drop(l);
        self.flush_upto(gen, false);
        Ok(0)
    }
}

impl Vm {
    /// Where the CPU logs written pages, running vCPUs hold pages in their logs until
    /// their next exit: make them exit (KVM's `kvm_arch_sync_dirty_log`). As in KVM, this
    /// does not wait for the logs to reach the bitmap; a vCPU that is not running has
    /// none left.
    fn sync_cpu_logs(&self, l: &VmLocked) {
        if self.kvm.arch.mmu.masks.dirty != 0 {
            for v in l.vcpus.iter() {
                v.kick_out_of_guest();
            }
        }
    }
}

/// `struct kvm_dirty_log` without its pointer union (slot, padding, bitmap address).
#[derive(Clone, Copy)]
struct KvmDirtyLogHeader {
    slot: u32,
    bitmap: u64,
}

fn read_dirty_header(arg: usize) -> Result<KvmDirtyLogHeader> {
    // Layout from the generated struct: `slot` at 0, the bitmap pointer union at 8.
    let slot: u32 = uaccess::read(arg)?;
    let bitmap: u64 = uaccess::read(uaccess::offset(
        arg,
        core::mem::offset_of!(kvm_dirty_log, __bindgen_anon_1),
    )?)?;
    Ok(KvmDirtyLogHeader { slot, bitmap })
}

/// `struct kvm_clear_dirty_log`'s fields.
#[derive(Clone, Copy)]
struct ClearDirtyLog {
    slot: u32,
    num_pages: u32,
    first_page: u64,
    bitmap: u64,
}

/// The slot a dirty-log ioctl names: `EINVAL` for an id out of range (address-space bits
/// included: rkvm has one address space), `ENOENT` if it does not exist or logs nothing.
fn dirty_logged_slot(l: &VmLocked, slot: u32) -> Result<memslot::SlotMeta> {
    let id = (slot & 0xffff) as u16;
    if slot >> 16 != 0 || u32::from(id) >= memslot::USER_MEM_SLOTS {
        return Err(EINVAL);
    }
    let meta = l.slots.get(id).ok_or(ENOENT)?;
    if !meta.logs_dirty() {
        return Err(ENOENT);
    }
    Ok(meta)
}

fn read_clear_header(arg: usize) -> Result<ClearDirtyLog> {
    let at = |off: usize| uaccess::offset(arg, off);
    Ok(ClearDirtyLog {
        slot: uaccess::read(at(core::mem::offset_of!(kvm_clear_dirty_log, slot))?)?,
        num_pages: uaccess::read(at(core::mem::offset_of!(kvm_clear_dirty_log, num_pages))?)?,
        first_page: uaccess::read(at(core::mem::offset_of!(kvm_clear_dirty_log, first_page))?)?,
        bitmap: uaccess::read(at(core::mem::offset_of!(
            kvm_clear_dirty_log,
            __bindgen_anon_1
        ))?)?,
    })
}

// SPDX-License-Identifier: GPL-2.0

//! Memory slots: which guest-physical ranges are backed by which user memory.
//!
//! The metadata (validated, authoritative) lives under the VM's slots mutex; a runtime
//! copy with the dirty bitmaps lives under the MMU spinlock, where the fault path and the
//! MMU notifier read it. A change builds the new runtime list outside the spinlock and
//! swaps it in, so the lock never allocates.

use crate::uapi::*;
use kernel::prelude::*;

/// KVM's number of user memslots on x86 (`KVM_CAP_NR_MEMSLOTS`).
pub(crate) const USER_MEM_SLOTS: u32 = 32764;
/// KVM's limit on pages per slot.
const MEM_MAX_NR_PAGES: u64 = (1 << 31) - 1;
/// Flags userspace may set.
const VALID_FLAGS: u32 = KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY;
/// The top of the user address space on x86-64 with 4-level paging.
const TASK_SIZE_MAX: u64 = (1 << 47) - 4096;

/// One slot's description.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SlotMeta {
    pub(crate) id: u16,
    pub(crate) base_gfn: u64,
    pub(crate) npages: u64,
    pub(crate) hva: u64,
    pub(crate) flags: u32,
}

impl SlotMeta {
    pub(crate) fn end_gfn(&self) -> u64 {
        self.base_gfn + self.npages
    }
    pub(crate) fn logs_dirty(&self) -> bool {
        self.flags & KVM_MEM_LOG_DIRTY_PAGES != 0
    }
    pub(crate) fn readonly(&self) -> bool {
        self.flags & KVM_MEM_READONLY != 0
    }
    /// Bytes of the slot's dirty bitmap as KVM sizes it (whole longs).
    pub(crate) fn bitmap_words(&self) -> usize {
        self.npages.div_ceil(64) as usize
    }
}

/// What a `KVM_SET_USER_MEMORY_REGION` call does to the slots.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// Nothing to do.
    None,
    Create(SlotMeta),
    Delete(SlotMeta),
    /// From, to.
    Move(SlotMeta, SlotMeta),
    Flags(SlotMeta, SlotMeta),
}

/// The validated set of slots (under the slots mutex).
#[derive(Default)]
pub(crate) struct Slots {
    pub(crate) list: KVec<SlotMeta>,
}

impl Slots {
    fn by_id(&self, id: u16) -> Option<&SlotMeta> {
        self.list.iter().find(|s| s.id == id)
    }

    /// Validates a region request as KVM's `kvm_set_memory_region()` does; `max_gfn` is
    /// the highest guest frame the EPT can map.
    pub(crate) fn plan(&self, m: &kvm_userspace_memory_region2, max_gfn: u64) -> Result<Change> {
        if m.flags & !VALID_FLAGS != 0 {
            return Err(EINVAL);
        }
        let as_id = m.slot >> 16;
        let id = (m.slot & 0xffff) as u16;
        if m.memory_size & 0xfff != 0 || m.guest_phys_addr & 0xfff != 0 {
            return Err(EINVAL);
        }
        if m.userspace_addr & 0xfff != 0
            || m.userspace_addr
                .checked_add(m.memory_size)
                .is_none_or(|e| e > TASK_SIZE_MAX)
        {
            return Err(EINVAL);
        }
        // One address space: rkvm has no SMM.
        if as_id != 0 || u32::from(id) >= USER_MEM_SLOTS {
            return Err(EINVAL);
        }
        if m.guest_phys_addr.checked_add(m.memory_size).is_none() {
            return Err(EINVAL);
        }
        let npages = m.memory_size >> 12;
        if npages > MEM_MAX_NR_PAGES {
            return Err(EINVAL);
        }
        let old = self.by_id(id).copied();
        if npages == 0 {
            return old.map(Change::Delete).ok_or(EINVAL);
        }
        let new = SlotMeta {
            id,
            base_gfn: m.guest_phys_addr >> 12,
            npages,
            hva: m.userspace_addr,
            flags: m.flags,
        };
        let change = match old {
            None => Change::Create(new),
            Some(o) => {
                if o.hva != new.hva
                    || o.npages != new.npages
                    || (o.flags ^ new.flags) & KVM_MEM_READONLY != 0
                {
                    return Err(EINVAL);
                }
                if o.base_gfn != new.base_gfn {
                    Change::Move(o, new)
                } else if o.flags != new.flags {
                    Change::Flags(o, new)
                } else {
                    return Ok(Change::None);
                }
            }
        };
        if matches!(change, Change::Create(_) | Change::Move(..)) {
            // Beyond the EPT's reach a frame number would wrap onto low memory.
            if new.end_gfn() - 1 > max_gfn {
                return Err(EINVAL);
            }
            let overlap = self
                .list
                .iter()
                .any(|s| s.id != id && s.base_gfn < new.end_gfn() && new.base_gfn < s.end_gfn());
            if overlap {
                return Err(EEXIST);
            }
        }
        Ok(change)
    }

    /// The slots after `change`, sorted by guest frame.
    pub(crate) fn apply(&self, change: &Change) -> Result<KVec<SlotMeta>> {
        let mut list = KVec::with_capacity(self.list.len() + 1, GFP_KERNEL_ACCOUNT)?;
        let (gone, added) = match change {
            Change::None => (None, None),
            Change::Create(n) => (None, Some(*n)),
            Change::Delete(o) => (Some(o.id), None),
            Change::Move(o, n) | Change::Flags(o, n) => (Some(o.id), Some(*n)),
        };
        // The list is kept sorted by guest frame: copy it, leaving out the old slot and
        // putting the new one in its place.
        let mut pending = added;
        for s in self.list.iter().filter(|s| Some(s.id) != gone) {
            if let Some(n) = pending.filter(|n| n.base_gfn < s.base_gfn) {
                list.push(n, GFP_KERNEL_ACCOUNT)?;
                pending = None;
            }
            list.push(*s, GFP_KERNEL_ACCOUNT)?;
        }
        if let Some(n) = pending {
            list.push(n, GFP_KERNEL_ACCOUNT)?;
        }
        Ok(list)
    }
}

/// A slot as the fault path sees it, with its dirty bitmap.
pub(crate) struct RuntimeSlot {
    pub(crate) meta: SlotMeta,
    /// One bit per page, when the slot logs dirty pages.
    pub(crate) dirty: Option<KVVec<u64>>,
}

/// Builds the runtime list for `list` (outside the spinlock: it allocates); `bitmaps`:
/// logging slots have dirty bitmaps (no dirty rings). Only the slot
/// that `change` creates, moves or starts logging gets a new (clear) dirty bitmap; the
/// other logging slots keep theirs, moved over by [`move_dirty_bitmaps`] under the lock.
/// Bitmaps are charged to the caller's memory cgroup.
pub(crate) fn runtime_list(
    list: &[SlotMeta],
    change: &Change,
    bitmaps: bool,
) -> Result<KVec<RuntimeSlot>> {
    let fresh = match change {
        Change::Create(n) | Change::Move(_, n) | Change::Flags(_, n) => Some(n.id),
        Change::None | Change::Delete(_) => None,
    };
    let mut out = KVec::with_capacity(list.len(), GFP_KERNEL_ACCOUNT)?;
    for &meta in list {
        let dirty = if bitmaps && meta.logs_dirty() && Some(meta.id) == fresh {
            let n = meta.bitmap_words();
            let mut v = KVVec::with_capacity(n, GFP_KERNEL_ACCOUNT)?;
            // Pushed one by one: `resize` carries a (never taken) bounds-check panic.
            for _ in 0..n {
                v.push(0, GFP_KERNEL_ACCOUNT)?;
            }
            Some(v)
        } else {
            None
        };
        out.push(RuntimeSlot { meta, dirty }, GFP_KERNEL_ACCOUNT)?;
    }
    Ok(out)
}

/// Gives every logging slot of `new` that has no bitmap yet the bitmap of the same slot in
/// `old` (same id, frames and flags). Both lists are sorted by guest frame, so this is
/// one merge walk: linear in the number of slots, and it never allocates (it runs under
/// the MMU spinlock).
pub(crate) fn move_dirty_bitmaps(old: &mut [RuntimeSlot], new: &mut [RuntimeSlot]) {
    let mut olds = old.iter_mut().peekable();
    for n in new
        .iter_mut()
        .filter(|n| n.meta.logs_dirty() && n.dirty.is_none())
    {
        while olds
            .next_if(|o| o.meta.base_gfn < n.meta.base_gfn)
            .is_some()
        {}
        if let Some(o) = olds.next_if(|o| o.meta == n.meta) {
            n.dirty = o.dirty.take();
        }
    }
}

/// The slot holding `gfn` in a sorted list.
pub(crate) fn find(list: &[RuntimeSlot], gfn: u64) -> Option<&RuntimeSlot> {
    let i = list.partition_point(|s| s.meta.end_gfn() <= gfn);
    list.get(i).filter(|s| s.meta.base_gfn <= gfn)
}

/// Mutable variant of [`find`].
pub(crate) fn find_mut(list: &mut [RuntimeSlot], gfn: u64) -> Option<&mut RuntimeSlot> {
    let i = list.partition_point(|s| s.meta.end_gfn() <= gfn);
    list.get_mut(i).filter(|s| s.meta.base_gfn <= gfn)
}

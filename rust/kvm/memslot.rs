// SPDX-License-Identifier: GPL-2.0

//! Memory slots: which guest-physical ranges are backed by which user memory.
//!
//! The metadata (validated, authoritative) lives under the VM's slots mutex; a runtime
//! copy with the dirty bitmaps lives under the MMU spinlock, where the fault path and the
//! MMU notifier read it. Both are red-black trees, so adding, moving or deleting a slot
//! costs O(log n) with n slots (KVM's memslot trees do the same; a VMM may create all
//! 32764). A change allocates its tree nodes outside the spinlock and links them in under
//! it, so the lock never allocates; nodes it unlinks are freed after it is dropped.

use crate::uapi::*;
use kernel::prelude::*;
use kernel::rbtree::{RBTree, RBTreeNode};

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
    /// The slot's last frame: its key in the trees by frame (slots have pages).
    pub(crate) fn last_gfn(&self) -> u64 {
        self.end_gfn() - 1
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

/// The validated set of slots (under the slots mutex), indexed both ways so that every
/// change costs a few tree operations, whatever the number of slots.
///
/// # Invariants
///
/// `by_gfn` maps the last guest frame of every slot in `by_id` to its id, and nothing
/// else; no two slots share a guest frame.
#[derive(Default)]
pub(crate) struct Slots {
    by_id: RBTree<u16, SlotMeta>,
    by_gfn: RBTree<u64, u16>,
}

/// Everything a change needs allocated, got before any tree changes (so a failed
/// allocation leaves the slots as they were) and outside the MMU spinlock.
pub(crate) struct Update {
    by_id: Option<RBTreeNode<u16, SlotMeta>>,
    by_gfn: Option<RBTreeNode<u64, u16>>,
    runtime: Option<RBTreeNode<u64, RuntimeSlot>>,
}

impl Slots {
    /// The slot with this id.
    pub(crate) fn get(&self, id: u16) -> Option<SlotMeta> {
        self.by_id.get(&id).copied()
    }

    /// Whether a slot other than `id` holds a frame of `[base, end)`.
    fn overlaps(&self, id: u16, base: u64, end: u64) -> bool {
        // Slots are disjoint: the first slot ending at or after `base` and the one after
        // it are the only ones that can overlap, and the first may be `id` itself.
        let Some(c) = self.by_gfn.cursor_lower_bound(&base) else {
            return false;
        };
        let hit = |(_, &other): (&u64, &u16)| {
            other != id && self.by_id.get(&other).is_some_and(|s| s.base_gfn < end)
        };
        hit(c.current()) || c.peek_next().is_some_and(hit)
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
        let old = self.get(id);
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
            if self.overlaps(id, new.base_gfn, new.end_gfn()) {
                return Err(EEXIST);
            }
        }
        Ok(change)
    }

    /// Allocates what `change` needs: its nodes in both trees and its runtime slot, with
    /// a clear dirty bitmap if it logs dirty pages and `bitmaps` (no dirty rings). The
    /// other slots keep their runtime nodes and bitmaps. Charged to the caller's cgroup.
    pub(crate) fn prepare(&self, change: &Change, bitmaps: bool) -> Result<Update> {
        let new = match change {
            Change::Create(n) | Change::Move(_, n) | Change::Flags(_, n) => *n,
            Change::None | Change::Delete(_) => {
                return Ok(Update {
                    by_id: None,
                    by_gfn: None,
                    runtime: None,
                })
            }
        };
        let dirty = if bitmaps && new.logs_dirty() {
            let n = new.bitmap_words();
            let mut v = KVVec::with_capacity(n, GFP_KERNEL_ACCOUNT)?;
            // Pushed one by one: `resize` carries a (never taken) bounds-check panic.
            for _ in 0..n {
                v.push(0, GFP_KERNEL_ACCOUNT)?;
            }
            Some(v)
        } else {
            None
        };
        Ok(Update {
            by_id: Some(RBTreeNode::new(new.id, new, GFP_KERNEL_ACCOUNT)?),
            by_gfn: Some(RBTreeNode::new(new.last_gfn(), new.id, GFP_KERNEL_ACCOUNT)?),
            runtime: Some(RBTreeNode::new(
                new.last_gfn(),
                RuntimeSlot { meta: new, dirty },
                GFP_KERNEL_ACCOUNT,
            )?),
        })
    }

    /// Makes `change` in the metadata, with the nodes `upd` holds (it never allocates).
    pub(crate) fn commit(&mut self, change: &Change, upd: &mut Update) {
        if let Change::Delete(o) | Change::Move(o, _) | Change::Flags(o, _) = change {
            self.by_id.remove(&o.id);
            self.by_gfn.remove(&o.last_gfn());
        }
        if let Some(n) = upd.by_id.take() {
            self.by_id.insert(n);
        }
        if let Some(n) = upd.by_gfn.take() {
            self.by_gfn.insert(n);
        }
    }
}

/// The runtime slots, by last guest frame (under the MMU spinlock).
///
/// # Invariants
///
/// Every slot's user addresses lie in `[hva_lo, hva_hi)` (bounds that only widen while
/// slots exist, so a deletion never needs a walk).
pub(crate) struct RuntimeSlots {
    tree: RBTree<u64, RuntimeSlot>,
    hva_lo: u64,
    hva_hi: u64,
}

impl RuntimeSlots {
    pub(crate) fn new() -> Self {
        Self {
            tree: RBTree::new(),
            hva_lo: u64::MAX,
            hva_hi: 0,
        }
    }

    /// The slots, by guest frame.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &RuntimeSlot> {
        self.tree.values()
    }

    /// Whether some slot may be backed by user addresses in `[start, end)`: the MMU
    /// notifier's callbacks (page aging runs for every page of the process) skip the
    /// walk over the slots when none can be.
    pub(crate) fn may_back(&self, start: u64, end: u64) -> bool {
        start < self.hva_hi && self.hva_lo < end
    }
}

/// Makes `change` in the runtime slots, under the MMU spinlock: unlinks the old slot and
/// links in the node `upd` holds, without allocating or freeing. Returns the unlinked
/// nodes, to be dropped (bitmaps freed: that may sleep) after the spinlock is released.
pub(crate) fn commit_runtime(
    rt: &mut RuntimeSlots,
    change: &Change,
    upd: &mut Update,
) -> [Option<RBTreeNode<u64, RuntimeSlot>>; 2] {
    let old = match change {
        Change::Delete(o) | Change::Move(o, _) | Change::Flags(o, _) => {
            rt.tree.remove_node(&o.last_gfn())
        }
        Change::None | Change::Create(_) => None,
    };
    if let Change::Create(n) | Change::Move(_, n) | Change::Flags(_, n) = change {
        rt.hva_lo = rt.hva_lo.min(n.hva);
        rt.hva_hi = rt.hva_hi.max(n.hva.saturating_add(n.npages << 12));
    }
    if rt.tree.is_empty() && upd.runtime.is_none() {
        rt.hva_lo = u64::MAX;
        rt.hva_hi = 0;
    }
    // Slots are disjoint and the old one is gone, so the new key is free and nothing is
    // replaced; should it be, the replaced node goes back too.
    let replaced = upd.runtime.take().and_then(|n| rt.tree.insert(n));
    [old, replaced]
}

/// A slot as the fault path sees it, with its dirty bitmap.
pub(crate) struct RuntimeSlot {
    pub(crate) meta: SlotMeta,
    /// One bit per page, when the slot logs dirty pages.
    pub(crate) dirty: Option<KVVec<u64>>,
}

/// The slot holding `gfn`: the first slot ending at or after it, if it starts at or
/// before it.
pub(crate) fn find(rt: &RuntimeSlots, gfn: u64) -> Option<SlotMeta> {
    let c = rt.tree.cursor_lower_bound(&gfn)?;
    let (_, s) = c.current();
    (s.meta.base_gfn <= gfn).then_some(s.meta)
}

/// The slot holding `gfn`, with its dirty bitmap.
pub(crate) fn find_mut(rt: &mut RuntimeSlots, gfn: u64) -> Option<&mut RuntimeSlot> {
    let last = find(rt, gfn)?.last_gfn();
    rt.tree.get_mut(&last)
}

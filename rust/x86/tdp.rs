// SPDX-License-Identifier: GPL-2.0

//! Two-dimensional paging: the guest-physical to host-physical map of one VM, in the
//! format of the backend's hardware (Intel EPT or AMD NPT; the entry bits come from
//! [`SpteMasks`], everything else is the same).
//!
//! Four levels of 512-entry tables, filled lazily on EPT violations or nested page faults
//! from the memslots'
//! user pages and emptied when the host takes a page away (MMU notifier), when a memslot
//! moves or goes, and on memory pressure. Every table is a zeroed page the VM owns; its
//! header (the `PhysPage` and the child pointers) comes from the MMU page-header cache.
//! All methods run under the VM's MMU spinlock and never allocate: tables a mapping needs
//! come from a spare pool filled beforehand ([`Tdp::spares_needed`]).

use super::mmu::{SpteMasks, USED_MMU_PAGES};
use crate::sys::kmem::{KmemBox, KmemCache};
use crate::sys::page::PhysPage;
use core::sync::atomic::Ordering;
use kernel::prelude::*;

/// Levels (4 = PML4).
const LEVELS: u8 = 4;
/// Entries per table.
const ENTRIES: usize = 512;
/// Tables one mapping may need below the root that hold child tables (levels 3 and 2);
/// it may need one level-1 table besides.
const UPPER_SPARES: usize = (LEVELS - 2) as usize;
/// Spare tables one mapping may need in all.
pub(crate) const MAPPING_SPARES: usize = UPPER_SPARES + 1;
/// Frames of a 2 MiB mapping.
pub(crate) const HUGE_PAGES: u64 = 512;
/// The page-size bit of a level-2 or level-3 entry that maps 2 MiB or 1 GiB itself (EPT
/// and NPT alike).
const PAGE_SIZE_BIT: u64 = 1 << 7;
/// The highest level whose entries may map memory themselves (1 GiB at level 3).
pub(crate) const MAX_LEAF_LEVEL: u8 = 3;

/// Frames one leaf entry of `level` maps: 1, 512 (2 MiB), 512 * 512 (1 GiB).
pub(crate) const fn level_frames(level: u8) -> u64 {
    1 << (9 * (level as u32 - 1))
}

/// One page-table page and, above level 1, room for its children.
pub(crate) struct Table {
    page: PhysPage,
    children: KVec<Option<KmemBox<Table>>>,
    level: u8,
    /// A level-1 table made because an instruction fetch could not use the huge mapping
    /// the host memory allowed here (KVM's possible NX huge page).
    nx_split: bool,
}

impl Table {
    fn new(cache: &KmemCache<Table>, level: u8, slots: usize) -> Result<KmemBox<Table>> {
        // A table above level 1 gets room for `slots` child slots (all 512, 8 KiB, but
        // for the root, whose slots above MAXPHYADDR never fill), filled in only up to
        // the highest one used (`slot_mut`); a level-1 table, which never has children,
        // none.
        let children = if level > 1 {
            KVec::with_capacity(slots.min(ENTRIES), GFP_KERNEL_ACCOUNT)?
        } else {
            KVec::new()
        };
        let t = cache.alloc_value(Table {
            page: PhysPage::new()?,
            children,
            level,
            nx_split: false,
        })?;
        USED_MMU_PAGES.fetch_add(1, Ordering::Relaxed);
        Ok(t)
    }
}

impl Table {
    /// Whether this table or one below it maps any page.
    fn any_present(&self, read_bit: u64) -> bool {
        (0..ENTRIES).any(|j| match self.children.get(j) {
            Some(Some(c)) => c.any_present(read_bit),
            _ => self.page.read(j) & read_bit != 0,
        })
    }

    /// The tables of this subtree, itself included, and how many of them are marked as
    /// split huge pages.
    fn count(&self) -> (u64, u64) {
        self.children
            .iter()
            .flatten()
            .map(|c| c.count())
            .fold((1, u64::from(self.nx_split)), |(t, n), (ct, cn)| {
                (t + ct, n + cn)
            })
    }
}

/// The root's child slots that can ever fill: those up to MAXPHYADDR's (one on a host
/// with 39-bit physical addresses, 512 only with 48).
fn root_slots(masks: SpteMasks) -> usize {
    index(masks.max_gfn, LEVELS) + 1
}

/// Child slot `i` of a table's `children`, filling in the empty slots before it first.
/// Never allocates, so it may run under the MMU spinlock; it writes at most 512 slots over
/// the table's life. `EINVAL` past the room reserved with the table (512 slots, but for
/// the root: [`root_slots`], beyond which no frame reaches, since walks reject frames
/// above MAXPHYADDR first).
fn slot_mut(
    children: &mut KVec<Option<KmemBox<Table>>>,
    i: usize,
) -> Result<&mut Option<KmemBox<Table>>> {
    while children.len() <= i {
        children.push_within_capacity(None).map_err(|_| EINVAL)?;
    }
    children.get_mut(i).ok_or(EINVAL)
}

impl Drop for Table {
    fn drop(&mut self) {
        USED_MMU_PAGES.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Permissions of a leaf mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Perm {
    pub(crate) write: bool,
    /// Instruction fetches allowed (always, but for 2 MiB leaves under the iTLB multihit
    /// mitigation, KVM's nx_huge_pages).
    pub(crate) exec: bool,
}

/// Index of `gfn` in a table of `level`.
fn index(gfn: u64, level: u8) -> usize {
    ((gfn >> (9 * u32::from(level - 1))) & 0x1ff) as usize
}

/// The two-dimensional page table of one VM.
pub(crate) struct Tdp {
    root: KmemBox<Table>,
    masks: SpteMasks,
    /// Spare tables with room for children, and level-1 ones.
    spares: Spares<{ 2 * UPPER_SPARES }>,
    leaf_spares: Spares<2>,
    /// 4 KiB leaf entries present (KVM's pages_4k).
    pub(crate) leaves: u64,
    /// 2 MiB leaf entries present (KVM's pages_2m).
    pub(crate) huge_leaves: u64,
    /// 1 GiB leaf entries present (KVM's pages_1g).
    pub(crate) giant_leaves: u64,
    /// Table pages in use, root included.
    pub(crate) tables: u64,
    /// Level-1 tables marked by [`Tdp::mark_nx_split`] (KVM's nx_lpage_splits).
    pub(crate) nx_splits: u64,
    /// Where [`Tdp::recover_nx`] goes on from (a guest frame).
    nx_cursor: u64,
}

impl Tdp {
    /// An empty table.
    pub(crate) fn new(cache: &KmemCache<Table>, masks: SpteMasks) -> Result<Self> {
        Ok(Self {
            root: Table::new(cache, LEVELS, root_slots(masks))?,
            masks,
            spares: Spares::new(),
            leaf_spares: Spares::new(),
            leaves: 0,
            huge_leaves: 0,
            giant_leaves: 0,
            tables: 1,
            nx_splits: 0,
            nx_cursor: 0,
        })
    }

    /// The root table (the backend makes its pointer format from it).
    pub(crate) fn root(&self) -> crate::sys::page::Hpa {
        self.root.page.phys()
    }

    /// How many spare tables a mapping may need beyond those already in the pools: upper
    /// ones (room for children) and level-1 ones.
    pub(crate) fn spares_needed(&self) -> SparesNeeded {
        SparesNeeded {
            upper: UPPER_SPARES.saturating_sub(self.spares.len()),
            leaf: 1usize.saturating_sub(self.leaf_spares.len()),
        }
    }

    /// Adds a spare table (allocated with [`Tdp::alloc_spare`] outside the lock) to the
    /// pool of its kind.
    pub(crate) fn add_spare(&mut self, t: KmemBox<Table>) {
        if t.children.capacity() >= ENTRIES {
            self.spares.push(t);
        } else {
            self.leaf_spares.push(t);
        }
    }

    /// Allocates a table for a spare pool: an upper one (with room for children) or a
    /// level-1 one. May sleep.
    pub(crate) fn alloc_spare(cache: &KmemCache<Table>, upper: bool) -> Result<KmemBox<Table>> {
        Table::new(cache, if upper { 2 } else { 1 }, ENTRIES)
    }

    /// The table of `level` that holds `gfn`'s entry, made from spares where missing.
    /// `EEXIST` when a 2 MiB leaf sits where a table would go.
    fn table_for(&mut self, gfn: u64, level: u8) -> Result<&mut Table> {
        let m = self.masks;
        if gfn > m.max_gfn {
            return Err(EFAULT);
        }
        let mut t: &mut Table = &mut self.root;
        while t.level > level {
            let i = index(gfn, t.level);
            let child_level = t.level - 1;
            let slot = slot_mut(&mut t.children, i)?;
            if slot.is_none() {
                if t.page.read(i) & m.read != 0 {
                    // A 2 MiB or 1 GiB leaf.
                    return Err(EEXIST);
                }
                // A level-1 table may come from either pool.
                let new = if child_level > 1 {
                    self.spares.pop()
                } else {
                    self.leaf_spares.pop().or_else(|| self.spares.pop())
                };
                let mut new = new.ok_or(ENOMEM)?;
                new.level = child_level;
                t.page
                    .write(i, new.page.phys().0 | m.read | m.write | m.exec);
                *slot = Some(new);
                self.tables += 1;
            }
            t = slot.as_deref_mut().ok_or(EINVAL)?;
        }
        Ok(t)
    }

    /// Maps the 2 MiB (`level` 2) or 1 GiB (`level` 3) at `gfn` to the host frames from
    /// `pfn` with one entry; both are multiples of [`level_frames`]. [`Huge::Blocked`]
    /// when smaller mappings are present in that range: the caller maps smaller pages
    /// instead. Tables left empty there (their pages were unmapped) are replaced, and
    /// handed back to be freed once every CPU has flushed. Errors as `map`.
    pub(crate) fn map_large(&mut self, gfn: u64, pfn: u64, level: u8, perm: Perm) -> Result<Huge> {
        let m = self.masks;
        if !(2..=MAX_LEAF_LEVEL).contains(&level) {
            return Err(EINVAL);
        }
        let frames = level_frames(level);
        if gfn % frames != 0 || pfn % frames != 0 {
            return Err(EINVAL);
        }
        let t = self.table_for(gfn, level)?;
        let i = index(gfn, level);
        let slot = slot_mut(&mut t.children, i)?;
        if slot.as_deref().is_some_and(|c| c.any_present(m.read)) {
            return Ok(Huge::Blocked);
        }
        let empty = slot.take();
        let old = t.page.read(i);
        let mut e = (pfn << 12) & m.addr | m.read | m.memtype_wb | m.accessed | PAGE_SIZE_BIT;
        if perm.write {
            // Writable entries start dirty, as KVM's: only clearing dirty flags for
            // dirty logging (`track_writes`) makes clean ones, so a CPU that runs without
            // its log of written pages never writes a clean page unlogged.
            e |= m.write | m.dirty;
        }
        if perm.exec {
            e |= m.exec;
        } else {
            e |= m.nx;
        }
        t.page.write(i, e);
        let (tables, splits) = empty.as_deref().map_or((0, 0), Table::count);
        self.tables = self.tables.saturating_sub(tables);
        self.nx_splits = self.nx_splits.saturating_sub(splits);
        if empty.is_some() || old & m.read == 0 {
            if level == 2 {
                self.huge_leaves += 1;
            } else {
                self.giant_leaves += 1;
            }
        }
        Ok(Huge::Mapped(empty))
    }

    /// Maps `gfn` to host frame `pfn`. `ENOMEM` if the spare pool ran dry (refill, retry);
    /// `EFAULT` for a frame beyond what the table can address (memslots never reach there,
    /// and the walk below must not wrap a higher frame onto a low one); `EEXIST` when a
    /// 2 MiB mapping covers `gfn` (the caller zaps it, flushes, and retries). Returns
    /// whether the entry changed (not if it already was exactly this mapping).
    pub(crate) fn map(&mut self, gfn: u64, pfn: u64, perm: Perm) -> Result<bool> {
        let m = self.masks;
        let t = self.table_for(gfn, 1)?;
        let i = index(gfn, 1);
        let old = t.page.read(i);
        let mut e = (pfn << 12) & m.addr | m.read | m.exec | m.memtype_wb | m.accessed;
        if perm.write {
            // Writable entries start dirty, as KVM's: only clearing dirty flags for
            // dirty logging (`track_writes`) makes clean ones, so a CPU that runs without
            // its log of written pages never writes a clean page unlogged.
            e |= m.write | m.dirty;
        }
        if old == e {
            return Ok(false);
        }
        t.page.write(i, e);
        if old & m.read == 0 {
            self.leaves += 1;
        }
        Ok(true)
    }

    /// The host frame the table maps `gfn` to, if it maps it (a 4 KiB, 2 MiB or 1 GiB
    /// entry), and whether the mapping is writable.
    pub(crate) fn lookup(&self, gfn: u64) -> Option<(u64, bool)> {
        let m = self.masks;
        if gfn > m.max_gfn {
            return None;
        }
        let mut t: &Table = &self.root;
        loop {
            let i = index(gfn, t.level);
            if let Some(Some(child)) = t.children.get(i) {
                t = child;
                continue;
            }
            let e = t.page.read(i);
            if e & m.read == 0 || (t.level > 1 && e & PAGE_SIZE_BIT == 0) {
                return None;
            }
            let frames = level_frames(t.level);
            let base = (e & m.addr) >> 12;
            return Some((base + (gfn & (frames - 1)), e & m.write != 0));
        }
    }

    /// Applies `f(gfn, entry, frames)` to every present leaf entry that maps some gfn in
    /// `[start, end)` (a 2 MiB or 1 GiB leaf, `frames` 512 or 512 * 512, whole even when
    /// it overlaps the range in part); returns whether any entry changed. The walk visits only tables that
    /// exist, so its cost follows what is mapped, not the size of the range.
    fn for_leaves(
        &mut self,
        start: u64,
        end: u64,
        mut f: impl FnMut(u64, u64, u64) -> u64,
    ) -> bool {
        fn walk(
            t: &mut Table,
            base: u64,
            start: u64,
            end: u64,
            f: &mut dyn FnMut(u64, u64, u64) -> u64,
            removed: &mut [u64; 3],
            read_bit: u64,
        ) -> bool {
            let span = 1u64 << (9 * u32::from(t.level - 1));
            let mut changed = false;
            if start >= end {
                return false;
            }
            // Only the entries that overlap the range: a one-page range costs one entry
            // per level.
            let top = ENTRIES as u64 - 1;
            let first = (start.saturating_sub(base) / span).min(top) as usize;
            let last = ((end - 1).saturating_sub(base) / span).min(top) as usize;
            for i in first..=last {
                let lo = base + i as u64 * span;
                let hi = lo + span;
                if hi <= start || lo >= end {
                    continue;
                }
                if let Some(Some(child)) = t.children.get_mut(i) {
                    changed |= walk(child, lo, start, end, f, removed, read_bit);
                    continue;
                }
                // A leaf: a 4 KiB page at level 1, 2 MiB at level 2, 1 GiB at level 3 (no
                // table below).
                let old = t.page.read(i);
                if old & read_bit == 0 || t.level > MAX_LEAF_LEVEL {
                    continue;
                }
                let new = f(lo, old, span);
                if new != old {
                    t.page.write(i, new);
                    changed = true;
                    if new & read_bit == 0 {
                        if let Some(r) = removed.get_mut(usize::from(t.level - 1)) {
                            *r += 1;
                        }
                    }
                }
            }
            changed
        }
        let mut removed = [0; 3];
        let changed = walk(
            &mut self.root,
            0,
            start,
            end.min(self.masks.max_gfn.saturating_add(1)),
            &mut f,
            &mut removed,
            self.masks.read,
        );
        self.leaves = self.leaves.saturating_sub(removed[0]);
        self.huge_leaves = self.huge_leaves.saturating_sub(removed[1]);
        self.giant_leaves = self.giant_leaves.saturating_sub(removed[2]);
        changed
    }

    /// Unmaps gfns `[start, end)`; returns whether a TLB flush is needed.
    pub(crate) fn zap(&mut self, start: u64, end: u64) -> bool {
        self.for_leaves(start, end, |_, _, _| 0)
    }

    /// Whether any gfn of `[start, end)` is mapped. The walk changes nothing (its
    /// callback returns each entry as it is) and visits only tables that exist.
    pub(crate) fn any_mapped(&mut self, start: u64, end: u64) -> bool {
        let mut seen = false;
        self.for_leaves(start, end, |_, e, _| {
            seen = true;
            e
        });
        seen
    }

    /// Makes the guest's next write to each gfn of `[start, end)` whose bit is set in
    /// `dirty` (indexed from `start`), or to all of them when `dirty` is `None`, reach the
    /// dirty log: by clearing its dirty flag where the CPU logs written pages, else by
    /// taking its write access. One walk over the mapped part of the range, whatever the
    /// number of bits set; returns whether an entry changed (a flush is then due).
    pub(crate) fn track_writes(&mut self, start: u64, end: u64, dirty: Option<&[u64]>) -> bool {
        let bit = if self.masks.dirty != 0 {
            self.masks.dirty
        } else {
            self.masks.write
        };
        self.for_leaves(start, end, |gfn, e, frames| {
            // A 2 MiB or 1 GiB leaf is taken whole (dirty-logged slots have none: they are
            // zapped when logging starts and fault back in 4 KiB pages).
            let hit = frames > 1
                || dirty.is_none_or(|bits| {
                    let rel = gfn.wrapping_sub(start);
                    let word = usize::try_from(rel / 64).ok().and_then(|i| bits.get(i));
                    word.is_some_and(|&word| word & (1 << (rel % 64)) != 0)
                });
            if hit {
                e & !bit
            } else {
                e
            }
        })
    }

    /// Marks the level-1 table that maps `gfn` as one an instruction fetch made where a
    /// 2 MiB mapping was possible; whether it was not marked before.
    pub(crate) fn mark_nx_split(&mut self, gfn: u64) -> bool {
        let Ok(t) = self.table_for(gfn, 1) else {
            return false;
        };
        if core::mem::replace(&mut t.nx_split, true) {
            return false;
        }
        self.nx_splits += 1;
        true
    }

    /// Unhooks up to `out`'s spare capacity of the level-1 tables [`Tdp::mark_nx_split`]
    /// marked, with their mappings, so that the next access that is not a fetch may map
    /// those 2 MiB whole again (KVM's NX huge page recovery). The tables go to `out`, to
    /// be freed once every CPU has flushed; returns whether any went. The walk visits
    /// only tables that exist and stops when `out` is full; it goes on from where the last
    /// one stopped (KVM takes the oldest splits first; going round the address space
    /// reaches every split in turn too).
    pub(crate) fn recover_nx(&mut self, out: &mut KVec<KmemBox<Table>>) -> bool {
        struct Walk<'a> {
            out: &'a mut KVec<KmemBox<Table>>,
            read_bit: u64,
            /// Tables and 4 KiB leaves unhooked.
            gone: [u64; 2],
            /// The first guest frame after the last table taken.
            next: u64,
        }
        fn walk(t: &mut Table, base: u64, from: u64, w: &mut Walk<'_>) {
            let span = level_frames(t.level);
            for i in 0..ENTRIES {
                if w.out.len() >= w.out.capacity() {
                    return;
                }
                let lo = base + i as u64 * span;
                if lo + span <= from {
                    continue;
                }
                let Some(slot) = t.children.get_mut(i) else {
                    return;
                };
                let Some(child) = slot.as_deref_mut() else {
                    continue;
                };
                if child.level > 1 {
                    walk(child, lo, from, w);
                    continue;
                }
                if !child.nx_split {
                    continue;
                }
                let mapped = (0..ENTRIES)
                    .filter(|&j| child.page.read(j) & w.read_bit != 0)
                    .count() as u64;
                if let Some(table) = slot.take() {
                    t.page.write(i, 0);
                    w.gone[0] += 1;
                    w.gone[1] += mapped;
                    w.next = lo + span;
                    // Capacity was checked above: this never allocates.
                    let _ = w.out.push_within_capacity(table);
                }
            }
        }
        let from = self.nx_cursor;
        let mut w = Walk {
            out,
            read_bit: self.masks.read,
            gone: [0; 2],
            next: from,
        };
        walk(&mut self.root, 0, from, &mut w);
        if from != 0 && w.out.len() < w.out.capacity() {
            // Round again from the start (what is at or after `from` was taken above).
            walk(&mut self.root, 0, 0, &mut w);
        }
        self.nx_cursor = w.next;
        self.tables = self.tables.saturating_sub(w.gone[0]);
        self.nx_splits = self.nx_splits.saturating_sub(w.gone[0]);
        self.leaves = self.leaves.saturating_sub(w.gone[1]);
        w.gone[0] != 0
    }

    /// An empty set of root children, to swap in with [`Tdp::zap_all`] (allocated outside
    /// the MMU lock; `flags` lets the shrinker avoid sleeping).
    pub(crate) fn empty_children(
        masks: SpteMasks,
        flags: kernel::alloc::Flags,
    ) -> Result<Detached> {
        Ok(Detached(KVec::with_capacity(root_slots(masks), flags)?))
    }

    /// Unhooks every table below the root (memory pressure, the process exiting) and
    /// returns them with the number of table pages. `fresh` comes from
    /// [`Tdp::empty_children`]. The caller frees the result only after every CPU has
    /// flushed this table: until then a CPU may still walk the old tables.
    pub(crate) fn zap_all(&mut self, fresh: Detached) -> (Detached, u64) {
        let Detached(mut children) = fresh;
        if !children.is_empty() || children.capacity() < root_slots(self.masks) {
            return (Detached(children), 0);
        }
        let freed = self.tables - 1;
        for i in 0..ENTRIES {
            self.root.page.write(i, 0);
        }
        core::mem::swap(&mut self.root.children, &mut children);
        self.tables = 1;
        self.leaves = 0;
        self.huge_leaves = 0;
        self.giant_leaves = 0;
        self.nx_splits = 0;
        (Detached(children), freed)
    }
}

/// A fixed number of spare tables: adding and taking one never allocates, so both may
/// run under the MMU spinlock.
pub(crate) struct Spares<const N: usize> {
    slots: [Option<KmemBox<Table>>; N],
}

impl<const N: usize> Spares<N> {
    /// No tables.
    pub(crate) const fn new() -> Self {
        Self {
            slots: [const { None }; N],
        }
    }

    fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// Adds `t`; when all `N` places are taken, `t` is freed instead.
    pub(crate) fn push(&mut self, t: KmemBox<Table>) {
        if let Some(s) = self.slots.iter_mut().find(|s| s.is_none()) {
            *s = Some(t);
        }
    }

    /// Takes a table, if there is one.
    pub(crate) fn pop(&mut self) -> Option<KmemBox<Table>> {
        self.slots.iter_mut().rev().find_map(Option::take)
    }
}

/// Spare tables a mapping may need (see [`Tdp::spares_needed`]).
pub(crate) struct SparesNeeded {
    pub(crate) upper: usize,
    pub(crate) leaf: usize,
}

/// What [`Tdp::map_large`] did.
pub(crate) enum Huge {
    /// Mapped; with the empty tables the new entry replaced, to free after a flush.
    Mapped(Option<KmemBox<Table>>),
    /// 4 KiB mappings are in the way.
    Blocked,
}

/// Tables cut off from a VM's two-dimensional page table, freed when dropped (after the TLB flush).
pub(crate) struct Detached(KVec<Option<KmemBox<Table>>>);

// SPDX-License-Identifier: GPL-2.0

//! The dirty ring (`KVM_CAP_DIRTY_LOG_RING`, `KVM_CAP_DIRTY_LOG_RING_ACQ_REL`,
//! `KVM_RESET_DIRTY_RINGS`): instead of a bitmap per memslot, each vCPU appends the pages
//! it dirties in a dirty-logging slot to a ring of `struct kvm_dirty_gfn` that userspace
//! maps from the vCPU fd at `KVM_DIRTY_LOG_PAGE_OFFSET`. Userspace marks the entries it
//! collected with `KVM_DIRTY_GFN_F_RESET`; `KVM_RESET_DIRTY_RINGS` makes their pages log
//! their next write again and frees the entries. A vCPU whose ring holds more than its
//! size less the reserved entries (64, and 512 more where the CPU logs written pages)
//! exits with `KVM_EXIT_DIRTY_RING_FULL` before it enters the guest.
//!
//! The ring is shared memory: every field rkvm reads back from it (flags, slot, offset)
//! is checked before use, and a reset walks at most the entries rkvm published.

use super::vm::Vm;
use crate::sys::page::PhysPage;
use crate::sys::ratelimit::pr_warn_ratelimited;
use core::sync::atomic::{AtomicU32, Ordering};
use kernel::prelude::*;

/// `KVM_DIRTY_RING_RSVD_ENTRIES`: room kept for the pushes of one exit after the soft
/// limit is reached.
const RSVD_ENTRIES: u32 = 64;
/// Entries of the CPU's log of written pages (VMX's PML), which one exit may push at
/// once (KVM's `kvm_cpu_dirty_log_size`).
const CPU_LOG_ENTRIES: u32 = 512;

/// The entries kept free below a ring's size (KVM's `kvm_dirty_ring_get_rsvd_entries`).
fn rsvd_entries() -> u32 {
    let cpu_log = super::kvm().is_some_and(|k| k.arch.mmu.masks.dirty != 0);
    RSVD_ENTRIES + if cpu_log { CPU_LOG_ENTRIES } else { 0 }
}
/// `KVM_DIRTY_RING_MAX_ENTRIES`.
const MAX_ENTRIES: u32 = 65536;
/// `sizeof(struct kvm_dirty_gfn)`: flags (u32), slot (u32), offset (u64).
const ENTRY_BYTES: u32 = 16;
const ENTRIES_PER_PAGE: u32 = 4096 / ENTRY_BYTES;
/// `KVM_DIRTY_GFN_F_DIRTY` and `KVM_DIRTY_GFN_F_RESET` (bits of the entry's flags).
const F_DIRTY: u64 = 1 << 0;
const F_RESET: u64 = 1 << 1;

/// What `KVM_CHECK_EXTENSION(KVM_CAP_DIRTY_LOG_RING[_ACQ_REL])` answers: the largest ring
/// in bytes.
pub(crate) const MAX_BYTES: isize = (MAX_ENTRIES * ENTRY_BYTES) as isize;

/// Checks a ring size for `KVM_ENABLE_CAP`, as KVM does: a power of two, at least a page
/// and the reserved entries, at most `MAX_BYTES` (else `E2BIG`).
pub(crate) fn check_size(bytes: u32) -> Result<u32> {
    if bytes == 0 || !bytes.is_power_of_two() {
        return Err(EINVAL);
    }
    if bytes < rsvd_entries() * ENTRY_BYTES || bytes < 4096 {
        return Err(EINVAL);
    }
    if bytes > MAX_ENTRIES * ENTRY_BYTES {
        return Err(E2BIG);
    }
    Ok(bytes)
}

/// One vCPU's ring.
///
/// # Invariants
///
/// `entries` is a power of two, `pages` holds `entries / 256` pages, and
/// `dirty - reset` (wrapping) never exceeds `entries`.
pub(crate) struct DirtyRing {
    pages: KVec<PhysPage>,
    entries: u32,
    /// Entries published, and entries reset (both counting from 0, wrapping).
    dirty: AtomicU32,
    reset: AtomicU32,
}

impl DirtyRing {
    /// A zeroed ring of `bytes` (a size `check_size` accepted).
    pub(crate) fn new(bytes: u32) -> Result<Self> {
        let n = (bytes / 4096) as usize;
        let mut pages = KVec::with_capacity(n, GFP_KERNEL_ACCOUNT)?;
        for _ in 0..n {
            pages.push(PhysPage::new()?, GFP_KERNEL_ACCOUNT)?;
        }
        Ok(Self {
            pages,
            entries: bytes / ENTRY_BYTES,
            dirty: AtomicU32::new(0),
            reset: AtomicU32::new(0),
        })
    }

    /// Page `i` of the ring, for the vCPU fd's mmap.
    pub(crate) fn page(&self, i: usize) -> Option<&PhysPage> {
        self.pages.get(i)
    }

    fn used(&self) -> u32 {
        self.dirty
            .load(Ordering::Acquire)
            .wrapping_sub(self.reset.load(Ordering::Acquire))
    }

    /// Whether the vCPU must exit with `KVM_EXIT_DIRTY_RING_FULL` before it runs.
    pub(crate) fn soft_full(&self) -> bool {
        self.used() >= self.entries.saturating_sub(rsvd_entries())
    }

    /// The page and first word of entry `index` (wrapped into the ring).
    fn slot(&self, index: u32) -> Option<(&PhysPage, usize)> {
        let i = index & (self.entries - 1);
        let page = self.pages.get((i / ENTRIES_PER_PAGE) as usize)?;
        Some((page, ((i % ENTRIES_PER_PAGE) * 2) as usize))
    }

    /// Publishes a dirty page: `slot` is `as_id << 16 | id`, `offset` the page in it.
    /// Called with the vCPU's lock held (one producer per ring). A full ring (which the
    /// soft limit and the reserved entries keep from happening inside KVM_RUN; a VMM
    /// can fill it outside, e.g. by writing the wall-clock MSR again and again) drops
    /// the entry rather than overwrite one userspace has not collected.
    pub(crate) fn push(&self, slot: u32, offset: u64) {
        if self.used() >= self.entries {
            pr_warn_ratelimited!("rkvm: a dirty ring is full: a dirty page was not logged\n");
            return;
        }
        let index = self.dirty.load(Ordering::Relaxed);
        let Some((page, w)) = self.slot(index) else {
            return;
        };
        if let (Some(head), Some(off)) = (page.word(w), page.word(w + 1)) {
            off.store(offset, Ordering::Relaxed);
            // Userspace sees the flags (with the slot, in the same word) only after the
            // offset.
            head.store(u64::from(slot) << 32 | F_DIRTY, Ordering::Release);
        }
        self.dirty.store(index.wrapping_add(1), Ordering::Release);
    }

    /// Frees the entries userspace collected, oldest first, up to the first it has not
    /// marked and never past those published when the call began (so a call ends however
    /// fast the vCPU publishes and userspace marks); `reprotect(slot, offset)` is called
    /// for each with what the entry says, unchecked. Returns how many were freed, and
    /// whether a signal stopped it early. Serialized by the caller (the VM's lock).
    pub(crate) fn reset(&self, mut reprotect: impl FnMut(u32, u64)) -> (u32, bool) {
        let end = self.dirty.load(Ordering::Acquire);
        let mut freed: u32 = 0;
        loop {
            let index = self.reset.load(Ordering::Relaxed);
            if index == end {
                break;
            }
            let Some((page, w)) = self.slot(index) else {
                break;
            };
            let (Some(head), Some(off)) = (page.word(w), page.word(w + 1)) else {
                break;
            };
            let h = head.load(Ordering::Acquire);
            if h & F_RESET == 0 {
                break;
            }
            reprotect((h >> 32) as u32, off.load(Ordering::Relaxed));
            // The flags go to 0; the slot stays, as KVM leaves it.
            head.store(h & !0xffff_ffff, Ordering::Release);
            self.reset.store(index.wrapping_add(1), Ordering::Release);
            freed = freed.saturating_add(1);
            if freed % 256 == 0 {
                if crate::sys::cpu::signal_pending() {
                    return (freed, true);
                }
                crate::sys::cpu::cond_resched();
            }
        }
        (freed, false)
    }
}

/// `KVM_RESET_DIRTY_RINGS`: frees the collected entries of every vCPU's ring and
/// write-protects their pages again (so the next write is logged again); returns the
/// number of entries freed, also when a signal stopped it early (as KVM does). `EINVAL`
/// without rings.
pub(crate) fn reset_all(vm: &Vm) -> Result<isize> {
    if vm.dirty_ring_bytes.load(Ordering::Relaxed) == 0 {
        return Err(EINVAL);
    }
    // The VM's lock serializes resets, and keeps the slot list and the vCPUs still.
    let l = vm.locked.lock();
    let mut pending = Pending::default();
    let mut gen = 0;
    let mut total: u32 = 0;
    for v in l.vcpus.iter() {
        let Some(ring) = v.dirty_ring() else {
            continue;
        };
        let r = ring.reset(|slot, offset| {
            // Address space 0 (rkvm has no SMM) and a slot that exists, holding the page.
            if slot >> 16 != 0 {
                return;
            }
            let Some(s) = l.slots.get(slot as u16) else {
                return;
            };
            if offset >= s.npages {
                return;
            }
            if let Some((start, end)) = pending.add(s.base_gfn + offset) {
                gen = gen.max(vm.track_writes(start, end));
            }
        });
        total = total.saturating_add(r.0);
        if r.1 {
            break;
        }
    }
    if let Some((start, end)) = pending.take() {
        gen = gen.max(vm.track_writes(start, end));
    }
    drop(l);
    // Before userspace hears of it, no CPU may keep writing a page protected again.
    vm.flush_upto(gen, false);
    Ok(total as isize)
}

/// A run of consecutive guest frames waiting to be write-protected (at most 64, so the
/// MMU lock is held for a bounded time).
#[derive(Default)]
struct Pending(Option<(u64, u64)>);

impl Pending {
    /// Adds `gfn`; returns the run it cannot join, to be write-protected now.
    fn add(&mut self, gfn: u64) -> Option<(u64, u64)> {
        match self.0 {
            Some((start, end)) if gfn == end && end - start < 64 => {
                self.0 = Some((start, end + 1));
                None
            }
            _ => self.0.replace((gfn, gfn + 1)),
        }
    }

    fn take(&mut self) -> Option<(u64, u64)> {
        self.0.take()
    }
}

// SPDX-License-Identifier: GPL-2.0

//! Guest-memory faults: an EPT violation or nested page fault on memslot memory maps the
//! page (or 2 MiB or 1 GiB of them at once, where the memslot and the host mapping allow)
//! into the VM's two-dimensional page table.

use super::dirty_ring::DirtyRing;
use super::memslot;
use super::vm::Vm;
use crate::sys::cpu;
use crate::sys::mm::{self, UserPage};
use crate::x86::emulate::GuestMem;
use crate::x86::tdp::{
    level_frames, Huge, Perm, Spares, SparesNeeded, Tdp, HUGE_PAGES, MAPPING_SPARES,
};
use core::sync::atomic::Ordering;
use kernel::prelude::*;

/// The first frame of the 2 MiB (`level` 2) or 1 GiB (`level` 3) around `gfn` when slot
/// `s` may map them with one entry (KVM's rules for a large page): the slot holds all
/// their frames, their user addresses are aligned as the frames are, and the slot does
/// not log dirty pages (logging needs write faults page by page).
fn large_frame(s: &memslot::SlotMeta, gfn: u64, level: u8) -> Option<u64> {
    let n = level_frames(level);
    let g = gfn & !(n - 1);
    let fits = g >= s.base_gfn && g.checked_add(n)? <= s.end_gfn();
    let aligned = (s.hva.wrapping_add((g.wrapping_sub(s.base_gfn)) << 12)) % (n << 12) == 0;
    (fits && aligned && !s.logs_dirty()).then_some(g)
}

/// The levels a large mapping is tried at, largest first.
const LARGE_LEVELS: [u8; 2] = [3, 2];

/// What a guest-memory fault came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Faulted {
    /// Mapped.
    Fixed,
    /// The mapping was already there (another vCPU made it since the fault).
    Spurious,
    /// No memslot memory can satisfy the access (MMIO).
    NoMemory,
}

impl Vm {
    /// Maps the memslot page behind `gpa` into the EPT for a vCPU (whose dirty ring is
    /// `ring`). May sleep.
    pub(crate) fn fault_in(
        &self,
        gpa: u64,
        write: bool,
        fetch: bool,
        ring: Option<&DirtyRing>,
    ) -> Result<Faulted> {
        let gfn = gpa >> 12;
        if self.fault_in_private(gfn)? {
            return Ok(Faulted::Fixed);
        }
        loop {
            let (hva, slot_writable, logs, seq, large_gfns, nx_huge) = {
                let m = self.mmu.lock();
                let Some(s) = memslot::find(&m.slots, gfn) else {
                    return Ok(Faulted::NoMemory);
                };
                // KVM's nx_huge_pages (see `nx_huge.rs`): no guest instruction runs from a
                // large mapping. Those are made without execute permission, and a fetch
                // maps 4 KiB pages instead (replacing a large mapping there). Read under
                // the lock with the generation the table was built under: a table built
                // under another value is dropped first.
                let (nx_on, nx_gen) = crate::sys::nx::state();
                if m.nx_gen != nx_gen {
                    drop(m);
                    self.nx_sync(nx_gen);
                    continue;
                }
                let nx_huge = nx_on && !self.nx_disabled.load(Ordering::Relaxed);
                if write && s.readonly() {
                    return Ok(Faulted::NoMemory);
                }
                let hva = s.hva + ((gfn - s.base_gfn) << 12);
                let max_level = if !nx_huge || self.kvm.arch.mmu.masks.can_refuse_fetch() {
                    self.kvm.backend.tdp_max_leaf_level()
                } else {
                    1
                };
                let large_gfns = LARGE_LEVELS
                    .map(|l| (l <= max_level).then(|| large_frame(&s, gfn, l)).flatten());
                (
                    hva,
                    !s.readonly(),
                    s.logs_dirty(),
                    m.seq,
                    large_gfns,
                    nx_huge,
                )
            };
            // Dirty-logged pages start read-only, so the first write faults and is logged;
            // where the CPU logs written pages, writable with the dirty flag clear instead.
            let by_flag = self.kvm.arch.mmu.masks.dirty != 0;
            let want_write = slot_writable && (write || !logs || by_flag);
            // The EPT entry is writable only if the host let rkvm write the page: a write
            // fault on memory the VMM may only read fails (EFAULT from KVM_RUN, as KVM),
            // and a read fault there maps the page read-only.
            let got = match UserPage::get(hva, want_write) {
                Ok(p) => Ok((p, want_write)),
                Err(_) if want_write && !write => UserPage::get(hva, false).map(|p| (p, false)),
                Err(e) => Err(e),
            };
            let (page, writable) = match got {
                Ok(x) => x,
                Err(e) => {
                    // The memslot may have gone, and its memory with it, since it was
                    // looked up (KVM's SRCU makes a deletion wait for faults in flight;
                    // here the invalidation count says it happened): look again.
                    let m = self.mmu.lock();
                    if m.in_progress != 0 || m.seq != seq {
                        drop(m);
                        cpu::cond_resched();
                        continue;
                    }
                    return Err(e);
                }
            };
            // 1 GiB or 2 MiB at once where the slot allows it around `gfn` and the host maps
            // them with one entry (a hugetlbfs or transparent huge page), writable only if
            // that entry is; the frame looked up must be the page just taken.
            let mut large = [None; 2];
            for ((&level, g), out) in LARGE_LEVELS.iter().zip(large_gfns).zip(&mut large) {
                let Some(g) = g else {
                    continue;
                };
                let bytes = level_frames(level) << 12;
                let Some(pfn) = mm::host_leaf_pfn(hva & !(bytes - 1), writable, level) else {
                    continue;
                };
                if pfn.checked_add(gfn - g) == Some(page.pfn()) {
                    *out = Some((level, g, pfn));
                }
            }
            // Spare tables for the mapping, allocated outside the spinlock.
            let need = self.mmu.lock().tdp.spares_needed();
            let mut spares = self.alloc_spares(need)?;
            let mut m = self.mmu.lock();
            while let Some(t) = spares.pop() {
                m.tdp.add_spare(t);
            }
            if m.in_progress != 0 || m.seq != seq {
                // The host is changing this memory; try again.
                drop(m);
                drop(page);
                cpu::cond_resched();
                continue;
            }
            let perm = Perm {
                write: writable,
                exec: true,
            };
            let huge_perm = Perm {
                exec: !nx_huge,
                ..perm
            };
            let mut replaced = None;
            // A fetch where the host memory allowed a large mapping: 4 KiB pages, and the
            // table that holds them counts as a split huge page (KVM's nx_lpage_splits)
            // until the recovery unmaps it.
            let split = nx_huge && fetch && large.iter().any(Option::is_some);
            let mut r = None;
            // The largest mapping that fits; smaller ones when mappings are in the way.
            for &(level, g, pfn) in large.iter().flatten().filter(|_| !split) {
                match m.tdp.map_large(g, pfn, level, huge_perm) {
                    Ok(Huge::Mapped(t)) => {
                        replaced = t;
                        r = Some(Ok(true));
                    }
                    Ok(Huge::Blocked) => continue,
                    Err(e) => r = Some(Err(e)),
                }
                break;
            }
            let r = r.unwrap_or_else(|| m.tdp.map(gfn, page.pfn(), perm));
            let newly_split = r.is_ok() && split && m.tdp.mark_nx_split(gfn);
            // A CPU may still hold the replaced table in its paging-structure caches:
            // it is freed once a flush covers its removal.
            let replaced_gen = m.ept_changed(replaced.is_some());
            // Logged once mapped (a retry after ENOMEM would log it twice). Where the CPU
            // logs written pages, a page mapped writable is logged even for a read, as
            // KVM does: its entry starts dirty, so the CPU would not log its first write.
            if r.is_ok() && logs && (write || (by_flag && writable)) {
                if let Some(s) = memslot::find_mut(&mut m.slots, gfn) {
                    let rel = gfn - s.meta.base_gfn;
                    if let Some(dr) = ring {
                        dr.push(u32::from(s.meta.id), rel);
                    } else if let Some(w) =
                        s.dirty.as_mut().and_then(|d| d.get_mut(rel as usize / 64))
                    {
                        *w |= 1 << (rel % 64);
                    }
                }
            }
            m.page_stats(&self.stats);
            drop(m);
            drop(page);
            if let Some(t) = replaced {
                self.flush_upto(replaced_gen, false);
                drop(t);
            }
            if newly_split {
                self.nx_split_made();
            }
            match r {
                Ok(true) => return Ok(Faulted::Fixed),
                Ok(false) => return Ok(Faulted::Spurious),
                Err(e) if e == ENOMEM => continue,
                Err(e) if e == EEXIST => {
                    // A large mapping covers the frame (mapped read-only, or the host has
                    // split its page since): unmap it (the walk takes a large entry
                    // whole), flush, and map again.
                    let g = gfn & !(HUGE_PAGES - 1);
                    let gen = {
                        let mut m = self.mmu.lock();
                        let zapped = m.tdp.zap(g, g + HUGE_PAGES);
                        m.page_stats(&self.stats);
                        m.ept_changed(zapped)
                    };
                    self.flush_upto(gen, false);
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The spare tables `need` says, allocated outside the MMU spinlock.
    fn alloc_spares(&self, need: SparesNeeded) -> Result<Spares<MAPPING_SPARES>> {
        let mut spares = Spares::new();
        let cache = &self.kvm.arch.mmu.page_header_cache;
        for upper in [true, false] {
            let n = if upper { need.upper } else { need.leaf };
            for _ in 0..n {
                spares.push(Tdp::alloc_spare(cache, upper)?);
            }
        }
        Ok(spares)
    }

    /// Maps one of rkvm's own guest pages, if `gfn` is one.
    fn fault_in_private(&self, gfn: u64) -> Result<bool> {
        loop {
            let need = {
                let m = self.mmu.lock();
                if !m.private.iter().any(|&(g, _)| g == gfn) {
                    return Ok(false);
                }
                m.tdp.spares_needed()
            };
            let mut spares = self.alloc_spares(need)?;
            let mut m = self.mmu.lock();
            while let Some(t) = spares.pop() {
                m.tdp.add_spare(t);
            }
            let Some(&(_, pfn)) = m.private.iter().find(|&&(g, _)| g == gfn) else {
                return Ok(false);
            };
            match m.tdp.map(
                gfn,
                pfn,
                Perm {
                    write: true,
                    exec: true,
                },
            ) {
                Ok(_) => return Ok(true),
                Err(e) if e == ENOMEM => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Guest memory as a backend's run window may read it: only what the VM's
/// two-dimensional page table maps now, read under the VM's MMU lock, so the host cannot
/// take a page away meanwhile (its MMU notifier zaps under that lock). The window has
/// interrupts off, so it never waits for the lock: when another task holds it (a long
/// zap, a dirty-log walk), the read fails and the vCPU loop does the work instead. Never
/// written.
pub(crate) struct WindowMem<'a>(pub(crate) &'a Vm);

impl GuestMem for WindowMem<'_> {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result {
        let off = (gpa & 0xfff) as usize;
        let m = self.0.mmu.try_lock().ok_or(EBUSY)?;
        let (pfn, _) = m.tdp.lookup(gpa >> 12).ok_or(EFAULT)?;
        // SAFETY: The table maps `pfn` and its lock is held: the page stays.
        unsafe { crate::sys::page::read_frame(pfn, off, buf) }
    }

    fn write(&self, _gpa: u64, _data: &[u8]) -> Result {
        Err(EFAULT)
    }

    fn backed(&self, gpa: u64) -> bool {
        self.0
            .mmu
            .try_lock()
            .is_some_and(|m| m.tdp.lookup(gpa >> 12).is_some())
    }
}

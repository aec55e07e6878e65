// SPDX-License-Identifier: GPL-2.0

//! MMU module state (the seed's `kvm_mmu_module_init()` and `kvm_mmu_set_mask_ptes()`):
//! the caches the two-dimensional MMU allocates from, the count of page-table pages in
//! use by all VMs, and the shrinker that gives them back under memory pressure.

use crate::sys::kmem::KmemCache;
use crate::sys::shrinker::Shrinker;
use core::sync::atomic::{AtomicI64, Ordering};
use kernel::prelude::*;

/// The two-dimensional page table formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TdpFormat {
    /// Intel EPT.
    Ept,
    /// AMD nested paging: the long-mode page-table format, every access a user access.
    Npt,
}

/// Entry bits rkvm uses (the seed's shadow PTE masks), for one [`TdpFormat`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct SpteMasks {
    /// Read, write, execute permission bits.
    pub(crate) read: u64,
    pub(crate) write: u64,
    pub(crate) exec: u64,
    /// The bit that refuses instruction fetches where the format has one (NPT's NX)
    /// instead of an execute permission.
    pub(crate) nx: u64,
    /// Memory type of leaf entries: write-back, with the guest's PAT ignored (rkvm has no
    /// non-coherent DMA, so guest memory is always host write-back memory, as KVM does
    /// under its default IGNORE_GUEST_PAT quirk).
    pub(crate) memtype_wb: u64,
    /// Physical address bits of an entry.
    pub(crate) addr: u64,
    /// The accessed and dirty flags of leaf entries, when the CPU logs the pages the
    /// guest writes (see [`MmuModule::log_writes_by_dirty_flag`]); 0 otherwise.
    pub(crate) accessed: u64,
    pub(crate) dirty: u64,
    /// The highest guest frame a 4-level EPT can map: below 2^48 and below the host's
    /// MAXPHYADDR (KVM's `kvm_mmu_max_gfn()`); memslots may not reach beyond it.
    pub(crate) max_gfn: u64,
}

impl SpteMasks {
    /// `kvm_mmu_set_mask_ptes()`.
    pub(crate) fn new(format: TdpFormat, host_phys_bits: u32) -> Self {
        match format {
            TdpFormat::Ept => Self::ept(host_phys_bits),
            TdpFormat::Npt => Self::npt(host_phys_bits),
        }
    }

    /// NPT: "read" is present with user access (the CPU walks nested tables as user
    /// accesses), write is R/W, execution is allowed without NX (bit 63, which the host's
    /// EFER.NXE enables; the kernel turns it on on every CPU that has it). Leaves are write-back
    /// through PAT entry 0 (PWT = PCD = PAT = 0) and carry A and D, so the CPU never
    /// writes them back.
    fn npt(host_phys_bits: u32) -> Self {
        let bits = host_phys_bits.clamp(36, 52);
        Self {
            read: 1 << 0 | 1 << 2,
            write: 1 << 1,
            exec: 0,
            nx: if crate::sys::cpu::boot_cpu_has(crate::sys::cpu::Feature::Nx) {
                1 << 63
            } else {
                0
            },
            memtype_wb: 1 << 5 | 1 << 6,
            addr: ((1u64 << bits) - 1) & !0xfff,
            accessed: 0,
            dirty: 0,
            max_gfn: (1u64 << (bits.min(48) - 12)) - 1,
        }
    }

    /// EPT.
    fn ept(host_phys_bits: u32) -> Self {
        let bits = host_phys_bits.clamp(36, 52);
        Self {
            read: 1 << 0,
            write: 1 << 1,
            exec: 1 << 2,
            nx: 0,
            memtype_wb: 6 << 3 | 1 << 6,
            addr: ((1u64 << bits) - 1) & !0xfff,
            accessed: 0,
            dirty: 0,
            max_gfn: (1u64 << (bits.min(48) - 12)) - 1,
        }
    }
}

impl SpteMasks {
    /// A leaf entry can refuse instruction fetches (an execute bit or an NX bit).
    pub(crate) fn can_refuse_fetch(&self) -> bool {
        self.exec != 0 || self.nx != 0
    }
}

impl MmuModule {
    /// The backend's hardware setup found that the CPU logs written pages (VMX's PML,
    /// with EPT accessed and dirty flags): dirty logging clears the dirty flag of a
    /// writable entry instead of taking its write access (KVM's `kvm_mmu_set_ept_masks`
    /// with A/D bits, called from `hardware_setup`).
    pub(crate) fn log_writes_by_dirty_flag(&mut self) {
        self.masks.accessed = 1 << 8;
        self.masks.dirty = 1 << 9;
    }
}

/// Page-table pages in use by every VM (the seed's `kvm_total_used_mmu_pages`).
pub(crate) static USED_MMU_PAGES: AtomicI64 = AtomicI64::new(0);

/// The MMU's module-wide state.
pub(crate) struct MmuModule {
    /// Headers of EPT table pages (the seed's `kvm_mmu_page_header` cache).
    pub(crate) page_header_cache: KmemCache<super::tdp::Table>,
    pub(crate) masks: SpteMasks,
    _shrinker: Shrinker,
}

/// The shrinker asks VMs to drop this many pages; they are rebuilt on the next fault.
fn shrink_count() -> u64 {
    USED_MMU_PAGES.load(Ordering::Relaxed).max(0) as u64
}

impl MmuModule {
    /// `kvm_mmu_module_init()` + `kvm_mmu_set_mask_ptes()`. The shrinker's `scan` (which
    /// zaps VMs' tables) comes from the generic core, which owns the VMs.
    pub(crate) fn init(
        format: TdpFormat,
        host_phys_bits: u32,
        shrink_scan: fn(u64) -> u64,
    ) -> Result<Self> {
        let masks = SpteMasks::new(format, host_phys_bits);
        let page_header_cache = KmemCache::new(
            c"rkvm_mmu_page_header",
            size_of::<super::tdp::Table>(),
            0,
            (0, 0),
        )?;
        // No `pte_list_desc` cache: rkvm's EPT is indexed by guest frame, so
        // write-protection and zapping walk it directly and need no reverse map.
        USED_MMU_PAGES.store(0, Ordering::Relaxed);
        let shrinker = Shrinker::register(c"rkvm-mmu", shrink_count, shrink_scan)?;
        Ok(Self {
            page_header_cache,
            masks,
            _shrinker: shrinker,
        })
    }
}

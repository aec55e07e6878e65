// SPDX-License-Identifier: GPL-2.0

//! Pages the hypervisor hands to the CPU by physical address (VMXON regions, VMCSs, EPT
//! tables, MSR and I/O bitmaps), and host physical addresses.

use super::ffi;
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::page::Page;
use kernel::prelude::*;
use kernel::sync::{Mutex, SetOnce};

/// A host physical address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
#[repr(transparent)]
pub(crate) struct Hpa(pub(crate) u64);

/// A zeroed, owned page with a known physical address, viewed as 512 `u64` words.
pub(crate) struct PhysPage {
    page: Page,
    words: *const AtomicU64,
    phys: Hpa,
}

// SAFETY: The page is owned; all access goes through atomics.
unsafe impl Send for PhysPage {}
// SAFETY: All access goes through atomics.
unsafe impl Sync for PhysPage {}

impl PhysPage {
    /// Number of 64-bit words in a page.
    pub(crate) const WORDS: usize = 512;

    /// Allocates a zeroed page.
    pub(crate) fn new() -> Result<Self> {
        let page = Page::alloc_page(GFP_KERNEL_ACCOUNT | __GFP_ZERO)?;
        // SAFETY: `page` is a live lowmem page (GFP_KERNEL never returns highmem on x86-64).
        let virt = unsafe { ffi::rkvm_page_address(page.as_ptr().cast()) };
        if virt.is_null() {
            return Err(ENOMEM);
        }
        // SAFETY: A pure address computation on a live page.
        let phys = Hpa(unsafe { ffi::rkvm_page_to_phys(page.as_ptr().cast()) });
        Ok(Self {
            page,
            words: virt.cast(),
            phys,
        })
    }

    /// The page's host physical address.
    pub(crate) fn phys(&self) -> Hpa {
        self.phys
    }

    /// The page's kernel virtual address, for code that hands it to the CPU.
    pub(crate) fn virt(&self) -> *mut u8 {
        self.words.cast_mut().cast()
    }

    /// Word `i` (0..512); `None` out of range.
    pub(crate) fn word(&self, i: usize) -> Option<&AtomicU64> {
        if i >= Self::WORDS {
            return None;
        }
        // SAFETY: `i` is in range; the page lives as long as `self`, and is only accessed
        // through atomics.
        Some(unsafe { &*self.words.add(i) })
    }

    /// Reads word `i` (0 if out of range).
    pub(crate) fn read(&self, i: usize) -> u64 {
        self.word(i).map_or(0, |w| w.load(Ordering::Relaxed))
    }

    /// Writes word `i` (ignored if out of range).
    pub(crate) fn write(&self, i: usize, v: u64) {
        if let Some(w) = self.word(i) {
            w.store(v, Ordering::Relaxed);
        }
    }

    /// Copies bytes out of the page at `off`; `EINVAL` past its end.
    pub(crate) fn read_bytes(&self, off: usize, out: &mut [u8]) -> Result {
        let end = off.checked_add(out.len()).ok_or(EINVAL)?;
        if end > 4096 {
            return Err(EINVAL);
        }
        let base = self.virt();
        // One access for a naturally aligned field (the run page's, mostly).
        if off % out.len().max(1) == 0 {
            let p = base.wrapping_add(off);
            // SAFETY: `off + len <= 4096` and `off` is aligned to `len`: one aligned
            // access inside the page, which lives as long as `self`. Volatile: the page
            // may be mapped into userspace, which writes it at will.
            let word = unsafe {
                match out.len() {
                    8 => Some(core::ptr::read_volatile(p.cast::<u64>())),
                    4 => Some(u64::from(core::ptr::read_volatile(p.cast::<u32>()))),
                    2 => Some(u64::from(core::ptr::read_volatile(p.cast::<u16>()))),
                    _ => None,
                }
            };
            if let Some(w) = word {
                for (d, s) in out.iter_mut().zip(w.to_le_bytes()) {
                    *d = s;
                }
                return Ok(());
            }
        }
        for (i, b) in out.iter_mut().enumerate() {
            // SAFETY: `off + i < 4096`: inside the page, which lives as long as `self`.
            // Volatile: the page may be mapped into userspace, which writes it at will.
            *b = unsafe { core::ptr::read_volatile(base.add(off + i)) };
        }
        Ok(())
    }

    /// Copies bytes into the page at `off`; `EINVAL` past its end.
    pub(crate) fn write_bytes(&self, off: usize, data: &[u8]) -> Result {
        let end = off.checked_add(data.len()).ok_or(EINVAL)?;
        if end > 4096 {
            return Err(EINVAL);
        }
        let base = self.virt();
        if off % data.len().max(1) == 0 {
            let p = base.wrapping_add(off);
            let mut w = [0u8; 8];
            for (d, s) in w.iter_mut().zip(data) {
                *d = *s;
            }
            let w = u64::from_le_bytes(w);
            // SAFETY: As in `read_bytes`: one aligned access inside the page.
            let done = unsafe {
                match data.len() {
                    8 => core::ptr::write_volatile(p.cast::<u64>(), w),
                    4 => core::ptr::write_volatile(p.cast::<u32>(), w as u32),
                    2 => core::ptr::write_volatile(p.cast::<u16>(), w as u16),
                    _ => {}
                }
                matches!(data.len(), 2 | 4 | 8)
            };
            if done {
                return Ok(());
            }
        }
        for (i, &b) in data.iter().enumerate() {
            // SAFETY: As in `read_bytes`.
            unsafe { core::ptr::write_volatile(base.add(off + i), b) };
        }
        Ok(())
    }

    /// Fills the page with `byte`.
    pub(crate) fn fill(&self, byte: u8) {
        let w = u64::from_ne_bytes([byte; 8]);
        for i in 0..Self::WORDS {
            self.write(i, w);
        }
    }

    /// The underlying page.
    pub(crate) fn page(&self) -> &Page {
        &self.page
    }
}

/// A zeroed page made at its first use, by one caller while any other waits: a page
/// userspace maps that many VMs never touch (the coalesced MMIO ring, the PIO data page).
#[pin_data]
pub(crate) struct LazyPage {
    page: SetOnce<PhysPage>,
    /// Held while the page is made. Only that takes it, and it may be taken in a page
    /// fault (mmap lock held): nothing may wait for user memory while holding it.
    #[pin]
    make: Mutex<()>,
}

impl LazyPage {
    /// No page yet.
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            page: SetOnce::new(),
            make <- kernel::new_mutex!(()),
        })
    }

    /// The page, made now if nobody has made it yet.
    #[inline]
    pub(crate) fn get(&self) -> Result<&PhysPage> {
        match self.page.as_ref() {
            Some(p) => Ok(p),
            None => self.make_page(),
        }
    }

    #[cold]
    fn make_page(&self) -> Result<&PhysPage> {
        let _making = self.make.lock();
        if let Some(p) = self.page.as_ref() {
            return Ok(p);
        }
        // The only maker (under `make`): this always stores the page.
        self.page.populate(PhysPage::new()?);
        self.page.as_ref().ok_or(ENOMEM)
    }

    /// The page if it was made.
    pub(crate) fn made(&self) -> Option<&PhysPage> {
        self.page.as_ref()
    }
}

/// Physically contiguous pages the CPU reads by address and software never touches after
/// they are filled (SVM's I/O and MSR permission maps).
///
/// # Invariants
///
/// `virt` is a live `alloc_pages_exact` allocation of `bytes` bytes, freed in `drop`.
pub(crate) struct ContigPages {
    virt: *mut c_void,
    bytes: u32,
    phys: Hpa,
}

// SAFETY: The allocation is owned, and only its address is handed out.
unsafe impl Send for ContigPages {}
// SAFETY: No access to the contents after creation.
unsafe impl Sync for ContigPages {}

impl ContigPages {
    /// Allocates `bytes` (a multiple of the page size) filled with `fill`.
    pub(crate) fn new(bytes: u32, fill: u8) -> Result<Self> {
        // SAFETY: Plain allocation; freed in `drop`.
        let virt = unsafe { ffi::rkvm_contig_alloc(bytes, fill) };
        if virt.is_null() {
            return Err(ENOMEM);
        }
        // SAFETY: A pure address computation on a live direct-map allocation.
        let phys = Hpa(unsafe { ffi::rkvm_virt_to_phys(virt) });
        // INVARIANT: Just allocated with `bytes` bytes.
        Ok(Self { virt, bytes, phys })
    }

    pub(crate) fn phys(&self) -> Hpa {
        self.phys
    }
}

impl Drop for ContigPages {
    fn drop(&mut self) {
        // SAFETY: By the invariant, allocated with this size and not freed yet.
        unsafe { ffi::rkvm_contig_free(self.virt, self.bytes) };
    }
}

/// Copies bytes out of host frame `pfn` at `off` (not crossing the page) through the
/// kernel's direct map.
///
/// # Safety
///
/// `pfn` is a page of RAM that stays allocated for the call (rkvm's callers hold the MMU
/// lock of a VM whose two-dimensional page table maps it: the MMU notifier must take that
/// lock, and flush, before the page can go).
pub(crate) unsafe fn read_frame(pfn: u64, off: usize, out: &mut [u8]) -> Result {
    let end = off.checked_add(out.len()).ok_or(EINVAL)?;
    if end > 4096 {
        return Err(EINVAL);
    }
    // SAFETY: `pfn` is a valid page by the caller's contract.
    let page = unsafe { ffi::rkvm_pfn_to_page(pfn) };
    if page.is_null() {
        return Err(EFAULT);
    }
    // SAFETY: `page` is a valid page; x86-64 maps every page in the direct map.
    let base = unsafe { ffi::rkvm_page_address(page) }.cast::<u8>();
    if base.is_null() {
        return Err(EFAULT);
    }
    for (i, b) in out.iter_mut().enumerate() {
        // SAFETY: `off + i < 4096`, inside the page, which stays allocated by the
        // caller's contract. Volatile: the guest and the VMM may write it at will.
        *b = unsafe { core::ptr::read_volatile(base.add(off + i)) };
    }
    Ok(())
}

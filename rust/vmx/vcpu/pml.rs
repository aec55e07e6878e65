// SPDX-License-Identifier: GPL-2.0

//! The page-modification log (PML): with EPT accessed and dirty flags on, the CPU
//! writes the guest-physical address of every page whose EPT dirty flag it sets into a
//! 512-entry log page of the vCPU's, counting the VMCS's PML index down, and exits when
//! the log is full. Dirty logging then leaves logged pages writable with the flag clear
//! (`x86/tdp.rs`): their first write after each clear costs no exit at all.
//!
//! The log is read after every window, in process context, where the generic code marks
//! the pages dirty; the index is rewound before the next window's first entry.

use super::super::vmcs::{self, Loaded};
use crate::sys::page::PhysPage;
use kernel::prelude::*;

/// Entries in the log page.
const ENTRIES: u16 = 512;

/// A vCPU's log.
///
/// # Invariants
///
/// `top <= ENTRIES`; entries `top..ENTRIES` of `page` are what the CPU logged in the last
/// window and have not been taken yet.
pub(super) struct Pml {
    page: PhysPage,
    top: u16,
    /// The VMCS's index is not at the start of the log.
    rewind: bool,
    /// The VMCS holds the page's address (it keeps it across windows).
    in_vmcs: bool,
}

impl Pml {
    /// A log, made when the vCPU's VM first logs dirty pages (most never do).
    pub(super) fn new() -> Result<Self> {
        Ok(Self {
            page: PhysPage::new()?,
            top: ENTRIES,
            rewind: true,
            in_vmcs: false,
        })
    }

    /// Before a window's first entry: points the VMCS at the log and its index at the
    /// start of an empty log.
    pub(super) fn rewind(&mut self, v: &Loaded<'_>) -> Result {
        if !self.in_vmcs {
            v.w64(vmcs::PML_ADDRESS, self.page.phys().0)
                .map_err(|_| EIO)?;
            self.in_vmcs = true;
        }
        if self.rewind && self.top == ENTRIES {
            v.w16(vmcs::GUEST_PML_INDEX, ENTRIES - 1).map_err(|_| EIO)?;
            self.rewind = false;
        }
        Ok(())
    }

    /// At a window's end: notes how far the CPU filled the log. The index counts down
    /// from 511 and reads 0xffff once all 512 entries are written; any other value past
    /// 511 is taken as a full log too (marking a page dirty that was not is harmless).
    pub(super) fn note(&mut self, v: &Loaded<'_>) {
        let index = v.r16(vmcs::GUEST_PML_INDEX);
        let top = if index >= ENTRIES { 0 } else { index + 1 };
        if top < ENTRIES {
            // INVARIANT: `top` is in range; the log is taken before the next window.
            self.top = top;
            self.rewind = true;
        }
    }

    /// Hands every address logged in the last window to `mark`, then empties the log.
    pub(super) fn take(&mut self, mark: &mut dyn FnMut(u64)) {
        for i in self.top..ENTRIES {
            if let Some(w) = self.page.word(usize::from(i)) {
                mark(w.load(core::sync::atomic::Ordering::Relaxed) & !0xfff);
            }
        }
        self.top = ENTRIES;
    }
}

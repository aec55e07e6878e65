// SPDX-License-Identifier: GPL-2.0

//! The VMCB: one page per vCPU, control area then state-save area. Field offsets come from
//! the kernel's own `struct vmcb` through the C shim ([`Layout`]), the bit meanings from
//! the AMD APM (volume 2, appendix B).

use crate::sys::ffi;
use crate::sys::page::PhysPage;
use crate::uapi::kvm_segment;
use kernel::prelude::*;

/// Field offsets within the VMCB page.
pub(crate) type Layout = ffi::rkvm_vmcb_layout;

/// Reads the layout from the kernel's `struct vmcb`.
pub(crate) fn layout() -> Layout {
    let mut l = Layout::default();
    // SAFETY: Fills `l` with constant offsets.
    unsafe { ffi::rkvm_vmcb_layout_get(&mut l) };
    l
}

/// Intercept vectors: which word of `intercepts` and which bit an exit code's intercept
/// is (APM table B-1: CR reads and writes, DR reads and writes, exceptions, then two
/// words of instruction intercepts in exit-code order from 0x60).
pub(crate) fn intercept_bit(exit_code: u32) -> Option<(usize, u32)> {
    match exit_code {
        0x00..=0x1f => Some((0, exit_code)),
        0x20..=0x3f => Some((1, exit_code - 0x20)),
        0x40..=0x5f => Some((2, exit_code - 0x40)),
        0x60..=0x7f => Some((3, exit_code - 0x60)),
        0x80..=0x9f => Some((4, exit_code - 0x80)),
        _ => None,
    }
}

/// `int_ctl` bits.
pub(crate) mod int_ctl {
    /// A virtual interrupt is pending (used only to get a VINTR exit).
    pub(crate) const V_IRQ: u32 = 1 << 8;
    /// Priority of the virtual interrupt (bits 19:16).
    pub(crate) const V_INTR_PRIO_SHIFT: u32 = 16;
    /// The virtual interrupt ignores the virtual TPR.
    pub(crate) const V_IGN_TPR: u32 = 1 << 20;
    /// Virtual interrupt masking: the guest's RFLAGS.IF masks only virtual interrupts;
    /// the host's (at VMRUN) masks physical ones.
    pub(crate) const V_INTR_MASKING: u32 = 1 << 24;
}

/// EVENTINJ / EXITINTINFO: vector 7:0, type 10:8, error code valid 11, valid 31.
pub(crate) mod event {
    pub(crate) const TYPE_INTR: u32 = 0;
    pub(crate) const TYPE_NMI: u32 = 2;
    pub(crate) const TYPE_EXCEPTION: u32 = 3;
    pub(crate) const TYPE_SOFT: u32 = 4;
    pub(crate) const ERROR_VALID: u32 = 1 << 11;
    pub(crate) const VALID: u32 = 1 << 31;
}

/// `tlb_ctl` values.
pub(crate) mod tlb_ctl {
    pub(crate) const NOTHING: u8 = 0;
    pub(crate) const FLUSH_ALL: u8 = 1;
    pub(crate) const FLUSH_ASID: u8 = 3;
}

/// One VMCB (or a VMCB-format host save area).
pub(crate) struct Vmcb {
    page: PhysPage,
}

impl Vmcb {
    pub(crate) fn new() -> Result<Self> {
        Ok(Self {
            page: PhysPage::new()?,
        })
    }

    pub(crate) fn pa(&self) -> u64 {
        self.page.phys().0
    }

    /// Reads `bytes` (1, 2, 4 or 8) at `off`; fields never straddle 8-byte words.
    fn read(&self, off: u16, bytes: u32) -> u64 {
        let off = usize::from(off);
        let word = self.page.read(off / 8);
        let shift = (off % 8) * 8;
        let v = word >> shift;
        if bytes >= 8 {
            v
        } else {
            v & ((1u64 << (bytes * 8)) - 1)
        }
    }

    fn write(&self, off: u16, bytes: u32, v: u64) {
        let off = usize::from(off);
        if bytes >= 8 {
            self.page.write(off / 8, v);
            return;
        }
        let shift = (off % 8) * 8;
        let mask = ((1u64 << (bytes * 8)) - 1) << shift;
        let old = self.page.read(off / 8);
        self.page.write(off / 8, old & !mask | (v << shift) & mask);
    }

    pub(crate) fn r64(&self, off: u16) -> u64 {
        self.read(off, 8)
    }
    pub(crate) fn r32(&self, off: u16) -> u32 {
        self.read(off, 4) as u32
    }
    pub(crate) fn r16(&self, off: u16) -> u16 {
        self.read(off, 2) as u16
    }
    pub(crate) fn r8(&self, off: u16) -> u8 {
        self.read(off, 1) as u8
    }
    pub(crate) fn w64(&self, off: u16, v: u64) {
        self.write(off, 8, v)
    }
    pub(crate) fn w32(&self, off: u16, v: u32) {
        self.write(off, 4, u64::from(v))
    }
    pub(crate) fn w16(&self, off: u16, v: u16) {
        self.write(off, 2, u64::from(v))
    }
    pub(crate) fn w8(&self, off: u16, v: u8) {
        self.write(off, 1, u64::from(v))
    }

    /// Zeroes the whole VMCB (after a shutdown the CPU leaves it undefined).
    pub(crate) fn clear(&self) {
        self.page.fill(0);
    }

    /// Sets or clears the intercept of `exit_code` (one of the first five vectors').
    pub(crate) fn set_intercept(&self, l: &Layout, exit_code: u32, on: bool) {
        let Some((word, bit)) = intercept_bit(exit_code) else {
            return;
        };
        let off = l.intercepts + (word as u16) * 4;
        let old = self.r32(off);
        self.w32(
            off,
            if on {
                old | 1 << bit
            } else {
                old & !(1 << bit)
            },
        );
    }

    /// Writes segment `seg` (the offset of its `vmcb_seg`).
    pub(crate) fn set_seg(&self, l: &Layout, seg: u16, s: &kvm_segment) {
        self.w16(seg + l.seg_selector, s.selector);
        self.w16(seg + l.seg_attrib, seg_to_attrib(s));
        self.w32(seg + l.seg_limit, s.limit);
        self.w64(seg + l.seg_base, s.base);
    }

    /// Reads segment `seg` back.
    pub(crate) fn get_seg(&self, l: &Layout, seg: u16, s: &mut kvm_segment) {
        s.selector = self.r16(seg + l.seg_selector);
        attrib_to_seg(self.r16(seg + l.seg_attrib), s);
        s.limit = self.r32(seg + l.seg_limit);
        s.base = self.r64(seg + l.seg_base);
    }
}

/// A segment's VMCB attributes: the descriptor's type, S, DPL, P, AVL, L, D/B and G bits
/// packed into 12 bits; an unusable segment is not present.
fn seg_to_attrib(s: &kvm_segment) -> u16 {
    if s.unusable != 0 || s.present == 0 {
        return 0;
    }
    u16::from(s.type_ & 15)
        | u16::from(s.s & 1) << 4
        | u16::from(s.dpl & 3) << 5
        | 1 << 7
        | u16::from(s.avl & 1) << 8
        | u16::from(s.l & 1) << 9
        | u16::from(s.db & 1) << 10
        | u16::from(s.g & 1) << 11
}

fn attrib_to_seg(a: u16, s: &mut kvm_segment) {
    s.type_ = (a & 15) as u8;
    s.s = ((a >> 4) & 1) as u8;
    s.dpl = ((a >> 5) & 3) as u8;
    s.present = ((a >> 7) & 1) as u8;
    s.avl = ((a >> 8) & 1) as u8;
    s.l = ((a >> 9) & 1) as u8;
    s.db = ((a >> 10) & 1) as u8;
    s.g = ((a >> 11) & 1) as u8;
    s.unusable = u8::from(s.present == 0);
}

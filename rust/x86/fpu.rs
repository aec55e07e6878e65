// SPDX-License-Identifier: GPL-2.0

//! Guest FPU state switching (asm: XSAVE, XRSTOR, XSETBV, FXSAVE, FXRSTOR).
//!
//! The KVM-only helpers (`fpu_swap_kvm_fpstate`, ...) are not available to rkvm. Instead
//! a window runs inside `kernel_fpu_begin()`/`kernel_fpu_end()`: the kernel saves the
//! task's user FPU state and restores it before the task returns to userspace, and in
//! between the registers belong to rkvm. The guest's area is loaded with XRSTOR over every
//! component rkvm supports (components the guest never set come back in their initial
//! state, so no host value reaches the guest) and saved with XSAVE before the window ends.

use super::GuestFpu;
use crate::sys::{ffi, msr};
use core::arch::asm;
use core::sync::atomic::{AtomicU32, Ordering};
use kernel::prelude::*;

/// The XSAVE header's XSTATE_BV offset in the area.
const XSTATE_BV: usize = 512;

/// Guest FPU ownership: `kernel_fpu_begin()` until dropped.
pub(crate) struct KernelFpu(core::marker::PhantomData<*mut ()>);

impl KernelFpu {
    /// Takes the FPU for rkvm (preemption and softirqs off until dropped).
    pub(crate) fn begin() -> Self {
        // SAFETY: Process context; balanced by `drop`.
        unsafe { ffi::rkvm_fpu_begin() };
        Self(core::marker::PhantomData)
    }

    /// Loads the guest's registers from `area` (components in `mask`, which the host XCR0
    /// enables), with XSAVE, or FXRSTOR on CPUs without it.
    pub(crate) fn load(&self, area: &GuestFpu, mask: u64, xsave: bool) {
        let p = core::ptr::from_ref(area);
        // SAFETY: `area` is a 64-byte aligned XSAVE area of the supported size (the
        // `x86_fpu` cache's objects); the FPU belongs to rkvm (`self`). A corrupt area
        // cannot be loaded: userspace writes are checked in `set_xsave`.
        unsafe {
            if xsave {
                asm!("xrstor64 [{}]", in(reg) p, in("eax") mask as u32, in("edx") (mask >> 32) as u32,
                     options(nostack, preserves_flags));
            } else {
                asm!("fxrstor64 [{}]", in(reg) p, options(nostack, preserves_flags));
            }
        }
    }

    /// Saves the guest's registers into `area`.
    pub(crate) fn save(&self, area: &mut GuestFpu, mask: u64, xsave: bool) {
        let p = core::ptr::from_mut(area);
        // SAFETY: As in `load`; the area is exclusively borrowed.
        unsafe {
            if xsave {
                asm!("xsave64 [{}]", in(reg) p, in("eax") mask as u32, in("edx") (mask >> 32) as u32,
                     options(nostack, preserves_flags));
            } else {
                asm!("fxsave64 [{}]", in(reg) p, options(nostack, preserves_flags));
            }
        }
    }
}

impl Drop for KernelFpu {
    fn drop(&mut self) {
        // SAFETY: Balances `begin`.
        unsafe { ffi::rkvm_fpu_end() };
    }
}

/// The guest's XCR0 and IA32_XSS in the CPU for a window; the host's come back when it is
/// dropped, on every way out of the window.
///
/// # Invariants
///
/// While it lives the FPU belongs to rkvm (it borrows the [`KernelFpu`]), so no host code
/// saves or restores extended state with the guest's values in XCR0 or IA32_XSS.
pub(crate) struct GuestXstate<'a> {
    /// The host's XCR0, when the host uses XSAVE (a guest XSETBV may change XCR0 while
    /// the window runs).
    host_xcr0: Option<u64>,
    /// The host's IA32_XSS, when it is not the guest's (0).
    host_xss: Option<u64>,
    _fpu: &'a KernelFpu,
}

impl<'a> GuestXstate<'a> {
    /// Loads `guest_xcr0` (validated against the supported components) if the host uses
    /// XSAVE and, when the guest can run XSAVES, its IA32_XSS: always 0, since rkvm
    /// offers no supervisor state component. Call after the guest's registers are loaded
    /// with the host's XCR0 (which enables every component they use).
    pub(crate) fn load(
        fpu: &'a KernelFpu,
        xsave: bool,
        guest_xcr0: u64,
        xsaves: bool,
    ) -> Result<Self> {
        let mut g = Self {
            host_xcr0: None,
            host_xss: None,
            _fpu: fpu,
        };
        let host_xcr0 = super::cpuid::host_xcr0();
        if xsave {
            g.host_xcr0 = Some(host_xcr0);
            if guest_xcr0 != host_xcr0 {
                // SAFETY: CR4.OSXSAVE is set (the host uses XSAVE); the value was
                // validated against the supported components; `drop` puts the host's
                // back.
                unsafe { xsetbv0(guest_xcr0) };
            }
        }
        let host_xss = super::cpuid::host_xss();
        if xsaves && host_xss != 0 {
            // Without this the guest's XSAVES and XRSTORS would reach the host's
            // supervisor state (its CET and PASID registers, for one).
            msr::write(msr::index::IA32_XSS, 0)?;
            g.host_xss = Some(host_xss);
        }
        Ok(g)
    }
}

impl Drop for GuestXstate<'_> {
    fn drop(&mut self) {
        if let Some(v) = self.host_xss {
            // The host's own value, which the CPU accepted before.
            let _ = msr::write(msr::index::IA32_XSS, v);
        }
        if let Some(v) = self
            .host_xcr0
            .filter(|&v| crate::sys::cpu::regs::xgetbv0() != v)
        {
            // SAFETY: Restores the host's own XCR0.
            unsafe { xsetbv0(v) };
        }
    }
}

/// Sets XCR0.
///
/// # Safety
///
/// CR4.OSXSAVE is set, `v` is a valid XCR0 for this CPU, and the caller restores the host
/// value before any host code that relies on it (the end of the window).
pub(crate) unsafe fn xsetbv0(v: u64) {
    // SAFETY: See the function's contract.
    unsafe {
        asm!("xsetbv", in("ecx") 0u32, in("eax") v as u32, in("edx") (v >> 32) as u32,
             options(nomem, nostack, preserves_flags))
    };
}

/// The initial FPU state of a vCPU, in an area that is all zeros: FCW 0x37f, MXCSR
/// 0x1f80, nothing in XSTATE_BV.
pub(crate) fn init_area(bytes: &mut [u8]) {
    if let Some(b) = bytes.get_mut(0..2) {
        b.copy_from_slice(&0x37fu16.to_le_bytes());
    }
    if let Some(b) = bytes.get_mut(24..28) {
        b.copy_from_slice(&0x1f80u32.to_le_bytes());
    }
}

/// XSTATE_BV bits of x87, SSE and AVX: the components whose state XRSTOR loads MXCSR with.
const MXCSR_USERS: u64 = 0b111;
/// MXCSR's offset in the legacy region.
const MXCSR: usize = 24;

/// The MXCSR bits this CPU accepts (its MXCSR_MASK), read once with FXSAVE and cached.
/// A CPU that reports 0 there has the architectural default, every bit but DAZ.
pub(crate) fn mxcsr_mask() -> u32 {
    static MASK: AtomicU32 = AtomicU32::new(0);
    let cached = MASK.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    #[repr(C, align(16))]
    struct FxArea([u8; 512]);
    let mut area = FxArea([0; 512]);
    {
        let _fpu = KernelFpu::begin();
        let p = core::ptr::from_mut(&mut area);
        // SAFETY: `area` is a 16-byte aligned, 512-byte FXSAVE area owned by this frame;
        // the FPU belongs to rkvm while `_fpu` lives. FXSAVE only stores.
        unsafe { asm!("fxsave64 [{}]", in(reg) p, options(nostack, preserves_flags)) };
    }
    let mask = area
        .0
        .get(28..32)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_le_bytes);
    let mask = if mask == 0 { 0xffbf } else { mask };
    MASK.store(mask, Ordering::Relaxed);
    mask
}

fn le64(bytes: &[u8], off: usize) -> u64 {
    bytes
        .get(off..off + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(u64::MAX, u64::from_le_bytes)
}

fn le32(bytes: &[u8], off: usize) -> u32 {
    bytes
        .get(off..off + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(u32::MAX, u32::from_le_bytes)
}

/// Checks a standard-format XSAVE area from userspace (KVM_SET_XSAVE) the way the kernel
/// checks user XSAVE buffers: XSTATE_BV only within `supported`, XCOMP_BV zero (no
/// compacted format), the other 48 header bytes zero, and MXCSR within the CPU's
/// MXCSR_MASK whenever a component that carries it (x87, SSE, AVX) is given.
pub(crate) fn user_area_valid(bytes: &[u8], supported: u64) -> bool {
    let bv = le64(bytes, XSTATE_BV);
    bv & !supported == 0
        && le64(bytes, XSTATE_BV + 8) == 0
        && (2..8).all(|i| le64(bytes, XSTATE_BV + 8 * i) == 0)
        && (bv & MXCSR_USERS == 0 || le32(bytes, MXCSR) & !mxcsr_mask() == 0)
}

/// Installs a user area checked with [`user_area_valid`] into the vCPU's `area`. When no
/// component that carries MXCSR is given, the vCPU keeps its MXCSR (KVM ignores the field
/// then): XRSTOR loads MXCSR whatever XSTATE_BV says, so an unchecked value must never
/// reach the area.
pub(crate) fn install_user_area(area: &mut [u8], bytes: &[u8]) {
    let keep = (le64(bytes, XSTATE_BV) & MXCSR_USERS == 0).then(|| le32(area, MXCSR));
    for (d, s) in area.iter_mut().zip(bytes.iter()) {
        *d = *s;
    }
    if let (Some(m), Some(d)) = (keep, area.get_mut(MXCSR..MXCSR + 4)) {
        d.copy_from_slice(&m.to_le_bytes());
    }
}

// SPDX-License-Identifier: GPL-2.0

//! The host clock readings kvmclock needs, and the guest-visible pvclock structs, whose
//! layout only the C side knows (asm/pvclock-abi.h is not uapi): Rust gets their sizes
//! and version offsets, and buffers the C side filled.

use super::ffi;

/// Bytes reserved for a filled struct; the real sizes are smaller (checked on use).
pub(crate) const MAX_SIZE: usize = 64;

/// One instant of the host's clocks.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ClockNow {
    pub(crate) boot_ns: u64,
    pub(crate) real_ns: u64,
    pub(crate) tsc: u64,
    /// The clocksource is the TSC, so `tsc` belongs to the same instant as the clocks.
    pub(crate) tsc_based: bool,
}

/// Reads CLOCK_BOOTTIME, CLOCK_REALTIME and the TSC at one instant.
pub(crate) fn clock_now() -> ClockNow {
    let mut c = ffi::rkvm_clock_now::default();
    // SAFETY: Fills `c`.
    unsafe { ffi::rkvm_clock_now(&mut c) };
    ClockNow {
        boot_ns: c.boot_ns,
        real_ns: c.real_ns,
        tsc: c.tsc,
        tsc_based: c.tsc_based != 0,
    }
}

/// A filled guest struct: its bytes and where its version field is.
pub(crate) struct Filled {
    buf: [u8; MAX_SIZE],
    len: usize,
    pub(crate) version_offset: usize,
}

impl Filled {
    pub(crate) fn bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }
}

/// `struct pvclock_vcpu_time_info` with these values (flags 0).
pub(crate) fn time_info(
    version: u32,
    tsc_timestamp: u64,
    system_time: u64,
    mul: u32,
    shift: i8,
) -> Filled {
    // SAFETY: No preconditions.
    let len = unsafe { ffi::rkvm_pvclock_size() } as usize;
    // SAFETY: No preconditions.
    let version_offset = unsafe { ffi::rkvm_pvclock_version_offset() } as usize;
    let mut buf = [0u8; MAX_SIZE];
    if len <= MAX_SIZE {
        // SAFETY: `buf` has room for the struct (checked just above).
        unsafe {
            ffi::rkvm_pvclock_fill(
                buf.as_mut_ptr().cast(),
                version,
                tsc_timestamp,
                system_time,
                mul,
                shift,
            )
        };
    }
    Filled {
        buf,
        len: len.min(MAX_SIZE),
        version_offset,
    }
}

/// `struct pvclock_wall_clock` with these values.
pub(crate) fn wall_clock(version: u32, sec: u32, nsec: u32) -> Filled {
    // SAFETY: No preconditions.
    let len = unsafe { ffi::rkvm_wall_clock_size() } as usize;
    // SAFETY: No preconditions.
    let version_offset = unsafe { ffi::rkvm_wall_clock_version_offset() } as usize;
    let mut buf = [0u8; MAX_SIZE];
    if len <= MAX_SIZE {
        // SAFETY: `buf` has room for the struct (checked just above).
        unsafe { ffi::rkvm_wall_clock_fill(buf.as_mut_ptr().cast(), version, sec, nsec) };
    }
    Filled {
        buf,
        len: len.min(MAX_SIZE),
        version_offset,
    }
}

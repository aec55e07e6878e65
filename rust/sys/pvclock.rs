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

/// The size of `struct pvclock_vcpu_time_info`.
pub(crate) fn time_info_size() -> usize {
    // SAFETY: No preconditions.
    unsafe { ffi::rkvm_pvclock_size() as usize }
}

/// A vCPU's time record.
pub(crate) struct TimeInfo {
    pub(crate) tsc_timestamp: u64,
    pub(crate) system_time: u64,
    pub(crate) mul: u32,
    pub(crate) shift: i8,
    /// Set the guest-stopped flag (KVM_KVMCLOCK_CTRL).
    pub(crate) stopped: bool,
}

/// `struct pvclock_vcpu_time_info` for `t`; `old` holds the guest's copy (a guest-stopped
/// flag there stays until the guest clears it).
pub(crate) fn time_info(old: &[u8; MAX_SIZE], version: u32, t: &TimeInfo) -> Filled {
    // SAFETY: No preconditions.
    let len = unsafe { ffi::rkvm_pvclock_size() } as usize;
    // SAFETY: No preconditions.
    let version_offset = unsafe { ffi::rkvm_pvclock_version_offset() } as usize;
    let mut buf = [0u8; MAX_SIZE];
    if len <= MAX_SIZE {
        // SAFETY: `buf` and `old` have room for the struct (checked just above).
        unsafe {
            ffi::rkvm_pvclock_fill(
                buf.as_mut_ptr().cast(),
                old.as_ptr().cast(),
                version,
                t.tsc_timestamp,
                t.system_time,
                t.mul,
                t.shift,
                i32::from(t.stopped),
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

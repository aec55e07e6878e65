// SPDX-License-Identifier: GPL-2.0

//! The L1D flush on VM entry (L1TF), as kvm_intel's `vmentry_l1d_flush`.
//!
//! `auto` becomes `cond` on CPUs affected by L1TF and "not required" elsewhere; on a
//! kernel running without mitigations it becomes `never`. (The host's own `l1tf=` choice
//! is exported to kvm_intel only.) `always` flushes before every entry.
//!
//! `cond` flushes on the first entry of every VMX window, which covers at least every
//! case in which KVM's `cond` flushes: a window is opened for each pass of KVM_RUN, so
//! after every schedule-in and preemption (KVM: `kvm_arch_vcpu_load`), after every host
//! interrupt (it ends the window; KVM: the interrupt entry code's per-CPU mark), and after
//! every exit not finished inside the window: emulation, EPT faults, guest-memory
//! accesses, exits to userspace (KVM: the emulator, the page-fault handler and guest
//! writes mark the CPU). Later entries of the same window follow only fast-path exits
//! (CPUID, XSETBV, VMCALL, INVLPG, WBINVD, PAUSE, reflected exceptions, interrupt and NMI
//! windows) that touch nothing but this vCPU's own state, with interrupts off the whole
//! time, which KVM does not flush for either.

use crate::sys::cpu::{self, Feature};
use crate::sys::ffi;
use crate::sys::msr::{self, index};
use kernel::prelude::*;

/// The flush policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Decide from the CPU's L1TF state.
    Auto,
    /// Never flush.
    Never,
    /// Flush when the host ran since the last VM entry.
    Cond,
    /// Flush before every VM entry.
    Always,
}

impl Mode {
    pub(crate) fn from_param(v: c_int) -> Self {
        match v as u32 {
            ffi::RKVM_L1D_FLUSH_NEVER => Self::Never,
            ffi::RKVM_L1D_FLUSH_COND => Self::Cond,
            ffi::RKVM_L1D_FLUSH_ALWAYS => Self::Always,
            _ => Self::Auto,
        }
    }

    pub(crate) fn to_param(self) -> c_int {
        (match self {
            Self::Auto => ffi::RKVM_L1D_FLUSH_AUTO,
            Self::Never => ffi::RKVM_L1D_FLUSH_NEVER,
            Self::Cond => ffi::RKVM_L1D_FLUSH_COND,
            Self::Always => ffi::RKVM_L1D_FLUSH_ALWAYS,
        }) as c_int
    }
}

/// Size of the buffer read by the software flush: twice the largest L1D.
const FLUSH_BYTES: usize = 64 * 1024;
/// IA32_ARCH_CAPABILITIES.SKIP_VMENTRY_L1DFLUSH: an outer hypervisor flushes for us.
const ARCH_CAP_SKIP_VMENTRY_L1DFLUSH: u64 = 1 << 3;

enum Method {
    /// Nothing to do.
    None,
    /// IA32_FLUSH_CMD.L1D_FLUSH.
    Msr,
    /// Read a buffer twice the size of the L1D, displacing its contents.
    Software(KVVec<u8>),
}

/// The chosen flush.
pub(crate) struct L1dFlush {
    mode: Mode,
    method: Method,
}

impl L1dFlush {
    /// No flush (before `setup`).
    pub(crate) fn none() -> Self {
        Self {
            mode: Mode::Never,
            method: Method::None,
        }
    }

    /// `vmx_setup_l1d_flush()`.
    pub(crate) fn setup(requested: Mode) -> Result<Self> {
        let skip = cpu::boot_cpu_has(Feature::ArchCapabilities)
            && msr::read(index::IA32_ARCH_CAPABILITIES).unwrap_or(0)
                & ARCH_CAP_SKIP_VMENTRY_L1DFLUSH
                != 0;
        if !cpu::boot_cpu_has(Feature::BugL1tf) || skip {
            return Ok(Self::none());
        }
        let mode = match requested {
            // The host's own L1TF choice decides `auto`; a kernel with mitigations off
            // does not mitigate L1TF for guests either (as KVM follows l1tf=off).
            Mode::Auto if cpu::mitigations_off() => Mode::Never,
            Mode::Auto => Mode::Cond,
            m => m,
        };
        if mode == Mode::Never {
            if requested == Mode::Never {
                pr_warn!("L1TF: the CPU is affected and vmentry_l1d_flush=never\n");
            }
            return Ok(Self::none());
        }
        let method = if cpu::boot_cpu_has(Feature::FlushL1d) {
            Method::Msr
        } else {
            let mut buf = KVVec::with_capacity(FLUSH_BYTES, GFP_KERNEL)?;
            buf.resize(FLUSH_BYTES, 0x5a, GFP_KERNEL)?;
            Method::Software(buf)
        };
        Ok(Self { mode, method })
    }

    /// The policy in effect.
    pub(crate) fn mode(&self) -> Mode {
        self.mode
    }

    /// Flushes if the policy asks for it; `first_entry` is true for the first VM entry of
    /// a VMX window. Returns whether it flushed.
    pub(crate) fn before_entry(&self, first_entry: bool) -> bool {
        let want = match self.mode {
            Mode::Always => true,
            Mode::Cond => first_entry,
            _ => false,
        };
        if !want || matches!(self.method, Method::None) {
            return false;
        }
        match &self.method {
            Method::None => {}
            Method::Msr => {
                let _ = msr::write(index::IA32_FLUSH_CMD, 1);
            }
            Method::Software(buf) => {
                // Touch one byte per cache line, twice, as the hardware-less flush does.
                let mut sum = 0u8;
                for _ in 0..2 {
                    for line in buf.chunks(64) {
                        if let Some(&b) = line.first() {
                            sum = sum.wrapping_add(core::hint::black_box(b));
                        }
                    }
                }
                core::hint::black_box(sum);
            }
        }
        true
    }
}

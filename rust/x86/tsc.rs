// SPDX-License-Identifier: GPL-2.0

//! TSC write matching for one VM (KVM's `kvm_synchronize_tsc`): vCPUs created, or given a
//! TSC value by userspace, close together share one offset, so their TSCs agree.
//!
//! A VMM creates its vCPUs one by one and then writes the same value (usually 0) to each
//! one's IA32_TSC, microseconds apart. Taken literally, every vCPU would run with its own
//! offset and an SMP guest would see its TSCs disagree (Linux then marks its TSC
//! unstable). As KVM does, rkvm treats such writes as meant to be simultaneous:
//! - a new vCPU, or a userspace write of 0, joins the current generation's offset;
//! - after userspace's first write, a value within one second (in guest cycles) of what
//!   the previous write would read by now joins it too;
//! - anything else, or a different TSC frequency, starts a new generation.
//!
//! When the host's TSC is unstable the matched vCPU gets the written value plus the time
//! since the last write instead of the same offset, as in KVM.

/// The matching state (KVM's `kvm->arch.last_tsc_*`, `cur_tsc_offset`, `user_set_tsc`).
#[derive(Default)]
pub(crate) struct TscSync {
    last_nsec: u64,
    last_write: u64,
    last_khz: u32,
    last_offset: u64,
    user_set: bool,
    /// The offset of the current generation.
    cur_offset: u64,
}

/// The host facts one synchronization needs, read by the caller.
#[derive(Clone, Copy)]
pub(crate) struct TscNow {
    /// The host TSC.
    pub(crate) host_tsc: u64,
    /// A monotonic clock in nanoseconds.
    pub(crate) ns: u64,
    /// The vCPU's TSC frequency (KVM_SET_TSC_KHZ's, the host's by default).
    pub(crate) khz: u32,
    /// The host kernel marked its TSC unstable.
    pub(crate) unstable: bool,
}

/// Guest cycles in `ns` nanoseconds at `khz` (saturating).
fn ns_to_cycles(ns: u64, khz: u32) -> u64 {
    mul_div(ns, u64::from(khz), 1_000_000)
}

impl TscSync {
    /// A vCPU's TSC set by userspace (`Some`, KVM_SET_MSRS of IA32_TSC) or at its creation
    /// (`None`). Returns the vCPU's offset (guest TSC = host TSC + offset).
    pub(crate) fn synchronize(&mut self, value: Option<u64>, now: TscNow) -> u64 {
        let mut data = value.unwrap_or(0);
        let mut offset = data.wrapping_sub(now.host_tsc);
        let elapsed = now.ns.wrapping_sub(self.last_nsec);
        let synchronizing = now.khz != 0
            && (data == 0 || {
                // The one-second slop of the legacy API, once userspace has written a TSC.
                let hz = u64::from(now.khz) * 1000;
                let expected = self.last_write.wrapping_add(ns_to_cycles(elapsed, now.khz));
                self.user_set
                    && data < expected.wrapping_add(hz)
                    && data.wrapping_add(hz) > expected
            });
        let matched = synchronizing && now.khz == self.last_khz;
        if matched {
            if now.unstable {
                data = data.wrapping_add(ns_to_cycles(elapsed, now.khz));
                offset = data.wrapping_sub(now.host_tsc);
            } else {
                offset = self.cur_offset;
            }
        }
        self.record(offset, data, now, matched, value.is_some());
        offset
    }

    /// KVM_VCPU_TSC_OFFSET set by userspace: taken as given, and it joins the current
    /// generation when it is the last offset written.
    pub(crate) fn set_offset(&mut self, offset: u64, now: TscNow) {
        let matched = now.khz != 0 && self.last_khz == now.khz && self.last_offset == offset;
        self.record(
            offset,
            now.host_tsc.wrapping_add(offset),
            now,
            matched,
            true,
        );
    }

    fn record(&mut self, offset: u64, tsc: u64, now: TscNow, matched: bool, user_set: bool) {
        self.user_set |= user_set;
        self.last_nsec = now.ns;
        self.last_write = tsc;
        self.last_khz = now.khz;
        self.last_offset = offset;
        if !matched {
            self.cur_offset = offset;
        }
    }
}

/// The fractional bits of [`TscRate::ratio`] (VMX's TSC multiplier format).
pub(crate) const RATIO_FRAC_BITS: u32 = 48;
/// Ratio 1: the guest's TSC runs at the host's rate.
pub(crate) const RATIO_ONE: u64 = 1 << RATIO_FRAC_BITS;
/// KVM's limit on a guest TSC rate with scaling (`max_guest_tsc_khz`): KVM_SET_TSC_KHZ
/// of this or more is EINVAL.
pub(crate) const MAX_GUEST_TSC_KHZ: u32 = 0x7fff_ffff;
/// Rates this close to the host's (parts per million) need no scaling (KVM's
/// `tsc_tolerance_ppm` default).
const TOLERANCE_PPM: u64 = 250;

/// A vCPU's TSC rate (KVM's `virtual_tsc_khz` and `l1_tsc_scaling_ratio`).
///
/// # Invariants
///
/// `khz` is not 0; `ratio` is [`RATIO_ONE`] unless the backend scales the TSC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TscRate {
    khz: u32,
    ratio: u64,
}

impl TscRate {
    /// The host's own rate (`host_khz` from the kernel's calibration, not 0).
    pub(crate) fn host(host_khz: u32) -> Self {
        Self {
            khz: host_khz.max(1),
            ratio: RATIO_ONE,
        }
    }

    /// The guest's TSC frequency in kHz (KVM_GET_TSC_KHZ).
    pub(crate) fn khz(&self) -> u32 {
        self.khz
    }

    /// The multiplier the CPU applies to the host TSC, [`RATIO_FRAC_BITS`] fractional bits.
    pub(crate) fn ratio(&self) -> u64 {
        self.ratio
    }

    /// The host TSC value `host` at the guest's rate (before the offset), as the CPU's
    /// multiplier computes it.
    pub(crate) fn scale(&self, host: u64) -> u64 {
        if self.ratio == RATIO_ONE {
            return host;
        }
        // 64x64 -> 128-bit product; the CPU keeps the low 64 bits of the result too.
        ((u128::from(host) * u128::from(self.ratio)) >> RATIO_FRAC_BITS) as u64
    }

    /// Host TSC cycles for `cycles` of the guest's TSC (a deadline's distance).
    pub(crate) fn host_cycles(&self, cycles: u64, host_khz: u32) -> u64 {
        if self.ratio == RATIO_ONE {
            return cycles;
        }
        mul_div(cycles, u64::from(host_khz), u64::from(self.khz))
    }

    /// KVM_SET_TSC_KHZ (KVM's `kvm_set_tsc_khz`): `khz` (0: the host's) within 250 ppm of
    /// the host's rate runs unscaled; another rate needs the backend's TSC scaling
    /// (`scaling`) and a multiplier in range. `None` is EINVAL. (Without scaling KVM
    /// would let a faster rate "catch up" on each entry; rkvm refuses it instead.)
    pub(crate) fn for_khz(khz: u32, host_khz: u32, scaling: bool) -> Option<Self> {
        if scaling && khz >= MAX_GUEST_TSC_KHZ {
            return None;
        }
        let host = u64::from(host_khz.max(1));
        let khz = if khz == 0 { host_khz.max(1) } else { khz };
        let want = u64::from(khz);
        // KVM's adjust_tsc_khz() bounds, rounded down as there.
        let lo = host * (1_000_000 - TOLERANCE_PPM) / 1_000_000;
        let hi = host * (1_000_000 + TOLERANCE_PPM) / 1_000_000;
        if want >= lo && want <= hi {
            return Some(Self {
                khz,
                ratio: RATIO_ONE,
            });
        }
        if !scaling {
            return None;
        }
        // want / host with 48 fractional bits, without 128-bit division: 16 bits of the
        // quotient's fraction, then 32 more from the remainder.
        let q = (want << 16) / host;
        let r = (want << 16) % host;
        if q >> 32 != 0 {
            return None;
        }
        let ratio = (q << 32).checked_add((r << 32) / host)?;
        if ratio == 0 || ratio == u64::MAX {
            return None;
        }
        Some(Self { khz, ratio })
    }
}

/// `a * b / c`, saturating, without 128-bit division (0 when `c` is 0); exact while `b`
/// and `c` are below 2^32. Shared with the local APIC's timer arithmetic.
pub(crate) fn mul_div(a: u64, b: u64, c: u64) -> u64 {
    if c == 0 {
        return 0;
    }
    (a / c)
        .saturating_mul(b)
        .saturating_add((a % c).saturating_mul(b) / c)
}

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
    /// The vCPU's TSC frequency (no scaling: the host's).
    pub(crate) khz: u32,
    /// The host kernel marked its TSC unstable.
    pub(crate) unstable: bool,
}

/// Guest cycles in `ns` nanoseconds at `khz` (saturating; no 128-bit division in the
/// kernel).
fn ns_to_cycles(ns: u64, khz: u32) -> u64 {
    const NS_PER_MS: u64 = 1_000_000;
    let khz = u64::from(khz);
    (ns / NS_PER_MS)
        .saturating_mul(khz)
        .saturating_add((ns % NS_PER_MS) * khz / NS_PER_MS)
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

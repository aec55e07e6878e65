// SPDX-License-Identifier: GPL-2.0

//! kvmclock: the VM's clock (`KVM_GET_CLOCK`/`KVM_SET_CLOCK`, CLOCK_BOOTTIME plus a
//! per-VM offset, in ns) and the guest's view of it (`MSR_KVM_SYSTEM_TIME(_NEW)`: a
//! `pvclock_vcpu_time_info` per vCPU mapping the guest TSC to that clock;
//! `MSR_KVM_WALL_CLOCK(_NEW)`: the wall-clock time at which the VM clock was 0).
//!
//! A vCPU's record is rewritten before it runs guest code when its MSR changed, when the
//! VM clock was set, or when the record is a second old (the guest extrapolates with the
//! TSC frequency; the host's clock follows NTP). Records never carry the TSC-stable flag,
//! so guests keep the readings of all vCPUs monotonic themselves.

use core::sync::atomic::Ordering;
use kernel::prelude::*;

use super::uaccess;
use super::vcpu::Vcpu;
use super::vm::{Vm, VmMem};
use crate::sys::pvclock::{self, ClockNow};
use crate::uapi::*;
use crate::x86::emulate::GuestMem;

const NSEC_PER_SEC: u64 = 1_000_000_000;
/// Re-anchor a vCPU's record after this long.
const REFRESH_NS: u64 = NSEC_PER_SEC;

/// The flags KVM_GET_CLOCK may report and KVM_SET_CLOCK accepts (of which only
/// KVM_CLOCK_REALTIME means anything to it), as KVM.
pub(crate) const VALID_FLAGS: u32 = KVM_CLOCK_TSC_STABLE | KVM_CLOCK_REALTIME | KVM_CLOCK_HOST_TSC;

/// The VM clock at `now`.
fn vm_clock(vm: &Vm, now: &ClockNow) -> u64 {
    now.boot_ns
        .wrapping_add(vm.kvmclock_offset.load(Ordering::Relaxed))
}

/// `KVM_GET_CLOCK`.
pub(crate) fn get_clock(vm: &Vm, arg: usize) -> Result<isize> {
    let now = pvclock::clock_now();
    let mut data = kvm_clock_data {
        clock: vm_clock(vm, &now),
        ..Default::default()
    };
    if now.tsc_based {
        data.flags = KVM_CLOCK_REALTIME | KVM_CLOCK_HOST_TSC;
        data.realtime = now.real_ns;
        data.host_tsc = now.tsc;
    }
    uaccess::write(arg, &data)?;
    Ok(0)
}

/// `KVM_SET_CLOCK`: the VM clock reads `clock` now, or, with KVM_CLOCK_REALTIME, `clock`
/// plus the wall time since `realtime` (if that is in the past).
pub(crate) fn set_clock(vm: &Vm, arg: usize) -> Result<isize> {
    let data: kvm_clock_data = uaccess::read(arg)?;
    if data.flags & !VALID_FLAGS != 0 {
        return Err(EINVAL);
    }
    let now = pvclock::clock_now();
    let mut clock = data.clock;
    if data.flags & KVM_CLOCK_REALTIME != 0 && now.real_ns > data.realtime {
        clock = clock.wrapping_add(now.real_ns - data.realtime);
    }
    vm.kvmclock_offset
        .store(clock.wrapping_sub(now.boot_ns), Ordering::Relaxed);
    vm.kvmclock_gen.fetch_add(1, Ordering::SeqCst);
    Ok(0)
}

/// KVM's scale for pvclock: `(shift, mul)` such that ns = ((cycles << shift) * mul) >> 32
/// (a negative shift shifts right), for a counter of `hz`.
fn time_scale(hz: u64) -> (i8, u32) {
    let mut target = NSEC_PER_SEC;
    let mut base = hz.max(1);
    let mut shift: i32 = 0;
    // Bring the counter rate within 32 bits and at most twice the target rate...
    while base > target.saturating_mul(2) || base >> 32 != 0 {
        base >>= 1;
        shift -= 1;
    }
    // ...then above the target, with the target within 32 bits.
    let mut base32 = base as u32;
    while u64::from(base32) <= target || target >> 32 != 0 {
        if target >> 32 != 0 || base32 & 0x8000_0000 != 0 {
            target >>= 1;
        } else {
            base32 <<= 1;
        }
        shift += 1;
    }
    let mul = ((target << 32) / u64::from(base32.max(1))) as u32;
    (shift as i8, mul)
}

/// Writes `f` to guest memory at `gpa` with the version protocol: the version goes odd
/// first, the struct follows, then the version goes even. A version read back from the
/// guest is the starting point (so an odd one left there is skipped).
fn publish(mem: &VmMem<'_>, gpa: u64, make: impl Fn(u32) -> pvclock::Filled) -> Result {
    let probe = make(0);
    let voff = gpa.wrapping_add(probe.version_offset as u64);
    let mut v = [0u8; 4];
    mem.read(voff, &mut v)?;
    let odd = u32::from_ne_bytes(v).wrapping_add(1) | 1;
    mem.write(voff, &odd.to_ne_bytes())?;
    mem.write(gpa, make(odd).bytes())?;
    mem.write(voff, &odd.wrapping_add(1).to_ne_bytes())
}

/// `MSR_KVM_WALL_CLOCK(_NEW)` written with `gpa`: the wall time at VM clock 0.
pub(crate) fn write_wall_clock(vm: &Vm, vcpu: &Vcpu, gpa: u64) {
    let now = pvclock::clock_now();
    let epoch = now.real_ns.wrapping_sub(vm_clock(vm, &now));
    let sec = (epoch / NSEC_PER_SEC) as u32;
    let nsec = (epoch % NSEC_PER_SEC) as u32;
    // Without memory there, nothing is written (as in KVM).
    let _ = publish(&VmMem::of(vm, vcpu), gpa, |ver| {
        pvclock::wall_clock(ver, sec, nsec)
    });
}

/// A vCPU's kvmclock record bookkeeping.
#[derive(Default)]
pub(crate) struct PvClock {
    last_msr: u64,
    last_gen: u64,
    last_ns: u64,
    /// The TSC offset and ratio the record was written with: a new one re-anchors it.
    last_tsc: (u64, u64),
    /// KVM_KVMCLOCK_CTRL: the next record tells the guest it was stopped.
    stop_request: bool,
}

impl PvClock {
    /// Re-anchors the record at MSR value `msr` if needed; `rate` and `tsc_offset` map
    /// host to guest TSC.
    pub(crate) fn update(
        &mut self,
        vm: &Vm,
        vcpu: &Vcpu,
        msr: u64,
        tsc_offset: u64,
        rate: crate::x86::tsc::TscRate,
    ) {
        if msr & 1 == 0 {
            self.last_msr = msr;
            return;
        }
        // This runs before every entry: only a cheap clock read unless an update is due.
        let gen = vm.kvmclock_gen.load(Ordering::SeqCst);
        let t = crate::sys::wait::now_ns();
        let tsc = (tsc_offset, rate.ratio());
        if msr == self.last_msr
            && gen == self.last_gen
            && tsc == self.last_tsc
            && !self.stop_request
            && t.wrapping_sub(self.last_ns) < REFRESH_NS
        {
            return;
        }
        self.last_msr = msr;
        self.last_gen = gen;
        self.last_tsc = tsc;
        self.last_ns = t;
        let now = pvclock::clock_now();
        // The guest's copy first: without memory there nothing is written (as in KVM).
        let gpa = msr & !1;
        let mut old = [0u8; pvclock::MAX_SIZE];
        let len = pvclock::time_info_size().min(pvclock::MAX_SIZE);
        if let Some(o) = old.get_mut(..len) {
            if VmMem::new(vm).read(gpa, o).is_err() {
                return;
            }
        }
        // The rate the guest's TSC really runs at: the host's through the multiplier (a
        // rate KVM_SET_TSC_KHZ took within its tolerance runs unscaled).
        let khz = rate.scale(u64::from(vm.kvm.arch.timer.tsc_khz));
        let (shift, mul) = time_scale(khz.saturating_mul(1000));
        let info = pvclock::TimeInfo {
            tsc_timestamp: rate.scale(now.tsc).wrapping_add(tsc_offset),
            system_time: vm_clock(vm, &now),
            mul,
            shift,
            stopped: core::mem::take(&mut self.stop_request),
        };
        let _ = publish(&VmMem::of(vm, vcpu), gpa, |ver| {
            pvclock::time_info(&old, ver, &info)
        });
    }

    /// `KVM_KVMCLOCK_CTRL`: the guest was paused by its VMM; its next record says so.
    /// EINVAL unless the guest enabled its time record (`msr`).
    pub(crate) fn guest_stopped(&mut self, msr: u64) -> Result<isize> {
        if msr & 1 == 0 {
            return Err(EINVAL);
        }
        self.stop_request = true;
        Ok(0)
    }
}

// SPDX-License-Identifier: GPL-2.0

//! The local APIC work a backend may finish inside its run window, without going back to
//! the vCPU loop: the register writes that have no effect beyond this APIC (EOI of an
//! edge-triggered vector when no in-kernel I/O APIC or PIC has to hear of it, the timer's
//! initial count), and the timer interrupt that ends a HLT when it is due within
//! [`TIMER_WAIT_NS`]. Anything else (an IPI, an EOI someone must see, an interrupt from
//! elsewhere) is left to the vCPU loop, as before.

use super::*;
use crate::x86::state::VcpuState;

/// How soon an APIC timer must expire to be waited for rather than let the vCPU halt
/// (KVM's initial `lapic_timer_advance_ns`).
pub(crate) const TIMER_WAIT_NS: u64 = 1000;

impl Clock {
    /// The APIC's clock for a vCPU in state `s`, read now.
    pub(crate) fn of(s: &VcpuState, host_tsc: u64) -> Self {
        Self {
            now_ns: crate::sys::wait::now_ns(),
            guest_tsc: s.tsc_rate.scale(host_tsc).wrapping_add(s.tsc_offset),
            tsc_khz: s.tsc_rate.khz(),
        }
    }
}

impl Lapic {
    /// The host TSC at which the timer expires, for a vCPU in state `s` on a host whose
    /// TSC runs at `host_khz`.
    pub(crate) fn deadline_tsc(&self, s: &VcpuState, host_khz: u32) -> Option<u64> {
        let host_tsc = crate::sys::cpu::rdtsc();
        let cycles = self.timer_remaining_cycles(&Clock::of(s, host_tsc))?;
        Some(host_tsc.saturating_add(s.tsc_rate.host_cycles(cycles, host_khz)))
    }

    /// For a vCPU in state `s`: when the timer expires within `max_ns` (at most
    /// [`TIMER_WAIT_NS`]), spins until it has (KVM's timer advance), and returns the clock
    /// read then; `None` (no wait) otherwise.
    pub(crate) fn wait_timer(&self, s: &VcpuState, max_ns: u64) -> Option<Clock> {
        let max_ns = max_ns.min(TIMER_WAIT_NS);
        let mut c = Clock::of(s, crate::sys::cpu::rdtsc());
        if self.timer_remaining_ns(&c)? > max_ns {
            return None;
        }
        let until = c.now_ns.saturating_add(max_ns);
        while self.timer_remaining_ns(&c).is_some_and(|ns| ns != 0) && c.now_ns < until {
            core::hint::spin_loop();
            c = Clock::of(s, crate::sys::cpu::rdtsc());
        }
        Some(c)
    }
}

/// The vCPU's local APIC, lent to the backend for one run.
pub(crate) struct WindowApic<'a> {
    pub(crate) lapic: &'a mut Lapic,
    pub(crate) apic_base: u64,
    /// The host TSC rate (to turn the timer into a VMX preemption-timer deadline).
    pub(crate) host_khz: u32,
    /// Vectors whose EOI userspace's I/O APIC may need (256 bits).
    pub(crate) eoi_exit: [u64; 4],
}

/// What a write the window finished changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Written {
    /// The timer was started or stopped: its deadline moves.
    Timer,
    /// A vector left service: another may be deliverable now.
    Eoi,
}

impl WindowApic<'_> {
    /// The guest-physical page of the xAPIC registers, while the APIC is enabled in xAPIC
    /// mode.
    pub(crate) fn xapic_page(&self) -> Option<u64> {
        (Lapic::hw_enabled(self.apic_base) && !Lapic::x2apic_mode(self.apic_base))
            .then_some(self.apic_base & base::ADDR)
    }

    /// Whether the window may finish a write to register `off`: EOI of an
    /// edge-triggered vector that userspace's I/O APIC does not route (the VM has no
    /// in-kernel I/O APIC or PIC, which the caller made sure of), TMICT outside
    /// TSC-deadline mode.
    fn local_write(&self, off: u32) -> Option<Written> {
        let a = &*self.lapic;
        match off {
            reg::EOI => {
                let v = a.highest(reg::ISR)?;
                let tmr = a.get(reg::TMR + u32::from(v >> 5) * 0x10);
                let routed = self
                    .eoi_exit
                    .get(usize::from(v >> 6))
                    .is_none_or(|w| w & 1 << (v & 63) != 0);
                (tmr & 1 << (v & 31) == 0 && !routed).then_some(Written::Eoi)
            }
            reg::TMICT if a.lvtt_mode() != TIMER_TSCDEADLINE => Some(Written::Timer),
            _ => None,
        }
    }

    /// A 4-byte write of `value` to xAPIC register `off`, if the window may finish it
    /// (see `local_write`). `None`: the vCPU loop must do it.
    pub(crate) fn write(&mut self, off: u32, value: u32) -> Option<Written> {
        let kind = self.local_write(off)?;
        let now = crate::sys::wait::now_ns();
        // Neither write sends anything, and an edge EOI has no one to tell here: the
        // effects are empty or for no one.
        let _ = self
            .lapic
            .mmio_write(off, 4, u64::from(value), self.apic_base, now);
        Some(kind)
    }

    /// A WRMSR of `value` to an x2APIC register (EOI, TMICT; see `local_write`) or to
    /// IA32_TSC_DEADLINE, for a vCPU in state `s`, if the window may finish it. `None`:
    /// the vCPU loop must do it (and raise #GP where the write is refused).
    pub(crate) fn msr_write(&mut self, msr: u32, value: u64, s: &VcpuState) -> Option<Written> {
        if msr == TSC_DEADLINE_MSR {
            let c = Clock::of(s, crate::sys::cpu::rdtsc());
            self.lapic.set_tscdeadline(value, self.apic_base, &c);
            return Some(Written::Timer);
        }
        if !Lapic::x2apic_mode(self.apic_base) {
            return None;
        }
        let off = msr.checked_sub(X2APIC_MSR)? << 4;
        let kind = self.local_write(off)?;
        let now = crate::sys::wait::now_ns();
        self.lapic.msr_write(msr, value, self.apic_base, now).ok()?;
        Some(kind)
    }

    /// The host TSC at which the timer expires (see [`Lapic::deadline_tsc`]).
    pub(crate) fn deadline_tsc(&self, s: &VcpuState) -> Option<u64> {
        self.lapic.deadline_tsc(s, self.host_khz)
    }

    /// Whether the APIC has an interrupt the guest could take now (above PPR).
    pub(crate) fn has_interrupt(&mut self) -> bool {
        self.lapic.has_interrupt(self.apic_base).is_some()
    }

    /// For a guest that can take an interrupt now: waits for a timer due within `wait_ns`
    /// (see [`Lapic::wait_timer`]; 0: only one already due), fires it, and takes the
    /// interrupt the APIC then delivers (IRR to ISR). `None` (nothing taken) when the
    /// timer is not due that soon or its interrupt is not deliverable.
    pub(crate) fn timer_interrupt(&mut self, s: &VcpuState, wait_ns: u64) -> Option<u8> {
        let a = &mut *self.lapic;
        let c = a.wait_timer(s, wait_ns)?;
        a.check_timer(&c);
        a.inject_timer(self.apic_base);
        let v = a.has_interrupt(self.apic_base)?;
        a.ack(v);
        Some(v)
    }

    /// After a write the window finished: the timer's new deadline, or whether the EOI
    /// unmasked an interrupt (`true`: the vCPU loop then delivers it).
    pub(crate) fn after_write(
        &mut self,
        w: Written,
        s: &VcpuState,
        deadline: &mut Option<u64>,
    ) -> bool {
        match w {
            Written::Timer => {
                *deadline = self.deadline_tsc(s);
                false
            }
            Written::Eoi => self.has_interrupt(),
        }
    }
}

// SPDX-License-Identifier: GPL-2.0

//! The APIC timer: one-shot, periodic and TSC-deadline modes, counted on the clock
//! the vCPU loop passes in (guest TSC and host time).

use super::*;

impl Lapic {
    pub(super) fn update_divide(&mut self) {
        let t = self.get(reg::TDCR) & 0xf;
        let shift = ((t & 3) | ((t & 8) >> 1)) + 1;
        self.divide = 1 << (shift & 7);
    }

    pub(super) fn lvtt_mode(&self) -> u32 {
        self.get(reg::LVTT) & self.timer_mode_mask
    }

    /// The LVTT mode changed: switching to or from TSC-deadline stops the timer.
    pub(super) fn update_lvtt(&mut self) {
        let mode = self.lvtt_mode();
        if self.timer.mode != mode {
            if (self.timer.mode == TIMER_TSCDEADLINE) != (mode == TIMER_TSCDEADLINE) {
                self.timer = Timer::default();
                self.set(reg::TMICT, 0);
            }
            self.timer.mode = mode;
            self.limit_period();
        }
    }

    pub(super) fn limit_period(&mut self) {
        if self.timer.mode == TIMER_PERIODIC && self.timer.period_ns != 0 {
            self.timer.period_ns = self.timer.period_ns.max(MIN_PERIOD_NS);
        }
    }

    pub(super) fn count_to_ns(&self, count: u32) -> u64 {
        u64::from(count)
            .saturating_mul(self.bus_cycle_ns)
            .saturating_mul(u64::from(self.divide))
    }

    /// Starts one-shot/periodic counting from TMICT, or from a restored TMCCT `count`
    /// (`restore`; as in KVM, a one-shot timer restored with TMCCT 0 expires at once).
    pub(super) fn start_counting(&mut self, count: u32, restore: bool, now: u64) {
        self.timer.pending = false;
        self.timer.period_ns = self.count_to_ns(self.get(reg::TMICT));
        self.limit_period();
        if self.timer.period_ns == 0 {
            self.timer.target_ns = 0;
            return;
        }
        let mut first = self.timer.period_ns;
        if restore {
            let c = self.count_to_ns(count);
            if c == 0 {
                if self.timer.mode != TIMER_PERIODIC {
                    first = 0;
                }
            } else if c <= first {
                first = c;
            }
        }
        self.timer.target_ns = now.saturating_add(first);
    }

    /// Marks the timer pending if it expired (and re-arms a periodic one).
    pub(crate) fn check_timer(&mut self, c: &Clock) {
        if self.timer.pending {
            return;
        }
        match self.timer.mode {
            TIMER_TSCDEADLINE => {
                if self.timer.tscdeadline != 0 && c.guest_tsc >= self.timer.tscdeadline {
                    self.timer.pending = true;
                    self.timer.tscdeadline = 0;
                }
            }
            _ => {
                if self.timer.target_ns == 0 || c.now_ns < self.timer.target_ns {
                    return;
                }
                self.timer.pending = true;
                if self.timer.mode == TIMER_PERIODIC && self.timer.period_ns != 0 {
                    let next = self.timer.target_ns.saturating_add(self.timer.period_ns);
                    // After a long stop, do not replay the missed periods.
                    self.timer.target_ns = next.max(c.now_ns);
                } else {
                    self.timer.target_ns = 0;
                }
            }
        }
    }

    /// Delivers an expired timer's interrupt through LVTT.
    pub(crate) fn inject_timer(&mut self, apic_base: u64) {
        if core::mem::take(&mut self.timer.pending) {
            self.local_deliver(reg::LVTT, apic_base);
        }
    }

    /// Nanoseconds until the timer expires, if it is armed.
    pub(crate) fn timer_remaining_ns(&self, c: &Clock) -> Option<u64> {
        if self.timer.pending {
            return Some(0);
        }
        match self.timer.mode {
            TIMER_TSCDEADLINE => (self.timer.tscdeadline != 0)
                .then(|| c.cycles_to_ns(self.timer.tscdeadline.saturating_sub(c.guest_tsc))),
            _ => (self.timer.target_ns != 0).then(|| self.timer.target_ns.saturating_sub(c.now_ns)),
        }
    }

    /// TSC cycles until the timer expires (for the VMX preemption timer).
    pub(crate) fn timer_remaining_cycles(&self, c: &Clock) -> Option<u64> {
        if self.timer.mode == TIMER_TSCDEADLINE && !self.timer.pending {
            return (self.timer.tscdeadline != 0)
                .then(|| self.timer.tscdeadline.saturating_sub(c.guest_tsc));
        }
        self.timer_remaining_ns(c).map(|ns| c.ns_to_cycles(ns))
    }

    pub(super) fn tmcct(&self, now: u64) -> u32 {
        if self.timer.mode == TIMER_TSCDEADLINE
            || self.get(reg::TMICT) == 0
            || self.timer.period_ns == 0
        {
            return 0;
        }
        let remaining = self
            .timer
            .target_ns
            .saturating_sub(now)
            .checked_rem(self.timer.period_ns)
            .unwrap_or(0);
        remaining
            .checked_div(self.bus_cycle_ns.saturating_mul(u64::from(self.divide)))
            .unwrap_or(0) as u32
    }

    /// IA32_TSC_DEADLINE.
    pub(crate) fn tscdeadline(&self, apic_base: u64) -> u64 {
        if !Self::hw_enabled(apic_base) || self.timer.mode != TIMER_TSCDEADLINE {
            return 0;
        }
        self.timer.tscdeadline
    }

    pub(crate) fn set_tscdeadline(&mut self, v: u64, apic_base: u64, c: &Clock) {
        if !Self::hw_enabled(apic_base) || self.timer.mode != TIMER_TSCDEADLINE {
            return;
        }
        self.timer.pending = false;
        self.timer.tscdeadline = v;
        self.check_timer(c);
    }
}

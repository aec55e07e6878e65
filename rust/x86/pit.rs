// SPDX-License-Identifier: GPL-2.0

//! The in-kernel 8254 interval timer (KVM's `i8254.c`): three counters at ports
//! 0x40-0x42 with the control word at 0x43, and port 0x61's gate and output bits for
//! counter 2. Counter 0 drives IRQ 0 through a host timer the caller owns; the model only
//! says when to arm or disarm it.
//!
//! The channel state is kept in the `kvm_pit_channel_state` layout, so KVM_GET/SET_PIT(2)
//! copy it as KVM does; any value userspace loads is harmless here (counts are never 0
//! after a load, every division is checked).

use super::tsc::mul_div;
use crate::uapi::{
    kvm_pit_channel_state, KVM_PIT_FLAGS_HPET_LEGACY, KVM_PIT_FLAGS_SPEAKER_DATA_ON,
};

/// The counters' input clock (Hz).
pub(crate) const FREQ: u64 = 1_193_181;
const NSEC_PER_SEC: u64 = 1_000_000_000;
/// The shortest period a guest may program (KVM's min_timer_period_us default).
pub(crate) const MIN_PERIOD_NS: u64 = 200_000;

/// Access modes of the control word (`rw_mode`, `read_state`, `write_state`); 1 (LSB
/// only) and any other value take the default arms.
const RW_MSB: u8 = 2;
const RW_WORD0: u8 = 3;
const RW_WORD1: u8 = 4;

/// What counter 0's host timer must do after an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TimerOp {
    Keep,
    Stop,
    /// Fire `delay_ns` from now, then every `period_ns` (0: once).
    Start {
        delay_ns: u64,
        period_ns: u64,
    },
}

/// The PIT.
pub(crate) struct Pit {
    pub(crate) channels: [kvm_pit_channel_state; 3],
    pub(crate) flags: u32,
    /// Counter 0's timer: when it was armed (ns), its period (0: not counting), and
    /// whether it repeats.
    armed_ns: u64,
    period_ns: u64,
    periodic: bool,
}

impl Pit {
    /// A PIT after KVM's `kvm_pit_reset`: every counter in no mode (0xff) with the
    /// largest count, gates 0 and 1 high.
    pub(crate) fn new(now_ns: u64) -> Self {
        let mut p = Self {
            channels: [kvm_pit_channel_state::default(); 3],
            flags: 0,
            armed_ns: now_ns,
            period_ns: 0,
            periodic: false,
        };
        for (i, c) in p.channels.iter_mut().enumerate() {
            c.mode = 0xff;
            c.gate = u8::from(i != 2);
        }
        for i in 0..3 {
            p.load_count(i, 0, now_ns);
        }
        p
    }

    fn ch(&mut self, i: usize) -> Option<&mut kvm_pit_channel_state> {
        self.channels.get_mut(i)
    }

    /// Nanoseconds counted since the counter was loaded (counter 0: since its timer's
    /// last period began).
    fn elapsed(&self, i: usize, now_ns: u64) -> u64 {
        if i == 0 {
            if self.period_ns == 0 {
                return 0;
            }
            let since = now_ns.saturating_sub(self.armed_ns);
            return if self.periodic {
                since % self.period_ns
            } else {
                since
            };
        }
        let load = self.channels.get(i).map_or(0, |c| c.count_load_time as u64);
        now_ns.saturating_sub(load)
    }

    /// Input clock ticks since the load.
    fn ticks(&self, i: usize, now_ns: u64) -> u64 {
        mul_div(self.elapsed(i, now_ns), FREQ, NSEC_PER_SEC)
    }

    /// The current count (KVM's `pit_get_count`).
    fn count_now(&self, i: usize, now_ns: u64) -> u32 {
        let Some(c) = self.channels.get(i) else {
            return 0;
        };
        let d = self.ticks(i, now_ns);
        let count = u64::from(c.count);
        let v = match c.mode {
            0 | 1 | 4 | 5 => count.wrapping_sub(d) & 0xffff,
            3 => count.wrapping_sub(d.wrapping_mul(2).checked_rem(count).unwrap_or(0)),
            _ => count.wrapping_sub(d.checked_rem(count).unwrap_or(0)),
        };
        v as u32
    }

    /// The counter's OUT pin (KVM's `pit_get_out`).
    fn out(&self, i: usize, now_ns: u64) -> bool {
        let Some(c) = self.channels.get(i) else {
            return false;
        };
        let d = self.ticks(i, now_ns);
        let count = u64::from(c.count);
        let rem = |x: u64| x.checked_rem(count).unwrap_or(0);
        match c.mode {
            1 => d < count,
            2 => rem(d) == 0 && d != 0,
            3 => rem(d) < (count + 1) >> 1,
            4 | 5 => d == count,
            _ => d >= count,
        }
    }

    /// Loads a new count (0 means 0x10000); counter 0 rearms its timer by mode
    /// (KVM's `pit_load_count`).
    fn load_count(&mut self, i: usize, val: u32, now_ns: u64) -> TimerOp {
        let val = if val == 0 { 0x10000 } else { val };
        let Some(c) = self.ch(i) else {
            return TimerOp::Keep;
        };
        c.count = val;
        if i != 0 {
            c.count_load_time = now_ns as i64;
            return TimerOp::Keep;
        }
        match c.mode {
            0 | 1 | 4 => self.arm(val, false, now_ns),
            2 | 3 => self.arm(val, true, now_ns),
            _ => {
                self.period_ns = 0;
                TimerOp::Stop
            }
        }
    }

    /// KVM's `create_pit_timer`: with the HPET in legacy mode counter 0 drives nothing.
    fn arm(&mut self, val: u32, periodic: bool, now_ns: u64) -> TimerOp {
        if self.flags & KVM_PIT_FLAGS_HPET_LEGACY != 0 {
            return TimerOp::Keep;
        }
        let interval = mul_div(u64::from(val), NSEC_PER_SEC, FREQ);
        self.period_ns = if periodic {
            interval.max(MIN_PERIOD_NS)
        } else {
            interval
        };
        self.periodic = periodic;
        self.armed_ns = now_ns;
        TimerOp::Start {
            delay_ns: interval,
            period_ns: if periodic { self.period_ns } else { 0 },
        }
    }

    fn latch_count(&mut self, i: usize, now_ns: u64) {
        let v = self.count_now(i, now_ns);
        if let Some(c) = self.ch(i) {
            if c.count_latched == 0 {
                c.latched_count = v as u16;
                c.count_latched = c.rw_mode;
            }
        }
    }

    fn latch_status(&mut self, i: usize, now_ns: u64) {
        let out = u8::from(self.out(i, now_ns));
        if let Some(c) = self.ch(i) {
            if c.status_latched == 0 {
                c.status = out << 7 | c.rw_mode << 4 | c.mode << 1 | c.bcd;
                c.status_latched = 1;
            }
        }
    }

    /// Whether this device claims an access of `size` bytes at I/O port `port`: within
    /// 0x40-0x43, or (`speaker`) at 0x61.
    pub(crate) fn claims(port: u16, size: u8, speaker: bool) -> bool {
        let end = u32::from(port) + u32::from(size);
        ((0x40..=0x43).contains(&port) && end <= 0x44) || (speaker && port == 0x61)
    }

    /// An OUT to a claimed port: the low byte counts, as in KVM.
    pub(crate) fn io_write(&mut self, port: u16, val: u32, now_ns: u64) -> TimerOp {
        let val = val as u8;
        if port == 0x61 {
            if val & 2 != 0 {
                self.flags |= KVM_PIT_FLAGS_SPEAKER_DATA_ON;
            } else {
                self.flags &= !KVM_PIT_FLAGS_SPEAKER_DATA_ON;
            }
            self.set_gate(2, val & 1, now_ns);
            return TimerOp::Keep;
        }
        let i = usize::from(port & 3);
        if i == 3 {
            let sel = usize::from(val >> 6);
            if sel == 3 {
                // Read-back: latch the count and/or status of the selected counters.
                for ch in 0..3 {
                    if val & (2 << ch) != 0 {
                        if val & 0x20 == 0 {
                            self.latch_count(ch, now_ns);
                        }
                        if val & 0x10 == 0 {
                            self.latch_status(ch, now_ns);
                        }
                    }
                }
                return TimerOp::Keep;
            }
            let access = (val >> 4) & 3;
            if access == 0 {
                self.latch_count(sel, now_ns);
                return TimerOp::Keep;
            }
            if let Some(c) = self.ch(sel) {
                c.rw_mode = access;
                c.read_state = access;
                c.write_state = access;
                c.mode = (val >> 1) & 7;
                if c.mode > 5 {
                    c.mode -= 4;
                }
                c.bcd = val & 1;
            }
            return TimerOp::Keep;
        }
        let Some(c) = self.ch(i) else {
            return TimerOp::Keep;
        };
        match c.write_state {
            RW_MSB => self.load_count(i, u32::from(val) << 8, now_ns),
            RW_WORD0 => {
                c.write_latch = val;
                c.write_state = RW_WORD1;
                TimerOp::Keep
            }
            RW_WORD1 => {
                let v = u32::from(c.write_latch) | u32::from(val) << 8;
                c.write_state = RW_WORD0;
                self.load_count(i, v, now_ns)
            }
            _ => self.load_count(i, u32::from(val), now_ns),
        }
    }

    fn set_gate(&mut self, i: usize, val: u8, now_ns: u64) {
        if let Some(c) = self.ch(i) {
            // Modes 1, 2, 3 and 5 restart counting on a rising edge.
            if matches!(c.mode, 1 | 2 | 3 | 5) && c.gate < val {
                c.count_load_time = now_ns as i64;
            }
            c.gate = val;
        }
    }

    /// An IN from a claimed port: the byte (KVM returns 0 from the control port).
    pub(crate) fn io_read(&mut self, port: u16, now_ns: u64) -> u8 {
        if port == 0x61 {
            let refresh = (now_ns >> 14) & 1;
            let data_on = self.flags & KVM_PIT_FLAGS_SPEAKER_DATA_ON != 0;
            let gate = self.channels.get(2).map_or(0, |c| c.gate);
            return (u8::from(data_on) << 1)
                | gate
                | u8::from(self.out(2, now_ns)) << 5
                | (refresh as u8) << 4;
        }
        let i = usize::from(port & 3);
        if i == 3 {
            return 0;
        }
        let now_count = self.count_now(i, now_ns);
        let Some(c) = self.ch(i) else {
            return 0;
        };
        if c.status_latched != 0 {
            c.status_latched = 0;
            return c.status;
        }
        if c.count_latched != 0 {
            let v = c.latched_count;
            return match c.count_latched {
                RW_MSB => {
                    c.count_latched = 0;
                    (v >> 8) as u8
                }
                RW_WORD0 => {
                    c.count_latched = RW_MSB;
                    v as u8
                }
                _ => {
                    c.count_latched = 0;
                    v as u8
                }
            };
        }
        match c.read_state {
            RW_MSB => (now_count >> 8) as u8,
            RW_WORD0 => {
                c.read_state = RW_WORD1;
                now_count as u8
            }
            RW_WORD1 => {
                c.read_state = RW_WORD0;
                (now_count >> 8) as u8
            }
            _ => now_count as u8,
        }
    }

    /// KVM_SET_PIT/KVM_SET_PIT2: the channels (and flags) as given, then every count
    /// loaded again (KVM's `kvm_vm_ioctl_set_pit2`). Returns counter 0's timer change.
    pub(crate) fn load(
        &mut self,
        channels: &[kvm_pit_channel_state; 3],
        flags: Option<u32>,
        now_ns: u64,
    ) -> TimerOp {
        let mut hpet_start = false;
        if let Some(f) = flags {
            hpet_start =
                self.flags & KVM_PIT_FLAGS_HPET_LEGACY == 0 && f & KVM_PIT_FLAGS_HPET_LEGACY != 0;
            self.flags = f;
        }
        self.channels = *channels;
        let mut op = TimerOp::Keep;
        for (i, c) in channels.iter().enumerate() {
            let r = if i == 0 && hpet_start {
                // The HPET takes over: counter 0's timer stops, its mode is kept.
                let mode = c.mode;
                if let Some(c0) = self.ch(0) {
                    c0.mode = 0xff;
                }
                let r = self.load_count(0, c.count, now_ns);
                if let Some(c0) = self.ch(0) {
                    c0.mode = mode;
                }
                r
            } else {
                self.load_count(i, c.count, now_ns)
            };
            if i == 0 {
                op = r;
            }
        }
        op
    }
}

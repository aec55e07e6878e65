// SPDX-License-Identifier: GPL-2.0

//! The in-kernel pair of 8259A interrupt controllers (KVM's `i8259.c`): the master at
//! ports 0x20-0x21 with the slave cascaded on its pin 2 at 0xa0-0xa1, and the edge/level
//! control registers at 0x4d0-0x4d1.
//!
//! Each chip's state is kept in the `kvm_pic_state` layout, so KVM_GET/SET_IRQCHIP copy
//! it as KVM does; every use of a field masks it to the bits the chip has, so any value
//! userspace loads is harmless.

use crate::uapi::kvm_pic_state;

/// Pins on both chips: GSIs 0-7 on the master, 8-15 on the slave.
pub(crate) const PINS: u32 = 16;

/// Interrupt sources that can hold a line up (KVM's irq source ids): userspace's
/// KVM_IRQ_LINE and irqfds, the in-kernel PIT, and resampling irqfds (which hold a line
/// up until the guest acknowledges it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    User = 0,
    Pit = 1,
    Resample = 2,
}

/// The line level seen by the chip: the OR of what each source asserts on it.
pub(crate) fn line_state(states: &mut u8, source: Source, level: bool) -> bool {
    let bit = 1u8 << (source as u8);
    if level {
        *states |= bit;
    } else {
        *states &= !bit;
    }
    *states != 0
}

fn bit(irq: u8) -> u8 {
    1u8 << (irq & 7)
}

/// Sets `irq`'s input level on one chip; an edge (or a level line) latches into IRR.
/// Returns -1 when the pin is masked, 0 when the request was already latched
/// (coalesced), 1 otherwise (KVM's `pic_set_irq1`).
fn set_irq1(s: &mut kvm_pic_state, irq: u8, level: bool) -> i32 {
    let mask = bit(irq);
    let mut ret = 1;
    if s.elcr & mask != 0 {
        if level {
            ret = i32::from(s.irr & mask == 0);
            s.irr |= mask;
            s.last_irr |= mask;
        } else {
            s.irr &= !mask;
            s.last_irr &= !mask;
        }
    } else if level {
        if s.last_irr & mask == 0 {
            ret = i32::from(s.irr & mask == 0);
            s.irr |= mask;
        }
        s.last_irr |= mask;
    } else {
        s.last_irr &= !mask;
    }
    if s.imr & mask != 0 {
        -1
    } else {
        ret
    }
}

/// The priority (0 highest) of the best request in `mask` under the chip's rotation;
/// 8 when `mask` is empty.
fn priority(s: &kvm_pic_state, mask: u8) -> u8 {
    (0..8u8)
        .find(|p| mask & bit(p.wrapping_add(s.priority_add)) != 0)
        .unwrap_or(8)
}

/// The pin the chip would raise to its output now, if any (KVM's `pic_get_irq`).
fn pending(s: &kvm_pic_state, master: bool) -> Option<u8> {
    let p = priority(s, s.irr & !s.imr);
    if p == 8 {
        return None;
    }
    // In special fully nested mode the master ignores the cascade's in-service bit.
    let isr = if s.special_fully_nested_mode != 0 && master {
        s.isr & !bit(2)
    } else {
        s.isr
    };
    (p < priority(s, isr)).then(|| p.wrapping_add(s.priority_add) & 7)
}

/// What an operation asks of the VM once the lock is dropped.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Effect {
    /// The output rose: a vCPU that takes ExtINT must look.
    pub(crate) wake: bool,
    /// Pins (0-15) whose interrupt left service (KVM's ack notifiers).
    pub(crate) acked: u16,
    /// Pins (0-15) the guest unmasked (KVM's mask notifiers).
    pub(crate) unmasked: u16,
}

/// Both chips and their output to the CPUs.
pub(crate) struct Pic {
    pub(crate) chips: [kvm_pic_state; 2],
    /// INTR to the local APICs' LINT0.
    pub(crate) output: bool,
    /// Per pin, which sources assert it.
    states: [u8; PINS as usize],
    effect: Effect,
}

impl Pic {
    /// Both chips at power-on (KVM's `kvm_pic_init`): only the ELCR masks are set.
    pub(crate) fn new() -> Self {
        let master = kvm_pic_state {
            elcr_mask: 0xf8,
            ..Default::default()
        };
        let slave = kvm_pic_state {
            elcr_mask: 0xde,
            ..Default::default()
        };
        Self {
            chips: [master, slave],
            output: false,
            states: [0; PINS as usize],
            effect: Effect::default(),
        }
    }

    /// Takes what the operations since the last call ask of the VM.
    pub(crate) fn take_effect(&mut self) -> Effect {
        core::mem::take(&mut self.effect)
    }

    fn chip(&mut self, slave: bool) -> &mut kvm_pic_state {
        let [m, s] = &mut self.chips;
        if slave {
            s
        } else {
            m
        }
    }

    /// Recomputes the output after anything that may change it (KVM's `pic_update_irq`).
    pub(crate) fn update(&mut self) {
        let [m, s] = &mut self.chips;
        if pending(s, false).is_some() {
            // The slave's request pulses the master's cascade pin.
            set_irq1(m, 2, true);
            set_irq1(m, 2, false);
        }
        let level = pending(m, true).is_some();
        if level && !self.output {
            self.effect.wake = true;
        }
        self.output = level;
    }

    /// A device (or userspace) drives pin `pin` (0-15). KVM's `kvm_pic_set_irq` result.
    pub(crate) fn set_irq(&mut self, pin: u32, source: Source, level: bool) -> i32 {
        let Some(states) = self.states.get_mut(pin as usize) else {
            return -1;
        };
        let level = line_state(states, source, level);
        let ret = set_irq1(self.chip(pin >= 8), pin as u8 & 7, level);
        self.update();
        ret
    }

    /// The CPU's interrupt acknowledge cycle: the vector to deliver (KVM's
    /// `kvm_pic_read_irq`), a spurious IRQ 7 when nothing is pending any more.
    pub(crate) fn ack(&mut self) -> u8 {
        self.output = false;
        let vector = match pending(self.chip(false), true) {
            Some(irq) => {
                self.intack(false, irq);
                if irq == 2 {
                    let irq2 = match pending(self.chip(true), false) {
                        Some(irq2) => {
                            self.intack(true, irq2);
                            irq2
                        }
                        None => 7,
                    };
                    self.chip(true).irq_base.wrapping_add(irq2)
                } else {
                    self.chip(false).irq_base.wrapping_add(irq)
                }
            }
            None => self.chip(false).irq_base.wrapping_add(7),
        };
        self.update();
        vector
    }

    /// `irq` leaves the in-service register; its acknowledgement is reported.
    fn clear_isr(&mut self, slave: bool, irq: u8) {
        self.chip(slave).isr &= !bit(irq);
        self.effect.acked |= u16::from(bit(irq)) << if slave { 8 } else { 0 };
    }

    fn intack(&mut self, slave: bool, irq: u8) {
        let s = self.chip(slave);
        s.isr |= bit(irq);
        // A level-triggered request stays in IRR until its line drops.
        if s.elcr & bit(irq) == 0 {
            s.irr &= !bit(irq);
        }
        if s.auto_eoi != 0 {
            if s.rotate_on_auto_eoi != 0 {
                s.priority_add = irq.wrapping_add(1) & 7;
            }
            self.clear_isr(slave, irq);
        }
    }

    /// ICW1: the chip restarts its initialization sequence (KVM's `kvm_pic_reset`).
    /// `accepting`: some vCPU takes ExtINT now.
    fn reset(&mut self, slave: bool, accepting: bool) {
        let s = self.chip(slave);
        let edge_irr = s.irr & !s.elcr;
        s.last_irr = 0;
        s.irr &= s.elcr;
        s.imr = 0;
        s.priority_add = 0;
        s.special_mask = 0;
        s.read_reg_select = 0;
        if s.init4 == 0 {
            s.special_fully_nested_mode = 0;
            s.auto_eoi = 0;
        }
        s.init_state = 1;
        if accepting {
            // Requests that were latched as edges leave the in-service register too.
            for irq in (0..8u8).filter(|&i| edge_irr & bit(i) != 0) {
                self.clear_isr(slave, irq);
            }
        }
    }

    /// A byte written to port 0x20/0x21 (`slave` false) or 0xa0/0xa1.
    fn write(&mut self, slave: bool, data_port: bool, val: u8, accepting: bool) {
        if !data_port {
            if val & 0x10 != 0 {
                self.chip(slave).init4 = val & 1;
                self.reset(slave, accepting);
            } else if val & 0x08 != 0 {
                let s = self.chip(slave);
                if val & 0x04 != 0 {
                    s.poll = 1;
                }
                if val & 0x02 != 0 {
                    s.read_reg_select = val & 1;
                }
                if val & 0x40 != 0 {
                    s.special_mask = (val >> 5) & 1;
                }
            } else {
                self.ocw2(slave, val);
            }
            return;
        }
        let s = self.chip(slave);
        match s.init_state {
            0 => {
                let unmasked = s.imr & !val;
                s.imr = val;
                self.effect.unmasked |= u16::from(unmasked) << if slave { 8 } else { 0 };
                self.update();
            }
            1 => {
                s.irq_base = val & 0xf8;
                s.init_state = 2;
            }
            2 => s.init_state = if s.init4 != 0 { 3 } else { 0 },
            3 => {
                s.special_fully_nested_mode = (val >> 4) & 1;
                s.auto_eoi = (val >> 1) & 1;
                s.init_state = 0;
            }
            // Only SET_IRQCHIP can load another value; the chip then ignores the byte.
            _ => {}
        }
    }

    /// OCW2: end of interrupt and the rotation commands.
    fn ocw2(&mut self, slave: bool, val: u8) {
        let s = self.chip(slave);
        match val >> 5 {
            0 | 4 => s.rotate_on_auto_eoi = val >> 7,
            // Non-specific EOI, optionally rotating.
            1 | 5 => {
                let p = priority(s, s.isr);
                if p != 8 {
                    let irq = p.wrapping_add(s.priority_add) & 7;
                    if val >> 5 == 5 {
                        s.priority_add = irq.wrapping_add(1) & 7;
                    }
                    self.clear_isr(slave, irq);
                    self.update();
                }
            }
            // Specific EOI.
            3 => {
                self.clear_isr(slave, val & 7);
                self.update();
            }
            // Set priority.
            6 => {
                s.priority_add = val.wrapping_add(1) & 7;
                self.update();
            }
            // Rotate on specific EOI.
            7 => {
                s.priority_add = (val & 7).wrapping_add(1) & 7;
                self.clear_isr(slave, val & 7);
                self.update();
            }
            _ => {}
        }
    }

    /// Poll mode: the read is the acknowledge (KVM's `pic_poll_read`).
    fn poll_read(&mut self, slave: bool) -> u8 {
        let Some(irq) = pending(self.chip(slave), !slave) else {
            self.update();
            return 0x07;
        };
        if slave {
            let m = self.chip(false);
            m.isr &= !bit(2);
            m.irr &= !bit(2);
        }
        self.chip(slave).irr &= !bit(irq);
        self.clear_isr(slave, irq);
        if slave || irq != 2 {
            self.update();
        }
        irq | 0x80
    }

    /// Whether this device claims an access of `size` bytes at I/O port `port`: it
    /// must lie within one of the two-port ranges at 0x20, 0xa0 and 0x4d0 (as KVM's bus).
    pub(crate) fn claims(port: u16, size: u8) -> bool {
        let end = u32::from(port) + u32::from(size);
        [0x20u32, 0xa0, 0x4d0]
            .iter()
            .any(|&b| u32::from(port) >= b && end <= b + 2)
    }

    /// An OUT to a port it claims. Wider accesses are dropped, as in KVM.
    pub(crate) fn io_write(&mut self, port: u16, size: u8, val: u8, accepting: bool) {
        if size != 1 {
            return;
        }
        match port {
            0x20 | 0x21 => self.write(false, port & 1 != 0, val, accepting),
            0xa0 | 0xa1 => self.write(true, port & 1 != 0, val, accepting),
            0x4d0 | 0x4d1 => {
                let s = self.chip(port & 1 != 0);
                s.elcr = val & s.elcr_mask;
            }
            _ => {}
        }
    }

    /// An IN from a port it claims; wider accesses read 0, as in KVM.
    pub(crate) fn io_read(&mut self, port: u16, size: u8) -> u8 {
        if size != 1 {
            return 0;
        }
        match port {
            0x20 | 0x21 | 0xa0 | 0xa1 => {
                let slave = port >= 0xa0;
                let s = self.chip(slave);
                if s.poll != 0 {
                    s.poll = 0;
                    return self.poll_read(slave);
                }
                if port & 1 != 0 {
                    s.imr
                } else if s.read_reg_select != 0 {
                    s.isr
                } else {
                    s.irr
                }
            }
            0x4d0 | 0x4d1 => self.chip(port & 1 != 0).elcr,
            _ => 0,
        }
    }
}

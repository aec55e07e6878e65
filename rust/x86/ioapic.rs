// SPDX-License-Identifier: GPL-2.0

//! The in-kernel I/O APIC (KVM's `ioapic.c`): 24 pins, a redirection entry each, MMIO at
//! 0xfec00000 (IOREGSEL at offset 0, IOWIN at 0x10), delivering to the local APICs as
//! interrupt messages. Level-triggered pins keep Remote IRR set until the destination
//! EOIs the vector.

use super::lapic::{shorthand, IrqRequest};
use super::pic::{line_state, Source};
use crate::sys::bitfield::bitfield;

/// Pins (KVM_IOAPIC_NUM_PINS).
pub(crate) const PINS: u32 = 24;
/// KVM's default and reset base address; the MMIO window is 256 bytes.
pub(crate) const DEFAULT_BASE: u64 = 0xfec0_0000;
pub(crate) const MMIO_LEN: u64 = 0x100;
/// The version register: 24 entries (max index 23), version 0x11.
const VERSION: u32 = (PINS - 1) << 16 | 0x11;
/// Back-to-back re-deliveries of a level interrupt that is still asserted at its EOI,
/// after which the next one waits (KVM's IOAPIC_SUCCESSIVE_IRQ_MAX_COUNT).
const SUCCESSIVE_IRQ_MAX: u32 = 10_000;
/// How long it waits then (KVM: HZ / 100).
pub(crate) const STORM_DELAY_NS: u64 = 10_000_000;
/// The RTC's pin (KVM's RTC_GSI), whose EOIs are tracked.
const RTC_PIN: u32 = 8;
/// vCPU ids the RTC tracking can name (KVM_MAX_VCPU_IDS).
const RTC_IDS: usize = 4096;

bitfield! {
    /// A redirection table entry.
    pub(crate) struct Redir(u64) {
        fields { vector: 0..=7, delivery: 8..=10, dest_id: 56..=63 }
        flags { logical: 11, remote_irr: 14, level: 15, masked: 16 }
    }
}

const REMOTE_IRR: u64 = 1 << 14;
const MASKED: u64 = 1 << 16;

impl Redir {
    fn request(self) -> IrqRequest {
        IrqRequest {
            vector: self.vector() as u8,
            delivery: self.delivery() as u8,
            logical: self.logical(),
            assert: true,
            level_triggered: self.level(),
            shorthand: shorthand::NONE,
            dest: self.dest_id() as u32,
            source: None,
        }
    }
}

/// KVM's RTC EOI tracking: the RTC's interrupt is edge-triggered, but a VMM that drives
/// it with `KVM_IRQ_LINE_STATUS` wants to know whether the guest took the last one
/// (Windows keeps time by counting RTC interrupts, and QEMU's `driftfix=slew` makes up
/// for coalesced ones). While some vCPU that got the RTC's vector through such a call
/// has not EOI'd it, the next one is reported coalesced and not sent.
///
/// # Invariants
///
/// `pending` is the number of bits set in `map`.
struct RtcStatus {
    pending: u32,
    /// The vector the vCPUs in `map` got (one, since a delivery is tracked only when
    /// none is pending).
    vector: u8,
    /// One bit per vCPU id.
    map: [u64; RTC_IDS / 64],
}

impl RtcStatus {
    const fn new() -> Self {
        Self {
            pending: 0,
            vector: 0,
            map: [0; RTC_IDS / 64],
        }
    }

    fn add(&mut self, vcpu_id: u32) {
        let (w, b) = ((vcpu_id / 64) as usize, vcpu_id % 64);
        if let Some(word) = self.map.get_mut(w) {
            if *word & 1 << b == 0 {
                *word |= 1 << b;
                self.pending += 1;
            }
        }
    }

    /// vCPU `vcpu_id` EOI'd `vector`.
    fn eoi(&mut self, vcpu_id: u32, vector: u8) {
        let (w, b) = ((vcpu_id / 64) as usize, vcpu_id % 64);
        if vector != self.vector {
            return;
        }
        if let Some(word) = self.map.get_mut(w) {
            if *word & 1 << b != 0 {
                *word &= !(1 << b);
                self.pending = self.pending.saturating_sub(1);
            }
        }
    }
}

/// What an operation asks of the VM once the lock is dropped.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Effect {
    /// Pins the guest unmasked (KVM's mask notifiers).
    pub(crate) unmasked: u32,
}

/// The I/O APIC. The first fields are those of `kvm_ioapic_state`.
pub(crate) struct Ioapic {
    pub(crate) base: u64,
    pub(crate) ioregsel: u32,
    pub(crate) id: u32,
    pub(crate) irr: u32,
    pub(crate) redirtbl: [u64; PINS as usize],
    /// Edge pins delivered since their IRR bit was set (not reported as pending).
    irr_delivered: u32,
    /// Per pin, which sources assert it.
    states: [u8; PINS as usize],
    /// Per pin, re-deliveries at EOI in a row.
    eoi_count: [u32; PINS as usize],
    /// Pins whose re-delivery waits for the storm delay, and when it ends (ns).
    pub(crate) deferred: u32,
    pub(crate) deferred_until_ns: u64,
    effect: Effect,
    rtc: RtcStatus,
}

/// Delivers an interrupt message to the local APICs; returns how many took it, and
/// tells `took` the id of each vCPU that did.
pub(crate) trait Deliver {
    fn deliver(&mut self, irq: &IrqRequest, took: &mut dyn FnMut(u32)) -> u32;
}

impl Ioapic {
    /// At reset (KVM's `kvm_ioapic_reset`): every pin masked, at the default base.
    pub(crate) fn new() -> Self {
        Self {
            base: DEFAULT_BASE,
            ioregsel: 0,
            id: 0,
            irr: 0,
            redirtbl: [MASKED; PINS as usize],
            irr_delivered: 0,
            states: [0; PINS as usize],
            eoi_count: [0; PINS as usize],
            deferred: 0,
            deferred_until_ns: 0,
            effect: Effect::default(),
            rtc: RtcStatus::new(),
        }
    }

    /// Takes what the operations since the last call ask of the VM.
    pub(crate) fn take_effect(&mut self) -> Effect {
        core::mem::take(&mut self.effect)
    }

    fn entry(&self, pin: u32) -> Option<Redir> {
        self.redirtbl.get(pin as usize).copied().map(Redir)
    }

    /// Sends pin `pin`'s interrupt unless it is masked or a level interrupt still waits
    /// for its EOI (KVM's `ioapic_service`): -1 then, else how many APICs took it.
    fn service(&mut self, pin: u32, d: &mut dyn Deliver) -> i32 {
        self.service_tracked(pin, false, d)
    }

    /// [`Self::service`]; with `track` (a `KVM_IRQ_LINE_STATUS` on the RTC's pin) the
    /// vCPUs that take the interrupt are recorded until they EOI it.
    fn service_tracked(&mut self, pin: u32, track: bool, d: &mut dyn Deliver) -> i32 {
        let Some(e) = self.entry(pin) else {
            return -1;
        };
        if e.masked() || (e.level() && e.remote_irr()) {
            return -1;
        }
        if !e.level() {
            self.irr_delivered |= 1 << pin;
        }
        let track = track && pin == RTC_PIN;
        if track {
            // Nothing is pending here (the caller reported it coalesced otherwise).
            self.rtc = RtcStatus::new();
            self.rtc.vector = e.vector() as u8;
        }
        let rtc = &mut self.rtc;
        let n = d.deliver(&e.request(), &mut |id| {
            if track {
                rtc.add(id);
            }
        });
        if n != 0 && e.level() {
            if let Some(r) = self.redirtbl.get_mut(pin as usize) {
                *r |= REMOTE_IRR;
            }
        }
        i32::try_from(n).unwrap_or(i32::MAX)
    }

    /// The pin's input after merging `source`'s level; KVM's `ioapic_set_irq` result:
    /// 1 delivered (or deasserted), 0 coalesced or no destination, -1 masked.
    /// `line_status`: the caller is `KVM_IRQ_LINE_STATUS`, whose RTC interrupts are
    /// coalesced while the last one is not EOI'd.
    pub(crate) fn set_irq(
        &mut self,
        pin: u32,
        source: Source,
        level: bool,
        line_status: bool,
        d: &mut dyn Deliver,
    ) -> i32 {
        let Some(e) = self.entry(pin) else {
            return -1;
        };
        let Some(states) = self.states.get_mut(pin as usize) else {
            return -1;
        };
        let mask = 1u32 << pin;
        if !line_state(states, source, level) {
            self.irr &= !mask;
            return 1;
        }
        if pin == RTC_PIN && line_status && self.rtc.pending != 0 {
            return 0;
        }
        let old = self.irr;
        self.irr |= mask;
        if !e.level() {
            self.irr_delivered &= !mask;
            if old == self.irr {
                return 0;
            }
        }
        self.service_tracked(pin, line_status, d)
    }

    /// vCPU `vcpu_id`'s local APIC EOI'd `vector`: the RTC tracking hears of it.
    pub(crate) fn eoi_from(&mut self, vcpu_id: u32, vector: u8) {
        self.rtc.eoi(vcpu_id, vector);
    }

    fn read_indirect(&self) -> u32 {
        match self.ioregsel {
            0x00 | 0x02 => (self.id & 0xf) << 24,
            0x01 => VERSION,
            sel => {
                let v = sel
                    .checked_sub(0x10)
                    .and_then(|i| self.entry(i >> 1))
                    .map_or(u64::MAX, |e| e.0);
                if sel & 1 != 0 {
                    (v >> 32) as u32
                } else {
                    v as u32
                }
            }
        }
    }

    fn write_indirect(&mut self, val: u32, d: &mut dyn Deliver) {
        match self.ioregsel {
            0x00 => self.id = (val >> 24) & 0xf,
            0x01 | 0x02 => {}
            sel => {
                let Some(pin) = sel.checked_sub(0x10).map(|i| i >> 1).filter(|&p| p < PINS) else {
                    return;
                };
                let Some(r) = self.redirtbl.get_mut(pin as usize) else {
                    return;
                };
                // Remote IRR and delivery status are read-only.
                let keep = *r & (REMOTE_IRR | 1 << 12);
                let mut n = if sel & 1 != 0 {
                    *r & 0xffff_ffff | u64::from(val) << 32
                } else {
                    *r & !0xffff_ffff | u64::from(val)
                };
                n = n & !(REMOTE_IRR | 1 << 12) | keep;
                if *r & MASKED != 0 && n & MASKED == 0 {
                    self.effect.unmasked |= 1 << pin;
                }
                // An edge pin has no EOI to wait for: switching to edge clears Remote IRR
                // (which lets a guest recover a stuck line, as with KVM).
                if n & 1 << 15 == 0 {
                    n &= !REMOTE_IRR;
                }
                *r = n;
                let e = Redir(n);
                if e.level() && self.irr & 1 << pin != 0 && !e.masked() && !e.remote_irr() {
                    self.service(pin, d);
                }
            }
        }
    }

    /// Whether a guest access at `gpa` falls in the window.
    pub(crate) fn claims(&self, gpa: u64) -> bool {
        gpa >= self.base && gpa - self.base < MMIO_LEN
    }

    /// A guest read of `len` bytes at `gpa` (claimed); reads outside the two registers
    /// return 0.
    pub(crate) fn mmio_read(&self, gpa: u64) -> u64 {
        let v = match gpa & 0xff {
            0x00 => self.ioregsel,
            0x10 => self.read_indirect(),
            _ => 0,
        };
        u64::from(v)
    }

    pub(crate) fn mmio_write(&mut self, gpa: u64, len: u8, val: u64, d: &mut dyn Deliver) {
        let data = match len {
            1 => u32::from(val as u8),
            2 => u32::from(val as u16),
            4 | 8 => val as u32,
            _ => return,
        };
        match gpa & 0xff {
            0x00 => self.ioregsel = data & 0xff,
            0x10 => self.write_indirect(data, d),
            _ => {}
        }
    }

    /// A local APIC EOI'd `vector` (KVM's `kvm_ioapic_update_eoi`), first step: the
    /// pins with that vector, reported acked. The caller runs the ack notifiers (which
    /// may lower a line) before the second step.
    pub(crate) fn eoi_pins(&mut self, vector: u8) -> u32 {
        let mut pins = 0u32;
        for pin in 0..PINS {
            if self
                .entry(pin)
                .is_some_and(|e| e.vector() == u64::from(vector))
            {
                pins |= 1 << pin;
            }
        }
        pins
    }

    /// Second step, for an EOI that was level-triggered at the APIC: each pin leaves
    /// Remote IRR and is sent again if its line is still asserted, unless that has gone
    /// on too long in a row.
    pub(crate) fn eoi_level(&mut self, pins: u32, now_ns: u64, d: &mut dyn Deliver) {
        for pin in (0..PINS).filter(|p| pins & 1 << p != 0) {
            let Some(e) = self.entry(pin) else { continue };
            if let Some(r) = self.redirtbl.get_mut(pin as usize) {
                *r &= !REMOTE_IRR;
            }
            let Some(count) = self.eoi_count.get_mut(pin as usize) else {
                continue;
            };
            if e.masked() || self.irr & 1 << pin == 0 {
                *count = 0;
                continue;
            }
            *count += 1;
            if *count >= SUCCESSIVE_IRQ_MAX {
                *count = 0;
                self.deferred |= 1 << pin;
                self.deferred_until_ns = now_ns.saturating_add(STORM_DELAY_NS);
            } else {
                self.service(pin, d);
            }
        }
    }

    /// Sends the level interrupts held back by the storm guard once its delay is over.
    pub(crate) fn run_deferred(&mut self, now_ns: u64, d: &mut dyn Deliver) {
        if self.deferred == 0 || now_ns < self.deferred_until_ns {
            return;
        }
        self.deferred = 0;
        for pin in 0..PINS {
            let Some(e) = self.entry(pin) else { continue };
            if e.level() && self.irr & 1 << pin != 0 && !e.remote_irr() {
                self.service(pin, d);
            }
        }
    }

    /// KVM_GET_IRQCHIP: IRR without the edges already delivered.
    pub(crate) fn reported_irr(&self) -> u32 {
        self.irr & !self.irr_delivered
    }

    /// KVM_SET_IRQCHIP (KVM's `kvm_set_ioapic`): the registers are taken as given, then
    /// the IRR bits are raised again as inputs.
    pub(crate) fn load(
        &mut self,
        base: u64,
        ioregsel: u32,
        id: u32,
        irr: u32,
        redir: &[u64; PINS as usize],
        d: &mut dyn Deliver,
    ) {
        self.base = base;
        self.ioregsel = ioregsel;
        self.id = id;
        self.redirtbl = *redir;
        self.irr = 0;
        self.irr_delivered = 0;
        // KVM then rebuilds the RTC tracking from the local APICs' IRR and ISR; rkvm
        // tracks what this load delivers and forgets EOIs pending from before.
        self.rtc = RtcStatus::new();
        for pin in 0..PINS {
            if irr & 1 << pin != 0 {
                let mask = 1u32 << pin;
                let Some(e) = self.entry(pin) else { continue };
                let old = self.irr;
                self.irr |= mask;
                if !e.level() {
                    self.irr_delivered &= !mask;
                    if old == self.irr {
                        continue;
                    }
                }
                self.service_tracked(pin, true, d);
            }
        }
    }
}

// SPDX-License-Identifier: GPL-2.0

//! The in-kernel local APIC of a vCPU (what `KVM_CAP_SPLIT_IRQCHIP` puts in the kernel;
//! the PIC and I/O APIC stay in userspace).
//!
//! The register file has the layout of `struct kvm_lapic_state` (1 KiB, one 32-bit
//! register every 16 bytes), reached by the guest through the xAPIC MMIO page or the
//! x2APIC MSRs. Priorities follow the SDM: PPR from TPR and the highest in-service
//! vector, an interrupt is deliverable when its class is above PPR's. The timer runs in
//! one-shot, periodic or TSC-deadline mode against the monotonic clock (the guest TSC for
//! TSC-deadline); it is checked on every entry and its next expiry bounds the VMX
//! preemption timer and the sleep of a halted vCPU.
//!
//! Only the vCPU's own task touches [`Lapic`] (under the vCPU mutex). Other vCPUs and VM
//! ioctls post interrupts to its [`Mailbox`] (atomics), which the owner folds in before
//! every entry.
//!
//! `timer` holds the APIC timer, `access` the MMIO, MSR and state-ioctl views of the
//! registers, `window` what a backend may finish inside its run window.

use super::tsc::mul_div;
use crate::sys::wait::WaitQueue;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use kernel::prelude::*;

mod access;
mod timer;
pub(crate) mod window;

/// Register offsets.
pub(crate) mod reg {
    pub(crate) const ID: u32 = 0x20;
    pub(crate) const LVR: u32 = 0x30;
    pub(crate) const TPR: u32 = 0x80;
    pub(crate) const APR: u32 = 0x90;
    pub(crate) const PPR: u32 = 0xa0;
    pub(crate) const EOI: u32 = 0xb0;
    pub(crate) const LDR: u32 = 0xd0;
    pub(crate) const DFR: u32 = 0xe0;
    pub(crate) const SPIV: u32 = 0xf0;
    pub(crate) const ISR: u32 = 0x100;
    pub(crate) const TMR: u32 = 0x180;
    pub(crate) const IRR: u32 = 0x200;
    pub(crate) const ESR: u32 = 0x280;
    pub(crate) const LVTCMCI: u32 = 0x2f0;
    pub(crate) const ICR: u32 = 0x300;
    pub(crate) const ICR2: u32 = 0x310;
    pub(crate) const LVTT: u32 = 0x320;
    pub(crate) const LVTTHMR: u32 = 0x330;
    pub(crate) const LVTPC: u32 = 0x340;
    pub(crate) const LVT0: u32 = 0x350;
    pub(crate) const LVT1: u32 = 0x360;
    pub(crate) const LVTERR: u32 = 0x370;
    pub(crate) const TMICT: u32 = 0x380;
    pub(crate) const TMCCT: u32 = 0x390;
    pub(crate) const TDCR: u32 = 0x3e0;
    pub(crate) const SELF_IPI: u32 = 0x3f0;
}

/// Delivery modes (bits 10:8 of the ICR, an LVT entry or MSI data).
pub(crate) mod dm {
    pub(crate) const FIXED: u8 = 0;
    pub(crate) const LOWEST: u8 = 1;
    pub(crate) const NMI: u8 = 4;
    pub(crate) const INIT: u8 = 5;
    pub(crate) const STARTUP: u8 = 6;
    pub(crate) const EXTINT: u8 = 7;
}

/// IA32_APIC_BASE bits.
pub(crate) mod base {
    pub(crate) const BSP: u64 = 1 << 8;
    pub(crate) const EXTD: u64 = 1 << 10;
    pub(crate) const EN: u64 = 1 << 11;
    pub(crate) const ADDR: u64 = !0xfff;
    pub(crate) const DEFAULT: u64 = 0xfee0_0000;
}

/// First x2APIC MSR; register `off` is MSR `X2APIC_MSR + off / 16`.
pub(crate) const X2APIC_MSR: u32 = 0x800;
/// IA32_TSC_DEADLINE.
pub(crate) const TSC_DEADLINE_MSR: u32 = 0x6e0;

/// Bytes of the register file (`struct kvm_lapic_state`).
pub(crate) const STATE_SIZE: usize = 1024;

const LVT_MASKED: u32 = 1 << 16;
const LVT_LEVEL: u32 = 1 << 15;
const LVT_MASK: u32 = LVT_MASKED | (1 << 12) | 0xff;
const MODE_MASK: u32 = 0x700;
const LINT_MASK: u32 = LVT_MASK | MODE_MASK | (1 << 13) | (1 << 14) | LVT_LEVEL;
const SPIV_ENABLE: u32 = 1 << 8;
const SPIV_DIRECTED_EOI: u32 = 1 << 12;
const LVR_DIRECTED_EOI: u32 = 1 << 24;
const APIC_VERSION: u32 = 0x14;
/// LVT entries from LVTT to LVTERR; LVTCMCI comes on top when the vCPU's machine-check
/// capabilities include CMCI.
const NR_LVT: u32 = 6;
const TIMER_PERIODIC: u32 = 1 << 17;
const TIMER_TSCDEADLINE: u32 = 2 << 17;
/// KVM's floor for periodic timers (`min_timer_period_us`).
const MIN_PERIOD_NS: u64 = 200_000;
/// KVM's default APIC bus cycle: 1 ns (a 1 GHz bus).
pub(crate) const BUS_CYCLE_NS_DEFAULT: u64 = 1;

/// Whether KVM_CAP_X86_APIC_BUS_CYCLES_NS may set `ns`: not 0, and the longest timer
/// period (TMICT 0xffffffff at divide-by-128) must stay within 64 bits of nanoseconds.
pub(crate) fn bus_cycle_ns_valid(ns: u64) -> bool {
    ns != 0 && (u64::from(u32::MAX) * 128).checked_mul(ns).is_some()
}
const ICR_BUSY: u32 = 1 << 12;
const X2APIC_ICR_RESERVED: u64 = (0xfff << 20) | (3 << 16) | (1 << 13);

/// Destination shorthands (ICR bits 19:18).
pub(crate) mod shorthand {
    pub(crate) const NONE: u8 = 0;
    pub(crate) const SELF: u8 = 1;
    pub(crate) const ALL: u8 = 2;
    pub(crate) const OTHERS: u8 = 3;
}

/// An interrupt message for local APICs: an IPI from the ICR, or an MSI.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct IrqRequest {
    pub(crate) vector: u8,
    pub(crate) delivery: u8,
    pub(crate) logical: bool,
    /// Assert (the ICR's level bit; always set for MSIs).
    pub(crate) assert: bool,
    pub(crate) level_triggered: bool,
    pub(crate) shorthand: u8,
    pub(crate) dest: u32,
    /// The vCPU that sent it (an IPI), for the shorthands.
    pub(crate) source: Option<u32>,
}

impl IrqRequest {
    fn from_icr(lo: u32, hi: u32, x2apic: bool, source: u32) -> Self {
        Self {
            vector: lo as u8,
            delivery: ((lo >> 8) & 7) as u8,
            logical: lo & (1 << 11) != 0,
            assert: lo & (1 << 14) != 0,
            level_triggered: lo & (1 << 15) != 0,
            shorthand: ((lo >> 18) & 3) as u8,
            dest: if x2apic { hi } else { hi >> 24 },
            source: Some(source),
        }
    }

    /// An MSI (address/data), in the xAPIC format KVM uses without KVM_CAP_X2APIC_API.
    pub(crate) fn from_msi(address_lo: u32, data: u32) -> Self {
        let redirect_hint = address_lo & (1 << 3) != 0;
        let delivery = ((data >> 8) & 7) as u8;
        Self {
            vector: data as u8,
            delivery: if redirect_hint { dm::LOWEST } else { delivery },
            logical: address_lo & (1 << 2) != 0,
            assert: true,
            level_triggered: data & (1 << 15) != 0,
            shorthand: shorthand::NONE,
            dest: (address_lo >> 12) & 0xff,
            source: None,
        }
    }

    /// Lowest-priority arbitration applies.
    pub(crate) fn lowest_priority(&self) -> bool {
        self.delivery == dm::LOWEST
    }
}

/// What a vCPU's APIC publishes for senders to match destinations against.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Addressing {
    /// IA32_APIC_BASE.EN.
    pub(crate) hw_enabled: bool,
    /// SPIV's software enable.
    pub(crate) sw_enabled: bool,
    pub(crate) x2apic: bool,
    /// The xAPIC ID (ID register bits 31:24).
    pub(crate) xapic_id: u8,
    pub(crate) ldr: u32,
    /// DFR model bits 31:28 (0xf flat, 0 cluster).
    pub(crate) dfr_model: u8,
    /// The APIC passes the PIC's ExtINT (see `Lapic::accept_pic_intr`).
    pub(crate) pic_intr: bool,
}

impl Addressing {
    fn pack(&self) -> u64 {
        u64::from(self.ldr)
            | u64::from(self.xapic_id) << 32
            | u64::from(self.dfr_model & 0xf) << 40
            | u64::from(self.hw_enabled) << 44
            | u64::from(self.sw_enabled) << 45
            | u64::from(self.x2apic) << 46
            | u64::from(self.pic_intr) << 47
    }

    fn unpack(v: u64) -> Self {
        Self {
            ldr: v as u32,
            xapic_id: (v >> 32) as u8,
            dfr_model: ((v >> 40) & 0xf) as u8,
            hw_enabled: v & (1 << 44) != 0,
            sw_enabled: v & (1 << 45) != 0,
            x2apic: v & (1 << 46) != 0,
            pic_intr: v & (1 << 47) != 0,
        }
    }

    /// Whether the APIC with this addressing and x2APIC ID `id` is a destination of `irq`
    /// (KVM's `kvm_apic_match_dest`).
    /// Whether this APIC is a destination of `irq`. `broadcast_quirk`: KVM's default
    /// (until `KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK`), where a device interrupt sent to
    /// the xAPIC broadcast ID 0xff also reaches APICs in x2APIC mode.
    pub(crate) fn matches(&self, id: u32, irq: &IrqRequest, broadcast_quirk: bool) -> bool {
        let is_self = irq.source == Some(id);
        match irq.shorthand {
            shorthand::SELF => return is_self,
            shorthand::ALL => return true,
            shorthand::OTHERS => return !is_self,
            _ => {}
        }
        // An xAPIC-format broadcast reaches x2APIC targets of device interrupts too.
        let mda = if broadcast_quirk && irq.source.is_none() && irq.dest == 0xff && self.x2apic {
            u32::MAX
        } else {
            irq.dest
        };
        let broadcast = mda == if self.x2apic { u32::MAX } else { 0xff };
        if broadcast {
            return true;
        }
        if !irq.logical {
            if self.x2apic || mda > 0xff {
                return mda == id;
            }
            return mda == u32::from(self.xapic_id);
        }
        if self.x2apic {
            return self.ldr >> 16 == mda >> 16 && self.ldr & mda & 0xffff != 0;
        }
        let logical = self.ldr >> 24;
        match self.dfr_model {
            0xf => logical & mda != 0,
            0 => logical >> 4 == mda >> 4 && logical & mda & 0xf != 0,
            _ => false,
        }
    }
}

/// NMIs a mailbox counts before folding: the vCPU takes at most one injected and one
/// pending NMI, so more than that carries no information.
const NMI_QUEUE_MAX: u32 = 2;

/// Where other vCPUs and VM ioctls leave interrupts for a vCPU's APIC.
pub(crate) struct Mailbox {
    irr: [AtomicU64; 4],
    tmr: [AtomicU64; 4],
    nmi: AtomicU32,
    init: AtomicBool,
    /// Bit 8: a SIPI is pending; bits 7:0: its vector.
    sipi: AtomicU32,
    addressing: AtomicU64,
    /// The PIC's output rose for this vCPU to look at.
    extint: AtomicBool,
    /// A halted vCPU sleeps here.
    pub(crate) wq: WaitQueue,
}

/// What folding the mailbox brought besides fixed interrupts.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Posted {
    pub(crate) nmi: u32,
    pub(crate) init: bool,
    pub(crate) sipi: Option<u8>,
}

impl Mailbox {
    pub(crate) fn new() -> Result<Self> {
        Ok(Self {
            irr: Default::default(),
            tmr: Default::default(),
            nmi: AtomicU32::new(0),
            init: AtomicBool::new(false),
            sipi: AtomicU32::new(0),
            addressing: AtomicU64::new(0),
            extint: AtomicBool::new(false),
            wq: WaitQueue::new()?,
        })
    }

    pub(crate) fn addressing(&self) -> Addressing {
        Addressing::unpack(self.addressing.load(Ordering::Acquire))
    }

    /// Accepts `irq` for this APIC (KVM's `__apic_accept_irq`); whether it was taken.
    /// The caller kicks the vCPU afterwards.
    pub(crate) fn accept(&self, irq: &IrqRequest) -> bool {
        match irq.delivery {
            dm::FIXED | dm::LOWEST => {
                let a = self.addressing();
                if (irq.level_triggered && !irq.assert) || !(a.hw_enabled && a.sw_enabled) {
                    return false;
                }
                let (w, b) = (usize::from(irq.vector >> 6), irq.vector & 63);
                if let (Some(tmr), Some(irr)) = (self.tmr.get(w), self.irr.get(w)) {
                    if irq.level_triggered {
                        tmr.fetch_or(1 << b, Ordering::AcqRel);
                    } else {
                        tmr.fetch_and(!(1 << b), Ordering::AcqRel);
                    }
                    irr.fetch_or(1 << b, Ordering::AcqRel);
                }
                true
            }
            dm::NMI => {
                // Any number of NMIs may be sent; the vCPU takes at most two of them (one
                // injected, one pending), so the count stops at a small cap instead of
                // growing with every message.
                let _ = self
                    .nmi
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                        Some(n.saturating_add(1).min(NMI_QUEUE_MAX))
                    });
                true
            }
            dm::INIT => {
                if irq.level_triggered && !irq.assert {
                    return false;
                }
                // An INIT discards a SIPI that has not been taken yet.
                self.sipi.store(0, Ordering::Release);
                self.init.store(true, Ordering::Release);
                true
            }
            dm::STARTUP => {
                self.sipi
                    .store(0x100 | u32::from(irq.vector), Ordering::Release);
                true
            }
            // No SMM; remote read and ExtINT are not sent as messages.
            _ => false,
        }
    }

    /// The PIC has an interrupt for a vCPU that takes ExtINT (the caller kicks it).
    pub(crate) fn post_extint(&self) {
        self.extint.store(true, Ordering::Release);
    }

    /// Something was posted that the owner has not folded in yet.
    pub(crate) fn any(&self) -> bool {
        self.extint.load(Ordering::Acquire)
            || self.irr.iter().any(|w| w.load(Ordering::Acquire) != 0)
            || self.nmi.load(Ordering::Acquire) != 0
            || self.init.load(Ordering::Acquire)
            || self.sipi.load(Ordering::Acquire) != 0
    }
}

/// The time base the timer needs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    pub(crate) now_ns: u64,
    pub(crate) guest_tsc: u64,
    pub(crate) tsc_khz: u32,
}

impl Clock {
    fn ns_to_cycles(&self, ns: u64) -> u64 {
        mul_div(ns, u64::from(self.tsc_khz), 1_000_000)
    }

    fn cycles_to_ns(&self, c: u64) -> u64 {
        mul_div(c, 1_000_000, u64::from(self.tsc_khz))
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Timer {
    /// LVTT bits 18:17 as last applied.
    mode: u32,
    /// One-shot/periodic: TMICT in ns (0: stopped).
    period_ns: u64,
    /// One-shot/periodic: the monotonic time of the next expiry (0: none).
    target_ns: u64,
    /// TSC-deadline mode: the guest TSC of the expiry (0: disarmed).
    tscdeadline: u64,
    /// Expired, interrupt not delivered yet.
    pending: bool,
}

/// A register access the guest's CPU would refuse (#GP for an MSR).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Refused;

/// What a register write asks of the rest of the VM.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct WriteEffect {
    /// An IPI to deliver.
    pub(crate) ipi: Option<IrqRequest>,
    /// A vector left service, and whether it was level-triggered (its TMR bit): the
    /// in-kernel I/O APIC takes the EOI.
    pub(crate) eoi: Option<(u8, bool)>,
}

/// A vCPU's local APIC.
#[derive(Clone, Copy)]
pub(crate) struct Lapic {
    regs: [u8; STATE_SIZE],
    vcpu_id: u32,
    timer: Timer,
    divide: u32,
    /// Nanoseconds per bus cycle (the VM's KVM_CAP_X86_APIC_BUS_CYCLES_NS).
    bus_cycle_ns: u64,
    /// LVTT mode bits the guest may set (TSC-deadline only with its CPUID bit).
    timer_mode_mask: u32,
    /// The guest's CPUID has x2APIC.
    x2apic_cpuid: bool,
    /// Local NMIs (LVT entries in NMI mode) waiting for the vCPU.
    local_nmi: u32,
    /// KVM_INTERRUPT's vector with the split irqchip: an ExtINT from userspace's PIC.
    pub(crate) ext_vector: Option<u8>,
    /// The LVT has its CMCI entry (IA32_MCG_CAP.CMCI_P).
    cmci: bool,
    /// The VM's I/O APIC is in the kernel.
    kernel_ioapic: bool,
}

impl Lapic {
    /// A local APIC at RESET for `vcpu_id` with IA32_APIC_BASE `apic_base`.
    pub(crate) fn new(vcpu_id: u32, apic_base: u64, bus_cycle_ns: u64) -> Self {
        let mut a = Self {
            regs: [0; STATE_SIZE],
            vcpu_id,
            timer: Timer::default(),
            divide: 2,
            bus_cycle_ns,
            timer_mode_mask: TIMER_PERIODIC,
            x2apic_cpuid: false,
            local_nmi: 0,
            ext_vector: None,
            cmci: false,
            kernel_ioapic: false,
        };
        a.reset(false, apic_base);
        a
    }

    // ---- Register file ----------------------------------------------------------------

    fn get(&self, off: u32) -> u32 {
        let o = off as usize;
        self.regs
            .get(o..o + 4)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u32::from_le_bytes)
    }

    fn set(&mut self, off: u32, v: u32) {
        let o = off as usize;
        if let Some(b) = self.regs.get_mut(o..o + 4) {
            b.copy_from_slice(&v.to_le_bytes());
        }
    }

    fn set_vec(&mut self, base: u32, v: u8, on: bool) {
        let off = base + u32::from(v >> 5) * 0x10;
        let w = self.get(off);
        let bit = 1 << (v & 31);
        self.set(off, if on { w | bit } else { w & !bit });
    }

    /// Highest vector set in the 256-bit register at `base`.
    fn highest(&self, base: u32) -> Option<u8> {
        (0..8u32).rev().find_map(|i| {
            let w = self.get(base + i * 0x10);
            (w != 0).then(|| (i * 32 + 31 - w.leading_zeros()) as u8)
        })
    }

    // ---- Modes ------------------------------------------------------------------------

    fn hw_enabled(apic_base: u64) -> bool {
        apic_base & base::EN != 0
    }

    pub(crate) fn x2apic_mode(apic_base: u64) -> bool {
        apic_base & (base::EN | base::EXTD) == base::EN | base::EXTD
    }

    fn sw_enabled(&self) -> bool {
        self.get(reg::SPIV) & SPIV_ENABLE != 0
    }

    /// The addressing senders see.
    pub(crate) fn addressing(&self, apic_base: u64) -> Addressing {
        Addressing {
            hw_enabled: Self::hw_enabled(apic_base),
            sw_enabled: self.sw_enabled(),
            x2apic: Self::x2apic_mode(apic_base),
            xapic_id: (self.get(reg::ID) >> 24) as u8,
            ldr: self.get(reg::LDR),
            dfr_model: (self.get(reg::DFR) >> 28) as u8,
            pic_intr: self.accept_pic_intr(apic_base),
        }
    }

    /// Publishes the addressing in `mb` (after anything that may have changed it).
    pub(crate) fn publish(&self, mb: &Mailbox, apic_base: u64) {
        mb.addressing
            .store(self.addressing(apic_base).pack(), Ordering::Release);
    }

    fn x2apic_ldr(id: u32) -> u32 {
        ((id >> 4) << 16) | (1 << (id & 0xf))
    }

    fn set_version(&mut self) {
        let nr_lvt = NR_LVT + u32::from(self.cmci);
        let mut v = APIC_VERSION | (nr_lvt - 1) << 16;
        // With the I/O APIC in userspace KVM offers directed EOI to x2APIC guests.
        if self.x2apic_cpuid && !self.kernel_ioapic {
            v |= LVR_DIRECTED_EOI;
        }
        self.set(reg::LVR, v);
    }

    /// The guest's CPUID changed: x2APIC and TSC-deadline availability.
    pub(crate) fn set_cpuid(&mut self, x2apic: bool, tsc_deadline: bool) {
        self.x2apic_cpuid = x2apic;
        self.timer_mode_mask = if tsc_deadline {
            TIMER_PERIODIC | TIMER_TSCDEADLINE
        } else {
            TIMER_PERIODIC
        };
        self.set_version();
    }

    /// RESET (`init` false) or INIT, as KVM's `kvm_lapic_reset`; `apic_base` is the
    /// (already reset, for RESET) IA32_APIC_BASE.
    pub(crate) fn reset(&mut self, init: bool, apic_base: u64) {
        if !init {
            self.set(reg::ID, self.vcpu_id << 24);
        }
        self.set_version();
        for i in 0..NR_LVT {
            self.set(reg::LVTT + i * 0x10, LVT_MASKED);
        }
        if self.cmci {
            self.set(reg::LVTCMCI, LVT_MASKED);
        }
        self.update_lvtt();
        // KVM's LINT0_REENABLED quirk: the BSP's LINT0 comes up as ExtINT.
        if apic_base & base::BSP != 0 {
            self.set(reg::LVT0, u32::from(dm::EXTINT) << 8);
        }
        self.set(reg::DFR, u32::MAX);
        self.set(reg::SPIV, 0xff);
        self.set(reg::TPR, 0);
        let x2 = Self::x2apic_mode(apic_base);
        if !x2 {
            self.set(reg::LDR, 0);
        }
        self.set(reg::ESR, 0);
        self.set(reg::ICR, 0);
        if !x2 {
            self.set(reg::ICR2, 0);
        } else {
            self.set(reg::ICR + 4, 0);
        }
        self.set(reg::TDCR, 0);
        self.set(reg::TMICT, 0);
        for i in 0..8 {
            self.set(reg::IRR + 0x10 * i, 0);
            self.set(reg::ISR + 0x10 * i, 0);
            self.set(reg::TMR + 0x10 * i, 0);
        }
        self.update_divide();
        self.timer = Timer {
            mode: self.timer.mode,
            ..Timer::default()
        };
        self.local_nmi = 0;
        self.ext_vector = None;
        self.update_ppr();
    }

    /// IA32_APIC_BASE write (KVM's `kvm_apic_set_base`); `Err` is #GP (or EINVAL for
    /// KVM_SET_MSRS/KVM_SET_SREGS).
    pub(crate) fn set_base(
        &mut self,
        apic_base: &mut u64,
        value: u64,
        host: bool,
        phys_bits: u32,
    ) -> core::result::Result<(), Refused> {
        let old = *apic_base;
        if old == value {
            return Ok(());
        }
        let mut reserved = 0x2ff | !((1u64 << phys_bits.min(63)) - 1);
        if !self.x2apic_cpuid {
            reserved |= base::EXTD;
        }
        let mode = |v: u64| v & (base::EN | base::EXTD);
        if value & reserved != 0 || mode(value) == base::EXTD {
            return Err(Refused);
        }
        if !host {
            let x2 = base::EN | base::EXTD;
            if mode(old) == x2 && mode(value) == base::EN {
                return Err(Refused);
            }
            if mode(old) == 0 && mode(value) == x2 {
                return Err(Refused);
            }
        }
        *apic_base = value;
        if (old ^ value) & base::EN != 0 && value & base::EN != 0 {
            self.set(reg::ID, self.vcpu_id << 24);
        }
        if (old ^ value) & base::EXTD != 0 {
            if value & base::EXTD != 0 {
                self.set(reg::ID, self.vcpu_id);
                self.set(reg::LDR, Self::x2apic_ldr(self.vcpu_id));
            } else if value & base::EN != 0 {
                self.set(reg::ID, self.vcpu_id << 24);
            }
        }
        Ok(())
    }

    // ---- Priorities -------------------------------------------------------------------

    fn update_ppr(&mut self) -> u32 {
        let tpr = self.get(reg::TPR);
        let isrv = self.highest(reg::ISR).map_or(0, u32::from);
        let ppr = if tpr & 0xf0 >= isrv & 0xf0 {
            tpr & 0xff
        } else {
            isrv & 0xf0
        };
        self.set(reg::PPR, ppr);
        ppr
    }

    /// The vector the APIC would deliver now (KVM's `kvm_apic_has_interrupt`).
    pub(crate) fn has_interrupt(&mut self, apic_base: u64) -> Option<u8> {
        if !Self::hw_enabled(apic_base) {
            return None;
        }
        let ppr = self.update_ppr();
        self.highest(reg::IRR)
            .filter(|&v| u32::from(v) & 0xf0 > ppr)
    }

    /// The I/O APIC is in the kernel (KVM_CREATE_IRQCHIP): no directed EOI then, as KVM.
    pub(crate) fn set_kernel_ioapic(&mut self) {
        self.kernel_ioapic = true;
        self.set_version();
    }

    /// The CPU took `vector`: IRR to ISR.
    pub(crate) fn ack(&mut self, vector: u8) {
        self.set_vec(reg::IRR, vector, false);
        self.set_vec(reg::ISR, vector, true);
        self.update_ppr();
    }

    /// The APIC passes ExtINT from the PIC (LINT0 unmasked in ExtINT mode, or the APIC
    /// disabled).
    pub(crate) fn accept_pic_intr(&self, apic_base: u64) -> bool {
        let lvt0 = self.get(reg::LVT0);
        !Self::hw_enabled(apic_base)
            || (lvt0 & LVT_MASKED == 0 && (lvt0 >> 8) & 7 == u32::from(dm::EXTINT))
    }

    /// CR8 (TPR bits 7:4).
    pub(crate) fn cr8(&self) -> u64 {
        u64::from(self.get(reg::TPR) >> 4 & 0xf)
    }

    pub(crate) fn set_cr8(&mut self, cr8: u64) {
        self.set(reg::TPR, ((cr8 & 0xf) << 4) as u32);
        self.update_ppr();
    }

    /// The word KVM keeps in a guest's VAPIC page (KVM_SET_VAPIC_ADDR) before each
    /// entry: TPR in bits 7:0, the highest in-service vector's class in 15:12, the
    /// highest requested vector in 31:24.
    pub(crate) fn vapic_word(&self) -> u32 {
        let tpr = self.get(reg::TPR) & 0xff;
        let isr = u32::from(self.highest(reg::ISR).unwrap_or(0));
        let irr = u32::from(self.highest(reg::IRR).unwrap_or(0));
        tpr | (isr & 0xf0) << 8 | irr << 24
    }

    /// The guest changed TPR through its VAPIC page.
    pub(crate) fn set_tpr(&mut self, tpr: u8) {
        self.set(reg::TPR, u32::from(tpr));
        self.update_ppr();
    }

    /// EOI: the highest in-service vector leaves ISR; returned with its trigger mode
    /// (TMR), for the I/O APIC.
    fn eoi(&mut self) -> Option<(u8, bool)> {
        let v = self.highest(reg::ISR)?;
        self.set_vec(reg::ISR, v, false);
        self.update_ppr();
        let tmr = self.get(reg::TMR + u32::from(v >> 5) * 0x10);
        Some((v, tmr & 1 << (v & 31) != 0))
    }

    /// Folds what other vCPUs posted into IRR/TMR; returns the other events.
    pub(crate) fn fold(&mut self, mb: &Mailbox) -> Posted {
        for i in 0..4u32 {
            let (Some(irr), Some(tmr)) = (mb.irr.get(i as usize), mb.tmr.get(i as usize)) else {
                continue;
            };
            let bits = irr.swap(0, Ordering::AcqRel);
            if bits == 0 {
                continue;
            }
            let trig = tmr.load(Ordering::Acquire);
            for half in 0..2u32 {
                let off = (i * 2 + half) * 0x10;
                let b = (bits >> (half * 32)) as u32;
                let t = (trig >> (half * 32)) as u32;
                let irr_w = self.get(reg::IRR + off) | b;
                let tmr_w = self.get(reg::TMR + off) & !b | t & b;
                self.set(reg::IRR + off, irr_w);
                self.set(reg::TMR + off, tmr_w);
            }
        }
        let sipi = mb.sipi.swap(0, Ordering::AcqRel);
        // The PIC's state is read directly at injection; the flag only wakes.
        mb.extint.store(false, Ordering::Release);
        Posted {
            nmi: mb
                .nmi
                .swap(0, Ordering::AcqRel)
                .saturating_add(core::mem::take(&mut self.local_nmi))
                .min(NMI_QUEUE_MAX),
            init: mb.init.swap(false, Ordering::AcqRel),
            sipi: (sipi & 0x100 != 0).then_some(sipi as u8),
        }
    }

    /// Masks every LVT entry, keeping the rest of each (software disable through SPIV).
    pub(super) fn mask_lvt(&mut self) {
        for i in 0..NR_LVT {
            let r = reg::LVTT + i * 0x10;
            self.set(r, self.get(r) | LVT_MASKED);
        }
        if self.cmci {
            self.set(reg::LVTCMCI, self.get(reg::LVTCMCI) | LVT_MASKED);
        }
    }

    /// The vCPU's machine-check capabilities changed (KVM_X86_SETUP_MCE): the LVT has a
    /// CMCI entry when they include CMCI, masked when it appears (KVM's
    /// `kvm_apic_after_set_mcg_cap`).
    pub(crate) fn set_cmci(&mut self, on: bool) {
        if on && !self.cmci {
            self.set(reg::LVTCMCI, LVT_MASKED);
        }
        self.cmci = on;
        self.set_version();
    }

    /// A corrected machine check (or an uncorrected one that needs no action) for the
    /// guest: the LVT's CMCI entry fires.
    pub(crate) fn deliver_cmci(&mut self, apic_base: u64) {
        if self.cmci {
            self.local_deliver(reg::LVTCMCI, apic_base);
        }
    }

    /// Delivers a local interrupt source (an LVT entry) to this APIC.
    fn local_deliver(&mut self, lvt: u32, apic_base: u64) {
        let v = self.get(lvt);
        if !Self::hw_enabled(apic_base) || v & LVT_MASKED != 0 {
            return;
        }
        match ((v >> 8) & 7) as u8 {
            dm::FIXED | dm::LOWEST => {
                if !self.sw_enabled() {
                    return;
                }
                let vector = v as u8;
                self.set_vec(reg::TMR, vector, v & LVT_LEVEL != 0);
                self.set_vec(reg::IRR, vector, true);
            }
            dm::NMI => self.local_nmi = self.local_nmi.saturating_add(1).min(NMI_QUEUE_MAX),
            _ => {}
        }
    }

    // ---- Timer ------------------------------------------------------------------------

    // ---- Register access --------------------------------------------------------------

    // ---- KVM_GET_LAPIC / KVM_SET_LAPIC --------------------------------------------------
}

// SPDX-License-Identifier: GPL-2.0

//! Register access: xAPIC MMIO, x2APIC MSRs, and KVM_GET_LAPIC/KVM_SET_LAPIC.

use super::*;

impl Lapic {
    pub(super) fn readable(off: u32, x2apic: bool, cmci: bool) -> bool {
        match off {
            reg::LVTCMCI => cmci,
            reg::ID
            | reg::LVR
            | reg::TPR
            | reg::PPR
            | reg::LDR
            | reg::SPIV
            | reg::ESR
            | reg::ICR
            | reg::LVTT
            | reg::LVTTHMR
            | reg::LVTPC
            | reg::LVT0
            | reg::LVT1
            | reg::LVTERR
            | reg::TMICT
            | reg::TMCCT
            | reg::TDCR => true,
            0x100..=0x270 => off & 0xf == 0,
            reg::APR | reg::DFR | reg::ICR2 => !x2apic,
            _ => false,
        }
    }

    /// A 32-bit register read; `None` for a register that cannot be read.
    pub(super) fn read(&mut self, off: u32, apic_base: u64, now: u64) -> Option<u32> {
        if !Self::readable(off, Self::x2apic_mode(apic_base), self.cmci) {
            return None;
        }
        Some(match off {
            reg::APR => 0,
            reg::TMCCT => self.tmcct(now),
            reg::PPR => self.update_ppr(),
            _ => self.get(off),
        })
    }

    /// A 32-bit register write (KVM's `kvm_lapic_reg_write`); `Err` when the register is
    /// not writable in the current mode.
    pub(super) fn write(
        &mut self,
        off: u32,
        val: u32,
        apic_base: u64,
        now: u64,
    ) -> core::result::Result<WriteEffect, Refused> {
        let x2 = Self::x2apic_mode(apic_base);
        let mut eff = WriteEffect::default();
        match off {
            reg::ID => {
                if x2 {
                    return Err(Refused);
                }
                self.set(reg::ID, val & 0xff00_0000);
            }
            reg::TPR => {
                self.set(reg::TPR, val & 0xff);
                self.update_ppr();
            }
            reg::EOI => eff.eoi = self.eoi(),
            reg::LDR => {
                if x2 {
                    return Err(Refused);
                }
                self.set(reg::LDR, val & 0xff00_0000);
            }
            reg::DFR => {
                if x2 {
                    return Err(Refused);
                }
                self.set(reg::DFR, val | 0x0fff_ffff);
            }
            reg::SPIV => {
                let mut mask = 0x3ff;
                if self.get(reg::LVR) & LVR_DIRECTED_EOI != 0 {
                    mask |= SPIV_DIRECTED_EOI;
                }
                self.set(reg::SPIV, val & mask);
                if val & SPIV_ENABLE == 0 {
                    self.mask_lvt();
                    self.update_lvtt();
                    self.timer.pending = false;
                }
            }
            reg::ICR => {
                if x2 {
                    return Err(Refused);
                }
                let lo = val & !ICR_BUSY;
                eff.ipi = Some(IrqRequest::from_icr(
                    lo,
                    self.get(reg::ICR2),
                    false,
                    self.vcpu_id,
                ));
                self.set(reg::ICR, lo);
            }
            reg::ICR2 => {
                if x2 {
                    return Err(Refused);
                }
                self.set(reg::ICR2, val & 0xff00_0000);
            }
            reg::LVTCMCI if !self.cmci => return Err(Refused),
            reg::LVTTHMR | reg::LVTPC | reg::LVT0 | reg::LVT1 | reg::LVTERR | reg::LVTCMCI => {
                let mask = match off {
                    reg::LVT0 | reg::LVT1 => LINT_MASK,
                    reg::LVTERR => LVT_MASK,
                    _ => LVT_MASK | MODE_MASK,
                };
                let mut v = val;
                if !self.sw_enabled() {
                    v |= LVT_MASKED;
                }
                self.set(off, v & mask);
            }
            reg::LVTT => {
                let mut v = val;
                if !self.sw_enabled() {
                    v |= LVT_MASKED;
                }
                self.set(reg::LVTT, v & (LVT_MASK | self.timer_mode_mask));
                self.update_lvtt();
            }
            reg::TMICT => {
                if self.timer.mode != TIMER_TSCDEADLINE {
                    self.set(reg::TMICT, val);
                    self.start_counting(val, false, now);
                }
            }
            reg::TDCR => {
                let old = self.divide;
                self.set(reg::TDCR, val & 0xb);
                self.update_divide();
                if self.divide != old && self.timer.period_ns != 0 {
                    // The remaining time scales with the divisor.
                    self.timer.period_ns = self.count_to_ns(self.get(reg::TMICT));
                    self.limit_period();
                    if self.timer.target_ns != 0 {
                        let left = self.timer.target_ns.saturating_sub(now);
                        let left = mul_div(left, u64::from(self.divide), u64::from(old));
                        self.timer.target_ns = now.saturating_add(left);
                    }
                }
            }
            reg::ESR => {
                if x2 && val != 0 {
                    return Err(Refused);
                }
            }
            reg::SELF_IPI => {
                if !x2 || val & !0xff != 0 {
                    return Err(Refused);
                }
                eff.ipi = Some(IrqRequest {
                    vector: val as u8,
                    delivery: dm::FIXED,
                    shorthand: shorthand::SELF,
                    assert: true,
                    source: Some(self.vcpu_id),
                    ..Default::default()
                });
            }
            _ => return Err(Refused),
        }
        Ok(eff)
    }

    /// A guest read of the xAPIC page at offset `off` (`len` 1, 2, 4 or 8 bytes).
    pub(crate) fn mmio_read(&mut self, off: u32, len: u8, apic_base: u64, now: u64) -> u64 {
        let mask = if len >= 8 {
            u64::MAX
        } else {
            (1u64 << (u32::from(len) * 8)) - 1
        };
        // A disabled or x2APIC-mode APIC leaves an all-ones hole (KVM's default quirk).
        if !Self::hw_enabled(apic_base) || Self::x2apic_mode(apic_base) {
            return mask;
        }
        let align = off & 0xf;
        if align + u32::from(len) > 4 || off > 0x3f0 {
            return 0;
        }
        let v = self.read(off & !0xf, apic_base, now).unwrap_or(0);
        u64::from(v >> (align * 8)) & mask
    }

    /// A guest write to the xAPIC page: only aligned 32-bit writes reach a register.
    pub(crate) fn mmio_write(
        &mut self,
        off: u32,
        len: u8,
        val: u64,
        apic_base: u64,
        now: u64,
    ) -> WriteEffect {
        if !Self::hw_enabled(apic_base) || Self::x2apic_mode(apic_base) {
            return WriteEffect::default();
        }
        if len != 4 || off & 0xf != 0 || off > 0x3f0 {
            return WriteEffect::default();
        }
        // Writes to read-only registers are dropped.
        self.write(off, val as u32, apic_base, now)
            .unwrap_or_default()
    }

    /// RDMSR of an x2APIC register.
    pub(crate) fn msr_read(
        &mut self,
        msr: u32,
        apic_base: u64,
        now: u64,
    ) -> core::result::Result<u64, Refused> {
        if !Self::x2apic_mode(apic_base) {
            return Err(Refused);
        }
        let off = msr.checked_sub(X2APIC_MSR).ok_or(Refused)? << 4;
        if off == reg::ICR {
            return Ok(u64::from(self.get(reg::ICR)) | u64::from(self.get(reg::ICR + 4)) << 32);
        }
        self.read(off, apic_base, now).map(u64::from).ok_or(Refused)
    }

    /// WRMSR of an x2APIC register.
    pub(crate) fn msr_write(
        &mut self,
        msr: u32,
        val: u64,
        apic_base: u64,
        now: u64,
    ) -> core::result::Result<WriteEffect, Refused> {
        if !Self::x2apic_mode(apic_base) {
            return Err(Refused);
        }
        let off = msr.checked_sub(X2APIC_MSR).ok_or(Refused)? << 4;
        if off == reg::ICR {
            if val & X2APIC_ICR_RESERVED != 0 {
                return Err(Refused);
            }
            let lo = (val as u32) & !ICR_BUSY;
            let hi = (val >> 32) as u32;
            self.set(reg::ICR, lo);
            self.set(reg::ICR + 4, hi);
            return Ok(WriteEffect {
                ipi: Some(IrqRequest::from_icr(lo, hi, true, self.vcpu_id)),
                eoi: None,
            });
        }
        if val >> 32 != 0 {
            return Err(Refused);
        }
        self.write(off, val as u32, apic_base, now)
    }

    /// The register file as `struct kvm_lapic_state` carries it.
    /// `x2apic_format` (KVM_X2APIC_API_USE_32BIT_IDS): in x2APIC mode the ID register
    /// holds the full 32-bit ID instead of the ID in the xAPIC position.
    pub(crate) fn get_state(
        &self,
        apic_base: u64,
        now: u64,
        x2apic_format: bool,
    ) -> [u8; STATE_SIZE] {
        let mut s = *self;
        s.set(reg::TMCCT, self.tmcct(now));
        if Self::x2apic_mode(apic_base) {
            // Userspace sees the ICR split in two, and the ID where the format says.
            s.set(
                reg::ID,
                if x2apic_format {
                    self.vcpu_id
                } else {
                    self.vcpu_id << 24
                },
            );
            s.set(reg::ICR2, self.get(reg::ICR + 4));
        }
        s.regs
    }

    /// Loads a register file from userspace and restarts the timer from its TMCCT.
    /// In x2APIC mode the ID is read-only: with `x2apic_format` a different ID is
    /// refused (`EINVAL`), otherwise ignored, as KVM does.
    pub(crate) fn set_state(
        &mut self,
        regs: &[u8; STATE_SIZE],
        apic_base: u64,
        now: u64,
        x2apic_format: bool,
    ) -> Result {
        if Self::x2apic_mode(apic_base) && x2apic_format {
            let id = regs
                .get(reg::ID as usize..reg::ID as usize + 4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_le_bytes);
            if id != Some(self.vcpu_id) {
                return Err(EINVAL);
            }
        }
        self.regs = *regs;
        if Self::x2apic_mode(apic_base) {
            self.set(reg::ID, self.vcpu_id);
            self.set(reg::LDR, Self::x2apic_ldr(self.vcpu_id));
            let hi = self.get(reg::ICR2);
            self.set(reg::ICR + 4, hi);
        }
        self.set_version();
        self.update_ppr();
        self.timer = Timer {
            mode: self.timer.mode,
            ..Timer::default()
        };
        self.update_lvtt();
        self.update_divide();
        if self.timer.mode != TIMER_TSCDEADLINE {
            let count = self.get(reg::TMCCT);
            self.start_counting(count, true, now);
        }
        self.set(reg::TMCCT, 0);
        Ok(())
    }
}

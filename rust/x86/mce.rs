// SPDX-License-Identifier: GPL-2.0

//! Machine-check architecture for guests (KVM's `KVM_X86_SETUP_MCE`, `KVM_X86_SET_MCE`,
//! the MCG_* and MCi_* MSRs): banks userspace fills to report an error, which the guest
//! reads as its hardware's, with #MC or a CMCI interrupt as KVM raises them.

use crate::sys::msr::index;
use crate::uapi::kvm_x86_mce;
use kernel::prelude::*;

/// Banks a vCPU can have (KVM_CAP_MCE; KVM's `KVM_MAX_MCE_BANKS`).
pub(crate) const MAX_BANKS: usize = 32;

/// IA32_MCG_CAP bits.
pub(crate) mod cap {
    /// IA32_MCG_CTL exists.
    pub(crate) const CTL_P: u64 = 1 << 8;
    /// Corrected machine-check interrupts (IA32_MCi_CTL2, the LVT CMCI entry).
    pub(crate) const CMCI_P: u64 = 1 << 10;
    /// Software error recovery (the S, AR bits of MCi_STATUS).
    pub(crate) const SER_P: u64 = 1 << 24;
    /// The bank count (7:0) and extended-state count (23:16) userspace may choose.
    pub(crate) const COUNTS: u64 = 0xff | 0xff_0000;
}

/// KVM_X86_GET_MCE_CAP_SUPPORTED: MCG_CTL and software error recovery, and CMCI where
/// the backend offers it. (kvm_intel also offers LMCE, which needs IA32_FEAT_CTL
/// emulation rkvm does not have.)
pub(crate) fn supported_cap(cmci: bool) -> u64 {
    cap::CTL_P | cap::SER_P | if cmci { cap::CMCI_P } else { 0 }
}

/// IA32_MCG_STATUS.MCIP: a machine check is in progress.
const MCG_STATUS_MCIP: u64 = 1 << 2;

/// IA32_MCi_STATUS bits.
mod status {
    pub(super) const VAL: u64 = 1 << 63;
    pub(super) const OVER: u64 = 1 << 62;
    pub(super) const UC: u64 = 1 << 61;
    pub(super) const PCC: u64 = 1 << 57;
    pub(super) const S: u64 = 1 << 56;
    pub(super) const AR: u64 = 1 << 55;
}

/// IA32_MCi_CTL2: CMCI enable and the error threshold; the rest is reserved.
const CTL2_CMCI_EN: u64 = 1 << 30;
const CTL2_THRESHOLD: u64 = 0x7fff;

/// HWCR.McStatusWrEn (AMD): MCi_STATUS takes non-zero writes.
const HWCR_MCSTATUS_WREN: u64 = 1 << 18;

/// MSR numbers: IA32_P5_MC_ADDR/TYPE, the banks (four MSRs each from IA32_MC0_CTL) and
/// their CTL2 registers.
const P5_MC_ADDR: u32 = 0;
const P5_MC_TYPE: u32 = 1;
const MC0_CTL: u32 = 0x400;
const MC0_CTL2: u32 = 0x280;

/// A vCPU's machine-check state (MCG_STATUS lives with the other MSRs).
///
/// # Invariants
///
/// The bank count in `cap` is at most [`MAX_BANKS`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mce {
    /// IA32_MCG_CAP.
    cap: u64,
    /// IA32_MCG_CTL.
    ctl: u64,
    /// MCi_CTL, MCi_STATUS, MCi_ADDR, MCi_MISC of each bank.
    banks: [u64; 4 * MAX_BANKS],
    /// MCi_CTL2 of each bank.
    ctl2: [u64; MAX_BANKS],
}

impl Default for Mce {
    /// KVM's new vCPU: every bank present, nothing else until KVM_X86_SETUP_MCE.
    fn default() -> Self {
        // INVARIANT: MAX_BANKS banks.
        Self {
            cap: MAX_BANKS as u64,
            ctl: 0,
            banks: [0; 4 * MAX_BANKS],
            ctl2: [0; MAX_BANKS],
        }
    }
}

/// What KVM_X86_SET_MCE asks of the vCPU, beyond the banks it filled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Signal {
    /// Nothing (a corrected error, or reporting disabled).
    None,
    /// Raise #MC.
    MachineCheck,
    /// A second machine check, or one with CR4.MCE clear: shutdown.
    TripleFault,
    /// An uncorrected no-action error with CMCI enabled for its bank: the local APIC's
    /// CMCI entry.
    Cmci,
}

impl Mce {
    fn bank_count(&self) -> u32 {
        (self.cap & 0xff) as u32
    }

    /// KVM_X86_SETUP_MCE: a bank count of 1..=MAX_BANKS and only capabilities within
    /// `supported`; MCG_CTL and every MCi_CTL start all ones, MCi_CTL2 zero. `kept` is
    /// what the backend keeps of `mcg_cap` (the bank count always).
    pub(crate) fn setup(&mut self, mcg_cap: u64, supported: u64, kept: u64) -> Result {
        let banks = mcg_cap & 0xff;
        if banks == 0 || banks > MAX_BANKS as u64 || mcg_cap & !(supported | cap::COUNTS) != 0 {
            return Err(EINVAL);
        }
        // INVARIANT: the bank count was checked just above, and `kept` keeps it.
        self.cap = kept & !0xff | banks;
        if mcg_cap & cap::CTL_P != 0 {
            self.ctl = u64::MAX;
        }
        for b in 0..banks as usize {
            if let Some(c) = self.banks.get_mut(4 * b) {
                *c = u64::MAX;
            }
            if mcg_cap & cap::CMCI_P != 0 {
                if let Some(c2) = self.ctl2.get_mut(b) {
                    *c2 = 0;
                }
            }
        }
        Ok(())
    }

    /// Whether `m` is one of the MSRs this module answers.
    pub(crate) fn owns(m: u32) -> bool {
        matches!(
            m,
            P5_MC_ADDR | P5_MC_TYPE | index::IA32_MCG_CAP | index::IA32_MCG_CTL
        ) || (MC0_CTL2..MC0_CTL2 + MAX_BANKS as u32).contains(&m)
            || (MC0_CTL..MC0_CTL + 4 * MAX_BANKS as u32).contains(&m)
    }

    /// RDMSR of an MSR [`Mce::owns`]; `None` for #GP.
    pub(crate) fn get(&self, m: u32, host: bool) -> Option<u64> {
        let banks = self.bank_count();
        match m {
            P5_MC_ADDR | P5_MC_TYPE => Some(0),
            index::IA32_MCG_CAP => Some(self.cap),
            index::IA32_MCG_CTL if self.cap & cap::CTL_P != 0 || host => Some(self.ctl),
            m if (MC0_CTL2..MC0_CTL2 + banks).contains(&m) => {
                if self.cap & cap::CMCI_P == 0 && !host {
                    return None;
                }
                self.ctl2.get((m - MC0_CTL2) as usize).copied()
            }
            m if (MC0_CTL..MC0_CTL + 4 * banks).contains(&m) => {
                self.banks.get((m - MC0_CTL) as usize).copied()
            }
            _ => None,
        }
    }

    /// WRMSR of an MSR [`Mce::owns`] (MCG_CAP is read-only); `Err` for #GP. `amd` says
    /// the guest's CPUID is AMD-compatible, where HWCR decides whether MCi_STATUS takes
    /// non-zero values.
    pub(crate) fn set(
        &mut self,
        m: u32,
        v: u64,
        host: bool,
        amd: bool,
        hwcr: u64,
    ) -> Result<(), ()> {
        let banks = self.bank_count();
        match m {
            index::IA32_MCG_CTL => {
                if self.cap & cap::CTL_P == 0 && (v != 0 || !host) {
                    return Err(());
                }
                if v != 0 && v != u64::MAX {
                    return Err(());
                }
                self.ctl = v;
            }
            m if (MC0_CTL2..MC0_CTL2 + banks).contains(&m) => {
                if self.cap & cap::CMCI_P == 0 && (v != 0 || !host) {
                    return Err(());
                }
                if v & !(CTL2_CMCI_EN | CTL2_THRESHOLD) != 0 {
                    return Err(());
                }
                *self.ctl2.get_mut((m - MC0_CTL2) as usize).ok_or(())? = v;
            }
            m if (MC0_CTL..MC0_CTL + 4 * banks).contains(&m) => {
                let i = (m - MC0_CTL) as usize;
                // MCi_CTL takes 0 or all ones; some guests clear bit 10 (K8 GART) or bit
                // 0 (single-bit ECC), which KVM lets through.
                if i % 4 == 0 && v != 0 && (v | 1 << 10 | 1) != u64::MAX {
                    return Err(());
                }
                // MCi_STATUS: the guest may clear it; non-zero only on AMD with
                // HWCR.McStatusWrEn.
                let wren = amd && hwcr & HWCR_MCSTATUS_WREN != 0;
                if i % 4 == 1 && v != 0 && !host && !wren {
                    return Err(());
                }
                *self.banks.get_mut(i).ok_or(())? = v;
            }
            _ => return Err(()),
        }
        Ok(())
    }

    /// KVM_X86_SET_MCE: records the error in its bank and says how the guest learns of
    /// it. `mcg_status` is IA32_MCG_STATUS; `cr4_mce` whether the guest enabled #MC.
    pub(crate) fn inject(
        &mut self,
        e: &kvm_x86_mce,
        mcg_status: &mut u64,
        cr4_mce: bool,
    ) -> Result<Signal> {
        let banks = self.bank_count();
        if u32::from(e.bank) >= banks || e.status & status::VAL == 0 {
            return Err(EINVAL);
        }
        let b = 4 * usize::from(e.bank);
        let bank_ctl = self.banks.get(b).copied().ok_or(EINVAL)?;
        let old = self.banks.get(b + 1).copied().ok_or(EINVAL)?;
        let mut st = e.status;
        let ucna = e.mcg_status == 0
            && st & (status::PCC | status::S | status::AR) == 0
            && st & status::UC != 0;
        let mut signal = Signal::None;
        if ucna {
            // Uncorrected, no action required: recorded, and a CMCI if the bank has it.
            self.write_bank(b, st, e.addr, e.misc);
            *mcg_status = e.mcg_status;
            let cmci = self.cap & cap::CMCI_P != 0
                && self
                    .ctl2
                    .get(usize::from(e.bank))
                    .is_some_and(|c| c & CTL2_CMCI_EN != 0);
            return Ok(if cmci { Signal::Cmci } else { Signal::None });
        }
        if st & status::UC != 0 {
            // Reporting of uncorrected errors off (MCG_CTL or the bank's CTL not all
            // ones): dropped.
            if (self.cap & cap::CTL_P != 0 && self.ctl != u64::MAX) || bank_ctl != u64::MAX {
                return Ok(Signal::None);
            }
            if *mcg_status & MCG_STATUS_MCIP != 0 || !cr4_mce {
                return Ok(Signal::TripleFault);
            }
            if old & status::VAL != 0 {
                st |= status::OVER;
            }
            self.write_bank(b, st, e.addr, e.misc);
            *mcg_status = e.mcg_status;
            signal = Signal::MachineCheck;
        } else if old & status::VAL == 0 || old & status::UC == 0 {
            // A corrected error overwrites a corrected one (marking the overflow).
            if old & status::VAL != 0 {
                st |= status::OVER;
            }
            self.write_bank(b, st, e.addr, e.misc);
        } else if let Some(s) = self.banks.get_mut(b + 1) {
            // An uncorrected error is kept; the new one only overflows it.
            *s |= status::OVER;
        }
        Ok(signal)
    }

    fn write_bank(&mut self, b: usize, status: u64, addr: u64, misc: u64) {
        for (i, v) in [(1, status), (2, addr), (3, misc)] {
            if let Some(r) = self.banks.get_mut(b + i) {
                *r = v;
            }
        }
    }
}

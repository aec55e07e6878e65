// SPDX-License-Identifier: GPL-2.0

//! The VM-entry event-injection fields (interruption information, exception error code,
//! instruction length) for one event, built so that VM entry accepts them whatever
//! userspace put in the event with KVM_SET_VCPU_EVENTS (SDM 26.2.1.3; KVM's
//! `vmx_inject_exception`, `vmx_inject_irq`, `vmx_inject_nmi`).

use super::caps::VmcsConfig;
use super::vmcs::{self, Loaded};
use crate::x86::state::Exception;
use kernel::prelude::*;

/// Event types of the interruption-information fields.
pub(super) const TYPE_EXT_INTR: u32 = 0;
pub(super) const TYPE_NMI: u32 = 2;
pub(super) const TYPE_HW_EXCEPTION: u32 = 3;
pub(super) const TYPE_SOFT_INTR: u32 = 4;
pub(super) const TYPE_PRIV_SW_EXCEPTION: u32 = 5;
pub(super) const TYPE_SOFT_EXCEPTION: u32 = 6;
pub(super) const INFO_VALID: u32 = 1 << 31;
pub(super) const INFO_ERROR_CODE: u32 = 1 << 11;

/// What the CPU accepts beyond the SDM's baseline checks.
#[derive(Clone, Copy, Debug)]
pub(super) struct Caps {
    /// IA32_VMX_BASIC[56]: a hardware exception may come with or without an error code,
    /// whatever its vector.
    any_error_code: bool,
    /// IA32_VMX_MISC[30]: a software interrupt or exception may have instruction length 0.
    zero_len: bool,
}

impl Caps {
    pub(super) fn new(config: &VmcsConfig) -> Self {
        Self {
            any_error_code: config.basic & (1 << 56) != 0,
            zero_len: config.misc & (1 << 30) != 0,
        }
    }

    /// Whether VM entry takes `len` as a software event's instruction length.
    pub(super) fn len_ok(self, len: u8) -> bool {
        (1..=15).contains(&len) || (len == 0 && self.zero_len)
    }
}

/// The fields of one injection.
#[derive(Clone, Copy, Debug)]
pub(super) struct Injection {
    /// VM_ENTRY_INTR_INFO_FIELD.
    pub(super) info: u32,
    /// VM_ENTRY_EXCEPTION_ERROR_CODE, when `info` delivers one.
    error_code: Option<u32>,
    /// VM_ENTRY_INSTRUCTION_LEN, for a software event.
    insn_len: Option<u8>,
}

impl Injection {
    fn new(vector: u8, ty: u32) -> Self {
        Self {
            info: u32::from(vector) | ty << 8 | INFO_VALID,
            error_code: None,
            insn_len: None,
        }
    }

    /// Writes the error-code and instruction-length fields `info` uses (the caller writes
    /// `info` itself).
    pub(super) fn write_fields(&self, v: &Loaded<'_>) -> Result {
        if let Some(code) = self.error_code {
            v.w32(vmcs::VM_ENTRY_EXCEPTION_ERROR_CODE, code)
                .map_err(|_| EIO)?;
        }
        if let Some(len) = self.insn_len {
            v.w32(vmcs::VM_ENTRY_INSTRUCTION_LEN, u32::from(len))
                .map_err(|_| EIO)?;
        }
        Ok(())
    }
}

/// The exceptions that push an error code (KVM's `x86_exception_has_error_code`): #DF,
/// #TS, #NP, #SS, #GP, #PF, #AC.
fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17)
}

/// Exception `e`. `protected`: the guest's CR0.PE (real mode has no error codes);
/// `soft_len`: the instruction length a #BP or #OF returns past.
///
/// As KVM: #BP and #OF are software exceptions; the error code is delivered in protected
/// mode only, and only its low 16 bits (VM entry refuses bits 31:16). Where KVM would let
/// VM entry fail, the event is made valid instead: no error code for a software
/// exception; without IA32_VMX_BASIC[56], an error code exactly for the vectors that
/// push one (0 if userspace gave none); a #BP or #OF whose length the CPU does not take
/// goes in as a hardware exception (which returns to the same RIP as length 0).
pub(super) fn exception(e: &Exception, protected: bool, soft_len: u8, caps: Caps) -> Injection {
    // KVM_SET_VCPU_EVENTS refuses vectors above 31 and rkvm raises none: the mask only
    // keeps the field valid.
    let vector = e.vector & 0x1f;
    let soft = matches!(vector, 3 | 4) && caps.len_ok(soft_len);
    let mut inj = Injection::new(
        vector,
        if soft {
            TYPE_SOFT_EXCEPTION
        } else {
            TYPE_HW_EXCEPTION
        },
    );
    if soft {
        inj.insn_len = Some(soft_len);
        return inj;
    }
    let deliver = protected
        && if caps.any_error_code {
            e.error_code.is_some()
        } else {
            has_error_code(vector)
        };
    if deliver {
        inj.info |= INFO_ERROR_CODE;
        inj.error_code = Some(e.error_code.unwrap_or(0) & 0xffff);
    }
    inj
}

/// A software interrupt (INT n) of instruction length `len`, or `None` when the CPU does
/// not take that length. Then it goes in as an external interrupt once the guest takes
/// one (`irq_ok`), which returns to the same RIP as length 0 would; until then `None`.
pub(super) fn soft_interrupt(vector: u8, len: u8, irq_ok: bool, caps: Caps) -> Option<Injection> {
    if caps.len_ok(len) {
        let mut inj = Injection::new(vector, TYPE_SOFT_INTR);
        inj.insn_len = Some(len);
        Some(inj)
    } else if irq_ok {
        Some(external(vector))
    } else {
        None
    }
}

/// An NMI.
pub(super) fn nmi() -> Injection {
    Injection::new(2, TYPE_NMI)
}

/// An external interrupt.
pub(super) fn external(vector: u8) -> Injection {
    Injection::new(vector, TYPE_EXT_INTR)
}

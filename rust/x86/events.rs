// SPDX-License-Identifier: GPL-2.0

//! `KVM_GET_VCPU_EVENTS` and `KVM_SET_VCPU_EVENTS` (`kvm_vcpu_ioctl_x86_get_vcpu_events`,
//! `kvm_vcpu_ioctl_x86_set_vcpu_events`): the uapi `struct kvm_vcpu_events` to and from
//! the vCPU's event state.

use crate::uapi::*;
use crate::x86::state::{shadow, Exception, VcpuState};
use kernel::prelude::*;
use zerocopy::FromZeros;

/// `KVM_GET_VCPU_EVENTS`: the vCPU's event state as userspace sees it.
pub(crate) fn get(s: &VcpuState) -> kvm_vcpu_events {
    let mut e = kvm_vcpu_events::new_zeroed();
    if let Some(x) = s.events.exception {
        // Without KVM_CAP_EXCEPTION_PAYLOAD, KVM reports a pending exception as injected.
        e.exception.injected = 1;
        e.exception.nr = x.vector;
        e.exception.has_error_code = u8::from(x.error_code.is_some());
        e.exception.error_code = x.error_code.unwrap_or(0);
    }
    if let (Some(v), true) = (s.events.interrupt, s.events.interrupt_injected) {
        e.interrupt.injected = 1;
        e.interrupt.nr = v;
    }
    if let Some((v, _)) = s.events.soft_interrupt {
        e.interrupt.injected = 1;
        e.interrupt.nr = v;
        e.interrupt.soft = 1;
    }
    e.interrupt.shadow = shadow_to_user(s.events.shadow);
    e.nmi.injected = u8::from(s.events.nmi_injected);
    e.nmi.pending = u8::from(s.events.nmi_pending);
    e.nmi.masked = u8::from(s.events.nmi_masked);
    // As KVM: NMI-pending and shadow are always valid; the SMM block is valid and empty
    // (rkvm has no SMM).
    e.flags =
        KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SHADOW | KVM_VCPUEVENT_VALID_SMM;
    e
}

/// `KVM_SET_VCPU_EVENTS`: takes userspace's event state, or refuses it (EINVAL) as KVM
/// does.
pub(crate) fn set(s: &mut VcpuState, e: &kvm_vcpu_events, one_shadow_bit: bool) -> Result {
    let valid = KVM_VCPUEVENT_VALID_NMI_PENDING
        | KVM_VCPUEVENT_VALID_SIPI_VECTOR
        | KVM_VCPUEVENT_VALID_SHADOW
        | KVM_VCPUEVENT_VALID_SMM
        | KVM_VCPUEVENT_VALID_PAYLOAD
        | KVM_VCPUEVENT_VALID_TRIPLE_FAULT;
    if e.flags & !valid != 0 {
        return Err(EINVAL);
    }
    // Exception payloads, SMM and triple-fault events need capabilities rkvm does not
    // offer.
    if e.flags & (KVM_VCPUEVENT_VALID_PAYLOAD | KVM_VCPUEVENT_VALID_TRIPLE_FAULT) != 0 {
        return Err(EINVAL);
    }
    // As KVM built without CONFIG_KVM_SMM: nothing in the SMM block may be set.
    if e.flags & KVM_VCPUEVENT_VALID_SMM != 0
        && (e.smi.smm != 0 || e.smi.pending != 0 || e.smi.smm_inside_nmi != 0)
    {
        return Err(EINVAL);
    }
    let injected = e.exception.injected != 0;
    if injected && (e.exception.nr > 31 || e.exception.nr == 2) {
        return Err(EINVAL);
    }
    s.events.exception = injected.then_some(Exception {
        vector: e.exception.nr,
        error_code: (e.exception.has_error_code != 0).then_some(e.exception.error_code),
        injected: true,
        payload: None,
    });
    s.events.soft_interrupt = None;
    if e.interrupt.injected != 0 {
        if e.interrupt.soft != 0 {
            s.events.soft_interrupt = Some((e.interrupt.nr, 0));
        } else {
            s.events.interrupt = Some(e.interrupt.nr);
            s.events.interrupt_injected = true;
        }
    } else if s.events.interrupt_injected {
        s.events.interrupt = None;
        s.events.interrupt_injected = false;
    }
    if e.flags & KVM_VCPUEVENT_VALID_SHADOW != 0 {
        s.events.shadow = shadow_from_user(e.interrupt.shadow, one_shadow_bit);
    }
    s.events.nmi_injected = e.nmi.injected != 0;
    if e.flags & KVM_VCPUEVENT_VALID_NMI_PENDING != 0 {
        s.events.nmi_pending = e.nmi.pending != 0;
    }
    s.events.nmi_masked = e.nmi.masked != 0;
    s.dirty = true;
    Ok(())
}

/// The uapi's interrupt shadow (`KVM_X86_SHADOW_INT_*`) of the vCPU's (see [`shadow`]).
fn shadow_to_user(v: u8) -> u8 {
    let mut u = 0;
    if v & shadow::STI != 0 {
        u |= KVM_X86_SHADOW_INT_STI as u8;
    }
    if v & shadow::MOV_SS != 0 {
        u |= KVM_X86_SHADOW_INT_MOV_SS as u8;
    }
    u
}

/// The vCPU's interrupt shadow for the uapi's: with one shadow bit (SVM) both kinds or
/// none; otherwise one kind at most, MOV SS before STI, as `vmx_set_interrupt_shadow`
/// (VM entry refuses both at once).
fn shadow_from_user(u: u8, one_shadow_bit: bool) -> u8 {
    if one_shadow_bit {
        if u != 0 {
            shadow::STI | shadow::MOV_SS
        } else {
            0
        }
    } else if u & KVM_X86_SHADOW_INT_MOV_SS as u8 != 0 {
        shadow::MOV_SS
    } else if u & KVM_X86_SHADOW_INT_STI as u8 != 0 {
        shadow::STI
    } else {
        0
    }
}

// SPDX-License-Identifier: GPL-2.0

//! `KVM_CHECK_EXTENSION`: what rkvm advertises. A capability appears here only once it
//! works; Documentation/rkvm/api.rst lists the rest and why.

use super::Kvm;
use crate::uapi::*;

/// KVM's default limits, which rkvm shares.
pub(crate) const MAX_VCPUS: u32 = 1024;
pub(crate) const MAX_VCPU_IDS: u32 = 4096;

/// The answer to KVM_CHECK_EXTENSION(`cap`), on the system fd (`vm` = None) or a VM fd.
pub(crate) fn check_extension(k: &Kvm, vm: Option<&super::vm::Vm>, cap: usize) -> isize {
    let Ok(cap) = u32::try_from(cap) else {
        return 0;
    };
    let _ = vm;
    match cap {
        // System ioctls.
        KVM_CAP_GET_MSR_FEATURES | KVM_CAP_EXT_CPUID | KVM_CAP_EXT_EMUL_CPUID
        | KVM_CAP_SYS_ATTRIBUTES => 1,
        KVM_CAP_NR_VCPUS => crate::sys::cpu::num_online().min(MAX_VCPUS) as isize,
        KVM_CAP_MAX_VCPUS => MAX_VCPUS as isize,
        KVM_CAP_MAX_VCPU_ID => MAX_VCPU_IDS as isize,
        KVM_CAP_VM_TYPES => 1 << KVM_X86_DEFAULT_VM,
        KVM_CAP_CHECK_EXTENSION_VM => 1,
        _ => {
            let _ = k;
            0
        }
    }
}

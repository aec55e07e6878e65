// SPDX-License-Identifier: GPL-2.0

//! The generic core (the part of KVM in `virt/kvm/kvm_main.c`): the module-wide state,
//! `/dev/rkvm`, VMs, hardware enabling, stats and the device registry.

pub(crate) mod caps;
pub(crate) mod dev;
pub(crate) mod device_ops;
pub(crate) mod hardware;
pub(crate) mod stats;
pub(crate) mod uaccess;
pub(crate) mod vm;

use crate::sys::global::Global;
use crate::sys::kmem::KmemCache;
use crate::uapi::kvm_cpuid_entry2;
use crate::vmx::Vmx;
use crate::x86::{msrs::MsrLists, Arch};
use kernel::prelude::*;
use kernel::sync::SetOnce;

/// The part of a vCPU kept in the `kvm_vcpu` cache; only `regs` may be copied to and from
/// userspace (the cache's usercopy region).
#[repr(C)]
pub(crate) struct VcpuArch {
    /// The guest registers of the KVM ABI.
    pub(crate) regs: crate::uapi::kvm_regs,
}

/// Everything `kvm_init()` builds, shared by all VMs.
#[pin_data]
pub(crate) struct Kvm {
    pub(crate) arch: Arch,
    /// The backend (the seed's `kvm_x86_ops`).
    pub(crate) vmx: Vmx,
    pub(crate) msrs: MsrLists,
    pub(crate) cpuid_supported: KVec<kvm_cpuid_entry2>,
    pub(crate) cpuid_emulated: KVec<kvm_cpuid_entry2>,
    /// The irqfd/VM-teardown workqueue (`kvm_irqfd_init`).
    pub(crate) wq: crate::sys::workqueue::OwnedQueue,
    #[pin]
    pub(crate) hw: hardware::Hardware,
    /// The vCPU cache (`kvm_vcpu_cache`), created after the CPU checks as in the seed.
    pub(crate) vcpu_cache: SetOnce<KmemCache<VcpuArch>>,
    /// The L1D flush decided by `vmx_setup_l1d_flush`, after `kvm_init`.
    pub(crate) l1d: SetOnce<crate::vmx::l1d::L1dFlush>,
    pub(crate) devices: device_ops::Registry,
}

static KVM: Global<Kvm> = Global::new();

/// The module's state, while the module is loaded.
pub(crate) fn kvm() -> Option<&'static Kvm> {
    KVM.get()
}

/// Publishes the state built by `kvm_init`'s first steps.
pub(crate) fn publish(k: Pin<KBox<Kvm>>) -> Result {
    KVM.publish(k)
}

/// Takes the state back at module exit.
///
/// # Safety
///
/// Every entry point that calls [`kvm`] (misc device, cpuhp, reboot, syscore,
/// user-return, shrinker, debugfs) has been unregistered, and no file of the module is
/// open (the module could not be unloading otherwise).
pub(crate) unsafe fn retract() -> Option<Pin<KBox<Kvm>>> {
    // SAFETY: Forwarded to our caller.
    unsafe { KVM.retract() }
}

impl Kvm {
    /// The sum of one stat over every VM (or every vCPU of every VM).
    pub(crate) fn sum_stat(&self, kind: stats::Kind, index: usize) -> u64 {
        let _ = (kind, index);
        0
    }
}

/// The MMU shrinker asks for `n` page-table pages back.
pub(crate) fn zap_for_shrinker(n: u64) -> u64 {
    let _ = n;
    0
}

// SPDX-License-Identifier: GPL-2.0

//! The generic core (the part of KVM in `virt/kvm/kvm_main.c`): the module-wide state,
//! `/dev/rkvm`, VMs, hardware enabling, stats and the device registry.

pub(crate) mod caps;
pub(crate) mod coalesced;
pub(crate) mod debugfs;
pub(crate) mod dev;
pub(crate) mod device_ops;
pub(crate) mod dirty_log;
pub(crate) mod dirty_ring;
pub(crate) mod enable_cap;
pub(crate) mod fault;
pub(crate) mod hardware;
pub(crate) mod ioeventfd;
pub(crate) mod irq;
pub(crate) mod irqchip;
pub(crate) mod kvmclock;
pub(crate) mod memslot;
pub(crate) mod mmu_notifier;
pub(crate) mod msr_filter;
pub(crate) mod nx_huge;
pub(crate) mod pit;
pub(crate) mod stats;
pub(crate) mod steal;
pub(crate) mod uaccess;
pub(crate) mod vcpu;
pub(crate) mod vfio;
pub(crate) mod vm;

use crate::sys::global::Global;
use crate::sys::kmem::KmemCache;
use crate::uapi::kvm_cpuid_entry2;
use crate::x86::{msrs::MsrLists, Arch, X86Ops};
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
    /// The backend (the seed's `kvm_x86_ops`): VMX or SVM.
    pub(crate) backend: KBox<dyn X86Ops>,
    pub(crate) msrs: MsrLists,
    pub(crate) cpuid_supported: KVec<kvm_cpuid_entry2>,
    pub(crate) cpuid_emulated: KVec<kvm_cpuid_entry2>,
    /// The irqfd/VM-teardown workqueue (`kvm_irqfd_init`).
    pub(crate) wq: crate::sys::workqueue::OwnedQueue,
    #[pin]
    pub(crate) hw: hardware::Hardware,
    /// The vCPU cache (`kvm_vcpu_cache`), created after the CPU checks as in the seed.
    pub(crate) vcpu_cache: SetOnce<KmemCache<VcpuArch>>,
    pub(crate) devices: device_ops::Registry,
    /// The debugfs directory (set by `kvm_init_debug`), parent of the per-VM ones.
    pub(crate) debugfs_dir: SetOnce<kernel::debugfs::Dir>,
    /// Every live VM, for the global stats and the shrinker.
    #[pin]
    pub(crate) vms: kernel::sync::Mutex<KVec<VmRef>>,
}

/// A VM in the registry: added at creation, removed in the VM's drop.
pub(crate) struct VmRef(*const vm::Vm);

// SAFETY: The pointer is only dereferenced under the registry mutex, and a VM removes
// itself (under the mutex) before it is freed.
unsafe impl Send for VmRef {}

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
    /// Runs `f` on every live VM.
    pub(crate) fn for_each_vm(&self, mut f: impl FnMut(&vm::Vm)) {
        let list = self.vms.lock();
        for r in list.iter() {
            // SAFETY: By `VmRef`'s invariant the VM is alive while it is in the list, and
            // the list is locked.
            f(unsafe { &*r.0 });
        }
    }

    pub(crate) fn vm_list_add(&self, v: &vm::Vm) -> Result {
        self.vms.lock().push(VmRef(v), GFP_KERNEL)?;
        Ok(())
    }

    pub(crate) fn vm_list_remove(&self, v: &vm::Vm) {
        let mut list = self.vms.lock();
        if let Some(i) = list.iter().position(|r| core::ptr::eq(r.0, v)) {
            let _ = list.remove(i);
        }
    }
}

/// The shortest time between two shrinker zaps of one VM: under sustained memory pressure
/// kswapd calls the shrinkers over and over, and a guest whose tables vanish faster than
/// it can refault its working set would make no progress at all.
const SHRINK_ZAP_INTERVAL_NS: u64 = 1_000_000_000;

/// The MMU shrinker asks for `n` page-table pages back: drop whole EPTs (they refault),
/// each VM's at most once per [`SHRINK_ZAP_INTERVAL_NS`].
pub(crate) fn zap_for_shrinker(n: u64) -> u64 {
    let Some(k) = kvm() else {
        return 0;
    };
    // Never wait for the registry: a VM being created allocates while holding it, and that
    // allocation may be what called the shrinker.
    let Some(list) = k.vms.try_lock() else {
        return 0;
    };
    let now = crate::sys::wait::now_ns();
    let mut freed = 0u64;
    for r in list.iter() {
        if freed >= n {
            break;
        }
        // SAFETY: By `VmRef`'s invariant the VM is alive while it is in the list, and the
        // list is locked.
        let v = unsafe { &*r.0 };
        let last = v.shrink_zap_ns.load(core::sync::atomic::Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < SHRINK_ZAP_INTERVAL_NS {
            continue;
        }
        v.shrink_zap_ns
            .store(now, core::sync::atomic::Ordering::Relaxed);
        freed = freed.saturating_add(v.zap_all(GFP_NOWAIT));
    }
    freed
}

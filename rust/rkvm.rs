// SPDX-License-Identifier: GPL-2.0

//! rkvm: a KVM-compatible hypervisor for x86-64, as an out-of-tree Rust-for-Linux module.
//!
//! Module init follows the 5.x `vmx_init()` → `kvm_init()` path step by step, one named
//! function per step, so this file reads like the seed's call tree. On AMD, `svm_init()`
//! takes `vmx_init()`'s place and hands `kvm_init()` the SVM backend; the steps are the
//! same, without the L1D flush:
//!
//! ```text
//! vmx_init()
//!  ├─ kvm_init()
//!  |   ├─ kvm_arch_init()            checks, x86_fpu + emulator caches, user-return MSRs,
//!  |   |                             mmu module init + PTE masks, timer, lapic
//!  |   ├─ kvm_irqfd_init()           workqueue
//!  |   ├─ kvm_arch_hardware_setup()  vmcs_config, per-CPU VMXON regions, MSR lists, CPUID
//!  |   ├─ check_processor_compat     on every online CPU
//!  |   ├─ cpuhp_setup_state_nocalls
//!  |   ├─ register_reboot_notifier
//!  |   ├─ kvm_vcpu_cache
//!  |   ├─ misc_register(/dev/rkvm)
//!  |   ├─ register_syscore
//!  |   ├─ kvm_preempt_ops
//!  |   ├─ kvm_init_debug()
//!  |   └─ kvm_vfio_ops_init()
//!  └─ vmx_setup_l1d_flush()
//! ```
//!
//! `kvm_exit()` undoes it in reverse (see [`Rkvm`]'s `Drop`). Documentation/rkvm/init.rst
//! maps every section of the seed to the function here.

use kernel::miscdevice::{MiscDeviceOptions, MiscDeviceRegistration};
use kernel::prelude::*;

mod kvm;
mod svm;
mod sys;
mod uapi;
mod vmx;
mod x86;

use kvm::debugfs::Debugfs;
use kvm::{dev::DevFile, kvm, Kvm};
use sys::cpu;
use sys::notifiers::{CpuHotplug, PreemptOps, RebootNotifier, Syscore};

module! {
    type: Rkvm,
    name: "rkvm",
    authors: ["rkvm developers"],
    description: "KVM-compatible hypervisor in Rust (Intel VMX, AMD SVM)",
    license: "GPL",
}

/// What `kvm_init()` registered, in registration order; `Drop` unregisters in reverse.
struct Rkvm {
    cpuhp: Option<CpuHotplug>,
    reboot: Option<RebootNotifier>,
    misc: Option<Pin<KBox<MiscDeviceRegistration<DevFile>>>>,
    syscore: Option<Syscore>,
    preempt: Option<PreemptOps>,
    debugfs: Option<Debugfs>,
    nx: Option<sys::nx::Recovery>,
}

impl kernel::Module for Rkvm {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        // KVM has one vendor module per backend; rkvm picks its backend here.
        if vmx::cpu_has_kvm_support() {
            vmx_init()
        } else if svm::cpu_has_svm() {
            svm_init()
        } else {
            pr_err!("no backend for this CPU vendor: neither VMX nor SVM\n");
            Err(EOPNOTSUPP)
        }
    }
}

/// What a vendor module hands `kvm_init()` (the seed's `vmx_x86_ops` and the checks
/// `kvm_arch_init` makes through it).
struct Vendor {
    /// `cpu_has_kvm_support()` and `*_disabled_by_bios()`.
    check_cpu_support: fn() -> Result,
    /// `hardware_setup()`: the backend, as the generic code will see it.
    hardware_setup: fn() -> Result<KBox<dyn x86::X86Ops>>,
    /// The two-dimensional page table format (`kvm_mmu_set_ept_masks` or NPT's).
    tdp: x86::mmu::TdpFormat,
}

/// `vmx_init()`: the VMX flavour of `kvm_init()`, then the L1D flush choice.
fn vmx_init() -> Result<Rkvm> {
    let rkvm = kvm_init(&Vendor {
        check_cpu_support: vmx::check_cpu_support,
        hardware_setup: vmx::hardware_setup,
        tdp: x86::mmu::TdpFormat::Ept,
    })?;
    // On error `rkvm` is dropped, which runs `kvm_exit()`.
    vmx_setup_l1d_flush()?;
    // Nested VMX is not offered, so there are no vmcs12 offsets to check
    // (`vmx_check_vmcs12_offsets`).
    if let Some(k) = kvm() {
        pr_info!(
            "loaded: /dev/rkvm ready, {} backend, {} CPUs\n",
            k.backend.name(),
            cpu::num_online()
        );
    }
    Ok(rkvm)
}

/// `svm_init()`: the SVM flavour of `kvm_init()`.
fn svm_init() -> Result<Rkvm> {
    let rkvm = kvm_init(&Vendor {
        check_cpu_support: svm::check_cpu_support,
        hardware_setup: svm::hardware_setup,
        tdp: x86::mmu::TdpFormat::Npt,
    })?;
    if let Some(k) = kvm() {
        pr_info!(
            "loaded: /dev/rkvm ready, {} backend, {} CPUs\n",
            k.backend.name(),
            cpu::num_online()
        );
    }
    Ok(rkvm)
}

/// `kvm_init()`.
fn kvm_init(vendor: &Vendor) -> Result<Rkvm> {
    // 4.1 kvm_arch_init(), 4.2 kvm_irqfd_init(), 4.3 kvm_arch_hardware_setup(): build the
    // shared state, then publish it for the callbacks registered below.
    let mut arch = kvm_arch_init(vendor)?;
    let wq = kvm_irqfd_init()?;
    let (backend, msrs, cpuid_supported, cpuid_emulated) = kvm_arch_hardware_setup(vendor)?;
    // The entry masks that depend on what hardware_setup enabled.
    if backend.tdp_dirty_log() {
        arch.mmu.log_writes_by_dirty_flag();
    }
    let k = KBox::pin_init(
        try_pin_init!(Kvm {
            arch,
            backend,
            msrs,
            cpuid_supported,
            cpuid_emulated,
            wq,
            hw <- kvm::hardware::Hardware::new(),
            vcpu_cache: kernel::sync::SetOnce::new(),
            devices: kvm::device_ops::Registry::init(),
            debugfs_dir: kernel::sync::SetOnce::new(),
            vms <- kernel::new_mutex!(KVec::new()),
        }? Error),
        GFP_KERNEL,
    )?;
    kvm::publish(k)?;
    let k = kvm().ok_or(EINVAL)?;

    let mut rkvm = Rkvm {
        cpuhp: None,
        reboot: None,
        misc: None,
        syscore: None,
        preempt: None,
        debugfs: None,
        nx: None,
    };
    // kvm_mmu_x86_module_init(): nx_huge_pages resolved, and its recovery work (which
    // reaches the VMs through the published state).
    rkvm.nx = Some(sys::nx::Recovery::start(kvm::nx_huge::recovery_work));
    // 4.4 Every online CPU must match the configuration.
    check_processor_compat_all(k)?;
    // 4.5 CPU hotplug.
    rkvm.cpuhp = Some(CpuHotplug::register(
        c"rkvm/cpu:online",
        rkvm_online_cpu,
        rkvm_offline_cpu,
    )?);
    // 4.6 Reboot.
    rkvm.reboot = Some(RebootNotifier::register(rkvm_reboot)?);
    // 4.7 The vCPU cache.
    kvm_vcpu_cache_create(k)?;
    // kvm_async_pf_init(): rkvm has no asynchronous page faults.
    // 4.8 The file operations' owner is this module: `MiscDevice` and `AnonFile` set it
    // from `THIS_MODULE`, so an open fd pins the module.
    // 4.9 /dev/rkvm.
    rkvm.misc = Some(KBox::pin_init(
        MiscDeviceRegistration::<DevFile>::register(MiscDeviceOptions { name: c"rkvm" }),
        GFP_KERNEL,
    )?);
    // 4.10 Suspend/resume/shutdown, and the preempt notifier ops.
    rkvm.syscore = Some(Syscore::register(rkvm_suspend, rkvm_resume, rkvm_shutdown));
    rkvm.preempt = Some(PreemptOps::init(kvm_sched_in, kvm_sched_out));
    // 4.11 debugfs.
    let debugfs = Debugfs::init()?;
    // Per-VM directories go under the same directory.
    k.debugfs_dir.populate(debugfs.dir().clone());
    rkvm.debugfs = Some(debugfs);
    // 4.12 The device-type registry was built with the state (`kvm_vfio_ops_init`).
    Ok(rkvm)
}

/// 4.1 `kvm_arch_init()`.
fn kvm_arch_init(vendor: &Vendor) -> Result<x86::Arch> {
    // 4.1.1 cpu_has_kvm_support(), vmx_disabled_by_bios(), FPU and FXSR.
    (vendor.check_cpu_support)()?;
    x86::check_cpu_support()?;
    // The host's XCR0 and IA32_XSS (kvm_host.xcr0, .xss), before the FPU cache is sized
    // from them.
    x86::cpuid::capture_host_xcr0();
    // 4.1.2 kmem_cache_create("x86_fpu") and kmem_alloc_emulator_cache().
    let (fpu_cache, fpu_size) = x86::fpu_cache_create()?;
    let emulator_cache = x86::emulator_cache_create()?;
    // 4.1.3 alloc_percpu(user_return_msrs).
    let uret = x86::uret::UserReturnMsrs::new(rkvm_on_user_return)?;
    // 4.1.4 kvm_mmu_module_init(), 4.1.6 kvm_mmu_set_mask_ptes().
    let mmu = x86::mmu::MmuModule::init(vendor.tdp, x86::host_phys_bits(), kvm::zap_for_shrinker)?;
    // 4.1.5 kvm_x86_ops: the vendor's, built by its hardware_setup (kvm_arch_hardware_setup).
    // 4.1.7 kvm_timer_init().
    let timer = x86::timer_init()?;
    // 4.1.8 kvm_lapic_init().
    let lapic = x86::lapic_init();
    // The MMU notifier callbacks every VM registers (part of the MMU's module init).
    kvm::mmu_notifier::init();
    Ok(x86::Arch {
        fpu_cache,
        fpu_size,
        emulator_cache,
        uret,
        mmu,
        timer,
        lapic,
    })
}

/// 4.2 `kvm_irqfd_init()`: the workqueue for irqfd and VM teardown work.
fn kvm_irqfd_init() -> Result<sys::workqueue::OwnedQueue> {
    sys::workqueue::OwnedQueue::new(c"rkvm-irqfd-cleanup")
}

type HardwareSetup = (
    KBox<dyn x86::X86Ops>,
    x86::msrs::MsrLists,
    KVec<uapi::kvm_cpuid_entry2>,
    KVec<uapi::kvm_cpuid_entry2>,
);

/// 4.3 `kvm_arch_hardware_setup()`: 4.3.1 `hardware_setup()`, 4.3.2 `kvm_init_msr_list()`,
/// and the CPUID tables that depend on both.
fn kvm_arch_hardware_setup(vendor: &Vendor) -> Result<HardwareSetup> {
    let backend = (vendor.hardware_setup)()?;
    let caps = backend.cpuid_caps();
    let msrs = x86::msrs::MsrLists::init(&*backend, caps.rdtscp)?;
    let supported = x86::cpuid::supported(caps)?.entries;
    let emulated = x86::cpuid::emulated().entries;
    Ok((backend, msrs, supported, emulated))
}

/// 4.4 `check_processor_compat` on every online CPU.
fn check_processor_compat_all(k: &Kvm) -> Result {
    let _cpus = cpu::CpusReadGuard::new();
    for c in cpu::possible_cpus().filter(|&c| cpu::online(c)) {
        let mut r = Ok(());
        cpu::run_on(c, || r = k.backend.check_processor_compat())?;
        r?;
    }
    Ok(())
}

/// 4.7 `kvm_cache_create_usercopy("kvm_vcpu")`: only the ABI register block may cross to
/// userspace.
fn kvm_vcpu_cache_create(k: &Kvm) -> Result {
    let user = (
        core::mem::offset_of!(kvm::VcpuArch, regs),
        size_of::<uapi::kvm_regs>(),
    );
    let cache = sys::kmem::KmemCache::new(c"rkvm_vcpu", size_of::<kvm::VcpuArch>(), 0, user)?;
    if !k.vcpu_cache.populate(cache) {
        return Err(EBUSY);
    }
    Ok(())
}

/// `vmx_setup_l1d_flush()`: the backend's step after `kvm_init`.
fn vmx_setup_l1d_flush() -> Result {
    kvm().ok_or(EINVAL)?.backend.late_init()
}

/// `kvm_exit()`: everything `kvm_init()` did, in reverse.
impl Drop for Rkvm {
    fn drop(&mut self) {
        self.nx.take();
        self.debugfs.take();
        self.preempt.take();
        self.syscore.take();
        self.misc.take();
        self.reboot.take();
        self.cpuhp.take();
        // Host MSR values back on every CPU while the user-return notifiers still find
        // the state (see `UserReturnMsrs::restore_all`).
        if let Some(k) = kvm() {
            k.arch.uret.restore_all();
        }
        // SAFETY: Every entry point that reaches the shared state is gone: the misc device
        // (no file can be open while the module unloads), cpuhp, reboot, syscore, debugfs
        // above; the user-return notifiers and the shrinker are owned by the state and go
        // with it.
        drop(unsafe { kvm::retract() });
        pr_info!("unloaded\n");
    }
}

// ---- Callbacks registered by kvm_init() ----------------------------------------------

extern "C" fn rkvm_online_cpu(_cpu: c_uint) -> c_int {
    match kvm() {
        Some(k) => match k.hw.cpu_online(&*k.backend) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        },
        None => 0,
    }
}

extern "C" fn rkvm_offline_cpu(_cpu: c_uint) -> c_int {
    if let Some(k) = kvm() {
        k.hw.cpu_offline(&*k.backend);
    }
    0
}

extern "C" fn rkvm_reboot() {
    if let Some(k) = kvm() {
        pr_info!("exiting hardware virtualization\n");
        k.hw.reboot(&*k.backend);
    }
}

extern "C" fn rkvm_suspend() -> c_int {
    if let Some(k) = kvm() {
        k.hw.suspend(&*k.backend);
    }
    0
}

extern "C" fn rkvm_resume() {
    if let Some(k) = kvm() {
        k.hw.resume(&*k.backend);
    }
}

extern "C" fn rkvm_shutdown() {
    rkvm_reboot();
}

extern "C" fn rkvm_on_user_return(c: c_uint) {
    if let Some(k) = kvm() {
        k.arch.uret.on_user_return(c);
    }
}

/// `kvm_sched_in`: a vCPU task got a CPU back. Nothing to reload: no VMX state lives
/// on a CPU outside a VMX window; the vCPU is no longer a directed-yield candidate.
extern "C" fn kvm_sched_in(ctx: *mut c_void, _cpu: c_int) {
    kvm::vcpu::sched_in(ctx);
}

extern "C" fn kvm_sched_out(ctx: *mut c_void) {
    kvm::vcpu::sched_out(ctx);
}

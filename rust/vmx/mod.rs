// SPDX-License-Identifier: GPL-2.0

//! The Intel VMX backend.
//!
//! - `caps.rs`: what the CPU can do (`vmcs_config`), computed at `hardware_setup`.
//! - `asm.rs`: the VMX instructions.
//! - `window.rs`: entering and leaving VMX operation safely (the CR4 trap).
//! - `l1d.rs`: the L1D flush on VM entry.
//! - `spec.rs`: the other speculative-execution hygiene around entry and exit.
//! - `inject.rs`: the VM-entry fields that inject an event, valid whatever the event.

pub(crate) mod asm;
pub(crate) mod caps;
pub(crate) mod entry;
pub(crate) mod inject;
pub(crate) mod l1d;
pub(crate) mod spec;
pub(crate) mod vcpu;
pub(crate) mod vmcs;
pub(crate) mod window;

use crate::sys::cpu::{self, Feature, IrqGuard};
use crate::sys::ffi;
use crate::sys::msr::{self, index};
use crate::sys::page::{Hpa, PhysPage};
use crate::sys::percpu::PerCpu;
use crate::sys::ratelimit::pr_err_ratelimited;
use crate::x86::cpuid::BackendCpuidCaps;
use crate::x86::{VcpuOps, X86Ops};
use caps::{proc2, VmcsConfig};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use kernel::prelude::*;

/// kvm_intel's module parameters that rkvm honours (declared in the C shim so that they
/// appear under /sys/module/rkvm/parameters with the same names).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Params {
    pub(crate) ept: bool,
    pub(crate) vpid: bool,
    pub(crate) unrestricted_guest: bool,
    pub(crate) pml: bool,
    pub(crate) l1d_flush: l1d::Mode,
}

impl Params {
    fn from_module() -> Self {
        let mut p = ffi::rkvm_params::default();
        // SAFETY: Writes the current parameter values into `p`.
        unsafe { ffi::rkvm_params_get(&mut p) };
        Self {
            ept: p.ept != 0,
            vpid: p.vpid != 0,
            unrestricted_guest: p.unrestricted_guest != 0,
            pml: p.pml != 0,
            l1d_flush: l1d::Mode::from_param(p.vmentry_l1d_flush),
        }
    }

    fn publish(&self) {
        let p = ffi::rkvm_params {
            ept: self.ept.into(),
            vpid: self.vpid.into(),
            unrestricted_guest: self.unrestricted_guest.into(),
            pml: self.pml.into(),
            vmentry_l1d_flush: self.l1d_flush.to_param(),
            // kvm_amd's: no nested paging on Intel.
            npt: 0,
        };
        // SAFETY: Copies `p` into the parameters.
        unsafe { ffi::rkvm_params_set_effective(&p) };
    }
}

/// Per-CPU VMX state: the VMXON region (the seed's `alloc_kvm_area`) and whether
/// virtualization is enabled on the CPU.
pub(crate) struct VmxCpu {
    vmxon: PhysPage,
    enabled: AtomicBool,
    /// The VM whose vCPU this CPU entered last (for IBPB).
    last_vm: crate::x86::ibpb::LastVm,
    /// The id of the vCPU this CPU entered last (0: none), for the TLB flush.
    last_vcpu: AtomicU64,
}

/// The VMX backend, after `hardware_setup`.
pub(crate) struct Vmx {
    /// The VMX configuration every CPU shares.
    pub(crate) config: VmcsConfig,
    /// Parameters in effect.
    pub(crate) params: Params,
    /// Speculative-execution hygiene the host wants.
    pub(crate) spec: spec::Spec,
    cpus: PerCpu<VmxCpu>,
    /// VPIDs handed to vCPUs (8 KiB: kept out of the stack-built `Vmx`).
    pub(crate) vpids: &'static vcpu::VpidAllocator,
    /// The L1D flush decided by `vmx_setup_l1d_flush`, after `kvm_init`.
    pub(crate) l1d: kernel::sync::SetOnce<l1d::L1dFlush>,
    /// Guests may run XSAVES/XRSTORS ("enable XSAVES/XRSTORS", with the host's XSAVES).
    pub(crate) xsaves: bool,
    /// The host has XSAVE (the guest's FPU is switched with it).
    pub(crate) xsave: bool,
    /// The host's TSC rate in kHz (0: unknown), which bounds each window.
    pub(crate) tsc_khz: u64,
    /// The MSR bitmap of every vCPU that no MSR filter restricts (read-only once built).
    pub(crate) msr_bitmap: PhysPage,
}

/// The VPID bitmap; module data, fresh on every load.
static VPIDS: vcpu::VpidAllocator = vcpu::VpidAllocator::new();

/// `cpu_has_kvm_support()`: CPUID.1:ECX.VMX.
pub(crate) fn cpu_has_kvm_support() -> bool {
    cpu::cpuid(1, 0)[2] & (1 << 5) != 0
}

/// The VMX half of `kvm_arch_init`'s checks (4.1.1): VMX present and not disabled by the
/// BIOS.
pub(crate) fn check_cpu_support() -> Result {
    if !cpu_has_kvm_support() {
        pr_err!("no VMX on this CPU\n");
        return Err(EOPNOTSUPP);
    }
    if vmx_disabled_by_bios() {
        pr_err!("VMX disabled by BIOS (IA32_FEATURE_CONTROL)\n");
        return Err(EOPNOTSUPP);
    }
    Ok(())
}

/// `vmx_disabled_by_bios()`: IA32_FEATURE_CONTROL locked without VMX outside SMX (the
/// kernel then also clears X86_FEATURE_VMX).
pub(crate) fn vmx_disabled_by_bios() -> bool {
    const LOCKED: u64 = 1 << 0;
    const VMX_OUTSIDE_SMX: u64 = 1 << 2;
    match msr::read(index::IA32_FEAT_CTL) {
        Ok(v) => (v & LOCKED != 0 && v & VMX_OUTSIDE_SMX == 0) || !cpu::boot_cpu_has(Feature::Vmx),
        Err(_) => true,
    }
}

/// The VMX configuration this CPU would get with `params`.
fn this_cpu_config(params: &Params) -> Result<VmcsConfig> {
    let mut c = VmcsConfig::probe().map_err(|e| {
        pr_err!("CPU {}: {}\n", cpu::this_cpu(), e);
        EIO
    })?;
    c.apply_params(params);
    Ok(c)
}

/// `hardware_setup()`: the VMX configuration, the module parameters in effect and the
/// per-CPU VMXON regions.
pub(crate) fn hardware_setup() -> Result<KBox<dyn X86Ops>> {
    let mut params = Params::from_module();
    if !params.ept {
        pr_err!("ept=0 is not supported: rkvm maps guest memory with EPT only\n");
        return Err(EINVAL);
    }
    let mut config = {
        let _irq = IrqGuard::new();
        this_cpu_config(&params)?
    };
    // What the hardware cannot do is off, whatever the parameter said.
    params.vpid &= config.has2(proc2::ENABLE_VPID);
    params.unrestricted_guest &= config.has2(proc2::UNRESTRICTED_GUEST);
    // The page-modification log needs EPT accessed and dirty flags.
    params.pml &= config.has2(proc2::ENABLE_PML) && config.ept_vpid & caps::ept_vpid::EPT_AD != 0;
    // Every CPU's configuration is computed with these final parameters (compat check).
    config.apply_params(&params);
    // No posted interrupts (and so no wakeup handler): rkvm has no in-kernel APIC.
    let revision = config.revision_id();
    let cpus = alloc_kvm_area(revision)?;
    pr_info!(
        "VMX: ept=1 vpid={} unrestricted_guest={} pml={} (VMCS revision {:#x})\n",
        u8::from(params.vpid),
        u8::from(params.unrestricted_guest),
        u8::from(params.pml),
        revision
    );
    let xsaves = config.has2(proc2::XSAVES) && crate::x86::cpuid::host_has_xsaves();
    let vmx = Vmx {
        config,
        params,
        spec: spec::Spec::probe(),
        cpus,
        vpids: &VPIDS,
        l1d: kernel::sync::SetOnce::new(),
        xsaves,
        xsave: crate::sys::cpu::boot_cpu_has(crate::sys::cpu::Feature::Xsave),
        tsc_khz: u64::from(crate::sys::cpu::tsc_khz()),
        msr_bitmap: vcpu::msr_bitmap()?,
    };
    Ok(KBox::new(vmx, GFP_KERNEL)?)
}

/// `alloc_kvm_area()`: one VMXON region per possible CPU, stamped with the revision id.
fn alloc_kvm_area(revision: u32) -> Result<PerCpu<VmxCpu>> {
    PerCpu::new(|_cpu| {
        let vmxon = PhysPage::new()?;
        vmxon.write(0, u64::from(revision));
        Ok(VmxCpu {
            vmxon,
            enabled: AtomicBool::new(false),
            last_vm: crate::x86::ibpb::LastVm::new(),
            last_vcpu: AtomicU64::new(0),
        })
    })
}

impl Vmx {
    /// `vmx_setup_l1d_flush()`: decides the L1D flush on VM entry.
    fn setup_l1d_flush(&self) -> Result {
        let flush = l1d::L1dFlush::setup(self.params.l1d_flush)?;
        let mut shown = self.params;
        shown.l1d_flush = flush.mode();
        shown.publish();
        if !self.l1d.populate(flush) {
            return Err(EBUSY);
        }
        Ok(())
    }

    /// Records vCPU `id` as the last one this CPU entered; returns the one before.
    pub(crate) fn swap_last_vcpu(&self, id: u64, irq: &IrqGuard) -> u64 {
        self.cpus
            .this_cpu(irq)
            .last_vcpu
            .swap(id, Ordering::Relaxed)
    }

    /// This CPU's VMXON region; `None` if the CPU is not enabled.
    pub(crate) fn enabled_vmxon(&self, irq: &IrqGuard) -> Option<Hpa> {
        let c = self.cpus.this_cpu(irq);
        c.enabled.load(Ordering::Acquire).then(|| c.vmxon.phys())
    }
}

impl X86Ops for Vmx {
    fn name(&self) -> &'static CStr {
        c"vmx"
    }

    fn check_processor_compat(&self) -> Result {
        let _irq = IrqGuard::new();
        let me = cpu::this_cpu();
        if !cpu::this_cpu_has(Feature::MsrIa32FeatCtl) || !cpu::this_cpu_has(Feature::Vmx) {
            pr_err!("VMX is disabled on CPU {}\n", me);
            return Err(EIO);
        }
        if cpu::regs::cr4() & cpu::regs::CR4_VMXE != 0 {
            pr_err!(
                "CPU {}: VMX is in use by another hypervisor (kvm_intel?)\n",
                me
            );
            return Err(EBUSY);
        }
        if this_cpu_config(&self.params)? != self.config {
            pr_err!("CPU {} feature inconsistency!\n", me);
            return Err(EIO);
        }
        Ok(())
    }

    fn hardware_enable(&self) -> Result {
        let irq = IrqGuard::new();
        let c = self.cpus.this_cpu(&irq);
        if c.enabled.load(Ordering::Acquire) {
            return Ok(());
        }
        // A VMXON/VMXOFF round trip proves the CPU is free and usable right now.
        match window::VmxOn::enter(c.vmxon.phys(), &irq) {
            Ok(on) => drop(on),
            // Every VM creation retries this while kvm_intel holds VMX: rate-limited.
            Err(window::EnterError::Busy) => {
                pr_err_ratelimited!(
                    "CPU {}: VMX is in use by another hypervisor\n",
                    cpu::this_cpu()
                );
                return Err(EBUSY);
            }
            Err(window::EnterError::VmxonFailed) => {
                pr_err_ratelimited!("CPU {}: VMXON failed\n", cpu::this_cpu());
                return Err(EIO);
            }
        }
        // Whatever ran here while rkvm was off this CPU, the next entry flushes.
        c.last_vcpu.store(0, Ordering::Relaxed);
        c.enabled.store(true, Ordering::Release);
        Ok(())
    }

    fn hardware_disable(&self) {
        let irq = IrqGuard::new();
        // Nothing to undo in hardware: VMX is only on inside a window, and no window can
        // be open here (interrupts were on to get here, or we run in the window's place).
        self.cpus
            .this_cpu(&irq)
            .enabled
            .store(false, Ordering::Release);
    }

    fn cpuid_caps(&self) -> BackendCpuidCaps {
        BackendCpuidCaps {
            rdtscp: self.config.has2(proc2::ENABLE_RDTSCP),
            invpcid: self.config.has2(proc2::ENABLE_INVPCID),
            xsaves: self.xsaves,
        }
    }

    fn needs_rmode_pages(&self) -> bool {
        !self.params.unrestricted_guest
    }

    fn setup_mce(&self, mcg_cap: u64) -> u64 {
        mcg_cap
    }

    fn tsc_scaling(&self) -> bool {
        self.config.has2(proc2::TSC_SCALING)
    }

    fn tdp_dirty_log(&self) -> bool {
        self.params.pml
    }

    fn tdp_max_leaf_level(&self) -> u8 {
        let c = self.config.ept_vpid;
        match (
            c & caps::ept_vpid::EPT_2MB_PAGE,
            c & caps::ept_vpid::EPT_1GB_PAGE,
        ) {
            (0, _) => 1,
            (_, 0) => 2,
            _ => 3,
        }
    }

    fn has_cmci(&self) -> bool {
        true
    }

    fn reset_ucode_rev(&self) -> u64 {
        0x1_0000_0000
    }

    fn one_shadow_bit(&self) -> bool {
        false
    }

    fn hypercall_insn(&self) -> [u8; 3] {
        // VMCALL.
        [0x0f, 0x01, 0xc1]
    }

    fn late_init(&self) -> Result {
        self.setup_l1d_flush()
    }

    fn vcpu_create(&'static self) -> Result<KBox<dyn VcpuOps>> {
        Ok(KBox::new(vcpu::VmxVcpu::new(self)?, GFP_KERNEL_ACCOUNT)?)
    }
}

// SPDX-License-Identifier: GPL-2.0

//! The AMD SVM backend.
//!
//! - `vmcb.rs`: the VMCB, its layout (from the kernel's `struct vmcb`) and field bits.
//! - `asm.rs`: CLGI, STGI, VMSAVE.
//! - `entry.rs`: VMRUN and the guest's general registers.
//! - `vcpu/`: the run window, the guest state in and out of the VMCB, events, exits.
//!
//! Like the VMX backend, SVM is on only inside a run window: EFER.SVME is set with
//! interrupts off when a vCPU is about to run and cleared before they are on again. An
//! EFER.SVME already set means another hypervisor (kvm_amd) owns SVM on this CPU: the run
//! answers `EBUSY`, as the VMX backend does when CR4.VMXE is taken.

pub(crate) mod asm;
pub(crate) mod entry;
pub(crate) mod vcpu;
pub(crate) mod vmcb;

use crate::sys::cpu::{self, Feature, IrqGuard};
use crate::sys::ffi;
use crate::sys::msr::{self, index};
use crate::sys::page::{ContigPages, PhysPage};
use crate::sys::percpu::PerCpu;
use crate::x86::cpuid::BackendCpuidCaps;
use crate::x86::{VcpuOps, X86Ops};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use kernel::prelude::*;

/// EFER.SVME.
pub(crate) const EFER_SVME: u64 = 1 << 12;
/// VM_CR.SVMDIS: the firmware turned SVM off.
const VM_CR_SVMDIS: u64 = 1 << 4;

/// CPUID 0x8000000A EDX: the SVM features rkvm looks at.
pub(crate) mod feature {
    pub(crate) const NPT: u32 = 1 << 0;
    pub(crate) const NRIPS: u32 = 1 << 3;
    pub(crate) const FLUSH_BY_ASID: u32 = 1 << 6;
    pub(crate) const DECODE_ASSISTS: u32 = 1 << 7;
}

/// Per-CPU SVM state.
pub(crate) struct SvmCpu {
    /// The host save area VMRUN uses (VM_HSAVE_PA).
    hsave: PhysPage,
    /// Where the window keeps the host's FS/GS/TR/LDTR and syscall MSRs (VMSAVE).
    host_save: vmcb::Vmcb,
    enabled: AtomicBool,
    /// ASIDs handed out on this CPU in the current generation: 1..=`next_asid - 1`.
    next_asid: AtomicU32,
    /// Bumped when this CPU's ASIDs run out; every ASID of older generations is stale.
    asid_gen: AtomicU64,
    /// The next VMRUN on this CPU must flush every ASID's translations: a new generation
    /// reuses ASIDs, or another hypervisor ran guests here since rkvm's last window.
    flush_all_pending: AtomicBool,
    /// The VM whose vCPU this CPU entered last (for IBPB).
    last_vm: crate::x86::ibpb::LastVm,
}

/// The SVM backend, after `hardware_setup`.
pub(crate) struct Svm {
    /// CPUID 0x8000000A EDX.
    pub(crate) features: u32,
    /// The highest ASID (CPUID 0x8000000A EBX minus one: ASID 0 is the host's).
    pub(crate) max_asid: u32,
    pub(crate) layout: vmcb::Layout,
    cpus: PerCpu<SvmCpu>,
    /// Every port intercepted (the I/O permission map, 12 KiB, shared by all vCPUs).
    iopm: ContigPages,
    /// Every MSR intercepted (the MSR permission map, 8 KiB, shared by all vCPUs): the
    /// generic code keeps every guest MSR in software and applies the MSR filter.
    msrpm: ContigPages,
    /// Return-stack refill after #VMEXIT (the host's RSB_VMEXIT choice).
    pub(crate) entry_flags: u64,
    /// IBPB between VMs.
    ibpb: bool,
    /// Interrupts at the in-kernel APIC timer's deadline (no preemption timer on SVM).
    pub(crate) deadline: crate::sys::wait::DeadlineTimers,
    /// The CPU has XSAVES, which SVM cannot intercept: guests run it with their own
    /// IA32_XSS (0) loaded.
    pub(crate) xsaves: bool,
}

/// `cpu_has_svm()`: CPUID 0x80000001 ECX.SVM, as the kernel sees it.
pub(crate) fn cpu_has_svm() -> bool {
    cpu::boot_cpu_has(Feature::Svm)
}

/// `svm_check_processor_compat`'s firmware half: VM_CR.SVMDIS.
fn svm_disabled_by_bios() -> bool {
    msr::read(index::VM_CR).is_ok_and(|v| v & VM_CR_SVMDIS != 0)
}

/// The SVM half of `kvm_arch_init`'s checks (4.1.1): SVM present, not disabled by the
/// firmware, and with nested paging (rkvm maps guest memory with NPT only).
pub(crate) fn check_cpu_support() -> Result {
    if !cpu_has_svm() {
        pr_err!("no SVM on this CPU\n");
        return Err(EOPNOTSUPP);
    }
    if svm_disabled_by_bios() {
        pr_err!("SVM disabled by BIOS (VM_CR.SVMDIS)\n");
        return Err(EOPNOTSUPP);
    }
    if cpu::cpuid(0x8000_000a, 0)[3] & feature::NPT == 0 {
        pr_err!("SVM without nested paging is not supported\n");
        return Err(EOPNOTSUPP);
    }
    Ok(())
}

/// `svm_hardware_setup()`: the features, the VMCB layout, the per-CPU save areas and
/// the I/O permission map.
pub(crate) fn hardware_setup() -> Result<KBox<dyn X86Ops>> {
    let mut p = ffi::rkvm_params::default();
    // SAFETY: Writes the current parameter values into `p`.
    unsafe { ffi::rkvm_params_get(&mut p) };
    if p.npt == 0 {
        pr_err!("npt=0 is not supported: rkvm maps guest memory with NPT only\n");
        return Err(EINVAL);
    }
    let [_, nasid, _, features] = cpu::cpuid(0x8000_000a, 0);
    if nasid < 2 {
        pr_err!(
            "SVM reports {} ASIDs: at least one besides the host's is needed\n",
            nasid
        );
        return Err(EIO);
    }
    let cpus = PerCpu::new(|_cpu| {
        Ok(SvmCpu {
            hsave: PhysPage::new()?,
            host_save: vmcb::Vmcb::new()?,
            enabled: AtomicBool::new(false),
            // Past the last ASID: the first vCPU on the CPU starts a generation, with a
            // full flush (whatever ran before rkvm may have left translations behind).
            next_asid: AtomicU32::new(nasid),
            asid_gen: AtomicU64::new(1),
            flush_all_pending: AtomicBool::new(true),
            last_vm: crate::x86::ibpb::LastVm::new(),
        })
    })?;
    // APM 15.10.1 and 15.11: 12 KiB and 8 KiB, physically contiguous.
    let iopm = ContigPages::new(3 * 4096, 0xff)?;
    let msrpm = ContigPages::new(2 * 4096, 0xff)?;
    let mut entry_flags = 0;
    if cpu::boot_cpu_has(Feature::RsbVmexit) {
        entry_flags |= entry::flags::RSB_FILL;
    }
    if cpu::boot_cpu_has(Feature::ClearCpuBufVm) || cpu::boot_cpu_has(Feature::ClearCpuBuf) {
        entry_flags |= entry::flags::VERW;
    }
    pr_info!(
        "SVM: npt=1 nrips={} flush_by_asid={} asids={}\n",
        u8::from(features & feature::NRIPS != 0),
        u8::from(features & feature::FLUSH_BY_ASID != 0),
        nasid
    );
    // What is in effect, under /sys/module/rkvm/parameters: kvm_amd's npt, and none of
    // kvm_intel's features (the L1D flush is VMX's: "not required" here).
    let shown = ffi::rkvm_params {
        npt: 1,
        vmentry_l1d_flush: ffi::RKVM_L1D_FLUSH_NEVER as i32,
        ..Default::default()
    };
    // SAFETY: Copies `shown` into the parameters.
    unsafe { ffi::rkvm_params_set_effective(&shown) };
    let svm = Svm {
        features,
        max_asid: nasid - 1,
        layout: vmcb::layout(),
        cpus,
        iopm,
        msrpm,
        entry_flags,
        ibpb: crate::x86::ibpb::wanted(),
        deadline: crate::sys::wait::DeadlineTimers::new(),
        xsaves: crate::x86::cpuid::host_has_xsaves(),
    };
    Ok(KBox::new(svm, GFP_KERNEL)?)
}

/// This CPU's part of a run window, while SVM is on.
pub(crate) struct CpuWindow<'a> {
    pub(crate) cpu: &'a SvmCpu,
    /// EFER as the host had it.
    host_efer: u64,
    /// Interrupts stay off for the life of the window.
    irq: &'a IrqGuard,
}

/// Why SVM could not be turned on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EnterError {
    /// This CPU was not enabled (hardware_enable).
    Disabled,
    /// EFER.SVME is already set: another hypervisor holds SVM on this CPU.
    Busy,
}

impl Svm {
    /// Turns SVM on for a window: EFER.SVME, VM_HSAVE_PA, GIF clear, the host's state in
    /// the save area. Dropping the result undoes it in reverse.
    pub(crate) fn open<'a>(&'a self, irq: &'a IrqGuard) -> Result<CpuWindow<'a>, EnterError> {
        let c = self.cpus.this_cpu(irq);
        if !c.enabled.load(Ordering::Acquire) {
            return Err(EnterError::Disabled);
        }
        let efer = msr::read(index::EFER).map_err(|_| EnterError::Busy)?;
        if efer & EFER_SVME != 0 {
            return Err(EnterError::Busy);
        }
        msr::write(index::EFER, efer | EFER_SVME).map_err(|_| EnterError::Busy)?;
        // Another hypervisor's VM_HSAVE_PA here means it ran guests on this CPU since the
        // last window: its ASIDs' translations may alias rkvm's. Start a new generation.
        if msr::read(index::VM_HSAVE_PA).map_or(true, |pa| pa != c.hsave.phys().0) {
            c.asid_gen.fetch_add(1, Ordering::Relaxed);
            c.next_asid.store(1, Ordering::Relaxed);
            c.flush_all_pending.store(true, Ordering::Relaxed);
        }
        if msr::write(index::VM_HSAVE_PA, c.hsave.phys().0).is_err() {
            let _ = msr::write(index::EFER, efer);
            return Err(EnterError::Busy);
        }
        // SAFETY: EFER.SVME is set; `CpuWindow::drop` runs STGI before clearing it.
        unsafe { asm::clgi() };
        // SAFETY: EFER.SVME is set; the save area is this CPU's own page.
        unsafe { asm::vmsave(c.host_save.pa()) };
        Ok(CpuWindow {
            cpu: c,
            host_efer: efer,
            irq,
        })
    }

    /// A fresh ASID for a vCPU on this CPU: `(asid, generation)`. When the CPU's ASIDs
    /// run out a new generation starts, and the CPU's next VMRUN flushes every ASID's
    /// translations ([`Svm::take_flush_all`]).
    pub(crate) fn new_asid(&self, w: &CpuWindow<'_>) -> (u32, u64) {
        let c = w.cpu;
        let mut next = c.next_asid.load(Ordering::Relaxed);
        if next > self.max_asid || next == 0 {
            c.asid_gen.fetch_add(1, Ordering::Relaxed);
            c.flush_all_pending.store(true, Ordering::Relaxed);
            next = 1;
        }
        c.next_asid.store(next + 1, Ordering::Relaxed);
        (next, c.asid_gen.load(Ordering::Relaxed))
    }

    /// Whether this CPU's next VMRUN must flush every ASID.
    pub(crate) fn flush_all_pending(&self, w: &CpuWindow<'_>) -> bool {
        w.cpu.flush_all_pending.load(Ordering::Relaxed)
    }

    /// A VMRUN flushed every ASID on this CPU.
    pub(crate) fn flushed_all(&self, w: &CpuWindow<'_>) {
        w.cpu.flush_all_pending.store(false, Ordering::Relaxed);
    }

    /// The current ASID generation of this CPU.
    pub(crate) fn asid_gen(&self, w: &CpuWindow<'_>) -> u64 {
        w.cpu.asid_gen.load(Ordering::Relaxed)
    }

    /// Called in the window before this CPU enters a vCPU of VM `tag`.
    pub(crate) fn switch_vm(&self, w: &CpuWindow<'_>, tag: crate::x86::ibpb::VmTag) {
        w.cpu.last_vm.switch(tag, self.ibpb, w.irq);
    }

    /// A vCPU of VM `tag` goes away: no CPU may keep its tag.
    pub(crate) fn forget_vm(&self, tag: crate::x86::ibpb::VmTag) {
        for c in self.cpus.iter() {
            c.last_vm.forget(tag);
        }
    }

    /// Physical addresses of the I/O and MSR permission maps.
    pub(crate) fn iopm_pa(&self) -> u64 {
        self.iopm.phys().0
    }

    pub(crate) fn msrpm_pa(&self) -> u64 {
        self.msrpm.phys().0
    }
}

impl CpuWindow<'_> {
    pub(crate) fn host_save_pa(&self) -> u64 {
        self.cpu.host_save.pa()
    }
}

impl Drop for CpuWindow<'_> {
    fn drop(&mut self) {
        // SAFETY: EFER.SVME is still set (cleared just below); interrupts stay off until
        // the IRQ guard goes, so what GIF held is taken after the window.
        unsafe { asm::stgi() };
        let _ = msr::write(index::EFER, self.host_efer);
    }
}

impl X86Ops for Svm {
    fn name(&self) -> &'static CStr {
        c"svm"
    }

    fn check_processor_compat(&self) -> Result {
        let _irq = IrqGuard::new();
        let me = cpu::this_cpu();
        if !cpu::this_cpu_has(Feature::Svm) || svm_disabled_by_bios() {
            pr_err!("SVM is disabled on CPU {}\n", me);
            return Err(EIO);
        }
        if msr::read(index::EFER).is_ok_and(|v| v & EFER_SVME != 0) {
            pr_err!(
                "CPU {}: SVM is in use by another hypervisor (kvm_amd?)\n",
                me
            );
            return Err(EBUSY);
        }
        if cpu::cpuid(0x8000_000a, 0)[3] != self.features {
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
        // SVM is only on inside a window; here it is only checked to be free.
        if msr::read(index::EFER).map_or(true, |v| v & EFER_SVME != 0) {
            crate::sys::ratelimit::pr_err_ratelimited!(
                "CPU {}: SVM is in use by another hypervisor\n",
                cpu::this_cpu()
            );
            return Err(EBUSY);
        }
        c.enabled.store(true, Ordering::Release);
        Ok(())
    }

    fn hardware_disable(&self) {
        let irq = IrqGuard::new();
        self.cpus
            .this_cpu(&irq)
            .enabled
            .store(false, Ordering::Release);
    }

    fn cpuid_caps(&self) -> BackendCpuidCaps {
        // RDTSCP and INVPCID run natively (neither is intercepted).
        BackendCpuidCaps {
            rdtscp: cpu::boot_cpu_has(Feature::Rdtscp),
            invpcid: cpu::cpuid(7, 0)[1] & (1 << 10) != 0,
            xsaves: self.xsaves,
        }
    }

    fn needs_rmode_pages(&self) -> bool {
        // SVM runs real mode as it is.
        false
    }

    fn setup_mce(&self, mcg_cap: u64) -> u64 {
        // Bits 63:9 of IA32_MCG_CAP are reserved on AMD.
        mcg_cap & 0x1ff
    }

    fn tsc_scaling(&self) -> bool {
        // The TSC ratio MSR is not used yet (QEMU's SVM has none to test it with).
        false
    }

    fn tdp_dirty_log(&self) -> bool {
        false
    }

    fn tdp_max_leaf_level(&self) -> u8 {
        // Nested tables take the host's paging format: 1 GiB pages if the host has them.
        if crate::sys::cpu::boot_cpu_has(crate::sys::cpu::Feature::Gbpages) {
            3
        } else {
            2
        }
    }

    fn has_cmci(&self) -> bool {
        false
    }

    fn reset_ucode_rev(&self) -> u64 {
        0x0100_0065
    }

    fn one_shadow_bit(&self) -> bool {
        true
    }

    fn hypercall_insn(&self) -> [u8; 3] {
        // VMMCALL.
        [0x0f, 0x01, 0xd9]
    }

    fn late_init(&self) -> Result {
        Ok(())
    }

    fn vcpu_create(&'static self) -> Result<KBox<dyn VcpuOps>> {
        Ok(KBox::new(vcpu::SvmVcpu::new(self)?, GFP_KERNEL_ACCOUNT)?)
    }
}

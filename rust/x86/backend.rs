// SPDX-License-Identifier: GPL-2.0

//! The seam between the generic code and a hardware backend (VMX or SVM), in the spirit
//! of NetBSD NVMM's `nvmm_impl`: module-wide calls ([`X86Ops`], the seed's
//! `kvm_x86_ops`), a per-vCPU object ([`VcpuOps`]) whose one job is to run the guest
//! until an exit it cannot finish, and the context it runs with ([`RunCtx`]).
//!
//! The generic code never sees a VMCS or VMCB; a backend never sees an ioctl. Exits come
//! back decoded ([`super::exit::Exit`]); events to inject are chosen by the generic code
//! and left in [`VcpuState::events`] for the backend to write in its own format.

use super::cpuid::BackendCpuidCaps;
use super::msr_access::MsrEnv;
use super::stats::VcpuCounters;
use super::{exit::Exit, quirks::Quirks, state::VcpuState, uret, GuestFpu};
use crate::sys::page::Hpa;
use crate::uapi::kvm_cpuid_entry2;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64};
use kernel::prelude::*;

/// The module-wide backend calls (the seed's `kvm_x86_ops`).
pub(crate) trait X86Ops: Send + Sync {
    /// "vmx" or "svm".
    fn name(&self) -> &'static CStr;
    /// Checks that the CPU this runs on matches the configuration (`check_processor_compat`).
    fn check_processor_compat(&self) -> Result;
    /// Makes the CPU this runs on ready to run guests (`hardware_enable`).
    fn hardware_enable(&self) -> Result;
    /// Undoes `hardware_enable` on the CPU this runs on.
    fn hardware_disable(&self);
    /// A backend-specific feature MSR (`get_msr_feature`). The VMX capability MSRs would
    /// be, with nested VMX, which neither backend offers: none by default.
    fn get_feature_msr(&self, _msr: u32) -> Option<u64> {
        None
    }
    /// Whether the backend can emulate `msr` for guests (`has_emulated_msr`): by default
    /// all but the VMX capability MSRs (no nested VMX, as kvm_amd answers too).
    fn has_emulated_msr(&self, msr: u32) -> bool {
        use crate::sys::msr::index::{IA32_VMX_BASIC, IA32_VMX_VMFUNC};
        !(IA32_VMX_BASIC..=IA32_VMX_VMFUNC).contains(&msr)
    }
    /// The guest features that depend on the backend's controls (for KVM_GET_SUPPORTED_CPUID).
    fn cpuid_caps(&self) -> BackendCpuidCaps;
    /// Whether guest real mode needs the VM's real-mode TSS and identity map
    /// (KVM_SET_TSS_ADDR, KVM_SET_IDENTITY_MAP_ADDR): VMX without unrestricted guest.
    fn needs_rmode_pages(&self) -> bool;
    /// The hardware keeps one interrupt-shadow bit (SVM), reported as both STI and MOV SS
    /// blocking, rather than one of the two kinds (VMX).
    fn one_shadow_bit(&self) -> bool;
    /// The machine-check capabilities a vCPU keeps of what KVM_X86_SETUP_MCE accepted
    /// (`setup_mce`: AMD reserves IA32_MCG_CAP bits 63:9).
    fn setup_mce(&self, mcg_cap: u64) -> u64;
    /// Corrected machine-check interrupts for guests (IA32_MCG_CAP.CMCI_P): kvm_intel
    /// offers them, kvm_amd does not.
    fn has_cmci(&self) -> bool;
    /// The CPU scales the guest's TSC (VMX's TSC multiplier): KVM_SET_TSC_KHZ can give a
    /// vCPU any rate, and KVM_CAP_TSC_CONTROL / KVM_CAP_VM_TSC_CONTROL say so.
    fn tsc_scaling(&self) -> bool;
    /// The highest level at which the two-dimensional page table can map memory with one
    /// entry: 1 (4 KiB pages only), 2 (2 MiB: EPT's 2 MiB pages, always NPT) or 3 (1 GiB:
    /// EPT's 1 GiB pages, NPT on a host with 1 GiB pages).
    fn tdp_max_leaf_level(&self) -> u8;
    /// The CPU logs the pages the guest writes (VMX's page-modification log): dirty
    /// logging then keeps pages writable with their dirty flag clear, and the written
    /// ones come back through [`VcpuOps::take_dirty`] instead of write faults.
    fn tdp_dirty_log(&self) -> bool;
    /// A new vCPU's IA32_UCODE_REV (KVM's arbitrary per-vendor value).
    fn reset_ucode_rev(&self) -> u64;
    /// The vendor's hypercall instruction (VMCALL or VMMCALL): KVM's FIX_HYPERCALL_INSN
    /// quirk rewrites the other one to it.
    fn hypercall_insn(&self) -> [u8; 3];
    /// The vendor's steps after `kvm_init` (VMX: `vmx_setup_l1d_flush`).
    fn late_init(&self) -> Result;
    /// A new vCPU's backend half (`vcpu_create`). The backend outlives every vCPU: the
    /// module cannot unload while a VM exists.
    fn vcpu_create(&'static self) -> Result<KBox<dyn VcpuOps>>;
}

/// A vCPU's backend half: its VMCS or VMCB and whatever the backend keeps per vCPU.
pub(crate) trait VcpuOps: Send {
    /// Runs the guest from `ctx.state` until an exit the backend cannot finish, and leaves
    /// the guest's state in `ctx.state` (`vcpu_run`).
    fn run(&mut self, ctx: &mut RunCtx<'_>) -> Result<Exit>;
    /// Brings the fields [`VcpuState::lazy`] marks stale up to date, and clears it.
    /// `EBUSY` when the hardware is out of reach (another hypervisor holds VMX on this
    /// CPU); the state then stays as it is.
    fn sync(&mut self, _state: &mut VcpuState) -> Result {
        Ok(())
    }
    /// Passes the guest-physical address of each page the CPU logged as written during
    /// the last run to `mark` (see [`X86Ops::tdp_dirty_log`]), and forgets them.
    fn take_dirty(&mut self, _mark: &mut dyn FnMut(u64)) {}
    /// Gives back what the vCPU holds of the backend's shared resources (VPID, ASID) when
    /// its VM goes (`vcpu_free`).
    fn release(&self);
}

/// Whether the guest may read or write an MSR through the kernel (the VM's MSR filter).
pub(crate) trait MsrAllow {
    fn allowed(&self, index: u32, write: bool) -> bool;
}

/// Where the real-mode helpers sit in guest-physical memory (KVM_SET_TSS_ADDR and
/// KVM_SET_IDENTITY_MAP_ADDR, or KVM's defaults).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RmodeAddrs {
    pub(crate) tss: u64,
    pub(crate) idmap: u64,
}

/// Bytes of the real-mode TSS: base TSS, interrupt redirection bitmap, I/O bitmap, a
/// terminating 0xff byte.
pub(crate) const RMODE_TSS_SIZE: u64 = 0x68 + 32 + 65536 / 8 + 1;

/// Everything a run needs from the VM and the generic vCPU.
pub(crate) struct RunCtx<'a> {
    pub(crate) uret: &'a uret::UserReturnMsrs,
    /// The root table of the VM's two-dimensional page table.
    pub(crate) tdp_root: Hpa,
    /// Some memslot of the VM logs dirty pages: the CPU's log of written pages must be
    /// on (see [`X86Ops::tdp_dirty_log`]).
    pub(crate) log_writes: bool,
    /// The VM's count of logging memslots, as it changes: a run that started with
    /// `log_writes` false must end (read after `running_cpu` is set, sequentially
    /// consistent) once it is not 0, since dirty flags may then be cleared.
    pub(crate) vm_logging: &'a AtomicU32,
    /// The VM's TLB-flush generation; entries after a change flush first.
    pub(crate) flush_gen: &'a AtomicU64,
    pub(crate) state: &'a mut VcpuState,
    pub(crate) fpu: &'a mut GuestFpu,
    pub(crate) cpuid: &'a [kvm_cpuid_entry2],
    /// What the backend's controls follow in `cpuid`.
    pub(crate) guest_caps: super::cpuid::GuestCaps,
    pub(crate) stats: &'a VcpuCounters,
    /// This CPU's id while the guest may run, -1 otherwise (for kicks).
    pub(crate) running_cpu: &'a AtomicI32,
    /// Set by another thread to make the vCPU leave the guest.
    pub(crate) kick: &'a AtomicBool,
    /// Set by the backend when the guest exited for a host interrupt (KVM's
    /// `at_instruction_boundary`); the generic code clears it before each entry.
    pub(crate) at_boundary: &'a AtomicBool,
    pub(crate) request_irq_window: bool,
    /// The in-kernel local APIC has an interrupt the guest cannot take yet: return when
    /// it can.
    pub(crate) apic_window: bool,
    /// Host TSC at which the in-kernel APIC timer expires (the run ends then).
    pub(crate) timer_deadline_tsc: Option<u64>,
    pub(crate) guest_debug: u32,
    /// KVM_SET_GUEST_DEBUG's DR0-DR3 and DR7 while userspace uses hardware breakpoints.
    pub(crate) debug_dr: Option<[u64; 8]>,
    /// When the backend needs them ([`X86Ops::needs_rmode_pages`]): the real-mode pages.
    pub(crate) rmode: Option<RmodeAddrs>,
    /// The VM's disabled quirks.
    pub(crate) quirks: Quirks,
    /// The MSR filter this vCPU applies, its generation, and the VM's current one (the
    /// run ends when they differ, to pick up the new filter).
    pub(crate) msr_filter: Option<&'a dyn MsrAllow>,
    pub(crate) msr_filter_gen: u64,
    pub(crate) vm_msr_filter_gen: &'a AtomicU64,
    /// With KVM_CAP_ENFORCE_PV_FEATURE_CPUID: the guest's KVM_CPUID_FEATURES EAX (the
    /// paravirtual features hypercalls need).
    pub(crate) pv_features: Option<u32>,
    /// The VM's IA32_ARCH_CAPABILITIES and whether the guest may read MSR_PLATFORM_INFO
    /// (KVM_CAP_MSR_PLATFORM_INFO), for the MSRs a backend finishes during its run.
    pub(crate) arch_capabilities: u64,
    pub(crate) platform_info_readable: bool,
    /// The in-kernel local APIC, when the backend may finish some of its work inside the
    /// window (see `lapic::window`): the generic code lends it only when nothing but this
    /// APIC has to hear of an EOI or see an interrupt (no in-kernel I/O APIC or PIC, no
    /// userspace debugging, no TPR reporting or VAPIC page).
    pub(crate) apic: Option<super::lapic::window::WindowApic<'a>>,
    /// Guest memory as the window may read it (through the two-dimensional page table,
    /// under the VM's MMU lock): to decode the instruction of an APIC access.
    pub(crate) window_mem: Option<&'a dyn super::emulate::GuestMem>,
}

impl<'a> RunCtx<'a> {
    /// What emulating the guest's RDMSR or WRMSR needs besides the vCPU state, with the
    /// host TSC read now.
    pub(crate) fn msr_env(&self) -> MsrEnv<'a> {
        MsrEnv {
            host_tsc: crate::sys::cpu::rdtsc(),
            cpuid: self.cpuid,
            arch_capabilities: self.arch_capabilities,
            host_initiated: false,
            platform_info_readable: self.platform_info_readable,
            quirks: self.quirks,
            pv_features: self.pv_features,
        }
    }
}

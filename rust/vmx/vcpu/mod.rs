// SPDX-License-Identifier: GPL-2.0

//! A VMX vCPU: its VMCS, the VMX window in which it runs, and the VM exits handled without
//! leaving the window. Everything else goes back to the generic x86 code as an [`Exit`].
//!
//! The window itself is here; `guest_state` moves the guest's state in and out of the
//! VMCS, `events` writes the event to inject, `exits` handles the exits that stay inside.

use super::caps::{entry, exit, pin, proc1, proc2};
use super::entry::{self as vmentry, reg, Entry, Gprs};
use super::inject::{
    self, INFO_ERROR_CODE, INFO_VALID, TYPE_EXT_INTR, TYPE_HW_EXCEPTION, TYPE_NMI,
    TYPE_PRIV_SW_EXCEPTION, TYPE_SOFT_EXCEPTION, TYPE_SOFT_INTR,
};
use super::vmcs::{self, Loaded, Vmcs};
use super::vmcs::{ar_to_seg, seg_to_ar};
use super::window::{EnterError, VmxOn};
use super::Vmx;
use crate::sys::cpu::{self, regs, IrqGuard};
use crate::sys::ffi;
use crate::sys::msr::{self, index};
use crate::sys::page::PhysPage;
use crate::sys::ratelimit::pr_warn_ratelimited;
use crate::uapi::{
    KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP, KVM_GUESTDBG_USE_HW_BP, KVM_GUESTDBG_USE_SW_BP,
};
use crate::x86::backend::{RmodeAddrs, RunCtx, VcpuOps};
use crate::x86::exit::Exit;
use crate::x86::fpu::{GuestXstate, KernelFpu};
use crate::x86::hostdbg::HostDebug;
use crate::x86::state::{self, cr0, rflags, Exception, VcpuState};
use crate::x86::stats::vcpu as st;
use crate::x86::{cpuid, uret};
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::prelude::*;

mod apic;
mod events;
mod exits;
mod guest_state;
mod pml;

/// Basic exit reasons.
mod reason {
    pub(super) const EXCEPTION_NMI: u32 = 0;
    pub(super) const EXTERNAL_INTERRUPT: u32 = 1;
    pub(super) const TRIPLE_FAULT: u32 = 2;
    pub(super) const INIT: u32 = 3;
    pub(super) const SIPI: u32 = 4;
    pub(super) const INTERRUPT_WINDOW: u32 = 7;
    pub(super) const NMI_WINDOW: u32 = 8;
    pub(super) const CPUID: u32 = 10;
    pub(super) const HLT: u32 = 12;
    pub(super) const INVD: u32 = 13;
    pub(super) const INVLPG: u32 = 14;
    pub(super) const RDPMC: u32 = 15;
    pub(super) const VMCALL: u32 = 18;
    pub(super) const VMCLEAR: u32 = 19;
    pub(super) const VMXON: u32 = 27;
    pub(super) const CR_ACCESS: u32 = 28;
    pub(super) const DR_ACCESS: u32 = 29;
    pub(super) const IO_INSTRUCTION: u32 = 30;
    pub(super) const MSR_READ: u32 = 31;
    pub(super) const MSR_WRITE: u32 = 32;
    pub(super) const MWAIT: u32 = 36;
    pub(super) const MONITOR_TRAP_FLAG: u32 = 37;
    pub(super) const MONITOR: u32 = 39;
    pub(super) const PAUSE: u32 = 40;
    pub(super) const MCE_DURING_VMENTRY: u32 = 41;
    pub(super) const EPT_VIOLATION: u32 = 48;
    pub(super) const PML_FULL: u32 = 62;
    pub(super) const INVEPT: u32 = 50;
    pub(super) const RDTSCP: u32 = 51;
    pub(super) const INVVPID: u32 = 53;
    pub(super) const WBINVD: u32 = 54;
    pub(super) const XSETBV: u32 = 55;
    pub(super) const INVPCID: u32 = 58;
    pub(super) const VMFUNC: u32 = 59;
    pub(super) const PREEMPTION_TIMER: u32 = 52;
}

/// Pause-loop exiting: the largest gap between two PAUSEs of one loop, and the loop's
/// length that makes it exit (TSC cycles).
const PLE_GAP: u32 = 128;
const PLE_WINDOW: u32 = 4096;

/// Interruptibility bits.
const BLOCK_STI: u32 = 1 << 0;
const BLOCK_MOV_SS: u32 = 1 << 1;
const BLOCK_NMI: u32 = 1 << 3;

/// Exception vectors.
const DB_VECTOR: u8 = 1;
const BP_VECTOR: u8 = 3;
const UD_VECTOR: u8 = 6;
const GP_VECTOR: u8 = 13;
const AC_VECTOR: u8 = 17;
const MC_VECTOR: u8 = 18;

/// The longest a window stays open (interrupts off), over all its entries: the VMX
/// preemption timer ends an entry that reaches it (see `arm_preemption_timer`).
const WINDOW_SLICE_MS: u64 = 4;

/// EFLAGS bits of virtual-8086 mode and the I/O privilege level.
const RFLAGS_VM: u64 = 1 << 17;
const RFLAGS_IOPL: u64 = 3 << 12;

/// Whether the guest runs its real mode in virtual-8086 mode (no unrestricted guest).
pub(crate) fn vm86_mode(ctx_rmode: Option<RmodeAddrs>, s: &VcpuState) -> bool {
    ctx_rmode.is_some() && !s.protected()
}

/// A VPID per vCPU, from a bitmap shared by all VMs.
pub(crate) struct VpidAllocator {
    words: [AtomicU64; 1024],
}

impl VpidAllocator {
    pub(crate) const fn new() -> Self {
        let mut words = [const { AtomicU64::new(0) }; 1024];
        // VPID 0 is the host's: never handed out.
        words[0] = AtomicU64::new(1);
        Self { words }
    }

    /// A free VPID (1..65535), or 0 (none: the CPU flushes on every entry and exit).
    pub(crate) fn alloc(&self) -> u16 {
        for (i, w) in self.words.iter().enumerate() {
            let mut cur = w.load(Ordering::Relaxed);
            while cur != u64::MAX {
                let bit = (!cur).trailing_zeros();
                let vpid = i * 64 + bit as usize;
                match w.compare_exchange(cur, cur | 1 << bit, Ordering::AcqRel, Ordering::Relaxed) {
                    Ok(_) => return vpid as u16,
                    Err(now) => cur = now,
                }
            }
        }
        0
    }

    /// Returns `vpid` to the pool.
    pub(crate) fn free(&self, vpid: u16) {
        if vpid != 0 {
            if let Some(w) = self.words.get(usize::from(vpid) / 64) {
                w.fetch_and(!(1u64 << (vpid % 64)), Ordering::AcqRel);
            }
        }
    }
}

/// A vCPU's VMX resources.
pub(crate) struct VmxVcpu {
    vmcs: Vmcs,
    core: Core,
}

/// Everything of a VMX vCPU but its VMCS (borrowed separately while it is loaded).
struct Core {
    vmx: &'static Vmx,
    /// The EPT pointer of this run (from the context's root).
    eptp: u64,
    /// This vCPU's own MSR bitmap, while an MSR filter denies one of the pass-through
    /// MSRs; otherwise the vCPU uses the module's (`Vmx::msr_bitmap`).
    msr_bitmap: Option<PhysPage>,
    /// The page-modification log, with the `pml` parameter on, from the first run that
    /// needs it.
    pml: Option<pml::Pml>,
    vpid: u16,
    /// The VMCS controls were written (once per vCPU).
    setup_done: bool,
    /// The flush generation this vCPU last flushed at.
    flushed_gen: u64,
    /// This vCPU's id for the CPUs' last-entered tags (never reused, never 0).
    id: u64,
    /// The CPU of this vCPU's last window (-1: none yet).
    last_cpu: i32,
    /// The EPT pointer of the last flush.
    flushed_eptp: u64,
    /// The guest's DR0-DR3 and DR6 are in the hardware (this window).
    guest_dr_loaded: bool,
    /// The MSR filter generation the MSR bitmap reflects.
    msr_filter_gen: u64,
    /// A machine check hit the guest or its entry: the host's handler runs once VMX is off.
    mce_pending: bool,
    /// The last exit completed the guest's instruction. If the guest single-steps, the
    /// window ends (RFLAGS read only then, or from the state at the window's end) and
    /// its #DB goes in the state with DR6 (`VcpuState::single_step_trap`).
    completed: bool,
    /// The VM this vCPU belongs to, as last seen (for the per-CPU IBPB tag).
    vm_tag: super::spec::VmTag,
    gprs: Gprs,
    /// The host state the VMCS holds (see `write_host_state`).
    host: HostState,
    /// The real-mode pages of the run that left the state lazy ([`VcpuState::lazy`]).
    lazy_rmode: Option<RmodeAddrs>,
    /// What the VMCS holds in its primary processor-based and pin-based controls and in
    /// the VM-entry interruption-information field (`u32::MAX`: not known), so that
    /// each is written only when it changes.
    proc1: u32,
    proc2: u32,
    pin: u32,
    /// The exception bitmap (`None`: not known; every value is a valid bitmap).
    exc_bitmap: Option<u32>,
    /// Guest-state and control fields the window writes at every entry, as the VMCS holds
    /// them (`None`: not known): written only when they change.
    known: Known,
    entry_info: u32,
}

/// The host-state values last written to a vCPU's VMCS that can differ between windows;
/// `cpu` is the CPU whose per-CPU values it holds (-1: none known).
#[derive(Clone, Copy)]
struct HostState {
    cpu: i32,
    cr3: u64,
    cr4: u64,
    ds: u16,
    es: u16,
    fs: u16,
    gs: u16,
    fs_base: u64,
}

/// The id of the next vCPU created (see `Core::id`).
static NEXT_VCPU_ID: AtomicU64 = AtomicU64::new(1);

/// MSRs the guest reads and writes without exits: their values live in the VMCS guest
/// area (FS/GS base, SYSENTER) or, for KERNEL_GS_BASE, in the MSR itself during a window.
const PASSTHROUGH_MSRS: [u32; 6] = [
    index::FS_BASE,
    index::GS_BASE,
    index::KERNEL_GS_BASE,
    index::IA32_SYSENTER_CS,
    index::IA32_SYSENTER_ESP,
    index::IA32_SYSENTER_EIP,
];

/// See `Core::known`. The guest's own fields are what the last window's end read back.
#[derive(Default)]
struct Known {
    rip: Option<u64>,
    rsp: Option<u64>,
    rflags: Option<u64>,
    dr7: Option<u64>,
    eptp: Option<u64>,
    tsc_offset: Option<u64>,
    tsc_multiplier: Option<u64>,
    msr_bitmap: Option<u64>,
}

/// Writes a 64-bit or natural-width field unless `known`, what the VMCS holds, is `value`
/// already.
fn set_field(v: &Loaded<'_>, f: impl vmcs::Wide, known: &mut Option<u64>, value: u64) -> Result {
    if *known != Some(value) {
        *known = None;
        v.w_wide(f, value).map_err(|_| EIO)?;
        *known = Some(value);
    }
    Ok(())
}

/// Writes a 32-bit control field unless `cache`, what the VMCS holds, is `value` already.
/// `u32::MAX` stands for "not known": no value of these fields has all bits set (their
/// reserved bits are 0).
fn set_ctl(v: &Loaded<'_>, f: vmcs::F32, cache: &mut u32, value: u32) -> Result {
    if *cache != value {
        *cache = u32::MAX;
        v.w32(f, value).map_err(|_| EIO)?;
        *cache = value;
    }
    Ok(())
}

/// A new MSR bitmap: every MSR's accesses exit but the pass-through ones'.
pub(crate) fn msr_bitmap() -> Result<PhysPage> {
    let bm = PhysPage::new()?;
    bm.fill(0xff);
    for m in PASSTHROUGH_MSRS {
        let (read, write, bit) = bitmap_pos(m);
        bitmap_set_to(&bm, read, bit, false);
        bitmap_set_to(&bm, write, bit, false);
    }
    Ok(bm)
}

fn bitmap_set_to(bm: &PhysPage, base_byte: usize, bit: usize, on: bool) {
    let word = base_byte / 8 + bit / 64;
    let mask = 1u64 << (bit % 64);
    let old = bm.read(word);
    bm.write(word, if on { old | mask } else { old & !mask });
}

/// Where MSR `m`'s read and write intercept bits are in the MSR bitmap: the read and
/// write byte offsets of its half, and its bit there.
fn bitmap_pos(m: u32) -> (usize, usize, usize) {
    if m >= 0xc000_0000 {
        (1024, 3072, (m - 0xc000_0000) as usize)
    } else {
        (0, 2048, m as usize)
    }
}

impl VmxVcpu {
    /// Allocates the VMCS.
    pub(crate) fn new(vmx: &'static Vmx) -> Result<Self> {
        let vpid = if vmx.params.vpid {
            vmx.vpids.alloc()
        } else {
            0
        };
        Ok(Self {
            vmcs: Vmcs::new(vmx.config.revision_id())?,
            core: Core {
                pml: None,
                vmx,
                eptp: 0,
                msr_bitmap: None,
                vpid,
                setup_done: false,
                flushed_gen: u64::MAX,
                id: NEXT_VCPU_ID.fetch_add(1, Ordering::Relaxed),
                last_cpu: -1,
                flushed_eptp: 0,
                guest_dr_loaded: false,
                msr_filter_gen: u64::MAX,
                mce_pending: false,
                completed: false,
                vm_tag: 0,
                gprs: Gprs::default(),
                lazy_rmode: None,
                proc1: u32::MAX,
                exc_bitmap: None,
                known: Known::default(),
                proc2: u32::MAX,
                pin: u32::MAX,
                entry_info: u32::MAX,
                host: HostState {
                    cpu: -1,
                    cr3: 0,
                    cr4: 0,
                    ds: 0,
                    es: 0,
                    fs: 0,
                    gs: 0,
                    fs_base: 0,
                },
            },
        })
    }
}

impl VcpuOps for VmxVcpu {
    /// Runs the guest until an exit the window cannot finish.
    fn run(&mut self, ctx: &mut RunCtx<'_>) -> Result<Exit> {
        self.core.run(&self.vmcs, ctx)
    }

    /// Reads the fields `lazy` left in the VMCS in a window of its own: VMXON, VMPTRLD,
    /// the reads, VMCLEAR, VMXOFF, with interrupts off throughout.
    fn sync(&mut self, state: &mut VcpuState) -> Result {
        if !state.lazy {
            return Ok(());
        }
        let core = &mut self.core;
        let irq = IrqGuard::new();
        let vmxon = core.vmx.enabled_vmxon(&irq).ok_or(EBUSY)?;
        let on = VmxOn::enter(vmxon, &irq).map_err(|_| EBUSY)?;
        let v = self.vmcs.load(&on).map_err(|_| EIO)?;
        core.save_system(&v, state, core.lazy_rmode);
        Ok(())
    }

    /// Hands over the pages the CPU logged as written in the last window.
    fn take_dirty(&mut self, mark: &mut dyn FnMut(u64)) {
        if let Some(p) = self.core.pml.as_mut() {
            p.take(mark);
        }
    }

    /// Returns the VPID on teardown.
    fn release(&self) {
        let vmx = self.core.vmx;
        vmx.vpids.free(self.core.vpid);
        vmx.forget_vm(self.core.vm_tag);
    }
}

impl Core {
    /// The controls, constant fields and bitmaps of the VMCS (first window only).
    fn setup(&mut self, v: &Loaded<'_>, vmx: &Vmx) -> Result {
        let c = &vmx.config;
        let mut proc2 = c.proc2
            & (proc2::ENABLE_EPT
                | proc2::UNRESTRICTED_GUEST
                | proc2::ENABLE_RDTSCP
                | proc2::ENABLE_INVPCID
                // A guest's WBINVD would flush every cache of the host: it exits, and is
                // skipped (KVM does the same without non-coherent DMA).
                | proc2::WBINVD_EXITING
                // A vCPU spinning in kernel mode (PAUSE after PAUSE for a while) exits,
                // so the host can run the one that holds the lock.
                | proc2::PAUSE_LOOP_EXITING);
        if self.vpid != 0 {
            proc2 |= proc2::ENABLE_VPID;
        }
        if vmx.xsaves {
            // The guest's XSAVES and XRSTORS run natively, with its IA32_XSS (0) loaded
            // by the window; no component is made to exit.
            proc2 |= proc2::XSAVES;
        }
        // The guest's TSC rate is the multiplier's (1.0 unless KVM_SET_TSC_KHZ).
        proc2 |= c.proc2 & proc2::TSC_SCALING;
        let proc1 = c.proc1
            & !(proc1::INTR_WINDOW_EXITING
                | proc1::NMI_WINDOW_EXITING
                | proc1::MONITOR_TRAP_FLAG
                | proc1::PAUSE_EXITING)
            | proc1::USE_MSR_BITMAPS
            | proc1::ACTIVATE_SECONDARY_CONTROLS;
        let w = |r: super::asm::VmxResult| r.map_err(|_| EIO);
        let pin_ctl = c.pin & !(pin::PREEMPTION_TIMER | pin::POSTED_INTR);
        set_ctl(v, vmcs::PIN_BASED_VM_EXEC_CONTROL, &mut self.pin, pin_ctl)?;
        set_ctl(v, vmcs::CPU_BASED_VM_EXEC_CONTROL, &mut self.proc1, proc1)?;
        set_ctl(v, vmcs::SECONDARY_VM_EXEC_CONTROL, &mut self.proc2, proc2)?;
        w(v.w32(vmcs::VM_EXIT_CONTROLS, c.exit & !exit::ACK_INTR_ON_EXIT))?;
        w(v.w32(vmcs::VM_ENTRY_CONTROLS, c.entry & !entry::IA32E_MODE))?;
        w(v.w64(vmcs::VMCS_LINK_POINTER, u64::MAX))?;
        if vmx.xsaves {
            w(v.w64(vmcs::XSS_EXIT_BITMAP, 0))?;
        }
        w(v.w32(vmcs::PAGE_FAULT_ERROR_CODE_MASK, 0))?;
        w(v.w32(vmcs::PAGE_FAULT_ERROR_CODE_MATCH, 0))?;
        w(v.w32(vmcs::CR3_TARGET_COUNT, 0))?;
        if proc2 & proc2::PAUSE_LOOP_EXITING != 0 {
            // KVM's defaults: PAUSEs at most 128 TSC cycles apart are one loop, and a
            // loop longer than 4096 cycles exits.
            w(v.w32(vmcs::PLE_GAP, PLE_GAP))?;
            w(v.w32(vmcs::PLE_WINDOW, PLE_WINDOW))?;
        }
        w(v.w32(vmcs::VM_EXIT_MSR_STORE_COUNT, 0))?;
        w(v.w32(vmcs::VM_EXIT_MSR_LOAD_COUNT, 0))?;
        w(v.w32(vmcs::VM_ENTRY_MSR_LOAD_COUNT, 0))?;
        set_ctl(v, vmcs::VM_ENTRY_INTR_INFO_FIELD, &mut self.entry_info, 0)?;
        // Every CR0/CR4 bit except CR0.TS is owned by rkvm: writes exit, reads see the
        // guest's value through the read shadow.
        w(v.wn(vmcs::CR0_GUEST_HOST_MASK, !cr0::TS))?;
        w(v.wn(vmcs::CR4_GUEST_HOST_MASK, u64::MAX))?;
        if self.vpid != 0 {
            w(v.w16(vmcs::VPID, self.vpid))?;
        }
        w(v.wn(vmcs::HOST_RIP, vmentry::vmexit_rip()))?;
        self.setup_done = true;
        Ok(())
    }

    /// Host state for this window. The VMCS keeps what was written to it across
    /// windows (VMCLEAR saves it with the rest), so only what differs from the last
    /// window's values is written: everything when the vCPU last ran on another CPU
    /// (the descriptor tables, the TSS, the per-CPU GS base and SYSENTER stack are that
    /// CPU's), otherwise the task's and the moment's values (CR3, CR4, the data
    /// selectors, the FS base) when they changed.
    fn write_host_state(&mut self, v: &Loaded<'_>, segs: &ffi::rkvm_host_segs) -> Result {
        let w = |r: super::asm::VmxResult| r.map_err(|_| EIO);
        let clean = |s: u16| if s & 7 == 0 { s } else { 0 };
        let now = HostState {
            cpu: cpu::this_cpu() as i32,
            cr3: regs::cr3(),
            cr4: regs::cr4(),
            ds: clean(segs.ds),
            es: clean(segs.es),
            fs: clean(segs.fs),
            gs: clean(segs.gs),
            fs_base: segs.fs_base,
        };
        // Not known to hold anything until every write below succeeded.
        let old = core::mem::replace(&mut self.host.cpu, -1);
        let old = HostState {
            cpu: old,
            ..self.host
        };
        let all = old.cpu != now.cpu;
        if all {
            let sel = regs::selectors();
            w(v.wn(vmcs::HOST_CR0, regs::cr0()))?;
            w(v.w16(vmcs::HOST_CS_SELECTOR, sel.cs))?;
            w(v.w16(vmcs::HOST_SS_SELECTOR, clean(sel.ss)))?;
            w(v.w16(vmcs::HOST_TR_SELECTOR, sel.tr))?;
            w(v.wn(vmcs::HOST_GS_BASE, msr::read(index::GS_BASE).unwrap_or(0)))?;
            w(v.wn(vmcs::HOST_TR_BASE, regs::tss_base()))?;
            w(v.wn(vmcs::HOST_GDTR_BASE, regs::gdtr().base))?;
            w(v.wn(vmcs::HOST_IDTR_BASE, regs::idtr().base))?;
            for (f, m) in [
                (vmcs::HOST_IA32_SYSENTER_ESP, index::IA32_SYSENTER_ESP),
                (vmcs::HOST_IA32_SYSENTER_EIP, index::IA32_SYSENTER_EIP),
            ] {
                w(v.wn(f, msr::read(m).unwrap_or(0)))?;
            }
            w(v.w32(
                vmcs::HOST_IA32_SYSENTER_CS,
                msr::read(index::IA32_SYSENTER_CS).unwrap_or(0) as u32,
            ))?;
            w(v.w64(vmcs::HOST_IA32_EFER, msr::read(index::EFER).unwrap_or(0)))?;
            w(v.w64(
                vmcs::HOST_IA32_PAT,
                msr::read(index::IA32_CR_PAT).unwrap_or(0),
            ))?;
        }
        if all || old.cr3 != now.cr3 {
            w(v.wn(vmcs::HOST_CR3, now.cr3))?;
        }
        if all || old.cr4 != now.cr4 {
            w(v.wn(vmcs::HOST_CR4, now.cr4))?;
        }
        for (f, o, n) in [
            (vmcs::HOST_DS_SELECTOR, old.ds, now.ds),
            (vmcs::HOST_ES_SELECTOR, old.es, now.es),
            (vmcs::HOST_FS_SELECTOR, old.fs, now.fs),
            (vmcs::HOST_GS_SELECTOR, old.gs, now.gs),
        ] {
            if all || o != n {
                w(v.w16(f, n))?;
            }
        }
        if all || old.fs_base != now.fs_base {
            w(v.wn(vmcs::HOST_FS_BASE, now.fs_base))?;
        }
        self.host = now;
        Ok(())
    }

    /// The guest's CR0 as the CPU must see it (VMX fixed bits; PE/PG free with
    /// unrestricted guest).
    fn hw_cr0(vmx: &Vmx, guest: u64) -> u64 {
        let mut fixed0 = vmx.config.cr0_fixed0;
        if vmx.params.unrestricted_guest {
            fixed0 &= !(cr0::PE | cr0::PG);
        }
        (guest | fixed0) & vmx.config.cr0_fixed1
    }

    fn hw_cr4(vmx: &Vmx, guest: u64) -> u64 {
        (guest | vmx.config.cr4_fixed0) & vmx.config.cr4_fixed1
    }

    /// Intercepts the pass-through MSRs the MSR filter denies (in either direction), so
    /// that their accesses reach the filter check: in a bitmap of the vCPU's own while the
    /// filter denies any of them, in the module's shared one otherwise. Runs outside the
    /// window, where no CPU reads this vCPU's bitmap: the VMCS is pointed at the one in
    /// use before the next entry (`run_loaded`).
    fn apply_msr_filter(&mut self, ctx: &RunCtx<'_>) -> Result {
        if self.msr_filter_gen == ctx.msr_filter_gen {
            return Ok(());
        }
        let allowed = |m: u32| {
            ctx.msr_filter
                .map_or((true, true), |f| (f.allowed(m, false), f.allowed(m, true)))
        };
        if PASSTHROUGH_MSRS.iter().all(|&m| allowed(m) == (true, true)) {
            self.msr_bitmap = None;
        } else {
            let bm = match self.msr_bitmap.take() {
                Some(bm) => bm,
                None => msr_bitmap()?,
            };
            for m in PASSTHROUGH_MSRS {
                let (read, write, bit) = bitmap_pos(m);
                let (r, w) = allowed(m);
                bitmap_set_to(&bm, read, bit, !r);
                bitmap_set_to(&bm, write, bit, !w);
            }
            self.msr_bitmap = Some(bm);
        }
        self.msr_filter_gen = ctx.msr_filter_gen;
        Ok(())
    }

    fn run(&mut self, vmcs: &Vmcs, ctx: &mut RunCtx<'_>) -> Result<Exit> {
        // Write-back paging structures, a 4-level walk; accessed and dirty flags with the
        // page-modification log.
        // (Only while logging: with them on, the CPU's updates of the guest's own page
        // tables count as writes, which read-only memory would refuse.)
        let pml_on = self.vmx.params.pml && ctx.log_writes;
        self.eptp = ctx.tdp_root.0 | 3 << 3 | 6 | u64::from(pml_on) << 6;
        self.apply_msr_filter(ctx)?;
        if ctx.log_writes && self.vmx.params.pml && self.pml.is_none() {
            self.pml = Some(pml::Pml::new()?);
        }
        let xsave = self.vmx.xsave;
        let fpu_mask = cpuid::supported_xcr0();
        self.gprs_from(ctx.state);

        let kfpu = KernelFpu::begin();
        let irq = IrqGuard::new();
        let Some(vmxon) = self.vmx.enabled_vmxon(&irq) else {
            return Err(EBUSY);
        };
        let on = match VmxOn::enter(vmxon, &irq) {
            Ok(on) => on,
            Err(EnterError::Busy) | Err(EnterError::VmxonFailed) => return Err(EBUSY),
        };
        let mut segs = ffi::rkvm_host_segs::default();
        // SAFETY: Fills `segs` with this CPU's current selectors and bases.
        unsafe { ffi::rkvm_host_segs_save(&mut segs) };
        // Sequentially consistent: a remote flush bumps the flush generation and then
        // reads this; this store must be visible before the generation is read below (a
        // release store could pass that load), or both sides could miss each other.
        ctx.running_cpu
            .store(cpu::this_cpu() as i32, Ordering::SeqCst);
        self.vm_tag = core::ptr::from_ref(ctx.flush_gen) as usize;
        self.vmx.switch_vm(self.vm_tag, &irq);

        let result = self.run_loaded(vmcs, ctx, &on, &segs, &kfpu, xsave, fpu_mask, &irq);

        ctx.running_cpu.store(-1, Ordering::Release);
        drop(on);
        // SAFETY: Restores what `rkvm_host_segs_save` recorded, on the same CPU, with
        // interrupts still off; out of VMX operation.
        unsafe { ffi::rkvm_host_segs_restore(&segs) };
        if core::mem::take(&mut self.mce_pending) {
            // The machine check goes to the host's handler here, with interrupts still
            // off but after VMXOFF rather than right at the exit: inside the window the
            // CPU runs with a CR4.VMXE the kernel's CR4 shadow does not know about, and
            // the handler (or the panic/kexec path it may enter) must be free to rewrite
            // CR4 from that shadow. Between the exit and here only rkvm's own bounded
            // bookkeeping ran (VMCS reads, FPU and debug-register restore), no guest code.
            cpu::machine_check(&irq);
        }
        drop(irq);
        drop(kfpu);
        self.gprs_to(ctx.state);
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn run_loaded(
        &mut self,
        vmcs: &Vmcs,
        ctx: &mut RunCtx<'_>,
        on: &VmxOn<'_>,
        segs: &ffi::rkvm_host_segs,
        kfpu: &KernelFpu,
        xsave: bool,
        fpu_mask: u64,
        irq: &IrqGuard,
    ) -> Result<Exit> {
        let v = vmcs.load(on).map_err(|_| EIO)?;
        // A control whose write failed is unknown: set them all up again rather than
        // build on the unknown value.
        if !self.setup_done || [self.proc1, self.proc2, self.pin].contains(&u32::MAX) {
            self.setup(&v, self.vmx)?;
        }
        self.write_host_state(&v, segs)?;
        if ctx.state.dirty {
            if ctx.state.lazy {
                // Something changed the current part only (the invariant of `lazy`):
                // take the rest from the VMCS, then load it all.
                self.save_system(&v, ctx.state, self.lazy_rmode);
            }
            self.known.dr7 = None;
            Self::load_guest(&v, self.vmx, ctx.state, ctx.rmode)?;
            ctx.state.dirty = false;
        }
        let vm86 = vm86_mode(ctx.rmode, ctx.state);
        let k = &mut self.known;
        set_field(&v, vmcs::GUEST_RIP, &mut k.rip, ctx.state.regs.rip)?;
        set_field(&v, vmcs::GUEST_RSP, &mut k.rsp, ctx.state.regs.rsp)?;
        let mut rfl = ctx.state.regs.rflags | rflags::FIXED;
        if vm86 {
            rfl |= RFLAGS_VM | RFLAGS_IOPL;
        }
        set_field(&v, vmcs::GUEST_RFLAGS, &mut k.rflags, rfl)?;
        // Without unrestricted guest and without guest paging, CR3 is the identity map:
        // the guest's own CR3 reads and writes go through rkvm.
        let cr3_exits = proc1::CR3_LOAD_EXITING | proc1::CR3_STORE_EXITING;
        let mut p1 = self.proc1 & !cr3_exits;
        if (ctx.rmode.is_some() && !ctx.state.paging())
            || self.vmx.config.proc1 & cr3_exits == cr3_exits
        {
            p1 |= cr3_exits & self.vmx.config.proc1 | cr3_exits;
        }
        set_ctl(&v, vmcs::CPU_BASED_VM_EXEC_CONTROL, &mut self.proc1, p1)?;
        // XSAVES and XRSTORS, RDTSCP and RDPID only for a guest whose CPUID offers them
        // (#UD otherwise, as KVM).
        let mut p2 = self.proc2 & !(proc2::XSAVES | proc2::ENABLE_RDTSCP | proc2::ENABLE_PML);
        // The page-modification log only while the VM logs dirty pages: otherwise its
        // index would cost a read per window for nothing.
        let pml = self.pml.as_mut().filter(|_| ctx.log_writes);
        if let Some(p) = pml {
            p.rewind(&v)?;
            p2 |= proc2::ENABLE_PML;
        }
        if self.vmx.xsaves && ctx.guest_caps.xsaves {
            p2 |= proc2::XSAVES;
        }
        let rdtscp = self.vmx.config.has2(proc2::ENABLE_RDTSCP) && ctx.guest_caps.rdtscp_or_rdpid;
        if rdtscp {
            p2 |= proc2::ENABLE_RDTSCP;
        }
        set_ctl(&v, vmcs::SECONDARY_VM_EXEC_CONTROL, &mut self.proc2, p2)?;
        let k = &mut self.known;
        set_field(&v, vmcs::EPT_POINTER, &mut k.eptp, self.eptp)?;
        let msr_bitmap = self.msr_bitmap.as_ref().unwrap_or(&self.vmx.msr_bitmap);
        set_field(&v, vmcs::MSR_BITMAP, &mut k.msr_bitmap, msr_bitmap.phys().0)?;
        set_field(
            &v,
            vmcs::TSC_OFFSET,
            &mut k.tsc_offset,
            ctx.state.tsc_offset,
        )?;
        if self.vmx.config.has2(proc2::TSC_SCALING) {
            let ratio = ctx.state.tsc_rate.ratio();
            set_field(&v, vmcs::TSC_MULTIPLIER, &mut k.tsc_multiplier, ratio)?;
        }
        // In virtual-8086 mode every exception comes to rkvm: it is either a privileged
        // real-mode instruction to emulate or an interrupt to deliver through the IVT.
        // #DB and #AC always come to rkvm (and go back to the guest): a guest whose IDT
        // makes either recur during its own delivery would otherwise keep the CPU in
        // microcode, never at an instruction boundary where the host's interrupts get
        // in (CVE-2015-8104, CVE-2015-5307; KVM intercepts both for this).
        let mut exc_bitmap = if vm86 {
            u32::MAX
        } else {
            1u32 << MC_VECTOR | 1 << DB_VECTOR | 1 << AC_VECTOR
        };
        let mut proc1_extra = 0;
        if ctx.guest_debug & KVM_GUESTDBG_ENABLE != 0 {
            if ctx.guest_debug & KVM_GUESTDBG_USE_SW_BP != 0 {
                exc_bitmap |= 1 << BP_VECTOR;
            }
            if ctx.guest_debug & KVM_GUESTDBG_SINGLESTEP != 0 {
                proc1_extra |= proc1::MONITOR_TRAP_FLAG;
            }
            exc_bitmap |= 1 << DB_VECTOR;
        }
        if ctx.quirks.has(crate::x86::quirks::FIX_HYPERCALL_INSN) {
            // VMMCALL from a guest that started on AMD: rewritten to VMCALL.
            exc_bitmap |= 1 << UD_VECTOR;
        }
        if self.exc_bitmap != Some(exc_bitmap) {
            self.exc_bitmap = None;
            v.w32(vmcs::EXCEPTION_BITMAP, exc_bitmap).map_err(|_| EIO)?;
            self.exc_bitmap = Some(exc_bitmap);
        }

        // The guest's MSRs that the CPU does not switch, loaded when the guest can
        // reach them, as KVM does: TSC_AUX with RDTSCP or RDPID; the SYSCALL ones in long
        // mode with SYSCALL enabled (an Intel CPU has SYSCALL in 64-bit mode alone).
        // Their RDMSR and WRMSR always exit.
        let s = &ctx.state.msrs;
        let syscall = ctx.state.long_mode() && ctx.state.efer & state::efer::SCE != 0;
        let uret_msrs = [
            (index::TSC_AUX, s.tsc_aux, rdtscp),
            (index::STAR, s.star, syscall),
            (index::LSTAR, s.lstar, syscall),
            (index::CSTAR, s.cstar, syscall),
            (index::SYSCALL_MASK, s.sfmask, syscall),
        ];
        for (m, val, _) in uret_msrs.into_iter().filter(|u| u.2) {
            if let Some(slot) = uret::Slot::of(m) {
                let _ = ctx.uret.set(slot, val, irq);
            }
        }
        let _ = msr::write(index::KERNEL_GS_BASE, s.kernel_gs_base);

        // Guest FPU, XCR0 and IA32_XSS.
        kfpu.load(ctx.fpu, fpu_mask, xsave);
        let xstate = GuestXstate::load(kfpu, xsave, ctx.state.xcr0, self.vmx.xsaves)?;

        // Flush this VM's and this vCPU's translations when they may be stale on this CPU:
        // the paging structures changed (the VM's flush generation), or this CPU last
        // entered another vCPU (whose VPID a new vCPU may have taken over), or this vCPU
        // last ran elsewhere (the guest's own INVLPGs and CR3 loads flushed that CPU,
        // not this one), as KVM flushes on migration. Another hypervisor's entries on
        // this CPU cannot match: combined mappings are tagged with the EPT root, which
        // is rkvm's page while this VM lives (and flushed before its first use).
        let here = cpu::this_cpu() as i32;
        // Both recorded now, whatever the outcome: the flush below covers this window.
        let last = self.vmx.swap_last_vcpu(self.id, irq);
        let moved = core::mem::replace(&mut self.last_cpu, here) != here;
        if last != self.id
            || moved
            || self.flushed_eptp != self.eptp
            || ctx.flush_gen.load(Ordering::Acquire) != self.flushed_gen
        {
            self.flush_tlb(ctx)?;
        }
        // Debug registers (see `hostdbg.rs` for the host's side). While the guest has
        // breakpoints enabled in its DR7 (loaded from the VMCS), its DR0-DR3 and DR6 are in
        // the hardware, and the guest never sees the host's (MOV DR always exits).
        // With userspace's hardware breakpoints (KVM_GUESTDBG_USE_HW_BP) its DR0-DR3 and
        // DR7 are used instead, and the guest's DR7 stays in software meanwhile.
        let mut host_dbg = HostDebug::save(irq);
        let guest_dr7 = ctx.state.dr7;
        let (load, dr7) = match ctx.debug_dr {
            Some(d) => (Some(([d[0], d[1], d[2], d[3]], 0xffff_0ff0)), d[7]),
            None if guest_dr7 & 0xff != 0 => (Some((ctx.state.db, ctx.state.dr6)), guest_dr7),
            None => (None, guest_dr7),
        };
        set_field(&v, vmcs::GUEST_DR7, &mut self.known.dr7, dr7)?;
        if let Some((db, dr6)) = load {
            host_dbg.load_guest(db, dr6);
        }
        self.guest_dr_loaded = host_dbg.guest_loaded();
        let mitigations = self.vmx.spec.entry_flags;
        let mut launched = false;
        // Without a known TSC rate there is no slice to measure (no such VMX host seen).
        let window_end = match self.vmx.tsc_khz {
            0 => u64::MAX,
            khz => cpu::rdtsc().saturating_add(khz.saturating_mul(WINDOW_SLICE_MS)),
        };
        let watch_logging = self.vmx.params.pml && !ctx.log_writes;
        // A closure, so that an error (`?`) still reaches the restores below.
        let result = (|| -> Result<Exit> {
            loop {
                let gen = ctx.flush_gen.load(Ordering::Acquire);
                if gen != self.flushed_gen {
                    self.flush_tlb(ctx)?;
                }
                if ctx.kick.load(Ordering::Acquire)
                    || ctx.vm_msr_filter_gen.load(Ordering::Acquire) != ctx.msr_filter_gen
                {
                    break Ok(Exit::Again);
                }
                // A memslot started logging dirty pages since this run began: the next
                // one enters with the page-modification log.
                if watch_logging && ctx.vm_logging.load(Ordering::SeqCst) != 0 {
                    break Ok(Exit::Again);
                }
                // Time first: an event taken from the queue below must reach the entry.
                if !self.arm_preemption_timer(&v, ctx, window_end)? {
                    // The APIC timer expired (back to process context to deliver it), or
                    // the window's time is up (host interrupts are served there).
                    break Ok(Exit::Again);
                }
                if let Some(exit) = self.inject_events(&v, ctx, proc1_extra)? {
                    break Ok(exit);
                }
                if let Some(l1d) = self.vmx.l1d.as_ref() {
                    if l1d.before_entry(!launched) {
                        ctx.stats.inc(st::L1D_FLUSH);
                    }
                }
                // SAFETY: The window holds this VMCS current with host state for this CPU, and
                // the guest state was loaded (or kept from the last window).
                let entered = unsafe { vmentry::vmenter(&mut self.gprs, launched, mitigations) };
                host_dbg.after_exit();
                match entered {
                    Entry::Exited => {}
                    Entry::FailInvalid => break Ok(Exit::FailEntry { reason: u64::MAX }),
                    Entry::FailValid => {
                        let err = v.r32(vmcs::VM_INSTRUCTION_ERROR);
                        pr_warn_ratelimited!("VM entry failed: VM-instruction error {}\n", err);
                        break Ok(Exit::FailEntry {
                            reason: u64::from(err) | 1 << 63,
                        });
                    }
                }
                launched = true;
                ctx.stats.inc(st::EXITS);
                // Single-stepping: an instruction completed here (CPUID, XSETBV, ...) ends
                // the step, as if the CPU had executed it.
                let stepping = ctx.guest_debug & KVM_GUESTDBG_SINGLESTEP != 0;
                let rip = if stepping { v.rn(vmcs::GUEST_RIP) } else { 0 };
                match self.handle_exit(&v, ctx)? {
                    Some(exit) => break Ok(exit),
                    None if stepping && v.rn(vmcs::GUEST_RIP) != rip => {
                        break Ok(Exit::Debug {
                            exception: 1,
                            dr6: 0xffff_4ff0,
                            dr7: v.rn(vmcs::GUEST_DR7),
                        });
                    }
                    // The guest's single-step #DB is raised in process context.
                    None if core::mem::take(&mut self.completed)
                        && v.rn(vmcs::GUEST_RFLAGS) & rflags::TF != 0 =>
                    {
                        self.completed = true;
                        break Ok(Exit::Again);
                    }
                    None => continue,
                }
            }
        })();

        self.guest_dr_loaded = false;
        if let Some(p) = self.pml.as_mut().filter(|_| ctx.log_writes) {
            p.note(&v);
        }
        // #DBs the guest took directly updated DR6 (not userspace's breakpoints: those
        // #DBs exit).
        if host_dbg.guest_loaded() && ctx.debug_dr.is_none() {
            ctx.state.dr6 = cpu::regs::dr(6);
        }
        // The host's DR0-DR3, DR6, then DR7.
        drop(host_dbg);
        drop(xstate);
        kfpu.save(ctx.fpu, fpu_mask, xsave);
        ctx.state.msrs.kernel_gs_base = msr::read(index::KERNEL_GS_BASE).unwrap_or(0);
        self.save_current(&v, ctx.state, ctx.rmode);
        // After an IN or OUT (the exit to userspace that needs the fewest fields) the
        // rest stays in the VMCS until something asks for it (`sync`) or the next
        // window. Not in virtual-8086 mode, whose segments the real-mode code rewrites.
        if matches!(result, Ok(Exit::Io { string: false, .. })) && !vm86_mode(ctx.rmode, ctx.state)
        {
            ctx.state.lazy = true;
            self.lazy_rmode = ctx.rmode;
        } else {
            self.save_system(&v, ctx.state, ctx.rmode);
        }
        // The VMCS held userspace's DR7, not the guest's.
        if ctx.debug_dr.is_some() {
            ctx.state.dr7 = guest_dr7;
        }
        // Now that DR6 is in the state: the guest's single-step trap (unless userspace
        // single-steps it, which takes the step instead, as in KVM).
        if core::mem::take(&mut self.completed)
            && ctx.state.regs.rflags & rflags::TF != 0
            && ctx.guest_debug & KVM_GUESTDBG_SINGLESTEP == 0
        {
            ctx.state.single_step_trap();
        }
        drop(v);
        result
    }

    /// Bounds the guest's run by the APIC timer with the VMX preemption timer (when the
    /// CPU has one; otherwise host interrupts bound it). `false`: already expired.
    ///
    /// The timer also bounds the whole window, which ends at `window_end` (host TSC;
    /// [`WINDOW_SLICE_MS`] after it opened), and `false` comes back once that is past. A
    /// host interrupt normally ends a guest's run (external-interrupt exiting), but the
    /// window must not depend on it alone, since it holds the CPU with interrupts off: an
    /// emulator that does not turn a host interrupt into an exit while the guest spins
    /// froze the whole machine, once with a guest that never exited and once with one
    /// looping on CPUID exits (each handled inside the window).
    fn arm_preemption_timer(
        &mut self,
        v: &Loaded<'_>,
        ctx: &RunCtx<'_>,
        window_end: u64,
    ) -> Result<bool> {
        let has = self.vmx.config.pin & pin::PREEMPTION_TIMER != 0;
        let w = |r: super::asm::VmxResult| r.map_err(|_| EIO);
        let mut p = self.pin & !pin::PREEMPTION_TIMER;
        let now = cpu::rdtsc();
        if now >= window_end {
            return Ok(false);
        }
        let mut budget = window_end - now;
        if let Some(deadline) = ctx.timer_deadline_tsc {
            if now >= deadline {
                return Ok(false);
            }
            budget = budget.min(deadline - now);
        }
        if has && budget != 0 {
            let rate = (self.vmx.config.misc & 0x1f) as u32;
            let ticks = (budget >> rate).min(u64::from(u32::MAX)) as u32;
            w(v.w32(vmcs::VMX_PREEMPTION_TIMER_VALUE, ticks))?;
            p |= pin::PREEMPTION_TIMER;
        }
        set_ctl(v, vmcs::PIN_BASED_VM_EXEC_CONTROL, &mut self.pin, p)?;
        Ok(true)
    }

    fn flush_tlb(&mut self, ctx: &RunCtx<'_>) -> Result {
        let caps = self.vmx.config.ept_vpid;
        let single = caps & super::caps::ept_vpid::INVEPT_SINGLE_CONTEXT != 0;
        // Read before the flush (a later bump must flush again), recorded only once it
        // succeeded (a failed flush must not be taken for one).
        let gen = ctx.flush_gen.load(Ordering::Acquire);
        self.flushed_gen = u64::MAX;
        // SAFETY: In VMX operation (the caller's window); the INVEPT type is supported
        // (checked at hardware_setup).
        unsafe { super::asm::invept(if single { 1 } else { 2 }, self.eptp) }.map_err(|_| EIO)?;
        if self.vpid != 0 {
            let single = caps & super::caps::ept_vpid::INVVPID_SINGLE_CONTEXT != 0;
            // SAFETY: As above; the INVVPID type is supported.
            unsafe { super::asm::invvpid(if single { 1 } else { 2 }, self.vpid, 0) }
                .map_err(|_| EIO)?;
        }
        self.flushed_gen = gen;
        self.flushed_eptp = self.eptp;
        ctx.stats.inc(st::TLB_FLUSH);
        Ok(())
    }
}

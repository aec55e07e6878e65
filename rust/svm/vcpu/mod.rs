// SPDX-License-Identifier: GPL-2.0

//! An SVM vCPU: its VMCB, the run window, and the exits handled without leaving it.
//! Everything else goes back to the generic x86 code as an [`Exit`]; the instructions the
//! generic code defines (CPUID, MSRs, HLT, CR and DR accesses, ...) go back as
//! [`Exit::Intercepted`], with their length when the CPU saves the next RIP and without
//! it otherwise (QEMU's SVM: the generic code then decodes the instruction).
//!
//! `state` moves the guest state in and out of the VMCB, `events` writes the event to
//! inject and picks up one an exit interrupted, `exits` decodes the exit.

use super::entry::{self, Gprs};
use super::vmcb::{self, tlb_ctl, Vmcb};
use super::{asm, feature, CpuWindow, Svm};
use crate::sys::cpu::{self, IrqGuard};
use crate::sys::msr::index;
use crate::uapi::*;
use crate::x86::backend::{RunCtx, VcpuOps};
use crate::x86::exit::Exit;
use crate::x86::fpu::{GuestXstate, KernelFpu};
use crate::x86::hostdbg::HostDebug;
use crate::x86::stats::vcpu as st;
use crate::x86::{cpuid, uret};
use core::sync::atomic::Ordering;
use kernel::prelude::*;

mod events;
mod exits;
mod state;

/// Exception vectors.
const DB_VECTOR: u8 = 1;
const BP_VECTOR: u8 = 3;
const UD_VECTOR: u8 = 6;
const AC_VECTOR: u8 = 17;
const MC_VECTOR: u8 = 18;

/// The longest a window stays open over its in-window exits; a guest that never exits is
/// ended by the host's next interrupt (physical interrupts exit), at the latest the
/// deadline timer's at the in-kernel APIC timer's expiry.
const WINDOW_SLICE_MS: u64 = 4;

/// CLOCK_MONOTONIC time of host TSC value `tsc` (in the future, else now).
fn tsc_to_monotonic_ns(tsc: u64) -> u64 {
    let khz = u64::from(cpu::tsc_khz().max(1));
    let delta = tsc.saturating_sub(cpu::rdtsc());
    // delta / khz ms, without overflow (the remainder's product stays below 2^64).
    let ns = (delta / khz)
        .saturating_mul(1_000_000)
        .saturating_add(delta % khz * 1_000_000 / khz);
    crate::sys::wait::now_ns().saturating_add(ns)
}

/// The stronger of two TLB_CONTROL requests (flushing everything covers one ASID).
fn combine_flush(a: u8, b: u8) -> u8 {
    if a == tlb_ctl::FLUSH_ALL || b == tlb_ctl::FLUSH_ALL {
        tlb_ctl::FLUSH_ALL
    } else if a == tlb_ctl::FLUSH_ASID || b == tlb_ctl::FLUSH_ASID {
        tlb_ctl::FLUSH_ASID
    } else {
        tlb_ctl::NOTHING
    }
}

/// A vCPU's SVM resources.
pub(crate) struct SvmVcpu {
    svm: &'static Svm,
    vmcb: Vmcb,
    gprs: Gprs,
    /// The intercepts and constant controls were written (once per vCPU).
    setup_done: bool,
    /// The ASID this vCPU runs with, valid on CPU `asid_cpu` in generation `asid_gen`.
    asid_cpu: u32,
    asid_gen: u64,
    /// The VM flush generation this vCPU last flushed at.
    flushed_gen: u64,
    /// The TLB_CONTROL flush its next VMRUN must do (kept until a VMRUN does it).
    pending_flush: u8,
    /// The event this entry injects put RIP past its instruction (a software interrupt
    /// or #BP/#OF): if the exit interrupts it, it goes back without moving RIP again.
    injected_soft: bool,
    /// A machine check hit the guest: the host's handler runs after the window.
    mce_pending: bool,
    /// The guest accesses its debug registers without intercepts for the rest of the
    /// window; they are read back when it closes.
    dr_passthrough: bool,
    /// The VM this vCPU belongs to, as last seen (for the per-CPU IBPB tag).
    vm_tag: crate::x86::ibpb::VmTag,
    /// The guest shut down: the CPU left the VMCB undefined, so it is rebuilt from the
    /// software state before the next run.
    vmcb_undefined: bool,
}

impl SvmVcpu {
    pub(crate) fn new(svm: &'static Svm) -> Result<Self> {
        Ok(Self {
            svm,
            vmcb: Vmcb::new()?,
            gprs: Gprs::default(),
            setup_done: false,
            asid_cpu: u32::MAX,
            asid_gen: 0,
            flushed_gen: u64::MAX,
            pending_flush: tlb_ctl::NOTHING,
            injected_soft: false,
            mce_pending: false,
            dr_passthrough: false,
            vm_tag: 0,
            vmcb_undefined: false,
        })
    }

    /// Intercepts every debug-register access (`on`) or none.
    fn set_dr_intercepts(&self, on: bool) {
        let l = &self.svm.layout;
        for n in 0..8 {
            self.vmcb.set_intercept(l, SVM_EXIT_READ_DR0 + n, on);
            self.vmcb.set_intercept(l, SVM_EXIT_WRITE_DR0 + n, on);
        }
    }

    /// The intercepts and controls that never change.
    fn setup(&mut self) {
        let l = &self.svm.layout;
        let v = &self.vmcb;
        for code in [
            SVM_EXIT_WRITE_CR4,
            SVM_EXIT_READ_CR8,
            SVM_EXIT_WRITE_CR8,
            SVM_EXIT_INTR,
            SVM_EXIT_NMI,
            SVM_EXIT_SMI,
            SVM_EXIT_INIT,
            SVM_EXIT_RDPMC,
            SVM_EXIT_CPUID,
            SVM_EXIT_INVD,
            SVM_EXIT_HLT,
            SVM_EXIT_INVLPGA,
            SVM_EXIT_IOIO,
            SVM_EXIT_MSR,
            SVM_EXIT_SHUTDOWN,
            SVM_EXIT_VMRUN,
            SVM_EXIT_VMMCALL,
            SVM_EXIT_VMLOAD,
            SVM_EXIT_VMSAVE,
            SVM_EXIT_STGI,
            SVM_EXIT_CLGI,
            SVM_EXIT_SKINIT,
            SVM_EXIT_WBINVD,
            SVM_EXIT_MONITOR,
            SVM_EXIT_MWAIT,
            SVM_EXIT_MWAIT_COND,
            SVM_EXIT_XSETBV,
            SVM_EXIT_RDPRU,
        ] {
            v.set_intercept(l, code, true);
        }
        // Every debug-register access, until the guest uses them (see `dr_passthrough`):
        // the generic code keeps DR0-DR7.
        self.set_dr_intercepts(true);
        v.w64(l.iopm_base_pa, self.svm.iopm_pa());
        v.w64(l.msrpm_base_pa, self.svm.msrpm_pa());
        v.w32(l.int_ctl, vmcb::int_ctl::V_INTR_MASKING);
        // Nested paging (SVM_NESTED_CTL_NP_ENABLE).
        v.w64(l.nested_ctl, 1);
        self.setup_done = true;
    }

    /// Picks this vCPU's ASID for the window, and notes the flush its translations need.
    fn prepare_asid(&mut self, w: &CpuWindow<'_>, ctx: &RunCtx<'_>) {
        let l = &self.svm.layout;
        let me = cpu::this_cpu();
        if self.asid_cpu != me || self.asid_gen != self.svm.asid_gen(w) {
            // A fresh ASID: nothing of this generation is cached under it.
            let (asid, generation) = self.svm.new_asid(w);
            self.vmcb.w32(l.asid, asid);
            self.asid_cpu = me;
            self.asid_gen = generation;
        }
        self.note_flush(ctx);
    }

    /// Notes the flush the VM's translation changes since the last one require. It stays
    /// pending until a VMRUN has done it (a window may end before its first VMRUN).
    fn note_flush(&mut self, ctx: &RunCtx<'_>) {
        let gen = ctx.flush_gen.load(Ordering::Acquire);
        if gen != self.flushed_gen {
            self.flushed_gen = gen;
            self.pending_flush = combine_flush(self.pending_flush, self.flush_one());
            ctx.stats.inc(st::TLB_FLUSH);
        }
    }

    /// The flush of this vCPU's translations only, where the CPU can do it.
    fn flush_one(&self) -> u8 {
        if self.svm.features & feature::FLUSH_BY_ASID != 0 {
            tlb_ctl::FLUSH_ASID
        } else {
            tlb_ctl::FLUSH_ALL
        }
    }

    fn run_window(
        &mut self,
        ctx: &mut RunCtx<'_>,
        w: &CpuWindow<'_>,
        kfpu: &KernelFpu,
        xsave: bool,
        fpu_mask: u64,
        irq: &IrqGuard,
    ) -> Result<Exit> {
        if !self.setup_done {
            self.setup();
        }
        self.load_guest(ctx);
        // The guest's TSC_AUX (its other syscall MSRs are in the VMCB).
        if let Some(slot) = uret::Slot::of(index::TSC_AUX) {
            let _ = ctx.uret.set(slot, ctx.state.msrs.tsc_aux, irq);
        }
        kfpu.load(ctx.fpu, fpu_mask, xsave);
        let xstate = GuestXstate::load(kfpu, xsave, ctx.state.xcr0, self.svm.xsaves)?;
        self.prepare_asid(w, ctx);
        // Debug registers, as in the VMX window (see `x86/hostdbg.rs`).
        let mut host_dbg = HostDebug::save(irq);
        let guest_dr7 = ctx.state.dr7;
        let l = &self.svm.layout;
        let load = match ctx.debug_dr {
            Some(d) => {
                self.vmcb.w64(l.dr7, d[7]);
                Some(([d[0], d[1], d[2], d[3]], 0xffff_0ff0))
            }
            None if guest_dr7 & 0xff != 0 => Some((ctx.state.db, ctx.state.dr6)),
            None => None,
        };
        if let Some((db, dr6)) = load {
            host_dbg.load_guest(db, dr6);
        }
        let window_end = match u64::from(cpu::tsc_khz()) {
            0 => u64::MAX,
            khz => cpu::rdtsc().saturating_add(khz.saturating_mul(WINDOW_SLICE_MS)),
        };
        if let Some(d) = ctx.timer_deadline_tsc {
            self.svm.deadline.arm(tsc_to_monotonic_ns(d), irq);
        }
        let result = (|| -> Result<Exit> {
            loop {
                self.note_flush(ctx);
                if ctx.kick.load(Ordering::Acquire)
                    || ctx.vm_msr_filter_gen.load(Ordering::Acquire) != ctx.msr_filter_gen
                {
                    break Ok(Exit::Again);
                }
                // Time first: an event taken from the queue below must reach VMRUN.
                let now = cpu::rdtsc();
                if now >= window_end || ctx.timer_deadline_tsc.is_some_and(|d| now >= d) {
                    break Ok(Exit::Again);
                }
                if let Some(exit) = self.inject_events(ctx)? {
                    break Ok(exit);
                }
                let flush_all = self.svm.flush_all_pending(w);
                let tlb = if flush_all {
                    tlb_ctl::FLUSH_ALL
                } else {
                    self.pending_flush
                };
                self.vmcb.w8(l.tlb_ctl, tlb);
                // SAFETY: GIF is clear (the window); IF goes off again right after.
                unsafe { asm::sti() };
                // SAFETY: The window holds EFER.SVME, VM_HSAVE_PA, GIF clear and the host's
                // saved state; the VMCB was set up and loaded above.
                unsafe {
                    entry::vmrun(
                        &mut self.gprs,
                        self.vmcb.pa(),
                        w.host_save_pa(),
                        self.svm.entry_flags,
                    )
                };
                // SAFETY: Still with GIF clear.
                unsafe { asm::cli() };
                host_dbg.after_exit();
                // The flush is done once the guest ran (not on a failed VMRUN).
                if self.vmcb.r64(l.exit_code) as u32 != u32::MAX {
                    self.pending_flush = tlb_ctl::NOTHING;
                    if flush_all {
                        self.svm.flushed_all(w);
                    }
                }
                ctx.stats.inc(st::EXITS);
                let exit = self.handle_exit(ctx)?;
                if self.dr_passthrough && !host_dbg.guest_loaded() {
                    // The guest's DR0-DR3 must be in the hardware before it may read them.
                    host_dbg.load_guest(ctx.state.db, ctx.state.dr6);
                }
                if self.dr_passthrough {
                    self.set_dr_intercepts(false);
                }
                if let Some(exit) = exit {
                    break Ok(exit);
                }
            }
        })();
        if ctx.timer_deadline_tsc.is_some() {
            self.svm.deadline.cancel(irq);
        }
        if host_dbg.guest_loaded() && ctx.debug_dr.is_none() {
            ctx.state.dr6 = self.vmcb.r64(l.dr6);
        }
        if core::mem::take(&mut self.dr_passthrough) {
            // What the guest wrote without intercepts: DR0-DR3 are in the hardware (DR6
            // and DR7 are in the VMCB, read with the rest of the state).
            for (n, d) in (0u8..4).zip(ctx.state.db.iter_mut()) {
                *d = cpu::regs::dr(n);
            }
            self.set_dr_intercepts(true);
        }
        drop(host_dbg);
        drop(xstate);
        kfpu.save(ctx.fpu, fpu_mask, xsave);
        self.save_guest(ctx);
        if ctx.debug_dr.is_some() {
            ctx.state.dr7 = guest_dr7;
        }
        if core::mem::take(&mut self.vmcb_undefined) {
            // KVM clears and rebuilds it too: intercepts, controls, a fresh ASID, and all
            // of the guest state from the software copy at the next window.
            self.vmcb.clear();
            self.setup_done = false;
            self.asid_cpu = u32::MAX;
            ctx.state.dirty = true;
        }
        result
    }
}

impl VcpuOps for SvmVcpu {
    fn run(&mut self, ctx: &mut RunCtx<'_>) -> Result<Exit> {
        let xsave = cpu::boot_cpu_has(cpu::Feature::Xsave);
        let fpu_mask = cpuid::supported_xcr0();
        self.gprs_from(ctx.state);
        let kfpu = KernelFpu::begin();
        let irq = IrqGuard::new();
        let w = match self.svm.open(&irq) {
            Ok(w) => w,
            Err(_) => return Err(EBUSY),
        };
        // Sequentially consistent, as in the VMX window: a remote flush bumps the flush
        // generation and then reads this.
        ctx.running_cpu
            .store(cpu::this_cpu() as i32, Ordering::SeqCst);
        self.vm_tag = core::ptr::from_ref(ctx.flush_gen) as usize;
        self.svm.switch_vm(&w, self.vm_tag);
        let result = self.run_window(ctx, &w, &kfpu, xsave, fpu_mask, &irq);
        ctx.running_cpu.store(-1, Ordering::Release);
        // STGI, EFER restored: what GIF held (interrupts, NMIs) is taken once the IRQ
        // guard goes.
        drop(w);
        if core::mem::take(&mut self.mce_pending) {
            cpu::machine_check(&irq);
        }
        drop(irq);
        drop(kfpu);
        self.gprs_to(ctx.state);
        result
    }

    fn release(&self) {
        self.svm.forget_vm(self.vm_tag);
    }
}

// SPDX-License-Identifier: GPL-2.0

//! The exits handled inside the window (CPUID, MSRs, XSETBV, hypercalls, ...); the
//! rest go back to the generic code as an [`Exit`].

use super::*;
use crate::x86::exit::CrOp;
use crate::x86::insn;

impl Core {
    /// Handles one exit inside the window; `Some` leaves the window.
    pub(super) fn handle_exit(
        &mut self,
        v: &Loaded<'_>,
        ctx: &mut RunCtx<'_>,
    ) -> Result<Option<Exit>> {
        let full = v.r32(vmcs::VM_EXIT_REASON);
        // A VM exit clears the valid bit of the VM-entry interruption information: the
        // field needs no write until the next injection. Not assumed after a failed entry.
        self.entry_info = if full & (1 << 31) == 0 { 0 } else { u32::MAX };
        let reason = full & 0xffff;
        let len = v.r32(vmcs::VM_EXIT_INSTRUCTION_LEN);
        let insn_len = len.min(15) as u8;
        if full & (1 << 31) != 0 {
            if reason == reason::MCE_DURING_VMENTRY {
                // The entry failed on a machine check: the host's handler gets it after
                // the window; userspace still sees the failed entry, as with KVM.
                self.mce_pending = true;
            }
            return Ok(Some(Exit::FailEntry {
                reason: u64::from(full),
            }));
        }
        let vect = v.r32(vmcs::IDT_VECTORING_INFO_FIELD);
        if vect & INFO_VALID != 0 {
            Self::requeue_vectoring(v, ctx.state, vect);
        }
        // The frequent exits that have no qualification skip reading it.
        let qual = match reason {
            reason::CPUID
            | reason::MSR_READ
            | reason::MSR_WRITE
            | reason::VMCALL
            | reason::XSETBV
            | reason::HLT
            | reason::EXTERNAL_INTERRUPT
            | reason::PREEMPTION_TIMER
            | reason::INTERRUPT_WINDOW => 0,
            _ => v.rn(vmcs::EXIT_QUALIFICATION),
        };
        let env = Self::env(ctx);
        let msr = matches!(reason, reason::MSR_READ | reason::MSR_WRITE)
            .then(|| (ctx.msr_env(), ctx.msr_filter));
        let s = &mut *ctx.state;
        match reason {
            reason::EXCEPTION_NMI => {
                let info = v.r32(vmcs::VM_EXIT_INTR_INFO);
                let vector = (info & 0xff) as u8;
                if (info >> 8) & 7 == TYPE_NMI {
                    // The host's NMI: hand it to the host once interrupts can be taken.
                    // SAFETY: Sends an NMI IPI to this CPU; it is taken after the window.
                    unsafe { ffi::rkvm_self_nmi() };
                    return Ok(Some(Exit::Again));
                }
                let code =
                    (info & INFO_ERROR_CODE != 0).then(|| v.r32(vmcs::VM_EXIT_INTR_ERROR_CODE));
                if vm86_mode(ctx.rmode, s)
                    && vector != MC_VECTOR
                    && ctx.guest_debug & KVM_GUESTDBG_ENABLE == 0
                {
                    return Ok(Some(Exit::RealModeException {
                        vector,
                        error_code: code,
                        insn_len: v.r32(vmcs::VM_EXIT_INSTRUCTION_LEN).min(15) as u8,
                    }));
                }
                match vector {
                    MC_VECTOR => {
                        // A machine check the guest's run took: the host's handler runs
                        // once the window is closed (`run`); then the guest goes on.
                        self.mce_pending = true;
                        Ok(Some(Exit::Again))
                    }
                    // With userspace debugging but not single-stepping, a #DB is the
                    // guest's own (its breakpoints): it gets it, as with KVM.
                    DB_VECTOR
                        if ctx.guest_debug & (KVM_GUESTDBG_SINGLESTEP | KVM_GUESTDBG_USE_HW_BP)
                            == 0 =>
                    {
                        // ICEBP (INT1) exits at the instruction: its #DB returns past it.
                        if (info >> 8) & 7 == TYPE_PRIV_SW_EXCEPTION {
                            Self::skip(v, len)?;
                        }
                        // An intercepted #DB leaves DR6 alone: the exit qualification has
                        // the bits (B0-B3, BD, BS) the guest's DR6 gets.
                        s.dr6 = (s.dr6 & !0xf) | 0xffff_0ff0 | (qual & 0x600f);
                        if self.guest_dr_loaded {
                            // SAFETY: The guest's DR6 is in the hardware for this window
                            // (the host's is put back when the window ends).
                            unsafe { cpu::regs::set_dr(6, s.dr6) };
                        }
                        Self::queue_exception(s, vector, None);
                        Ok(None)
                    }
                    DB_VECTOR | BP_VECTOR if ctx.guest_debug & KVM_GUESTDBG_ENABLE != 0 => {
                        if vector == BP_VECTOR {
                            // A debugger may hand this #BP back (KVM_GUESTDBG_INJECT_BP).
                            s.soft_exc_len = v.r32(vmcs::VM_EXIT_INSTRUCTION_LEN).min(15) as u8;
                        }
                        let dr6 = if vector == DB_VECTOR {
                            qual | 0xffff_0ff0
                        } else {
                            0xffff_0ff0
                        };
                        Ok(Some(Exit::Debug {
                            exception: u32::from(vector),
                            dr6,
                            dr7: v.rn(vmcs::GUEST_DR7),
                        }))
                    }
                    UD_VECTOR => Ok(Some(Exit::InvalidOpcode)),
                    _ => {
                        // Not intercepted otherwise: reflect it back to the guest.
                        let code = (info & INFO_ERROR_CODE != 0)
                            .then(|| v.r32(vmcs::VM_EXIT_INTR_ERROR_CODE));
                        Self::queue_exception(s, vector, code);
                        Ok(None)
                    }
                }
            }
            reason::EXTERNAL_INTERRUPT => {
                ctx.stats.inc(st::IRQ_EXITS);
                ctx.at_boundary.store(true, Ordering::Relaxed);
                Ok(Some(Exit::Again))
            }
            reason::TRIPLE_FAULT => Ok(Some(Exit::Shutdown)),
            // An INIT sent to this CPU is held while it is in VMX operation: re-entering
            // would loop on it with interrupts off. Close the window so that it takes
            // effect after VMXOFF. (SIPI exits need the wait-for-SIPI state rkvm never
            // uses.)
            reason::INIT => Ok(Some(Exit::Again)),
            reason::SIPI => Ok(None),
            reason::INTERRUPT_WINDOW => {
                ctx.stats.inc(st::IRQ_WINDOW_EXITS);
                if ctx.apic_window {
                    // The APIC's interrupt can be taken now.
                    return Ok(Some(Exit::Again));
                }
                Ok(None)
            }
            // The APIC timer's interrupt, if that is what is due and the guest can take it;
            // the window's time slice (or an interrupt it cannot take yet) goes back to
            // the vCPU loop.
            reason::PREEMPTION_TIMER => {
                if self.apic_timer(v, ctx, crate::x86::lapic::window::TIMER_WAIT_NS) {
                    return Ok(None);
                }
                Ok(Some(Exit::Again))
            }
            reason::NMI_WINDOW => {
                ctx.stats.inc(st::NMI_WINDOW_EXITS);
                Ok(None)
            }
            reason::CPUID => {
                let at = self.at(v, s);
                let done = insn::cpuid(&mut self.gprs, s, &at, &env);
                self.finish(v, s, done, len)
            }
            reason::HLT => {
                ctx.stats.inc(st::HALT_EXITS);
                self.complete(v, len)?;
                if self.apic_timer(v, ctx, crate::x86::lapic::window::TIMER_WAIT_NS) {
                    return Ok(None);
                }
                Ok(Some(Exit::Hlt))
            }
            reason::INVD | reason::WBINVD => {
                self.complete(v, len)?;
                Ok(None)
            }
            // Only pause-loop exiting makes PAUSE exit (PAUSE exiting is off).
            reason::PAUSE => {
                self.complete(v, len)?;
                Ok(Some(Exit::Spin))
            }
            reason::INVLPG => {
                if self.vpid != 0 {
                    // SAFETY: In VMX operation; individual-address INVVPID falls back to
                    // a single-context flush below when unsupported.
                    let r = unsafe { crate::vmx::asm::invvpid(0, self.vpid, qual) };
                    if r.is_err() {
                        self.flushed_gen = u64::MAX;
                    }
                }
                self.complete(v, len)?;
                Ok(None)
            }
            reason::RDPMC => {
                Self::queue_exception(s, GP_VECTOR, Some(0));
                Ok(None)
            }
            reason::VMCALL => {
                ctx.stats.inc(st::HYPERCALLS);
                let at = self.at(v, s);
                let done = insn::hypercall(&mut self.gprs, &at, &env);
                self.finish(v, s, done, len)
            }
            reason::VMCLEAR..=reason::VMXON | reason::INVEPT | reason::INVVPID | reason::VMFUNC => {
                Self::queue_exception(s, UD_VECTOR, None);
                Ok(None)
            }
            reason::MWAIT | reason::MONITOR => {
                let at = self.at(v, s);
                let done = insn::monitor_mwait(s, &at, &env);
                self.finish(v, s, done, len)
            }
            reason::RDTSCP | reason::INVPCID => Ok(Some(Exit::Unhandled { reason, qual })),
            reason::XSETBV => {
                let at = self.at(v, s);
                let done = insn::xsetbv(&self.gprs, s, &at, &env);
                if let insn::Done::Skip = done {
                    // SAFETY: `insn::xsetbv` accepted the value: a valid XCR0 within the
                    // host's components. The host value is restored before the window
                    // ends.
                    unsafe { crate::x86::fpu::xsetbv0(s.xcr0) };
                }
                self.finish(v, s, done, len)
            }
            reason::IO_INSTRUCTION => {
                ctx.stats.inc(st::IO_EXITS);
                let size = (qual & 7) as u8 + 1;
                let input = qual & (1 << 3) != 0;
                let string = qual & (1 << 4) != 0;
                let rep = qual & (1 << 5) != 0;
                let port = (qual >> 16) as u16;
                if !string {
                    self.complete(v, len)?;
                }
                Ok(Some(Exit::Io {
                    port,
                    size,
                    input,
                    string,
                    rep,
                    value: self.gprs.r[reg::RAX] as u32,
                    insn_len,
                }))
            }
            reason::CR_ACCESS => {
                let q = CrQual(qual);
                let gpr = q.gpr() as u8;
                let op = match q.kind() {
                    0 => CrOp::Write { gpr },
                    1 => CrOp::Read { gpr },
                    2 => CrOp::Clts,
                    _ => CrOp::Lmsw {
                        value: q.lmsw_source() as u16,
                    },
                };
                Ok(Some(Exit::CrAccess {
                    cr: q.cr() as u8,
                    op,
                    insn_len,
                }))
            }
            reason::DR_ACCESS => {
                let q = DrQual(qual);
                Ok(Some(Exit::DrAccess {
                    dr: q.dr() as u8,
                    write: !q.to_gpr(),
                    gpr: q.gpr() as u8,
                    insn_len,
                }))
            }
            reason::MSR_READ | reason::MSR_WRITE => {
                let write = reason == reason::MSR_WRITE;
                let m = self.gprs.r[reg::RCX] as u32;
                let done = match msr {
                    Some((menv, filter)) if !Self::holds_msr(m) => {
                        insn::msr(&mut self.gprs, s, &menv, filter, write)
                    }
                    _ => None,
                };
                match done {
                    Some(done) => self.finish(v, s, done, len),
                    // The local APIC's timer and EOI, when the window may finish them.
                    None if write && ctx.apic.is_some() && Self::apic_msr(u64::from(m)) => {
                        match self.apic_msr_write(v, ctx, len)? {
                            Some(done) => Ok(done),
                            None => Ok(Some(Exit::Wrmsr { insn_len })),
                        }
                    }
                    None if write => Ok(Some(Exit::Wrmsr { insn_len })),
                    None => Ok(Some(Exit::Rdmsr { insn_len })),
                }
            }
            reason::MONITOR_TRAP_FLAG => Ok(Some(Exit::Debug {
                exception: u32::from(DB_VECTOR),
                dr6: 0xffff_4ff0,
                dr7: v.rn(vmcs::GUEST_DR7),
            })),
            reason::PML_FULL => {
                Self::reblock_nmi(v, qual, vect)?;
                // Back to process context, which takes the log (and the window starts
                // the next one empty).
                Ok(Some(Exit::Again))
            }
            reason::EPT_VIOLATION => {
                Self::reblock_nmi(v, qual, vect)?;
                let gpa = v.r64(vmcs::GUEST_PHYSICAL_ADDRESS);
                let q = EptQual(qual);
                // Not while an event was being delivered (that needs the vCPU loop), and only
                // for the instruction's own access to a linear address (qualification bits
                // 7 and 8), not a paging-structure access on the way there.
                if q.write() && vect & INFO_VALID == 0 && qual & 0x180 == 0x180 {
                    if let Some(done) = self.apic_write(v, ctx, gpa)? {
                        return Ok(done);
                    }
                }
                Ok(Some(Exit::TdpFault {
                    gpa,
                    write: q.write(),
                    fetch: q.fetch(),
                    vectoring: vect,
                    hw_reason: reason,
                    hw_qual: qual,
                }))
            }
            _ => Ok(Some(Exit::Unhandled { reason, qual })),
        }
    }
}

impl Core {
    /// Completes the instruction of this exit: RIP past it, the interrupt shadow over.
    /// If the guest single-steps (RFLAGS.TF), its #DB is due before the next instruction
    /// (see `completed`).
    pub(super) fn complete(&mut self, v: &Loaded<'_>, len: u32) -> Result {
        Self::skip(v, len)?;
        self.completed = true;
        Ok(())
    }

    /// An EPT violation or full log hit the guest's IRET out of an NMI handler (exit
    /// qualification bit 12, outside event delivery): the CPU already lifted virtual-NMI
    /// blocking, but the IRET will run again, so blocking is restored until it completes.
    fn reblock_nmi(v: &Loaded<'_>, qual: u64, vect: u32) -> Result {
        if qual & (1 << 12) != 0 && vect & INFO_VALID == 0 {
            let i = v.r32(vmcs::GUEST_INTERRUPTIBILITY_INFO);
            v.w32(vmcs::GUEST_INTERRUPTIBILITY_INFO, i | 1 << 3)
                .map_err(|_| EIO)?;
        }
        Ok(())
    }

    /// The guest's mode, for the instructions of [`insn`].
    /// `s` holds the guest's CR0 and CR4 during the window (see `save_guest`).
    fn at(&self, v: &Loaded<'_>, s: &VcpuState) -> insn::At {
        insn::At {
            cpl: (v.r16(vmcs::GUEST_SS_SELECTOR) & 3) as u8,
            cr4: s.cr4,
            protected: s.cr0 & cr0::PE != 0,
            long_cs: v.r32(vmcs::GUEST_CS_AR_BYTES) & (1 << 13) != 0,
        }
    }

    /// MSRs whose guest value is in the VMCS or in the hardware during the window, not in
    /// the vCPU state: the generic code reads them once the window has saved them.
    fn holds_msr(m: u32) -> bool {
        matches!(
            m,
            index::EFER
                | index::IA32_CR_PAT
                | index::IA32_DEBUGCTL
                | index::IA32_SYSENTER_CS
                | index::IA32_SYSENTER_ESP
                | index::IA32_SYSENTER_EIP
                | index::FS_BASE
                | index::GS_BASE
                | index::KERNEL_GS_BASE
        )
    }

    fn env<'a>(ctx: &RunCtx<'a>) -> insn::Env<'a> {
        insn::Env {
            cpuid: ctx.cpuid,
            quirks: ctx.quirks,
            pv_features: ctx.pv_features,
        }
    }

    /// Skips the instruction or queues its fault; a yield leaves the window after the skip.
    fn finish(
        &mut self,
        v: &Loaded<'_>,
        s: &mut VcpuState,
        done: insn::Done,
        len: u32,
    ) -> Result<Option<Exit>> {
        match done {
            insn::Done::Skip => self.complete(v, len)?,
            insn::Done::Fault(f) => s.events.exception = Some(f),
            insn::Done::YieldTo(apic_id) => {
                self.complete(v, len)?;
                return Ok(Some(Exit::YieldTo { apic_id }));
            }
        }
        Ok(None)
    }
}

crate::sys::bitfield::bitfield! {
    /// Exit qualification of a control-register access (SDM Table 28-3).
    struct CrQual(u64) {
        fields {
            cr: 0..=3,
            /// 0: MOV to CR, 1: MOV from CR, 2: CLTS, 3: LMSW.
            kind: 4..=5,
            gpr: 8..=11,
            lmsw_source: 16..=31,
        }
        flags {}
    }
}

crate::sys::bitfield::bitfield! {
    /// Exit qualification of a debug-register access (SDM Table 28-4).
    struct DrQual(u64) {
        fields {
            dr: 0..=2,
            gpr: 8..=11,
        }
        flags {
            /// MOV from DR (to the general register).
            to_gpr: 4,
        }
    }
}

crate::sys::bitfield::bitfield! {
    /// Exit qualification of an EPT violation (SDM Table 28-7), the bits rkvm uses.
    struct EptQual(u64) {
        fields {}
        flags {
            write: 1,
            fetch: 2,
        }
    }
}

// SPDX-License-Identifier: GPL-2.0

//! #VMEXIT decoding: the exits handled inside the window (physical interrupts, the
//! interrupt window, exceptions reflected to the guest, SVM instructions the guest may
//! not use) and the decoded [`Exit`] for everything else.

use super::*;
use crate::x86::exit::{CrOp, Intercept};
use crate::x86::state::Exception;

crate::sys::bitfield::bitfield! {
    /// EXITINFO1 of an IOIO intercept (APM 15.10.2).
    struct IoInfo(u64) {
        fields {
            /// The operand size in bytes, one-hot: 1, 2 or 4.
            size: 4..=6,
            port: 16..=31,
        }
        flags {
            input: 0,
            string: 2,
            rep: 3,
        }
    }
}

crate::sys::bitfield::bitfield! {
    /// EXITINFO1 of a nested page fault: the page-fault error code of the access.
    struct NpfInfo(u64) {
        fields {}
        flags {
            write: 1,
            fetch: 4,
        }
    }
}

impl SvmVcpu {
    /// Queues exception `vector` for the guest.
    fn queue(s: &mut crate::x86::state::VcpuState, vector: u8, error_code: Option<u32>) {
        s.events.exception = Some(Exception {
            vector,
            error_code,
            injected: false,
            payload: None,
        });
    }

    /// The instruction's length, when the CPU saved the next RIP.
    fn next_rip_len(&self) -> Option<u8> {
        if self.svm.features & feature::NRIPS == 0 {
            return None;
        }
        let l = &self.svm.layout;
        let len = self.vmcb.r64(l.next_rip).wrapping_sub(self.vmcb.r64(l.rip));
        (1..=15).contains(&len).then_some(len as u8)
    }

    /// A MOV to or from a control or debug register, decoded by the CPU (decode assists:
    /// EXITINFO1 bit 63 valid, the general register in bits 3:0) when it also saved the
    /// next RIP; `None` to decode it from memory (CLTS, LMSW, or no assists).
    fn assisted(&self, info1: u64) -> Option<(u8, u8)> {
        if self.svm.features & feature::DECODE_ASSISTS == 0 || info1 & (1 << 63) == 0 {
            return None;
        }
        Some(((info1 & 15) as u8, self.next_rip_len()?))
    }

    fn intercepted(&self, what: Intercept) -> Option<Exit> {
        Some(Exit::Intercepted {
            what,
            len: self.next_rip_len(),
        })
    }

    /// Handles one #VMEXIT inside the window; `Some` leaves the window.
    pub(super) fn handle_exit(&mut self, ctx: &mut RunCtx<'_>) -> Result<Option<Exit>> {
        let l = &self.svm.layout;
        let code = self.vmcb.r64(l.exit_code);
        let info1 = self.vmcb.r64(l.exit_info_1);
        let info2 = self.vmcb.r64(l.exit_info_2);
        // VMEXIT_INVALID (-1): the guest state did not pass VMRUN's checks. KVM compares
        // the low 32 bits, as QEMU stores only those.
        if code as u32 == u32::MAX {
            return Ok(Some(Exit::FailEntry { reason: code }));
        }
        let Ok(code) = u32::try_from(code) else {
            return Ok(Some(Exit::Unhandled {
                reason: u32::MAX,
                qual: info1,
            }));
        };
        let s = &mut *ctx.state;
        // The event this entry injected, or the guest's own, if the exit cut it short.
        self.requeue_interrupted(s);
        let exit = match code {
            SVM_EXIT_INTR => {
                ctx.stats.inc(st::IRQ_EXITS);
                ctx.at_boundary
                    .store(true, core::sync::atomic::Ordering::Relaxed);
                Some(Exit::Again)
            }
            // Held by GIF: taken by the host once the window closes.
            SVM_EXIT_NMI | SVM_EXIT_INIT => Some(Exit::Again),
            SVM_EXIT_VINTR => {
                ctx.stats.inc(st::IRQ_WINDOW_EXITS);
                self.set_irq_window(false);
                ctx.apic_window.then_some(Exit::Again)
            }
            SVM_EXIT_IRET => {
                // KVM counts this intercept as its NMI window on SVM.
                ctx.stats.inc(st::NMI_WINDOW_EXITS);
                s.events.nmi_masked = false;
                self.vmcb.set_intercept(l, SVM_EXIT_IRET, false);
                None
            }
            SVM_EXIT_SHUTDOWN => {
                self.vmcb_undefined = true;
                Some(Exit::Shutdown)
            }
            // Held by GIF like an NMI: the SMI is taken once the window closes.
            SVM_EXIT_SMI => Some(Exit::Again),
            c if (SVM_EXIT_EXCP_BASE..SVM_EXIT_EXCP_BASE + 32).contains(&c) => {
                let vector = (c - SVM_EXIT_EXCP_BASE) as u8;
                match vector {
                    MC_VECTOR => {
                        self.mce_pending = true;
                        Some(Exit::Again)
                    }
                    DB_VECTOR
                        if ctx.guest_debug & (KVM_GUESTDBG_SINGLESTEP | KVM_GUESTDBG_USE_HW_BP)
                            == 0 =>
                    {
                        // The guest's own #DB (its breakpoints): it gets it.
                        Self::queue(s, vector, None);
                        None
                    }
                    DB_VECTOR | BP_VECTOR => {
                        if vector == BP_VECTOR {
                            // A debugger may hand this #BP back (KVM_GUESTDBG_INJECT_BP).
                            s.soft_exc_len = 1;
                        }
                        let dr6 = if vector == DB_VECTOR {
                            self.vmcb.r64(l.dr6) | 0xffff_0ff0
                        } else {
                            0xffff_0ff0
                        };
                        Some(Exit::Debug {
                            exception: u32::from(vector),
                            dr6,
                            dr7: self.vmcb.r64(l.dr7),
                        })
                    }
                    UD_VECTOR => Some(Exit::InvalidOpcode),
                    // #AC back to the guest, with its error code (EXITINFO1).
                    AC_VECTOR => {
                        Self::queue(s, vector, Some(info1 as u32));
                        None
                    }
                    // Not intercepted otherwise.
                    _ => {
                        Self::queue(s, vector, None);
                        None
                    }
                }
            }
            SVM_EXIT_IOIO => {
                ctx.stats.inc(st::IO_EXITS);
                let rip = self.vmcb.r64(l.rip);
                let len = info2.wrapping_sub(rip);
                let insn_len = if (1..=15).contains(&len) {
                    len as u8
                } else {
                    1
                };
                let io = IoInfo(info1);
                let string = io.string();
                if !string {
                    // Past the instruction, as the generic code expects of a non-string
                    // port access.
                    self.vmcb.w64(l.rip, info2);
                    if s.events.shadow != 0 || self.vmcb.r32(l.int_state) & 1 != 0 {
                        self.vmcb.w32(l.int_state, 0);
                    }
                }
                Some(Exit::Io {
                    port: io.port() as u16,
                    size: io.size() as u8,
                    input: io.input(),
                    string,
                    rep: io.rep(),
                    value: self.vmcb.r64(l.rax) as u32,
                    insn_len,
                })
            }
            SVM_EXIT_NPF => Some(Exit::TdpFault {
                gpa: info2,
                write: NpfInfo(info1).write(),
                fetch: NpfInfo(info1).fetch(),
                vectoring: self.vmcb.r32(l.exit_int_info),
                hw_reason: code,
                hw_qual: info1,
            }),
            // No nested SVM: the guest's SVM instructions are undefined to it.
            // RDPRU would read the host's APERF/MPERF (KVM raises #UD too).
            SVM_EXIT_VMRUN | SVM_EXIT_VMLOAD | SVM_EXIT_VMSAVE | SVM_EXIT_STGI | SVM_EXIT_CLGI
            | SVM_EXIT_SKINIT | SVM_EXIT_INVLPGA | SVM_EXIT_RDPRU => {
                Self::queue(s, UD_VECTOR, None);
                None
            }
            SVM_EXIT_RDPMC => {
                Self::queue(s, 13, Some(0));
                None
            }
            SVM_EXIT_CPUID => self.intercepted(Intercept::Cpuid),
            SVM_EXIT_HLT => {
                ctx.stats.inc(st::HALT_EXITS);
                self.intercepted(Intercept::Hlt)
            }
            SVM_EXIT_MSR if info1 == 0 => self.intercepted(Intercept::Rdmsr),
            SVM_EXIT_MSR => self.intercepted(Intercept::Wrmsr),
            SVM_EXIT_VMMCALL => {
                ctx.stats.inc(st::HYPERCALLS);
                self.intercepted(Intercept::Hypercall)
            }
            SVM_EXIT_XSETBV => self.intercepted(Intercept::Xsetbv),
            SVM_EXIT_MONITOR | SVM_EXIT_MWAIT | SVM_EXIT_MWAIT_COND => {
                self.intercepted(Intercept::MonitorMwait)
            }
            SVM_EXIT_WBINVD | SVM_EXIT_INVD => self.intercepted(Intercept::Wbinvd),
            c if (SVM_EXIT_READ_CR0..SVM_EXIT_READ_CR0 + 16).contains(&c) => {
                let cr = (c - SVM_EXIT_READ_CR0) as u8;
                match self.assisted(info1) {
                    Some((gpr, insn_len)) => Some(Exit::CrAccess {
                        cr,
                        op: CrOp::Read { gpr },
                        insn_len,
                    }),
                    None => self.intercepted(Intercept::CrRead(cr)),
                }
            }
            c if (SVM_EXIT_WRITE_CR0..SVM_EXIT_WRITE_CR0 + 16).contains(&c) => {
                let cr = (c - SVM_EXIT_WRITE_CR0) as u8;
                match self.assisted(info1) {
                    Some((gpr, insn_len)) => Some(Exit::CrAccess {
                        cr,
                        op: CrOp::Write { gpr },
                        insn_len,
                    }),
                    None => self.intercepted(Intercept::CrWrite(cr)),
                }
            }
            c if (SVM_EXIT_READ_DR0..SVM_EXIT_WRITE_DR0 + 16).contains(&c)
                && ctx.guest_debug & KVM_GUESTDBG_USE_HW_BP == 0 =>
            {
                // The guest uses its debug registers: let it, for the rest of the window
                // (KVM does the same). The access runs again, without an intercept.
                self.dr_passthrough = true;
                None
            }
            c if (SVM_EXIT_READ_DR0..SVM_EXIT_WRITE_DR0 + 16).contains(&c) => {
                let write = c >= SVM_EXIT_WRITE_DR0;
                let dr = (c - if write {
                    SVM_EXIT_WRITE_DR0
                } else {
                    SVM_EXIT_READ_DR0
                }) as u8;
                match self.assisted(info1) {
                    Some((gpr, insn_len)) => Some(Exit::DrAccess {
                        dr,
                        write,
                        gpr,
                        insn_len,
                    }),
                    None if write => self.intercepted(Intercept::DrWrite(dr)),
                    None => self.intercepted(Intercept::DrRead(dr)),
                }
            }
            _ => Some(Exit::Unhandled {
                reason: code,
                qual: info1,
            }),
        };
        Ok(exit)
    }
}

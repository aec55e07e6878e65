// SPDX-License-Identifier: GPL-2.0

//! Event injection: the event the generic code chose, written into EVENTINJ; the
//! interrupt window (a virtual interrupt whose VINTR intercept fires when the guest can
//! take one); an event an exit interrupted, back in the queue.
//!
//! SVM keeps no NMI-blocking state: after injecting an NMI rkvm treats NMIs as blocked
//! and intercepts IRET, which ends the handler. (KVM also waits for that IRET to
//! complete; rkvm unblocks at the intercept, so an NMI pending then arrives on the IRET.)

use super::*;
use crate::x86::state::{rflags, Exception, Next};
use vmcb::{event, int_ctl};

impl SvmVcpu {
    /// Delivers the highest-priority pending event, or asks for the window in which it can
    /// be delivered. Returns an exit for userspace when its interrupt window is open.
    pub(super) fn inject_events(&mut self, ctx: &mut RunCtx<'_>) -> Result<Option<Exit>> {
        let l = &self.svm.layout;
        let v = &self.vmcb;
        let s = &mut *ctx.state;
        let shadow = v.r32(l.int_state) & 1 != 0;
        let irq_ok = v.r64(l.rflags) & rflags::IF != 0 && !shadow;
        let nmi_ok = !s.events.nmi_masked && !shadow;
        let protected = s.protected();
        self.injected_soft = false;
        let next = s.events.take_next(irq_ok, nmi_ok, |_| true);
        let inj: Option<(u32, Option<u32>)> = match next {
            Some(Next::Exception(e)) => {
                if let Some(cr2) = e.payload {
                    v.w64(l.cr2, cr2);
                }
                if e.vector == 2 {
                    s.events.nmi_masked = true;
                    Some((2 | event::TYPE_NMI << 8, None))
                } else if e.vector < 32 {
                    // #BP and #OF return past their one-byte instruction (INT3, INTO).
                    if (e.vector == 3 || e.vector == 4) && !e.injected && s.soft_exc_len != 0 {
                        let rip = v.r64(l.rip).wrapping_add(u64::from(s.soft_exc_len));
                        v.w64(l.rip, rip);
                        // With next-RIP saving the CPU pushes NextRIP for a soft event.
                        v.w64(l.next_rip, rip);
                        self.injected_soft = true;
                    }
                    let code = e.error_code.filter(|_| protected);
                    Some((u32::from(e.vector) | event::TYPE_EXCEPTION << 8, code))
                } else {
                    None
                }
            }
            Some(Next::SoftInterrupt { vector, len }) => {
                // An INT n cut short: delivered again as a software interrupt, which
                // returns past the instruction.
                let rip = v.r64(l.rip).wrapping_add(u64::from(len));
                v.w64(l.rip, rip);
                v.w64(l.next_rip, rip);
                self.injected_soft = true;
                Some((u32::from(vector) | event::TYPE_SOFT << 8, None))
            }
            Some(Next::Nmi) => {
                s.events.nmi_masked = true;
                ctx.stats.inc(st::NMI_INJECTIONS);
                Some((2 | event::TYPE_NMI << 8, None))
            }
            Some(Next::Interrupt(vector)) => {
                ctx.stats.inc(st::IRQ_INJECTIONS);
                Some((u32::from(vector) | event::TYPE_INTR << 8, None))
            }
            None => None,
        };
        match inj {
            Some((info, code)) => {
                let ev = info | event::VALID | code.map_or(0, |_| event::ERROR_VALID);
                v.w32(l.event_inj_err, code.unwrap_or(0));
                v.w32(l.event_inj, ev);
            }
            None => v.w32(l.event_inj, 0),
        }
        // IRET ends NMI blocking.
        v.set_intercept(l, SVM_EXIT_IRET, s.events.nmi_masked);
        let mut want_irq_window = ctx.apic_window;
        if s.events.interrupt.is_some() && inj.is_none() {
            want_irq_window = true;
        }
        if ctx.request_irq_window && s.events.interrupt.is_none() {
            if irq_ok && inj.is_none() {
                return Ok(Some(Exit::IrqWindowOpen));
            }
            want_irq_window = true;
        }
        self.set_irq_window(want_irq_window);
        Ok(None)
    }

    /// Asks for (or stops asking for) a VINTR exit when the guest can take an interrupt.
    pub(super) fn set_irq_window(&self, on: bool) {
        let l = &self.svm.layout;
        let v = &self.vmcb;
        let ctl = v.r32(l.int_ctl)
            & !(int_ctl::V_IRQ | int_ctl::V_IGN_TPR | 0xf << int_ctl::V_INTR_PRIO_SHIFT);
        let ctl = if on {
            ctl | int_ctl::V_IRQ | int_ctl::V_IGN_TPR | 0xf << int_ctl::V_INTR_PRIO_SHIFT
        } else {
            ctl
        };
        v.w32(l.int_ctl, ctl);
        v.set_intercept(l, SVM_EXIT_VINTR, on);
    }

    /// Puts an event whose delivery an exit interrupted (EXITINTINFO) back in the queue.
    pub(super) fn requeue_interrupted(&self, s: &mut crate::x86::state::VcpuState) {
        let l = &self.svm.layout;
        let v = &self.vmcb;
        let info = v.r32(l.exit_int_info);
        if info & event::VALID == 0 {
            return;
        }
        let vector = (info & 0xff) as u8;
        let ev = &mut s.events;
        match (info >> 8) & 7 {
            event::TYPE_INTR => {
                ev.interrupt = Some(vector);
                ev.interrupt_injected = true;
            }
            event::TYPE_NMI => {
                ev.nmi_injected = true;
                ev.nmi_masked = false;
            }
            // The guest's own INT3 or INTO: RIP is still at it, the guest runs it again.
            event::TYPE_EXCEPTION if (vector == 3 || vector == 4) && !self.injected_soft => {}
            event::TYPE_EXCEPTION => {
                let code = (info & event::ERROR_VALID != 0).then(|| v.r32(l.exit_int_info_err));
                ev.exception = Some(Exception {
                    vector,
                    error_code: code,
                    // Delivery started: RIP already points where it returns to.
                    injected: true,
                    payload: None,
                });
            }
            event::TYPE_SOFT if self.injected_soft => {
                // rkvm's own re-injection: RIP is already past the instruction.
                ev.soft_interrupt = Some((vector, 0));
            }
            // The guest's own INT n: RIP is still at it, the guest runs it again.
            _ => {}
        }
    }
}

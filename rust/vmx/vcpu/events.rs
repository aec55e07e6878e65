// SPDX-License-Identifier: GPL-2.0

//! Event injection: the event the generic code chose, written into the VM-entry
//! fields, an event that was being delivered when the exit came, and skipping an
//! instruction.

use super::*;
use crate::x86::state::Next;

impl Core {
    /// Delivers the highest-priority pending event, or asks for the window in which it can
    /// be delivered. Returns an exit for userspace when its interrupt window is open.
    pub(super) fn inject_events(
        &mut self,
        v: &Loaded<'_>,
        ctx: &mut RunCtx<'_>,
        proc1_extra: u32,
    ) -> Result<Option<Exit>> {
        let soft_exc_len = ctx.state.soft_exc_len;
        let ev = &mut ctx.state.events;
        let windows =
            proc1::INTR_WINDOW_EXITING | proc1::NMI_WINDOW_EXITING | proc1::MONITOR_TRAP_FLAG;
        if ev.exception.is_none()
            && ev.soft_interrupt.is_none()
            && !ev.nmi_pending
            && !ev.nmi_injected
            && ev.interrupt.is_none()
            && !ctx.request_irq_window
            && !ctx.apic_window
        {
            // Nothing to deliver and no window to ask for (the common case): what the
            // slow path below would write, without reading the guest's state.
            let p1 = self.proc1 & !windows | proc1_extra;
            set_ctl(v, vmcs::VM_ENTRY_INTR_INFO_FIELD, &mut self.entry_info, 0)?;
            return set_ctl(v, vmcs::CPU_BASED_VM_EXEC_CONTROL, &mut self.proc1, p1).map(|()| None);
        }
        let rfl = v.rn(vmcs::GUEST_RFLAGS);
        let intr = v.r32(vmcs::GUEST_INTERRUPTIBILITY_INFO);
        let shadow = intr & (BLOCK_STI | BLOCK_MOV_SS) != 0;
        let irq_ok = rfl & rflags::IF != 0 && !shadow;
        let nmi_ok = intr & (BLOCK_NMI | BLOCK_STI | BLOCK_MOV_SS) == 0;
        let protected = v.rn(vmcs::CR0_READ_SHADOW) & cr0::PE != 0;
        if ctx.rmode.is_some() && !protected {
            // Virtual-8086 real mode: events go through the guest's IVT, which rkvm walks in
            // software outside the window; here only the windows are requested.
            let deliverable = ev.exception.is_some()
                || ev.soft_interrupt.is_some()
                || ev.nmi_injected
                || (ev.nmi_pending && nmi_ok)
                || (ev.interrupt.is_some() && irq_ok);
            if deliverable {
                return Ok(Some(Exit::Again));
            }
            if ctx.request_irq_window && ev.interrupt.is_none() && irq_ok {
                return Ok(Some(Exit::IrqWindowOpen));
            }
            let mut p1 = self.proc1 & !windows | proc1_extra;
            if ev.interrupt.is_some() || ctx.request_irq_window || ctx.apic_window {
                p1 |= proc1::INTR_WINDOW_EXITING;
            }
            if ev.nmi_pending {
                p1 |= proc1::NMI_WINDOW_EXITING;
            }
            set_ctl(v, vmcs::VM_ENTRY_INTR_INFO_FIELD, &mut self.entry_info, 0)?;
            return set_ctl(v, vmcs::CPU_BASED_VM_EXEC_CONTROL, &mut self.proc1, p1).map(|()| None);
        }
        let mut want_irq_window = ctx.apic_window;
        let mut want_nmi_window = false;
        let caps = inject::Caps::new(&self.vmx.config);
        // A software interrupt goes in as one when VM entry takes its length, and as an
        // external interrupt otherwise (when the guest can take one).
        let soft_ok = |len| caps.len_ok(len) || irq_ok;
        let inj = match ev.take_next(irq_ok, nmi_ok, soft_ok) {
            Some(Next::Exception(e)) => {
                if let Some(cr2) = e.payload {
                    self.gprs.r[reg::CR2] = cr2;
                }
                Some(inject::exception(&e, protected, soft_exc_len, caps))
            }
            Some(Next::SoftInterrupt { vector, len }) => {
                inject::soft_interrupt(vector, len, irq_ok, caps)
            }
            Some(Next::Nmi) => {
                ctx.stats.inc(st::NMI_INJECTIONS);
                Some(inject::nmi())
            }
            Some(Next::Interrupt(vector)) => {
                ctx.stats.inc(st::IRQ_INJECTIONS);
                Some(inject::external(vector))
            }
            None => None,
        };
        if let Some(inj) = &inj {
            inj.write_fields(v)?;
        }
        let info = inj.map_or(0, |i| i.info);
        // A software interrupt the CPU cannot take yet waits for the guest's window.
        if ev.soft_interrupt.is_some() && info == 0 {
            want_irq_window = true;
        }
        if ev.nmi_pending {
            want_nmi_window = true;
        }
        if ev.interrupt.is_some() && info == 0 {
            want_irq_window = true;
        }
        if ctx.request_irq_window && ev.interrupt.is_none() {
            if irq_ok && info == 0 {
                return Ok(Some(Exit::IrqWindowOpen));
            }
            want_irq_window = true;
        }
        set_ctl(
            v,
            vmcs::VM_ENTRY_INTR_INFO_FIELD,
            &mut self.entry_info,
            info,
        )?;
        let mut p1 = self.proc1 & !windows | proc1_extra;
        if want_irq_window {
            p1 |= proc1::INTR_WINDOW_EXITING;
        }
        if want_nmi_window {
            p1 |= proc1::NMI_WINDOW_EXITING;
        }
        set_ctl(v, vmcs::CPU_BASED_VM_EXEC_CONTROL, &mut self.proc1, p1).map(|()| None)
    }

    /// Puts an event whose delivery an exit interrupted back in the queue.
    pub(super) fn requeue_vectoring(v: &Loaded<'_>, s: &mut VcpuState, vect: u32) {
        let vector = (vect & 0xff) as u8;
        let ev = &mut s.events;
        match (vect >> 8) & 7 {
            TYPE_EXT_INTR => {
                ev.interrupt = Some(vector);
                ev.interrupt_injected = true;
            }
            TYPE_NMI => {
                ev.nmi_injected = true;
                ev.nmi_masked = false;
            }
            TYPE_HW_EXCEPTION => {
                let code =
                    (vect & INFO_ERROR_CODE != 0).then(|| v.r32(vmcs::IDT_VECTORING_ERROR_CODE));
                ev.exception = Some(Exception {
                    vector,
                    error_code: code,
                    injected: true,
                    payload: None,
                });
            }
            TYPE_SOFT_INTR | TYPE_PRIV_SW_EXCEPTION | TYPE_SOFT_EXCEPTION => {
                let len = v.r32(vmcs::VM_EXIT_INSTRUCTION_LEN) as u8;
                s.soft_exc_len = len;
                let ev = &mut s.events;
                ev.soft_interrupt = Some((vector, len));
            }
            _ => {}
        }
    }

    pub(super) fn skip(v: &Loaded<'_>, len: u32) -> Result {
        let rip = v.rn(vmcs::GUEST_RIP).wrapping_add(u64::from(len));
        v.wn(vmcs::GUEST_RIP, rip).map_err(|_| EIO)?;
        // Completing an instruction ends an STI/MOV SS shadow.
        let intr = v.r32(vmcs::GUEST_INTERRUPTIBILITY_INFO);
        if intr & (BLOCK_STI | BLOCK_MOV_SS) != 0 {
            v.w32(
                vmcs::GUEST_INTERRUPTIBILITY_INFO,
                intr & !(BLOCK_STI | BLOCK_MOV_SS),
            )
            .map_err(|_| EIO)?;
        }
        Ok(())
    }

    pub(super) fn queue_exception(s: &mut VcpuState, vector: u8, error_code: Option<u32>) {
        s.events.exception = Some(Exception {
            vector,
            error_code,
            injected: false,
            payload: None,
        });
    }
}

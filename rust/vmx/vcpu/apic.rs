// SPDX-License-Identifier: GPL-2.0

//! The local APIC work the VMX window finishes itself (see `x86::lapic::window`): a
//! guest's write of EOI or of the timer's initial count to the xAPIC page, and a HLT that
//! the APIC timer ends within a microsecond. Each saves a window: the vCPU loop would
//! otherwise close it, emulate the access and open another. Whatever else comes up goes
//! back to the vCPU loop as before.

use super::*;
use crate::x86::emulate;
use crate::x86::lapic::window::Written;

impl Core {
    /// An EPT violation on a write to the xAPIC page. `None`: not finished here (the vCPU
    /// loop emulates it); `Some(None)`: done, the guest runs on; `Some(Some(exit))`: done,
    /// and the vCPU loop has an interrupt to deliver.
    pub(super) fn apic_write(
        &mut self,
        v: &Loaded<'_>,
        ctx: &mut RunCtx<'_>,
        gpa: u64,
    ) -> Result<Option<Option<Exit>>> {
        let (Some(apic), Some(mem)) = (ctx.apic.as_mut(), ctx.window_mem) else {
            return Ok(None);
        };
        // Not without unrestricted guest (real mode and the guest's CR3 are rkvm's then).
        if apic.xapic_page() != Some(gpa & !0xfff) || ctx.rmode.is_some() {
            return Ok(None);
        }
        // The decoder's view of the guest now. CR0, CR4 and EFER in the state are current
        // during the window (their changes exit); the rest is read here, and the end of
        // the window reads it again.
        let s = &mut *ctx.state;
        self.gprs_to(s);
        s.regs.rip = v.rn(vmcs::GUEST_RIP);
        s.regs.rsp = v.rn(vmcs::GUEST_RSP);
        s.regs.rflags = v.rn(vmcs::GUEST_RFLAGS);
        Self::save_seg(v, s, state::CS, false);
        Self::save_seg(v, s, state::SS, false);
        s.cr3 = v.rn(vmcs::GUEST_CR3);
        // 32-bit PAE paging walks PDPTEs the state may not hold yet.
        if s.paging() && !s.long_mode() && s.cr4 & crate::x86::state::cr4::PAE != 0 {
            return Ok(None);
        }
        let rip = emulate::linear_rip(s);
        let mut code = [0u8; 15];
        // What fits in the page first, as the vCPU loop fetches; the rest if it can.
        let first = (4096 - (rip & 0xfff) as usize).min(code.len());
        let (head, tail) = code.split_at_mut(first);
        if emulate::read_virt(s, mem, rip, head).is_err() {
            return Ok(None);
        }
        if !tail.is_empty() {
            let _ = emulate::read_virt(s, mem, rip.wrapping_add(first as u64), tail);
        }
        let Some(op) = emulate::decode_mmio(s, &code) else {
            return Ok(None);
        };
        if !op.write || op.size != 4 || op.stos {
            return Ok(None);
        }
        let Some(written) = apic.write((gpa & 0xfff) as u32, op.value as u32) else {
            return Ok(None);
        };
        self.complete(v, u32::from(op.len))?;
        match written {
            Written::Timer => {
                ctx.timer_deadline_tsc = apic.deadline_tsc(s);
                Ok(Some(None))
            }
            // The vCPU loop delivers what the EOI unmasked.
            Written::Eoi if apic.has_interrupt() => Ok(Some(Some(Exit::Again))),
            Written::Eoi => Ok(Some(None)),
        }
    }

    /// A HLT (already completed) with interrupts enabled: when the APIC timer is due
    /// within a microsecond and nothing else is pending, waits for it and injects its
    /// interrupt, as the vCPU loop would after a halt that never slept. Whether it did.
    pub(super) fn apic_halt(&mut self, v: &Loaded<'_>, ctx: &mut RunCtx<'_>) -> bool {
        let Some(apic) = ctx.apic.as_mut() else {
            return false;
        };
        let ev = &ctx.state.events;
        let busy = ev.interrupt.is_some()
            || ev.exception.is_some()
            || ev.soft_interrupt.is_some()
            || ev.nmi_pending
            || ev.nmi_injected;
        // Something posted (an IPI, an NMI, INIT) sets the kick: the vCPU loop takes it.
        if busy
            || ctx.request_irq_window
            || ctx.kick.load(Ordering::Acquire)
            || v.rn(vmcs::GUEST_RFLAGS) & rflags::IF == 0
        {
            return false;
        }
        let Some((vector, _waited)) = apic.wait_timer_interrupt(ctx.state) else {
            return false;
        };
        ctx.state.events.interrupt = Some(vector);
        ctx.timer_deadline_tsc = apic.deadline_tsc(ctx.state);
        true
    }
}

// SPDX-License-Identifier: GPL-2.0

//! The local APIC work the VMX window finishes itself (see `x86::lapic::window`): a
//! guest's write of EOI or of the timer's initial count (to the xAPIC page or the x2APIC
//! MSRs), of IA32_TSC_DEADLINE, and the timer's interrupt when it is due or a HLT that it
//! ends within a microsecond. Each saves a window: the vCPU loop would
//! otherwise close it, emulate the access and open another. Whatever else comes up goes
//! back to the vCPU loop as before.

use super::*;
use crate::x86::emulate;

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
        if !tail.is_empty()
            && emulate::read_virt(s, mem, rip.wrapping_add(first as u64), tail).is_err()
        {
            return Ok(None);
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
        // The vCPU loop delivers what an EOI unmasked.
        let unmasked = apic.after_write(written, s, &mut ctx.timer_deadline_tsc);
        Ok(Some(unmasked.then_some(Exit::Again)))
    }

    /// The MSRs `apic_msr_write` may finish: the x2APIC's EOI and TMICT, and
    /// IA32_TSC_DEADLINE.
    pub(super) fn apic_msr(m: u64) -> bool {
        use crate::x86::lapic::{reg, TSC_DEADLINE_MSR, X2APIC_MSR};
        [reg::EOI, reg::TMICT]
            .map(|r| u64::from(X2APIC_MSR + (r >> 4)))
            .contains(&m)
            || m == u64::from(TSC_DEADLINE_MSR)
    }

    /// A WRMSR of the x2APIC's EOI or timer initial count, or of IA32_TSC_DEADLINE
    /// (which the VM's MSR filter allows), finished here when the APIC allows (see
    /// `WindowApic::msr_write`); as `apic_write` otherwise. RIP moves past the WRMSR
    /// (`len` bytes).
    pub(super) fn apic_msr_write(
        &mut self,
        v: &Loaded<'_>,
        ctx: &mut RunCtx<'_>,
        len: u32,
    ) -> Result<Option<Option<Exit>>> {
        let m = self.gprs.r[reg::RCX] as u32;
        let value = self.gprs.r[reg::RAX] & 0xffff_ffff | self.gprs.r[reg::RDX] << 32;
        let Some(apic) = ctx.apic.as_mut() else {
            return Ok(None);
        };
        // x2APIC MSRs are never filtered (as KVM); the TSC deadline is.
        if m == crate::x86::lapic::TSC_DEADLINE_MSR
            && !ctx.msr_filter.is_none_or(|f| f.allowed(m, true))
        {
            return Ok(None);
        }
        let Some(written) = apic.msr_write(m, value, ctx.state) else {
            return Ok(None);
        };
        self.complete(v, len)?;
        let unmasked = apic.after_write(written, ctx.state, &mut ctx.timer_deadline_tsc);
        Ok(Some(unmasked.then_some(Exit::Again)))
    }

    /// The APIC timer's interrupt, taken here when the guest can take it now: after a
    /// HLT (already completed) with interrupts enabled the timer may be up to 1 us away
    /// (`wait_ns`; it is waited for), after the preemption timer it must be due. Nothing
    /// else may be pending. Whether it was injected.
    pub(super) fn apic_timer(
        &mut self,
        v: &Loaded<'_>,
        ctx: &mut RunCtx<'_>,
        wait_ns: u64,
    ) -> bool {
        let Some(apic) = ctx.apic.as_mut() else {
            return false;
        };
        let ev = &ctx.state.events;
        let busy = ev.interrupt.is_some()
            || ev.exception.is_some()
            || ev.soft_interrupt.is_some()
            || ev.nmi_pending
            || ev.nmi_injected;
        let shadow = v.r32(vmcs::GUEST_INTERRUPTIBILITY_INFO) & (BLOCK_STI | BLOCK_MOV_SS) != 0;
        // Something posted (an IPI, an NMI, INIT) sets the kick: the vCPU loop takes it.
        if busy
            || shadow
            || ctx.request_irq_window
            || ctx.kick.load(Ordering::Acquire)
            || v.rn(vmcs::GUEST_RFLAGS) & rflags::IF == 0
        {
            return false;
        }
        let Some(vector) = apic.timer_interrupt(ctx.state, wait_ns) else {
            return false;
        };
        ctx.state.events.interrupt = Some(vector);
        ctx.timer_deadline_tsc = apic.deadline_tsc(ctx.state);
        true
    }
}

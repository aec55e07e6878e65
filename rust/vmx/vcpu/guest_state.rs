// SPDX-License-Identifier: GPL-2.0

//! Guest state between `VcpuState` and the VMCS: loading it before a window, saving
//! it after, and the general registers the entry code swaps.

use super::*;

impl Core {
    /// Writes the whole guest state. Without unrestricted guest, real mode is loaded as
    /// virtual-8086 mode (segments as paragraphs, the real-mode TSS, EFLAGS.VM and
    /// IOPL 3), and a guest without paging runs on the identity map.
    pub(super) fn load_guest(
        v: &Loaded<'_>,
        vmx: &Vmx,
        s: &VcpuState,
        rmode: Option<crate::x86::backend::RmodeAddrs>,
    ) -> Result {
        let w = |r: crate::vmx::asm::VmxResult| r.map_err(|_| EIO);
        let vm86 = vm86_mode(rmode, s);
        for (i, (f, seg)) in vmcs::SEGS.iter().zip(s.segs.iter()).enumerate() {
            if vm86 && i < 6 {
                // A virtual-8086 segment: base = selector << 4, limit 64 KiB, DPL 3.
                let base = seg.base & 0xffff0;
                w(v.w16(f.sel, (base >> 4) as u16))?;
                w(v.wn(f.base, base))?;
                w(v.w32(f.limit, 0xffff))?;
                w(v.w32(f.ar, 0xf3))?;
            } else if let (true, Some(rm), state::TR) = (vm86, rmode, i) {
                w(v.w16(f.sel, 0))?;
                w(v.wn(f.base, rm.tss))?;
                w(v.w32(f.limit, (crate::x86::backend::RMODE_TSS_SIZE - 1) as u32))?;
                w(v.w32(f.ar, 0x8b))?;
            } else {
                w(v.w16(f.sel, seg.selector))?;
                w(v.wn(f.base, seg.base))?;
                w(v.w32(f.limit, seg.limit))?;
                w(v.w32(f.ar, seg_to_ar(seg)))?;
            }
        }
        w(v.wn(vmcs::GUEST_GDTR_BASE, s.gdt.base))?;
        w(v.w32(vmcs::GUEST_GDTR_LIMIT, u32::from(s.gdt.limit)))?;
        w(v.wn(vmcs::GUEST_IDTR_BASE, s.idt.base))?;
        w(v.w32(vmcs::GUEST_IDTR_LIMIT, u32::from(s.idt.limit)))?;
        w(v.wn(vmcs::GUEST_CR0, Self::hw_cr0(vmx, s.cr0)))?;
        w(v.wn(vmcs::CR0_READ_SHADOW, s.cr0))?;
        let mut cr4 = Self::hw_cr4(vmx, s.cr4);
        let mut cr3 = s.cr3;
        if let (Some(rm), false) = (rmode, s.paging()) {
            // Paging off without unrestricted guest: 4 MiB identity pages.
            cr3 = rm.idmap;
            cr4 = cr4 & !state::cr4::PAE | state::cr4::PSE;
        }
        if vm86 {
            cr4 |= state::cr4::VME;
        }
        w(v.wn(vmcs::GUEST_CR4, cr4))?;
        w(v.wn(vmcs::CR4_READ_SHADOW, s.cr4))?;
        w(v.wn(vmcs::GUEST_CR3, cr3))?;
        w(v.wn(vmcs::GUEST_DR7, s.dr7))?;
        w(v.w64(vmcs::GUEST_IA32_EFER, s.efer))?;
        w(v.w64(vmcs::GUEST_IA32_PAT, s.msrs.pat))?;
        w(v.w64(vmcs::GUEST_IA32_DEBUGCTL, s.msrs.debugctl))?;
        w(v.w32(vmcs::GUEST_SYSENTER_CS, s.msrs.sysenter_cs as u32))?;
        w(v.wn(vmcs::GUEST_SYSENTER_ESP, s.msrs.sysenter_esp))?;
        w(v.wn(vmcs::GUEST_SYSENTER_EIP, s.msrs.sysenter_eip))?;
        if s.pae_paging() {
            for (f, p) in [
                vmcs::GUEST_PDPTR0,
                vmcs::GUEST_PDPTR1,
                vmcs::GUEST_PDPTR2,
                vmcs::GUEST_PDPTR3,
            ]
            .into_iter()
            .zip(s.pdptrs)
            {
                w(v.w64(f, p))?;
            }
        }
        let mut ent = vmx.config.entry & !entry::IA32E_MODE;
        if s.long_mode() {
            ent |= entry::IA32E_MODE;
        }
        w(v.w32(vmcs::VM_ENTRY_CONTROLS, ent))?;
        let mut intr = u32::from(s.events.shadow & 3);
        if s.events.nmi_masked {
            intr |= BLOCK_NMI;
        }
        w(v.w32(vmcs::GUEST_INTERRUPTIBILITY_INFO, intr))?;
        w(v.w32(vmcs::GUEST_ACTIVITY_STATE, 0))?;
        w(v.wn(vmcs::GUEST_PENDING_DBG_EXCEPTIONS, 0))?;
        Ok(())
    }

    /// Reads back the part of the guest state that stays current even when the rest is
    /// left in the VMCS ([`VcpuState::lazy`]): RIP, RSP, RFLAGS, CS but its limit, the
    /// interruptibility state, DR7.
    pub(super) fn save_current(
        &mut self,
        v: &Loaded<'_>,
        s: &mut VcpuState,
        rmode: Option<crate::x86::backend::RmodeAddrs>,
    ) {
        let vm86 = vm86_mode(rmode, s);
        if vm86 {
            Self::save_seg(v, s, state::CS, true);
        } else if let (Some(f), Some(cs)) = (vmcs::SEGS.get(state::CS), s.segs.get_mut(state::CS)) {
            // The selector, base and attributes (CPL, operand size, long mode; the linear
            // RIP a pending IN or OUT is checked against); the limit belongs to the system
            // part (`save_system`).
            cs.selector = v.r16(f.sel);
            cs.base = v.rn(f.base);
            ar_to_seg(v.r32(f.ar), cs);
        }
        // Every window writes DR7 from `s` (or userspace's breakpoints in its place).
        s.dr7 = v.rn(vmcs::GUEST_DR7);
        self.known.dr7 = Some(s.dr7);
        let intr = v.r32(vmcs::GUEST_INTERRUPTIBILITY_INFO);
        s.events.shadow = (intr & (BLOCK_STI | BLOCK_MOV_SS)) as u8;
        s.events.nmi_masked = intr & BLOCK_NMI != 0;
        s.regs.rip = v.rn(vmcs::GUEST_RIP);
        s.regs.rsp = v.rn(vmcs::GUEST_RSP);
        let rflags = v.rn(vmcs::GUEST_RFLAGS);
        self.known.rip = Some(s.regs.rip);
        self.known.rsp = Some(s.regs.rsp);
        self.known.rflags = Some(rflags);
        s.regs.rflags = if vm86 {
            // VM and IOPL are rkvm's; the guest's IOPL did not change in real mode.
            rflags & !(RFLAGS_VM | RFLAGS_IOPL) | s.regs.rflags & RFLAGS_IOPL
        } else {
            rflags
        };
    }

    /// Reads back the rest of what the guest can change without an exit rkvm sees in
    /// process context (the fields [`VcpuState::lazy`] names). What only rkvm writes
    /// stays as loaded: the CR0 and CR4 read shadows (every bit but CR0.TS is rkvm's, so
    /// the guest's writes exit), EFER, PAT and DEBUGCTL (their WRMSRs always exit).
    pub(super) fn save_system(
        &self,
        v: &Loaded<'_>,
        s: &mut VcpuState,
        rmode: Option<crate::x86::backend::RmodeAddrs>,
    ) {
        let vm86 = vm86_mode(rmode, s);
        for i in [
            state::ES,
            state::SS,
            state::DS,
            state::FS,
            state::GS,
            state::LDTR,
            state::TR,
        ] {
            Self::save_seg(v, s, i, vm86);
        }
        if !vm86 {
            if let (Some(f), Some(cs)) = (vmcs::SEGS.get(state::CS), s.segs.get_mut(state::CS)) {
                cs.limit = v.r32(f.limit);
            }
        }
        s.gdt.base = v.rn(vmcs::GUEST_GDTR_BASE);
        s.gdt.limit = v.r32(vmcs::GUEST_GDTR_LIMIT) as u16;
        s.idt.base = v.rn(vmcs::GUEST_IDTR_BASE);
        s.idt.limit = v.r32(vmcs::GUEST_IDTR_LIMIT) as u16;
        // CR0.TS is the guest's own; the rest is the read shadow, loaded from `s.cr0`.
        s.cr0 = s.cr0 & !cr0::TS | v.rn(vmcs::GUEST_CR0) & cr0::TS;
        if rmode.is_none() || s.paging() {
            s.cr3 = v.rn(vmcs::GUEST_CR3);
        }
        s.msrs.sysenter_cs = u64::from(v.r32(vmcs::GUEST_SYSENTER_CS));
        s.msrs.sysenter_esp = v.rn(vmcs::GUEST_SYSENTER_ESP);
        s.msrs.sysenter_eip = v.rn(vmcs::GUEST_SYSENTER_EIP);
        if s.pae_paging() {
            s.pdptrs = [
                v.r64(vmcs::GUEST_PDPTR0),
                v.r64(vmcs::GUEST_PDPTR1),
                v.r64(vmcs::GUEST_PDPTR2),
                v.r64(vmcs::GUEST_PDPTR3),
            ];
        }
        s.lazy = false;
    }

    /// Reads back segment register `i`.
    pub(super) fn save_seg(v: &Loaded<'_>, s: &mut VcpuState, i: usize, vm86: bool) {
        let (Some(f), Some(seg)) = (vmcs::SEGS.get(i), s.segs.get_mut(i)) else {
            return;
        };
        if vm86 {
            // Real mode changes only selectors and bases; TR and LDTR not at all.
            if i < 6 {
                seg.selector = v.r16(f.sel);
                seg.base = v.rn(f.base);
            }
            return;
        }
        seg.selector = v.r16(f.sel);
        seg.base = v.rn(f.base);
        seg.limit = v.r32(f.limit);
        ar_to_seg(v.r32(f.ar), seg);
    }

    pub(super) fn gprs_from(&mut self, s: &VcpuState) {
        let r = &s.regs;
        self.gprs.r = [
            r.rax, r.rcx, r.rdx, r.rbx, r.rsp, r.rbp, r.rsi, r.rdi, r.r8, r.r9, r.r10, r.r11,
            r.r12, r.r13, r.r14, r.r15, s.cr2,
        ];
    }

    pub(super) fn gprs_to(&self, s: &mut VcpuState) {
        let g = &self.gprs.r;
        let r = &mut s.regs;
        [r.rax, r.rcx, r.rdx, r.rbx] = [g[0], g[1], g[2], g[3]];
        [r.rbp, r.rsi, r.rdi] = [g[5], g[6], g[7]];
        [r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15] =
            [g[8], g[9], g[10], g[11], g[12], g[13], g[14], g[15]];
        s.cr2 = g[reg::CR2];
    }
}

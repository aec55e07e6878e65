// SPDX-License-Identifier: GPL-2.0

//! Guest state between `VcpuState` and the VMCB: loading it before a window, saving it
//! after, and the general registers the entry code swaps.

use super::*;
use crate::x86::state::{self, rflags, VcpuState};

/// RFLAGS.TF and RFLAGS.RF: single-stepping for KVM_GUESTDBG_SINGLESTEP.
const TF: u64 = 1 << 8;
const RF: u64 = 1 << 16;

impl SvmVcpu {
    /// The segment fields, in `VcpuState` order (ES, CS, SS, DS, FS, GS, LDTR, TR).
    fn seg_offsets(&self) -> [u16; 8] {
        let l = &self.svm.layout;
        [l.es, l.cs, l.ss, l.ds, l.fs, l.gs, l.ldtr, l.tr]
    }

    /// Writes the guest state: all of it when an ioctl changed it (`dirty`), the
    /// registers the generic code moves freely (RIP, RSP, RAX, RFLAGS, CR2) always.
    pub(super) fn load_guest(&mut self, ctx: &mut RunCtx<'_>) {
        let l = &self.svm.layout;
        let v = &self.vmcb;
        let s = &mut *ctx.state;
        if s.dirty {
            for (off, seg) in self.seg_offsets().into_iter().zip(s.segs.iter()) {
                v.set_seg(l, off, seg);
            }
            v.w64(l.gdtr + l.seg_base, s.gdt.base);
            v.w32(l.gdtr + l.seg_limit, u32::from(s.gdt.limit));
            v.w64(l.idtr + l.seg_base, s.idt.base);
            v.w32(l.idtr + l.seg_limit, u32::from(s.idt.limit));
            // The privilege level is SS.DPL in protected mode, 0 in real mode, 3 in
            // virtual-8086 mode (KVM's rule).
            let cpl = if !s.protected() {
                0
            } else if s.regs.rflags & rflags::VM != 0 {
                3
            } else {
                s.segs[state::SS].dpl & 3
            };
            v.w8(l.cpl, cpl);
            v.w64(l.cr0, s.cr0);
            v.w64(l.cr3, s.cr3);
            v.w64(l.cr4, s.cr4);
            v.w64(l.efer, s.efer | super::super::EFER_SVME);
            v.w64(l.dr6, s.dr6);
            v.w64(l.g_pat, s.msrs.pat);
            v.w64(l.star, s.msrs.star);
            v.w64(l.lstar, s.msrs.lstar);
            v.w64(l.cstar, s.msrs.cstar);
            v.w64(l.sfmask, s.msrs.sfmask);
            v.w64(l.kernel_gs_base, s.msrs.kernel_gs_base);
            v.w64(l.sysenter_cs, s.msrs.sysenter_cs);
            v.w64(l.sysenter_esp, s.msrs.sysenter_esp);
            v.w64(l.sysenter_eip, s.msrs.sysenter_eip);
            v.w32(l.int_state, u32::from(s.events.shadow != 0));
            s.dirty = false;
        }
        v.w64(l.rip, s.regs.rip);
        v.w64(l.rsp, s.regs.rsp);
        v.w64(l.rax, s.regs.rax);
        let mut rfl = s.regs.rflags | rflags::FIXED;
        if ctx.guest_debug & KVM_GUESTDBG_SINGLESTEP != 0 {
            rfl |= TF | RF;
        }
        v.w64(l.rflags, rfl);
        v.w64(l.cr2, s.cr2);
        // The guest's DR7 every time: a window run for userspace's hardware breakpoints
        // left the debugger's in the VMCB.
        v.w64(l.dr7, s.dr7);
        v.w64(l.tsc_offset, s.tsc_offset);
        v.w64(l.nested_cr3, ctx.tdp_root.0);
        // Exceptions that come to rkvm: machine checks; #DB and #AC always (and back to
        // the guest), since a guest whose IDT makes either recur during its own delivery
        // would keep the CPU in microcode with no way for the host's interrupts in
        // (CVE-2015-8104, CVE-2015-5307); #BP for userspace's debugging; #UD to fix up a
        // foreign hypercall instruction.
        let mut exc = 1u32 << MC_VECTOR | 1 << DB_VECTOR | 1 << AC_VECTOR;
        if ctx.guest_debug & KVM_GUESTDBG_ENABLE != 0 {
            if ctx.guest_debug & KVM_GUESTDBG_USE_SW_BP != 0 {
                exc |= 1 << BP_VECTOR;
            }
        }
        if ctx.quirks.has(crate::x86::quirks::FIX_HYPERCALL_INSN) {
            exc |= 1 << UD_VECTOR;
        }
        v.w32(l.intercepts + 8, exc);
    }

    /// Reads the guest state back after a window.
    pub(super) fn save_guest(&mut self, ctx: &mut RunCtx<'_>) {
        let l = &self.svm.layout;
        let v = &self.vmcb;
        let s = &mut *ctx.state;
        for (off, seg) in self.seg_offsets().into_iter().zip(s.segs.iter_mut()) {
            v.get_seg(l, off, seg);
        }
        // KVM's view: SS.DPL is the CPL, and TR is always busy.
        s.segs[state::SS].dpl = v.r8(l.cpl) & 3;
        s.segs[state::TR].type_ |= 2;
        s.gdt.base = v.r64(l.gdtr + l.seg_base);
        s.gdt.limit = v.r32(l.gdtr + l.seg_limit) as u16;
        s.idt.base = v.r64(l.idtr + l.seg_base);
        s.idt.limit = v.r32(l.idtr + l.seg_limit) as u16;
        s.cr0 = v.r64(l.cr0);
        s.cr3 = v.r64(l.cr3);
        s.cr4 = v.r64(l.cr4);
        s.cr2 = v.r64(l.cr2);
        s.efer = v.r64(l.efer) & !super::super::EFER_SVME;
        s.dr6 = v.r64(l.dr6);
        if ctx.debug_dr.is_none() {
            s.dr7 = v.r64(l.dr7);
        }
        s.msrs.pat = v.r64(l.g_pat);
        s.msrs.star = v.r64(l.star);
        s.msrs.lstar = v.r64(l.lstar);
        s.msrs.cstar = v.r64(l.cstar);
        s.msrs.sfmask = v.r64(l.sfmask);
        s.msrs.kernel_gs_base = v.r64(l.kernel_gs_base);
        s.msrs.sysenter_cs = v.r64(l.sysenter_cs);
        s.msrs.sysenter_esp = v.r64(l.sysenter_esp);
        s.msrs.sysenter_eip = v.r64(l.sysenter_eip);
        // SVM has one shadow bit; KVM reports it as both kinds of blocking.
        s.events.shadow = if v.r32(l.int_state) & 1 != 0 {
            state::shadow::STI | state::shadow::MOV_SS
        } else {
            0
        };
        s.regs.rip = v.r64(l.rip);
        s.regs.rsp = v.r64(l.rsp);
        s.regs.rax = v.r64(l.rax);
        let mut rfl = v.r64(l.rflags);
        if ctx.guest_debug & KVM_GUESTDBG_SINGLESTEP != 0 {
            rfl &= !(TF | RF);
        }
        s.regs.rflags = rfl;
    }

    pub(super) fn gprs_from(&mut self, s: &VcpuState) {
        let r = &s.regs;
        self.gprs.r = [
            r.rax, r.rcx, r.rdx, r.rbx, r.rsp, r.rbp, r.rsi, r.rdi, r.r8, r.r9, r.r10, r.r11,
            r.r12, r.r13, r.r14, r.r15,
        ];
    }

    pub(super) fn gprs_to(&self, s: &mut VcpuState) {
        let g = &self.gprs.r;
        let r = &mut s.regs;
        [r.rcx, r.rdx, r.rbx] = [g[1], g[2], g[3]];
        [r.rbp, r.rsi, r.rdi] = [g[5], g[6], g[7]];
        [r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15] =
            [g[8], g[9], g[10], g[11], g[12], g[13], g[14], g[15]];
    }
}

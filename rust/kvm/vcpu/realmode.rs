// SPDX-License-Identifier: GPL-2.0

//! Real mode without unrestricted guest (vm86): event delivery through the real-mode
//! IVT and the #GP exits of instructions vm86 cannot run.

use super::*;
use crate::x86::state::Next;

/// Delivers the highest-priority pending event through the real-mode IVT (virtual-8086
/// real mode cannot take injected events): push FLAGS, CS, IP; clear IF, TF, AC; jump
/// to the vector's handler.
pub(super) fn deliver_real_mode_event(vm: &Vm, vcpu: &Vcpu, s: &mut VcpuState) -> Result {
    let shadow = s.events.shadow != 0;
    let irq_ok = s.regs.rflags & state::rflags::IF != 0 && !shadow;
    let nmi_ok = !s.events.nmi_masked && !shadow;
    let vector = match s.events.take_next(irq_ok, nmi_ok, |_| true) {
        Some(Next::Exception(e)) => e.vector,
        Some(Next::SoftInterrupt { vector, len }) => {
            s.regs.rip = s.regs.rip.wrapping_add(u64::from(len));
            vector
        }
        Some(Next::Nmi) => {
            s.events.nmi_masked = true;
            vcpu.stats.inc(st::NMI_INJECTIONS);
            2
        }
        Some(Next::Interrupt(vector)) => {
            vcpu.stats.inc(st::IRQ_INJECTIONS);
            vector
        }
        None => return Ok(()),
    };
    let mem = VmMem::of(vm, vcpu);
    let mut ivt = [0u8; 4];
    mem.read(u64::from(vector) * 4, &mut ivt)?;
    let ip = u16::from_le_bytes([ivt[0], ivt[1]]);
    let cs = u16::from_le_bytes([ivt[2], ivt[3]]);
    let flags = s.regs.rflags as u16;
    let mut sp = s.regs.rsp as u16;
    let ss = s.segs[state::SS].base;
    for word in [flags, s.segs[state::CS].selector, s.regs.rip as u16] {
        sp = sp.wrapping_sub(2);
        mem.write(
            ss.wrapping_add(u64::from(sp)) & 0xf_ffff,
            &word.to_le_bytes(),
        )?;
    }
    s.regs.rsp = s.regs.rsp & !0xffff | u64::from(sp);
    s.regs.rflags &= !(state::rflags::IF | state::rflags::TF | (1 << 18));
    s.segs[state::CS].selector = cs;
    s.segs[state::CS].base = u64::from(cs) << 4;
    s.regs.rip = u64::from(ip);
    s.dirty = true;
    Ok(())
}

/// Computes a 16-bit ModRM memory operand's linear address (real mode).
pub(super) fn real_mode_ea(
    s: &VcpuState,
    modrm: &[u8],
    seg_override: Option<usize>,
) -> Option<(u64, usize)> {
    let m = *modrm.first()?;
    let (md, rm) = (m >> 6, m & 7);
    let r = |n: u8| emulate::gpr64(s, n) & 0xffff;
    let (bx, bp, si, di) = (r(3), r(5), r(6), r(7));
    let (mut ea, mut seg) = match rm {
        0 => (bx + si, state::DS),
        1 => (bx + di, state::DS),
        2 => (bp + si, state::SS),
        3 => (bp + di, state::SS),
        4 => (si, state::DS),
        5 => (di, state::DS),
        6 => (bp, state::SS),
        _ => (bx, state::DS),
    };
    let len = match (md, rm) {
        (0, 6) => {
            ea = u64::from(u16::from_le_bytes([*modrm.get(1)?, *modrm.get(2)?]));
            seg = state::DS;
            3
        }
        (0, _) => 1,
        (1, _) => {
            ea = ea.wrapping_add(*modrm.get(1)? as i8 as u64);
            2
        }
        (2, _) => {
            ea = ea.wrapping_add(u64::from(u16::from_le_bytes([
                *modrm.get(1)?,
                *modrm.get(2)?,
            ])));
            3
        }
        _ => return None,
    };
    let seg = seg_override.unwrap_or(seg);
    Some((s.segs.get(seg)?.base.wrapping_add(ea & 0xffff), len))
}

/// A #GP in virtual-8086 real mode: the privileged instructions real-mode code uses, run
/// on the software state (HLT, MOV to/from CR and DR, LMSW, CLTS, LGDT, LIDT, RDMSR,
/// WRMSR, INVD, WBINVD).
pub(super) fn real_mode_gp(vm: &Vm, vcpu: &Vcpu, g: &mut VcpuInner) -> Result<Option<isize>> {
    let code = &mut emu_ctxt(&mut g.emu, vm)?.insn;
    if let Err(e) = fetch(vm, &g.state, code) {
        return fault_or_error(vcpu, &mut g.state, e);
    }
    let code = *code;
    vcpu.stats.inc(st::INSN_EMULATION);
    let mut i = 0;
    let mut opsize32 = false;
    let mut seg = None;
    while let Some(&b) = code.get(i) {
        match b {
            0x66 => opsize32 = true,
            0x26 => seg = Some(state::ES),
            0x2e => seg = Some(state::CS),
            0x36 => seg = Some(state::SS),
            0x3e => seg = Some(state::DS),
            0x64 => seg = Some(state::FS),
            0x65 => seg = Some(state::GS),
            _ => break,
        }
        i += 1;
    }
    let op = code.get(i).copied().unwrap_or(0);
    let op2 = code.get(i + 1).copied().unwrap_or(0);
    let modrm = code.get(i + 2).copied().unwrap_or(0);
    let fail = |vcpu: &Vcpu| {
        vcpu.stats.inc(st::INSN_EMULATION_FAIL);
        internal_error(
            vcpu,
            KVM_INTERNAL_ERROR_EMULATION,
            &[u64::from_le_bytes([
                code[0], code[1], code[2], code[3], code[4], code[5], code[6], code[7],
            ])],
        )
    };
    let s = &mut g.state;
    match (op, op2) {
        (0xf4, _) => {
            s.skip_instruction((i + 1) as u8);
            s.dirty = true;
            vcpu.stats.inc(st::HALT_EXITS);
            vcpu.set_exit(KVM_EXIT_HLT);
            Ok(Some(0))
        }
        (0x0f, 0x06) => cr_access(vm, vcpu, g, 0, CrOp::Clts, (i + 2) as u8),
        (0x0f, 0x08) | (0x0f, 0x09) => {
            s.skip_instruction((i + 2) as u8);
            s.dirty = true;
            Ok(None)
        }
        (0x0f, 0x20) | (0x0f, 0x22) if modrm >> 6 == 3 => {
            let cr = (modrm >> 3) & 7;
            let gpr = modrm & 7;
            let op = if op2 == 0x20 {
                CrOp::Read { gpr }
            } else {
                CrOp::Write { gpr }
            };
            cr_access(vm, vcpu, g, cr, op, (i + 3) as u8)
        }
        (0x0f, 0x21) | (0x0f, 0x23) if modrm >> 6 == 3 => {
            let dr = (modrm >> 3) & 7;
            let gpr = modrm & 7;
            dr_access(s, dr, op2 == 0x23, gpr, (i + 3) as u8)
        }
        (0x0f, 0x30) => msr_access(vm, vcpu, g, true, (i + 2) as u8),
        (0x0f, 0x32) => msr_access(vm, vcpu, g, false, (i + 2) as u8),
        (0x0f, 0x01) => {
            let reg = (modrm >> 3) & 7;
            match reg {
                2 | 3 => {
                    let Some((ea, len)) = code.get(i + 2..).and_then(|m| real_mode_ea(s, m, seg))
                    else {
                        return Ok(fail(vcpu));
                    };
                    let mut b = [0u8; 6];
                    if let Err(e) = emulate::read_virt(s, &VmMem::of(vm, vcpu), ea, &mut b) {
                        return fault_or_error(vcpu, s, e);
                    }
                    let limit = u16::from_le_bytes([b[0], b[1]]);
                    let mut base = u64::from(u32::from_le_bytes([b[2], b[3], b[4], b[5]]));
                    if !opsize32 {
                        base &= 0xff_ffff;
                    }
                    let t = if reg == 2 { &mut s.gdt } else { &mut s.idt };
                    t.base = base;
                    t.limit = limit;
                    s.skip_instruction((i + 2 + len) as u8);
                    s.dirty = true;
                    Ok(None)
                }
                6 if modrm >> 6 == 3 => {
                    let value = emulate::gpr64(s, modrm & 7) as u16;
                    cr_access(vm, vcpu, g, 0, CrOp::Lmsw { value }, (i + 3) as u8)
                }
                _ => Ok(fail(vcpu)),
            }
        }
        _ => Ok(fail(vcpu)),
    }
}

// SPDX-License-Identifier: GPL-2.0

//! Intercepted instructions a backend hands back whole ([`Exit::Intercepted`]): the SVM
//! backend does so for everything the generic code defines, since without next-RIP
//! saving (QEMU's SVM) or decode assists it knows neither the length nor the operands.
//! The instruction at RIP is decoded when needed, checked to be the one intercepted (a
//! guest that rewrote it meanwhile simply runs again), and finished as the VMX backend
//! finishes it inside its window.

use super::*;
use crate::x86::exit::Intercept;
use crate::x86::insn::{self, Operand};

/// Finishes `what`; `len` is its length when the hardware gave it.
pub(super) fn intercepted(
    vm: &Vm,
    vcpu: &Vcpu,
    g: &mut VcpuInner,
    what: Intercept,
    len: Option<u8>,
) -> Result<Option<isize>> {
    let needs_operands = matches!(
        what,
        Intercept::CrRead(_) | Intercept::CrWrite(_) | Intercept::DrRead(_) | Intercept::DrWrite(_)
    );
    let (operand, len) = match len {
        Some(len) if !needs_operands => (Operand::None, len),
        _ => {
            let mut code = [0u8; 15];
            if let Err(e) = fetch(vm, &g.state, &mut code) {
                return fault_or_error(vcpu, &mut g.state, e);
            }
            vcpu.stats.inc(st::INSN_EMULATION);
            match insn::decode(g.state.cs_long(), &code) {
                Some((w, operand, len)) if w == what => (operand, len),
                // Not the instruction intercepted any more (the guest rewrote it): run
                // again.
                Some(_) => return Ok(None),
                // A form rkvm does not emulate (LMSW from memory, ...).
                None => return Ok(emulation_failure(vm, vcpu, &mut g.state, &code, [0; 5])),
            }
        }
    };
    let s = &mut g.state;
    let at = insn::At {
        cpl: s.cpl(),
        cr4: s.cr4,
        protected: s.protected(),
        long_cs: s.cs_long(),
    };
    let pv_features = g.enforce_pv_cpuid.then(|| {
        let rt = crate::x86::cpuid::Runtime::FEATURES;
        crate::x86::cpuid::guest_cpuid(&g.cpuid, crate::x86::cpuid::KVM_CPUID_FEATURES, 0, rt)[0]
    });
    let env = insn::Env {
        cpuid: &g.cpuid,
        quirks: vm.quirks(),
        pv_features,
    };
    let mut regs = s.regs;
    let done = match what {
        Intercept::Cpuid => insn::cpuid(&mut regs, s, &at, &env),
        Intercept::Hypercall => insn::hypercall(&mut regs, &at, &env),
        Intercept::Xsetbv => insn::xsetbv(&regs, s, &at, &env),
        Intercept::MonitorMwait => insn::monitor_mwait(s, &at, &env),
        Intercept::Wbinvd => insn::Done::Skip,
        Intercept::Hlt => {
            s.skip_instruction(len);
            return handle_exit(vm, vcpu, g, Exit::Hlt);
        }
        Intercept::Rdmsr | Intercept::Wrmsr => {
            return msr_access(vm, vcpu, g, what == Intercept::Wrmsr, len);
        }
        Intercept::CrRead(cr) | Intercept::CrWrite(cr) => {
            let op = match operand {
                Operand::Cr(op) => op,
                Operand::Lmsw { gpr } => CrOp::Lmsw {
                    value: emulate::gpr64(s, gpr) as u16,
                },
                _ => return Ok(None),
            };
            return handle_exit(
                vm,
                vcpu,
                g,
                Exit::CrAccess {
                    cr,
                    op,
                    insn_len: len,
                },
            );
        }
        Intercept::DrRead(dr) | Intercept::DrWrite(dr) => {
            let Operand::Dr { write, gpr } = operand else {
                return Ok(None);
            };
            return handle_exit(
                vm,
                vcpu,
                g,
                Exit::DrAccess {
                    dr,
                    write,
                    gpr,
                    insn_len: len,
                },
            );
        }
    };
    s.regs.rax = regs.rax;
    s.regs.rbx = regs.rbx;
    s.regs.rcx = regs.rcx;
    s.regs.rdx = regs.rdx;
    match done {
        insn::Done::Skip => s.skip_instruction(len),
        insn::Done::Fault(f) => inject(s, f),
        insn::Done::YieldTo(apic_id) => {
            s.skip_instruction(len);
            return handle_exit(vm, vcpu, g, Exit::YieldTo { apic_id });
        }
    }
    Ok(None)
}

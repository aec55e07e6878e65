// SPDX-License-Identifier: GPL-2.0

//! What the intercepted instructions that KVM defines itself do to the guest: CPUID,
//! XSETBV, the KVM hypercall (VMCALL/VMMCALL) and MONITOR/MWAIT. A backend that finishes
//! them where the registers are (VMX, inside its window) and the generic code that
//! finishes them in process context (SVM without next-RIP saving) share this code, so
//! the guest sees the same thing on both.

use super::backend::MsrAllow;
use super::cpuid::{self, Runtime};
use super::emulate::{gp, ud, Fault};
use super::exit::{CrOp, Intercept};
use super::msr_access::{self, MsrEnv};
use super::quirks::Quirks;
use super::state::VcpuState;
use crate::uapi::kvm_cpuid_entry2;

/// General registers in x86 encoding order (RAX = 0 ... R15 = 15).
pub(crate) trait Gprs {
    fn gpr(&self, n: usize) -> u64;
    fn set_gpr(&mut self, n: usize, v: u64);
}

const RAX: usize = 0;
const RCX: usize = 1;
const RDX: usize = 2;
const RBX: usize = 3;

/// The guest's mode at the instruction, as the caller knows it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct At {
    pub(crate) cpl: u8,
    /// The guest's own CR4 (not what the hardware runs with).
    pub(crate) cr4: u64,
    pub(crate) protected: bool,
    /// CS.L in long mode: 64-bit operands.
    pub(crate) long_cs: bool,
}

/// The VM's and vCPU's settings these instructions depend on.
#[derive(Clone, Copy)]
pub(crate) struct Env<'a> {
    pub(crate) cpuid: &'a [kvm_cpuid_entry2],
    pub(crate) quirks: Quirks,
    /// With KVM_CAP_ENFORCE_PV_FEATURE_CPUID: the guest's KVM_CPUID_FEATURES EAX.
    pub(crate) pv_features: Option<u32>,
}

/// The outcome: the instruction completed (skip it) or raised a fault.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Done {
    Skip,
    Fault(Fault),
    /// The yield hypercall completed (skip it); then the vCPU gives its time to the vCPU
    /// whose APIC ID this is, in process context (KVM's `kvm_sched_yield`).
    YieldTo(u64),
}

/// KVM's hypercall error: no such hypercall (`-KVM_ENOSYS`), not allowed (`-KVM_EPERM`).
const KVM_ENOSYS: u64 = 1000u64.wrapping_neg();
const KVM_EPERM: u64 = 1u64.wrapping_neg();

fn runtime(s: &VcpuState, at: &At, env: &Env<'_>) -> Runtime {
    Runtime {
        cr4: at.cr4,
        xcr0: s.xcr0,
        apic_base: s.apic_base,
        mwait: env.quirks.cpuid_mwait(s.msrs.misc_enable),
    }
}

/// CPUID, with CPUID faulting (MSR_MISC_FEATURES_ENABLES bit 0: #GP outside ring 0).
pub(crate) fn cpuid(r: &mut impl Gprs, s: &VcpuState, at: &At, env: &Env<'_>) -> Done {
    if s.msrs.misc_features & 1 != 0 && at.cpl != 0 {
        return Done::Fault(gp(0));
    }
    let leaf = r.gpr(RAX) as u32;
    let sub = r.gpr(RCX) as u32;
    let [a, b, c, d] = cpuid::guest_cpuid(env.cpuid, leaf, sub, runtime(s, at, env));
    r.set_gpr(RAX, u64::from(a));
    r.set_gpr(RBX, u64::from(b));
    r.set_gpr(RCX, u64::from(c));
    r.set_gpr(RDX, u64::from(d));
    Done::Skip
}

/// XSETBV: only XCR0, at CPL 0, with a value the guest's CPUID allows. On `Skip` the new
/// value is in `s.xcr0`; a caller running with the guest's XCR0 loaded loads it too.
pub(crate) fn xsetbv(r: &impl Gprs, s: &mut VcpuState, at: &At, env: &Env<'_>) -> Done {
    let idx = r.gpr(RCX) as u32;
    let val = (r.gpr(RDX) << 32) | (r.gpr(RAX) & 0xffff_ffff);
    let allowed = cpuid::guest_supported_xcr0(env.cpuid);
    if idx != 0 || at.cpl != 0 || !cpuid::xcr0_valid(val, allowed) {
        return Done::Fault(gp(0));
    }
    s.xcr0 = val;
    Done::Skip
}

/// The KVM hypercall. rkvm offers polling for an interrupt (it is delivered on entry
/// anyway) and the directed yield (`KVM_HC_SCHED_YIELD`, RBX the target's APIC ID: the
/// caller finishes it, see [`Done::YieldTo`]). Anything else answers `-KVM_ENOSYS`;
/// outside ring 0, `-KVM_EPERM`.
pub(crate) fn hypercall(r: &mut impl Gprs, at: &At, env: &Env<'_>) -> Done {
    const KVM_HC_VAPIC_POLL_IRQ: u64 = 1;
    const KVM_HC_SCHED_YIELD: u64 = 11;
    const KVM_FEATURE_PV_SCHED_YIELD: u32 = 1 << 13;
    let arg = |n| {
        if at.long_cs {
            r.gpr(n)
        } else {
            r.gpr(n) & 0xffff_ffff
        }
    };
    let nr = arg(RAX);
    let yield_ok = env
        .pv_features
        .is_none_or(|f| f & KVM_FEATURE_PV_SCHED_YIELD != 0);
    let (ret, done) = if at.protected && at.cpl != 0 {
        (KVM_EPERM, Done::Skip)
    } else if nr == KVM_HC_VAPIC_POLL_IRQ {
        (0, Done::Skip)
    } else if nr == KVM_HC_SCHED_YIELD && yield_ok {
        (0, Done::YieldTo(arg(RBX)))
    } else {
        (KVM_ENOSYS, Done::Skip)
    };
    r.set_gpr(RAX, ret);
    done
}

/// RDMSR or WRMSR (`write`) finished where the registers are, during the backend's run,
/// for the MSRs that allows: a read of any MSR whose value is in `s` throughout the run
/// (the caller leaves out those it keeps in its own state or in the hardware), a write
/// that changes nothing but its own field of `s` ([`msr_access::write_is_local`]).
/// `None`: the generic MSR code finishes it after the run (the MSR filter denies it,
/// the MSR is one it owns, or the access fails and KVM_CAP_X86_USER_SPACE_MSR may
/// turn the #GP into an exit). Either way the guest sees the same result.
pub(crate) fn msr(
    r: &mut impl Gprs,
    s: &mut VcpuState,
    env: &MsrEnv<'_>,
    filter: Option<&dyn MsrAllow>,
    write: bool,
) -> Option<Done> {
    let m = r.gpr(RCX) as u32;
    if filter.is_some_and(|f| !f.allowed(m, write)) {
        return None;
    }
    if write {
        if !msr_access::write_is_local(m) {
            return None;
        }
        let v = (r.gpr(RDX) << 32) | (r.gpr(RAX) & 0xffff_ffff);
        msr_access::set_msr(s, env, m, v).ok()?;
    } else {
        let v = msr_access::get_msr(s, env, m)?;
        r.set_gpr(RAX, v & 0xffff_ffff);
        r.set_gpr(RDX, v >> 32);
    }
    Some(Done::Skip)
}

/// MONITOR or MWAIT: a NOP as in KVM, unless the quirks say the guest may not use them.
pub(crate) fn monitor_mwait(s: &VcpuState, at: &At, env: &Env<'_>) -> Done {
    let rt = runtime(s, at, env);
    if env
        .quirks
        .monitor_mwait_faults(s.msrs.misc_enable, env.cpuid, rt)
    {
        Done::Fault(ud())
    } else {
        Done::Skip
    }
}

impl Gprs for crate::uapi::kvm_regs {
    fn gpr(&self, n: usize) -> u64 {
        match n {
            0 => self.rax,
            1 => self.rcx,
            2 => self.rdx,
            3 => self.rbx,
            4 => self.rsp,
            5 => self.rbp,
            6 => self.rsi,
            7 => self.rdi,
            8 => self.r8,
            9 => self.r9,
            10 => self.r10,
            11 => self.r11,
            12 => self.r12,
            13 => self.r13,
            14 => self.r14,
            _ => self.r15,
        }
    }

    fn set_gpr(&mut self, n: usize, v: u64) {
        let r = match n {
            0 => &mut self.rax,
            1 => &mut self.rcx,
            2 => &mut self.rdx,
            3 => &mut self.rbx,
            4 => &mut self.rsp,
            5 => &mut self.rbp,
            6 => &mut self.rsi,
            7 => &mut self.rdi,
            8 => &mut self.r8,
            9 => &mut self.r9,
            10 => &mut self.r10,
            11 => &mut self.r11,
            12 => &mut self.r12,
            13 => &mut self.r13,
            14 => &mut self.r14,
            _ => &mut self.r15,
        };
        *r = v;
    }
}

/// What a decoded intercepted instruction operates on.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Operand {
    None,
    /// MOV to or from CRn, CLTS.
    Cr(CrOp),
    /// LMSW from general register `gpr` (register form only).
    Lmsw {
        gpr: u8,
    },
    /// MOV to (`write`) or from a debug register with general register `gpr`.
    Dr {
        write: bool,
        gpr: u8,
    },
}

/// Decodes the instruction an intercept named, from its bytes at RIP: which instruction
/// it is, its operand, and its length. `None` for anything else (the guest changed the
/// code since, or used a form rkvm does not emulate, such as LMSW from memory).
pub(crate) fn decode(long_cs: bool, code: &[u8]) -> Option<(Intercept, Operand, u8)> {
    let mut i = 0usize;
    let mut rex = 0u8;
    let mut lock = false;
    // Legacy prefixes change nothing here but the length (LOCK excepted, below); a REX
    // prefix counts only right before the opcode (one followed by another prefix is
    // ignored, as by the CPU).
    while let Some(&b) = code.get(i) {
        match b {
            0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0x66 | 0x67 | 0xf2 | 0xf3 => rex = 0,
            0xf0 => {
                lock = true;
                rex = 0;
            }
            0x40..=0x4f if long_cs => rex = b,
            _ => break,
        }
        i += 1;
    }
    let len = |n: usize| u8::try_from(i + n).ok().filter(|&l| l <= 15);
    let op = *code.get(i)?;
    if op == 0xf4 {
        return Some((Intercept::Hlt, Operand::None, len(1)?));
    }
    if op != 0x0f {
        return None;
    }
    let op2 = *code.get(i + 1)?;
    let simple = |what| Some((what, Operand::None, len(2)?));
    match op2 {
        0xa2 => simple(Intercept::Cpuid),
        0x30 => simple(Intercept::Wrmsr),
        0x32 => simple(Intercept::Rdmsr),
        0x08 | 0x09 => simple(Intercept::Wbinvd),
        0x06 => Some((Intercept::CrWrite(0), Operand::Cr(CrOp::Clts), len(2)?)),
        0x20..=0x23 => {
            // MOV to/from CR/DR: always register operands, whatever the mod bits.
            let modrm = *code.get(i + 2)?;
            let mut n = (modrm >> 3) & 7 | (rex & 4) << 1;
            // AMD's alternative encoding of CR8: LOCK MOV CR0.
            if lock && op2 & 1 == 0 {
                n |= 8;
            }
            let gpr = modrm & 7 | (rex & 1) << 3;
            let (what, operand) = match op2 {
                0x20 => (Intercept::CrRead(n), Operand::Cr(CrOp::Read { gpr })),
                0x22 => (Intercept::CrWrite(n), Operand::Cr(CrOp::Write { gpr })),
                0x21 => (Intercept::DrRead(n), Operand::Dr { write: false, gpr }),
                _ => (Intercept::DrWrite(n), Operand::Dr { write: true, gpr }),
            };
            Some((what, operand, len(3)?))
        }
        0x01 => {
            let modrm = *code.get(i + 2)?;
            match modrm {
                0xc1 | 0xd9 => Some((Intercept::Hypercall, Operand::None, len(3)?)),
                0xd1 => Some((Intercept::Xsetbv, Operand::None, len(3)?)),
                0xc8 | 0xc9 | 0xfa | 0xfb => {
                    Some((Intercept::MonitorMwait, Operand::None, len(3)?))
                }
                // LMSW, register form.
                m if m >> 6 == 3 && (m >> 3) & 7 == 6 => {
                    let gpr = m & 7 | (rex & 1) << 3;
                    Some((Intercept::CrWrite(0), Operand::Lmsw { gpr }, len(3)?))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

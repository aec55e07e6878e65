// SPDX-License-Identifier: GPL-2.0

//! VM entry and exit: the only place guest general-purpose registers meet the CPU.
//!
//! `rkvm_vmx_vmenter(gprs, flags)` saves the host's callee-saved registers, records
//! the stack pointer in HOST_RSP, loads the guest GPRs and CR2, optionally clears the
//! CPU buffers (VERW), and executes VMLAUNCH (or VMRESUME once launched). A VM exit lands
//! at `rkvm_vmx_vmexit` (HOST_RIP) with the host stack restored, stores the guest GPRs
//! and CR2 back, zeroes every GPR, optionally refills the return stack buffer, and
//! returns 0. A failed entry returns 1 (VMfailInvalid) or 2 (VMfailValid) through the
//! same clearing tail. See `spec.rs` for when each option is on.

use core::arch::global_asm;

/// Guest GPRs in x86 encoding order (RSP, index 4, lives in the VMCS), then CR2.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct Gprs {
    pub(crate) r: [u64; 17],
}

impl crate::x86::insn::Gprs for Gprs {
    fn gpr(&self, n: usize) -> u64 {
        self.r.get(n).copied().unwrap_or(0)
    }

    fn set_gpr(&mut self, n: usize, v: u64) {
        // The area also holds CR2 (index 16), which is not a general register.
        if n < 16 {
            if let Some(r) = self.r.get_mut(n) {
                *r = v;
            }
        }
    }
}

/// Bits of the `flags` argument of `rkvm_vmx_vmenter`.
pub(crate) mod flags {
    /// VMRESUME instead of VMLAUNCH.
    pub(crate) const RESUME: u64 = 1 << 0;
    /// VERW right before the entry.
    pub(crate) const VERW: u64 = 1 << 1;
    /// Fill the whole return stack buffer after the exit.
    pub(crate) const RSB_FILL: u64 = 1 << 2;
    /// Retire one CALL after the exit (when `RSB_FILL` is not set).
    pub(crate) const RSB_ONE: u64 = 1 << 3;
}

/// Register numbers.
pub(crate) mod reg {
    pub(crate) const RAX: usize = 0;
    pub(crate) const RCX: usize = 1;
    pub(crate) const RDX: usize = 2;
    pub(crate) const CR2: usize = 16;
}

global_asm!(
    ".pushsection .text",
    ".global rkvm_vmx_vmenter",
    ".type rkvm_vmx_vmenter, @function",
    "rkvm_vmx_vmenter:",
    "push rbp",
    "mov rbp, rsp",
    "push rbx",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    // The entry flags stay on the stack at [HOST_RSP + 8], the GPR area pointer at
    // [HOST_RSP]: both are read again after the exit.
    "push rsi",
    "push rdi",
    "mov rax, 0x6c14",
    "vmwrite rax, rsp",
    "jbe 5f",
    // Guest CR2 first (a MOV to CR2 leaves the arithmetic flags undefined).
    "mov rax, [rdi + 16*8]",
    "mov cr2, rax",
    // ZF := no VERW wanted, then CF := VMRESUME (BT leaves ZF alone). The MOVs below keep
    // both flags, and VERW only writes ZF.
    "test esi, 2",
    "bt esi, 0",
    // The GPRs (RDI last: it holds the area pointer).
    "mov rax, [rdi + 0*8]",
    "mov rcx, [rdi + 1*8]",
    "mov rdx, [rdi + 2*8]",
    "mov rbx, [rdi + 3*8]",
    "mov rbp, [rdi + 5*8]",
    "mov r8,  [rdi + 8*8]",
    "mov r9,  [rdi + 9*8]",
    "mov r10, [rdi + 10*8]",
    "mov r11, [rdi + 11*8]",
    "mov r12, [rdi + 12*8]",
    "mov r13, [rdi + 13*8]",
    "mov r14, [rdi + 14*8]",
    "mov r15, [rdi + 15*8]",
    "mov rsi, [rdi + 6*8]",
    "mov rdi, [rdi + 7*8]",
    // Overwrite the CPU's internal buffers as the very last memory access before the
    // guest runs (memory-operand VERW on a CPU with MD_CLEAR).
    "jz 3f",
    "verw word ptr [rip + rkvm_verw_sel]",
    "3:",
    "jc 2f",
    "vmlaunch",
    "jmp 4f",
    "2:",
    "vmresume",
    // VMLAUNCH/VMRESUME fell through: the entry failed (CF: VMfailInvalid, ZF:
    // VMfailValid). Guest values are still in the registers: they are cleared below.
    "4:",
    "mov ebx, 1",
    "jc 7f",
    "mov ebx, 2",
    "jmp 7f",
    "5:",
    "mov ebx, 1",
    "jmp 7f",
    ".global rkvm_vmx_vmexit",
    "rkvm_vmx_vmexit:",
    "push rdi",
    "mov rdi, [rsp + 8]",
    "mov [rdi + 0*8], rax",
    "mov [rdi + 1*8], rcx",
    "mov [rdi + 2*8], rdx",
    "mov [rdi + 3*8], rbx",
    "mov [rdi + 5*8], rbp",
    "mov [rdi + 6*8], rsi",
    "pop rax",
    "mov [rdi + 7*8], rax",
    "mov [rdi + 8*8], r8",
    "mov [rdi + 9*8], r9",
    "mov [rdi + 10*8], r10",
    "mov [rdi + 11*8], r11",
    "mov [rdi + 12*8], r12",
    "mov [rdi + 13*8], r13",
    "mov [rdi + 14*8], r14",
    "mov [rdi + 15*8], r15",
    "mov rax, cr2",
    "mov [rdi + 16*8], rax",
    "xor ebx, ebx",
    // Common tail, result in EBX. No register may keep a guest value into the host code
    // that follows, not even speculatively: zero all of them (the callee-saved ones are
    // reloaded from the stack below, but a slow reload could run ahead with the guest's).
    "7:",
    "xor eax, eax",
    "xor ecx, ecx",
    "xor edx, edx",
    "xor ebp, ebp",
    "xor esi, esi",
    "xor edi, edi",
    "xor r8d, r8d",
    "xor r9d, r9d",
    "xor r10d, r10d",
    "xor r11d, r11d",
    "xor r12d, r12d",
    "xor r13d, r13d",
    "xor r14d, r14d",
    "xor r15d, r15d",
    // Before the first RET the guest may have steered: overwrite the return stack buffer
    // with 32 harmless entries (each pointing at an INT3 trap), or, where the host only
    // needs one retired CALL before a RET (eIBRS with PBRSB), just one.
    "test byte ptr [rsp + 8], 4",
    "jz 8f",
    crate::sys::rsb::rsb_fill_asm!(),
    "jmp 9f",
    "8:",
    "test byte ptr [rsp + 8], 8",
    "jz 9f",
    "913:",
    ".pushsection .discard.annotate_insn, \"M\", @progbits, 8",
    ".long 913b - ., 7",
    ".popsection",
    "call 23f",
    "int3",
    "23:",
    "add rsp, 8",
    "lfence",
    "9:",
    "mov eax, ebx",
    "add rsp, 16",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop rbp",
    "ret",
    ".size rkvm_vmx_vmenter, . - rkvm_vmx_vmenter",
    ".popsection",
    // objtool cannot follow a VM exit into `rkvm_vmx_vmexit`: exempt the routine from its
    // stack validation, as the kernel's STACK_FRAME_NON_STANDARD does.
    ".pushsection .discard.func_stack_frame_non_standard, \"aw\"",
    ".quad rkvm_vmx_vmenter",
    ".popsection",
);

unsafe extern "C" {
    fn rkvm_vmx_vmenter(gprs: *mut Gprs, flags: u64) -> u64;
    static rkvm_vmx_vmexit: u8;
}

/// The host RIP of every VM exit.
pub(crate) fn vmexit_rip() -> u64 {
    // Only the address of the label is taken.
    (&raw const rkvm_vmx_vmexit) as u64
}

/// How an entry ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    /// The guest ran and exited; read the exit reason.
    Exited,
    /// VMfailInvalid / VMfailValid.
    FailInvalid,
    FailValid,
}

/// Enters the guest.
///
/// # Safety
///
/// The caller holds a VMX window with this vCPU's VMCS current, every host-state field
/// written for this CPU (HOST_RIP = [`vmexit_rip`]), and a valid guest state; `gprs` is
/// the vCPU's register area. `mitigations` holds only [`flags::VERW`],
/// [`flags::RSB_FILL`] and [`flags::RSB_ONE`].
pub(crate) unsafe fn vmenter(gprs: &mut Gprs, launched: bool, mitigations: u64) -> Entry {
    let f = mitigations & !flags::RESUME | if launched { flags::RESUME } else { 0 };
    // SAFETY: The caller guarantees the VMX preconditions; the routine preserves every
    // callee-saved register and the stack.
    match unsafe { rkvm_vmx_vmenter(gprs, f) } {
        0 => Entry::Exited,
        1 => Entry::FailInvalid,
        _ => Entry::FailValid,
    }
}

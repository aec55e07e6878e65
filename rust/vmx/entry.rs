// SPDX-License-Identifier: GPL-2.0

//! VM entry and exit: the only place guest general-purpose registers meet the CPU.
//!
//! `rkvm_vmx_vmenter(gprs, launched)` saves the host's callee-saved registers, records
//! the stack pointer in HOST_RSP, loads the guest GPRs and CR2, and executes VMLAUNCH (or
//! VMRESUME once launched). A VM exit lands at `rkvm_vmx_vmexit` (HOST_RIP) with the
//! host stack restored, stores the guest GPRs and CR2 back and returns 0. A failed entry
//! returns 1 (VMfailInvalid) or 2 (VMfailValid).

use core::arch::global_asm;

/// Guest GPRs in x86 encoding order (RSP, index 4, lives in the VMCS), then CR2.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct Gprs {
    pub(crate) r: [u64; 17],
}

/// Register numbers.
#[allow(dead_code)]
pub(crate) mod reg {
    pub(crate) const RAX: usize = 0;
    pub(crate) const RCX: usize = 1;
    pub(crate) const RDX: usize = 2;
    pub(crate) const RBX: usize = 3;
    pub(crate) const RSP: usize = 4;
    pub(crate) const RBP: usize = 5;
    pub(crate) const RSI: usize = 6;
    pub(crate) const RDI: usize = 7;
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
    // The GPR area pointer stays on the stack, at [HOST_RSP].
    "push rdi",
    "mov rax, 0x6c14",
    "vmwrite rax, rsp",
    "jbe 5f",
    // Guest CR2, then the GPRs (RDI last: it holds the area pointer).
    "mov rax, [rdi + 16*8]",
    "mov cr2, rax",
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
    "test rsi, rsi",
    "mov rsi, [rdi + 6*8]",
    "mov rdi, [rdi + 7*8]",
    "jnz 2f",
    "vmlaunch",
    "jmp 4f",
    "2:",
    "vmresume",
    // VMLAUNCH/VMRESUME fell through: the entry failed.
    "4:",
    "mov eax, 1",
    "jc 6f",
    "mov eax, 2",
    "jmp 6f",
    "5:",
    "mov eax, 1",
    "jmp 6f",
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
    "xor eax, eax",
    "6:",
    "add rsp, 8",
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
    fn rkvm_vmx_vmenter(gprs: *mut Gprs, launched: u64) -> u64;
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
/// the vCPU's register area.
pub(crate) unsafe fn vmenter(gprs: &mut Gprs, launched: bool) -> Entry {
    // SAFETY: The caller guarantees the VMX preconditions; the routine preserves every
    // callee-saved register and the stack.
    match unsafe { rkvm_vmx_vmenter(gprs, u64::from(launched)) } {
        0 => Entry::Exited,
        1 => Entry::FailInvalid,
        _ => Entry::FailValid,
    }
}

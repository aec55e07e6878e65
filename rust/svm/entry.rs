// SPDX-License-Identifier: GPL-2.0

//! VMRUN and #VMEXIT: the only place guest general-purpose registers meet the CPU.
//!
//! `rkvm_svm_vmrun(gprs, vmcb, host_save, flags)` saves the host's callee-saved
//! registers, loads the guest's FS/GS/TR/LDTR and syscall MSRs from the VMCB (VMLOAD)
//! and the guest GPRs other than RAX and RSP (those are in the VMCB), optionally clears
//! the CPU buffers (VERW), runs the guest (VMRUN), stores them back (VMSAVE), and reloads the host's from `host_save` (VMLOAD)
//! before anything can use the GS base. The guest GPRs go back to `gprs`, every GPR is
//! zeroed, and the return stack buffer is refilled when the host wants it. Until that
//! second VMLOAD the CPU runs with the guest's GS base: nothing in between touches
//! per-CPU data, and GIF is clear (no interrupt, NMI or SMI can come in).

use core::arch::global_asm;

/// Guest GPRs in x86 encoding order; RAX and RSP (indices 0 and 4) live in the VMCB.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct Gprs {
    pub(crate) r: [u64; 16],
}

/// Bits of the `flags` argument of `rkvm_svm_vmrun`.
pub(crate) mod flags {
    /// VERW right before VMRUN (the host clears CPU buffers for guests).
    pub(crate) const VERW: u64 = 1 << 1;
    /// Fill the whole return stack buffer after the exit.
    pub(crate) const RSB_FILL: u64 = 1 << 2;
}

global_asm!(
    ".pushsection .text",
    ".global rkvm_svm_vmrun",
    ".type rkvm_svm_vmrun, @function",
    "rkvm_svm_vmrun:",
    "push rbp",
    "mov rbp, rsp",
    "push rbx",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    // [rsp] = GPR area, [rsp + 8] = host save area, [rsp + 16] = flags, all read again
    // after the exit (#VMEXIT restores RSP from the host save area).
    "push rcx",
    "push rdx",
    "push rdi",
    // RAX holds the VMCB address through VMLOAD/VMRUN/VMSAVE (#VMEXIT restores it).
    "mov rax, rsi",
    "vmload rax",
    "mov rcx, [rdi + 1*8]",
    "mov rdx, [rdi + 2*8]",
    "mov rbx, [rdi + 3*8]",
    "mov rbp, [rdi + 5*8]",
    "mov rsi, [rdi + 6*8]",
    "mov r8,  [rdi + 8*8]",
    "mov r9,  [rdi + 9*8]",
    "mov r10, [rdi + 10*8]",
    "mov r11, [rdi + 11*8]",
    "mov r12, [rdi + 12*8]",
    "mov r13, [rdi + 13*8]",
    "mov r14, [rdi + 14*8]",
    "mov r15, [rdi + 15*8]",
    "mov rdi, [rdi + 7*8]",
    // Overwrite the CPU's internal buffers as the last memory access before the guest
    // runs (the flags are still on the stack; the arithmetic flags are the host's).
    "test byte ptr [rsp + 16], 2",
    "jz 3f",
    "verw word ptr [rip + rkvm_verw_sel]",
    "3:",
    "vmrun rax",
    "vmsave rax",
    // Guest GPRs back (RAX now holds the VMCB address again, not a guest value).
    "mov rax, [rsp]",
    "mov [rax + 1*8], rcx",
    "mov [rax + 2*8], rdx",
    "mov [rax + 3*8], rbx",
    "mov [rax + 5*8], rbp",
    "mov [rax + 6*8], rsi",
    "mov [rax + 7*8], rdi",
    "mov [rax + 8*8], r8",
    "mov [rax + 9*8], r9",
    "mov [rax + 10*8], r10",
    "mov [rax + 11*8], r11",
    "mov [rax + 12*8], r12",
    "mov [rax + 13*8], r13",
    "mov [rax + 14*8], r14",
    "mov [rax + 15*8], r15",
    // The host's FS/GS/TR/LDTR and syscall MSRs, before any per-CPU access.
    "mov rax, [rsp + 8]",
    "vmload rax",
    // No guest value may reach the host code that follows, not even speculatively.
    "xor eax, eax",
    "xor ebx, ebx",
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
    // Before the first RET the guest may have steered: overwrite the return stack
    // buffer with 32 harmless entries (each pointing at an INT3 trap).
    "test byte ptr [rsp + 16], 4",
    "jz 9f",
    crate::sys::rsb::rsb_fill_asm!(),
    "9:",
    "add rsp, 24",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop rbp",
    "ret",
    ".size rkvm_svm_vmrun, . - rkvm_svm_vmrun",
    ".popsection",
    // objtool cannot follow the stack through the return-stack refill: exempt the
    // routine from its stack validation, as the kernel's STACK_FRAME_NON_STANDARD does.
    ".pushsection .discard.func_stack_frame_non_standard, \"aw\"",
    ".quad rkvm_svm_vmrun",
    ".popsection",
);

unsafe extern "C" {
    fn rkvm_svm_vmrun(gprs: *mut Gprs, vmcb: u64, host_save: u64, flags: u64);
}

/// Runs the guest until its next #VMEXIT.
///
/// # Safety
///
/// EFER.SVME is set, VM_HSAVE_PA holds this CPU's host save page, GIF is clear,
/// `host_save` holds this CPU's state from VMSAVE, `vmcb` is this vCPU's VMCB with a
/// consistent guest state, and `flags` holds only [`flags::RSB_FILL`] and
/// [`flags::VERW`]. RFLAGS.IF should be set (it decides whether physical interrupts end
/// the guest's run).
pub(crate) unsafe fn vmrun(gprs: &mut Gprs, vmcb: u64, host_save: u64, flags: u64) {
    // SAFETY: The caller guarantees the SVM preconditions; the routine preserves every
    // callee-saved register and the stack.
    unsafe { rkvm_svm_vmrun(gprs, vmcb, host_save, flags) }
}

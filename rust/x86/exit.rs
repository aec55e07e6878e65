// SPDX-License-Identifier: GPL-2.0

//! Why a backend's run window ended: the backend-neutral VM exit that the generic x86
//! code finishes (in process context, on the software `VcpuState`), or hands to
//! userspace.

/// A VM exit the backend did not complete inside its window.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Exit {
    /// Nothing for userspace: the host had an interrupt to take, wants the CPU back, or
    /// a request (kick) arrived. Run again.
    Again,
    /// Port I/O (RIP already past the instruction for non-string forms).
    Io {
        port: u16,
        size: u8,
        input: bool,
        string: bool,
        rep: bool,
        /// For OUT: the value from RAX.
        value: u32,
        /// Instruction length (string forms are emulated from the instruction).
        insn_len: u8,
    },
    /// An access to a guest-physical address with no writable memory behind it.
    EptViolation {
        gpa: u64,
        write: bool,
        fetch: bool,
        /// The event whose delivery faulted (IDT-vectoring information, bit 31 = valid),
        /// with the backend's exit reason and qualification for an internal-error report.
        vectoring: u32,
        reason: u32,
        qual: u64,
    },
    /// HLT (RIP past it).
    Hlt,
    /// Triple fault.
    Shutdown,
    /// VM entry failed: the hardware's reason.
    FailEntry {
        reason: u64,
    },
    /// MOV to/from a control register, CLTS, LMSW (exit qualification).
    CrAccess {
        qual: u64,
        insn_len: u8,
    },
    /// MOV to/from a debug register (exit qualification).
    DrAccess {
        qual: u64,
        insn_len: u8,
    },
    /// RDMSR / WRMSR (ECX, EDX:EAX in the GPRs).
    Rdmsr {
        insn_len: u8,
    },
    Wrmsr {
        insn_len: u8,
    },
    /// The interrupt window userspace asked for is open.
    IrqWindowOpen,
    /// Debug event for userspace (KVM_SET_GUEST_DEBUG): exception vector, DR6, DR7.
    Debug {
        exception: u32,
        dr6: u64,
        dr7: u64,
    },
    /// An exception in virtual-8086 real mode (no unrestricted guest): a privileged
    /// instruction to emulate (#GP) or an interrupt to deliver through the IVT.
    RealModeException {
        vector: u8,
        error_code: Option<u32>,
        insn_len: u8,
    },
    /// The guest raised #UD (intercepted only to fix up foreign hypercall instructions).
    InvalidOpcode,
    /// Something rkvm cannot do (exit reason, qualification).
    Unhandled {
        reason: u32,
        qual: u64,
    },
}

impl Exit {
    /// An exit for an instruction that rkvm completes in the kernel when it can (so a
    /// single-step ends after it without the CPU having executed it).
    pub(crate) fn is_instruction(&self) -> bool {
        matches!(
            self,
            Exit::Io { .. }
                | Exit::EptViolation { .. }
                | Exit::CrAccess { .. }
                | Exit::DrAccess { .. }
                | Exit::Rdmsr { .. }
                | Exit::Wrmsr { .. }
        )
    }
}

// SPDX-License-Identifier: GPL-2.0

//! Why a backend's run window ended: the backend-neutral VM exit that the generic x86
//! code finishes (in process context, on the software `VcpuState`), or hands to
//! userspace.

/// What a control-register exit did.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CrOp {
    /// MOV CRn, reg.
    Write { gpr: u8 },
    /// MOV reg, CRn.
    Read { gpr: u8 },
    /// CLTS (CR0).
    Clts,
    /// LMSW with its 16-bit source (CR0).
    Lmsw { value: u16 },
}

/// An intercepted instruction the generic code finishes (see [`Exit::Intercepted`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Intercept {
    Cpuid,
    Hlt,
    Rdmsr,
    Wrmsr,
    /// VMCALL or VMMCALL.
    Hypercall,
    Xsetbv,
    /// MONITOR, MWAIT (and their X forms).
    MonitorMwait,
    /// WBINVD or INVD.
    Wbinvd,
    /// A read or write of control register n (MOV, CLTS, LMSW) or debug register n.
    CrRead(u8),
    CrWrite(u8),
    DrRead(u8),
    DrWrite(u8),
}

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
    /// A guest-physical access the two-dimensional page table did not allow (EPT
    /// violation, nested page fault): no memory there, or no writable memory.
    TdpFault {
        gpa: u64,
        write: bool,
        fetch: bool,
        /// The event whose delivery faulted, in the format VMX's IDT-vectoring field
        /// and SVM's EXITINTINFO share (vector 7:0, type 10:8, error code valid 11,
        /// valid 31), or 0.
        vectoring: u32,
        /// The hardware's exit reason and qualification, only for internal-error
        /// reports (KVM reports its vendor's numbers too).
        hw_reason: u32,
        hw_qual: u64,
    },
    /// HLT (RIP past it).
    Hlt,
    /// The guest spins in kernel mode waiting for something (a PAUSE loop; RIP past the
    /// PAUSE): another task, maybe another vCPU, should run.
    Spin,
    /// The guest asked to give its time to the vCPU with this APIC ID (the
    /// `KVM_HC_SCHED_YIELD` hypercall, finished: RIP is past it, RAX holds 0).
    YieldTo {
        apic_id: u64,
    },
    /// Triple fault.
    Shutdown,
    /// VM entry failed: the hardware's reason.
    FailEntry {
        reason: u64,
    },
    /// MOV to/from a control register, CLTS, LMSW.
    CrAccess {
        cr: u8,
        op: CrOp,
        insn_len: u8,
    },
    /// MOV to (`write`) or from a debug register, with general register `gpr`.
    DrAccess {
        dr: u8,
        write: bool,
        gpr: u8,
        insn_len: u8,
    },
    /// RDMSR / WRMSR (ECX, EDX:EAX in the GPRs).
    Rdmsr {
        insn_len: u8,
    },
    Wrmsr {
        insn_len: u8,
    },
    /// An instruction the generic code completes, with its length when the hardware
    /// reported it; without it the generic code decodes the instruction at RIP (which
    /// also gives the operands of CR and DR accesses).
    Intercepted {
        what: Intercept,
        len: Option<u8>,
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
                | Exit::Spin
                | Exit::YieldTo { .. }
                | Exit::TdpFault { .. }
                | Exit::Intercepted { .. }
                | Exit::CrAccess { .. }
                | Exit::DrAccess { .. }
                | Exit::Rdmsr { .. }
                | Exit::Wrmsr { .. }
        )
    }
}

// SPDX-License-Identifier: GPL-2.0

//! The return-stack-buffer refill both VM-exit paths run before their first RET when the
//! host asks for it (`RSB_VMEXIT`): 32 CALLs, each over an INT3 trap, whose return
//! addresses replace whatever the guest left in the RSB, then the stack pointer is put
//! back and an LFENCE waits for them. The CALLs are annotated as safe for objtool, as
//! the kernel's own `__FILL_RETURN_BUFFER`. Clobbers ECX; uses numeric labels 20-22 and
//! 911-912.

/// The refill, as one `global_asm!` template string.
macro_rules! rsb_fill_asm {
    () => {
        concat!(
            "mov ecx, 16\n",
            "20:\n",
            "911:\n",
            ".pushsection .discard.annotate_insn, \"M\", @progbits, 8\n",
            ".long 911b - ., 7\n",
            ".popsection\n",
            "call 21f\n",
            "int3\n",
            "21:\n",
            "912:\n",
            ".pushsection .discard.annotate_insn, \"M\", @progbits, 8\n",
            ".long 912b - ., 7\n",
            ".popsection\n",
            "call 22f\n",
            "int3\n",
            "22:\n",
            "add rsp, 16\n",
            "dec ecx\n",
            "jnz 20b\n",
            "lfence\n",
        )
    };
}

pub(crate) use rsb_fill_asm;

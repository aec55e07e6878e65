// SPDX-License-Identifier: GPL-2.0

//! VMCS fields, typed by width, and access to the current VMCS.
//!
//! A field's encoding fixes its width; the types below make a wrong-width access a compile
//! error. Access goes through [`Loaded`], which exists only while this vCPU's VMCS is the
//! current VMCS of this CPU (inside a VMX window), so a VMREAD/VMWRITE can never run
//! without a current VMCS.

use super::asm::{self, VmxResult};
use crate::sys::page::PhysPage;

/// A 16-bit field.
#[derive(Clone, Copy)]
pub(crate) struct F16(pub(crate) u32);
/// A 32-bit field.
#[derive(Clone, Copy)]
pub(crate) struct F32(pub(crate) u32);
/// A 64-bit field.
#[derive(Clone, Copy)]
pub(crate) struct F64(pub(crate) u32);
/// A natural-width field (64-bit on x86-64).
#[derive(Clone, Copy)]
pub(crate) struct FN(pub(crate) u32);

/// A field that holds a whole `u64`: the 64-bit and (on x86-64) natural-width ones.
pub(crate) trait Wide: Copy {
    fn enc(self) -> u32;
}

impl Wide for F64 {
    fn enc(self) -> u32 {
        self.0
    }
}

impl Wide for FN {
    fn enc(self) -> u32 {
        self.0
    }
}

// The architectural field encodings; rkvm uses a subset.
macro_rules! fields {
    ($ty:ident: $($name:ident = $enc:expr),* $(,)?) => {
        $(#[allow(dead_code)] pub(crate) const $name: $ty = $ty($enc);)*
    };
}

fields!(F16:
    VPID = 0x0000,
    GUEST_ES_SELECTOR = 0x0800, GUEST_CS_SELECTOR = 0x0802, GUEST_SS_SELECTOR = 0x0804,
    GUEST_DS_SELECTOR = 0x0806, GUEST_FS_SELECTOR = 0x0808, GUEST_GS_SELECTOR = 0x080a,
    GUEST_LDTR_SELECTOR = 0x080c, GUEST_TR_SELECTOR = 0x080e, GUEST_PML_INDEX = 0x0812,
    HOST_ES_SELECTOR = 0x0c00, HOST_CS_SELECTOR = 0x0c02, HOST_SS_SELECTOR = 0x0c04,
    HOST_DS_SELECTOR = 0x0c06, HOST_FS_SELECTOR = 0x0c08, HOST_GS_SELECTOR = 0x0c0a,
    HOST_TR_SELECTOR = 0x0c0c,
);

fields!(F64:
    IO_BITMAP_A = 0x2000, IO_BITMAP_B = 0x2002, MSR_BITMAP = 0x2004,
    VM_EXIT_MSR_STORE_ADDR = 0x2006, VM_EXIT_MSR_LOAD_ADDR = 0x2008,
    VM_ENTRY_MSR_LOAD_ADDR = 0x200a, PML_ADDRESS = 0x200e, TSC_OFFSET = 0x2010,
    EPT_POINTER = 0x201a, XSS_EXIT_BITMAP = 0x202c, TSC_MULTIPLIER = 0x2032,
    GUEST_PHYSICAL_ADDRESS = 0x2400, VMCS_LINK_POINTER = 0x2800,
    GUEST_IA32_DEBUGCTL = 0x2802, GUEST_IA32_PAT = 0x2804, GUEST_IA32_EFER = 0x2806,
    GUEST_PDPTR0 = 0x280a, GUEST_PDPTR1 = 0x280c, GUEST_PDPTR2 = 0x280e, GUEST_PDPTR3 = 0x2810,
    HOST_IA32_PAT = 0x2c00, HOST_IA32_EFER = 0x2c02,
);

fields!(F32:
    PIN_BASED_VM_EXEC_CONTROL = 0x4000, CPU_BASED_VM_EXEC_CONTROL = 0x4002,
    EXCEPTION_BITMAP = 0x4004, PAGE_FAULT_ERROR_CODE_MASK = 0x4006,
    PAGE_FAULT_ERROR_CODE_MATCH = 0x4008, CR3_TARGET_COUNT = 0x400a,
    VM_EXIT_CONTROLS = 0x400c, VM_EXIT_MSR_STORE_COUNT = 0x400e,
    VM_EXIT_MSR_LOAD_COUNT = 0x4010, VM_ENTRY_CONTROLS = 0x4012,
    VM_ENTRY_MSR_LOAD_COUNT = 0x4014, VM_ENTRY_INTR_INFO_FIELD = 0x4016,
    VM_ENTRY_EXCEPTION_ERROR_CODE = 0x4018, VM_ENTRY_INSTRUCTION_LEN = 0x401a,
    TPR_THRESHOLD = 0x401c, SECONDARY_VM_EXEC_CONTROL = 0x401e,
    PLE_GAP = 0x4020, PLE_WINDOW = 0x4022,
    VM_INSTRUCTION_ERROR = 0x4400, VM_EXIT_REASON = 0x4402, VM_EXIT_INTR_INFO = 0x4404,
    VM_EXIT_INTR_ERROR_CODE = 0x4406, IDT_VECTORING_INFO_FIELD = 0x4408,
    IDT_VECTORING_ERROR_CODE = 0x440a, VM_EXIT_INSTRUCTION_LEN = 0x440c,
    VMX_INSTRUCTION_INFO = 0x440e,
    GUEST_ES_LIMIT = 0x4800, GUEST_CS_LIMIT = 0x4802, GUEST_SS_LIMIT = 0x4804,
    GUEST_DS_LIMIT = 0x4806, GUEST_FS_LIMIT = 0x4808, GUEST_GS_LIMIT = 0x480a,
    GUEST_LDTR_LIMIT = 0x480c, GUEST_TR_LIMIT = 0x480e, GUEST_GDTR_LIMIT = 0x4810,
    GUEST_IDTR_LIMIT = 0x4812,
    GUEST_ES_AR_BYTES = 0x4814, GUEST_CS_AR_BYTES = 0x4816, GUEST_SS_AR_BYTES = 0x4818,
    GUEST_DS_AR_BYTES = 0x481a, GUEST_FS_AR_BYTES = 0x481c, GUEST_GS_AR_BYTES = 0x481e,
    GUEST_LDTR_AR_BYTES = 0x4820, GUEST_TR_AR_BYTES = 0x4822,
    GUEST_INTERRUPTIBILITY_INFO = 0x4824, GUEST_ACTIVITY_STATE = 0x4826,
    GUEST_SYSENTER_CS = 0x482a, VMX_PREEMPTION_TIMER_VALUE = 0x482e,
    HOST_IA32_SYSENTER_CS = 0x4c00,
);

fields!(FN:
    CR0_GUEST_HOST_MASK = 0x6000, CR4_GUEST_HOST_MASK = 0x6002,
    CR0_READ_SHADOW = 0x6004, CR4_READ_SHADOW = 0x6006,
    EXIT_QUALIFICATION = 0x6400, GUEST_LINEAR_ADDRESS = 0x640a,
    GUEST_CR0 = 0x6800, GUEST_CR3 = 0x6802, GUEST_CR4 = 0x6804,
    GUEST_ES_BASE = 0x6806, GUEST_CS_BASE = 0x6808, GUEST_SS_BASE = 0x680a,
    GUEST_DS_BASE = 0x680c, GUEST_FS_BASE = 0x680e, GUEST_GS_BASE = 0x6810,
    GUEST_LDTR_BASE = 0x6812, GUEST_TR_BASE = 0x6814, GUEST_GDTR_BASE = 0x6816,
    GUEST_IDTR_BASE = 0x6818, GUEST_DR7 = 0x681a, GUEST_RSP = 0x681c, GUEST_RIP = 0x681e,
    GUEST_RFLAGS = 0x6820, GUEST_PENDING_DBG_EXCEPTIONS = 0x6822,
    GUEST_SYSENTER_ESP = 0x6824, GUEST_SYSENTER_EIP = 0x6826,
    HOST_CR0 = 0x6c00, HOST_CR3 = 0x6c02, HOST_CR4 = 0x6c04, HOST_FS_BASE = 0x6c06,
    HOST_GS_BASE = 0x6c08, HOST_TR_BASE = 0x6c0a, HOST_GDTR_BASE = 0x6c0c,
    HOST_IDTR_BASE = 0x6c0e, HOST_IA32_SYSENTER_ESP = 0x6c10,
    HOST_IA32_SYSENTER_EIP = 0x6c12, HOST_RSP = 0x6c14, HOST_RIP = 0x6c16,
);

/// The guest segment registers' fields: selector, base, limit, access rights.
#[derive(Clone, Copy)]
pub(crate) struct SegFields {
    pub(crate) sel: F16,
    pub(crate) base: FN,
    pub(crate) limit: F32,
    pub(crate) ar: F32,
}

/// ES, CS, SS, DS, FS, GS, LDTR, TR.
pub(crate) const SEGS: [SegFields; 8] = [
    SegFields {
        sel: GUEST_ES_SELECTOR,
        base: GUEST_ES_BASE,
        limit: GUEST_ES_LIMIT,
        ar: GUEST_ES_AR_BYTES,
    },
    SegFields {
        sel: GUEST_CS_SELECTOR,
        base: GUEST_CS_BASE,
        limit: GUEST_CS_LIMIT,
        ar: GUEST_CS_AR_BYTES,
    },
    SegFields {
        sel: GUEST_SS_SELECTOR,
        base: GUEST_SS_BASE,
        limit: GUEST_SS_LIMIT,
        ar: GUEST_SS_AR_BYTES,
    },
    SegFields {
        sel: GUEST_DS_SELECTOR,
        base: GUEST_DS_BASE,
        limit: GUEST_DS_LIMIT,
        ar: GUEST_DS_AR_BYTES,
    },
    SegFields {
        sel: GUEST_FS_SELECTOR,
        base: GUEST_FS_BASE,
        limit: GUEST_FS_LIMIT,
        ar: GUEST_FS_AR_BYTES,
    },
    SegFields {
        sel: GUEST_GS_SELECTOR,
        base: GUEST_GS_BASE,
        limit: GUEST_GS_LIMIT,
        ar: GUEST_GS_AR_BYTES,
    },
    SegFields {
        sel: GUEST_LDTR_SELECTOR,
        base: GUEST_LDTR_BASE,
        limit: GUEST_LDTR_LIMIT,
        ar: GUEST_LDTR_AR_BYTES,
    },
    SegFields {
        sel: GUEST_TR_SELECTOR,
        base: GUEST_TR_BASE,
        limit: GUEST_TR_LIMIT,
        ar: GUEST_TR_AR_BYTES,
    },
];

/// A vCPU's VMCS region.
///
/// # Invariants
///
/// When `clear` is set, the region is in the clear launch state and current on no CPU
/// (every window ends with the VMCLEAR of [`Loaded`]'s drop).
pub(crate) struct Vmcs {
    page: PhysPage,
    clear: core::cell::Cell<bool>,
}

impl Vmcs {
    /// A new VMCS region stamped with the revision id.
    pub(crate) fn new(revision: u32) -> kernel::error::Result<Self> {
        let page = PhysPage::new()?;
        page.write(0, u64::from(revision));
        Ok(Self {
            page,
            clear: core::cell::Cell::new(false),
        })
    }

    /// Makes this VMCS current on this CPU for the life of the result. A region that is
    /// not known to be clear (never used, or its last VMCLEAR failed) is cleared first.
    pub(crate) fn load<'w>(&'w self, _on: &'w super::window::VmxOn<'_>) -> VmxResult<Loaded<'w>> {
        let phys = self.page.phys().0;
        if !self.clear.get() {
            // SAFETY: `_on` proves VMX root operation; `phys` is this module's VMCS region.
            unsafe { asm::vmclear(phys)? };
        }
        self.clear.set(false);
        // SAFETY: As above; the region is clear (the type's invariant, or the VMCLEAR
        // above) and carries the revision id.
        unsafe { asm::vmptrld(phys)? };
        Ok(Loaded { phys, vmcs: self })
    }
}

/// This vCPU's VMCS, current on this CPU. Dropping it VMCLEARs the VMCS, so its contents
/// are in memory and it is current nowhere once the window closes.
pub(crate) struct Loaded<'w> {
    phys: u64,
    vmcs: &'w Vmcs,
}

impl Loaded<'_> {
    #[inline(always)]
    fn rd(&self, enc: u32) -> u64 {
        // SAFETY: `self` proves a current VMCS (see the type's docs); an unsupported field
        // only fails, read as 0.
        unsafe { asm::vmread(u64::from(enc)) }
    }

    #[inline(always)]
    fn wr(&self, enc: u32, v: u64) -> VmxResult {
        // SAFETY: `self` proves a current VMCS. Guest-state and control fields only affect
        // the guest; the host-state fields are written by the window code alone.
        unsafe { asm::vmwrite(u64::from(enc), v) }
    }

    pub(crate) fn r16(&self, f: F16) -> u16 {
        self.rd(f.0) as u16
    }
    pub(crate) fn r32(&self, f: F32) -> u32 {
        self.rd(f.0) as u32
    }
    pub(crate) fn r64(&self, f: F64) -> u64 {
        self.rd(f.0)
    }
    pub(crate) fn rn(&self, f: FN) -> u64 {
        self.rd(f.0)
    }
    pub(crate) fn w16(&self, f: F16, v: u16) -> VmxResult {
        self.wr(f.0, u64::from(v))
    }
    pub(crate) fn w32(&self, f: F32, v: u32) -> VmxResult {
        self.wr(f.0, u64::from(v))
    }
    pub(crate) fn w64(&self, f: F64, v: u64) -> VmxResult {
        self.wr(f.0, v)
    }
    pub(crate) fn wn(&self, f: FN, v: u64) -> VmxResult {
        self.wr(f.0, v)
    }
    /// Writes a 64-bit or natural-width field.
    pub(crate) fn w_wide(&self, f: impl Wide, v: u64) -> VmxResult {
        self.wr(f.enc(), v)
    }
}

impl Drop for Loaded<'_> {
    fn drop(&mut self) {
        // SAFETY: Still in VMX operation (the window borrows outlive this); clears the
        // VMCS this value made current.
        let cleared = unsafe { asm::vmclear(self.phys) }.is_ok();
        self.vmcs.clear.set(cleared);
    }
}

/// VMX access rights of a segment (and the reverse): the layout of the descriptor's
/// attribute bits, with "unusable" in bit 16.
pub(crate) fn seg_to_ar(s: &crate::uapi::kvm_segment) -> u32 {
    if s.unusable != 0 || s.present == 0 {
        return 1 << 16;
    }
    u32::from(s.type_ & 15)
        | u32::from(s.s & 1) << 4
        | u32::from(s.dpl & 3) << 5
        | u32::from(s.present & 1) << 7
        | u32::from(s.avl & 1) << 12
        | u32::from(s.l & 1) << 13
        | u32::from(s.db & 1) << 14
        | u32::from(s.g & 1) << 15
}

/// Fills a segment's attributes from VMX access rights (present = usable, as KVM does).
pub(crate) fn ar_to_seg(ar: u32, s: &mut crate::uapi::kvm_segment) {
    s.unusable = ((ar >> 16) & 1) as u8;
    s.type_ = (ar & 15) as u8;
    s.s = ((ar >> 4) & 1) as u8;
    s.dpl = ((ar >> 5) & 3) as u8;
    s.present = u8::from(s.unusable == 0);
    s.avl = ((ar >> 12) & 1) as u8;
    s.l = ((ar >> 13) & 1) as u8;
    s.db = ((ar >> 14) & 1) as u8;
    s.g = ((ar >> 15) & 1) as u8;
}

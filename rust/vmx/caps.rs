// SPDX-License-Identifier: GPL-2.0

//! What the CPU's VMX can do, computed once at `hardware_setup` from the VMX capability
//! MSRs (the seed's `vmcs_config` and `vmx_capability`), and the controls rkvm uses.

use crate::sys::msr::{self, index};

// The control-bit modules below name the architectural bits; rkvm uses a subset.

/// Pin-based VM-execution controls.
pub(crate) mod pin {
    pub(crate) const EXT_INTR_EXITING: u32 = 1 << 0;
    pub(crate) const NMI_EXITING: u32 = 1 << 3;
    pub(crate) const VIRTUAL_NMIS: u32 = 1 << 5;
    pub(crate) const PREEMPTION_TIMER: u32 = 1 << 6;
    pub(crate) const POSTED_INTR: u32 = 1 << 7;
}

/// Primary processor-based VM-execution controls.
pub(crate) mod proc1 {
    pub(crate) const INTR_WINDOW_EXITING: u32 = 1 << 2;
    pub(crate) const USE_TSC_OFFSETTING: u32 = 1 << 3;
    pub(crate) const HLT_EXITING: u32 = 1 << 7;
    pub(crate) const MWAIT_EXITING: u32 = 1 << 10;
    pub(crate) const RDPMC_EXITING: u32 = 1 << 11;
    pub(crate) const CR3_LOAD_EXITING: u32 = 1 << 15;
    pub(crate) const CR3_STORE_EXITING: u32 = 1 << 16;
    pub(crate) const CR8_LOAD_EXITING: u32 = 1 << 19;
    pub(crate) const CR8_STORE_EXITING: u32 = 1 << 20;
    pub(crate) const NMI_WINDOW_EXITING: u32 = 1 << 22;
    pub(crate) const MOV_DR_EXITING: u32 = 1 << 23;
    pub(crate) const UNCOND_IO_EXITING: u32 = 1 << 24;
    pub(crate) const MONITOR_TRAP_FLAG: u32 = 1 << 27;
    pub(crate) const USE_MSR_BITMAPS: u32 = 1 << 28;
    pub(crate) const MONITOR_EXITING: u32 = 1 << 29;
    pub(crate) const PAUSE_EXITING: u32 = 1 << 30;
    pub(crate) const ACTIVATE_SECONDARY_CONTROLS: u32 = 1 << 31;
}

/// Secondary processor-based VM-execution controls.
pub(crate) mod proc2 {
    pub(crate) const ENABLE_EPT: u32 = 1 << 1;
    pub(crate) const DESC: u32 = 1 << 2;
    pub(crate) const ENABLE_RDTSCP: u32 = 1 << 3;
    pub(crate) const ENABLE_VPID: u32 = 1 << 5;
    pub(crate) const WBINVD_EXITING: u32 = 1 << 6;
    pub(crate) const UNRESTRICTED_GUEST: u32 = 1 << 7;
    pub(crate) const PAUSE_LOOP_EXITING: u32 = 1 << 10;
    pub(crate) const ENABLE_INVPCID: u32 = 1 << 12;
    pub(crate) const ENABLE_PML: u32 = 1 << 17;
    pub(crate) const XSAVES: u32 = 1 << 20;
    pub(crate) const TSC_SCALING: u32 = 1 << 25;
}

/// VM-exit controls.
pub(crate) mod exit {
    pub(crate) const SAVE_DEBUG_CONTROLS: u32 = 1 << 2;
    pub(crate) const HOST_ADDR_SPACE_SIZE: u32 = 1 << 9;
    pub(crate) const ACK_INTR_ON_EXIT: u32 = 1 << 15;
    pub(crate) const SAVE_IA32_PAT: u32 = 1 << 18;
    pub(crate) const LOAD_IA32_PAT: u32 = 1 << 19;
    pub(crate) const SAVE_IA32_EFER: u32 = 1 << 20;
    pub(crate) const LOAD_IA32_EFER: u32 = 1 << 21;
}

/// VM-entry controls.
pub(crate) mod entry {
    pub(crate) const LOAD_DEBUG_CONTROLS: u32 = 1 << 2;
    pub(crate) const IA32E_MODE: u32 = 1 << 9;
    pub(crate) const LOAD_IA32_PAT: u32 = 1 << 14;
    pub(crate) const LOAD_IA32_EFER: u32 = 1 << 15;
}

/// Bits of IA32_VMX_EPT_VPID_CAP.
pub(crate) mod ept_vpid {
    pub(crate) const EPT_PAGE_WALK_4: u64 = 1 << 6;
    pub(crate) const EPT_MT_WB: u64 = 1 << 14;
    pub(crate) const EPT_2MB_PAGE: u64 = 1 << 16;
    pub(crate) const EPT_1GB_PAGE: u64 = 1 << 17;
    pub(crate) const INVEPT: u64 = 1 << 20;
    pub(crate) const EPT_AD: u64 = 1 << 21;
    pub(crate) const INVEPT_SINGLE_CONTEXT: u64 = 1 << 25;
    pub(crate) const INVEPT_ALL_CONTEXT: u64 = 1 << 26;
    pub(crate) const INVVPID: u64 = 1 << 32;
    pub(crate) const INVVPID_SINGLE_CONTEXT: u64 = 1 << 41;
    pub(crate) const INVVPID_ALL_CONTEXT: u64 = 1 << 42;
}

// What rkvm needs (required) and can use (optional), per control word.
const PIN_REQUIRED: u32 = pin::EXT_INTR_EXITING | pin::NMI_EXITING | pin::VIRTUAL_NMIS;
const PIN_OPTIONAL: u32 = pin::PREEMPTION_TIMER;

const PROC1_REQUIRED: u32 = proc1::HLT_EXITING
    | proc1::CR8_LOAD_EXITING
    | proc1::CR8_STORE_EXITING
    | proc1::UNCOND_IO_EXITING
    | proc1::MOV_DR_EXITING
    | proc1::USE_TSC_OFFSETTING
    | proc1::MWAIT_EXITING
    | proc1::MONITOR_EXITING
    | proc1::RDPMC_EXITING;
// CR3 and INVLPG exits are not wanted: guest paging runs natively under EPT. (A CPU whose
// controls force them to 1 still works; the exit handlers emulate them.)
const PROC1_OPTIONAL: u32 = proc1::USE_MSR_BITMAPS
    | proc1::ACTIVATE_SECONDARY_CONTROLS
    | proc1::PAUSE_EXITING
    | proc1::MONITOR_TRAP_FLAG
    | proc1::INTR_WINDOW_EXITING
    | proc1::NMI_WINDOW_EXITING;

// rkvm maps guest memory with EPT only (there is no shadow paging).
const PROC2_REQUIRED: u32 = proc2::ENABLE_EPT;
const PROC2_OPTIONAL: u32 = proc2::UNRESTRICTED_GUEST
    | proc2::ENABLE_VPID
    | proc2::ENABLE_RDTSCP
    | proc2::WBINVD_EXITING
    | proc2::ENABLE_INVPCID
    | proc2::XSAVES
    | proc2::TSC_SCALING
    | proc2::ENABLE_PML
    | proc2::PAUSE_LOOP_EXITING
    | proc2::DESC;

// EFER and PAT are switched by the entry/exit controls (no MSR-load lists).
const EXIT_REQUIRED: u32 = exit::SAVE_DEBUG_CONTROLS
    | exit::HOST_ADDR_SPACE_SIZE
    | exit::LOAD_IA32_EFER
    | exit::SAVE_IA32_EFER
    | exit::LOAD_IA32_PAT
    | exit::SAVE_IA32_PAT;
const EXIT_OPTIONAL: u32 = 0;

const ENTRY_REQUIRED: u32 =
    entry::LOAD_DEBUG_CONTROLS | entry::LOAD_IA32_EFER | entry::LOAD_IA32_PAT;
const ENTRY_OPTIONAL: u32 = 0;

/// The VMX configuration of a CPU (the seed's `vmcs_config` + `vmx_capability`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct VmcsConfig {
    /// IA32_VMX_BASIC.
    pub(crate) basic: u64,
    /// IA32_VMX_MISC.
    pub(crate) misc: u64,
    /// Negotiated pin-based controls.
    pub(crate) pin: u32,
    /// Negotiated primary processor-based controls.
    pub(crate) proc1: u32,
    /// Negotiated secondary processor-based controls.
    pub(crate) proc2: u32,
    /// Negotiated VM-exit controls.
    pub(crate) exit: u32,
    /// Negotiated VM-entry controls.
    pub(crate) entry: u32,
    /// IA32_VMX_EPT_VPID_CAP (0 when neither EPT nor VPID exists).
    pub(crate) ept_vpid: u64,
    /// CR0 and CR4 bits fixed to 1 / allowed to be 1 in VMX operation.
    pub(crate) cr0_fixed0: u64,
    pub(crate) cr0_fixed1: u64,
    pub(crate) cr4_fixed0: u64,
    pub(crate) cr4_fixed1: u64,
}

/// Why a configuration could not be computed.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CapsError {
    /// A capability MSR could not be read.
    Msr(u32),
    /// Required controls missing in a control word (MSR, missing bits).
    Missing(u32, u32),
    /// The VMCS region would not fit in a page, or its memory type is not write-back.
    Basic(u64),
    /// EPT lacks 4-level write-back tables or INVEPT (IA32_VMX_EPT_VPID_CAP).
    Ept(u64),
}

impl VmcsConfig {
    /// VMCS revision identifier (bits 30:0 of IA32_VMX_BASIC).
    pub(crate) fn revision_id(&self) -> u32 {
        (self.basic & 0x7fff_ffff) as u32
    }

    /// Whether secondary controls include all of `bits`.
    pub(crate) fn has2(&self, bits: u32) -> bool {
        self.proc2 & bits == bits
    }

    /// Computes the configuration of the CPU this runs on.
    pub(crate) fn probe() -> core::result::Result<Self, CapsError> {
        let rd = |m: u32| msr::read(m).map_err(|_| CapsError::Msr(m));
        let basic = rd(index::IA32_VMX_BASIC)?;
        // A VMCS must fit in one page (bits 44:32), be write-back (bits 53:50 = 6) and take
        // 64-bit physical addresses (bit 48 clear).
        let size = (basic >> 32) & 0x1fff;
        let memtype = (basic >> 50) & 0xf;
        if size > 4096 || memtype != 6 || basic & (1 << 48) != 0 {
            return Err(CapsError::Basic(basic));
        }
        // Bit 55: the TRUE_* MSRs exist and report which default-1 controls may be 0.
        let truectl = basic & (1 << 55) != 0;
        let pick = |plain: u32, tru: u32| if truectl { tru } else { plain };
        let adjust = |m: u32, req: u32, opt: u32| -> core::result::Result<u32, CapsError> {
            let v = rd(m)?;
            let (must1, may1) = (v as u32, (v >> 32) as u32);
            let ctl = (req | opt) & may1 | must1;
            if ctl & req != req {
                return Err(CapsError::Missing(m, req & !ctl));
            }
            Ok(ctl)
        };
        let pin = adjust(
            pick(
                index::IA32_VMX_PINBASED_CTLS,
                index::IA32_VMX_TRUE_PINBASED_CTLS,
            ),
            PIN_REQUIRED,
            PIN_OPTIONAL,
        )?;
        let proc1 = adjust(
            pick(
                index::IA32_VMX_PROCBASED_CTLS,
                index::IA32_VMX_TRUE_PROCBASED_CTLS,
            ),
            PROC1_REQUIRED,
            PROC1_OPTIONAL,
        )?;
        if proc1 & proc1::ACTIVATE_SECONDARY_CONTROLS == 0 {
            return Err(CapsError::Missing(
                index::IA32_VMX_PROCBASED_CTLS,
                proc1::ACTIVATE_SECONDARY_CONTROLS,
            ));
        }
        let proc2 = adjust(
            index::IA32_VMX_PROCBASED_CTLS2,
            PROC2_REQUIRED,
            PROC2_OPTIONAL,
        )?;
        let exit = adjust(
            pick(index::IA32_VMX_EXIT_CTLS, index::IA32_VMX_TRUE_EXIT_CTLS),
            EXIT_REQUIRED,
            EXIT_OPTIONAL,
        )?;
        let entry = adjust(
            pick(index::IA32_VMX_ENTRY_CTLS, index::IA32_VMX_TRUE_ENTRY_CTLS),
            ENTRY_REQUIRED,
            ENTRY_OPTIONAL,
        )?;
        let ept_vpid = rd(index::IA32_VMX_EPT_VPID_CAP)?;
        let mut c = Self {
            basic,
            misc: rd(index::IA32_VMX_MISC)?,
            pin,
            proc1,
            proc2,
            exit,
            entry,
            ept_vpid,
            cr0_fixed0: rd(index::IA32_VMX_CR0_FIXED0)?,
            cr0_fixed1: rd(index::IA32_VMX_CR0_FIXED1)?,
            cr4_fixed0: rd(index::IA32_VMX_CR4_FIXED0)?,
            cr4_fixed1: rd(index::IA32_VMX_CR4_FIXED1)?,
        };
        // EPT is only usable with 4-level walks of write-back tables and INVEPT.
        let ept_ok = ept_vpid & ept_vpid::EPT_PAGE_WALK_4 != 0
            && ept_vpid & ept_vpid::EPT_MT_WB != 0
            && ept_vpid & ept_vpid::INVEPT != 0
            && ept_vpid & (ept_vpid::INVEPT_SINGLE_CONTEXT | ept_vpid::INVEPT_ALL_CONTEXT) != 0;
        if !ept_ok {
            return Err(CapsError::Ept(ept_vpid));
        }
        if ept_vpid & ept_vpid::INVVPID == 0
            || ept_vpid & (ept_vpid::INVVPID_SINGLE_CONTEXT | ept_vpid::INVVPID_ALL_CONTEXT) == 0
        {
            c.proc2 &= !proc2::ENABLE_VPID;
        }
        Ok(c)
    }

    /// Removes what the module parameters turned off, and what depends on it.
    pub(crate) fn apply_params(&mut self, p: &crate::vmx::Params) {
        if !p.unrestricted_guest {
            self.proc2 &= !proc2::UNRESTRICTED_GUEST;
        }
        if !p.vpid {
            self.proc2 &= !proc2::ENABLE_VPID;
        }
        if !p.pml {
            self.proc2 &= !proc2::ENABLE_PML;
        }
    }
}

impl kernel::fmt::Display for CapsError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Msr(m) => write!(f, "cannot read VMX capability MSR {m:#x}"),
            Self::Missing(m, bits) => {
                write!(f, "required VMX controls {bits:#x} missing (MSR {m:#x})")
            }
            Self::Basic(b) => write!(f, "unusable IA32_VMX_BASIC {b:#x}"),
            Self::Ept(c) => write!(f, "EPT unusable (IA32_VMX_EPT_VPID_CAP {c:#x})"),
        }
    }
}

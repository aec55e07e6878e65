// SPDX-License-Identifier: GPL-2.0

//! The architectural state of a vCPU, in the KVM ABI's own terms, shared by the ioctl
//! layer and the backends.
//!
//! Outside a VMX window this is the authoritative copy: state ioctls read and write it.
//! The backend loads it into the VMCS when a window opens (all of it if an ioctl changed
//! it, marked by `dirty`) and saves the VMCS back into it when the window closes.

use crate::uapi::{kvm_dtable, kvm_regs, kvm_segment};

/// Segment register indices, in the VMCS order.
pub(crate) const ES: usize = 0;
pub(crate) const CS: usize = 1;
pub(crate) const SS: usize = 2;
pub(crate) const DS: usize = 3;
pub(crate) const FS: usize = 4;
pub(crate) const GS: usize = 5;
pub(crate) const LDTR: usize = 6;
pub(crate) const TR: usize = 7;

/// CR0 bits.
pub(crate) mod cr0 {
    pub(crate) const PE: u64 = 1 << 0;
    pub(crate) const MP: u64 = 1 << 1;
    pub(crate) const EM: u64 = 1 << 2;
    pub(crate) const TS: u64 = 1 << 3;
    pub(crate) const ET: u64 = 1 << 4;
    pub(crate) const NE: u64 = 1 << 5;
    pub(crate) const WP: u64 = 1 << 16;
    pub(crate) const AM: u64 = 1 << 18;
    pub(crate) const NW: u64 = 1 << 29;
    pub(crate) const CD: u64 = 1 << 30;
    pub(crate) const PG: u64 = 1 << 31;
    /// Bits a guest may set.
    pub(crate) const VALID: u64 = PE | MP | EM | TS | ET | NE | WP | AM | NW | CD | PG;
}

/// CR4 bits.
pub(crate) mod cr4 {
    pub(crate) const VME: u64 = 1 << 0;
    pub(crate) const PVI: u64 = 1 << 1;
    pub(crate) const TSD: u64 = 1 << 2;
    pub(crate) const DE: u64 = 1 << 3;
    pub(crate) const PSE: u64 = 1 << 4;
    pub(crate) const PAE: u64 = 1 << 5;
    pub(crate) const MCE: u64 = 1 << 6;
    pub(crate) const PGE: u64 = 1 << 7;
    pub(crate) const PCE: u64 = 1 << 8;
    pub(crate) const OSFXSR: u64 = 1 << 9;
    pub(crate) const OSXMMEXCPT: u64 = 1 << 10;
    pub(crate) const UMIP: u64 = 1 << 11;
    pub(crate) const FSGSBASE: u64 = 1 << 16;
    pub(crate) const PCIDE: u64 = 1 << 17;
    pub(crate) const OSXSAVE: u64 = 1 << 18;
    pub(crate) const SMEP: u64 = 1 << 20;
    pub(crate) const SMAP: u64 = 1 << 21;
}

/// EFER bits.
pub(crate) mod efer {
    pub(crate) const SCE: u64 = 1 << 0;
    pub(crate) const LME: u64 = 1 << 8;
    pub(crate) const LMA: u64 = 1 << 10;
    pub(crate) const NX: u64 = 1 << 11;
}

/// DR6.BS: the #DB came from single-stepping.
pub(crate) const DR6_BS: u64 = 1 << 14;

/// RFLAGS bits.
pub(crate) mod rflags {
    pub(crate) const FIXED: u64 = 1 << 1;
    pub(crate) const TF: u64 = 1 << 8;
    pub(crate) const IF: u64 = 1 << 9;
    pub(crate) const DF: u64 = 1 << 10;
    pub(crate) const VM: u64 = 1 << 17;
}

/// A pending or injected exception.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Exception {
    pub(crate) vector: u8,
    pub(crate) error_code: Option<u32>,
    /// Delivery started and must be redone (KVM's "injected") vs. not yet begun.
    pub(crate) injected: bool,
    /// For #PF, the faulting address (CR2 payload).
    pub(crate) payload: Option<u64>,
}

/// Event state: what is pending for the guest.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Events {
    pub(crate) exception: Option<Exception>,
    /// An external interrupt queued by KVM_INTERRUPT (or being re-delivered).
    pub(crate) interrupt: Option<u8>,
    /// Whether `interrupt` was already being delivered when an exit interrupted it.
    pub(crate) interrupt_injected: bool,
    /// An instruction-caused software interrupt (INTn) whose delivery was cut short.
    pub(crate) soft_interrupt: Option<(u8, u8)>,
    pub(crate) nmi_pending: bool,
    pub(crate) nmi_injected: bool,
    pub(crate) nmi_masked: bool,
    /// Interrupt shadow: [`shadow::STI`] and [`shadow::MOV_SS`] blocking (the VMX
    /// interruptibility bits; the uapi's `KVM_X86_SHADOW_INT_*` are the other way round).
    pub(crate) shadow: u8,
}

/// The next event to deliver, as [`Events::take_next`] picks it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Next {
    Exception(Exception),
    /// A software interrupt (INT n) whose delivery an exit cut short; `len` is its
    /// instruction's length.
    SoftInterrupt {
        vector: u8,
        len: u8,
    },
    Nmi,
    Interrupt(u8),
}

impl Events {
    /// Takes the event to deliver now out of the queue, in KVM's order: an exception, a
    /// software interrupt cut short (when `soft_ok` accepts its length), an NMI (one whose
    /// delivery was cut short, or a pending one when `nmi_ok`), an external interrupt
    /// (one cut short, or a queued one when `irq_ok`). What cannot go in now stays queued.
    /// The caller blocks NMIs after one, as its hardware requires.
    pub(crate) fn take_next(
        &mut self,
        irq_ok: bool,
        nmi_ok: bool,
        soft_ok: impl Fn(u8) -> bool,
    ) -> Option<Next> {
        if let Some(e) = self.exception.take() {
            return Some(Next::Exception(e));
        }
        if let Some((vector, len)) = self.soft_interrupt {
            if soft_ok(len) {
                self.soft_interrupt = None;
                return Some(Next::SoftInterrupt { vector, len });
            }
        }
        if self.nmi_injected || (self.nmi_pending && nmi_ok) {
            self.nmi_injected = false;
            self.nmi_pending = false;
            return Some(Next::Nmi);
        }
        if let (Some(vector), true) = (self.interrupt, self.interrupt_injected || irq_ok) {
            self.interrupt = None;
            self.interrupt_injected = false;
            return Some(Next::Interrupt(vector));
        }
        None
    }
}

/// Bits of [`Events::shadow`].
pub(crate) mod shadow {
    /// Blocking by STI.
    pub(crate) const STI: u8 = 1 << 0;
    /// Blocking by MOV SS or POP SS.
    pub(crate) const MOV_SS: u8 = 1 << 1;
}

/// MSR_PLATFORM_INFO bit 31: the CPU can fault CPUID outside ring 0.
pub(crate) const PLATFORM_INFO_CPUID_FAULT: u64 = 1 << 31;

/// MSRs that live in software (the VMCS holds SYSENTER_*, DEBUGCTL, PAT, EFER).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Msrs {
    pub(crate) star: u64,
    pub(crate) lstar: u64,
    pub(crate) cstar: u64,
    pub(crate) sfmask: u64,
    pub(crate) kernel_gs_base: u64,
    pub(crate) tsc_aux: u64,
    pub(crate) sysenter_cs: u64,
    pub(crate) sysenter_esp: u64,
    pub(crate) sysenter_eip: u64,
    pub(crate) pat: u64,
    pub(crate) debugctl: u64,
    pub(crate) misc_enable: u64,
    pub(crate) tsc_adjust: u64,
    pub(crate) mcg_status: u64,
    /// What userspace last wrote to IA32_UCODE_REV (the guest's writes are ignored).
    pub(crate) ucode_rev: u64,
    /// AMD's HWCR, which KVM emulates for every vendor.
    pub(crate) hwcr: u64,
    /// MSR_PLATFORM_INFO as userspace set it (the guest may only read it).
    pub(crate) platform_info: u64,
    /// MSR_MISC_FEATURES_ENABLES: bit 0 turns on CPUID faulting.
    pub(crate) misc_features: u64,
    /// MSR_IA32_POWER_CTL: storage only, as in KVM.
    pub(crate) power_ctl: u64,
    /// MSR_KVM_STEAL_TIME: the steal-time record's address and enable bit.
    pub(crate) steal_time: u64,
    /// MSR_KVM_SYSTEM_TIME(_NEW): the kvmclock record's address and enable bit.
    pub(crate) kvm_system_time: u64,
    pub(crate) mtrr_def_type: u64,
    pub(crate) mtrr_fixed: [u64; 11],
    pub(crate) mtrr_var: [u64; 16],
    /// The machine-check banks and controls (kept across INIT, as KVM's).
    pub(crate) mce: super::mce::Mce,
}

impl Default for Msrs {
    fn default() -> Self {
        Self {
            star: 0,
            lstar: 0,
            cstar: 0,
            sfmask: 0,
            kernel_gs_base: 0,
            tsc_aux: 0,
            sysenter_cs: 0,
            sysenter_esp: 0,
            sysenter_eip: 0,
            pat: 0x0007_0406_0007_0406,
            debugctl: 0,
            // PEBS and BTS unavailable, as KVM resets it.
            misc_enable: (1 << 12) | (1 << 11),
            tsc_adjust: 0,
            mcg_status: 0,
            // KVM's default microcode revision.
            ucode_rev: 0x1_0000_0000,
            hwcr: 0,
            // KVM's reset value: CPUID faulting is offered.
            platform_info: PLATFORM_INFO_CPUID_FAULT,
            misc_features: 0,
            power_ctl: 0,
            steal_time: 0,
            kvm_system_time: 0,
            mtrr_def_type: 0,
            mtrr_fixed: [0; 11],
            mtrr_var: [0; 16],
            mce: super::mce::Mce::default(),
        }
    }
}

/// The whole architectural state of a vCPU.
#[derive(Clone, Debug)]
pub(crate) struct VcpuState {
    pub(crate) regs: kvm_regs,
    pub(crate) segs: [kvm_segment; 8],
    pub(crate) gdt: kvm_dtable,
    pub(crate) idt: kvm_dtable,
    pub(crate) cr0: u64,
    pub(crate) cr2: u64,
    pub(crate) cr3: u64,
    pub(crate) cr4: u64,
    pub(crate) cr8: u64,
    pub(crate) efer: u64,
    pub(crate) apic_base: u64,
    /// PAE page-directory pointers, when the guest uses PAE paging.
    pub(crate) pdptrs: [u64; 4],
    pub(crate) db: [u64; 4],
    pub(crate) dr6: u64,
    pub(crate) dr7: u64,
    pub(crate) xcr0: u64,
    pub(crate) msrs: Msrs,
    /// Guest TSC = the host TSC at `tsc_rate` + `tsc_offset` (wrapping).
    pub(crate) tsc_offset: u64,
    /// The guest's TSC rate (KVM_SET_TSC_KHZ).
    pub(crate) tsc_rate: super::tsc::TscRate,
    pub(crate) events: Events,
    /// KVM_MP_STATE_*.
    pub(crate) mp_state: u32,
    /// Set when an ioctl changed the state: the next window reloads it all.
    pub(crate) dirty: bool,
    /// The backend still holds the guest's system state, and these fields are stale:
    /// the segment registers but CS, CS's limit, the descriptor tables, CR3, CR0.TS, the
    /// SYSENTER MSRs and the PDPTRs. RIP, RSP, RFLAGS, the general registers, CR2, CS's
    /// selector, base and attributes (so the linear RIP, the CPL, the operand size), DR7
    /// and the event state are current. A backend leaves it so after an exit whose
    /// handling needs no more (an IN or OUT); code that reads or writes a stale field
    /// calls [`super::backend::VcpuOps::sync`] first.
    pub(crate) lazy: bool,
    /// Instruction length of the last #BP exit or software event cut off by an exit: what
    /// an injected #BP/#OF returns past (KVM's `event_exit_inst_len`; 0 until then).
    pub(crate) soft_exc_len: u8,
}

fn seg(selector: u16, base: u64, type_: u8, s: u8) -> kvm_segment {
    kvm_segment {
        base,
        limit: 0xffff,
        selector,
        type_,
        present: 1,
        s,
        ..Default::default()
    }
}

impl VcpuState {
    /// The architectural reset state (INIT/power-on), as KVM defines it for a new vCPU.
    pub(crate) fn reset(apic_base: u64, tsc_offset: u64, tsc_rate: super::tsc::TscRate) -> Self {
        let data = seg(0, 0, 3, 1);
        Self {
            regs: kvm_regs {
                rip: 0xfff0,
                rflags: rflags::FIXED,
                // Family/model/stepping until KVM_SET_CPUID2 says otherwise.
                rdx: 0x600,
                ..Default::default()
            },
            segs: [
                data,
                seg(0xf000, 0xffff_0000, 0xb, 1),
                data,
                data,
                data,
                data,
                seg(0, 0, 2, 0),
                seg(0, 0, 0xb, 0),
            ],
            gdt: kvm_dtable {
                base: 0,
                limit: 0xffff,
                ..Default::default()
            },
            idt: kvm_dtable {
                base: 0,
                limit: 0xffff,
                ..Default::default()
            },
            cr0: cr0::ET | cr0::NW | cr0::CD,
            cr2: 0,
            cr3: 0,
            cr4: 0,
            cr8: 0,
            efer: 0,
            apic_base,
            pdptrs: [0; 4],
            db: [0; 4],
            dr6: 0xffff_0ff0,
            dr7: 0x400,
            xcr0: 1,
            msrs: Msrs::default(),
            tsc_offset,
            tsc_rate,
            events: Events::default(),
            mp_state: crate::uapi::KVM_MP_STATE_RUNNABLE,
            dirty: true,
            lazy: false,
            soft_exc_len: 0,
        }
    }

    /// Long mode active.
    pub(crate) fn long_mode(&self) -> bool {
        self.efer & efer::LMA != 0
    }

    /// Paging enabled.
    pub(crate) fn paging(&self) -> bool {
        self.cr0 & cr0::PG != 0
    }

    /// Protected mode.
    pub(crate) fn protected(&self) -> bool {
        self.cr0 & cr0::PE != 0
    }

    /// PAE paging without long mode (the PDPTRs matter).
    pub(crate) fn pae_paging(&self) -> bool {
        self.paging() && self.cr4 & cr4::PAE != 0 && !self.long_mode()
    }

    /// Current privilege level.
    pub(crate) fn cpl(&self) -> u8 {
        if !self.protected() {
            0
        } else if self.regs.rflags & rflags::VM != 0 {
            3
        } else {
            (self.segs[CS].selector & 3) as u8
        }
    }

    /// The code segment is 64-bit.
    pub(crate) fn cs_long(&self) -> bool {
        self.long_mode() && self.segs[CS].l != 0
    }

    /// Advances RIP past an instruction finished outside the guest (KVM's
    /// `kvm_skip_emulated_instruction`): finishing it ends an STI or MOV SS shadow.
    pub(crate) fn skip_instruction(&mut self, len: u8) {
        // TF as it was before the instruction: one that sets TF traps only after the next.
        let stepping = self.regs.rflags & rflags::TF != 0;
        self.regs.rip = self.regs.rip.wrapping_add(u64::from(len));
        if self.events.shadow != 0 {
            self.events.shadow = 0;
            // The backend takes the interruptibility state with the whole state.
            self.dirty = true;
        }
        if stepping {
            self.single_step_trap();
        }
    }

    /// The guest single-steps (RFLAGS.TF) over an instruction rkvm completed for it: the
    /// #DB the CPU would raise after it, with DR6.BS (KVM's `kvm_vcpu_do_singlestep`).
    pub(crate) fn single_step_trap(&mut self) {
        self.dr6 = (self.dr6 & !0xf) | 0xffff_0ff0 | DR6_BS;
        if self.events.exception.is_none() {
            self.events.exception = Some(Exception {
                vector: 1,
                error_code: None,
                injected: false,
                payload: None,
            });
        }
    }

    /// Default operand size of the code segment in bytes (2, 4 or 8 for 64-bit mode).
    pub(crate) fn cs_size(&self) -> u8 {
        if self.cs_long() {
            8
        } else if self.protected() && self.regs.rflags & rflags::VM == 0 && self.segs[CS].db != 0 {
            4
        } else {
            2
        }
    }
}

// SPDX-License-Identifier: GPL-2.0

//! KVM's x86 quirks: legacy behaviours on by default that a VMM may turn off with
//! `KVM_CAP_DISABLE_QUIRKS2` (or the older `KVM_CAP_DISABLE_QUIRKS`). rkvm offers to turn
//! off only the quirks whose both behaviours it implements; the others stay on, as on a
//! KVM host that does not support disabling them.

use crate::uapi::kvm_cpuid_entry2;

/// `KVM_X86_QUIRK_MISC_ENABLE_NO_MWAIT`: on, IA32_MISC_ENABLE.MWAIT (bit 18) is plain
/// storage; off, it enables MONITOR/MWAIT and CPUID.1:ECX.MONITOR follows it.
pub(crate) const MISC_ENABLE_NO_MWAIT: u64 = 1 << 4;
/// `KVM_X86_QUIRK_FIX_HYPERCALL_INSN`: on, the other vendor's hypercall instruction
/// (VMMCALL on Intel) faults with #UD into the hypervisor, which rewrites it in guest
/// memory to the native one and lets the guest run it again; off, the guest gets the #UD.
pub(crate) const FIX_HYPERCALL_INSN: u64 = 1 << 5;
/// `KVM_X86_QUIRK_MWAIT_NEVER_UD_FAULTS`: on, MONITOR and MWAIT never fault (both run as
/// NOPs); off, they raise #UD unless the guest has MONITOR/MWAIT.
pub(crate) const MWAIT_NEVER_UD_FAULTS: u64 = 1 << 6;

/// What `KVM_CHECK_EXTENSION(KVM_CAP_DISABLE_QUIRKS2)` reports.
pub(crate) const SUPPORTED: u64 = MISC_ENABLE_NO_MWAIT | FIX_HYPERCALL_INSN | MWAIT_NEVER_UD_FAULTS;

/// IA32_MISC_ENABLE's ENABLE_MONITOR_FSM bit.
pub(crate) const MISC_ENABLE_MWAIT: u64 = 1 << 18;
/// CPUID.1:ECX: MONITOR/MWAIT and SSE3.
pub(crate) const LEAF1_ECX_MWAIT: u32 = 1 << 3;
pub(crate) const LEAF1_ECX_SSE3: u32 = 1 << 0;

/// A VM's disabled quirks.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Quirks(pub(crate) u64);

impl Quirks {
    /// Whether quirk `q` is in effect (not disabled).
    pub(crate) fn has(self, q: u64) -> bool {
        self.0 & q == 0
    }

    /// The MONITOR bit of CPUID leaf 1 while the guest runs: `Some` when the quirk that
    /// keeps it static is off (then IA32_MISC_ENABLE.MWAIT decides), `None` otherwise.
    pub(crate) fn cpuid_mwait(self, misc_enable: u64) -> Option<bool> {
        (!self.has(MISC_ENABLE_NO_MWAIT)).then_some(misc_enable & MISC_ENABLE_MWAIT != 0)
    }

    /// Whether the guest's MONITOR or MWAIT raises #UD (else it runs as a NOP).
    pub(crate) fn monitor_mwait_faults(
        self,
        misc_enable: u64,
        cpuid: &[kvm_cpuid_entry2],
        rt: super::cpuid::Runtime,
    ) -> bool {
        if self.has(MWAIT_NEVER_UD_FAULTS) {
            return false;
        }
        let enabled = if self.has(MISC_ENABLE_NO_MWAIT) {
            let [_, _, c, _] = super::cpuid::guest_cpuid(cpuid, 1, 0, rt);
            c & LEAF1_ECX_MWAIT != 0
        } else {
            misc_enable & MISC_ENABLE_MWAIT != 0
        };
        !enabled
    }
}

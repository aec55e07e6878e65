// SPDX-License-Identifier: GPL-2.0

//! The CPUID rkvm supports (`KVM_GET_SUPPORTED_CPUID`) and emulates
//! (`KVM_GET_EMULATED_CPUID`).
//!
//! The supported table is the host's CPUID masked, leaf by leaf, to the features a guest
//! can use under rkvm: instruction-set extensions that run natively in VMX non-root
//! operation with the XSAVE components rkvm switches, plus what rkvm emulates itself
//! (the hypervisor bit, x2APIC, the TSC-deadline timer, TSC_ADJUST, ARCH_CAPABILITIES,
//! KVM's signature leaf). Features that
//! need interception rkvm does not implement (PMU, PKU, SGX, PT, CET, AMX, SPEC_CTRL, LA57)
//! are absent. XSAVES is offered with no supervisor component (IA32_XSS stays 0).

use crate::sys::cpu;
use crate::uapi::{kvm_cpuid_entry2, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};
use kernel::prelude::*;

/// KVM's limit on entries in one CPUID table.
pub(crate) const MAX_ENTRIES: usize = 256;

/// Highest basic leaf rkvm reports.
const MAX_BASIC_LEAF: u32 = 0x1f;
/// Highest extended leaf rkvm reports.
const MAX_EXT_LEAF: u32 = 0x8000_0008;
/// KVM's paravirtual leaves.
pub(crate) const KVM_CPUID_SIGNATURE: u32 = 0x4000_0000;
pub(crate) const KVM_CPUID_FEATURES: u32 = 0x4000_0001;

const fn bits(list: &[u32]) -> u32 {
    let mut m = 0;
    let mut i = 0;
    while i < list.len() {
        m |= 1 << list[i];
        i += 1;
    }
    m
}

// CPUID.1:ECX. SSE3 PCLMULQDQ SSSE3 FMA CX16 PCID SSE4.1 SSE4.2 MOVBE POPCNT AES XSAVE AVX
// F16C RDRAND.
const LEAF1_ECX: u32 = bits(&[0, 1, 9, 12, 13, 17, 19, 20, 22, 23, 25, 26, 28, 29, 30]);
const LEAF1_ECX_OSXSAVE: u32 = 1 << 27;
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
// CPUID.1:ECX. x2APIC and the TSC-deadline timer: the in-kernel local APIC emulates both
// whatever the host has (KVM reports them the same way).
const LEAF1_ECX_EMULATED: u32 = (1 << 21) | (1 << 24);
// CPUID.1:EDX. FPU VME DE PSE TSC MSR PAE MCE CX8 APIC SEP MTRR PGE MCA CMOV PAT PSE36
// CLFLUSH MMX FXSR SSE SSE2 SS.
const LEAF1_EDX: u32 = bits(&[
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17, 19, 23, 24, 25, 26, 27,
]);
// CPUID.7.0:EBX. FSGSBASE BMI1 HLE AVX2 FDP_EXCPTN_ONLY SMEP BMI2 ERMS INVPCID RTM
// ZERO_FCS_FDS AVX512F AVX512DQ RDSEED ADX SMAP AVX512IFMA CLFLUSHOPT CLWB AVX512PF
// AVX512ER AVX512CD SHA AVX512BW AVX512VL.
const LEAF7_EBX: u32 = bits(&[
    0, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 16, 17, 18, 19, 20, 21, 23, 24, 26, 27, 28, 29, 30, 31,
]);
const LEAF7_EBX_TSC_ADJUST: u32 = 1 << 1;
const LEAF7_EBX_INVPCID: u32 = 1 << 10;
// CPUID.7.0:ECX. AVX512VBMI UMIP AVX512_VBMI2 GFNI VAES VPCLMULQDQ AVX512_VNNI
// AVX512_BITALG AVX512_VPOPCNTDQ CLDEMOTE MOVDIRI MOVDIR64B.
const LEAF7_ECX: u32 = bits(&[1, 2, 6, 8, 9, 10, 11, 12, 14, 25, 27, 28]);
const LEAF7_ECX_RDPID: u32 = 1 << 22;
// CPUID.7.0:EDX. AVX512_4VNNIW AVX512_4FMAPS FSRM AVX512_VP2INTERSECT MD_CLEAR SERIALIZE
// TSXLDTRK AVX512_FP16.
const LEAF7_EDX: u32 = bits(&[2, 3, 4, 8, 10, 14, 16, 23]);
const LEAF7_EDX_ARCH_CAPABILITIES: u32 = 1 << 29;
// CPUID.0xD.1:EAX. XSAVEOPT XSAVEC XGETBV1 (XSAVES added when usable).
const LEAFD1_EAX: u32 = bits(&[0, 1, 2]);
pub(crate) const LEAFD1_EAX_XSAVES: u32 = 1 << 3;
const LEAFD1_EAX_XSAVEC: u32 = 1 << 1;
// CPUID.0x80000001:ECX. LAHF_LM ABM MISALIGNSSE 3DNOWPREFETCH.
const EXT1_ECX: u32 = bits(&[0, 5, 7, 8]);
// CPUID.0x80000001:EDX. SYSCALL NX GBPAGES LM (RDTSCP added when usable).
const EXT1_EDX: u32 = bits(&[11, 20, 26, 29]);
const EXT1_EDX_RDTSCP: u32 = 1 << 27;
// CPUID.0x80000007:EDX. Invariant TSC.
const EXT7_EDX: u32 = 1 << 8;

/// XSAVE components a guest may enable: x87, SSE, AVX, and the three AVX-512 ones.
pub(crate) const SUPPORTED_XCR0: u64 = 0b1110_0111;

/// Leaves whose sub-leaf (ECX) matters.
fn is_indexed(leaf: u32) -> bool {
    matches!(
        leaf,
        4 | 7 | 0xb | 0xd | 0xf | 0x10 | 0x12 | 0x14 | 0x17 | 0x18 | 0x1d | 0x1e | 0x1f
    ) || leaf == 0x8000_001d
}

/// What the backend lets the guest use, for the few features that depend on it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct BackendCpuidCaps {
    /// RDTSCP (and so RDPID and IA32_TSC_AUX) work in the guest.
    pub(crate) rdtscp: bool,
    /// INVPCID works in the guest.
    pub(crate) invpcid: bool,
    /// XSAVES and XRSTORS work in the guest, with the guest's IA32_XSS (always 0: rkvm
    /// supports no supervisor state component) loaded while it runs.
    pub(crate) xsaves: bool,
}

/// The host's XCR0 (0 without OSXSAVE).
pub(crate) fn host_xcr0() -> u64 {
    HOST_XCR0.load(core::sync::atomic::Ordering::Relaxed)
}

/// The host's XCR0 (KVM's `kvm_host.xcr0`). Captured once at module init: while a vCPU
/// is loaded XCR0 holds the guest's value, so reading it then would be wrong.
static HOST_XCR0: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Records the host's XCR0; called by `kvm_arch_init()` before anything uses it.
pub(crate) fn capture_host_xcr0() {
    let v = if cpu::cpuid(1, 0)[2] & LEAF1_ECX_OSXSAVE == 0 {
        0
    } else {
        cpu::regs::xgetbv0()
    };
    HOST_XCR0.store(v, core::sync::atomic::Ordering::Relaxed);
    let xss = if host_has_xsaves() {
        crate::sys::msr::read(crate::sys::msr::index::IA32_XSS).unwrap_or(0)
    } else {
        0
    };
    HOST_XSS.store(xss, core::sync::atomic::Ordering::Relaxed);
}

/// The host's IA32_XSS (KVM's `kvm_host.xss`; 0 without XSAVES), read once at module
/// init: the kernel sets it while it boots and never changes it.
pub(crate) fn host_xss() -> u64 {
    HOST_XSS.load(core::sync::atomic::Ordering::Relaxed)
}

static HOST_XSS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Whether this CPU has XSAVES, with the kernel using XSAVE (CR4.OSXSAVE).
pub(crate) fn host_has_xsaves() -> bool {
    host_xcr0() != 0 && cpu::cpuid(0xd, 1)[0] & LEAFD1_EAX_XSAVES != 0
}

/// The XCR0 bits a guest may set on this host.
pub(crate) fn supported_xcr0() -> u64 {
    host_xcr0() & SUPPORTED_XCR0
}

/// Bytes of an XSAVE (standard format) area holding the components in `xcr0`.
pub(crate) fn xsave_size(xcr0: u64) -> u32 {
    let mut size = 512 + 64;
    for c in 2..64u32 {
        if xcr0 & (1 << c) != 0 {
            let [eax, ebx, _, _] = cpu::cpuid(0xd, c);
            size = size.max(eax.saturating_add(ebx));
        }
    }
    size
}

/// Bytes of a compacted XSAVE area (XSAVEC, XSAVES) holding the components in `mask`:
/// each one after the last, on a 64-byte boundary where CPUID.0xD.i:ECX bit 1 asks.
pub(crate) fn xsave_size_compacted(mask: u64) -> u32 {
    let mut size: u32 = 512 + 64;
    for c in 2..64u32 {
        if mask & (1 << c) != 0 {
            let [eax, _, ecx, _] = cpu::cpuid(0xd, c);
            if ecx & 2 != 0 {
                size = size.saturating_add(63) & !63;
            }
            size = size.saturating_add(eax);
        }
    }
    size
}

fn entry(leaf: u32, sub: u32) -> kvm_cpuid_entry2 {
    let [eax, ebx, ecx, edx] = cpu::cpuid(leaf, sub);
    kvm_cpuid_entry2 {
        function: leaf,
        index: sub,
        flags: if is_indexed(leaf) {
            KVM_CPUID_FLAG_SIGNIFCANT_INDEX
        } else {
            0
        },
        eax,
        ebx,
        ecx,
        edx,
        ..Default::default()
    }
}

/// A growable CPUID table with KVM's capacity limit.
pub(crate) struct Table {
    pub(crate) entries: KVec<kvm_cpuid_entry2>,
}

impl Table {
    /// Adds an entry within the room reserved up front: the table is built with
    /// preemption off (every CPUID on one CPU), where allocating could sleep.
    fn push(&mut self, e: kvm_cpuid_entry2) -> Result {
        if self.entries.len() >= MAX_ENTRIES {
            return Err(E2BIG);
        }
        self.entries.push_within_capacity(e).map_err(|_| E2BIG)
    }
}

/// Builds `KVM_GET_SUPPORTED_CPUID`'s table for this host.
pub(crate) fn supported(caps: BackendCpuidCaps) -> Result<Table> {
    let mut t = Table {
        entries: KVec::with_capacity(MAX_ENTRIES, GFP_KERNEL)?,
    };
    let _pin = cpu::PreemptGuard::new(); // every CPUID below on one CPU
    let xcr0 = supported_xcr0();
    let max = cpu::cpuid(0, 0)[0].min(MAX_BASIC_LEAF);
    for leaf in 0..=max {
        match leaf {
            0 => {
                let mut e = entry(0, 0);
                e.eax = max;
                t.push(e)?;
            }
            1 => {
                let mut e = entry(1, 0);
                e.ecx = e.ecx & LEAF1_ECX | LEAF1_ECX_EMULATED | LEAF1_ECX_HYPERVISOR;
                e.edx &= LEAF1_EDX;
                t.push(e)?;
            }
            2 => t.push(entry(2, 0))?,
            4 => {
                // Deterministic cache parameters: one sub-leaf per cache, until type 0.
                for sub in 0..64 {
                    let e = entry(4, sub);
                    let last = e.eax & 0x1f == 0;
                    t.push(e)?;
                    if last {
                        break;
                    }
                }
            }
            7 => {
                let mut e = entry(7, 0);
                e.eax = 0; // only sub-leaf 0
                e.ebx = e.ebx & LEAF7_EBX | LEAF7_EBX_TSC_ADJUST;
                if !caps.invpcid {
                    e.ebx &= !LEAF7_EBX_INVPCID;
                }
                let mut ecx = e.ecx & LEAF7_ECX;
                if caps.rdtscp {
                    ecx |= e.ecx & LEAF7_ECX_RDPID;
                }
                e.ecx = ecx;
                e.edx = e.edx & LEAF7_EDX | LEAF7_EDX_ARCH_CAPABILITIES;
                t.push(e)?;
            }
            0xb | 0x1f => {
                // Topology: sub-leaves until level type 0, passed through for the VMM to
                // rewrite.
                for sub in 0..8 {
                    let e = entry(leaf, sub);
                    let last = (e.ecx >> 8) & 0xff == 0;
                    t.push(e)?;
                    if last {
                        break;
                    }
                }
            }
            0xd => {
                let mut e = entry(0xd, 0);
                e.eax = xcr0 as u32;
                e.edx = (xcr0 >> 32) as u32;
                e.ebx = xsave_size(xcr0);
                e.ecx = xsave_size(xcr0);
                t.push(e)?;
                let mut e = entry(0xd, 1);
                e.eax &= LEAFD1_EAX | if caps.xsaves { LEAFD1_EAX_XSAVES } else { 0 };
                // EBX, the compacted size of every supported component (with XSAVEC or
                // XSAVES); ECX:EDX, the IA32_XSS bits rkvm supports: none.
                e.ebx = if e.eax & (LEAFD1_EAX_XSAVEC | LEAFD1_EAX_XSAVES) != 0 {
                    xsave_size_compacted(xcr0)
                } else {
                    0
                };
                e.ecx = 0;
                e.edx = 0;
                t.push(e)?;
                for c in 2..64u32 {
                    if xcr0 & (1 << c) != 0 {
                        let mut e = entry(0xd, c);
                        e.edx = 0;
                        t.push(e)?;
                    }
                }
            }
            // Leaves rkvm has nothing to offer for (thermal/power, PMU, RDT, SGX, PT, ...)
            // are reported as zeros, as KVM does for leaves it does not virtualize.
            _ => t.push(kvm_cpuid_entry2 {
                function: leaf,
                flags: if is_indexed(leaf) {
                    KVM_CPUID_FLAG_SIGNIFCANT_INDEX
                } else {
                    0
                },
                ..Default::default()
            })?,
        }
    }

    // KVM's paravirtual leaves: the signature, and the PV features rkvm has.
    t.push(kvm_cpuid_entry2 {
        function: KVM_CPUID_SIGNATURE,
        eax: KVM_CPUID_FEATURES,
        ebx: u32::from_le_bytes(*b"KVMK"),
        ecx: u32::from_le_bytes(*b"VMKV"),
        edx: u32::from_le_bytes(*b"M\0\0\0"),
        ..Default::default()
    })?;
    // kvmclock (both MSR pairs); steal time when the scheduler keeps run delays.
    let mut pv =
        1 << crate::uapi::KVM_FEATURE_CLOCKSOURCE | 1 << crate::uapi::KVM_FEATURE_CLOCKSOURCE2;
    if cpu::sched_info_on() {
        pv |= 1 << crate::uapi::KVM_FEATURE_STEAL_TIME;
    }
    t.push(kvm_cpuid_entry2 {
        function: KVM_CPUID_FEATURES,
        eax: pv,
        ..Default::default()
    })?;

    let ext_max = cpu::cpuid(0x8000_0000, 0)[0].min(MAX_EXT_LEAF);
    for leaf in 0x8000_0000..=ext_max {
        let mut e = entry(leaf, 0);
        match leaf {
            0x8000_0000 => e.eax = ext_max,
            0x8000_0001 => {
                e.ecx &= EXT1_ECX;
                let mut edx = e.edx & EXT1_EDX;
                if caps.rdtscp {
                    edx |= e.edx & EXT1_EDX_RDTSCP;
                }
                e.edx = edx;
            }
            // Brand string and caches: as the host.
            0x8000_0002..=0x8000_0006 => {}
            0x8000_0007 => {
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx &= EXT7_EDX;
            }
            0x8000_0008 => {
                // Physical and linear address sizes only.
                e.eax &= 0xffff;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            _ => {
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
        }
        t.push(e)?;
    }
    Ok(t)
}

/// Builds `KVM_GET_EMULATED_CPUID`'s table: the features rkvm emulates in software for
/// guests whose host lacks them. rkvm emulates none, so the table is empty.
pub(crate) fn emulated() -> Table {
    Table {
        entries: KVec::new(),
    }
}

/// Guest state that CPUID reports at run time (KVM's `kvm_update_cpuid_runtime`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Runtime {
    pub(crate) cr4: u64,
    pub(crate) xcr0: u64,
    pub(crate) apic_base: u64,
    /// CPUID.1:ECX.MONITOR when IA32_MISC_ENABLE drives it (see [`super::quirks`]).
    pub(crate) mwait: Option<bool>,
}

impl Runtime {
    /// For questions about the features userspace gave the guest, not its current state.
    pub(crate) const FEATURES: Self = Self {
        cr4: 0,
        xcr0: 1,
        apic_base: 0,
        mwait: None,
    };
}

fn find(table: &[kvm_cpuid_entry2], leaf: u32, sub: u32) -> Option<&kvm_cpuid_entry2> {
    table.iter().find(|e| {
        e.function == leaf && (e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX == 0 || e.index == sub)
    })
}

/// CPUID as the guest sees it, from the table userspace set (KVM_SET_CPUID2). A leaf
/// above the maximum returns the highest basic leaf, as Intel CPUs do.
pub(crate) fn guest_cpuid(
    table: &[kvm_cpuid_entry2],
    leaf: u32,
    sub: u32,
    rt: Runtime,
) -> [u32; 4] {
    let e = find(table, leaf, sub).or_else(|| {
        let class_max = |base: u32| find(table, base, 0).map(|e| e.eax);
        let in_range = if leaf >= 0x8000_0000 {
            class_max(0x8000_0000).is_some_and(|m| leaf <= m)
        } else if (0x4000_0000..0x5000_0000).contains(&leaf) {
            true
        } else {
            class_max(0).is_some_and(|m| leaf <= m)
        };
        if in_range {
            None
        } else {
            class_max(0).and_then(|m| find(table, m, sub))
        }
    });
    e.map_or([0; 4], |e| runtime_view(e, rt))
}

/// An entry as the guest sees it now: the bits KVM keeps in step with vCPU state (as
/// its `kvm_update_cpuid_runtime`), which `KVM_GET_CPUID2` reports too.
pub(crate) fn runtime_view(e: &kvm_cpuid_entry2, rt: Runtime) -> [u32; 4] {
    let mut r = [e.eax, e.ebx, e.ecx, e.edx];
    match e.function {
        1 => {
            // OSXSAVE mirrors CR4.OSXSAVE; the APIC bit mirrors IA32_APIC_BASE.EN.
            r[2] = r[2] & !LEAF1_ECX_OSXSAVE
                | if rt.cr4 & (1 << 18) != 0 {
                    LEAF1_ECX_OSXSAVE
                } else {
                    0
                };
            r[3] = r[3] & !(1 << 9)
                | if rt.apic_base & (1 << 11) != 0 {
                    1 << 9
                } else {
                    0
                };
            if let Some(on) = rt.mwait {
                let bit = super::quirks::LEAF1_ECX_MWAIT;
                r[2] = r[2] & !bit | if on { bit } else { 0 };
            }
        }
        // Bytes needed for the components XCR0 enables now: in the standard format, and
        // (sub-leaf 1, when the guest has XSAVEC or XSAVES) in the compacted one, with
        // IA32_XSS's components, none here.
        0xd if e.index == 0 => r[1] = xsave_size(rt.xcr0),
        0xd if e.index == 1 && r[0] & (LEAFD1_EAX_XSAVEC | LEAFD1_EAX_XSAVES) != 0 => {
            r[1] = xsave_size_compacted(rt.xcr0);
        }
        _ => {}
    }
    r
}

/// Whether the guest's CPUID offers XSAVES (CPUID.0xD.1:EAX bit 3).
pub(crate) fn guest_has_xsaves(table: &[kvm_cpuid_entry2]) -> bool {
    find(table, 0xd, 1).is_some_and(|e| e.eax & LEAFD1_EAX_XSAVES != 0)
}

/// Whether the guest's CPUID offers RDTSCP (leaf 0x8000_0001 EDX[27]) or RDPID (leaf 7
/// ECX[22]), the two instructions that read IA32_TSC_AUX.
pub(crate) fn guest_has_rdtscp_or_rdpid(table: &[kvm_cpuid_entry2]) -> bool {
    find(table, 0x8000_0001, 0).is_some_and(|e| e.edx & (1 << 27) != 0)
        || find(table, 7, 0).is_some_and(|e| e.ecx & (1 << 22) != 0)
}

/// What a backend's controls follow in the guest's CPUID, worked out once per
/// KVM_SET_CPUID2 rather than at every entry.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct GuestCaps {
    pub(crate) xsaves: bool,
    pub(crate) rdtscp_or_rdpid: bool,
}

impl GuestCaps {
    pub(crate) fn of(table: &[kvm_cpuid_entry2]) -> Self {
        Self {
            xsaves: guest_has_xsaves(table),
            rdtscp_or_rdpid: guest_has_rdtscp_or_rdpid(table),
        }
    }
}

/// The XCR0 bits the guest's CPUID allows (leaf 0xD), within what rkvm supports.
pub(crate) fn guest_supported_xcr0(table: &[kvm_cpuid_entry2]) -> u64 {
    find(table, 0xd, 0).map_or(1, |e| {
        (u64::from(e.edx) << 32 | u64::from(e.eax)) & supported_xcr0()
    }) | 1
}

/// Whether the guest's CPUID says AMD or Hygon (KVM's `guest_cpuid_is_amd_compatible`).
pub(crate) fn guest_is_amd_compatible(table: &[kvm_cpuid_entry2]) -> bool {
    find(table, 0, 0).is_some_and(|e| {
        let v = [e.ebx, e.edx, e.ecx];
        v == [0x6874_7541, 0x6974_6e65, 0x444d_4163] // "AuthenticAMD"
            || v == [0x6f67_7948, 0x6e65_476e, 0x656e_6975] // "HygonGenuine"
    })
}

/// Architectural validity of an XCR0 value within `allowed`.
pub(crate) fn xcr0_valid(v: u64, allowed: u64) -> bool {
    const X87: u64 = 1;
    const SSE: u64 = 2;
    const AVX: u64 = 4;
    const AVX512: u64 = 0b1110_0000;
    v & !allowed == 0
        && v & X87 != 0
        && (v & AVX == 0 || v & SSE != 0)
        && (v & AVX512 == 0 || v & AVX512 == AVX512 && v & AVX != 0)
}

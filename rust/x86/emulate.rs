// SPDX-License-Identifier: GPL-2.0

//! Emulation on the software vCPU state, in process context: guest page walks, the
//! instruction decoder for MMIO and string I/O, and control/debug register and MSR
//! accesses. Nothing here runs inside a VMX window, so it may read guest memory (which may
//! fault and sleep).

use super::state::{cr0, cr4, efer, rflags, Exception, VcpuState, CS, DS, ES, SS};
use kernel::prelude::*;

/// Guest memory access by guest-physical address.
pub(crate) trait GuestMem {
    /// Reads `buf.len()` bytes at `gpa` (not crossing a page).
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result;
    /// Writes `data` at `gpa` (not crossing a page).
    fn write(&self, gpa: u64, data: &[u8]) -> Result;
    /// Whether a memslot backs `gpa` (else it is MMIO, or nothing).
    fn backed(&self, gpa: u64) -> bool;
}

/// A fault the guest must see.
pub(crate) type Fault = Exception;

pub(crate) fn gp(code: u32) -> Fault {
    Exception {
        vector: 13,
        error_code: Some(code),
        injected: false,
        payload: None,
    }
}

pub(crate) fn db() -> Fault {
    Exception {
        vector: 1,
        error_code: None,
        injected: false,
        payload: None,
    }
}

pub(crate) fn ud() -> Fault {
    Exception {
        vector: 6,
        error_code: None,
        injected: false,
        payload: None,
    }
}

fn pf(addr: u64, code: u32) -> Fault {
    Exception {
        vector: 14,
        error_code: Some(code),
        injected: false,
        payload: Some(addr),
    }
}

/// Why an emulation step failed: a guest-visible fault, or something for userspace.
pub(crate) enum EmuError {
    Fault(Fault),
    /// Not emulated (KVM_EXIT_INTERNAL_ERROR / emulation).
    Unsupported,
    /// A host error (e.g. -EFAULT on guest memory the VMM unmapped).
    Host(Error),
}

impl From<Error> for EmuError {
    fn from(e: Error) -> Self {
        Self::Host(e)
    }
}

// ---- Guest page walk -------------------------------------------------------------------

/// Translates a guest linear address with the guest's paging mode. `write`/`user`/`fetch`
/// describe the access (for protection checks and the #PF error code).
pub(crate) fn translate(
    s: &VcpuState,
    mem: &dyn GuestMem,
    gva: u64,
    write: bool,
    user: bool,
) -> core::result::Result<u64, EmuError> {
    if !s.paging() {
        return Ok(gva & 0xffff_ffff);
    }
    let wp = s.cr0 & cr0::WP != 0;
    let (mut table, levels, entry_size): (u64, u32, u64) = if s.long_mode() {
        (s.cr3 & 0x000f_ffff_ffff_f000, 4, 8)
    } else if s.cr4 & cr4::PAE != 0 {
        let i = ((gva >> 30) & 3) as usize;
        let pdpte = s.pdptrs.get(i).copied().unwrap_or(0);
        if pdpte & 1 == 0 {
            return Err(EmuError::Fault(pf(gva, pf_code(false, write, user))));
        }
        (pdpte & 0x000f_ffff_ffff_f000, 2, 8)
    } else {
        (s.cr3 & 0xffff_f000, 2, 4)
    };
    let mut allow_write = true;
    let mut allow_user = true;
    for level in (1..=levels).rev() {
        let shift = 12 + if entry_size == 8 { 9 } else { 10 } * (level - 1);
        let mask = if entry_size == 8 { 0x1ff } else { 0x3ff };
        let idx = (gva >> shift) & mask;
        let mut buf = [0u8; 8];
        let n = entry_size as usize;
        let entry_gpa = table + idx * entry_size;
        if !mem.backed(entry_gpa) {
            // A paging structure outside guest memory: the walk fails as for a
            // not-present entry (KVM's walker does the same).
            return Err(EmuError::Fault(pf(gva, pf_code(false, write, user))));
        }
        if let Err(e) = mem.read(entry_gpa, buf.get_mut(..n).ok_or(EINVAL)?) {
            // The memslot went meanwhile: the same as never there.
            if !mem.backed(entry_gpa) {
                return Err(EmuError::Fault(pf(gva, pf_code(false, write, user))));
            }
            return Err(e.into());
        }
        let e = u64::from_le_bytes(buf);
        if e & 1 == 0 {
            return Err(EmuError::Fault(pf(gva, pf_code(false, write, user))));
        }
        allow_write &= e & 2 != 0;
        allow_user &= e & 4 != 0;
        let large = level > 1 && e & 0x80 != 0 && (level <= 3 || entry_size == 4);
        if level == 1 || large {
            if (write && !allow_write && (user || wp)) || (user && !allow_user) {
                return Err(EmuError::Fault(pf(gva, pf_code(true, write, user))));
            }
            let page_bits = shift;
            let base = if entry_size == 4 && large {
                // 4 MiB page (PSE): bits 31:22, plus PSE-36 high bits.
                (e & 0xffc0_0000) | ((e >> 13) & 0xff) << 32
            } else {
                e & 0x000f_ffff_ffff_f000 & !((1u64 << page_bits) - 1)
            };
            return Ok(base | (gva & ((1u64 << page_bits) - 1)));
        }
        table = if entry_size == 8 {
            e & 0x000f_ffff_ffff_f000
        } else {
            e & 0xffff_f000
        };
    }
    Err(EmuError::Unsupported)
}

fn pf_code(present: bool, write: bool, user: bool) -> u32 {
    u32::from(present) | u32::from(write) << 1 | u32::from(user) << 2
}

/// Reads guest virtual memory, page by page.
pub(crate) fn read_virt(
    s: &VcpuState,
    mem: &dyn GuestMem,
    mut gva: u64,
    buf: &mut [u8],
) -> core::result::Result<(), EmuError> {
    let user = s.cpl() == 3;
    let mut done = 0;
    while done < buf.len() {
        let in_page = (4096 - (gva & 0xfff)) as usize;
        let n = in_page.min(buf.len() - done);
        let gpa = translate(s, mem, gva, false, user)?;
        mem.read(gpa, buf.get_mut(done..done + n).ok_or(EINVAL)?)?;
        done += n;
        gva = gva.wrapping_add(n as u64);
    }
    Ok(())
}

/// Writes guest virtual memory, page by page.
pub(crate) fn write_virt(
    s: &VcpuState,
    mem: &dyn GuestMem,
    mut gva: u64,
    data: &[u8],
) -> core::result::Result<(), EmuError> {
    let user = s.cpl() == 3;
    let mut done = 0;
    while done < data.len() {
        let in_page = (4096 - (gva & 0xfff)) as usize;
        let n = in_page.min(data.len() - done);
        let gpa = translate(s, mem, gva, true, user)?;
        mem.write(gpa, data.get(done..done + n).ok_or(EINVAL)?)?;
        done += n;
        gva = gva.wrapping_add(n as u64);
    }
    Ok(())
}

/// Linear address of `seg:off` (segment bases apply outside 64-bit mode, and to FS/GS).
pub(crate) fn linear(s: &VcpuState, seg: usize, off: u64, addr_size: u8) -> u64 {
    let off = match addr_size {
        2 => off & 0xffff,
        4 => off & 0xffff_ffff,
        _ => off,
    };
    let base = s.segs.get(seg).map_or(0, |x| x.base);
    if s.cs_long() && seg < 4 {
        off
    } else if s.cs_long() {
        base.wrapping_add(off)
    } else {
        base.wrapping_add(off) & 0xffff_ffff
    }
}

/// The guest's linear RIP.
pub(crate) fn linear_rip(s: &VcpuState) -> u64 {
    linear(s, CS, s.regs.rip, if s.cs_long() { 8 } else { 4 })
}

// ---- GPR access by number -----------------------------------------------------------

/// Reads GPR `n` (x86 encoding) at `size` bytes; with `high8`, AH/CH/DH/BH for 4..7.
pub(crate) fn gpr(s: &VcpuState, n: u8, size: u8, high8: bool) -> u64 {
    if size == 1 && high8 && (4..8).contains(&n) {
        return (gpr64(s, n - 4) >> 8) & 0xff;
    }
    gpr64(s, n) & size_mask(size)
}

pub(crate) fn size_mask(size: u8) -> u64 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

pub(crate) fn gpr64(s: &VcpuState, n: u8) -> u64 {
    let r = &s.regs;
    match n & 15 {
        0 => r.rax,
        1 => r.rcx,
        2 => r.rdx,
        3 => r.rbx,
        4 => r.rsp,
        5 => r.rbp,
        6 => r.rsi,
        7 => r.rdi,
        8 => r.r8,
        9 => r.r9,
        10 => r.r10,
        11 => r.r11,
        12 => r.r12,
        13 => r.r13,
        14 => r.r14,
        _ => r.r15,
    }
}

fn gpr64_mut(s: &mut VcpuState, n: u8) -> &mut u64 {
    let r = &mut s.regs;
    match n & 15 {
        0 => &mut r.rax,
        1 => &mut r.rcx,
        2 => &mut r.rdx,
        3 => &mut r.rbx,
        4 => &mut r.rsp,
        5 => &mut r.rbp,
        6 => &mut r.rsi,
        7 => &mut r.rdi,
        8 => &mut r.r8,
        9 => &mut r.r9,
        10 => &mut r.r10,
        11 => &mut r.r11,
        12 => &mut r.r12,
        13 => &mut r.r13,
        14 => &mut r.r14,
        _ => &mut r.r15,
    }
}

/// Writes GPR `n` with x86 semantics: 8/16-bit writes merge, 32-bit writes zero-extend.
pub(crate) fn set_gpr(s: &mut VcpuState, n: u8, size: u8, high8: bool, v: u64) {
    if size == 1 && high8 && (4..8).contains(&n) {
        let r = gpr64_mut(s, n - 4);
        *r = *r & !0xff00 | (v & 0xff) << 8;
        return;
    }
    let r = gpr64_mut(s, n);
    *r = match size {
        1 => *r & !0xff | v & 0xff,
        2 => *r & !0xffff | v & 0xffff,
        4 => v & 0xffff_ffff,
        _ => v,
    };
}

// ---- Instruction decoding (MMIO and string I/O) -------------------------------------

/// A decoded memory access to emulate against MMIO.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MemOp {
    /// Bytes accessed.
    pub(crate) size: u8,
    pub(crate) write: bool,
    /// What is written (for writes).
    pub(crate) value: u64,
    /// Where a read goes: register number, destination size, high-byte register,
    /// sign extension.
    pub(crate) dest: Option<(u8, u8, bool, bool)>,
    /// Instruction length.
    pub(crate) len: u8,
    /// A string store (STOS): RDI (and RCX with REP) advance.
    pub(crate) stos: bool,
}

struct Prefixes {
    opsize: bool,
    addrsize: bool,
    rex: u8,
    seg: Option<usize>,
    rep: bool,
    len: usize,
}

fn prefixes(code: &[u8]) -> Prefixes {
    let mut p = Prefixes {
        opsize: false,
        addrsize: false,
        rex: 0,
        seg: None,
        rep: false,
        len: 0,
    };
    for &b in code.iter().take(14) {
        match b {
            0x66 => p.opsize = true,
            0x67 => p.addrsize = true,
            0xf2 | 0xf3 => p.rep = true,
            0xf0 => {}
            0x26 => p.seg = Some(ES),
            0x2e => p.seg = Some(CS),
            0x36 => p.seg = Some(SS),
            0x3e => p.seg = Some(DS),
            0x64 => p.seg = Some(super::state::FS),
            0x65 => p.seg = Some(super::state::GS),
            _ => break,
        }
        p.len += 1;
    }
    p
}

/// Length of a ModRM operand (ModRM byte, SIB, displacement) for `addr_size`.
fn modrm_len(code: &[u8], addr_size: u8) -> Option<usize> {
    let m = *code.first()?;
    let md = m >> 6;
    let rm = m & 7;
    if md == 3 {
        return Some(1);
    }
    if addr_size == 2 {
        return Some(match md {
            0 if rm == 6 => 3,
            0 => 1,
            1 => 2,
            _ => 3,
        });
    }
    let mut len = 1;
    let mut base_is_bp = false;
    if rm == 4 {
        let sib = *code.get(1)?;
        len += 1;
        base_is_bp = sib & 7 == 5;
    }
    len += match md {
        0 if rm == 5 || base_is_bp => 4,
        0 => 0,
        1 => 1,
        _ => 4,
    };
    Some(len)
}

/// Decodes the instruction in `code` that accessed MMIO. Covers the moves, zero/sign
/// extensions and stores guests use on device memory.
pub(crate) fn decode_mmio(s: &VcpuState, code: &[u8]) -> Option<MemOp> {
    let p = prefixes(code);
    let mut i = p.len;
    let long = s.cs_long();
    let mut rex = 0;
    if long {
        if let Some(&b) = code.get(i) {
            if b & 0xf0 == 0x40 {
                rex = b;
                i += 1;
            }
        }
    }
    let _ = p.rex;
    let rex_w = rex & 8 != 0;
    let rex_r = (rex & 4) << 1;
    let def = s.cs_size();
    let opsize = if rex_w {
        8
    } else if def == 8 {
        if p.opsize {
            2
        } else {
            4
        }
    } else if p.opsize {
        6 - def
    } else {
        def
    };
    let addr_size = if long {
        if p.addrsize {
            4
        } else {
            8
        }
    } else if p.addrsize {
        6 - def.min(4)
    } else {
        def.min(4)
    };
    let high8 = rex == 0;
    let op = *code.get(i)?;
    i += 1;
    let reg_of = |m: u8| ((m >> 3) & 7) | rex_r;
    let with_modrm = |i: usize| -> Option<(u8, usize)> {
        let m = *code.get(i)?;
        Some((m, i + modrm_len(code.get(i..)?, addr_size)?))
    };
    let op_from = |size: u8, write: bool, value: u64, dest, end: usize| MemOp {
        size,
        write,
        value,
        dest,
        len: end as u8,
        stos: false,
    };
    match op {
        // MOV r/m8, r8 / MOV r/m, r
        0x88 | 0x89 => {
            let (m, end) = with_modrm(i)?;
            let size = if op == 0x88 { 1 } else { opsize };
            let r = reg_of(m);
            Some(op_from(size, true, gpr(s, r, size, high8), None, end))
        }
        // MOV r8, r/m8 / MOV r, r/m
        0x8a | 0x8b => {
            let (m, end) = with_modrm(i)?;
            let size = if op == 0x8a { 1 } else { opsize };
            Some(op_from(
                size,
                false,
                0,
                Some((reg_of(m), size, high8, false)),
                end,
            ))
        }
        // MOV r/m8, imm8 / MOV r/m, imm
        0xc6 | 0xc7 => {
            let (_, end) = with_modrm(i)?;
            let size = if op == 0xc6 { 1 } else { opsize };
            let isz = usize::from(size.min(4));
            let mut b = [0u8; 8];
            b.get_mut(..isz)?.copy_from_slice(code.get(end..end + isz)?);
            let mut v = u64::from_le_bytes(b);
            if size == 8 && v & 0x8000_0000 != 0 {
                v |= 0xffff_ffff_0000_0000;
            }
            Some(op_from(size, true, v, None, end + isz))
        }
        // MOV AL/eAX, moffs and back.
        0xa0..=0xa3 => {
            let size = if op & 1 == 0 { 1 } else { opsize };
            let end = i + usize::from(addr_size);
            if op < 0xa2 {
                Some(op_from(size, false, 0, Some((0, size, false, false)), end))
            } else {
                Some(op_from(size, true, gpr(s, 0, size, false), None, end))
            }
        }
        // STOS (one iteration).
        0xaa | 0xab => {
            let size = if op == 0xaa { 1 } else { opsize };
            Some(MemOp {
                stos: true,
                ..op_from(size, true, gpr(s, 0, size, false), None, i)
            })
        }
        0x0f => {
            let op2 = *code.get(i)?;
            i += 1;
            match op2 {
                // MOVZX / MOVSX r, r/m8 or r/m16
                0xb6 | 0xb7 | 0xbe | 0xbf => {
                    let (m, end) = with_modrm(i)?;
                    let src = if op2 & 1 == 0 { 1 } else { 2 };
                    let sign = op2 >= 0xbe;
                    Some(op_from(
                        src,
                        false,
                        0,
                        Some((reg_of(m), opsize, false, sign)),
                        end,
                    ))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// Completes an MMIO read into its destination register.
pub(crate) fn complete_mmio_read(s: &mut VcpuState, op: &MemOp, data: u64) {
    if let Some((r, dsize, high8, sign)) = op.dest {
        let mut v = data & size_mask(op.size);
        // Sign extension from a narrower operand (1, 2 or 4 bytes; wider is already full).
        if sign && (1..8).contains(&op.size) {
            let shift = 64 - u32::from(op.size) * 8;
            v = ((v << shift) as i64 >> shift) as u64;
        }
        set_gpr(s, r, dsize, high8, v);
    }
}

/// Decoded INS/OUTS: address size, segment of the source (OUTS), REP.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StringIo {
    pub(crate) addr_size: u8,
    pub(crate) seg: usize,
    pub(crate) rep: bool,
}

/// Decodes the prefixes of INS/OUTS.
pub(crate) fn decode_string_io(s: &VcpuState, code: &[u8]) -> StringIo {
    let p = prefixes(code);
    let def = s.cs_size();
    let addr_size = if s.cs_long() {
        if p.addrsize {
            4
        } else {
            8
        }
    } else if p.addrsize {
        6 - def.min(4)
    } else {
        def.min(4)
    };
    StringIo {
        addr_size,
        seg: p.seg.unwrap_or(DS),
        rep: p.rep,
    }
}

// ---- Control and debug registers -----------------------------------------------------

/// CR4 bits a guest may set under rkvm, given its CPUID.
pub(crate) fn cr4_valid_bits(cpuid: &[crate::uapi::kvm_cpuid_entry2]) -> u64 {
    let rt = super::cpuid::Runtime::FEATURES;
    let [_, _, c1, d1] = super::cpuid::guest_cpuid(cpuid, 1, 0, rt);
    let [_, b7, c7, _] = super::cpuid::guest_cpuid(cpuid, 7, 0, rt);
    // Features the host CPU lacks stay reserved whatever the guest's CPUID claims: the
    // CPU would refuse them at VM entry (KVM's reserved CR4 bits also follow its own
    // capabilities).
    let [_, _, host_c1, _] = crate::sys::cpu::cpuid(1, 0);
    let host_b7 = if crate::sys::cpu::cpuid(0, 0)[0] >= 7 {
        crate::sys::cpu::cpuid(7, 0)[1]
    } else {
        0
    };
    let (c1, b7) = (c1 & host_c1, b7 & host_b7);
    let mut v = cr4::VME
        | cr4::PVI
        | cr4::TSD
        | cr4::DE
        | cr4::PSE
        | cr4::PAE
        | cr4::MCE
        | cr4::PGE
        | cr4::PCE
        | cr4::OSFXSR
        | cr4::OSXMMEXCPT;
    if c1 & (1 << 26) != 0 {
        v |= cr4::OSXSAVE;
    }
    if c1 & (1 << 17) != 0 {
        v |= cr4::PCIDE;
    }
    if b7 & 1 != 0 {
        v |= cr4::FSGSBASE;
    }
    if b7 & (1 << 7) != 0 {
        v |= cr4::SMEP;
    }
    if b7 & (1 << 20) != 0 {
        v |= cr4::SMAP;
    }
    if c7 & (1 << 2) != 0 {
        v |= cr4::UMIP;
    }
    let _ = d1;
    v
}

/// What a control-register change requires of the caller.
pub(crate) struct CrEffect {
    /// PAE paging was (re)entered: the PDPTRs must be loaded from guest memory.
    pub(crate) load_pdptrs: bool,
    /// A change that invalidates the guest's TLB.
    pub(crate) flush: bool,
}

/// MOV to CR0 (KVM's `kvm_set_cr0` checks).
pub(crate) fn set_cr0(s: &mut VcpuState, v: u64) -> core::result::Result<CrEffect, Fault> {
    if v >> 32 != 0
        || (v & cr0::NW != 0 && v & cr0::CD == 0)
        || (v & cr0::PG != 0 && v & cr0::PE == 0)
    {
        return Err(gp(0));
    }
    let v = (v | cr0::ET) & cr0::VALID;
    let old = s.cr0;
    if s.efer & efer::LME != 0 && old & cr0::PG == 0 && v & cr0::PG != 0 {
        if s.cr4 & cr4::PAE == 0 || s.segs[CS].l != 0 {
            return Err(gp(0));
        }
        s.efer |= efer::LMA;
    }
    if v & cr0::PG == 0 && (s.cs_long() || s.cr4 & cr4::PCIDE != 0) {
        return Err(gp(0));
    }
    if v & cr0::PG == 0 && s.long_mode() {
        s.efer &= !efer::LMA;
    }
    s.cr0 = v;
    let pg_changed = (old ^ v) & (cr0::PG | cr0::WP | cr0::PE | cr0::CD | cr0::NW) != 0;
    Ok(CrEffect {
        load_pdptrs: pg_changed && s.pae_paging(),
        flush: pg_changed,
    })
}

/// MOV to CR4.
pub(crate) fn set_cr4(
    s: &mut VcpuState,
    v: u64,
    valid: u64,
) -> core::result::Result<CrEffect, Fault> {
    if v & !valid != 0 {
        return Err(gp(0));
    }
    if s.long_mode() && v & cr4::PAE == 0 {
        return Err(gp(0));
    }
    if v & cr4::PCIDE != 0 && s.cr4 & cr4::PCIDE == 0 && (!s.long_mode() || s.cr3 & 0xfff != 0) {
        return Err(gp(0));
    }
    let old = s.cr4;
    s.cr4 = v;
    let paging_bits = cr4::PAE | cr4::PSE | cr4::PGE | cr4::PCIDE | cr4::SMEP | cr4::SMAP;
    Ok(CrEffect {
        load_pdptrs: (old ^ v) & paging_bits != 0 && s.pae_paging(),
        flush: (old ^ v) & paging_bits != 0,
    })
}

/// MOV to CR3.
pub(crate) fn set_cr3(s: &mut VcpuState, v: u64) -> core::result::Result<CrEffect, Fault> {
    if s.long_mode() && v >> 52 != 0 {
        return Err(gp(0));
    }
    s.cr3 = v;
    Ok(CrEffect {
        load_pdptrs: s.pae_paging(),
        flush: true,
    })
}

/// Loads the four PDPTEs for PAE paging; `false` if one is invalid (then #GP).
pub(crate) fn load_pdptrs(s: &mut VcpuState, mem: &dyn GuestMem) -> Result<bool> {
    let base = s.cr3 & 0xffff_ffe0;
    let mut buf = [0u8; 32];
    mem.read(base, &mut buf)?;
    let mut p = [0u64; 4];
    for (i, c) in buf.chunks_exact(8).enumerate() {
        let v = u64::from_le_bytes(c.try_into().map_err(|_| EINVAL)?);
        // Reserved bits of a present PDPTE: 2:1, 8:5 and above the physical width.
        if v & 1 != 0 && v & 0x1e6 != 0 {
            return Ok(false);
        }
        if let Some(d) = p.get_mut(i) {
            *d = v;
        }
    }
    s.pdptrs = p;
    Ok(true)
}

/// Whether `rflags` allows the string instruction direction to go backwards.
pub(crate) fn df(s: &VcpuState) -> bool {
    s.regs.rflags & rflags::DF != 0
}

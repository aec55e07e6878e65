// SPDX-License-Identifier: GPL-2.0

//! The state ioctls: registers, segment registers, FPU and XSAVE areas, CPUID, and the
//! sync_regs area of `struct kvm_run`.

use super::*;

/// The guest's MAXPHYADDR (KVM assumes 36 bits without the CPUID leaf).
pub(super) fn guest_phys_bits(g: &VcpuInner) -> u32 {
    g.cpuid
        .iter()
        .find(|e| e.function == 0x8000_0008)
        .map_or(36, |e| e.eax & 0xff)
}

pub(super) fn set_regs(s: &mut VcpuState, r: &kvm_regs) {
    s.regs = *r;
    s.regs.rflags |= state::rflags::FIXED;
    s.events.exception = None;
    s.dirty = true;
}

/// Fills `out` (all zeros) with the segment and control registers: field by field, so no
/// copy of the whole struct is made on the way.
pub(super) fn get_sregs(s: &VcpuState, out: &mut kvm_sregs) {
    out.es = s.segs[state::ES];
    out.cs = s.segs[state::CS];
    out.ss = s.segs[state::SS];
    out.ds = s.segs[state::DS];
    out.fs = s.segs[state::FS];
    out.gs = s.segs[state::GS];
    out.ldt = s.segs[state::LDTR];
    out.tr = s.segs[state::TR];
    out.gdt = s.gdt;
    out.idt = s.idt;
    out.cr0 = s.cr0;
    out.cr2 = s.cr2;
    out.cr3 = s.cr3;
    out.cr4 = s.cr4;
    out.cr8 = s.cr8;
    out.efer = s.efer;
    out.apic_base = s.apic_base;
    if let (Some(v), true) = (s.events.interrupt, s.events.interrupt_injected) {
        if let Some(w) = out.interrupt_bitmap.get_mut(usize::from(v) / 64) {
            *w |= 1 << (v % 64);
        }
    }
}

pub(super) fn get_sregs2(s: &VcpuState) -> kvm_sregs2 {
    let mut b = kvm_sregs::default();
    get_sregs(s, &mut b);
    let mut out = kvm_sregs2 {
        cs: b.cs,
        ds: b.ds,
        es: b.es,
        fs: b.fs,
        gs: b.gs,
        ss: b.ss,
        tr: b.tr,
        ldt: b.ldt,
        gdt: b.gdt,
        idt: b.idt,
        cr0: b.cr0,
        cr2: b.cr2,
        cr3: b.cr3,
        cr4: b.cr4,
        cr8: b.cr8,
        efer: b.efer,
        apic_base: b.apic_base,
        ..Default::default()
    };
    if s.pae_paging() {
        out.flags = u64::from(KVM_SREGS2_FLAGS_PDPTRS_VALID);
        out.pdptrs = s.pdptrs;
    }
    out
}

/// KVM's `kvm_is_valid_sregs` plus the CR0/CR4/EFER checks.
pub(super) fn sregs_valid(
    g: &VcpuInner,
    cr0: u64,
    cr4: u64,
    efer: u64,
    cs_l: u8,
    cr3: u64,
) -> bool {
    use state::{cr0 as c0, cr4 as c4, efer as ef};
    if efer & ef::LME != 0 && cr0 & c0::PG != 0 {
        let cr3_ok = crate::x86::validate::legal_gpa(cr3, guest_phys_bits(g));
        if cr4 & c4::PAE == 0 || efer & ef::LMA == 0 || !cr3_ok {
            return false;
        }
    } else if efer & ef::LMA != 0 || cs_l != 0 {
        return false;
    }
    if cr0 >> 32 != 0
        || (cr0 & c0::NW != 0 && cr0 & c0::CD == 0)
        || (cr0 & c0::PG != 0 && cr0 & c0::PE == 0)
    {
        return false;
    }
    if cr4 & !emulate::cr4_valid_bits(&g.cpuid) != 0 {
        return false;
    }
    let env = MsrEnv {
        host_tsc: 0,
        cpuid: &g.cpuid,
        arch_capabilities: 0,
        host_initiated: true,
        platform_info_readable: true,
        quirks: crate::x86::quirks::Quirks::default(),
        pv_features: None,
    };
    let mut probe = g.state.clone();
    msr_access::set_msr(&mut probe, &env, crate::sys::msr::index::EFER, efer).is_ok()
}

pub(super) fn set_sregs_common(g: &mut VcpuInner, b: &kvm_sregs) -> Result {
    if !sregs_valid(g, b.cr0, b.cr4, b.efer, b.cs.l, b.cr3) {
        return Err(EINVAL);
    }
    let bits = guest_phys_bits(g);
    if let Some(a) = g.lapic.as_mut() {
        // IA32_APIC_BASE as a host write would set it; CR8 is the APIC's TPR.
        a.set_base(&mut g.state.apic_base, b.apic_base, true, bits)
            .map_err(|_| EINVAL)?;
        a.set_cr8(b.cr8 & 0xf);
    } else {
        if b.apic_base & 0xffff_fff0_0000_02ff != 0 {
            return Err(EINVAL);
        }
        g.state.apic_base = b.apic_base;
    }
    let s = &mut g.state;
    s.idt = b.idt;
    s.gdt = b.gdt;
    s.cr2 = b.cr2;
    s.cr3 = b.cr3;
    s.efer = b.efer;
    s.cr0 = b.cr0 | state::cr0::ET;
    s.cr4 = b.cr4;
    s.segs = [b.es, b.cs, b.ss, b.ds, b.fs, b.gs, b.ldt, b.tr];
    s.cr8 = b.cr8 & 0xf;
    s.dirty = true;
    Ok(())
}

pub(super) fn set_sregs(vm: &Vm, g: &mut VcpuInner, b: &kvm_sregs) -> Result {
    set_sregs_common(g, b)?;
    if g.state.pae_paging() {
        let _ = emulate::load_pdptrs(&mut g.state, &VmMem::new(vm));
    }
    vm.flush_gen.fetch_add(1, Ordering::SeqCst);
    // The first pending interrupt in the bitmap is queued again.
    for (i, &w) in b.interrupt_bitmap.iter().enumerate() {
        if w != 0 {
            g.state.events.interrupt = Some((i * 64 + w.trailing_zeros() as usize) as u8);
            g.state.events.interrupt_injected = false;
            break;
        }
    }
    Ok(())
}

pub(super) fn set_sregs2(vm: &Vm, g: &mut VcpuInner, s2: &kvm_sregs2) -> Result {
    if s2.flags & !u64::from(KVM_SREGS2_FLAGS_PDPTRS_VALID) != 0 {
        return Err(EINVAL);
    }
    let b = kvm_sregs {
        cs: s2.cs,
        ds: s2.ds,
        es: s2.es,
        fs: s2.fs,
        gs: s2.gs,
        ss: s2.ss,
        tr: s2.tr,
        ldt: s2.ldt,
        gdt: s2.gdt,
        idt: s2.idt,
        cr0: s2.cr0,
        cr2: s2.cr2,
        cr3: s2.cr3,
        cr4: s2.cr4,
        cr8: s2.cr8,
        efer: s2.efer,
        apic_base: s2.apic_base,
        ..Default::default()
    };
    let pae = b.cr0 & state::cr0::PG != 0
        && b.cr4 & state::cr4::PAE != 0
        && b.efer & state::efer::LME == 0;
    if s2.flags & u64::from(KVM_SREGS2_FLAGS_PDPTRS_VALID) != 0 && !pae {
        return Err(EINVAL);
    }
    set_sregs_common(g, &b)?;
    if s2.flags & u64::from(KVM_SREGS2_FLAGS_PDPTRS_VALID) != 0 {
        g.state.pdptrs = s2.pdptrs;
    } else if g.state.pae_paging() {
        let _ = emulate::load_pdptrs(&mut g.state, &VmMem::new(vm));
    }
    vm.flush_gen.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

pub(super) fn get_fpu(a: &[u8]) -> kvm_fpu {
    let rd = |o: usize, n: usize| -> u64 {
        let mut b = [0u8; 8];
        if let (Some(d), Some(s)) = (b.get_mut(..n), a.get(o..o + n)) {
            d.copy_from_slice(s);
        }
        u64::from_le_bytes(b)
    };
    let mut f = kvm_fpu {
        fcw: rd(0, 2) as u16,
        fsw: rd(2, 2) as u16,
        ftwx: rd(4, 1) as u8,
        last_opcode: rd(6, 2) as u16,
        last_ip: rd(8, 8),
        last_dp: rd(16, 8),
        // `mxcsr` stays 0: KVM never fills it in (KVM_GET_XSAVE shows MXCSR).
        ..Default::default()
    };
    for (i, r) in f.fpr.iter_mut().enumerate() {
        if let Some(s) = a.get(32 + i * 16..48 + i * 16) {
            r.copy_from_slice(s);
        }
    }
    for (i, r) in f.xmm.iter_mut().enumerate() {
        if let Some(s) = a.get(160 + i * 16..176 + i * 16) {
            r.copy_from_slice(s);
        }
    }
    f
}

pub(super) fn set_fpu(a: &mut [u8], f: &kvm_fpu) {
    let mut put = |o: usize, b: &[u8]| {
        if let Some(d) = a.get_mut(o..o + b.len()) {
            d.copy_from_slice(b);
        }
    };
    put(0, &f.fcw.to_le_bytes());
    put(2, &f.fsw.to_le_bytes());
    put(4, &[f.ftwx]);
    put(6, &f.last_opcode.to_le_bytes());
    put(8, &f.last_ip.to_le_bytes());
    put(16, &f.last_dp.to_le_bytes());
    // `mxcsr` is ignored, as KVM does: only KVM_SET_XSAVE (checked) changes MXCSR.
    for (i, r) in f.fpr.iter().enumerate() {
        put(32 + i * 16, r);
    }
    for (i, r) in f.xmm.iter().enumerate() {
        put(160 + i * 16, r);
    }
    // x87 and SSE state are now in the area.
    let mut bv = [0u8; 8];
    if let Some(s) = a.get(512..520) {
        bv.copy_from_slice(s);
    }
    let v = u64::from_le_bytes(bv) | 3;
    if let Some(d) = a.get_mut(512..520) {
        d.copy_from_slice(&v.to_le_bytes());
    }
}

/// `KVM_CAP_XSAVE2`: bytes of the XSAVE buffer (at least `struct kvm_xsave`).
pub(crate) fn xsave2_size(k: &Kvm) -> usize {
    (k.arch.fpu_size as usize).max(size_of::<kvm_xsave>())
}

pub(super) fn write_xsave(g: &VcpuInner, arg: usize, size: usize) -> Result<isize> {
    let area = g.fpu.bytes();
    let mut out = KVVec::with_capacity(size, GFP_KERNEL_ACCOUNT)?;
    out.resize(size, 0u8, GFP_KERNEL_ACCOUNT)?;
    let n = area.len().min(size);
    if let (Some(d), Some(s)) = (out.get_mut(..n), area.get(..n)) {
        d.copy_from_slice(s);
    }
    uaccess::write_slice(arg, &out)?;
    Ok(0)
}

pub(super) fn set_xsave(g: &mut VcpuInner, arg: usize) -> Result<isize> {
    // KVM copies at least the whole `struct kvm_xsave`.
    let size = g.fpu.bytes().len().max(size_of::<kvm_xsave>());
    let mut buf = KVVec::with_capacity(size, GFP_KERNEL_ACCOUNT)?;
    buf.resize(size, 0u8, GFP_KERNEL_ACCOUNT)?;
    crate::kvm::uaccess::read_into(arg, &mut buf)?;
    // Without XSAVE on the host only x87 and SSE state exist (KVM takes those two).
    let supported = if cpu::boot_cpu_has(cpu::Feature::Xsave) {
        crate::x86::cpuid::supported_xcr0()
    } else {
        0b11
    };
    if !fpu::user_area_valid(&buf, supported) {
        return Err(EINVAL);
    }
    fpu::install_user_area(g.fpu.bytes_mut(), &buf);
    Ok(0)
}

pub(super) fn set_cpuid2(vm: &Vm, g: &mut VcpuInner, arg: usize) -> Result<isize> {
    let nent = uaccess::read_header8(arg)?;
    if nent as usize > crate::x86::cpuid::MAX_ENTRIES {
        return Err(E2BIG);
    }
    let addr = uaccess::offset(arg, size_of::<kvm_cpuid2>())?;
    let entries: KVVec<kvm_cpuid_entry2> = uaccess::read_vec(addr, nent as usize)?;
    set_cpuid_table(vm, g, &entries)
}

/// `KVM_SET_CPUID`, the first format: entries without subleaf or flags, taken as
/// KVM_SET_CPUID2 entries with index 0 and no flags (as KVM converts them).
pub(super) fn set_cpuid(vm: &Vm, g: &mut VcpuInner, arg: usize) -> Result<isize> {
    let nent = uaccess::read_header8(arg)?;
    if nent as usize > crate::x86::cpuid::MAX_ENTRIES {
        return Err(E2BIG);
    }
    let addr = uaccess::offset(arg, size_of::<kvm_cpuid>())?;
    let old: KVVec<kvm_cpuid_entry> = uaccess::read_vec(addr, nent as usize)?;
    let mut entries = KVVec::with_capacity(old.len(), GFP_KERNEL_ACCOUNT)?;
    for e in old.iter() {
        entries.push(
            kvm_cpuid_entry2 {
                function: e.function,
                eax: e.eax,
                ebx: e.ebx,
                ecx: e.ecx,
                edx: e.edx,
                ..Default::default()
            },
            GFP_KERNEL_ACCOUNT,
        )?;
    }
    set_cpuid_table(vm, g, &entries)
}

/// Installs a CPUID table (both KVM_SET_CPUID forms).
pub(super) fn set_cpuid_table(
    vm: &Vm,
    g: &mut VcpuInner,
    entries: &[kvm_cpuid_entry2],
) -> Result<isize> {
    // After the first KVM_RUN, KVM only accepts the same table again, compared with the
    // bits it keeps in step with vCPU state applied to both (a table read back with
    // KVM_GET_CPUID2 shows them).
    if g.has_run {
        let rt = crate::x86::cpuid::Runtime {
            cr4: g.state.cr4,
            xcr0: g.state.xcr0,
            apic_base: g.state.apic_base,
            mwait: vm.quirks().cpuid_mwait(g.state.msrs.misc_enable),
        };
        let view = |e: &kvm_cpuid_entry2| {
            (
                e.function,
                e.index,
                e.flags,
                crate::x86::cpuid::runtime_view(e, rt),
            )
        };
        let same = entries.len() == g.cpuid.len()
            && entries
                .iter()
                .zip(g.cpuid.iter())
                .all(|(a, b)| view(a) == view(b));
        return if same { Ok(0) } else { Err(EINVAL) };
    }
    let mut v = KVec::with_capacity(entries.len(), GFP_KERNEL_ACCOUNT)?;
    for e in entries.iter() {
        v.push(*e, GFP_KERNEL_ACCOUNT)?;
    }
    g.cpuid = v;
    g.guest_caps = crate::x86::cpuid::GuestCaps::of(&g.cpuid);
    if let Some(a) = g.lapic.as_mut() {
        let ecx = g
            .cpuid
            .iter()
            .find(|e| e.function == 1)
            .map_or(0, |e| e.ecx);
        a.set_cpuid(ecx & (1 << 21) != 0, ecx & (1 << 24) != 0);
    }
    Ok(0)
}

const SYNC: usize = offset_of!(kvm_run, s);

pub(super) fn sync_regs_out(vcpu: &Vcpu, g: &mut VcpuInner, valid: u64) {
    let sregs = valid & u64::from(KVM_SYNC_X86_SREGS) != 0;
    // Without the backend's state the segments cannot be shown (KVM_RUN's own result,
    // EBUSY, says why); the rest can.
    let sregs = sregs && g.sync_state().is_ok();
    let s = &g.state;
    if valid & u64::from(KVM_SYNC_X86_REGS) != 0 {
        vcpu.run_put(SYNC + offset_of!(kvm_sync_regs, regs), &s.regs);
    }
    if sregs {
        let mut out = kvm_sregs::default();
        get_sregs(s, &mut out);
        vcpu.run_put(SYNC + offset_of!(kvm_sync_regs, sregs), &out);
    }
    if valid & u64::from(KVM_SYNC_X86_EVENTS) != 0 {
        vcpu.run_put(SYNC + offset_of!(kvm_sync_regs, events), &events::get(s));
    }
}

pub(super) fn read_run<T: FromBytes + IntoBytes>(vcpu: &Vcpu, off: usize) -> Result<T> {
    let mut v = T::new_zeroed();
    vcpu.run.read_bytes(off, v.as_mut_bytes())?;
    Ok(v)
}

pub(super) fn sync_regs_in(vm: &Vm, vcpu: &Vcpu, g: &mut VcpuInner, dirty: u64) -> Result {
    if dirty & u64::from(KVM_SYNC_X86_REGS) != 0 {
        let r: kvm_regs = read_run(vcpu, SYNC + offset_of!(kvm_sync_regs, regs))?;
        set_regs(&mut g.state, &r);
    }
    if dirty & u64::from(KVM_SYNC_X86_SREGS) != 0 {
        g.sync_state()?;
        let s: kvm_sregs = read_run(vcpu, SYNC + offset_of!(kvm_sync_regs, sregs))?;
        set_sregs(vm, g, &s)?;
        apic_changed(vcpu, g);
    }
    if dirty & u64::from(KVM_SYNC_X86_EVENTS) != 0 {
        let e: kvm_vcpu_events = read_run(vcpu, SYNC + offset_of!(kvm_sync_regs, events))?;
        events::set(&mut g.state, &e, vm.kvm.backend.one_shadow_bit())?;
    }
    // KVM clears kvm_dirty_regs once it took the state.
    vcpu.run_put(offset_of!(kvm_run, kvm_dirty_regs), &0u64);
    Ok(())
}

// SPDX-License-Identifier: GPL-2.0

//! MSR accesses: the guest's RDMSR/WRMSR exits, KVM_GET_MSRS/KVM_SET_MSRS, and the
//! in-kernel MSRs (APIC, kvmclock, steal time) on top of the emulator's.

use super::*;

pub(super) fn msr_access(
    vm: &Vm,
    vcpu: &Vcpu,
    g: &mut VcpuInner,
    write: bool,
    insn_len: u8,
) -> Result<Option<isize>> {
    let m = g.state.regs.rcx as u32;
    let v = (g.state.regs.rdx << 32) | (g.state.regs.rax & 0xffff_ffff);
    // KVM_X86_SET_MSR_FILTER: a denied access never reaches the kernel's MSRs.
    let filtered = g.msr_filter.as_ref().is_some_and(|f| !f.allowed(m, write));
    let failed = if filtered {
        true
    } else if !write {
        match read_msr(vm, g, m, false) {
            Some(v) => {
                g.state.regs.rax = v & 0xffff_ffff;
                g.state.regs.rdx = v >> 32;
                false
            }
            None => true,
        }
    } else {
        write_msr(vm, vcpu, g, m, v, false).is_err()
    };
    if failed {
        // KVM's reasons: an MSR it does not know at all, or a known one that refused.
        let known = is_x2apic_msr(m) || (write && read_msr(vm, g, m, true).is_some());
        let reason = if filtered {
            KVM_MSR_EXIT_REASON_FILTER
        } else if known {
            KVM_MSR_EXIT_REASON_INVAL
        } else {
            KVM_MSR_EXIT_REASON_UNKNOWN
        };
        if vm.user_space_msr.load(Ordering::Relaxed) & reason == 0 {
            inject(&mut g.state, emulate::gp(0));
            return Ok(None);
        }
        type Msr = kvm_run__bindgen_ty_1__bindgen_ty_23;
        let exit = Msr {
            error: 0,
            pad: [0; 7],
            reason,
            index: m,
            data: if write { v } else { 0 },
        };
        g.pending = Pending::Msr {
            write,
            len: insn_len,
            linear_rip: emulate::linear_rip(&g.state),
        };
        vcpu.set_exit(if write {
            KVM_EXIT_X86_WRMSR
        } else {
            KVM_EXIT_X86_RDMSR
        });
        vcpu.run_put(RUN_U + offset_of!(Msr, error), &exit.error);
        vcpu.run_put(RUN_U + offset_of!(Msr, pad), &exit.pad);
        vcpu.run_put(RUN_U + offset_of!(Msr, reason), &exit.reason);
        vcpu.run_put(RUN_U + offset_of!(Msr, index), &exit.index);
        vcpu.run_put(RUN_U + offset_of!(Msr, data), &exit.data);
        return Ok(Some(0));
    }
    let s = &mut g.state;
    s.skip_instruction(insn_len);
    s.dirty = true;
    Ok(None)
}

pub(super) fn is_x2apic_msr(m: u32) -> bool {
    (lapic::X2APIC_MSR..=lapic::X2APIC_MSR + 0xff).contains(&m)
}

/// The guest's paravirtual features (KVM_CPUID_FEATURES EAX).
pub(super) fn pv_features(cpuid: &[kvm_cpuid_entry2]) -> u32 {
    let rt = crate::x86::cpuid::Runtime::FEATURES;
    crate::x86::cpuid::guest_cpuid(cpuid, crate::x86::cpuid::KVM_CPUID_FEATURES, 0, rt)[0]
}

/// What the MSR emulation needs to know besides the vCPU state.
pub(super) fn msr_env<'a>(
    vm: &Vm,
    cpuid: &'a [kvm_cpuid_entry2],
    host: bool,
    enforce: bool,
) -> MsrEnv<'a> {
    MsrEnv {
        pv_features: enforce.then(|| pv_features(cpuid)),
        host_tsc: host_tsc(),
        cpuid,
        arch_capabilities: vm.kvm.msrs.arch_capabilities,
        host_initiated: host,
        platform_info_readable: vm.platform_info_readable.load(Ordering::Relaxed),
        quirks: vm.quirks(),
    }
}

/// RDMSR or KVM_GET_MSRS (`host`): the local APIC's MSRs, then the rest.
pub(super) fn read_msr(vm: &Vm, g: &mut VcpuInner, m: u32, host: bool) -> Option<u64> {
    let apic_base = g.state.apic_base;
    if is_x2apic_msr(m) {
        let now = crate::sys::wait::now_ns();
        return g.lapic.as_mut()?.msr_read(m, apic_base, now).ok();
    }
    if m == lapic::TSC_DEADLINE_MSR {
        return Some(g.lapic.as_ref().map_or(0, |a| a.tscdeadline(apic_base)));
    }
    let env = msr_env(vm, &g.cpuid, host, g.enforce_pv_cpuid);
    if let Some(feature) = wall_clock_feature(m) {
        // The VM's wall-clock address (one for all vCPUs).
        return env
            .pv_has(feature)
            .then(|| vm.wall_clock_msr.load(Ordering::Relaxed));
    }
    msr_access::get_msr(&g.state, &env, m)
}

/// The paravirtual feature of a kvmclock wall-clock MSR.
pub(super) fn wall_clock_feature(m: u32) -> Option<u32> {
    match m {
        MSR_KVM_WALL_CLOCK => Some(KVM_FEATURE_CLOCKSOURCE),
        MSR_KVM_WALL_CLOCK_NEW => Some(KVM_FEATURE_CLOCKSOURCE2),
        _ => None,
    }
}

/// WRMSR or KVM_SET_MSRS (`host`); `Err` is #GP (or a failed entry for KVM_SET_MSRS).
pub(super) fn write_msr(
    vm: &Vm,
    vcpu: &Vcpu,
    g: &mut VcpuInner,
    m: u32,
    v: u64,
    host: bool,
) -> core::result::Result<(), ()> {
    let apic_base = g.state.apic_base;
    if is_x2apic_msr(m) {
        let now = crate::sys::wait::now_ns();
        let a = g.lapic.as_mut().ok_or(())?;
        let eff = a.msr_write(m, v, apic_base, now).map_err(|_| ())?;
        apic_changed(vcpu, g);
        super::apic::effects(vm, vcpu, g, eff);
        return Ok(());
    }
    if m == lapic::TSC_DEADLINE_MSR {
        let c = clock(&g.state);
        if let Some(a) = g.lapic.as_mut() {
            a.set_tscdeadline(v, apic_base, &c);
        }
        return Ok(());
    }
    if m == crate::sys::msr::index::IA32_APICBASE && g.lapic.is_some() {
        let bits = guest_phys_bits(g);
        let VcpuInner { lapic, state, .. } = &mut *g;
        if let Some(a) = lapic.as_mut() {
            a.set_base(&mut state.apic_base, v, host, bits)
                .map_err(|_| ())?;
        }
        apic_changed(vcpu, g);
        return Ok(());
    }
    if m == crate::sys::msr::index::IA32_TSC && host {
        // Userspace's TSC values are matched across the VM's vCPUs (`x86/tsc.rs`); the
        // guest's own writes move only its TSC (and TSC_ADJUST).
        g.state.tsc_offset = vm
            .tsc_sync
            .lock()
            .synchronize(Some(v), tsc_now(&g.state.tsc_rate));
        return Ok(());
    }
    let env = msr_env(vm, &g.cpuid, host, g.enforce_pv_cpuid);
    if let Some(feature) = wall_clock_feature(m) {
        if !env.pv_has(feature) {
            return Err(());
        }
        vm.wall_clock_msr.store(v, Ordering::Relaxed);
        crate::kvm::kvmclock::write_wall_clock(vm, vcpu, v);
        return Ok(());
    }
    msr_access::set_msr(&mut g.state, &env, m, v)
}

/// Userspace's read of one MSR (KVM_GET_MSRS, KVM_GET_ONE_REG): an MSR KVM advertises
/// reads as 0 even where the guest does not have it, as in KVM.
fn host_read(vm: &Vm, g: &mut VcpuInner, m: u32) -> Option<u64> {
    read_msr(vm, g, m, true).or_else(|| advertised(vm, m).then_some(0))
}

/// Userspace's write of one MSR (KVM_SET_MSRS, KVM_SET_ONE_REG): writing 0 to an MSR KVM
/// advertises is accepted even where the guest does not have it, as in KVM.
fn host_write(vm: &Vm, vcpu: &Vcpu, g: &mut VcpuInner, m: u32, v: u64) -> bool {
    write_msr(vm, vcpu, g, m, v, true).is_ok() || (v == 0 && advertised(vm, m))
}

fn advertised(vm: &Vm, m: u32) -> bool {
    vm.kvm.msrs.to_save.contains(&m) || vm.kvm.msrs.emulated.contains(&m)
}

/// KVM_GET_ONE_REG / KVM_SET_ONE_REG. On x86 a register id names an MSR (type
/// `KVM_X86_REG_TYPE_MSR`, 64 bits) or a KVM register (`KVM_X86_REG_TYPE_KVM`: only the
/// guest's shadow-stack pointer, which needs CET, which rkvm does not offer, so EINVAL as
/// in KVM without it). An MSR is accessed as by KVM_GET/SET_MSRS; one it refuses is EINVAL.
pub(super) fn one_reg_ioctl(
    vm: &Vm,
    vcpu: &Vcpu,
    g: &mut VcpuInner,
    arg: usize,
    write: bool,
) -> Result<isize> {
    let r: kvm_one_reg = uaccess::read(arg)?;
    let id = r.id;
    // id: arch (63:56), size (55:52), reserved (51:40), type (39:32), index (31:0).
    if id & (KVM_REG_ARCH_MASK as u64) != KVM_REG_X86 || (id >> 40) & 0xfff != 0 {
        return Err(EINVAL);
    }
    if (id >> 32) & 0xff != u64::from(KVM_X86_REG_TYPE_MSR)
        || id & KVM_REG_SIZE_MASK != KVM_REG_SIZE_U64
    {
        return Err(EINVAL);
    }
    let m = id as u32;
    let addr = usize::try_from(r.addr).map_err(|_| EFAULT)?;
    if write {
        let v: u64 = uaccess::read(addr)?;
        if !host_write(vm, vcpu, g, m, v) {
            return Err(EINVAL);
        }
        g.state.dirty = true;
    } else {
        let v = host_read(vm, g, m).ok_or(EINVAL)?;
        uaccess::write(addr, &v)?;
    }
    Ok(0)
}

/// KVM_GET_REG_LIST: the KVM registers KVM_GET_ONE_REG reaches besides MSRs. KVM lists
/// only the shadow-stack pointer, with CET; rkvm has none: `n` becomes 0.
pub(super) fn reg_list_ioctl(arg: usize) -> Result<isize> {
    let _wanted: u64 = uaccess::read(arg)?;
    uaccess::write(arg, &0u64)?;
    Ok(0)
}

pub(super) fn msrs_ioctl(
    vm: &Vm,
    vcpu: &Vcpu,
    g: &mut VcpuInner,
    arg: usize,
    write: bool,
) -> Result<isize> {
    let nmsrs = uaccess::read_header8(arg)?;
    if nmsrs >= crate::kvm::dev::MAX_IO_MSRS {
        return Err(E2BIG);
    }
    let addr = uaccess::offset(arg, size_of::<kvm_msrs>())?;
    let mut entries: KVVec<kvm_msr_entry> = uaccess::read_vec(addr, nmsrs as usize)?;
    let mut done = 0isize;
    for e in entries.iter_mut() {
        let ok = if write {
            host_write(vm, vcpu, g, e.index, e.data)
        } else {
            let v = host_read(vm, g, e.index);
            e.data = v.unwrap_or(0);
            v.is_some()
        };
        if !ok {
            break;
        }
        done += 1;
    }
    if write {
        g.state.dirty = true;
    } else {
        uaccess::write_slice(addr, &entries)?;
    }
    Ok(done)
}

// SPDX-License-Identifier: GPL-2.0

//! Port and MMIO exits: the instruction fetch, the in-kernel and userspace MMIO paths,
//! string I/O, what KVM_RUN finishes after an exit to userspace, and
//! KVM_PRE_FAULT_MEMORY.

use super::*;

/// `KVM_PRE_FAULT_MEMORY`: maps the range's memslot pages into the EPT now, page by
/// page, as guest read faults would. The range left is written back; the call succeeds
/// if any page was mapped, else fails with the first page's errno (ENOENT: no memslot;
/// EINTR: a signal).
pub(super) fn pre_fault_memory(vm: &Vm, arg: usize) -> Result<isize> {
    const PAGE: u64 = 4096;
    let mut range: kvm_pre_fault_memory = uaccess::read(arg)?;
    if range.flags != 0
        || range.gpa % PAGE != 0
        || range.size % PAGE != 0
        || range
            .gpa
            .checked_add(range.size)
            .is_none_or(|end| end <= range.gpa)
    {
        return Err(EINVAL);
    }
    let full = range.size;
    let mut err = None;
    while range.size != 0 {
        if cpu::signal_pending() {
            err = Some(EINTR);
            break;
        }
        match vm.fault_in(range.gpa, false, false, None) {
            Ok(Faulted::Fixed | Faulted::Spurious) => {}
            Ok(Faulted::NoMemory) => {
                err = Some(ENOENT);
                break;
            }
            Err(e) => {
                err = Some(e);
                break;
            }
        }
        range.gpa += PAGE;
        range.size -= PAGE;
        cpu::cond_resched();
    }
    uaccess::write(arg, &range)?;
    match err {
        Some(e) if range.size == full => Err(e),
        _ => Ok(0),
    }
}

pub(super) fn debug_arch_bytes(a: &kvm_debug_exit_arch) -> KVec<u8> {
    let mut v = KVec::new();
    for part in [
        &a.exception.to_le_bytes()[..],
        &a.pad.to_le_bytes()[..],
        &a.pc.to_le_bytes()[..],
        &a.dr6.to_le_bytes()[..],
        &a.dr7.to_le_bytes()[..],
    ] {
        let _ = v.extend_from_slice(part, GFP_KERNEL);
    }
    v
}

pub(super) fn io_exit(vcpu: &Vcpu, port: u16, size: u8, input: bool, count: u32) {
    type Io = kvm_run__bindgen_ty_1__bindgen_ty_4;
    vcpu.set_exit(KVM_EXIT_IO);
    let dir = if input {
        KVM_EXIT_IO_IN
    } else {
        KVM_EXIT_IO_OUT
    } as u8;
    vcpu.run_put(RUN_U + offset_of!(Io, direction), &dir);
    vcpu.run_put(RUN_U + offset_of!(Io, size), &size);
    vcpu.run_put(RUN_U + offset_of!(Io, port), &port);
    vcpu.run_put(RUN_U + offset_of!(Io, count), &count);
    vcpu.run_put(
        RUN_U + offset_of!(Io, data_offset),
        &(u64::from(KVM_PIO_PAGE_OFFSET) * 4096),
    );
}

pub(super) fn fault_or_error(vcpu: &Vcpu, s: &mut VcpuState, e: EmuError) -> Result<Option<isize>> {
    match e {
        EmuError::Fault(f) => {
            inject_fault(vcpu, s, f);
            Ok(None)
        }
        EmuError::Unsupported => Ok(internal_error(vcpu, KVM_INTERNAL_ERROR_EMULATION, &[])),
        EmuError::Host(e) => Err(e),
    }
}

/// Fetches up to 15 instruction bytes at CS:RIP.
pub(super) fn fetch(
    vm: &Vm,
    s: &VcpuState,
    buf: &mut [u8; 15],
) -> core::result::Result<(), EmuError> {
    let rip = emulate::linear_rip(s);
    // Never cross into a page the instruction may not touch: fetch what fits first.
    let first = (4096 - (rip & 0xfff) as usize).min(15);
    let mem = VmMem::new(vm);
    // Code outside guest memory cannot be fetched: an emulation failure, as in KVM.
    let code_gpa = emulate::translate(s, &mem, rip, false, s.cpl() == 3)?;
    if !mem.backed(code_gpa) {
        return Err(EmuError::Unsupported);
    }
    match emulate::read_virt(
        s,
        &mem,
        rip,
        buf.get_mut(..first).ok_or(EmuError::Unsupported)?,
    ) {
        // The memslot went meanwhile: the same as never there.
        Err(EmuError::Host(_)) if !mem.backed(code_gpa) => return Err(EmuError::Unsupported),
        r => r?,
    }
    if first < 15 {
        let _ = emulate::read_virt(
            s,
            &mem,
            rip.wrapping_add(first as u64),
            buf.get_mut(first..).ok_or(EmuError::Unsupported)?,
        );
    }
    Ok(())
}

pub(super) fn mmio(
    vm: &Vm,
    vcpu: &Vcpu,
    g: &mut VcpuInner,
    gpa: u64,
    write: bool,
    exit: [u64; 5],
) -> Result<Option<isize>> {
    let code = &mut emu_ctxt(&mut g.emu, vm)?.insn;
    if let Err(e) = fetch(vm, &g.state, code) {
        return fault_or_error(vcpu, &mut g.state, e);
    }
    vcpu.stats.inc(st::INSN_EMULATION);
    let code = *code;
    let Some(op) = emulate::decode_mmio(&g.state, &code) else {
        return Ok(emulation_failure(vm, vcpu, &mut g.state, &code, exit));
    };
    if write && !op.write {
        return Ok(emulation_failure(vm, vcpu, &mut g.state, &code, exit));
    }
    if g.lapic.is_some() && gpa & lapic::base::ADDR == g.state.apic_base & lapic::base::ADDR {
        apic_mmio(vm, vcpu, g, gpa, &op, &code);
        return Ok(None);
    }
    if let Some(v) = crate::kvm::irqchip::mmio(vm, gpa, op.size, op.write, op.value) {
        if !op.write {
            emulate::complete_mmio_read(&mut g.state, &op, v);
        }
        g.state.skip_instruction(op.len);
        advance_string_op(&mut g.state, &code, &op);
        return Ok(None);
    }
    if op.write
        && (crate::kvm::ioeventfd::write(vm, gpa, u32::from(op.size), false, op.value)
            || crate::kvm::coalesced::write(
                vm,
                gpa,
                u32::from(op.size),
                false,
                &op.value.to_le_bytes(),
            ))
    {
        // Taken by a coalesced zone: the write is complete without an exit.
        g.state.skip_instruction(op.len);
        advance_string_op(&mut g.state, &code, &op);
        return Ok(None);
    }
    vcpu.stats.inc(st::MMIO_EXITS);
    type Mmio = kvm_run__bindgen_ty_1__bindgen_ty_6;
    vcpu.set_exit(KVM_EXIT_MMIO);
    vcpu.run_put(RUN_U + offset_of!(Mmio, phys_addr), &gpa);
    vcpu.run_put(RUN_U + offset_of!(Mmio, len), &u32::from(op.size));
    vcpu.run_put(RUN_U + offset_of!(Mmio, is_write), &u8::from(op.write));
    let data = op.value.to_le_bytes();
    vcpu.run_put(RUN_U + offset_of!(Mmio, data), &data);
    if op.write {
        // A write completes now: RIP moves past the instruction before userspace sees it.
        g.state.skip_instruction(op.len);
        advance_string_op(&mut g.state, &code, &op);
        g.pending = Pending::None;
    } else {
        g.pending = Pending::MmioRead { op };
    }
    Ok(Some(0))
}

/// STOS to MMIO: one iteration per exit, RDI (and RCX with REP) updated.
pub(super) fn advance_string_op(s: &mut VcpuState, code: &[u8], op: &MemOp) {
    if !op.stos {
        return;
    }
    let io = emulate::decode_string_io(s, code);
    let step = u64::from(op.size);
    let m = emulate::size_mask(io.addr_size);
    let di = emulate::gpr64(s, 7);
    let nd = if emulate::df(s) {
        di.wrapping_sub(step)
    } else {
        di.wrapping_add(step)
    };
    emulate::set_gpr(s, 7, io.addr_size, false, nd & m);
    if io.rep {
        let cx = emulate::gpr64(s, 1) & m;
        let ncx = cx.wrapping_sub(1) & m;
        emulate::set_gpr(s, 1, io.addr_size, false, ncx);
        if ncx != 0 {
            // Not done: run the instruction again.
            s.regs.rip = s.regs.rip.wrapping_sub(u64::from(op.len));
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn string_io(
    vm: &Vm,
    vcpu: &Vcpu,
    g: &mut VcpuInner,
    port: u16,
    size: u8,
    input: bool,
    rep: bool,
    len: u8,
) -> Result<Option<isize>> {
    let code = &mut emu_ctxt(&mut g.emu, vm)?.insn;
    if let Err(e) = fetch(vm, &g.state, code) {
        return fault_or_error(vcpu, &mut g.state, e);
    }
    let code = *code;
    let s = &mut g.state;
    let mut io = emulate::decode_string_io(s, &code);
    io.rep = rep;
    let m = emulate::size_mask(io.addr_size);
    let mut count = if rep { emulate::gpr64(s, 1) & m } else { 1 };
    if count == 0 {
        s.skip_instruction(len);
        return Ok(None);
    }
    // As many as fit in the PIO page, and without DF=1 page crossings, one at a time.
    count = count.min(4096u64.checked_div(u64::from(size)).unwrap_or(1));
    if emulate::df(s) {
        count = 1;
    }
    let count = count as u32;
    if !input {
        let si = emulate::gpr64(s, 6) & m;
        let src = emulate::linear(s, io.seg, si, io.addr_size);
        let n = count as usize * usize::from(size);
        let mut buf = KVec::with_capacity(n, GFP_KERNEL_ACCOUNT)?;
        buf.resize(n, 0u8, GFP_KERNEL_ACCOUNT)?;
        if let Err(e) = emulate::read_virt(s, &VmMem::of(vm, vcpu), src, &mut buf) {
            return fault_or_error(vcpu, s, e);
        }
        vcpu.pio.get()?.write_bytes(0, &buf)?;
    }
    g.pending = Pending::StringPio {
        input,
        size,
        count,
        io,
        len,
        linear_rip: emulate::linear_rip(&g.state),
    };
    // An in-kernel device's port: each element goes to it (or comes from it) through
    // the PIO page, and the instruction completes here as after an exit.
    if crate::kvm::irqchip::device_claims(vm, port, size) {
        let sz = usize::from(size).clamp(1, 4);
        let n = count as usize * sz;
        let mut buf = KVec::with_capacity(n, GFP_KERNEL_ACCOUNT)?;
        buf.resize(n, 0u8, GFP_KERNEL_ACCOUNT)?;
        if !input {
            vcpu.pio.get()?.read_bytes(0, &mut buf)?;
        }
        for at in (0..buf.len()).step_by(sz) {
            let Some(e) = buf.get_mut(at..at + sz) else {
                break;
            };
            let mut b = [0u8; 4];
            for (d, s) in b.iter_mut().zip(e.iter()) {
                *d = *s;
            }
            let v = crate::kvm::irqchip::device_pio(vm, port, size, input, u32::from_le_bytes(b));
            if input {
                for (d, s) in e.iter_mut().zip(v.unwrap_or(0).to_le_bytes()) {
                    *d = s;
                }
            }
        }
        if input {
            vcpu.pio.get()?.write_bytes(0, &buf)?;
        }
        complete_pending(vm, vcpu, g)?;
        return Ok(None);
    }
    vcpu.stats.inc(st::IO_EXITS);
    io_exit(vcpu, port, size, input, count);
    Ok(Some(0))
}

/// Completes what the last exit left to userspace, KVM's `complete_userspace_io`.
pub(super) fn complete_pending(vm: &Vm, vcpu: &Vcpu, g: &mut VcpuInner) -> Result {
    let pending = core::mem::replace(&mut g.pending, Pending::None);
    let s = &mut g.state;
    match pending {
        Pending::None => {}
        Pending::Pio {
            input,
            size,
            len,
            linear_rip,
        } => {
            if emulate::linear_rip(s) != linear_rip {
                return Ok(());
            }
            if input {
                let mut b = [0u8; 8];
                vcpu.pio
                    .get()?
                    .read_bytes(0, b.get_mut(..usize::from(size)).ok_or(EINVAL)?)?;
                let v = u64::from_le_bytes(b);
                // Narrow sizes merge into RAX; 4 bytes zero-extend.
                emulate::set_gpr(s, 0, if size < 4 { size } else { 4 }, false, v);
            }
            s.skip_instruction(len);
        }
        Pending::StringPio {
            input,
            size,
            count,
            io,
            len,
            linear_rip,
        } => {
            if emulate::linear_rip(s) != linear_rip {
                return Ok(());
            }
            let m = emulate::size_mask(io.addr_size);
            // Userspace may have changed RCX during the exit: complete no more elements
            // than it now asks for (KVM only promises not to overrun anything then).
            let cx_now = emulate::gpr64(s, 1) & m;
            let count = if io.rep {
                u64::from(count).min(cx_now)
            } else {
                u64::from(count)
            };
            let bytes = count * u64::from(size);
            let (reg, seg) = if input {
                (7u8, state::ES)
            } else {
                (6u8, io.seg)
            };
            let ptr = emulate::gpr64(s, reg) & m;
            if input {
                let n = bytes as usize;
                let mut buf = KVec::with_capacity(n, GFP_KERNEL_ACCOUNT)?;
                buf.resize(n, 0u8, GFP_KERNEL_ACCOUNT)?;
                vcpu.pio.get()?.read_bytes(0, &mut buf)?;
                let dst = emulate::linear(s, seg, ptr, io.addr_size);
                if let Err(e) = emulate::write_virt(s, &VmMem::of(vm, vcpu), dst, &buf) {
                    if let EmuError::Fault(f) = e {
                        inject_fault(vcpu, s, f);
                        return Ok(());
                    }
                    return Err(EFAULT);
                }
            }
            let np = if emulate::df(s) {
                ptr.wrapping_sub(bytes)
            } else {
                ptr.wrapping_add(bytes)
            };
            emulate::set_gpr(s, reg, io.addr_size, false, np & m);
            let mut done = true;
            if io.rep {
                let cx = cx_now.saturating_sub(count) & m;
                emulate::set_gpr(s, 1, io.addr_size, false, cx);
                done = cx == 0;
            }
            if done {
                s.skip_instruction(len);
            }
        }
        Pending::Msr {
            write,
            len,
            linear_rip,
        } => {
            if emulate::linear_rip(s) != linear_rip {
                return Ok(());
            }
            type Msr = kvm_run__bindgen_ty_1__bindgen_ty_23;
            let mut e = [0u8; 1];
            vcpu.run
                .read_bytes(RUN_U + offset_of!(Msr, error), &mut e)?;
            if e[0] != 0 {
                inject(s, emulate::gp(0));
                return Ok(());
            }
            if !write {
                let mut b = [0u8; 8];
                vcpu.run.read_bytes(RUN_U + offset_of!(Msr, data), &mut b)?;
                let v = u64::from_le_bytes(b);
                s.regs.rax = v & 0xffff_ffff;
                s.regs.rdx = v >> 32;
            }
            s.skip_instruction(len);
            s.dirty = true;
        }
        Pending::MmioRead { op } => {
            type Mmio = kvm_run__bindgen_ty_1__bindgen_ty_6;
            let mut b = [0u8; 8];
            vcpu.run
                .read_bytes(RUN_U + offset_of!(Mmio, data), &mut b)?;
            emulate::complete_mmio_read(s, &op, u64::from_le_bytes(b));
            s.skip_instruction(op.len);
        }
    }
    Ok(())
}

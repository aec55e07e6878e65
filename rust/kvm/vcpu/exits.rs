// SPDX-License-Identifier: GPL-2.0

//! Exits the generic code finishes in process context: the dispatch, CR and DR
//! accesses, hypercall patching, exception injection and the errors handed to userspace.

use super::*;

/// An instruction rkvm had to emulate and cannot (KVM's `handle_emulation_failure`):
/// #UD for the guest, and at CPL 0 (or always with KVM_CAP_EXIT_ON_EMULATION_FAILURE,
/// then without the #UD) KVM_EXIT_INTERNAL_ERROR/EMULATION laid out as KVM's: flags, the
/// instruction bytes when known, then the exit reason, qualification, IDT-vectoring
/// information, interruption information and error code.
pub(super) fn emulation_failure(
    vm: &Vm,
    vcpu: &Vcpu,
    s: &mut VcpuState,
    insn: &[u8],
    exit: [u64; 5],
) -> Option<isize> {
    vcpu.stats.inc(st::INSN_EMULATION_FAIL);
    let exit_anyway = vm.exit_on_emulation_failure.load(Ordering::Relaxed);
    if !exit_anyway {
        inject(s, emulate::ud());
        if s.cpl() != 0 {
            return None;
        }
    }
    let mut data = KVec::new();
    let insn = insn.get(..insn.len().min(15)).unwrap_or(&[]);
    let ok = if insn.is_empty() {
        data.push(0u64, GFP_KERNEL)
    } else {
        let mut b = [0x90u8; 16];
        b[0] = insn.len() as u8;
        for (d, s) in b.iter_mut().skip(1).zip(insn.iter()) {
            *d = *s;
        }
        let lo = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        let hi = u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]);
        data.push(
            u64::from(KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES),
            GFP_KERNEL,
        )
        .and_then(|()| data.push(lo, GFP_KERNEL))
        .and_then(|()| data.push(hi, GFP_KERNEL))
    };
    if ok.is_err() || data.extend_from_slice(&exit, GFP_KERNEL).is_err() {
        return internal_error(vcpu, KVM_INTERNAL_ERROR_EMULATION, &[]);
    }
    internal_error(vcpu, KVM_INTERNAL_ERROR_EMULATION, &data)
}

pub(super) fn internal_error(vcpu: &Vcpu, suberror: u32, data: &[u64]) -> Option<isize> {
    vcpu.set_exit(KVM_EXIT_INTERNAL_ERROR);
    let base = RUN_U + offset_of!(kvm_run__bindgen_ty_1__bindgen_ty_13, suberror);
    vcpu.run_put(base, &suberror);
    let nd = data.len().min(16) as u32;
    vcpu.run_put(
        RUN_U + offset_of!(kvm_run__bindgen_ty_1__bindgen_ty_13, ndata),
        &nd,
    );
    for (i, d) in data.iter().take(16).enumerate() {
        vcpu.run_put(
            RUN_U + offset_of!(kvm_run__bindgen_ty_1__bindgen_ty_13, data) + i * 8,
            d,
        );
    }
    Some(0)
}

pub(super) fn inject(s: &mut VcpuState, f: Exception) {
    s.events.exception = Some(f);
}

/// Queues a fault that emulating the guest's instruction raised; a page fault from the
/// guest's own page tables counts as KVM's `pf_guest`.
pub(super) fn inject_fault(vcpu: &Vcpu, s: &mut VcpuState, f: Exception) {
    if f.vector == 14 {
        vcpu.stats.inc(st::PF_GUEST);
    }
    inject(s, f);
}

/// Queues exception `vector` without an error code.
pub(super) fn inject_exception(s: &mut VcpuState, vector: u8) {
    inject(
        s,
        Exception {
            vector,
            error_code: None,
            injected: false,
            payload: None,
        },
    );
}

/// A #UD from the guest. With KVM's FIX_HYPERCALL_INSN quirk on, the other vendor's
/// hypercall instruction (from a guest that booted there: VMMCALL on Intel, VMCALL on
/// AMD) is rewritten in guest memory to this one's, which the guest then executes;
/// anything else gets its #UD.
pub(super) fn fix_hypercall(vm: &Vm, vcpu: &Vcpu, g: &mut VcpuInner) -> Result<Option<isize>> {
    const VMMCALL: [u8; 3] = [0x0f, 0x01, 0xd9];
    const VMCALL: [u8; 3] = [0x0f, 0x01, 0xc1];
    let native = vm.kvm.backend.hypercall_insn();
    let other = if native == VMCALL { VMMCALL } else { VMCALL };
    let rip = emulate::linear_rip(&g.state);
    let mut insn = [0u8; 3];
    let foreign = vm.quirks().has(crate::x86::quirks::FIX_HYPERCALL_INSN)
        && emulate::read_virt(&g.state, &VmMem::new(vm), rip, &mut insn).is_ok()
        && insn == other;
    if !foreign {
        inject(&mut g.state, emulate::ud());
        return Ok(None);
    }
    match emulate::write_virt(&g.state, &VmMem::of(vm, vcpu), rip, &native) {
        Ok(()) => {}
        Err(EmuError::Fault(f)) => inject_fault(vcpu, &mut g.state, f),
        Err(EmuError::Host(e)) => return Err(e),
        Err(EmuError::Unsupported) => inject(&mut g.state, emulate::ud()),
    }
    Ok(None)
}

/// Finishes an exit in process context. `Some(r)`: return `r` to userspace.
/// KVM's `kvm_sched_yield`, for the guest's `KVM_HC_SCHED_YIELD`: gives this vCPU's time
/// to the vCPU whose local APIC has physical ID `apic_id`, when that vCPU's thread was
/// preempted while runnable and something else wants this CPU. KVM counts every
/// hypercall as an attempt, and a yield that happened as a success (only these: the
/// yields of pause-loop exits are not counted).
fn sched_yield(vm: &Vm, me: &Vcpu, apic_id: u64) {
    me.stats.inc(st::DIRECTED_YIELD_ATTEMPTED);
    if cpu::single_task_running() {
        return;
    }
    let target = {
        let l = vm.locked.lock();
        l.vcpus
            .iter()
            .find(|v| {
                v.apic.as_ref().is_some_and(|mb| {
                    let a = mb.addressing();
                    let id = if a.x2apic {
                        u64::from(v.id)
                    } else {
                        u64::from(a.xapic_id)
                    };
                    id == apic_id
                })
            })
            .cloned()
    };
    let Some(t) = target else {
        return;
    };
    if core::ptr::eq(&*t, me) || !t.preempted.load(Ordering::Acquire) {
        return;
    }
    if t.yield_to() {
        me.stats.inc(st::DIRECTED_YIELD_SUCCESSFUL);
    }
}

/// KVM's `kvm_vcpu_on_spin`: a vCPU spinning on a lock gives its time to another vCPU of
/// its VM whose thread was preempted while runnable (the likely lock holder), trying at
/// most three, starting after the last one it gave to. The VM's vCPU list is locked only
/// to pick a candidate, never across the yield. (KVM counts nothing here.)
fn directed_yield(vm: &Vm, me: &Vcpu) {
    const TRIES: usize = 3;
    let mut next = me.last_boosted.load(Ordering::Relaxed);
    for _ in 0..TRIES {
        let pick = {
            let l = vm.locked.lock();
            let n = l.vcpus.len();
            (1..=n).find_map(|k| {
                let i = (next + k) % n;
                let v = l.vcpus.get(i)?;
                let ready = !core::ptr::eq(&**v, me)
                    && v.preempted.load(Ordering::Acquire)
                    && v.running_cpu.load(Ordering::Acquire) < 0;
                ready.then(|| (i, v.clone()))
            })
        };
        let Some((i, v)) = pick else {
            break;
        };
        next = i;
        if v.yield_to() {
            me.last_boosted.store(i, Ordering::Relaxed);
            return;
        }
    }
}

pub(super) fn handle_exit(
    vm: &Vm,
    vcpu: &Vcpu,
    g: &mut VcpuInner,
    exit: Exit,
) -> Result<Option<isize>> {
    let s = &mut g.state;
    match exit {
        Exit::Again => Ok(None),
        Exit::Hlt => {
            if g.lapic.is_some() {
                // The in-kernel APIC wakes the vCPU; userspace does not see the HLT.
                s.mp_state = KVM_MP_STATE_HALTED;
                return Ok(None);
            }
            vcpu.set_exit(KVM_EXIT_HLT);
            Ok(Some(0))
        }
        Exit::Spin => {
            // The guest waits for a lock another vCPU (or a preempted one) holds.
            directed_yield(vm, vcpu);
            Ok(None)
        }
        Exit::YieldTo { apic_id } => {
            sched_yield(vm, vcpu, apic_id);
            Ok(None)
        }
        Exit::Shutdown => {
            vcpu.set_exit(KVM_EXIT_SHUTDOWN);
            Ok(Some(0))
        }
        Exit::IrqWindowOpen => {
            vcpu.stats.inc(st::REQUEST_IRQ_EXITS);
            vcpu.set_exit(KVM_EXIT_IRQ_WINDOW_OPEN);
            Ok(Some(0))
        }
        Exit::FailEntry { reason } => {
            vcpu.set_exit(KVM_EXIT_FAIL_ENTRY);
            let b = RUN_U
                + offset_of!(
                    kvm_run__bindgen_ty_1__bindgen_ty_2,
                    hardware_entry_failure_reason
                );
            vcpu.run_put(b, &reason);
            let c = RUN_U + offset_of!(kvm_run__bindgen_ty_1__bindgen_ty_2, cpu);
            vcpu.run_put(c, &cpu::this_cpu());
            Ok(Some(0))
        }
        Exit::Debug {
            exception,
            dr6,
            dr7,
        } => {
            vcpu.set_exit(KVM_EXIT_DEBUG);
            let a = RUN_U + offset_of!(kvm_run__bindgen_ty_1__bindgen_ty_5, arch);
            let arch = kvm_debug_exit_arch {
                exception,
                pad: 0,
                pc: s.regs.rip,
                dr6,
                dr7,
            };
            let _ = vcpu.run.write_bytes(a, debug_arch_bytes(&arch).as_slice());
            Ok(Some(0))
        }
        Exit::Io {
            port,
            size,
            input,
            string,
            rep,
            value,
            insn_len,
        } => {
            if string {
                return string_io(vm, vcpu, g, port, size, input, rep, insn_len);
            }
            // The in-kernel PIC's and PIT's ports complete here (RIP is already past the
            // instruction).
            if let Some(v) = crate::kvm::irqchip::device_pio(vm, port, size, input, value) {
                if input {
                    // Narrow sizes merge into RAX; 4 bytes zero-extend.
                    emulate::set_gpr(s, 0, size.min(4), false, u64::from(v));
                }
                return Ok(None);
            }
            // An OUT to an ioeventfd or into a coalesced PIO zone completes without an
            // exit (the backend already moved RIP past it).
            let (p, n) = (u64::from(port), u32::from(size));
            if !input
                && (crate::kvm::ioeventfd::write(vm, p, n, true, u64::from(value))
                    || crate::kvm::coalesced::write(vm, p, n, true, &value.to_le_bytes()))
            {
                return Ok(None);
            }
            // The backend moved RIP past the instruction; KVM reports the exit with RIP at
            // the instruction and skips it when the I/O completes.
            s.regs.rip = s.regs.rip.wrapping_sub(u64::from(insn_len));
            // (KVM_RUN made the data page before the guest ran: `get` finds it.)
            if !input {
                let data = value.to_le_bytes();
                let _ = vcpu
                    .pio
                    .get()?
                    .write_bytes(0, data.get(..usize::from(size)).unwrap_or(&[]));
            }
            g.pending = Pending::Pio {
                input,
                size,
                len: insn_len,
                linear_rip: emulate::linear_rip(&g.state),
            };
            io_exit(vcpu, port, size, input, 1);
            Ok(Some(0))
        }
        Exit::TdpFault {
            gpa,
            write,
            fetch,
            vectoring,
            hw_reason: reason,
            hw_qual: qual,
        } => {
            vcpu.stats.inc(st::PF_TAKEN);
            match vm.fault_in(gpa, write, fetch, vcpu.dirty_ring())? {
                Faulted::Fixed => {
                    vcpu.stats.inc(st::PF_FIXED);
                    return Ok(None);
                }
                Faulted::Spurious => {
                    vcpu.stats.inc(st::PF_SPURIOUS);
                    return Ok(None);
                }
                Faulted::NoMemory => {}
            }
            // No memory behind the address: the access is emulated (KVM's RET_PF_EMULATE).
            vcpu.stats.inc(st::PF_EMULATE);
            if vectoring & (1 << 31) != 0 {
                // The guest's IDT, GDT or stack is MMIO while an event is delivered:
                // nothing can be emulated. KVM reports it with the event, the exit
                // reason and qualification, the GPA and the CPU of the last entry.
                return Ok(internal_error(
                    vcpu,
                    KVM_INTERNAL_ERROR_DELIVERY_EV,
                    &[
                        u64::from(vectoring),
                        u64::from(reason),
                        qual,
                        gpa,
                        u64::from(cpu::this_cpu()),
                    ],
                ));
            }
            let exit = [u64::from(reason), qual, u64::from(vectoring), 0, 0];
            if fetch {
                // Executing from MMIO cannot be emulated.
                return Ok(emulation_failure(vm, vcpu, &mut g.state, &[], exit));
            }
            mmio(vm, vcpu, g, gpa, write, exit)
        }
        Exit::CrAccess { cr, op, insn_len } => cr_access(vm, vcpu, g, cr, op, insn_len),
        Exit::DrAccess {
            dr,
            write,
            gpr,
            insn_len,
        } => {
            // DR7.GD: the MOV itself raises #DB (DR6.BD). Userspace's hardware
            // breakpoints take it to KVM_EXIT_DEBUG; otherwise the guest gets it, with GD
            // cleared as the CPU does.
            const GD: u64 = 1 << 13;
            const BD: u64 = 1 << 13;
            if g.guest_debug & KVM_GUESTDBG_USE_HW_BP != 0 && g.debug_dr[7] & GD != 0 {
                let dr7 = g.debug_dr[7];
                return handle_exit(
                    vm,
                    vcpu,
                    g,
                    Exit::Debug {
                        exception: 1,
                        dr6: 0xffff_0ff0 | BD,
                        dr7,
                    },
                );
            }
            if s.dr7 & GD != 0 {
                s.dr6 = (s.dr6 & !0xf) | 0xffff_0ff0 | BD;
                s.dr7 &= !GD;
                s.dirty = true;
                inject(s, emulate::db());
                return Ok(None);
            }
            dr_access(s, dr, write, gpr, insn_len)
        }
        Exit::Rdmsr { insn_len } => msr_access(vm, vcpu, g, false, insn_len),
        Exit::Wrmsr { insn_len } => msr_access(vm, vcpu, g, true, insn_len),
        Exit::RealModeException {
            vector,
            error_code,
            insn_len,
        } => {
            if vector == 13 {
                return real_mode_gp(vm, vcpu, g);
            }
            // Software interrupts (INT3, INTO) completed their instruction; faults did not.
            let s = &mut g.state;
            if vector == 3 || vector == 4 {
                s.regs.rip = s.regs.rip.wrapping_add(u64::from(insn_len));
            }
            inject(
                s,
                Exception {
                    vector,
                    error_code,
                    injected: false,
                    payload: None,
                },
            );
            Ok(None)
        }
        Exit::Intercepted { what, len } => intercepted(vm, vcpu, g, what, len),
        Exit::InvalidOpcode => fix_hypercall(vm, vcpu, g),
        Exit::Unhandled { reason, qual } => {
            pr_warn_ratelimited!("unhandled VM exit {} (qualification {:#x})\n", reason, qual);
            Ok(internal_error(
                vcpu,
                KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON,
                &[u64::from(reason), u64::from(cpu::this_cpu())],
            ))
        }
    }
}

/// MOV to (`write`) or from debug register `dr` with general register `gpr`.
pub(super) fn dr_access(
    s: &mut VcpuState,
    dr: u8,
    write: bool,
    gpr: u8,
    insn_len: u8,
) -> Result<Option<isize>> {
    let dr = usize::from(dr & 7);
    let from = !write;
    if (dr == 4 || dr == 5) && s.cr4 & state::cr4::DE != 0 {
        inject(s, emulate::ud());
        return Ok(None);
    }
    if s.cpl() != 0 {
        inject(s, emulate::gp(0));
        return Ok(None);
    }
    let dr = if (4..=5).contains(&dr) { dr + 2 } else { dr };
    if from {
        let v = match dr {
            0..=3 => s.db.get(dr).copied().unwrap_or(0),
            6 => s.dr6,
            _ => s.dr7,
        };
        emulate::set_gpr(s, gpr, 8, false, v);
    } else {
        let v = emulate::gpr64(s, gpr);
        match dr {
            0..=3 => {
                if let Some(d) = s.db.get_mut(dr) {
                    *d = v;
                }
            }
            6 | 7 if v >> 32 != 0 => {
                inject(s, emulate::gp(0));
                return Ok(None);
            }
            6 => s.dr6 = v & !0x1000 | 0xffff_0ff0,
            _ => s.dr7 = v & !0xd000 | 0x400,
        }
    }
    s.skip_instruction(insn_len);
    s.dirty = true;
    Ok(None)
}

/// A control-register access: `op` on CR`cr`.
pub(super) fn cr_access(
    vm: &Vm,
    vcpu: &Vcpu,
    g: &mut VcpuInner,
    cr: u8,
    op: CrOp,
    len: u8,
) -> Result<Option<isize>> {
    let valid4 = emulate::cr4_valid_bits(&g.cpuid);
    let s = &mut g.state;
    let mut exit_tpr = false;
    let r = match op {
        CrOp::Write { gpr } => {
            let v = emulate::gpr64(s, gpr);
            match cr {
                0 => emulate::set_cr0(s, v).map(Some),
                3 => emulate::set_cr3(s, v).map(Some),
                4 => emulate::set_cr4(s, v, valid4).map(Some),
                8 => {
                    if v & !0xf != 0 {
                        Err(emulate::gp(0))
                    } else {
                        s.cr8 = v;
                        match g.lapic.as_mut() {
                            Some(a) => a.set_cr8(v),
                            None => exit_tpr = true,
                        }
                        Ok(None)
                    }
                }
                _ => Err(emulate::ud()),
            }
        }
        CrOp::Read { gpr } => {
            let v = match cr {
                3 => s.cr3,
                8 => s.cr8,
                _ => 0,
            };
            emulate::set_gpr(s, gpr, 8, false, v);
            Ok(None)
        }
        CrOp::Clts => {
            s.cr0 &= !state::cr0::TS;
            Ok(None)
        }
        CrOp::Lmsw { value } => {
            // LMSW: the low four bits of CR0; PE cannot be cleared.
            let src = u64::from(value) & 0xf;
            let v = s.cr0 & !0xe | src & 0xf | s.cr0 & state::cr0::PE;
            emulate::set_cr0(s, v).map(Some)
        }
    };
    match r {
        Err(f) => {
            inject(s, f);
            s.dirty = true;
            return Ok(None);
        }
        Ok(Some(effect)) => {
            if effect.load_pdptrs && !emulate::load_pdptrs(s, &VmMem::of(vm, vcpu))? {
                inject(s, emulate::gp(0));
                s.dirty = true;
                return Ok(None);
            }
            if effect.flush {
                vm.flush_gen.fetch_add(1, Ordering::SeqCst);
            }
        }
        Ok(None) => {}
    }
    s.skip_instruction(len);
    s.dirty = true;
    if exit_tpr {
        // No in-kernel local APIC: userspace's APIC takes the new TPR (KVM_EXIT_SET_TPR).
        vcpu.set_exit(KVM_EXIT_SET_TPR);
        return Ok(Some(0));
    }
    Ok(None)
}

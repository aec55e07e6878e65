// SPDX-License-Identifier: GPL-2.0

//! The in-kernel local APIC as the vCPU loop sees it: its clock, MMIO, INIT/SIPI and
//! what it has to deliver before each entry.

use super::*;

pub(super) fn clock(s: &VcpuState) -> Clock {
    Clock::of(s, host_tsc())
}

/// After the APIC's registers or IA32_APIC_BASE changed: republish its addressing for
/// senders, mirror TPR into CR8.
pub(super) fn apic_changed(vcpu: &Vcpu, g: &mut VcpuInner) {
    if let (Some(a), Some(mb)) = (g.lapic.as_ref(), vcpu.apic.as_ref()) {
        a.publish(mb, g.state.apic_base);
        g.state.cr8 = a.cr8();
    }
}

/// A guest access to the xAPIC page, completed in the kernel.
pub(super) fn apic_mmio(
    vm: &Vm,
    vcpu: &Vcpu,
    g: &mut VcpuInner,
    gpa: u64,
    op: &MemOp,
    code: &[u8],
) {
    let off = (gpa & 0xfff) as u32;
    let apic_base = g.state.apic_base;
    let now = crate::sys::wait::now_ns();
    // KVM_TPR_ACCESS_REPORTING: an access to TPR is reported at the next entry.
    if g.tpr_access_reporting && off & !0xf == lapic::reg::TPR {
        g.pending_tpr_access = Some((g.state.regs.rip, op.write));
    }
    let Some(a) = g.lapic.as_mut() else {
        return;
    };
    if op.write {
        let eff = a.mmio_write(off, op.size, op.value, apic_base, now);
        g.state.skip_instruction(op.len);
        advance_string_op(&mut g.state, code, op);
        apic_changed(vcpu, g);
        effects(vm, vcpu, g, eff);
    } else {
        let v = a.mmio_read(off, op.size, apic_base, now);
        emulate::complete_mmio_read(&mut g.state, op, v);
        g.state.skip_instruction(op.len);
    }
}

/// What a local APIC register write asks of the VM: an IPI, an EOI for the in-kernel
/// I/O APIC or (split irqchip) for userspace's.
pub(super) fn effects(vm: &Vm, vcpu: &Vcpu, g: &mut VcpuInner, eff: lapic::WriteEffect) {
    if let Some(ipi) = eff.ipi {
        crate::kvm::irq::deliver(vm, &ipi);
    }
    if let Some((v, level)) = eff.eoi {
        if vm.full_irqchip.load(Ordering::Acquire) {
            crate::kvm::irqchip::eoi(vm, vcpu.id, v, level);
        } else if let Some(mb) = vcpu.apic.as_ref() {
            if crate::kvm::irq::split_eoi_exit(vm, vcpu.id, &mb.addressing(), v) {
                g.pending_ioapic_eoi = Some(v);
            }
        }
    }
}

/// INIT (KVM's `kvm_vcpu_reset(init_event)`): the reset register state, MSRs and XCR0
/// kept, CR0.CD/NW preserved; the BSP runs on, an AP waits for a SIPI.
pub(super) fn init_event(vm: &Vm, g: &mut VcpuInner) {
    let old = &g.state;
    let mut n = VcpuState::reset(old.apic_base, old.tsc_offset, old.tsc_rate);
    n.msrs = old.msrs;
    n.xcr0 = old.xcr0;
    n.cr0 = state::cr0::ET | old.cr0 & (state::cr0::NW | state::cr0::CD);
    n.regs.rdx = g
        .cpuid
        .iter()
        .find(|e| e.function == 1)
        .map_or(0x600, |e| u64::from(e.eax));
    n.mp_state = if old.apic_base & lapic::base::BSP != 0 {
        KVM_MP_STATE_RUNNABLE
    } else {
        KVM_MP_STATE_INIT_RECEIVED
    };
    let apic_base = n.apic_base;
    g.state = n;
    g.pending = Pending::None;
    if let Some(a) = g.lapic.as_mut() {
        a.reset(true, apic_base);
        g.state.cr8 = a.cr8();
    }
    vm.flush_gen.fetch_add(1, Ordering::SeqCst);
}

/// Takes what was posted to the APIC (KVM's `kvm_apic_accept_events`): fixed interrupts
/// into IRR, NMIs, INIT, SIPI; fires an expired timer.
pub(super) fn apic_accept_events(vm: &Vm, vcpu: &Vcpu, g: &mut VcpuInner) {
    let Some(mb) = vcpu.apic.as_ref() else {
        return;
    };
    let c = clock(&g.state);
    let apic_base = g.state.apic_base;
    let Some(a) = g.lapic.as_mut() else {
        return;
    };
    let posted = a.fold(mb);
    a.check_timer(&c);
    a.inject_timer(apic_base);
    if posted.nmi > 0 {
        g.state.events.nmi_pending = true;
    }
    if posted.init {
        g.sipi_pending = false;
        // INIT keeps the MSRs, the SYSENTER ones among them: bring them back from the
        // backend first. If the hardware is out of reach (another hypervisor took VMX
        // on this CPU; the run fails with EBUSY next), INIT goes ahead with the values of
        // the last full save rather than wait for a sync that may never come. (A SIPI
        // changes only CS's selector and base and RIP, which are always current.)
        let _ = g.sync_state();
        init_event(vm, g);
        apic_changed(vcpu, g);
    }
    if let Some(v) = posted.sipi {
        g.sipi_vector = v;
        g.sipi_pending = true;
    }
    if core::mem::take(&mut g.sipi_pending) && g.state.mp_state == KVM_MP_STATE_INIT_RECEIVED {
        // Real mode at vector * 4096.
        let v = u64::from(g.sipi_vector);
        let s = &mut g.state;
        s.segs[state::CS].selector = (v << 8) as u16;
        s.segs[state::CS].base = v << 12;
        s.regs.rip = 0;
        s.mp_state = KVM_MP_STATE_RUNNABLE;
        s.dirty = true;
    }
}

/// An interrupt the guest can take now, or an event that ends HLT (KVM's
/// `kvm_vcpu_has_events`).
pub(super) fn apic_has_events(vm: &Vm, g: &mut VcpuInner) -> bool {
    let s = &g.state;
    let ev = &s.events;
    if ev.exception.is_some() || ev.nmi_injected || ev.interrupt.is_some() {
        return true;
    }
    if ev.nmi_pending && !ev.nmi_masked {
        return true;
    }
    let if_ok = s.regs.rflags & state::rflags::IF != 0 && ev.shadow == 0;
    let apic_base = s.apic_base;
    let Some(a) = g.lapic.as_mut() else {
        return false;
    };
    if_ok
        && (a.has_interrupt(apic_base).is_some()
            || ((a.ext_vector.is_some() || vm.pic_output.load(Ordering::Acquire))
                && a.accept_pic_intr(apic_base)))
}

/// Before entering the guest with an in-kernel APIC: take posted events, sleep while
/// halted or waiting for a SIPI, and queue the interrupt the guest can take. Returns
/// whether an interrupt waits for the guest to open its interrupt window; `EINTR` when a
/// signal ended a wait.
pub(super) fn apic_pre_entry(vm: &Vm, vcpu: &Vcpu, g: &mut VcpuInner) -> Result<bool> {
    let Some(mb) = vcpu.apic.as_ref() else {
        return Ok(false);
    };
    loop {
        crate::kvm::irqchip::run_deferred(vm);
        apic_accept_events(vm, vcpu, g);
        let halted = match g.state.mp_state {
            KVM_MP_STATE_RUNNABLE => break,
            KVM_MP_STATE_HALTED | KVM_MP_STATE_AP_RESET_HOLD => {
                if apic_has_events(vm, g) {
                    g.state.mp_state = KVM_MP_STATE_RUNNABLE;
                    break;
                }
                true
            }
            // Wait-for-SIPI: only INIT and SIPI matter.
            _ => false,
        };
        if halted {
            let c = clock(&g.state);
            let t = g.lapic.as_ref().and_then(|a| a.timer_remaining_ns(&c));
            // The I/O APIC may hold back a level interrupt for a while (EOI storms).
            let timeout = match (t, crate::kvm::irqchip::run_deferred(vm)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if let super::halt::Halt::Signal = super::halt::halt(vm, vcpu, g, mb, timeout) {
                return Err(EINTR);
            }
            continue;
        }
        // Wait-for-SIPI: a plain sleep, without polling or halt accounting (as KVM).
        vcpu.stats.set(st::BLOCKING, 1);
        let woken = mb.wq.wait(&|| mb.any(), None);
        vcpu.stats.set(st::BLOCKING, 0);
        if woken == crate::sys::wait::Woken::Signal {
            return Err(EINTR);
        }
    }
    // KVM_GUESTDBG_BLOCKIRQ: userspace asked for no interrupts while it debugs.
    if g.guest_debug & KVM_GUESTDBG_BLOCKIRQ != 0 {
        return Ok(false);
    }
    let s = &mut g.state;
    let apic_base = s.apic_base;
    let Some(a) = g.lapic.as_mut() else {
        return Ok(false);
    };
    // ExtINT first: a vector userspace's PIC gave (split irqchip) or the in-kernel
    // PIC's output, if LINT0 passes it.
    let accept_pic = a.accept_pic_intr(apic_base);
    let pic = accept_pic && vm.pic_output.load(Ordering::Acquire);
    let ext = a.ext_vector.filter(|_| accept_pic);
    let Some(vector) = ext
        .or_else(|| pic.then_some(0))
        .or_else(|| a.has_interrupt(apic_base))
    else {
        return Ok(false);
    };
    let ev = &s.events;
    let busy = ev.interrupt.is_some()
        || ev.exception.is_some()
        || ev.soft_interrupt.is_some()
        || ev.nmi_injected;
    if busy || s.regs.rflags & state::rflags::IF == 0 {
        return Ok(true);
    }
    if ev.shadow != 0 {
        // Only the shadow holds the interrupt back. If the instruction in it is HLT
        // (STI; HLT), complete the HLT here and let the interrupt wake it, which leaves
        // the guest as the CPU would (the HLT run, the interrupt taken with RIP after
        // it) and saves an entry. It also keeps the guest's wake-up on an SVM that does
        // not load the shadow at VMRUN (QEMU 7.2): there the interrupt window opens
        // before the HLT, the handler returns to the HLT, and the guest would sleep
        // with its wake-up already taken.
        return if complete_hlt_in_shadow(vm, vcpu, g) {
            apic_pre_entry(vm, vcpu, g)
        } else {
            Ok(true)
        };
    }
    // Acknowledge: the vector leaves IRR for ISR (or the PIC's ExtINT is consumed).
    let vector = if ext.is_some() {
        a.ext_vector = None;
        vector
    } else if pic {
        // The PIC's acknowledge cycle gives the vector (spurious if it lost its request).
        match crate::kvm::irqchip::pic_ack(vm) {
            Some(v) => v,
            None => return Ok(false),
        }
    } else {
        a.ack(vector);
        vector
    };
    s.events.interrupt = Some(vector);
    s.events.interrupt_injected = true;
    Ok(false)
}

/// The guest is in an interrupt shadow (after STI or MOV SS) with an interrupt waiting
/// for the shadow alone: if the instruction in the shadow is a HLT at CPL 0, executes it
/// (RIP past it, the shadow over, halted) and returns true; the interrupt then ends the
/// halt, with RIP after the HLT as the CPU leaves it.
fn complete_hlt_in_shadow(vm: &Vm, vcpu: &Vcpu, g: &mut VcpuInner) -> bool {
    // A single-stepping debugger sees each instruction the guest runs, and a breakpoint
    // on the HLT must be hit (userspace's or the guest's own): not this way.
    let breakpoints = g.guest_debug & (KVM_GUESTDBG_SINGLESTEP | KVM_GUESTDBG_USE_HW_BP) != 0
        || g.state.dr7 & 0xff != 0;
    if breakpoints || g.sync_state().is_err() {
        return false;
    }
    let mut code = [0u8; 15];
    if g.state.cpl() != 0 || fetch(vm, &g.state, &mut code).is_err() || code[0] != 0xf4 {
        return false;
    }
    g.state.skip_instruction(1);
    g.state.mp_state = KVM_MP_STATE_HALTED;
    vcpu.stats.inc(st::HALT_EXITS);
    true
}

/// `KVM_SET_VAPIC_ADDR`: the guest page where TPR, the highest in-service and requested
/// vectors are kept for the guest to read, and TPR taken back from (QEMU's kvmvapic).
/// 0 turns it off. EINVAL without an in-kernel APIC or for a word not in a memslot.
pub(super) fn set_vapic_addr(vm: &Vm, vcpu: &Vcpu, g: &mut VcpuInner, arg: usize) -> Result<isize> {
    if g.lapic.is_none() {
        return Err(EINVAL);
    }
    let va: kvm_vapic_addr = uaccess::read(arg)?;
    let a = va.vapic_addr;
    if a != 0 {
        let mem = VmMem::of(vm, vcpu);
        if (a & 0xfff) + 4 > 4096 || !mem.backed(a) {
            return Err(EINVAL);
        }
    }
    g.vapic_addr = a;
    Ok(0)
}

/// `KVM_TPR_ACCESS_REPORTING`: with `enabled`, each guest access to the xAPIC's TPR
/// register exits with KVM_EXIT_TPR_ACCESS. The structure goes back unchanged.
pub(super) fn tpr_access_reporting(g: &mut VcpuInner, arg: usize) -> Result<isize> {
    let c: kvm_tpr_access_ctl = uaccess::read(arg)?;
    if c.flags != 0 {
        return Err(EINVAL);
    }
    g.tpr_access_reporting = c.enabled != 0;
    uaccess::write(arg, &c)?;
    Ok(0)
}

/// Before an entry: the VAPIC page gets the APIC's word (KVM's
/// `kvm_lapic_sync_to_vapic`), while the APIC is enabled.
pub(super) fn sync_to_vapic(vm: &Vm, vcpu: &Vcpu, g: &VcpuInner) {
    if g.vapic_addr == 0 {
        return;
    }
    if let Some(a) = g.lapic.as_ref() {
        let on = a.addressing(g.state.apic_base);
        if !on.hw_enabled || !on.sw_enabled {
            return;
        }
        // A page that went away since is skipped, as KVM's cache would.
        let _ = VmMem::of(vm, vcpu).write(g.vapic_addr, &a.vapic_word().to_le_bytes());
    }
}

/// After an exit: TPR as the guest left it in the VAPIC page (KVM's
/// `kvm_lapic_sync_from_vapic`).
pub(super) fn sync_from_vapic(vm: &Vm, vcpu: &Vcpu, g: &mut VcpuInner) {
    if g.vapic_addr == 0 {
        return;
    }
    let mut b = [0u8; 4];
    if VmMem::of(vm, vcpu).read(g.vapic_addr, &mut b).is_err() {
        return;
    }
    if let Some(a) = g.lapic.as_mut() {
        a.set_tpr(b[0]);
    }
    apic_changed(vcpu, g);
}

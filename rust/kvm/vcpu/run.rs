// SPDX-License-Identifier: GPL-2.0

//! KVM_RUN: the loop that enters the guest, handles its exits and returns to userspace
//! with what `struct kvm_run` must show.

use super::*;

pub(super) fn run(vm: &Vm, vcpu: &Vcpu, g: &mut VcpuInner) -> Result<isize> {
    // The PIO data page exists before the guest first runs: an IN or OUT exit then never
    // has to make it, which could fail after the backend had already moved the guest
    // past the instruction (a vCPU that is never run never gets one).
    vcpu.pio.get()?;
    let immediate = vcpu.run_u8(offset_of!(kvm_run, immediate_exit)) != 0;
    vcpu.run_put(offset_of!(kvm_run, flags), &0u16);
    let valid = vcpu.run_u64(offset_of!(kvm_run, kvm_valid_regs));
    let dirty = vcpu.run_u64(offset_of!(kvm_run, kvm_dirty_regs));
    let sync_mask = u64::from(KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS | KVM_SYNC_X86_EVENTS);
    let r = (|| -> Result<isize> {
        if valid & !sync_mask != 0 || dirty & !sync_mask != 0 {
            return Err(EINVAL);
        }
        if dirty != 0 {
            sync_regs_in(vm, vcpu, g, dirty)?;
        }
        // The TPR, as userspace's local APIC sees it (an in-kernel APIC owns it instead).
        if g.lapic.is_none() {
            let cr8 = vcpu.run_u64(offset_of!(kvm_run, cr8));
            if cr8 & !0xf != 0 {
                return Err(EINVAL);
            }
            g.state.cr8 = cr8;
        }
        complete_pending(vm, vcpu, g)?;
        if immediate {
            return Err(EINTR);
        }
        if core::mem::take(&mut g.triple_fault) {
            vcpu.set_exit(KVM_EXIT_SHUTDOWN);
            return Ok(0);
        }
        if g.state.mp_state == KVM_MP_STATE_UNINITIALIZED {
            return run_uninitialized(vm, vcpu, g);
        }
        if let Some(mask) = g.sigmask {
            // SAFETY: Blocks signals for this task until `deactivate` below.
            unsafe { ffi::rkvm_sigmask_activate(mask) };
        }
        let r = run_loop(vm, vcpu, g);
        if g.sigmask.is_some() {
            // SAFETY: Balances `activate`.
            unsafe { ffi::rkvm_sigmask_deactivate() };
        }
        r
    })();
    if valid != 0 {
        sync_regs_out(vcpu, g, valid);
    }
    post_run_save(vm, vcpu, g);
    r
}

/// KVM_RUN of an AP that never got INIT: sleep until INIT or SIPI arrive, take them, and
/// let userspace call again (`EAGAIN`), as KVM does.
pub(super) fn run_uninitialized(vm: &Vm, vcpu: &Vcpu, g: &mut VcpuInner) -> Result<isize> {
    if let Some(mb) = vcpu.apic.as_ref() {
        if mb.wq.wait(&|| mb.any(), None) == crate::sys::wait::Woken::Signal {
            vcpu.set_exit(KVM_EXIT_INTR);
            vcpu.stats.inc(st::SIGNAL_EXITS);
            return Err(EINTR);
        }
    }
    apic_accept_events(vm, vcpu, g);
    Err(EAGAIN)
}

/// Whether the PIC's ExtINT can be taken now (KVM's `kvm_cpu_accept_dm_intr`): always
/// without an in-kernel APIC; with one, when LINT0 passes ExtINT and none is queued.
pub(super) fn accept_dm_intr(vm: &Vm, g: &VcpuInner) -> bool {
    match g.lapic.as_ref() {
        None => true,
        Some(a) => {
            a.ext_vector.is_none()
                && !vm.pic_output.load(Ordering::Acquire)
                && a.accept_pic_intr(g.state.apic_base)
        }
    }
}

/// KVM's `post_kvm_run_save`: the state userspace's interrupt controller needs.
pub(super) fn post_run_save(vm: &Vm, vcpu: &Vcpu, g: &VcpuInner) {
    let s = &g.state;
    let if_flag = u8::from(s.regs.rflags & state::rflags::IF != 0);
    let ready = u8::from(
        if_flag != 0
            && s.events.shadow == 0
            && s.events.interrupt.is_none()
            && s.events.exception.is_none()
            && !s.events.nmi_injected
            && accept_dm_intr(vm, g),
    );
    vcpu.run_put(offset_of!(kvm_run, if_flag), &if_flag);
    vcpu.run_put(offset_of!(kvm_run, cr8), &s.cr8);
    vcpu.run_put(offset_of!(kvm_run, apic_base), &s.apic_base);
    vcpu.run_put(offset_of!(kvm_run, ready_for_interrupt_injection), &ready);
}

/// How soon an APIC timer must expire to be waited for before entry rather than let
/// the guest run (KVM's initial `lapic_timer_advance_ns`).
use crate::x86::lapic::window::TIMER_WAIT_NS;

pub(super) fn run_loop(vm: &Vm, vcpu: &Vcpu, g: &mut VcpuInner) -> Result<isize> {
    let k = vm.kvm;
    g.has_run = true;
    // Without unrestricted guest, real mode runs in virtual-8086 mode on rkvm's own TSS
    // and identity map.
    let rmode = if k.backend.needs_rmode_pages() {
        Some(vm.rmode_addrs()?)
    } else {
        None
    };
    // Steal time is brought up to date on the first entry of each KVM_RUN.
    let mut first_entry = true;
    loop {
        if cpu::handle_guest_entry_work().is_err() {
            vcpu.set_exit(KVM_EXIT_INTR);
            vcpu.stats.inc(st::SIGNAL_EXITS);
            return Err(EINTR);
        }
        if let Some((rip, write)) = g.pending_tpr_access.take() {
            type Tpr = kvm_run__bindgen_ty_1__bindgen_ty_9;
            vcpu.set_exit(KVM_EXIT_TPR_ACCESS);
            vcpu.run_put(RUN_U + offset_of!(Tpr, rip), &rip);
            vcpu.run_put(RUN_U + offset_of!(Tpr, is_write), &u32::from(write));
            return Ok(0);
        }
        if let Some(v) = g.pending_ioapic_eoi.take() {
            type Eoi = kvm_run__bindgen_ty_1__bindgen_ty_21;
            vcpu.set_exit(KVM_EXIT_IOAPIC_EOI);
            vcpu.run_put(RUN_U + offset_of!(Eoi, vector), &v);
            return Ok(0);
        }
        // Collected pages must be reset before the ring has no room left for one exit.
        if vcpu.dirty_ring().is_some_and(|r| r.soft_full()) {
            vcpu.set_exit(KVM_EXIT_DIRTY_RING_FULL);
            return Ok(0);
        }
        let request_irq_window = vcpu.run_u8(offset_of!(kvm_run, request_interrupt_window)) != 0
            && accept_dm_intr(vm, g);
        vcpu.kick.store(false, Ordering::SeqCst);
        let apic_window = match apic_pre_entry(vm, vcpu, g) {
            Ok(w) => w,
            Err(e) if e == EINTR => {
                vcpu.set_exit(KVM_EXIT_INTR);
                vcpu.stats.inc(st::SIGNAL_EXITS);
                return Err(EINTR);
            }
            Err(e) => return Err(e),
        };
        // An APIC timer that expires within about the cost of opening a window is waited
        // for here and delivered at the top of the loop (KVM fires its timer early and
        // waits before entry for the same reason), rather than given a window that would
        // close again before the guest ran.
        if g.lapic
            .as_ref()
            .is_some_and(|a| a.wait_timer(&g.state, TIMER_WAIT_NS).is_some())
        {
            continue;
        }
        // KVM's req_event: an entry that must first sort out events to inject (an
        // interrupt, exception or NMI queued or re-injected, or a window to open).
        let ev = &g.state.events;
        if request_irq_window
            || apic_window
            || ev.interrupt.is_some()
            || ev.exception.is_some()
            || ev.nmi_pending
            || ev.nmi_injected
        {
            vcpu.stats.inc(st::REQ_EVENT);
        }
        let host_khz = vm.kvm.arch.timer.tsc_khz;
        let timer_deadline_tsc = g
            .lapic
            .as_ref()
            .and_then(|a| a.deadline_tsc(&g.state, host_khz));
        // The APIC work the backend may finish in its window: only while nothing but
        // this APIC has to see an EOI or give an interrupt (no in-kernel I/O APIC or PIC,
        // no ExtINT from userspace's PIC waiting), and nothing watches its registers
        // (userspace debugging, TPR access reports, a VAPIC page).
        let window_apic = g.lapic.is_some()
            && !vm.full_irqchip.load(Ordering::Acquire)
            && g.guest_debug == 0
            && !g.tpr_access_reporting
            && g.vapic_addr == 0
            && g.lapic.as_ref().is_some_and(|a| a.ext_vector.is_none());
        let window_mem = crate::kvm::fault::WindowMem(vm);
        if rmode.is_some() && !g.state.protected() {
            g.sync_state()?;
            deliver_real_mode_event(vm, vcpu, &mut g.state)?;
        }
        sync_to_vapic(vm, vcpu, g);
        let tdp_root = vm.tdp_root;
        let log_writes = vm.logging_slots.load(Ordering::SeqCst) != 0;
        g.steal.update(
            vm,
            vcpu,
            g.state.msrs.steal_time,
            cpu::current_run_delay,
            first_entry,
        );
        first_entry = false;
        g.pvclock.update(
            vm,
            vcpu,
            g.state.msrs.kvm_system_time,
            g.state.tsc_offset,
            g.state.tsc_rate,
        );
        if vm.msr_filter_gen.load(Ordering::SeqCst) != g.msr_filter_gen {
            (g.msr_filter, g.msr_filter_gen) = vm.msr_filter();
        }
        let exit = {
            let VcpuInner {
                state,
                backend,
                fpu,
                cpuid,
                guest_caps,
                guest_debug,
                debug_dr,
                msr_filter,
                msr_filter_gen,
                enforce_pv_cpuid,
                lapic,
                ..
            } = &mut *g;
            let apic_base = state.apic_base;
            let pv_features = enforce_pv_cpuid.then(|| {
                let rt = crate::x86::cpuid::Runtime::FEATURES;
                crate::x86::cpuid::guest_cpuid(cpuid, crate::x86::cpuid::KVM_CPUID_FEATURES, 0, rt)
                    [0]
            });
            let mut ctx = RunCtx {
                uret: &k.arch.uret,
                tdp_root,
                log_writes,
                vm_logging: &vm.logging_slots,
                flush_gen: &vm.flush_gen,
                state,
                fpu,
                cpuid,
                guest_caps: *guest_caps,
                stats: &vcpu.stats,
                running_cpu: &vcpu.running_cpu,
                kick: &vcpu.kick,
                at_boundary: &vcpu.at_boundary,
                request_irq_window,
                apic_window,
                timer_deadline_tsc,
                guest_debug: *guest_debug,
                debug_dr: (*guest_debug & KVM_GUESTDBG_USE_HW_BP != 0).then_some(*debug_dr),
                rmode,
                quirks: vm.quirks(),
                msr_filter: msr_filter.as_deref().map(|f| f as &dyn MsrAllow),
                msr_filter_gen: *msr_filter_gen,
                vm_msr_filter_gen: &vm.msr_filter_gen,
                pv_features,
                arch_capabilities: k.msrs.arch_capabilities,
                platform_info_readable: vm.platform_info_readable.load(Ordering::Relaxed),
                apic: lapic
                    .as_deref_mut()
                    .filter(|_| window_apic)
                    .map(|lapic| WindowApic {
                        lapic,
                        apic_base,
                        host_khz,
                        eoi_exit: vm
                            .split_eoi_vectors
                            .each_ref()
                            .map(|w| w.load(Ordering::Acquire)),
                    }),
                window_mem: Some(&window_mem),
            };
            // Entering the guest may start an instruction (KVM's reasoning): until the
            // backend says the guest stopped for a host interrupt, a preemption from here
            // on is "other". One after such an exit (the host's scheduler running as the
            // interrupt returns, or at the next entry's check) is "reported".
            vcpu.at_boundary.store(false, Ordering::Relaxed);
            backend.run(&mut ctx)
        };
        // Pages the CPU logged as written reach the dirty log before anything reads it.
        if log_writes {
            let ring = vcpu.dirty_ring();
            g.backend
                .take_dirty(&mut |gpa| vm.mark_dirty(gpa >> 12, ring));
        }
        let exit = match exit {
            Ok(e) => {
                // The backend put the host's state and FPU back (KVM counts both when it
                // returns to userspace or its thread is switched out; rkvm switches them
                // at the end of every run of the backend).
                vcpu.stats.inc(st::HOST_STATE_RELOAD);
                vcpu.stats.inc(st::FPU_RELOAD);
                e
            }
            Err(e) if e == EBUSY => {
                pr_warn_ratelimited!("VMX is in use by another hypervisor: KVM_RUN refused\n");
                return Err(EBUSY);
            }
            Err(e) => return Err(e),
        };
        sync_from_vapic(vm, vcpu, g);
        let rip = g.state.regs.rip;
        let emulated = exit.is_instruction();
        match handle_exit(vm, vcpu, g, exit)? {
            Some(r) => return Ok(r),
            None => {
                // Single-stepping over an instruction rkvm completed itself: the step
                // ends here (the CPU never executed it), as KVM reports it.
                if emulated
                    && g.guest_debug & KVM_GUESTDBG_SINGLESTEP != 0
                    && g.state.regs.rip != rip
                {
                    let dr7 = g.state.dr7;
                    return handle_exit(
                        vm,
                        vcpu,
                        g,
                        Exit::Debug {
                            exception: 1,
                            dr6: 0xffff_4ff0,
                            dr7,
                        },
                    )
                    .map(|r| r.unwrap_or(0));
                }
                continue;
            }
        }
    }
}

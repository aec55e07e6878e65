// SPDX-License-Identifier: GPL-2.0

//! A halted vCPU waits for its wake-up (KVM's `kvm_vcpu_halt`): it first polls for up to
//! its halt-poll window, sparing the sleep and wake-up when the event comes soon, then
//! sleeps. The window adapts per vCPU as KVM's does: it grows after a halt shorter than
//! the longest poll allowed, shrinks after a longer one, and is counted in the
//! `halt_*poll*` stats.

use super::*;
use crate::sys::wait::{self, Woken};
use crate::x86::lapic::Mailbox;

/// How a halt ended.
pub(super) enum Halt {
    /// Look at the vCPU's events again (they may or may not let it run).
    Recheck,
    /// A signal is pending.
    Signal,
}

/// The longest poll for `vm`: KVM_CAP_HALT_POLL's value, else the module parameter.
fn max_poll_ns(vm: &Vm, p: &wait::HaltPoll) -> u32 {
    let v = vm.max_halt_poll_ns.load(Ordering::Acquire);
    u32::try_from(v).unwrap_or(p.max_ns)
}

/// Waits for `mb` or `timeout_ns` (the APIC timer or a deferred interrupt; `None`: no
/// deadline) while the vCPU is halted.
pub(super) fn halt(
    vm: &Vm,
    vcpu: &Vcpu,
    g: &mut VcpuInner,
    mb: &Mailbox,
    timeout_ns: Option<u64>,
) -> Halt {
    let p = wait::halt_poll();
    g.halt_poll_ns = g.halt_poll_ns.min(max_poll_ns(vm, &p));
    let poll_ns = u64::from(g.halt_poll_ns);
    let start = wait::now_ns();
    let due = |now: u64| timeout_ns.is_some_and(|t| now.saturating_sub(start) >= t);
    let mut now = start;
    let mut poll_end = start;
    let mut signal = false;
    let mut ended = false;
    if poll_ns != 0 {
        let stop = start.saturating_add(poll_ns);
        loop {
            if mb.any() || due(now) {
                ended = true;
                break;
            }
            if cpu::signal_pending() {
                ended = true;
                signal = true;
                break;
            }
            core::hint::spin_loop();
            now = wait::now_ns();
            poll_end = now;
            // As KVM's `kvm_vcpu_can_poll`: not while another task could use the CPU.
            if now >= stop || cpu::need_resched() || !cpu::single_task_running() {
                break;
            }
        }
    }
    let mut waited = false;
    if !ended && !mb.any() {
        let left = timeout_ns.map(|t| t.saturating_sub(now.saturating_sub(start)));
        if left != Some(0) {
            vcpu.stats.set(st::BLOCKING, 1);
            let woken = mb.wq.wait(&|| mb.any(), left);
            vcpu.stats.set(st::BLOCKING, 0);
            now = wait::now_ns();
            waited = true;
            let slept = now.saturating_sub(poll_end);
            vcpu.stats.add(st::HALT_WAIT_NS, slept);
            vcpu.halt_hists.wait.record(slept);
            match woken {
                Woken::Signal => signal = true,
                // Woken by an event or by the deadline: KVM counts every wake-up of a
                // sleeping vCPU, its timer's included.
                Woken::Ready | Woken::Timeout => vcpu.stats.inc(st::HALT_WAKEUP),
            }
        }
    }
    if poll_ns != 0 {
        // As KVM: the poll succeeded if the vCPU never slept, even if the event came
        // after the poll ended but before the sleep began.
        let polled = poll_end.saturating_sub(start);
        vcpu.stats.inc(st::HALT_ATTEMPTED_POLL);
        if waited {
            vcpu.stats.add(st::HALT_POLL_FAIL_NS, polled);
            vcpu.halt_hists.poll_fail.record(polled);
        } else {
            vcpu.stats.inc(st::HALT_SUCCESSFUL_POLL);
            vcpu.stats.add(st::HALT_POLL_SUCCESS_NS, polled);
            vcpu.halt_hists.poll_success.record(polled);
        }
    }
    adapt(g, now.saturating_sub(start), max_poll_ns(vm, &p), &p);
    if signal {
        Halt::Signal
    } else {
        Halt::Recheck
    }
}

/// Grows or shrinks the vCPU's poll after a halt of `halt_ns` (KVM's rules).
fn adapt(g: &mut VcpuInner, halt_ns: u64, max: u32, p: &wait::HaltPoll) {
    let cur = g.halt_poll_ns;
    g.halt_poll_ns = if max == 0 {
        0
    } else if halt_ns <= u64::from(cur) {
        cur
    } else if cur != 0 && halt_ns > u64::from(max) {
        // A long sleep: polling that long would have been wasted.
        let v = cur.checked_div(p.shrink).unwrap_or(0);
        if v < p.grow_start {
            0
        } else {
            v
        }
    } else if cur < max && halt_ns < u64::from(max) {
        // A short halt the poll was too short for.
        if p.grow == 0 {
            cur
        } else {
            cur.saturating_mul(p.grow).max(p.grow_start)
        }
    } else {
        cur
    };
}

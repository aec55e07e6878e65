// SPDX-License-Identifier: GPL-2.0

//! KVM's VM and vCPU stat tables (names and the indices rkvm counts) and the counters
//! that hold them. In KVM the x86 descriptors live in `x86.c`; here the generic ones sit
//! with them so that a backend can count without reaching into the generic core, which
//! owns the stats fd and the debugfs files (`kvm/stats.rs`).

use core::sync::atomic::{AtomicU64, Ordering};
use kernel::prelude::*;

/// How a stat counts, as KVM describes it (its `STATS_DESC_*` kinds).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    /// Only grows.
    Counter,
    /// A current value (goes up and down).
    Instant,
    /// A current yes/no.
    Flag,
    /// Nanoseconds, only grows.
    TimeNs,
    /// A base-2 logarithmic histogram of nanoseconds.
    HistNs,
}

/// One exported stat.
pub(crate) struct Stat {
    pub(crate) name: &'static CStr,
    pub(crate) ty: Ty,
}

const fn stat(name: &'static CStr, ty: Ty) -> Stat {
    Stat { name, ty }
}

/// The position of `name` in `table` (`usize::MAX` if absent; the indices below are
/// checked at compile time).
const fn position(table: &[Stat], name: &CStr) -> usize {
    let want = name.to_bytes();
    let mut i = 0;
    while i < table.len() {
        let have = table[i].name.to_bytes();
        if have.len() == want.len() {
            let mut j = 0;
            while j < have.len() && have[j] == want[j] {
                j += 1;
            }
            if j == have.len() {
                return i;
            }
        }
        i += 1;
    }
    usize::MAX
}

/// Declares `NAME: usize`, the index of stat "name" in `$table`, checked at compile time.
macro_rules! indices {
    ($table:expr; $($name:ident = $s:literal),* $(,)?) => {
        $(
            pub(crate) const $name: usize = super::position($table, $s);
            const _: () = assert!($name < $table.len());
        )*
    };
}

/// KVM's per-VM stats, generic then x86, in KVM's order, without those whose event
/// cannot happen in rkvm: the shadow MMU's (`mmu_*`, `max_mmu_*`), since rkvm only uses
/// two-dimensional paging.
pub(crate) const VM_STATS: &[Stat] = &[
    stat(c"remote_tlb_flush", Ty::Counter),
    stat(c"remote_tlb_flush_requests", Ty::Counter),
    stat(c"pages_4k", Ty::Instant),
    stat(c"pages_2m", Ty::Instant),
    stat(c"pages_1g", Ty::Instant),
    stat(c"nx_lpage_splits", Ty::Instant),
];

/// KVM's per-vCPU stats, generic then x86, in KVM's order, without those whose event
/// cannot happen in rkvm: `halt_poll_invalid` (only s390 has invalid wake-ups),
/// `pf_fast` and `pf_mmio_spte_created` (no lockless fault path, no cached MMIO
/// entries), `invlpg` (INVLPG never exits under EPT or NPT), and
/// nested virtualization's `nested_run`, `guest_mode` and `notify_window_exits`.
pub(crate) const VCPU_STATS: &[Stat] = &[
    stat(c"halt_successful_poll", Ty::Counter),
    stat(c"halt_attempted_poll", Ty::Counter),
    stat(c"halt_wakeup", Ty::Counter),
    stat(c"halt_poll_success_ns", Ty::TimeNs),
    stat(c"halt_poll_fail_ns", Ty::TimeNs),
    stat(c"halt_wait_ns", Ty::TimeNs),
    stat(c"halt_poll_success_hist", Ty::HistNs),
    stat(c"halt_poll_fail_hist", Ty::HistNs),
    stat(c"halt_wait_hist", Ty::HistNs),
    stat(c"blocking", Ty::Flag),
    stat(c"pf_taken", Ty::Counter),
    stat(c"pf_fixed", Ty::Counter),
    stat(c"pf_emulate", Ty::Counter),
    stat(c"pf_spurious", Ty::Counter),
    stat(c"pf_guest", Ty::Counter),
    stat(c"tlb_flush", Ty::Counter),
    stat(c"exits", Ty::Counter),
    stat(c"io_exits", Ty::Counter),
    stat(c"mmio_exits", Ty::Counter),
    stat(c"signal_exits", Ty::Counter),
    stat(c"irq_window_exits", Ty::Counter),
    stat(c"nmi_window_exits", Ty::Counter),
    stat(c"l1d_flush", Ty::Counter),
    stat(c"halt_exits", Ty::Counter),
    stat(c"request_irq_exits", Ty::Counter),
    stat(c"irq_exits", Ty::Counter),
    stat(c"host_state_reload", Ty::Counter),
    stat(c"fpu_reload", Ty::Counter),
    stat(c"insn_emulation", Ty::Counter),
    stat(c"insn_emulation_fail", Ty::Counter),
    stat(c"hypercalls", Ty::Counter),
    stat(c"irq_injections", Ty::Counter),
    stat(c"nmi_injections", Ty::Counter),
    stat(c"req_event", Ty::Counter),
    stat(c"directed_yield_attempted", Ty::Counter),
    stat(c"directed_yield_successful", Ty::Counter),
    stat(c"preemption_reported", Ty::Counter),
    stat(c"preemption_other", Ty::Counter),
];

/// Indices into [`VM_STATS`].
pub(crate) mod vm {
    indices!(super::VM_STATS;
        REMOTE_TLB_FLUSH = c"remote_tlb_flush",
        REMOTE_TLB_FLUSH_REQUESTS = c"remote_tlb_flush_requests",
        PAGES_4K = c"pages_4k",
        PAGES_2M = c"pages_2m",
        PAGES_1G = c"pages_1g",
        NX_LPAGE_SPLITS = c"nx_lpage_splits",
    );
}

/// Indices into [`VCPU_STATS`].
pub(crate) mod vcpu {
    indices!(super::VCPU_STATS;
        HALT_SUCCESSFUL_POLL = c"halt_successful_poll",
        HALT_ATTEMPTED_POLL = c"halt_attempted_poll",
        HALT_WAKEUP = c"halt_wakeup",
        HALT_POLL_SUCCESS_NS = c"halt_poll_success_ns",
        HALT_POLL_FAIL_NS = c"halt_poll_fail_ns",
        HALT_WAIT_NS = c"halt_wait_ns",
        HALT_POLL_SUCCESS_HIST = c"halt_poll_success_hist",
        HALT_POLL_FAIL_HIST = c"halt_poll_fail_hist",
        HALT_WAIT_HIST = c"halt_wait_hist",
        BLOCKING = c"blocking",
        PF_TAKEN = c"pf_taken",
        PF_FIXED = c"pf_fixed",
        PF_EMULATE = c"pf_emulate",
        PF_SPURIOUS = c"pf_spurious",
        PF_GUEST = c"pf_guest",
        TLB_FLUSH = c"tlb_flush",
        EXITS = c"exits",
        IO_EXITS = c"io_exits",
        MMIO_EXITS = c"mmio_exits",
        SIGNAL_EXITS = c"signal_exits",
        IRQ_WINDOW_EXITS = c"irq_window_exits",
        NMI_WINDOW_EXITS = c"nmi_window_exits",
        L1D_FLUSH = c"l1d_flush",
        HALT_EXITS = c"halt_exits",
        REQUEST_IRQ_EXITS = c"request_irq_exits",
        IRQ_EXITS = c"irq_exits",
        HOST_STATE_RELOAD = c"host_state_reload",
        FPU_RELOAD = c"fpu_reload",
        INSN_EMULATION = c"insn_emulation",
        INSN_EMULATION_FAIL = c"insn_emulation_fail",
        HYPERCALLS = c"hypercalls",
        IRQ_INJECTIONS = c"irq_injections",
        NMI_INJECTIONS = c"nmi_injections",
        REQ_EVENT = c"req_event",
        DIRECTED_YIELD_ATTEMPTED = c"directed_yield_attempted",
        DIRECTED_YIELD_SUCCESSFUL = c"directed_yield_successful",
        PREEMPTION_REPORTED = c"preemption_reported",
        PREEMPTION_OTHER = c"preemption_other",
    );
}

/// A block of counters.
pub(crate) struct Counters<const N: usize> {
    v: [AtomicU64; N],
}

impl<const N: usize> Counters<N> {
    pub(crate) fn new() -> Self {
        Self {
            v: [const { AtomicU64::new(0) }; N],
        }
    }

    /// Adds `n` to counter `i` (ignored if out of range).
    pub(crate) fn add(&self, i: usize, n: u64) {
        if let Some(c) = self.v.get(i) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Increments counter `i`.
    pub(crate) fn inc(&self, i: usize) {
        self.add(i, 1);
    }

    /// Sets counter `i`.
    pub(crate) fn set(&self, i: usize, v: u64) {
        if let Some(c) = self.v.get(i) {
            c.store(v, Ordering::Relaxed);
        }
    }

    /// Reads counter `i`.
    pub(crate) fn get(&self, i: usize) -> u64 {
        self.v.get(i).map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

/// Counters of one VM.
pub(crate) type VmCounters = Counters<{ VM_STATS.len() }>;
/// Counters of one vCPU.
pub(crate) type VcpuCounters = Counters<{ VCPU_STATS.len() }>;

// SPDX-License-Identifier: GPL-2.0

//! KVM's VM and vCPU stat tables (names and the indices rkvm counts) and the counters
//! that hold them. In KVM the x86 descriptors live in `x86.c`; here the generic ones sit
//! with them so that a backend can count without reaching into the generic core, which
//! owns the stats fd and the debugfs files (`kvm/stats.rs`).

use core::sync::atomic::{AtomicU64, Ordering};
use kernel::prelude::*;

/// KVM's per-VM stats (generic, then x86), in KVM's order.
pub(crate) const VM_STATS: &[&CStr] = &[
    c"remote_tlb_flush",
    c"remote_tlb_flush_requests",
    c"mmu_shadow_zapped",
    c"mmu_pte_write",
    c"mmu_pde_zapped",
    c"mmu_flooded",
    c"mmu_recycled",
    c"mmu_cache_miss",
    c"mmu_unsync",
    c"mmu_shadow_pages",
    c"pages_4k",
    c"pages_2m",
    c"pages_1g",
    c"nx_lpage_splits",
    c"max_mmu_rmap_size",
    c"max_mmu_page_hash_collisions",
];

/// KVM's per-vCPU stats (generic, then x86), in KVM's order.
pub(crate) const VCPU_STATS: &[&CStr] = &[
    c"halt_successful_poll",
    c"halt_attempted_poll",
    c"halt_poll_invalid",
    c"halt_wakeup",
    c"halt_poll_success_ns",
    c"halt_poll_fail_ns",
    c"halt_wait_ns",
    c"halt_poll_success_hist",
    c"halt_poll_fail_hist",
    c"halt_wait_hist",
    c"blocking",
    c"pf_taken",
    c"pf_fixed",
    c"pf_emulate",
    c"pf_spurious",
    c"pf_fast",
    c"pf_mmio_spte_created",
    c"pf_guest",
    c"tlb_flush",
    c"invlpg",
    c"exits",
    c"io_exits",
    c"mmio_exits",
    c"signal_exits",
    c"irq_window_exits",
    c"nmi_window_exits",
    c"l1d_flush",
    c"halt_exits",
    c"request_irq_exits",
    c"irq_exits",
    c"host_state_reload",
    c"fpu_reload",
    c"insn_emulation",
    c"insn_emulation_fail",
    c"hypercalls",
    c"irq_injections",
    c"nmi_injections",
    c"req_event",
    c"nested_run",
    c"directed_yield_attempted",
    c"directed_yield_successful",
    c"preemption_reported",
    c"preemption_other",
    c"guest_mode",
    c"notify_window_exits",
];

/// Indices into [`VM_STATS`] that rkvm counts.
#[allow(dead_code)]
pub(crate) mod vm {
    pub(crate) const REMOTE_TLB_FLUSH: usize = 0;
    pub(crate) const REMOTE_TLB_FLUSH_REQUESTS: usize = 1;
    pub(crate) const MMU_SHADOW_ZAPPED: usize = 2;
    pub(crate) const MMU_SHADOW_PAGES: usize = 9;
    pub(crate) const PAGES_4K: usize = 10;
    pub(crate) const PAGES_2M: usize = 11;
}

/// Indices into [`VCPU_STATS`] that rkvm counts.
#[allow(dead_code)]
pub(crate) mod vcpu {
    pub(crate) const HALT_WAKEUP: usize = 3;
    pub(crate) const HALT_WAIT_NS: usize = 6;
    pub(crate) const BLOCKING: usize = 10;
    pub(crate) const PF_TAKEN: usize = 11;
    pub(crate) const PF_FIXED: usize = 12;
    pub(crate) const PF_EMULATE: usize = 13;
    pub(crate) const PF_SPURIOUS: usize = 14;
    pub(crate) const PF_MMIO_SPTE_CREATED: usize = 16;
    pub(crate) const TLB_FLUSH: usize = 18;
    pub(crate) const INVLPG: usize = 19;
    pub(crate) const EXITS: usize = 20;
    pub(crate) const IO_EXITS: usize = 21;
    pub(crate) const MMIO_EXITS: usize = 22;
    pub(crate) const SIGNAL_EXITS: usize = 23;
    pub(crate) const IRQ_WINDOW_EXITS: usize = 24;
    pub(crate) const NMI_WINDOW_EXITS: usize = 25;
    pub(crate) const L1D_FLUSH: usize = 26;
    pub(crate) const HALT_EXITS: usize = 27;
    pub(crate) const REQUEST_IRQ_EXITS: usize = 28;
    pub(crate) const IRQ_EXITS: usize = 29;
    pub(crate) const HOST_STATE_RELOAD: usize = 30;
    pub(crate) const FPU_RELOAD: usize = 31;
    pub(crate) const INSN_EMULATION: usize = 32;
    pub(crate) const INSN_EMULATION_FAIL: usize = 33;
    pub(crate) const HYPERCALLS: usize = 34;
    pub(crate) const IRQ_INJECTIONS: usize = 35;
    pub(crate) const NMI_INJECTIONS: usize = 36;
    pub(crate) const DIRECTED_YIELD_ATTEMPTED: usize = 39;
    pub(crate) const DIRECTED_YIELD_SUCCESSFUL: usize = 40;
    pub(crate) const PREEMPTION_REPORTED: usize = 41;
    pub(crate) const PREEMPTION_OTHER: usize = 42;
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

// SPDX-License-Identifier: GPL-2.0

//! The MMU notifier callbacks: the host tells rkvm what happens to the memory of the
//! VM's process. Invalidation unmaps guest frames before the host frees or moves their
//! pages; aging tells reclaim and idle page tracking which pages the guest used.
//!
//! All of them run in contexts that must not sleep (aging under the host's page-table
//! locks), so they only take the MMU spinlock and never allocate.

use super::memslot::RuntimeSlots;
use super::vm::{MmuState, Vm};
use crate::sys::mm;
use crate::x86::tdp::Tdp;
use kernel::ffi::{c_int, c_void};
use kernel::prelude::*;

fn vm_of<'a>(ctx: *mut c_void) -> &'a Vm {
    // SAFETY: `ctx` is the VM that registered the notifier; the VM unregisters it (which
    // waits for running callbacks) before it is freed.
    unsafe { &*ctx.cast::<Vm>() }
}

/// Applies `f(tdp, first, end)` to the guest frames backed by user addresses
/// `[start, end)`, slot by slot; returns whether any call returned true. Linear in the
/// number of slots (at most KVM's 32764), unless no slot can be backed by the range.
fn for_hva_range(
    tdp: &mut Tdp,
    slots: &RuntimeSlots,
    start: u64,
    end: u64,
    mut f: impl FnMut(&mut Tdp, u64, u64) -> bool,
) -> bool {
    if !slots.may_back(start, end) {
        return false;
    }
    let mut any = false;
    for s in slots.iter() {
        let (lo, hi) = (s.meta.hva, s.meta.hva + (s.meta.npages << 12));
        if lo < end && start < hi {
            let g0 = s.meta.base_gfn + ((start.max(lo) - lo) >> 12);
            let g1 = s.meta.base_gfn + ((end.min(hi) - lo).div_ceil(4096));
            any |= f(tdp, g0, g1);
        }
    }
    any
}

extern "C" fn invalidate_start(ctx: *mut c_void, start: u64, end: u64) {
    let vm = vm_of(ctx);
    // Flush even when this call zapped nothing itself: an entry zapped by a concurrent
    // memslot change or by aging may still sit in a TLB until a flush covers its
    // generation, and the host is about to free the page.
    let gen = {
        let mut m = vm.mmu.lock();
        m.in_progress += 1;
        m.seq = m.seq.wrapping_add(1);
        let MmuState { tdp, slots, .. } = &mut *m;
        let zapped = for_hva_range(tdp, slots, start, end, |t, g0, g1| t.zap(g0, g1));
        m.page_stats(&vm.stats);
        m.ept_changed(zapped)
    };
    vm.flush_upto(gen, false);
}

extern "C" fn invalidate_end(ctx: *mut c_void, _start: u64, _end: u64) {
    let vm = vm_of(ctx);
    let mut m = vm.mmu.lock();
    m.in_progress = m.in_progress.saturating_sub(1);
    m.seq = m.seq.wrapping_add(1);
}

extern "C" fn release(ctx: *mut c_void) {
    // The process is exiting: no guest may touch its memory any more.
    vm_of(ctx).zap_all(GFP_KERNEL);
}

/// Whether the guest used a page of `[start, end)` since the last clearing call.
///
/// The EPT (and the NPT) is used without accessed bits, so "used" means "mapped": a
/// guest frame is mapped only after the guest touched it. Clearing unmaps the frames
/// (as KVM does for EPT without A/D bits), so the next access faults and maps them
/// again, which makes the page young again. The host page stays where it is, so no flush
/// is needed now (KVM on x86 does not flush here either); the zap generation moves, so
/// the flush before the page is ever freed covers the stale translations.
extern "C" fn age(ctx: *mut c_void, start: u64, end: u64, clear: c_int) -> c_int {
    let vm = vm_of(ctx);
    let mut m = vm.mmu.lock();
    let MmuState { tdp, slots, .. } = &mut *m;
    let young = if clear == 0 {
        for_hva_range(tdp, slots, start, end, |t, g0, g1| t.any_mapped(g0, g1))
    } else {
        let zapped = for_hva_range(tdp, slots, start, end, |t, g0, g1| t.zap(g0, g1));
        m.page_stats(&vm.stats);
        m.ept_changed(zapped);
        zapped
    };
    c_int::from(young)
}

/// Sets the MMU notifier callbacks (module init).
pub(crate) fn init() {
    mm::notifier_ops_init(invalidate_start, invalidate_end, release, age);
}

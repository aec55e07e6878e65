// SPDX-License-Identifier: GPL-2.0

//! KVM's NX huge pages, the iTLB multihit mitigation (CVE-2018-12207): on CPUs with the
//! erratum a guest that executes from a page whose size the hypervisor changes can hang
//! the machine, so while kvm's `nx_huge_pages` parameter is on no guest instruction runs
//! from a 2 MiB mapping. Data accesses still map 2 MiB, without execute permission; a
//! fetch there maps 4 KiB pages, and the table that holds them is a split huge page
//! (`nx_lpage_splits`). The recovery work unmaps 1/`nx_huge_pages_recovery_ratio` of
//! each VM's splits every `nx_huge_pages_recovery_period_ms`, so that data accesses map
//! them whole again until the next fetch. A change of `nx_huge_pages` drops every VM's
//! two-dimensional page table, which then refaults under the new value.
//!
//! KVM runs the recovery in a thread per VM; rkvm runs one module-wide work item over all
//! VMs (kept by the C side, `shim_params.c`).

use super::kvm;
use super::vm::Vm;
use crate::sys::nx;
use crate::uapi::*;
use core::sync::atomic::Ordering;
use kernel::prelude::*;

impl Vm {
    /// Drops the two-dimensional page table if it was built under another generation of
    /// `nx_huge_pages` than `gen`. Faults compare the generation under the MMU lock
    /// together with the invalidation count, so none maps under the old value after this.
    pub(crate) fn nx_sync(&self, gen: u32) {
        {
            let mut m = self.mmu.lock();
            if m.nx_gen == gen {
                return;
            }
            m.nx_gen = gen;
            // A fault in flight that read the old value retries (it checks the count
            // before it maps).
            m.seq = m.seq.wrapping_add(1);
        }
        self.zap_all(GFP_KERNEL);
    }

    /// A fetch split a huge page: the recovery comes in one period, if it runs.
    pub(super) fn nx_split_made(&self) {
        if let Some(ms) = nx::params().period_ms {
            nx::kick(ms);
        }
    }

    /// Unmaps 1/`ratio` (rounded up) of the VM's split huge pages, their tables freed
    /// after a flush, at most [`RECOVER_CHUNK`] under the MMU lock at a time; returns how
    /// many splits are left.
    fn nx_recover(&self, ratio: u32) -> u64 {
        let mut left = self.mmu.lock().tdp.nx_splits;
        if ratio == 0 {
            return left;
        }
        let mut want = left.div_ceil(u64::from(ratio));
        while want != 0 && left != 0 {
            let chunk = want.min(RECOVER_CHUNK);
            want -= chunk;
            let Ok(mut gone) = KVec::with_capacity(chunk as usize, GFP_KERNEL) else {
                break;
            };
            let gen = {
                let mut m = self.mmu.lock();
                let changed = m.tdp.recover_nx(&mut gone);
                m.page_stats(&self.stats);
                left = m.tdp.nx_splits;
                m.ept_changed(changed)
            };
            self.flush_upto(gen, false);
            drop(gone);
            crate::sys::cpu::cond_resched();
        }
        left
    }
}

/// Split huge pages one recovery step unmaps under the MMU lock.
const RECOVER_CHUNK: u64 = 256;

/// The recovery work: brings every VM's table to the current `nx_huge_pages`, recovers
/// split huge pages, and comes back in one period while any are left.
pub(crate) extern "C" fn recovery_work() {
    let Some(k) = kvm() else {
        return;
    };
    let p = nx::params();
    let mut left = false;
    k.for_each_vm(|vm| {
        vm.nx_sync(p.gen);
        if p.period_ms.is_some() {
            left |= vm.nx_recover(p.ratio) != 0;
        }
    });
    if let (true, Some(ms)) = (left, p.period_ms) {
        nx::kick(ms);
    }
}

/// KVM_ENABLE_CAP(KVM_CAP_VM_DISABLE_NX_HUGE_PAGES): huge mappings stay executable for
/// this VM. A guest could then hang a CPU with the erratum, so the caller must be allowed
/// to reboot the machine (CAP_SYS_BOOT, in the initial namespace, as KVM), and it must
/// come before the first vCPU.
pub(super) fn disable(vm: &Vm, cap: &kvm_enable_cap) -> Result<isize> {
    if !nx::capable_sys_boot() {
        return Err(EPERM);
    }
    if cap.args[0] != 0 {
        return Err(EINVAL);
    }
    let l = vm.locked.lock();
    if !l.vcpus.is_empty() {
        return Err(EINVAL);
    }
    vm.nx_disabled.store(true, Ordering::Relaxed);
    drop(l);
    Ok(0)
}

// SPDX-License-Identifier: GPL-2.0

//! Virtual machines: `KVM_CREATE_VM`, the VM fd and its ioctls, guest memory (memslots,
//! EPT faults, the MMU notifier, dirty logging).

use super::dirty_ring::DirtyRing;
use super::memslot::{self, Change, RuntimeSlots, Slots};
use super::stats::{self, VmCounters};
use super::vcpu::{self, Vcpu};
use super::{caps, uaccess, Kvm};
use crate::sys::anon_fd::{self, AnonFile};
use crate::sys::cname::ShortName;
use crate::sys::cpu;
use crate::sys::mm::{self, MmId, MmuNotifier};
use crate::sys::page::{LazyPage, PhysPage};
use crate::sys::ratelimit::pr_warn_ratelimited;
use crate::uapi::*;
use crate::x86::backend::{RmodeAddrs, RMODE_TSS_SIZE};
use crate::x86::emulate::GuestMem;
use crate::x86::tdp::Tdp;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use kernel::prelude::*;
use kernel::sync::{Arc, ArcBorrow, Mutex, SpinLock};
use kernel::{new_mutex, new_spinlock};

/// State under the VM's mutex (KVM's `kvm->lock` and `slots_lock` in one).
pub(crate) struct VmLocked {
    pub(crate) slots: Slots,
    pub(crate) vcpus: KVec<Arc<Vcpu>>,
    tss_addr: Option<u64>,
    identity_map_addr: u64,
    nr_mmu_pages: u64,
    notifier: Option<MmuNotifier>,
    debugfs: Option<super::debugfs::VmDir>,
    /// The real-mode TSS and identity page table (CPUs without unrestricted guest).
    rmode_pages: Option<RmodePages>,
    /// `KVM_CAP_MAX_VCPU_ID`: vCPU ids must stay below this; 0 until it is set or the
    /// first vCPU is created (which fixes it at the maximum).
    pub(crate) max_vcpu_ids: u32,
    /// `KVM_SET_BOOT_CPU_ID`: the vCPU whose APIC has the BSP flag.
    pub(crate) bsp_vcpu_id: u32,
    /// Coalesced MMIO/PIO zones (`KVM_REGISTER_COALESCED_MMIO`).
    pub(crate) coalesced: KVec<super::coalesced::Zone>,
    /// `KVM_SET_GSI_ROUTING`'s table and the irqfds (`KVM_IRQFD`).
    pub(crate) routes: KVec<super::irq::Route>,
    pub(crate) irqfds: KVec<crate::sys::irqfd::IrqFd>,
    /// `KVM_IOEVENTFD` registrations.
    pub(crate) ioeventfds: KVec<super::ioeventfd::IoEventFd>,
}

/// KVM's default guest-physical addresses of the real-mode TSS and identity map.
const TSS_ADDR: u64 = 0xfffb_d000;
const IDENTITY_MAP_ADDR: u64 = 0xfffb_c000;

/// Guest pages rkvm owns for running real mode in virtual-8086 mode: three TSS pages
/// and one page of 4 MiB identity mappings, mapped into the guest at the addresses
/// KVM_SET_TSS_ADDR and KVM_SET_IDENTITY_MAP_ADDR chose (KVM's private memslots).
struct RmodePages {
    tss: [PhysPage; 3],
    idmap: PhysPage,
}

/// State under the MMU spinlock: the EPT and the runtime memslots.
pub(crate) struct MmuState {
    pub(crate) tdp: Tdp,
    pub(crate) slots: RuntimeSlots,
    /// Bumped by every invalidation; a fault that raced one retries.
    pub(super) seq: u64,
    /// Guest frames backed by rkvm's own pages (real-mode TSS, identity map).
    pub(super) private: KVec<(u64, u64)>,
    /// Invalidations in progress (between start and end).
    pub(super) in_progress: u32,
    /// Bumped whenever EPT entries a CPU may have cached were removed or write-protected;
    /// see [`Vm::flush_upto`].
    zap_gen: u64,
    /// The `nx_huge_pages` generation the table was built under (see `nx_huge.rs`).
    pub(super) nx_gen: u32,
}

impl MmuState {
    /// The VM's pages_4k and pages_2m: what the EPT maps now.
    pub(super) fn page_stats(&self, stats: &VmCounters) {
        stats.set(stats::vm::PAGES_4K, self.tdp.leaves);
        stats.set(stats::vm::PAGES_2M, self.tdp.huge_leaves);
        stats.set(stats::vm::PAGES_1G, self.tdp.giant_leaves);
        stats.set(stats::vm::NX_LPAGE_SPLITS, self.tdp.nx_splits);
    }

    /// Records whether the EPT just lost entries or write access; returns the generation
    /// that a flush must cover before the host may rely on the change.
    pub(super) fn ept_changed(&mut self, changed: bool) -> u64 {
        if changed {
            self.zap_gen = self.zap_gen.wrapping_add(1);
        }
        self.zap_gen
    }
}

/// A VM.
#[pin_data(PinnedDrop)]
pub(crate) struct Vm {
    pub(crate) kvm: &'static Kvm,
    /// The creator's mm: VM and vCPU ioctls from another process fail with `EIO`.
    pub(crate) mm: MmId,
    #[pin]
    pub(crate) locked: Mutex<VmLocked>,
    #[pin]
    pub(crate) mmu: SpinLock<MmuState>,
    /// The root table of `mmu`'s two-dimensional page table, which stays for the VM's
    /// life (zaps replace what is below it).
    pub(crate) tdp_root: crate::sys::page::Hpa,
    /// Bumped after every change that makes cached guest translations stale.
    pub(crate) flush_gen: AtomicU64,
    /// The `MmuState::zap_gen` that the last completed remote flush covered.
    flushed_zap_gen: AtomicU64,
    /// When the MMU shrinker last zapped this VM's tables (ns, monotonic; 0: never).
    pub(crate) shrink_zap_ns: AtomicU64,
    /// KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 enabled.
    pub(crate) manual_protect: AtomicBool,
    /// The size in bytes of each vCPU's dirty ring (KVM_CAP_DIRTY_LOG_RING), 0 without
    /// rings (then dirty pages go to bitmaps). Set under `locked` before any vCPU exists.
    pub(crate) dirty_ring_bytes: AtomicU32,
    /// KVM_CAP_SPLIT_IRQCHIP enabled or KVM_CREATE_IRQCHIP done: vCPUs get an
    /// in-kernel local APIC.
    pub(crate) lapic_in_kernel: AtomicBool,
    /// Resampling irqfds assigned (a quick test before looking for them at each EOI).
    pub(crate) resamplers: AtomicU32,
    /// KVM_CAP_SPLIT_IRQCHIP's pin count: GSIs below it are userspace's I/O APIC pins.
    pub(crate) split_pins: AtomicU32,
    /// The vectors of level-triggered routes through those pins, 256 bits: an EOI of
    /// one may be for userspace's I/O APIC (kept with the routes).
    pub(crate) split_eoi_vectors: [AtomicU64; 4],
    /// KVM_CREATE_IRQCHIP done: the PIC and I/O APIC are in `irqchip`.
    pub(crate) full_irqchip: AtomicBool,
    #[pin]
    pub(crate) irqchip: Mutex<Option<super::irqchip::Chips>>,
    /// The PIC's INTR output (a copy kept under `irqchip`, read without it).
    pub(crate) pic_output: AtomicBool,
    /// When the I/O APIC's EOI-storm guard lets held-back interrupts go (ns; 0: none).
    pub(crate) ioapic_deferred_ns: AtomicU64,
    /// KVM_CREATE_PIT2's PIT, and its interrupt bookkeeping.
    #[pin]
    pub(crate) pit: Mutex<Option<super::pit::PitDev>>,
    pub(crate) pit_irq: super::pit::PitIrq,
    /// KVM_CAP_X2APIC_API: 32-bit x2APIC IDs in KVM_GET/SET_LAPIC, and no xAPIC
    /// broadcast quirk for x2APIC destinations.
    pub(crate) x2apic_format: AtomicBool,
    pub(crate) x2apic_broadcast_quirk_disabled: AtomicBool,
    /// KVM_CAP_X86_USER_SPACE_MSR: the KVM_MSR_EXIT_REASON_* that exit to userspace.
    pub(crate) user_space_msr: AtomicU32,
    /// KVM_CAP_EXIT_ON_EMULATION_FAILURE: always exit (no #UD) when emulation fails.
    pub(crate) exit_on_emulation_failure: AtomicBool,
    /// A kvm-vfio device exists (one per VM).
    pub(crate) vfio_device: AtomicBool,
    /// KVM_CAP_MSR_PLATFORM_INFO (on by default, as in KVM).
    pub(crate) platform_info_readable: AtomicBool,
    /// Memslots that log dirty pages (see `set_memory_region`).
    pub(crate) logging_slots: AtomicU32,
    /// KVM_CAP_HALT_POLL: this VM's longest halt poll in ns, in place of the module's
    /// `halt_poll_ns` (`u64::MAX`: not set).
    pub(crate) max_halt_poll_ns: AtomicU64,
    /// KVM_CAP_VM_DISABLE_NX_HUGE_PAGES: huge mappings stay executable whatever
    /// `nx_huge_pages` says.
    pub(crate) nx_disabled: AtomicBool,
    /// KVM_CAP_X86_APIC_BUS_CYCLES_NS: nanoseconds per APIC bus cycle (the local APIC
    /// timer's clock before its divider). Written under `locked` before any vCPU exists.
    pub(crate) apic_bus_cycle_ns: AtomicU64,
    /// KVM_CAP_DISABLE_QUIRKS(2): the quirks turned off (see `crate::x86::quirks`).
    pub(crate) disabled_quirks: AtomicU64,
    /// KVM_SET_TSC_KHZ on the VM fd: new vCPUs' TSC rate in kHz (0: the host's). Written
    /// under `locked` before any vCPU exists.
    pub(crate) default_tsc_khz: AtomicU32,
    /// KVM_X86_SET_MSR_FILTER's filter (None: everything allowed) and its generation,
    /// bumped by every change.
    #[pin]
    msr_filter: SpinLock<Option<Arc<super::msr_filter::MsrFilter>>>,
    pub(crate) msr_filter_gen: AtomicU64,
    /// TSC write matching across the VM's vCPUs (KVM's `tsc_write_lock` and its state).
    #[pin]
    pub(crate) tsc_sync: SpinLock<crate::x86::tsc::TscSync>,
    /// The coalesced MMIO ring, one page shared by every vCPU's mapping: made by the
    /// first touch of it or the first zone registered.
    #[pin]
    pub(crate) coalesced_ring: LazyPage,
    /// How many coalesced zones and ioeventfds there are (stored with each change of
    /// their lists, under `locked`): a guest write looks through a list, under that
    /// lock, only when it is not empty.
    pub(crate) coalesced_count: AtomicU32,
    pub(crate) ioeventfd_count: AtomicU32,
    pub(crate) stats: VmCounters,
    /// The creator's pid: the VM's stats id is "kvm-<pid>", as KVM's.
    pub(crate) pid: i32,
    /// Creator pid and fd of the VM's debugfs directory (0: none).
    pub(crate) debugfs_id: AtomicU64,
    /// kvmclock: VM clock = CLOCK_BOOTTIME + this (wrapping); bumped generation on every
    /// KVM_SET_CLOCK; the wall-clock MSR's value.
    pub(crate) kvmclock_offset: AtomicU64,
    pub(crate) kvmclock_gen: AtomicU64,
    pub(crate) wall_clock_msr: AtomicU64,
}

/// `KVM_CREATE_VM(type)`.
pub(crate) fn create(k: &'static Kvm, ty: usize) -> Result<isize> {
    if ty != KVM_X86_DEFAULT_VM as usize {
        return Err(EINVAL);
    }
    k.hw.get(&*k.backend)?;
    let vm = new_vm(k).inspect_err(|_| k.hw.put(&*k.backend))?;
    // Balanced in the VM's drop.
    crate::sys::nx::vm_count(true);
    // The notifier's context is the VM itself; it is unregistered before the VM is freed.
    let ctx = core::ptr::from_ref::<Vm>(&vm).cast_mut().cast();
    let notifier = MmuNotifier::register(ctx)?;
    vm.locked.lock().notifier = Some(notifier);
    k.vm_list_add(&vm)?;
    let fd = anon_fd::install(vm.clone())?;
    // KVM's per-VM debugfs directory: "<pid>-<fd>". A VM whose fd was closed while its
    // vCPU fds stay open still has its directory; a new VM with that fd number then goes
    // without one, as in KVM (which warns, below the console's level).
    // (The fd is the caller's now: nothing below may fail the ioctl.)
    let pid = cpu::current_pid() as u32;
    if let (Some(parent), Ok(name)) = (k.debugfs_dir.as_ref(), debugfs_name(pid, fd as u32)) {
        let name = name.as_cstr();
        let id = u64::from(pid) << 32 | u64::from(fd as u32);
        let mut taken = false;
        k.for_each_vm(|v| taken |= v.debugfs_id.load(Ordering::Relaxed) == id);
        if taken {
            pr_warn_ratelimited!("debugfs: duplicate directory {}\n", name);
        } else if let Ok(d) = super::debugfs::VmDir::new(parent, name, &vm) {
            vm.locked.lock().debugfs = Some(d);
            vm.debugfs_id.store(id, Ordering::Relaxed);
        }
    }
    Ok(fd as isize)
}

/// The VM's debugfs directory name, "<pid>-<fd>".
fn debugfs_name(pid: u32, fd: u32) -> Result<ShortName> {
    let mut n = ShortName::of("", u64::from(pid))?;
    n.text("-")?.num(u64::from(fd))?;
    Ok(n)
}

fn new_vm(k: &'static Kvm) -> Result<Arc<Vm>> {
    let tdp = Tdp::new(&k.arch.mmu.page_header_cache, k.arch.mmu.masks)?;
    let tdp_root = tdp.root();
    Arc::pin_init(
        try_pin_init!(Vm {
            kvm: k,
            tdp_root,
            mm: mm::current_mm(),
            locked <- new_mutex!(VmLocked {
                slots: Slots::default(),
                vcpus: KVec::new(),
                tss_addr: None,
                identity_map_addr: IDENTITY_MAP_ADDR,
                rmode_pages: None,
                nr_mmu_pages: 0,
                notifier: None,
                debugfs: None,
                max_vcpu_ids: 0,
                bsp_vcpu_id: 0,
                coalesced: KVec::new(),
                routes: KVec::new(),
                irqfds: KVec::new(),
                ioeventfds: KVec::new(),
            }),
            mmu <- new_spinlock!(MmuState {
                tdp,
                slots: RuntimeSlots::new(),
                seq: 0,
                in_progress: 0,
                private: KVec::new(),
                zap_gen: 0,
                nx_gen: crate::sys::nx::params().gen,
            }),
            flush_gen: AtomicU64::new(0),
            flushed_zap_gen: AtomicU64::new(0),
            shrink_zap_ns: AtomicU64::new(0),
            manual_protect: AtomicBool::new(false),
            dirty_ring_bytes: AtomicU32::new(0),
            lapic_in_kernel: AtomicBool::new(false),
            split_pins: AtomicU32::new(0),
            split_eoi_vectors: Default::default(),
            resamplers: AtomicU32::new(0),
            full_irqchip: AtomicBool::new(false),
            irqchip <- new_mutex!(None),
            pic_output: AtomicBool::new(false),
            ioapic_deferred_ns: AtomicU64::new(0),
            pit <- new_mutex!(None),
            pit_irq: Default::default(),
            x2apic_format: AtomicBool::new(false),
            x2apic_broadcast_quirk_disabled: AtomicBool::new(false),
            user_space_msr: AtomicU32::new(0),
            exit_on_emulation_failure: AtomicBool::new(false),
            platform_info_readable: AtomicBool::new(true),
            max_halt_poll_ns: AtomicU64::new(u64::MAX),
            nx_disabled: AtomicBool::new(false),
            logging_slots: AtomicU32::new(0),
            vfio_device: AtomicBool::new(false),
            apic_bus_cycle_ns: AtomicU64::new(crate::x86::lapic::BUS_CYCLE_NS_DEFAULT),
            disabled_quirks: AtomicU64::new(0),
            default_tsc_khz: AtomicU32::new(0),
            msr_filter <- new_spinlock!(None),
            msr_filter_gen: AtomicU64::new(0),
            tsc_sync <- new_spinlock!(crate::x86::tsc::TscSync::default()),
            coalesced_ring <- LazyPage::new(),
            coalesced_count: AtomicU32::new(0),
            ioeventfd_count: AtomicU32::new(0),
            stats: VmCounters::new(),
            pid: cpu::current_pid(),
            debugfs_id: AtomicU64::new(0),
            // The VM clock starts at 0.
            kvmclock_offset: AtomicU64::new(
                0u64.wrapping_sub(crate::sys::pvclock::clock_now().boot_ns),
            ),
            kvmclock_gen: AtomicU64::new(0),
            wall_clock_msr: AtomicU64::new(0),
        }? Error),
        GFP_KERNEL,
    )
}

#[pinned_drop]
impl PinnedDrop for Vm {
    fn drop(self: Pin<&mut Self>) {
        // The PIT's timer first: freeing it waits for a tick, which uses the irqchip.
        let pit = self.pit.lock().take();
        drop(pit);
        // irqfds next: dropping one waits for its callback, which takes `locked`.
        let irqfds = core::mem::take(&mut self.locked.lock().irqfds);
        drop(irqfds);
        // Unregister first: it waits for callbacks that may be using this VM.
        let (debugfs, notifier, vcpus) = {
            let mut l = self.locked.lock();
            (
                l.debugfs.take(),
                l.notifier.take(),
                core::mem::take(&mut l.vcpus),
            )
        };
        drop(debugfs);
        drop(notifier);
        for v in vcpus.iter() {
            v.release();
        }
        drop(vcpus);
        self.kvm.vm_list_remove(&self);
        crate::sys::nx::vm_count(false);
        self.kvm.hw.put(&*self.kvm.backend);
    }
}

impl Vm {
    /// Replaces the MSR filter; running vCPUs leave the guest to pick it up.
    pub(crate) fn install_msr_filter(&self, f: Arc<super::msr_filter::MsrFilter>) {
        let old = {
            let mut cur = self.msr_filter.lock();
            let old = cur.replace(f);
            self.msr_filter_gen.fetch_add(1, Ordering::SeqCst);
            old
        };
        drop(old);
        for v in self.locked.lock().vcpus.iter() {
            v.kick_out_of_guest();
        }
    }

    /// The current MSR filter and its generation.
    pub(crate) fn msr_filter(&self) -> (Option<Arc<super::msr_filter::MsrFilter>>, u64) {
        let cur = self.msr_filter.lock();
        (cur.clone(), self.msr_filter_gen.load(Ordering::SeqCst))
    }

    /// The quirks this VM turned off.
    /// New vCPUs' TSC rate in kHz (KVM_SET_TSC_KHZ on the VM fd, else the host's).
    pub(crate) fn default_tsc_khz(&self) -> u32 {
        match self.default_tsc_khz.load(Ordering::Relaxed) {
            0 => self.kvm.arch.timer.tsc_khz,
            khz => khz,
        }
    }

    pub(crate) fn quirks(&self) -> crate::x86::quirks::Quirks {
        crate::x86::quirks::Quirks(self.disabled_quirks.load(Ordering::Relaxed))
    }

    /// Makes every vCPU drop cached guest translations before it runs the guest again:
    /// bumps the flush generation, then interrupts every vCPU inside a VMX window (the
    /// IPI is taken only once that window has closed). As KVM's stats: every call is a
    /// request, and a flush when it had to interrupt some CPU.
    pub(crate) fn flush_remote_tlbs(&self) {
        self.flush_gen.fetch_add(1, Ordering::SeqCst);
        self.stats.inc(stats::vm::REMOTE_TLB_FLUSH_REQUESTS);
        if let Some(l) = self.locked.try_lock() {
            let mut kicked = false;
            for v in l.vcpus.iter() {
                kicked |= v.kick_out_of_guest();
            }
            if kicked {
                self.stats.inc(stats::vm::REMOTE_TLB_FLUSH);
            }
            return;
        }
        // The vCPU list is busy (a vCPU is being created): kick every CPU instead.
        cpu::run_on_each(|| {});
        self.stats.inc(stats::vm::REMOTE_TLB_FLUSH);
    }

    /// Makes sure a remote flush completed after the EPT reached zap generation `gen`
    /// (always flushes when `force`). Only then may the host reuse a page or a table that
    /// the EPT pointed to.
    pub(crate) fn flush_upto(&self, gen: u64, force: bool) {
        if force || self.flushed_zap_gen.load(Ordering::Acquire) < gen {
            self.flush_remote_tlbs();
            self.flushed_zap_gen.fetch_max(gen, Ordering::AcqRel);
        }
    }

    /// Makes the guest's next writes to guest frames `start..end` reach the dirty log
    /// again, for the dirty ring's reset; returns the EPT generation to flush up to.
    pub(crate) fn track_writes(&self, start: u64, end: u64) -> u64 {
        let mut m = self.mmu.lock();
        let changed = m.tdp.track_writes(start, end, None);
        m.ept_changed(changed)
    }

    /// Calls `f` on each of the VM's vCPUs (under the VM mutex).
    pub(crate) fn for_each_vcpu(&self, mut f: impl FnMut(&super::vcpu::Vcpu)) {
        for v in self.locked.lock().vcpus.iter() {
            f(v);
        }
    }

    /// Checks that the caller is the VM's process.
    pub(crate) fn check_mm(&self) -> Result {
        if mm::current_mm() != self.mm {
            return Err(EIO);
        }
        Ok(())
    }

    /// Sets up (once) the real-mode TSS and identity map for virtual-8086 real mode.
    pub(crate) fn rmode_addrs(&self) -> Result<RmodeAddrs> {
        let mut l = self.locked.lock();
        let tss = l.tss_addr.unwrap_or(TSS_ADDR);
        let idmap = l.identity_map_addr;
        if l.rmode_pages.is_none() {
            let pages = RmodePages {
                tss: [PhysPage::new()?, PhysPage::new()?, PhysPage::new()?],
                idmap: PhysPage::new()?,
            };
            // TSS: I/O bitmap right after the base TSS and redirection bitmap (all
            // zero: every port and every INT n goes to the guest's real-mode handlers),
            // terminated by 0xff.
            let iopb = (0x68u16 + 32).to_le_bytes();
            pages.tss[0].write_bytes(0x66, &iopb)?;
            let last = (RMODE_TSS_SIZE - 1) as usize;
            if let Some(p) = pages.tss.get(last / 4096) {
                p.write_bytes(last % 4096, &[0xff])?;
            }
            // 1024 page-directory entries mapping 4 MiB each: linear = physical.
            for i in 0..1024u64 {
                let pde: u32 = ((i << 22) | 0x80 | 0x40 | 0x20 | 0x4 | 0x2 | 0x1) as u32;
                pages
                    .idmap
                    .write_bytes(i as usize * 4, &pde.to_le_bytes())?;
            }
            let mut private = KVec::with_capacity(4, GFP_KERNEL)?;
            for (i, p) in pages.tss.iter().enumerate() {
                private.push(((tss >> 12) + i as u64, p.phys().0 >> 12), GFP_KERNEL)?;
            }
            private.push((idmap >> 12, pages.idmap.phys().0 >> 12), GFP_KERNEL)?;
            let old = core::mem::replace(&mut self.mmu.lock().private, private);
            drop(old);
            l.rmode_pages = Some(pages);
        }
        Ok(RmodeAddrs { tss, idmap })
    }

    /// The userspace address of guest frame `gfn`, and whether it may be written.
    fn hva_of(&self, gfn: u64) -> Option<(u64, bool)> {
        let m = self.mmu.lock();
        memslot::find(&m.slots, gfn).map(|s| (s.hva + ((gfn - s.base_gfn) << 12), !s.readonly()))
    }

    /// Marks `gfn` dirty (guest memory written by rkvm on the guest's behalf, or by the
    /// guest: a write fault, or the CPU's log of written pages), in its slot's bitmap or
    /// in `ring`, the dirty ring of the vCPU that wrote it. Frames outside dirty-logging
    /// slots are ignored.
    pub(crate) fn mark_dirty(&self, gfn: u64, ring: Option<&DirtyRing>) {
        let mut m = self.mmu.lock();
        if let Some(s) = memslot::find_mut(&mut m.slots, gfn) {
            if !s.meta.logs_dirty() {
                return;
            }
            let rel = gfn - s.meta.base_gfn;
            if let Some(r) = ring {
                r.push(u32::from(s.meta.id), rel);
            } else if let Some(w) = s.dirty.as_mut().and_then(|d| d.get_mut(rel as usize / 64)) {
                *w |= 1 << (rel % 64);
            }
        }
    }

    fn set_memory_region(&self, m: &kvm_userspace_memory_region2) -> Result<isize> {
        let mut l = self.locked.lock();
        let change = l.slots.plan(m, self.kvm.arch.mmu.masks.max_gfn)?;
        if change == Change::None {
            return Ok(0);
        }
        // With dirty rings, dirty pages go to the rings, and slots have no bitmap.
        let bitmaps = self.dirty_ring_bytes.load(Ordering::Relaxed) == 0;
        let mut upd = l.slots.prepare(&change, bitmaps)?;
        // The count of logging slots (changed only here, under `locked`) goes up before
        // the slot logs and down after it stopped: a vCPU reads it (sequentially
        // consistent) after marking itself running, and the flush below kicks running
        // vCPUs after it changed, so no vCPU runs without the CPU's log of written pages
        // once a slot logs (see `RunCtx::vm_logging`).
        let logs = |m: &memslot::SlotMeta| u32::from(m.logs_dirty());
        let (gone, new) = match &change {
            Change::Create(n) => (0, logs(n)),
            Change::Delete(o) => (logs(o), 0),
            Change::Move(o, n) | Change::Flags(o, n) => (logs(o), logs(n)),
            Change::None => (0, 0),
        };
        let count = self.logging_slots.load(Ordering::SeqCst);
        let count = count.saturating_sub(gone).saturating_add(new);
        if new > gone {
            self.logging_slots.store(count, Ordering::SeqCst);
        }
        let (unlinked, gen) = {
            let mut mm = self.mmu.lock();
            let unlinked = memslot::commit_runtime(&mut mm.slots, &change, &mut upd);
            let zapped = match change {
                Change::Delete(o) | Change::Move(o, _) | Change::Flags(o, _) => {
                    mm.tdp.zap(o.base_gfn, o.end_gfn())
                }
                _ => false,
            };
            mm.seq = mm.seq.wrapping_add(1);
            mm.page_stats(&self.stats);
            (unlinked, mm.ept_changed(zapped))
        };
        drop(unlinked);
        l.slots.commit(&change, &mut upd);
        if new <= gone {
            self.logging_slots.store(count, Ordering::SeqCst);
        }
        drop(l);
        self.flush_upto(gen, true);
        Ok(0)
    }

    /// Frees every EPT table below the root (memory pressure, process exit); returns the
    /// table pages freed. The tables are freed only after every CPU has flushed. If the
    /// small array that takes their place cannot be had (`flags` may forbid sleeping),
    /// the leaves are unmapped instead and the tables stay.
    pub(crate) fn zap_all(&self, flags: kernel::alloc::Flags) -> u64 {
        let Ok(fresh) = Tdp::empty_children(self.kvm.arch.mmu.masks, flags) else {
            let gen = {
                let mut m = self.mmu.lock();
                let changed = m.tdp.zap(0, u64::MAX);
                m.page_stats(&self.stats);
                m.ept_changed(changed)
            };
            self.flush_upto(gen, false);
            return 0;
        };
        let (dead, freed, gen) = {
            let mut m = self.mmu.lock();
            let (dead, freed) = m.tdp.zap_all(fresh);
            m.page_stats(&self.stats);
            (dead, freed, m.ept_changed(freed != 0))
        };
        self.flush_upto(gen, false);
        drop(dead);
        freed
    }
}

/// The guest memory of a VM, seen from its process, by one of its vCPUs: the pages it
/// writes go to that vCPU's dirty ring when the VM has rings.
pub(crate) struct VmMem<'a> {
    vm: &'a Vm,
    ring: Option<&'a DirtyRing>,
}

impl<'a> VmMem<'a> {
    /// For reads, and for writes the VM does not log (none so far).
    pub(crate) fn new(vm: &'a Vm) -> Self {
        Self { vm, ring: None }
    }

    /// For what `vcpu` reads and writes.
    pub(crate) fn of(vm: &'a Vm, vcpu: &'a Vcpu) -> Self {
        Self {
            vm,
            ring: vcpu.dirty_ring(),
        }
    }
}

impl GuestMem for VmMem<'_> {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result {
        let off = gpa & 0xfff;
        if off + buf.len() as u64 > 4096 {
            return Err(EINVAL);
        }
        let (hva, _) = self.vm.hva_of(gpa >> 12).ok_or(EFAULT)?;
        mm::read_user(hva + off, buf)
    }

    fn write(&self, gpa: u64, data: &[u8]) -> Result {
        let off = gpa & 0xfff;
        if off + data.len() as u64 > 4096 {
            return Err(EINVAL);
        }
        let (hva, writable) = self.vm.hva_of(gpa >> 12).ok_or(EFAULT)?;
        if !writable {
            return Err(EFAULT);
        }
        mm::write_user(hva + off, data)?;
        self.vm.mark_dirty(gpa >> 12, self.ring);
        Ok(())
    }

    fn backed(&self, gpa: u64) -> bool {
        self.vm.hva_of(gpa >> 12).is_some()
    }
}

impl AnonFile for Vm {
    const NAME: &'static CStr = c"kvm-vm";

    fn ioctl(this: ArcBorrow<'_, Self>, cmd: u32, arg: usize) -> Result<isize> {
        this.check_mm()?;
        match cmd {
            RKVM_KVM_CHECK_EXTENSION => Ok(caps::check_extension(this.kvm, Some(&this), arg)),
            RKVM_KVM_CREATE_VCPU => vcpu::create(this.into(), arg),
            RKVM_KVM_SET_USER_MEMORY_REGION => {
                let m: kvm_userspace_memory_region = uaccess::read(arg)?;
                let m2 = kvm_userspace_memory_region2 {
                    slot: m.slot,
                    flags: m.flags,
                    guest_phys_addr: m.guest_phys_addr,
                    memory_size: m.memory_size,
                    userspace_addr: m.userspace_addr,
                    ..Default::default()
                };
                // The v1 ioctl does not take the newer flags.
                if m.flags & !(KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY) != 0 {
                    return Err(EINVAL);
                }
                this.set_memory_region(&m2)
            }
            RKVM_KVM_SET_USER_MEMORY_REGION2 => {
                let m: kvm_userspace_memory_region2 = uaccess::read(arg)?;
                if m.pad1 != 0 || m.pad2.iter().any(|&p| p != 0) {
                    return Err(EINVAL);
                }
                this.set_memory_region(&m)
            }
            RKVM_KVM_SET_TSS_ADDR => {
                if arg as u64 > u64::from(u32::MAX - 3 * 4096 + 1) {
                    return Err(EINVAL);
                }
                let mut l = this.locked.lock();
                if l.rmode_pages.is_some() {
                    // KVM cannot move its TSS memslot once it exists either.
                    return Err(EEXIST);
                }
                l.tss_addr = Some(arg as u64);
                Ok(0)
            }
            RKVM_KVM_SET_IDENTITY_MAP_ADDR => {
                let mut l = this.locked.lock();
                if !l.vcpus.is_empty() {
                    return Err(EINVAL);
                }
                let addr: u64 = uaccess::read(arg)?;
                l.identity_map_addr = addr;
                Ok(0)
            }
            RKVM_KVM_SET_NR_MMU_PAGES => {
                // KVM's minimum; with two-dimensional paging the limit does not constrain
                // EPT tables (as with KVM's TDP MMU), so it is only recorded.
                if arg < 64 {
                    return Err(EINVAL);
                }
                this.locked.lock().nr_mmu_pages = arg as u64;
                Ok(0)
            }
            RKVM_KVM_GET_DIRTY_LOG => this.get_dirty_log(arg),
            RKVM_KVM_RESET_DIRTY_RINGS => super::dirty_ring::reset_all(&this),
            RKVM_KVM_CLEAR_DIRTY_LOG => this.clear_dirty_log(arg),
            RKVM_KVM_ENABLE_CAP => super::enable_cap::enable_cap(&this, arg),
            RKVM_KVM_X86_SET_MSR_FILTER => super::msr_filter::set(&this, arg),
            RKVM_KVM_GET_CLOCK => super::kvmclock::get_clock(&this, arg),
            RKVM_KVM_SET_CLOCK => super::kvmclock::set_clock(&this, arg),
            RKVM_KVM_SIGNAL_MSI => super::irq::signal_msi(&this, arg),
            RKVM_KVM_SET_GSI_ROUTING => super::irq::set_gsi_routing(&this, arg),
            RKVM_KVM_CREATE_IRQCHIP => super::irqchip::create(&this),
            RKVM_KVM_IRQ_LINE => super::irqchip::irq_line(&this, arg, false),
            RKVM_KVM_IRQ_LINE_STATUS => super::irqchip::irq_line(&this, arg, true),
            RKVM_KVM_GET_IRQCHIP => super::irqchip::get(&this, arg),
            RKVM_KVM_SET_IRQCHIP => super::irqchip::set(&this, arg),
            RKVM_KVM_CREATE_PIT => super::pit::create(&this, KVM_PIT_SPEAKER_DUMMY),
            RKVM_KVM_CREATE_PIT2 => super::pit::create2(&this, arg),
            RKVM_KVM_GET_PIT => super::pit::get(&this, arg, false),
            RKVM_KVM_SET_PIT => super::pit::set(&this, arg, false),
            RKVM_KVM_GET_PIT2 => super::pit::get(&this, arg, true),
            RKVM_KVM_SET_PIT2 => super::pit::set(&this, arg, true),
            RKVM_KVM_REINJECT_CONTROL => super::pit::reinject_control(&this, arg),
            RKVM_KVM_IRQFD => super::irq::irqfd(&this, arg),
            RKVM_KVM_IOEVENTFD => super::ioeventfd::ioctl(&this, arg),
            RKVM_KVM_REGISTER_COALESCED_MMIO => super::coalesced::register(&this, arg),
            RKVM_KVM_UNREGISTER_COALESCED_MMIO => super::coalesced::unregister(&this, arg),
            RKVM_KVM_GET_STATS_FD => {
                let id = kernel::str::CString::try_from_fmt(fmt!("kvm-{}", this.pid))?;
                stats::StatsFile::open(&id, Arc::<Vm>::from(this))
            }
            RKVM_KVM_SET_BOOT_CPU_ID => {
                let mut l = this.locked.lock();
                if !l.vcpus.is_empty() {
                    return Err(EBUSY);
                }
                let id = u32::try_from(arg).map_err(|_| EINVAL)?;
                if id > caps::MAX_VCPU_IDS || (l.max_vcpu_ids != 0 && id > l.max_vcpu_ids) {
                    return Err(EINVAL);
                }
                l.bsp_vcpu_id = id;
                Ok(0)
            }
            // New vCPUs' TSC rate: any before the first vCPU (0: the host's); whether it
            // can be had is decided per vCPU, as in KVM.
            RKVM_KVM_GET_TSC_KHZ => Ok(this.default_tsc_khz() as isize),
            RKVM_KVM_SET_TSC_KHZ => {
                // KVM takes the low 32 bits of the argument.
                let khz = arg as u32;
                if this.kvm.backend.tsc_scaling() && khz >= crate::x86::tsc::MAX_GUEST_TSC_KHZ {
                    return Err(EINVAL);
                }
                let l = this.locked.lock();
                if !l.vcpus.is_empty() {
                    return Err(EINVAL);
                }
                this.default_tsc_khz.store(khz, Ordering::Relaxed);
                Ok(0)
            }
            RKVM_KVM_CREATE_DEVICE => {
                let mut d: kvm_create_device = uaccess::read(arg)?;
                let ops = this.kvm.devices.lookup(d.type_)?;
                if d.flags & KVM_CREATE_DEVICE_TEST == 0 {
                    d.fd = u32::try_from(ops.create(this.into())?).map_err(|_| EINVAL)?;
                }
                uaccess::write(arg, &d)?;
                Ok(0)
            }
            _ => Err(ENOTTY),
        }
    }
}

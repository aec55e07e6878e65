// SPDX-License-Identifier: GPL-2.0

//! vCPUs: `KVM_CREATE_VCPU`, the vCPU fd (mmap of `struct kvm_run`, the state ioctls) and
//! `KVM_RUN`, which alternates backend run windows with the exits the generic x86 code
//! finishes in process context.
//!
//! This file holds the vCPU, its fd and the run loop; the children hold the jobs the loop
//! and the ioctls hand off: `exits` (dispatch of the exits finished here), `io` (port and
//! MMIO exits), `msrs`, `apic` (the in-kernel local APIC's side of the loop), `realmode`
//! (vm86 without unrestricted guest) and `regs` (the state ioctls).

use super::fault::Faulted;
use super::stats::{vcpu as st, VcpuCounters};
use super::uaccess;
use super::vm::{Vm, VmMem};
use super::Kvm;
use crate::sys::anon_fd::{self, AnonFile};
use crate::sys::cpu;
use crate::sys::ffi;
use crate::sys::kmem::KmemBox;
use crate::sys::page::{LazyPage, PhysPage};
use crate::sys::ratelimit::pr_warn_ratelimited;
use crate::uapi::*;
use crate::x86::backend::MsrAllow;
use crate::x86::emulate::{self, EmuError, GuestMem, MemOp};
use crate::x86::exit::{CrOp, Exit};
use crate::x86::lapic::window::WindowApic;
use crate::x86::lapic::{self, Clock, Lapic, Mailbox};
use crate::x86::msr_access::{self, MsrEnv};
use crate::x86::state::{self, Exception, VcpuState};
use crate::x86::tsc::TscRate;
use crate::x86::{events, fpu, GuestFpu, RunCtx, VcpuOps};
use core::mem::offset_of;
use core::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use kernel::mm::virt::{flags, VmaNew};
use kernel::prelude::*;
use kernel::sync::{Arc, ArcBorrow, Mutex, SpinLock};
use kernel::{new_mutex, new_spinlock};
use zerocopy::{FromBytes, IntoBytes};

mod apic;
mod exits;
mod halt;
mod intercept;
mod io;
mod msrs;
mod realmode;
mod regs;
mod run;

use apic::*;
use exits::*;
use intercept::*;
use io::*;
use msrs::*;
use realmode::*;
use regs::*;
use run::*;

pub(crate) use regs::xsave2_size;

/// What the next KVM_RUN must finish before running the guest.
#[derive(Clone, Copy, Debug)]
enum Pending {
    None,
    /// IN/OUT handed to userspace: copy IN data to RAX, then skip the instruction (only if
    /// the guest is still at it).
    Pio {
        input: bool,
        size: u8,
        len: u8,
        linear_rip: u64,
    },
    /// INS/OUTS handed to userspace: write INS data to guest memory, advance RSI/RDI/RCX.
    StringPio {
        input: bool,
        size: u8,
        count: u32,
        io: emulate::StringIo,
        len: u8,
        linear_rip: u64,
    },
    /// MMIO read handed to userspace: write the data to the register, skip the instruction.
    MmioRead {
        op: MemOp,
    },
    /// RDMSR/WRMSR handed to userspace (KVM_CAP_X86_USER_SPACE_MSR): on `error` #GP,
    /// otherwise (RDMSR) load EDX:EAX from `data` and skip the instruction.
    Msr {
        write: bool,
        len: u8,
        linear_rip: u64,
    },
}

/// State under the vCPU mutex (KVM's `vcpu->mutex`, held by every vCPU ioctl).
pub(crate) struct VcpuInner {
    state: VcpuState,
    /// The backend's half of the vCPU.
    backend: KBox<dyn VcpuOps>,
    fpu: KmemBox<GuestFpu>,
    /// The instruction decoder's context (the seed's emulator cache object), made for
    /// the first instruction rkvm decodes (`emu_ctxt`).
    emu: Option<KmemBox<crate::x86::EmulateCtxt>>,
    cpuid: KVec<kvm_cpuid_entry2>,
    /// What the backend follows in `cpuid` (set with it).
    guest_caps: crate::x86::cpuid::GuestCaps,
    pending: Pending,
    guest_debug: u32,
    /// KVM_SET_GUEST_DEBUG's DR0-DR3 and DR7 (used with KVM_GUESTDBG_USE_HW_BP).
    debug_dr: [u64; 8],
    sigmask: Option<u64>,
    has_run: bool,
    /// Attached to the task for the length of each KVM_RUN (the seed's preempt ops).
    preempt: Option<crate::sys::notifiers::PreemptNotifier>,
    /// The in-kernel local APIC (split irqchip VMs).
    lapic: Option<KBox<Lapic>>,
    /// A SIPI waits for the vCPU (it takes effect in wait-for-SIPI state).
    sipi_pending: bool,
    /// An EOI userspace's I/O APIC must hear of (split irqchip, KVM_EXIT_IOAPIC_EOI).
    pending_ioapic_eoi: Option<u8>,
    /// KVM_SET_VAPIC_ADDR's guest-physical address (0: none).
    vapic_addr: u64,
    /// KVM_TPR_ACCESS_REPORTING, and an access to report (RIP, write).
    tpr_access_reporting: bool,
    pending_tpr_access: Option<(u64, bool)>,
    /// The vector of the last SIPI.
    sipi_vector: u8,
    /// How long the next halt polls before it sleeps, in ns (KVM's `halt_poll_ns`).
    halt_poll_ns: u32,
    /// The VM's MSR filter as of generation `msr_filter_gen` (refreshed before entry).
    msr_filter: Option<Arc<super::msr_filter::MsrFilter>>,
    msr_filter_gen: u64,
    /// KVM_CAP_ENFORCE_PV_FEATURE_CPUID: paravirtual features need their CPUID bit.
    enforce_pv_cpuid: bool,
    steal: super::steal::StealTime,
    pvclock: super::kvmclock::PvClock,
    /// KVM_X86_SET_MCE asked for a shutdown (KVM's KVM_REQ_TRIPLE_FAULT): the next
    /// KVM_RUN reports it.
    triple_fault: bool,
}

/// A vCPU.
#[pin_data]
pub(crate) struct Vcpu {
    pub(crate) id: u32,
    #[pin]
    inner: Mutex<VcpuInner>,
    /// `struct kvm_run`, shared with userspace.
    run: PhysPage,
    /// The PIO data page (KVM_PIO_PAGE_OFFSET), made by the first KVM_RUN or the first
    /// touch of its mapping.
    #[pin]
    pio: LazyPage,
    /// The dirty ring (KVM_DIRTY_LOG_PAGE_OFFSET), when the VM has rings.
    dirty_ring: Option<super::dirty_ring::DirtyRing>,
    /// The CPU whose VMX window this vCPU is in, -1 outside.
    running_cpu: AtomicI32,
    kick: AtomicBool,
    /// The last exit was for a host interrupt, with the guest at an instruction boundary
    /// (KVM's `at_instruction_boundary`): a preemption now is one KVM reports.
    at_boundary: AtomicBool,
    /// Its thread lost the CPU in KVM_RUN while runnable, and has not had it back (KVM's
    /// `preempted`): a candidate for another vCPU's directed yield.
    preempted: AtomicBool,
    /// The thread of its last KVM_RUN, which directed yields go to (KVM's `pid`).
    #[pin]
    thread: SpinLock<Option<cpu::ThreadRef>>,
    /// The index (in the VM's list) of the vCPU it last yielded to.
    last_boosted: core::sync::atomic::AtomicUsize,
    /// Where interrupts for the in-kernel local APIC are posted (split irqchip VMs).
    pub(crate) apic: Option<Mailbox>,
    pub(crate) stats: VcpuCounters,
    /// The halt histograms: how long each poll that ended the halt, each poll that did
    /// not, and each sleep lasted, in ns.
    pub(crate) halt_hists: super::stats::HaltHists,
}

/// The vCPU fd's object: the vCPU and a reference on its VM.
pub(crate) struct VcpuFile {
    vm: Arc<Vm>,
    vcpu: Arc<Vcpu>,
}

/// `KVM_CREATE_VCPU(id)`.
pub(crate) fn create(vm: Arc<Vm>, id: usize) -> Result<isize> {
    let id = u32::try_from(id).map_err(|_| EINVAL)?;
    if id >= super::caps::MAX_VCPU_IDS {
        return Err(EINVAL);
    }
    // KVM's name, with the vCPU id: /proc/PID/fd shows "anon_inode:kvm-vcpu:ID". Made
    // first: nothing may fail between joining the VM's list and the fd's install.
    let name = crate::sys::cname::ShortName::of("kvm-vcpu:", u64::from(id))?;
    let k = vm.kvm;
    let mut l = vm.locked.lock();
    if l.max_vcpu_ids != 0 && id >= l.max_vcpu_ids {
        return Err(EINVAL);
    }
    if l.vcpus.len() >= super::caps::MAX_VCPUS as usize {
        return Err(EINVAL);
    }
    if l.vcpus.iter().any(|v| v.id == id) {
        return Err(EEXIST);
    }
    let mut fpu_area = k.arch.fpu_cache.alloc_zeroed()?;
    fpu::init_area(fpu_area.bytes_mut());
    let mut apic_base = k.arch.lapic.apic_base;
    if id == l.bsp_vcpu_id {
        apic_base |= k.arch.lapic.bsp;
    }
    // The VM's TSC rate (KVM_SET_TSC_KHZ on the VM fd); the TSC starts at 0 until the
    // vCPU exists and joins the other vCPUs' (below, `x86/tsc.rs`).
    let host_khz = k.arch.timer.tsc_khz;
    let tsc_rate = TscRate::for_khz(vm.default_tsc_khz(), host_khz, k.backend.tsc_scaling())
        .unwrap_or(TscRate::host(host_khz));
    let tsc_offset = 0u64.wrapping_sub(tsc_rate.scale(host_tsc()));
    let split = vm.lapic_in_kernel.load(Ordering::Acquire);
    let (mailbox, lapic) = if split {
        let bus_ns = vm.apic_bus_cycle_ns.load(Ordering::Relaxed);
        let mut a = KBox::new(Lapic::new(id, apic_base, bus_ns), GFP_KERNEL_ACCOUNT)?;
        if vm.full_irqchip.load(Ordering::Acquire) {
            a.set_kernel_ioapic();
        }
        (Some(Mailbox::new()?), Some(a))
    } else {
        (None, None)
    };
    let dirty_ring = match vm.dirty_ring_bytes.load(Ordering::Relaxed) {
        0 => None,
        bytes => Some(super::dirty_ring::DirtyRing::new(bytes)?),
    };
    let vcpu = Arc::pin_init(
        try_pin_init!(Vcpu {
            id,
            inner <- new_mutex!(VcpuInner {
                state: VcpuState::reset(apic_base, tsc_offset, tsc_rate),
                backend: k.backend.vcpu_create()?,
                fpu: fpu_area,
                emu: None,
                cpuid: KVec::new(),
                guest_caps: Default::default(),
                pending: Pending::None,
                guest_debug: 0,
                debug_dr: [0; 8],
                sigmask: None,
                has_run: false,
                preempt: None,
                lapic,
                sipi_pending: false,
                pending_ioapic_eoi: None,
                vapic_addr: 0,
                tpr_access_reporting: false,
                pending_tpr_access: None,
                sipi_vector: 0,
                halt_poll_ns: 0,
                msr_filter: None,
                msr_filter_gen: u64::MAX,
                enforce_pv_cpuid: false,
                steal: Default::default(),
                pvclock: Default::default(),
                triple_fault: false,
            }),
            run: PhysPage::new()?,
            pio <- LazyPage::new(),
            dirty_ring,
            running_cpu: AtomicI32::new(-1),
            kick: AtomicBool::new(false),
            at_boundary: AtomicBool::new(false),
            preempted: AtomicBool::new(false),
            thread <- new_spinlock!(None),
            last_boosted: core::sync::atomic::AtomicUsize::new(0),
            apic: mailbox,
            stats: VcpuCounters::new(),
            halt_hists: super::stats::HaltHists::new(),
        }? Error),
        GFP_KERNEL_ACCOUNT,
    )?;
    {
        // Nobody else can reach the new vCPU yet, so this never fails; a try-lock also
        // keeps lockdep from recording the VM lock -> vCPU lock order here, the reverse
        // of KVM_RUN's (which takes the VM lock for ioeventfds, routes, ...).
        let mut inner = vcpu.inner.try_lock().ok_or(EBUSY)?;
        inner.state.msrs.ucode_rev = k.backend.reset_ucode_rev();
        // With an in-kernel APIC, APs wait for INIT (KVM's vCPU creation does the same).
        if split && apic_base & lapic::base::BSP == 0 {
            inner.state.mp_state = KVM_MP_STATE_UNINITIALIZED;
        }
        // The notifier's context is the vCPU, which outlives every KVM_RUN.
        let ctx = core::ptr::from_ref::<Vcpu>(&vcpu).cast_mut().cast();
        inner.preempt = Some(crate::sys::notifiers::PreemptNotifier::new(ctx)?);
        let inner = &mut *inner;
        if let (Some(a), Some(mb)) = (inner.lapic.as_ref(), vcpu.apic.as_ref()) {
            a.publish(mb, inner.state.apic_base);
        }
    }
    let file = Arc::new(
        VcpuFile {
            vm: vm.clone(),
            vcpu: vcpu.clone(),
        },
        GFP_KERNEL_ACCOUNT,
    )?;
    // From here to the fd's install nothing fails: a vCPU in the list has an fd.
    l.vcpus.push(vcpu.clone(), GFP_KERNEL_ACCOUNT)?;
    // As in KVM, the first vCPU fixes KVM_CAP_MAX_VCPU_ID if userspace left it unset.
    if l.max_vcpu_ids == 0 {
        l.max_vcpu_ids = super::caps::MAX_VCPU_IDS;
    }
    drop(l);
    match anon_fd::install_named(file, name.as_cstr()) {
        Ok(fd) => {
            // KVM's kvm_arch_vcpu_postcreate: only a vCPU that exists joins the VM's TSC
            // matching. Userspace may already be running it on the new fd; then it keeps
            // its own TSC rather than wait for that KVM_RUN.
            if let Some(mut inner) = vcpu.inner.try_lock() {
                let now = tsc_now(&inner.state.tsc_rate);
                inner.state.tsc_offset = vm.tsc_sync.lock().synchronize(None, now);
                inner.state.dirty = true;
            }
            Ok(fd as isize)
        }
        Err(e) => {
            let mut l = vm.locked.lock();
            if let Some(i) = l.vcpus.iter().position(|v| Arc::ptr_eq(v, &vcpu)) {
                let _ = l.vcpus.remove(i);
            }
            vcpu.release();
            Err(e)
        }
    }
}

/// What TSC matching needs to know now, for a vCPU at `rate` (`x86/tsc.rs`).
fn tsc_now(rate: &TscRate) -> crate::x86::tsc::TscNow {
    crate::x86::tsc::TscNow {
        host_tsc: rate.scale(host_tsc()),
        ns: crate::sys::wait::boot_ns(),
        khz: rate.khz(),
        unstable: crate::sys::cpu::tsc_unstable(),
    }
}

fn host_tsc() -> u64 {
    // SAFETY: Reads the TSC.
    unsafe { ffi::rkvm_rdtsc() }
}

/// `kvm_sched_in`: the task running KVM_RUN has a CPU again.
pub(crate) fn sched_in(ctx: *mut c_void) {
    // SAFETY: As in `sched_out`.
    let vcpu = unsafe { &*ctx.cast::<Vcpu>() };
    vcpu.preempted.store(false, Ordering::Release);
}

/// `kvm_sched_out`: the task running KVM_RUN lost its CPU.
pub(crate) fn sched_out(ctx: *mut c_void) {
    // SAFETY: `ctx` is the vCPU whose notifier is attached only during its KVM_RUN, while
    // the vCPU file (and so the vCPU) is alive.
    let vcpu = unsafe { &*ctx.cast::<Vcpu>() };
    // Only a preemption counts (the task is still runnable), not a sleep (a halt's wait):
    // reported when the guest stopped at an instruction boundary for a host interrupt,
    // as KVM counts it whether or not the guest has steal time (rkvm never sets the
    // record's `preempted` flag, see `steal.rs`).
    if cpu::current_runnable() {
        vcpu.preempted.store(true, Ordering::Release);
        let reported = vcpu.at_boundary.load(Ordering::Relaxed);
        vcpu.stats.inc(if reported {
            st::PREEMPTION_REPORTED
        } else {
            st::PREEMPTION_OTHER
        });
    }
}

impl VcpuInner {
    /// Brings the whole state up to date when the backend left part of it behind
    /// ([`VcpuState::lazy`]).
    fn sync_state(&mut self) -> Result {
        if self.state.lazy {
            self.backend.sync(&mut self.state)?;
        }
        Ok(())
    }
}

impl Vcpu {
    /// Frees backend resources (VPID, ASID); the VM calls this when it goes.
    pub(crate) fn release(&self) {
        self.inner.lock().backend.release();
    }

    /// Makes the vCPU look at its local APIC: out of guest mode if it runs one (without
    /// waiting), awake if it is halted.
    pub(crate) fn kick_apic(&self) {
        self.kick.store(true, Ordering::SeqCst);
        let c = self.running_cpu.load(Ordering::SeqCst);
        if c >= 0 {
            crate::sys::wait::kick_cpu(c as u32);
        }
        if let Some(mb) = self.apic.as_ref() {
            mb.wq.wake();
        }
    }

    /// Forces the vCPU out of guest mode if it is in a VMX window now, and waits until it
    /// has left (the IPI is taken only once the window is closed).
    /// Records the current thread as the one running this vCPU, if it is a new one.
    fn note_thread(&self) {
        let mut t = self.thread.lock();
        if t.as_ref().is_some_and(|t| t.is_current()) {
            return;
        }
        let old = core::mem::replace(&mut *t, cpu::ThreadRef::current());
        drop(t);
        drop(old);
    }

    /// Gives the rest of the current thread's time slice to this vCPU's thread if it waits
    /// for a CPU; whether it did. May schedule.
    pub(crate) fn yield_to(&self) -> bool {
        let task = self.thread.lock().as_ref().and_then(|t| t.task());
        task.is_some_and(|t| t.yield_to())
    }

    /// Returns whether it had to interrupt a CPU.
    pub(crate) fn kick_out_of_guest(&self) -> bool {
        let c = self.running_cpu.load(Ordering::SeqCst);
        if c >= 0 {
            let _ = cpu::run_on(c as u32, || {});
        }
        c >= 0
    }

    /// The vCPU's dirty ring, when the VM has rings.
    pub(crate) fn dirty_ring(&self) -> Option<&super::dirty_ring::DirtyRing> {
        self.dirty_ring.as_ref()
    }

    /// The dirty ring's page at page offset `pgoff` of the vCPU fd, if there is one.
    fn dirty_ring_page(&self, pgoff: usize) -> Option<&PhysPage> {
        let i = pgoff.checked_sub(KVM_DIRTY_LOG_PAGE_OFFSET as usize)?;
        self.dirty_ring.as_ref()?.page(i)
    }

    // ---- kvm_run page access -------------------------------------------------------------

    fn run_u8(&self, off: usize) -> u8 {
        let mut b = [0u8; 1];
        let _ = self.run.read_bytes(off, &mut b);
        b[0]
    }

    fn run_u64(&self, off: usize) -> u64 {
        let mut b = [0u8; 8];
        let _ = self.run.read_bytes(off, &mut b);
        u64::from_le_bytes(b)
    }

    fn run_put<T: IntoBytes + zerocopy::Immutable>(&self, off: usize, v: &T) {
        let _ = self.run.write_bytes(off, v.as_bytes());
    }

    fn set_exit(&self, reason: u32) {
        self.run_put(offset_of!(kvm_run, exit_reason), &reason);
    }
}

/// The vCPU's instruction decoder context `emu`, made now if this is its first use.
fn emu_ctxt<'a>(
    emu: &'a mut Option<KmemBox<crate::x86::EmulateCtxt>>,
    vm: &Vm,
) -> Result<&'a mut crate::x86::EmulateCtxt> {
    if emu.is_none() {
        let cache = &vm.kvm.arch.emulator_cache;
        *emu = Some(cache.alloc_value(crate::x86::EmulateCtxt::default())?);
    }
    emu.as_deref_mut().ok_or(ENOMEM)
}

const RUN_U: usize = offset_of!(kvm_run, __bindgen_anon_1);

// ---- The vCPU fd ----------------------------------------------------------------------

impl AnonFile for VcpuFile {
    const NAME: &'static CStr = c"kvm-vcpu";
    const HAS_MMAP: bool = true;
    const HAS_FAULT: bool = true;

    fn ioctl(this: ArcBorrow<'_, Self>, cmd: u32, arg: usize) -> Result<isize> {
        this.vm.check_mm()?;
        let vm = &*this.vm;
        let vcpu = &*this.vcpu;
        let mut inner = vcpu.inner.lock();
        let g = &mut *inner;
        // Only KVM_RUN and the general registers make do with the state a backend keeps
        // current after an IN or OUT (`VcpuState::lazy`); everything else sees it all.
        if !matches!(cmd, RKVM_KVM_RUN | RKVM_KVM_GET_REGS | RKVM_KVM_SET_REGS) {
            g.sync_state()?;
        }
        match cmd {
            RKVM_KVM_RUN => {
                if arg != 0 {
                    return Err(EINVAL);
                }
                vcpu.note_thread();
                let mut notifier = g.preempt.take();
                let attached = notifier.as_mut().map(|n| n.attach());
                let r = run(vm, vcpu, g);
                drop(attached);
                g.preempt = notifier;
                r
            }
            RKVM_KVM_GET_REGS => {
                uaccess::write(arg, &g.state.regs)?;
                Ok(0)
            }
            RKVM_KVM_SET_REGS => {
                let mut r = kvm_regs::default();
                uaccess::read_to(arg, &mut r)?;
                set_regs(&mut g.state, &r);
                Ok(0)
            }
            RKVM_KVM_GET_SREGS => {
                let mut out = kvm_sregs::default();
                get_sregs(&g.state, &mut out);
                uaccess::write(arg, &out)?;
                Ok(0)
            }
            RKVM_KVM_GET_LAPIC => {
                let Some(a) = g.lapic.as_ref() else {
                    return Err(EINVAL);
                };
                let regs = a.get_state(
                    g.state.apic_base,
                    crate::sys::wait::now_ns(),
                    vm.x2apic_format.load(Ordering::Relaxed),
                );
                // The kernel builds with unsigned `char`: `regs` is `[u8; 1024]`.
                uaccess::write(arg, &kvm_lapic_state { regs })?;
                Ok(0)
            }
            RKVM_KVM_SET_LAPIC => {
                if g.lapic.is_none() {
                    return Err(EINVAL);
                }
                let st: kvm_lapic_state = uaccess::read(arg)?;
                if let Some(a) = g.lapic.as_mut() {
                    a.set_state(
                        &st.regs,
                        g.state.apic_base,
                        crate::sys::wait::now_ns(),
                        vm.x2apic_format.load(Ordering::Relaxed),
                    )?;
                }
                apic_changed(vcpu, g);
                Ok(0)
            }
            RKVM_KVM_SET_SREGS => {
                let mut s = kvm_sregs::default();
                uaccess::read_to(arg, &mut s)?;
                set_sregs(vm, g, &s)?;
                apic_changed(vcpu, g);
                Ok(0)
            }
            RKVM_KVM_GET_SREGS2 => {
                uaccess::write(arg, &get_sregs2(&g.state))?;
                Ok(0)
            }
            RKVM_KVM_SET_SREGS2 => {
                let s: kvm_sregs2 = uaccess::read(arg)?;
                set_sregs2(vm, g, &s)?;
                apic_changed(vcpu, g);
                Ok(0)
            }
            RKVM_KVM_GET_FPU => {
                uaccess::write(arg, &get_fpu(g.fpu.bytes()))?;
                Ok(0)
            }
            RKVM_KVM_SET_FPU => {
                let f: kvm_fpu = uaccess::read(arg)?;
                set_fpu(g.fpu.bytes_mut(), &f);
                Ok(0)
            }
            RKVM_KVM_GET_XSAVE => {
                let n = size_of::<kvm_xsave>();
                write_xsave(g, arg, n)
            }
            RKVM_KVM_GET_XSAVE2 => write_xsave(g, arg, xsave2_size(vm.kvm)),
            RKVM_KVM_SET_XSAVE => set_xsave(g, arg),
            RKVM_KVM_GET_XCRS => {
                let mut x = kvm_xcrs {
                    nr_xcrs: 1,
                    ..Default::default()
                };
                x.xcrs[0].value = g.state.xcr0;
                uaccess::write(arg, &x)?;
                Ok(0)
            }
            RKVM_KVM_SET_XCRS => {
                let x: kvm_xcrs = uaccess::read(arg)?;
                let allowed = crate::x86::cpuid::guest_supported_xcr0(&g.cpuid);
                if let Some(v) = crate::x86::validate::set_xcrs(&x, allowed)? {
                    g.state.xcr0 = v;
                }
                Ok(0)
            }
            RKVM_KVM_GET_MSRS | RKVM_KVM_SET_MSRS => {
                msrs_ioctl(vm, vcpu, g, arg, cmd == RKVM_KVM_SET_MSRS)
            }
            RKVM_KVM_GET_ONE_REG | RKVM_KVM_SET_ONE_REG => {
                msrs::one_reg_ioctl(vm, vcpu, g, arg, cmd == RKVM_KVM_SET_ONE_REG)
            }
            RKVM_KVM_GET_REG_LIST => msrs::reg_list_ioctl(arg),
            RKVM_KVM_SET_CPUID2 => set_cpuid2(vm, g, arg),
            RKVM_KVM_SET_CPUID => set_cpuid(vm, g, arg),
            RKVM_KVM_GET_CPUID2 => {
                let nent = uaccess::read_header8(arg)?;
                if (nent as usize) < g.cpuid.len() {
                    return Err(E2BIG);
                }
                let rt = crate::x86::cpuid::Runtime {
                    cr4: g.state.cr4,
                    xcr0: g.state.xcr0,
                    apic_base: g.state.apic_base,
                    mwait: vm.quirks().cpuid_mwait(g.state.msrs.misc_enable),
                };
                let mut table = KVec::with_capacity(g.cpuid.len(), GFP_KERNEL_ACCOUNT)?;
                for e in g.cpuid.iter() {
                    let [eax, ebx, ecx, edx] = crate::x86::cpuid::runtime_view(e, rt);
                    table.push(
                        kvm_cpuid_entry2 {
                            eax,
                            ebx,
                            ecx,
                            edx,
                            ..*e
                        },
                        GFP_KERNEL_ACCOUNT,
                    )?;
                }
                uaccess::write_slice(uaccess::offset(arg, size_of::<kvm_cpuid2>())?, &table)?;
                uaccess::write(arg, &(g.cpuid.len() as u32))?;
                Ok(0)
            }
            RKVM_KVM_GET_DEBUGREGS => {
                let d = kvm_debugregs {
                    db: g.state.db,
                    dr6: g.state.dr6,
                    dr7: g.state.dr7,
                    ..Default::default()
                };
                uaccess::write(arg, &d)?;
                Ok(0)
            }
            RKVM_KVM_SET_DEBUGREGS => {
                let d: kvm_debugregs = uaccess::read(arg)?;
                if d.flags != 0 || d.dr6 >> 32 != 0 || d.dr7 >> 32 != 0 {
                    return Err(EINVAL);
                }
                g.state.db = d.db;
                g.state.dr6 = d.dr6 & !0x1000 | 0xffff_0ff0;
                g.state.dr7 = d.dr7 & !0xd000 | 0x400;
                g.state.dirty = true;
                Ok(0)
            }
            RKVM_KVM_GET_VCPU_EVENTS => {
                uaccess::write(arg, &events::get(&g.state))?;
                Ok(0)
            }
            RKVM_KVM_SET_VCPU_EVENTS => {
                let e: kvm_vcpu_events = uaccess::read(arg)?;
                events::set(&mut g.state, &e, vm.kvm.backend.one_shadow_bit())?;
                Ok(0)
            }
            RKVM_KVM_GET_MP_STATE => {
                // INIT and SIPI already sent take effect first, as in KVM.
                apic_accept_events(vm, vcpu, g);
                uaccess::write(
                    arg,
                    &kvm_mp_state {
                        mp_state: g.state.mp_state,
                    },
                )?;
                Ok(0)
            }
            RKVM_KVM_SET_MP_STATE => {
                let m: kvm_mp_state = uaccess::read(arg)?;
                match m.mp_state {
                    KVM_MP_STATE_RUNNABLE => {}
                    // Without an in-kernel local APIC only "runnable" exists, as in KVM.
                    KVM_MP_STATE_UNINITIALIZED
                    | KVM_MP_STATE_HALTED
                    | KVM_MP_STATE_AP_RESET_HOLD
                    | KVM_MP_STATE_INIT_RECEIVED
                    | KVM_MP_STATE_SIPI_RECEIVED
                        if g.lapic.is_some() => {}
                    _ => return Err(EINVAL),
                }
                if m.mp_state == KVM_MP_STATE_SIPI_RECEIVED {
                    // Obsolete: wait-for-SIPI with the SIPI pending (its vector is the
                    // one the APIC last latched).
                    g.state.mp_state = KVM_MP_STATE_INIT_RECEIVED;
                    g.sipi_pending = true;
                } else {
                    g.state.mp_state = m.mp_state;
                }
                Ok(0)
            }
            RKVM_KVM_ENABLE_CAP => {
                let cap: kvm_enable_cap = uaccess::read(arg)?;
                if cap.flags != 0 {
                    return Err(EINVAL);
                }
                match cap.cap {
                    KVM_CAP_ENFORCE_PV_FEATURE_CPUID => {
                        g.enforce_pv_cpuid = cap.args[0] != 0;
                        Ok(0)
                    }
                    _ => Err(EINVAL),
                }
            }
            RKVM_KVM_KVMCLOCK_CTRL => g.pvclock.guest_stopped(g.state.msrs.kvm_system_time),
            RKVM_KVM_PRE_FAULT_MEMORY => {
                // The vCPU lock is not needed: the EPT is the VM's.
                drop(inner);
                pre_fault_memory(vm, arg)
            }
            RKVM_KVM_TRANSLATE => {
                let mut t: kvm_translation = uaccess::read(arg)?;
                let r = emulate::translate(
                    &g.state,
                    &VmMem::of(vm, vcpu),
                    t.linear_address,
                    false,
                    false,
                );
                match r {
                    Ok(gpa) => {
                        t.physical_address = gpa;
                        t.valid = 1;
                    }
                    Err(EmuError::Host(e)) => return Err(e),
                    Err(_) => {
                        t.physical_address = u64::MAX;
                        t.valid = 0;
                    }
                }
                t.writeable = 1;
                t.usermode = 0;
                uaccess::write(arg, &t)?;
                Ok(0)
            }
            RKVM_KVM_SET_SIGNAL_MASK => {
                if arg == 0 {
                    g.sigmask = None;
                    return Ok(0);
                }
                // struct kvm_signal_mask { __u32 len; __u8 sigset[]; }
                let len: u32 = uaccess::read(arg)?;
                if len != 8 {
                    return Err(EINVAL);
                }
                let mask: u64 = uaccess::read(uaccess::offset(arg, 4)?)?;
                g.sigmask = Some(mask);
                Ok(0)
            }
            RKVM_KVM_SET_GUEST_DEBUG => {
                let d: kvm_guest_debug = uaccess::read(arg)?;
                let valid = KVM_GUESTDBG_ENABLE
                    | KVM_GUESTDBG_SINGLESTEP
                    | KVM_GUESTDBG_USE_SW_BP
                    | KVM_GUESTDBG_USE_HW_BP
                    | KVM_GUESTDBG_INJECT_DB
                    | KVM_GUESTDBG_INJECT_BP
                    | KVM_GUESTDBG_BLOCKIRQ;
                if d.control & !valid != 0 {
                    return Err(EINVAL);
                }
                // Hand the guest a #DB or #BP (a debugger passing on the guest's own
                // event); #BP goes in as INT3 would raise it (the return address past a
                // one-byte INT3). Not while another exception waits.
                let inject = d.control & (KVM_GUESTDBG_INJECT_DB | KVM_GUESTDBG_INJECT_BP);
                if inject != 0 {
                    if g.state.events.exception.is_some() {
                        return Err(EBUSY);
                    }
                    let vector = if inject & KVM_GUESTDBG_INJECT_DB != 0 {
                        1
                    } else {
                        3
                    };
                    inject_exception(&mut g.state, vector);
                }
                g.guest_debug = if d.control & KVM_GUESTDBG_ENABLE != 0 {
                    d.control
                } else {
                    0
                };
                g.debug_dr = d.arch.debugreg;
                Ok(0)
            }
            RKVM_KVM_INTERRUPT => {
                let irq: kvm_interrupt = uaccess::read(arg)?;
                if irq.irq >= 256 {
                    return Err(EINVAL);
                }
                // The in-kernel PIC gives ExtINT itself.
                if vm.full_irqchip.load(Ordering::Acquire) {
                    return Err(ENXIO);
                }
                if let Some(a) = g.lapic.as_mut() {
                    // With the split irqchip this is the PIC's ExtINT; one at a time.
                    if a.ext_vector.is_some() {
                        return Err(EEXIST);
                    }
                    a.ext_vector = Some(irq.irq as u8);
                    return Ok(0);
                }
                // Without an in-kernel irqchip a new vector replaces a queued one, as KVM's
                // kvm_queue_interrupt does.
                g.state.events.interrupt = Some(irq.irq as u8);
                g.state.events.interrupt_injected = false;
                Ok(0)
            }
            RKVM_KVM_SET_VAPIC_ADDR => set_vapic_addr(vm, vcpu, g, arg),
            RKVM_KVM_TPR_ACCESS_REPORTING => tpr_access_reporting(g, arg),
            RKVM_KVM_GET_TSC_KHZ => Ok(g.state.tsc_rate.khz() as isize),
            RKVM_KVM_SET_TSC_KHZ => {
                // KVM takes the low 32 bits of the argument.
                let khz = arg as u32;
                let host_khz = vm.kvm.arch.timer.tsc_khz;
                g.state.tsc_rate =
                    TscRate::for_khz(khz, host_khz, vm.kvm.backend.tsc_scaling()).ok_or(EINVAL)?;
                g.state.dirty = true;
                Ok(0)
            }
            // vCPU attributes: only KVM_VCPU_TSC_CTRL/KVM_VCPU_TSC_OFFSET, the offset
            // between the host's TSC and this guest's (ENXIO for anything else).
            RKVM_KVM_HAS_DEVICE_ATTR | RKVM_KVM_GET_DEVICE_ATTR | RKVM_KVM_SET_DEVICE_ATTR => {
                let a: kvm_device_attr = uaccess::read(arg)?;
                if a.group != KVM_VCPU_TSC_CTRL || u64::from(KVM_VCPU_TSC_OFFSET) != a.attr {
                    return Err(ENXIO);
                }
                let addr = usize::try_from(a.addr).map_err(|_| EFAULT)?;
                match cmd {
                    RKVM_KVM_GET_DEVICE_ATTR => uaccess::write(addr, &g.state.tsc_offset)?,
                    RKVM_KVM_SET_DEVICE_ATTR => {
                        let offset: u64 = uaccess::read(addr)?;
                        vm.tsc_sync
                            .lock()
                            .set_offset(offset, tsc_now(&g.state.tsc_rate));
                        g.state.tsc_offset = offset;
                        g.state.dirty = true;
                    }
                    _ => {}
                }
                Ok(0)
            }
            RKVM_KVM_GET_STATS_FD => {
                let id =
                    kernel::str::CString::try_from_fmt(fmt!("kvm-{}/vcpu-{}", vm.pid, vcpu.id))?;
                super::stats::StatsFile::open(&id, (this.vm.clone(), this.vcpu.clone()))
            }
            RKVM_KVM_X86_SETUP_MCE => {
                let mcg_cap: u64 = uaccess::read(arg)?;
                let supported = crate::x86::mce::supported_cap(vm.kvm.backend.has_cmci());
                let kept = vm.kvm.backend.setup_mce(mcg_cap);
                g.state.msrs.mce.setup(mcg_cap, supported, kept)?;
                if let Some(a) = g.lapic.as_mut() {
                    a.set_cmci(mcg_cap & crate::x86::mce::cap::CMCI_P != 0);
                }
                Ok(0)
            }
            RKVM_KVM_X86_SET_MCE => {
                let e: kvm_x86_mce = uaccess::read(arg)?;
                let s = &mut g.state;
                let cr4_mce = s.cr4 & state::cr4::MCE != 0;
                let signal = s.msrs.mce.inject(&e, &mut s.msrs.mcg_status, cr4_mce)?;
                match signal {
                    crate::x86::mce::Signal::None => {}
                    crate::x86::mce::Signal::MachineCheck => inject_exception(s, 18),
                    crate::x86::mce::Signal::TripleFault => g.triple_fault = true,
                    crate::x86::mce::Signal::Cmci => {
                        let apic_base = g.state.apic_base;
                        if let Some(a) = g.lapic.as_mut() {
                            a.deliver_cmci(apic_base);
                        }
                        apic_changed(vcpu, g);
                    }
                }
                Ok(0)
            }
            RKVM_KVM_NMI => {
                g.state.events.nmi_pending = true;
                Ok(0)
            }
            // The vCPU fd answers an ioctl it does not know with EINVAL, as KVM's
            // kvm_arch_vcpu_ioctl does (the VM fd answers ENOTTY).
            _ => Err(EINVAL),
        }
    }

    /// A mapping of the vCPU's pages; all but the run page are mapped at their first
    /// touch (`fault`), as KVM maps them all.
    fn mmap(this: ArcBorrow<'_, Self>, vma: &VmaNew) -> Result {
        this.vm.check_mm()?;
        let v = &this.vcpu;
        // SAFETY: Reads the offset field of the VMA under setup.
        let pgoff = unsafe { (*vma.as_ptr()).vm_pgoff };
        let npages = (vma.end() - vma.start()) / 4096;
        // The ring is shared, never private (copy-on-write would hide rkvm's entries)
        // nor executable, as KVM requires.
        let last = pgoff.saturating_add(npages.saturating_sub(1));
        if (v.dirty_ring_page(pgoff).is_some() || v.dirty_ring_page(last).is_some())
            && (vma.flags() & flags::EXEC != 0 || vma.flags() & flags::SHARED == 0)
        {
            return Err(EINVAL);
        }
        // The run page, which every VMM reads at once, is mapped now (saving a page
        // fault); the others at their first touch.
        let mixed = vma.set_mixedmap();
        if pgoff == 0 && npages > 0 {
            mixed.vm_insert_page(vma.start(), v.run.page())?;
        }
        Ok(())
    }

    /// The page at `pgoff`: the run page, the PIO data page or the VM's coalesced MMIO
    /// ring (either of the last two made now if nothing made it yet), or a page of the
    /// dirty ring; SIGBUS past those.
    fn fault(
        this: ArcBorrow<'_, Self>,
        pgoff: usize,
        map: &mut dyn FnMut(&kernel::page::Page),
    ) -> Result {
        const KVM_PIO_PAGE: usize = KVM_PIO_PAGE_OFFSET as usize;
        const KVM_COALESCED_PAGE: usize = KVM_COALESCED_MMIO_PAGE_OFFSET as usize;
        let v = &this.vcpu;
        match pgoff {
            0 => map(v.run.page()),
            KVM_PIO_PAGE => map(v.pio.get()?.page()),
            KVM_COALESCED_PAGE => map(this.vm.coalesced_ring.get()?.page()),
            n => map(v.dirty_ring_page(n).ok_or(EINVAL)?.page()),
        }
        Ok(())
    }
}

// ---- KVM_RUN ---------------------------------------------------------------------------

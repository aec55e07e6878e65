// SPDX-License-Identifier: GPL-2.0

//! vCPUs: `KVM_CREATE_VCPU`, the vCPU fd (mmap of `struct kvm_run`, the state ioctls) and
//! `KVM_RUN`, which alternates backend run windows with the exits the generic x86 code
//! finishes in process context.

use super::stats::{vcpu as st, VcpuCounters};
use super::uaccess;
use super::vm::{Vm, VmMem};
use super::Kvm;
use crate::sys::anon_fd::{self, AnonFile};
use crate::sys::cpu;
use crate::sys::ffi;
use crate::sys::kmem::KmemBox;
use crate::sys::page::PhysPage;
use crate::sys::ratelimit::pr_warn_ratelimited;
use crate::uapi::*;
use crate::vmx::vcpu::{RunCtx, VmxVcpu};
use crate::x86::emulate::{self, EmuError, GuestMem, MemOp, MsrEnv};
use crate::x86::exit::Exit;
use crate::x86::lapic::{self, Clock, Lapic, Mailbox};
use crate::x86::state::{self, Exception, VcpuState};
use crate::x86::{events, fpu, GuestFpu};
use core::mem::offset_of;
use core::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use kernel::mm::virt::VmaNew;
use kernel::new_mutex;
use kernel::prelude::*;
use kernel::sync::{Arc, ArcBorrow, Mutex};
use zerocopy::{FromBytes, IntoBytes};

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
    vmx: VmxVcpu,
    fpu: KmemBox<GuestFpu>,
    /// The instruction decoder's context (the seed's emulator cache object).
    emu: KmemBox<crate::x86::EmulateCtxt>,
    cpuid: KVec<kvm_cpuid_entry2>,
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
    /// The vector of the last SIPI.
    sipi_vector: u8,
    /// The VM's MSR filter as of generation `msr_filter_gen` (refreshed before entry).
    msr_filter: Option<Arc<super::msr_filter::MsrFilter>>,
    msr_filter_gen: u64,
    /// KVM_CAP_ENFORCE_PV_FEATURE_CPUID: paravirtual features need their CPUID bit.
    enforce_pv_cpuid: bool,
    steal: super::steal::StealTime,
    pvclock: super::kvmclock::PvClock,
}

/// A vCPU.
#[pin_data]
pub(crate) struct Vcpu {
    pub(crate) id: u32,
    #[pin]
    inner: Mutex<VcpuInner>,
    /// `struct kvm_run`, shared with userspace.
    run: PhysPage,
    /// The PIO data page (KVM_PIO_PAGE_OFFSET).
    pio: PhysPage,
    /// The CPU whose VMX window this vCPU is in, -1 outside.
    running_cpu: AtomicI32,
    kick: AtomicBool,
    /// Where interrupts for the in-kernel local APIC are posted (split irqchip VMs).
    pub(crate) apic: Option<Mailbox>,
    pub(crate) stats: VcpuCounters,
    /// `halt_wait_hist`: how long each in-kernel halt waited, in ns.
    pub(crate) halt_wait_hist: super::stats::LogHist,
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
    let fpu_area = k.arch.fpu_cache.alloc_value(GuestFpu {
        legacy_and_header: [0; 576],
    })?;
    let mut apic_base = k.arch.lapic.apic_base;
    if id == l.bsp_vcpu_id {
        apic_base |= k.arch.lapic.bsp;
    }
    // A new vCPU's TSC starts at 0.
    let tsc_offset = 0u64.wrapping_sub(host_tsc());
    let split = vm.split_irqchip.load(Ordering::Acquire);
    let (mailbox, lapic) = if split {
        let bus_ns = vm.apic_bus_cycle_ns.load(Ordering::Relaxed);
        let a = KBox::new(Lapic::new(id, apic_base, bus_ns), GFP_KERNEL_ACCOUNT)?;
        (Some(Mailbox::new()?), Some(a))
    } else {
        (None, None)
    };
    let vcpu = Arc::pin_init(
        try_pin_init!(Vcpu {
            id,
            inner <- new_mutex!(VcpuInner {
                state: VcpuState::reset(apic_base, tsc_offset),
                vmx: VmxVcpu::new(&k.vmx)?,
                fpu: fpu_area,
                emu: k.arch.emulator_cache.alloc_value(crate::x86::EmulateCtxt::default())?,
                cpuid: KVec::new(),
                pending: Pending::None,
                guest_debug: 0,
                debug_dr: [0; 8],
                sigmask: None,
                has_run: false,
                preempt: None,
                lapic,
                sipi_pending: false,
                sipi_vector: 0,
                msr_filter: None,
                msr_filter_gen: u64::MAX,
                enforce_pv_cpuid: false,
                steal: Default::default(),
                pvclock: Default::default(),
            }),
            run: PhysPage::new()?,
            pio: PhysPage::new()?,
            running_cpu: AtomicI32::new(-1),
            kick: AtomicBool::new(false),
            apic: mailbox,
            stats: VcpuCounters::new(),
            halt_wait_hist: super::stats::LogHist::new(),
        }? Error),
        GFP_KERNEL_ACCOUNT,
    )?;
    {
        // Nobody else can reach the new vCPU yet, so this never fails; a try-lock also
        // keeps lockdep from recording the VM lock -> vCPU lock order here, the reverse
        // of KVM_RUN's (which takes the VM lock for ioeventfds, routes, ...).
        let mut inner = vcpu.inner.try_lock().ok_or(EBUSY)?;
        fpu::reset_area(inner.fpu.bytes_mut());
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
    l.vcpus.push(vcpu.clone(), GFP_KERNEL_ACCOUNT)?;
    // As in KVM, the first vCPU fixes KVM_CAP_MAX_VCPU_ID if userspace left it unset.
    if l.max_vcpu_ids == 0 {
        l.max_vcpu_ids = super::caps::MAX_VCPU_IDS;
    }
    drop(l);
    let file = Arc::new(
        VcpuFile {
            vm: vm.clone(),
            vcpu: vcpu.clone(),
        },
        GFP_KERNEL_ACCOUNT,
    )?;
    match anon_fd::install(file) {
        Ok(fd) => Ok(fd as isize),
        Err(e) => {
            let mut l = vm.locked.lock();
            if let Some(i) = l.vcpus.iter().position(|v| Arc::ptr_eq(v, &vcpu)) {
                let _ = l.vcpus.remove(i);
            }
            vcpu.release(k);
            Err(e)
        }
    }
}

fn host_tsc() -> u64 {
    // SAFETY: Reads the TSC.
    unsafe { ffi::rkvm_rdtsc() }
}

/// `kvm_sched_out`: the task running KVM_RUN lost its CPU.
pub(crate) fn sched_out(ctx: *mut c_void) {
    // SAFETY: `ctx` is the vCPU whose notifier is attached only during its KVM_RUN, while
    // the vCPU file (and so the vCPU) is alive.
    let vcpu = unsafe { &*ctx.cast::<Vcpu>() };
    vcpu.stats.inc(st::PREEMPTION_OTHER);
}

impl Vcpu {
    /// Frees backend resources (VPID); the VM calls this when it goes.
    pub(crate) fn release(&self, k: &Kvm) {
        self.inner.lock().vmx.release(&k.vmx);
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
    pub(crate) fn kick_out_of_guest(&self) {
        let c = self.running_cpu.load(Ordering::SeqCst);
        if c >= 0 {
            let _ = cpu::run_on(c as u32, || {});
        }
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

const RUN_U: usize = offset_of!(kvm_run, __bindgen_anon_1);

// ---- The vCPU fd ----------------------------------------------------------------------

impl AnonFile for VcpuFile {
    const NAME: &'static CStr = c"kvm-vcpu";
    const HAS_MMAP: bool = true;

    fn ioctl(this: ArcBorrow<'_, Self>, cmd: u32, arg: usize) -> Result<isize> {
        this.vm.check_mm()?;
        let vm = &*this.vm;
        let vcpu = &*this.vcpu;
        let mut inner = vcpu.inner.lock();
        let g = &mut *inner;
        match cmd {
            RKVM_KVM_RUN => {
                if arg != 0 {
                    return Err(EINVAL);
                }
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
                let r: kvm_regs = uaccess::read(arg)?;
                set_regs(&mut g.state, &r);
                Ok(0)
            }
            RKVM_KVM_GET_SREGS => {
                uaccess::write(arg, &get_sregs(&g.state))?;
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
                let s: kvm_sregs = uaccess::read(arg)?;
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
                events::set(&mut g.state, &e)?;
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
                let r = emulate::translate(&g.state, &VmMem(vm), t.linear_address, false, false);
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
            RKVM_KVM_GET_TSC_KHZ => Ok(vm.kvm.arch.timer.tsc_khz as isize),
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
                        g.state.tsc_offset = uaccess::read(addr)?;
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
            RKVM_KVM_NMI => {
                g.state.events.nmi_pending = true;
                Ok(0)
            }
            // The vCPU fd answers an ioctl it does not know with EINVAL, as KVM's
            // kvm_arch_vcpu_ioctl does (the VM fd answers ENOTTY).
            _ => Err(EINVAL),
        }
    }

    fn mmap(this: ArcBorrow<'_, Self>, vma: &VmaNew) -> Result {
        this.vm.check_mm()?;
        let v = &this.vcpu;
        let pages = [&v.run, &v.pio, &this.vm.coalesced_ring];
        // SAFETY: Reads the offset field of the VMA under setup.
        let pgoff = unsafe { (*vma.as_ptr()).vm_pgoff };
        let len = vma.end() - vma.start();
        let mixed = vma.set_mixedmap();
        for i in 0..len / 4096 {
            // Pages past the three KVM defines stay unmapped (SIGBUS on access).
            if let Some(p) = pgoff.checked_add(i).and_then(|n| pages.get(n)) {
                mixed.vm_insert_page(vma.start() + i * 4096, p.page())?;
            }
        }
        Ok(())
    }
}

// ---- KVM_RUN ---------------------------------------------------------------------------

fn run(vm: &Vm, vcpu: &Vcpu, g: &mut VcpuInner) -> Result<isize> {
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
    post_run_save(vcpu, g);
    r
}

/// KVM_RUN of an AP that never got INIT: sleep until INIT or SIPI arrive, take them, and
/// let userspace call again (`EAGAIN`), as KVM does.
fn run_uninitialized(vm: &Vm, vcpu: &Vcpu, g: &mut VcpuInner) -> Result<isize> {
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
fn accept_dm_intr(g: &VcpuInner) -> bool {
    match g.lapic.as_ref() {
        None => true,
        Some(a) => a.ext_vector.is_none() && a.accept_pic_intr(g.state.apic_base),
    }
}

/// KVM's `post_kvm_run_save`: the state userspace's interrupt controller needs.
fn post_run_save(vcpu: &Vcpu, g: &VcpuInner) {
    let s = &g.state;
    let if_flag = u8::from(s.regs.rflags & state::rflags::IF != 0);
    let ready = u8::from(
        if_flag != 0
            && s.events.shadow == 0
            && s.events.interrupt.is_none()
            && s.events.exception.is_none()
            && !s.events.nmi_injected
            && accept_dm_intr(g),
    );
    vcpu.run_put(offset_of!(kvm_run, if_flag), &if_flag);
    vcpu.run_put(offset_of!(kvm_run, cr8), &s.cr8);
    vcpu.run_put(offset_of!(kvm_run, apic_base), &s.apic_base);
    vcpu.run_put(offset_of!(kvm_run, ready_for_interrupt_injection), &ready);
}

fn run_loop(vm: &Vm, vcpu: &Vcpu, g: &mut VcpuInner) -> Result<isize> {
    let k = vm.kvm;
    g.has_run = true;
    // Without unrestricted guest, real mode runs in virtual-8086 mode on rkvm's own TSS
    // and identity map.
    let rmode = if k.vmx.params.unrestricted_guest {
        None
    } else {
        Some(vm.rmode_addrs()?)
    };
    // Steal time is brought up to date on the first entry of each KVM_RUN.
    let mut first_entry = true;
    loop {
        if cpu::handle_guest_entry_work().is_err() {
            vcpu.set_exit(KVM_EXIT_INTR);
            vcpu.stats.inc(st::SIGNAL_EXITS);
            return Err(EINTR);
        }
        let request_irq_window =
            vcpu.run_u8(offset_of!(kvm_run, request_interrupt_window)) != 0 && accept_dm_intr(g);
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
        let timer_deadline_tsc = g.lapic.as_ref().and_then(|a| {
            let c = clock(vm, &g.state);
            let cycles = a.timer_remaining_cycles(&c)?;
            Some(
                c.guest_tsc
                    .wrapping_sub(g.state.tsc_offset)
                    .saturating_add(cycles),
            )
        });
        if rmode.is_some() && !g.state.protected() {
            deliver_real_mode_event(vm, vcpu, &mut g.state)?;
        }
        let eptp = vm.mmu.lock().ept.eptp();
        g.steal.update(
            vm,
            g.state.msrs.steal_time,
            cpu::current_run_delay(),
            first_entry,
        );
        first_entry = false;
        g.pvclock
            .update(vm, g.state.msrs.kvm_system_time, g.state.tsc_offset);
        if vm.msr_filter_gen.load(Ordering::SeqCst) != g.msr_filter_gen {
            (g.msr_filter, g.msr_filter_gen) = vm.msr_filter();
        }
        let exit = {
            let VcpuInner {
                state,
                vmx,
                fpu,
                cpuid,
                guest_debug,
                debug_dr,
                msr_filter,
                msr_filter_gen,
                enforce_pv_cpuid,
                ..
            } = &mut *g;
            let pv_features = enforce_pv_cpuid.then(|| {
                let rt = crate::x86::cpuid::Runtime::FEATURES;
                crate::x86::cpuid::guest_cpuid(cpuid, crate::x86::cpuid::KVM_CPUID_FEATURES, 0, rt)
                    [0]
            });
            let mut ctx = RunCtx {
                vmx: &k.vmx,
                uret: &k.arch.uret,
                l1d: k.l1d.as_ref(),
                eptp,
                flush_gen: &vm.flush_gen,
                state,
                fpu,
                cpuid,
                stats: &vcpu.stats,
                running_cpu: &vcpu.running_cpu,
                kick: &vcpu.kick,
                request_irq_window,
                apic_window,
                timer_deadline_tsc,
                guest_debug: *guest_debug,
                debug_dr: (*guest_debug & KVM_GUESTDBG_USE_HW_BP != 0).then_some(*debug_dr),
                rmode,
                quirks: vm.quirks(),
                msr_filter: msr_filter.as_deref(),
                msr_filter_gen: *msr_filter_gen,
                vm_msr_filter_gen: &vm.msr_filter_gen,
                pv_features,
            };
            vmx.run(&mut ctx)
        };
        let exit = match exit {
            Ok(e) => e,
            Err(e) if e == EBUSY => {
                pr_warn_ratelimited!("VMX is in use by another hypervisor: KVM_RUN refused\n");
                return Err(EBUSY);
            }
            Err(e) => return Err(e),
        };
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

// ---- The in-kernel local APIC ----------------------------------------------------------

fn clock(vm: &Vm, s: &VcpuState) -> Clock {
    Clock {
        now_ns: crate::sys::wait::now_ns(),
        guest_tsc: host_tsc().wrapping_add(s.tsc_offset),
        tsc_khz: vm.kvm.arch.timer.tsc_khz,
    }
}

/// After the APIC's registers or IA32_APIC_BASE changed: republish its addressing for
/// senders, mirror TPR into CR8.
fn apic_changed(vcpu: &Vcpu, g: &mut VcpuInner) {
    if let (Some(a), Some(mb)) = (g.lapic.as_ref(), vcpu.apic.as_ref()) {
        a.publish(mb, g.state.apic_base);
        g.state.cr8 = a.cr8();
    }
}

/// A guest access to the xAPIC page, completed in the kernel.
fn apic_mmio(vm: &Vm, vcpu: &Vcpu, g: &mut VcpuInner, gpa: u64, op: &MemOp, code: &[u8]) {
    let off = (gpa & 0xfff) as u32;
    let apic_base = g.state.apic_base;
    let now = crate::sys::wait::now_ns();
    let Some(a) = g.lapic.as_mut() else {
        return;
    };
    if op.write {
        let eff = a.mmio_write(off, op.size, op.value, apic_base, now);
        g.state.regs.rip = g.state.regs.rip.wrapping_add(u64::from(op.len));
        advance_string_op(&mut g.state, code, op);
        apic_changed(vcpu, g);
        if let Some(ipi) = eff.ipi {
            super::irq::deliver(vm, &ipi);
        }
    } else {
        let v = a.mmio_read(off, op.size, apic_base, now);
        emulate::complete_mmio_read(&mut g.state, op, v);
        g.state.regs.rip = g.state.regs.rip.wrapping_add(u64::from(op.len));
    }
}

/// INIT (KVM's `kvm_vcpu_reset(init_event)`): the reset register state, MSRs and XCR0
/// kept, CR0.CD/NW preserved; the BSP runs on, an AP waits for a SIPI.
fn init_event(vm: &Vm, g: &mut VcpuInner) {
    let old = &g.state;
    let mut n = VcpuState::reset(old.apic_base, old.tsc_offset);
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
fn apic_accept_events(vm: &Vm, vcpu: &Vcpu, g: &mut VcpuInner) {
    let Some(mb) = vcpu.apic.as_ref() else {
        return;
    };
    let c = clock(vm, &g.state);
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
fn apic_has_events(g: &mut VcpuInner) -> bool {
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
            || (a.ext_vector.is_some() && a.accept_pic_intr(apic_base)))
}

/// Before entering the guest with an in-kernel APIC: take posted events, sleep while
/// halted or waiting for a SIPI, and queue the interrupt the guest can take. Returns
/// whether an interrupt waits for the guest to open its interrupt window; `EINTR` when a
/// signal ended a sleep.
fn apic_pre_entry(vm: &Vm, vcpu: &Vcpu, g: &mut VcpuInner) -> Result<bool> {
    let Some(mb) = vcpu.apic.as_ref() else {
        return Ok(false);
    };
    loop {
        apic_accept_events(vm, vcpu, g);
        let halted = match g.state.mp_state {
            KVM_MP_STATE_RUNNABLE => break,
            KVM_MP_STATE_HALTED | KVM_MP_STATE_AP_RESET_HOLD => {
                if apic_has_events(g) {
                    g.state.mp_state = KVM_MP_STATE_RUNNABLE;
                    vcpu.stats.inc(st::HALT_WAKEUP);
                    break;
                }
                true
            }
            // Wait-for-SIPI: only INIT and SIPI matter.
            _ => false,
        };
        let timeout = if halted {
            let c = clock(vm, &g.state);
            g.lapic.as_ref().and_then(|a| a.timer_remaining_ns(&c))
        } else {
            None
        };
        vcpu.stats.set(st::BLOCKING, 1);
        let t0 = crate::sys::wait::now_ns();
        let woken = mb.wq.wait(&|| mb.any(), timeout);
        let waited = crate::sys::wait::now_ns().saturating_sub(t0);
        vcpu.stats.add(st::HALT_WAIT_NS, waited);
        vcpu.halt_wait_hist.record(waited);
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
    let ext = a.ext_vector.filter(|_| a.accept_pic_intr(apic_base));
    let Some(vector) = ext.or_else(|| a.has_interrupt(apic_base)) else {
        return Ok(false);
    };
    let ev = &s.events;
    let busy = ev.interrupt.is_some()
        || ev.exception.is_some()
        || ev.soft_interrupt.is_some()
        || ev.nmi_injected;
    if busy || s.regs.rflags & state::rflags::IF == 0 || ev.shadow != 0 {
        return Ok(true);
    }
    // Acknowledge: the vector leaves IRR for ISR (or the PIC's ExtINT is consumed).
    if ext.is_some() {
        a.ext_vector = None;
    } else {
        a.ack(vector);
    }
    s.events.interrupt = Some(vector);
    s.events.interrupt_injected = true;
    Ok(false)
}

/// An instruction rkvm had to emulate and cannot (KVM's `handle_emulation_failure`):
/// #UD for the guest, and at CPL 0 (or always with KVM_CAP_EXIT_ON_EMULATION_FAILURE,
/// then without the #UD) KVM_EXIT_INTERNAL_ERROR/EMULATION laid out as KVM's: flags, the
/// instruction bytes when known, then the exit reason, qualification, IDT-vectoring
/// information, interruption information and error code.
fn emulation_failure(
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

fn internal_error(vcpu: &Vcpu, suberror: u32, data: &[u64]) -> Option<isize> {
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

fn inject(s: &mut VcpuState, f: Exception) {
    s.events.exception = Some(f);
}

/// Queues exception `vector` without an error code.
fn inject_exception(s: &mut VcpuState, vector: u8) {
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

/// A #UD from the guest. With KVM's FIX_HYPERCALL_INSN quirk on, VMMCALL (AMD's
/// hypercall, from a guest that booted on AMD) is rewritten in guest memory to VMCALL,
/// which the guest then executes; anything else gets its #UD.
fn fix_hypercall(vm: &Vm, g: &mut VcpuInner) -> Result<Option<isize>> {
    const VMMCALL: [u8; 3] = [0x0f, 0x01, 0xd9];
    const VMCALL: [u8; 3] = [0x0f, 0x01, 0xc1];
    let rip = emulate::linear_rip(&g.state);
    let mut insn = [0u8; 3];
    let foreign = vm.quirks().has(crate::x86::quirks::FIX_HYPERCALL_INSN)
        && emulate::read_virt(&g.state, &VmMem(vm), rip, &mut insn).is_ok()
        && insn == VMMCALL;
    if !foreign {
        inject(&mut g.state, emulate::ud());
        return Ok(None);
    }
    match emulate::write_virt(&g.state, &VmMem(vm), rip, &VMCALL) {
        Ok(()) => {}
        Err(EmuError::Fault(f)) => inject(&mut g.state, f),
        Err(EmuError::Host(e)) => return Err(e),
        Err(EmuError::Unsupported) => inject(&mut g.state, emulate::ud()),
    }
    Ok(None)
}

/// Finishes an exit in process context. `Some(r)`: return `r` to userspace.
fn handle_exit(vm: &Vm, vcpu: &Vcpu, g: &mut VcpuInner, exit: Exit) -> Result<Option<isize>> {
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
            // An OUT to an ioeventfd or into a coalesced PIO zone completes without an
            // exit (the backend already moved RIP past it).
            let (p, n) = (u64::from(port), u32::from(size));
            if !input
                && (super::ioeventfd::write(vm, p, n, true, u64::from(value))
                    || super::coalesced::write(vm, p, n, true, &value.to_le_bytes()))
            {
                return Ok(None);
            }
            if !input {
                let _ = vcpu.pio.write_bytes(
                    0,
                    value.to_le_bytes().get(..usize::from(size)).unwrap_or(&[]),
                );
            }
            // The backend moved RIP past the instruction; KVM reports the exit with RIP at
            // the instruction and skips it when the I/O completes.
            s.regs.rip = s.regs.rip.wrapping_sub(u64::from(insn_len));
            g.pending = Pending::Pio {
                input,
                size,
                len: insn_len,
                linear_rip: emulate::linear_rip(&g.state),
            };
            io_exit(vcpu, port, size, input, 1);
            Ok(Some(0))
        }
        Exit::EptViolation {
            gpa,
            write,
            fetch,
            vectoring,
            reason,
            qual,
        } => {
            vcpu.stats.inc(st::PF_TAKEN);
            if vm.fault_in(gpa, write)? {
                vcpu.stats.inc(st::PF_FIXED);
                return Ok(None);
            }
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
        Exit::CrAccess { qual, insn_len } => cr_access(vm, vcpu, g, qual, insn_len),
        Exit::DrAccess { qual, insn_len } => {
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
            dr_access(s, qual, insn_len)
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
        Exit::InvalidOpcode => fix_hypercall(vm, g),
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

fn dr_access(s: &mut VcpuState, qual: u64, insn_len: u8) -> Result<Option<isize>> {
    let dr = (qual & 7) as usize;
    let from = qual & (1 << 4) != 0;
    let gpr = ((qual >> 8) & 15) as u8;
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
    s.regs.rip = s.regs.rip.wrapping_add(u64::from(insn_len));
    s.dirty = true;
    Ok(None)
}

fn msr_access(
    vm: &Vm,
    vcpu: &Vcpu,
    g: &mut VcpuInner,
    write: bool,
    insn_len: u8,
) -> Result<Option<isize>> {
    let m = g.state.regs.rcx as u32;
    let v = (g.state.regs.rdx << 32) | (g.state.regs.rax & 0xffff_ffff);
    // KVM_X86_SET_MSR_FILTER: a denied access never reaches the kernel's MSRs.
    let filtered = g.msr_filter.as_ref().is_some_and(|f| !f.allowed(m, write));
    let failed = if filtered {
        true
    } else if !write {
        match read_msr(vm, g, m, false) {
            Some(v) => {
                g.state.regs.rax = v & 0xffff_ffff;
                g.state.regs.rdx = v >> 32;
                false
            }
            None => true,
        }
    } else {
        write_msr(vm, vcpu, g, m, v, false).is_err()
    };
    if failed {
        // KVM's reasons: an MSR it does not know at all, or a known one that refused.
        let known = is_x2apic_msr(m) || (write && read_msr(vm, g, m, true).is_some());
        let reason = if filtered {
            KVM_MSR_EXIT_REASON_FILTER
        } else if known {
            KVM_MSR_EXIT_REASON_INVAL
        } else {
            KVM_MSR_EXIT_REASON_UNKNOWN
        };
        if vm.user_space_msr.load(Ordering::Relaxed) & reason == 0 {
            inject(&mut g.state, emulate::gp(0));
            return Ok(None);
        }
        type Msr = kvm_run__bindgen_ty_1__bindgen_ty_23;
        let exit = Msr {
            error: 0,
            pad: [0; 7],
            reason,
            index: m,
            data: if write { v } else { 0 },
        };
        g.pending = Pending::Msr {
            write,
            len: insn_len,
            linear_rip: emulate::linear_rip(&g.state),
        };
        vcpu.set_exit(if write {
            KVM_EXIT_X86_WRMSR
        } else {
            KVM_EXIT_X86_RDMSR
        });
        vcpu.run_put(RUN_U + offset_of!(Msr, error), &exit.error);
        vcpu.run_put(RUN_U + offset_of!(Msr, pad), &exit.pad);
        vcpu.run_put(RUN_U + offset_of!(Msr, reason), &exit.reason);
        vcpu.run_put(RUN_U + offset_of!(Msr, index), &exit.index);
        vcpu.run_put(RUN_U + offset_of!(Msr, data), &exit.data);
        return Ok(Some(0));
    }
    let s = &mut g.state;
    s.regs.rip = s.regs.rip.wrapping_add(u64::from(insn_len));
    s.dirty = true;
    Ok(None)
}

fn is_x2apic_msr(m: u32) -> bool {
    (lapic::X2APIC_MSR..=lapic::X2APIC_MSR + 0xff).contains(&m)
}

/// `KVM_PRE_FAULT_MEMORY`: maps the range's memslot pages into the EPT now, page by
/// page, as guest read faults would. The range left is written back; the call succeeds
/// if any page was mapped, else fails with the first page's errno (ENOENT: no memslot;
/// EINTR: a signal).
fn pre_fault_memory(vm: &Vm, arg: usize) -> Result<isize> {
    const PAGE: u64 = 4096;
    let mut range: kvm_pre_fault_memory = uaccess::read(arg)?;
    if range.flags != 0
        || range.gpa % PAGE != 0
        || range.size % PAGE != 0
        || range
            .gpa
            .checked_add(range.size)
            .is_none_or(|end| end <= range.gpa)
    {
        return Err(EINVAL);
    }
    let full = range.size;
    let mut err = None;
    while range.size != 0 {
        if cpu::signal_pending() {
            err = Some(EINTR);
            break;
        }
        match vm.fault_in(range.gpa, false) {
            Ok(true) => {}
            Ok(false) => {
                err = Some(ENOENT);
                break;
            }
            Err(e) => {
                err = Some(e);
                break;
            }
        }
        range.gpa += PAGE;
        range.size -= PAGE;
        cpu::cond_resched();
    }
    uaccess::write(arg, &range)?;
    match err {
        Some(e) if range.size == full => Err(e),
        _ => Ok(0),
    }
}

/// The guest's MAXPHYADDR (KVM assumes 36 bits without the CPUID leaf).
fn guest_phys_bits(g: &VcpuInner) -> u32 {
    g.cpuid
        .iter()
        .find(|e| e.function == 0x8000_0008)
        .map_or(36, |e| e.eax & 0xff)
}

/// The guest's paravirtual features (KVM_CPUID_FEATURES EAX).
fn pv_features(cpuid: &[kvm_cpuid_entry2]) -> u32 {
    let rt = crate::x86::cpuid::Runtime::FEATURES;
    crate::x86::cpuid::guest_cpuid(cpuid, crate::x86::cpuid::KVM_CPUID_FEATURES, 0, rt)[0]
}

/// What the MSR emulation needs to know besides the vCPU state.
fn msr_env<'a>(vm: &Vm, cpuid: &'a [kvm_cpuid_entry2], host: bool, enforce: bool) -> MsrEnv<'a> {
    MsrEnv {
        pv_features: enforce.then(|| pv_features(cpuid)),
        host_tsc: host_tsc(),
        cpuid,
        arch_capabilities: vm.kvm.msrs.arch_capabilities,
        host_initiated: host,
        platform_info_readable: vm.platform_info_readable.load(Ordering::Relaxed),
        quirks: vm.quirks(),
    }
}

/// RDMSR or KVM_GET_MSRS (`host`): the local APIC's MSRs, then the rest.
fn read_msr(vm: &Vm, g: &mut VcpuInner, m: u32, host: bool) -> Option<u64> {
    let apic_base = g.state.apic_base;
    if is_x2apic_msr(m) {
        let now = crate::sys::wait::now_ns();
        return g.lapic.as_mut()?.msr_read(m, apic_base, now).ok();
    }
    if m == lapic::TSC_DEADLINE_MSR {
        return Some(g.lapic.as_ref().map_or(0, |a| a.tscdeadline(apic_base)));
    }
    let env = msr_env(vm, &g.cpuid, host, g.enforce_pv_cpuid);
    if let Some(feature) = wall_clock_feature(m) {
        // The VM's wall-clock address (one for all vCPUs).
        return env
            .pv_has(feature)
            .then(|| vm.wall_clock_msr.load(Ordering::Relaxed));
    }
    emulate::get_msr(&g.state, &env, m)
}

/// The paravirtual feature of a kvmclock wall-clock MSR.
fn wall_clock_feature(m: u32) -> Option<u32> {
    match m {
        MSR_KVM_WALL_CLOCK => Some(KVM_FEATURE_CLOCKSOURCE),
        MSR_KVM_WALL_CLOCK_NEW => Some(KVM_FEATURE_CLOCKSOURCE2),
        _ => None,
    }
}

/// WRMSR or KVM_SET_MSRS (`host`); `Err` is #GP (or a failed entry for KVM_SET_MSRS).
fn write_msr(
    vm: &Vm,
    vcpu: &Vcpu,
    g: &mut VcpuInner,
    m: u32,
    v: u64,
    host: bool,
) -> core::result::Result<(), ()> {
    let apic_base = g.state.apic_base;
    if is_x2apic_msr(m) {
        let now = crate::sys::wait::now_ns();
        let a = g.lapic.as_mut().ok_or(())?;
        let eff = a.msr_write(m, v, apic_base, now).map_err(|_| ())?;
        apic_changed(vcpu, g);
        if let Some(ipi) = eff.ipi {
            super::irq::deliver(vm, &ipi);
        }
        return Ok(());
    }
    if m == lapic::TSC_DEADLINE_MSR {
        let c = clock(vm, &g.state);
        if let Some(a) = g.lapic.as_mut() {
            a.set_tscdeadline(v, apic_base, &c);
        }
        return Ok(());
    }
    if m == crate::sys::msr::index::IA32_APICBASE && g.lapic.is_some() {
        let bits = guest_phys_bits(g);
        let VcpuInner { lapic, state, .. } = &mut *g;
        if let Some(a) = lapic.as_mut() {
            a.set_base(&mut state.apic_base, v, host, bits)
                .map_err(|_| ())?;
        }
        apic_changed(vcpu, g);
        return Ok(());
    }
    let env = msr_env(vm, &g.cpuid, host, g.enforce_pv_cpuid);
    if let Some(feature) = wall_clock_feature(m) {
        if !env.pv_has(feature) {
            return Err(());
        }
        vm.wall_clock_msr.store(v, Ordering::Relaxed);
        super::kvmclock::write_wall_clock(vm, v);
        return Ok(());
    }
    emulate::set_msr(&mut g.state, &env, m, v)
}

/// Delivers the highest-priority pending event through the real-mode IVT (virtual-8086
/// real mode cannot take injected events): push FLAGS, CS, IP; clear IF, TF, AC; jump
/// to the vector's handler.
fn deliver_real_mode_event(vm: &Vm, vcpu: &Vcpu, s: &mut VcpuState) -> Result {
    let ev = s.events;
    let irq_ok = s.regs.rflags & state::rflags::IF != 0 && ev.shadow == 0;
    let vector = if let Some(e) = ev.exception {
        s.events.exception = None;
        e.vector
    } else if let Some((v, len)) = ev.soft_interrupt {
        s.events.soft_interrupt = None;
        s.regs.rip = s.regs.rip.wrapping_add(u64::from(len));
        v
    } else if ev.nmi_injected || (ev.nmi_pending && !ev.nmi_masked && ev.shadow == 0) {
        s.events.nmi_injected = false;
        s.events.nmi_pending = false;
        s.events.nmi_masked = true;
        vcpu.stats.inc(st::NMI_INJECTIONS);
        2
    } else if let (Some(v), true) = (ev.interrupt, ev.interrupt_injected || irq_ok) {
        s.events.interrupt = None;
        s.events.interrupt_injected = false;
        vcpu.stats.inc(st::IRQ_INJECTIONS);
        v
    } else {
        return Ok(());
    };
    let mem = VmMem(vm);
    let mut ivt = [0u8; 4];
    mem.read(u64::from(vector) * 4, &mut ivt)?;
    let ip = u16::from_le_bytes([ivt[0], ivt[1]]);
    let cs = u16::from_le_bytes([ivt[2], ivt[3]]);
    let flags = s.regs.rflags as u16;
    let mut sp = s.regs.rsp as u16;
    let ss = s.segs[state::SS].base;
    for word in [flags, s.segs[state::CS].selector, s.regs.rip as u16] {
        sp = sp.wrapping_sub(2);
        mem.write(
            ss.wrapping_add(u64::from(sp)) & 0xf_ffff,
            &word.to_le_bytes(),
        )?;
    }
    s.regs.rsp = s.regs.rsp & !0xffff | u64::from(sp);
    s.regs.rflags &= !(state::rflags::IF | state::rflags::TF | (1 << 18));
    s.segs[state::CS].selector = cs;
    s.segs[state::CS].base = u64::from(cs) << 4;
    s.regs.rip = u64::from(ip);
    s.dirty = true;
    Ok(())
}

/// Computes a 16-bit ModRM memory operand's linear address (real mode).
fn real_mode_ea(s: &VcpuState, modrm: &[u8], seg_override: Option<usize>) -> Option<(u64, usize)> {
    let m = *modrm.first()?;
    let (md, rm) = (m >> 6, m & 7);
    let r = |n: u8| emulate::gpr64(s, n) & 0xffff;
    let (bx, bp, si, di) = (r(3), r(5), r(6), r(7));
    let (mut ea, mut seg) = match rm {
        0 => (bx + si, state::DS),
        1 => (bx + di, state::DS),
        2 => (bp + si, state::SS),
        3 => (bp + di, state::SS),
        4 => (si, state::DS),
        5 => (di, state::DS),
        6 => (bp, state::SS),
        _ => (bx, state::DS),
    };
    let len = match (md, rm) {
        (0, 6) => {
            ea = u64::from(u16::from_le_bytes([*modrm.get(1)?, *modrm.get(2)?]));
            seg = state::DS;
            3
        }
        (0, _) => 1,
        (1, _) => {
            ea = ea.wrapping_add(*modrm.get(1)? as i8 as u64);
            2
        }
        (2, _) => {
            ea = ea.wrapping_add(u64::from(u16::from_le_bytes([
                *modrm.get(1)?,
                *modrm.get(2)?,
            ])));
            3
        }
        _ => return None,
    };
    let seg = seg_override.unwrap_or(seg);
    Some((s.segs.get(seg)?.base.wrapping_add(ea & 0xffff), len))
}

/// A #GP in virtual-8086 real mode: the privileged instructions real-mode code uses, run
/// on the software state (HLT, MOV to/from CR and DR, LMSW, CLTS, LGDT, LIDT, RDMSR,
/// WRMSR, INVD, WBINVD).
fn real_mode_gp(vm: &Vm, vcpu: &Vcpu, g: &mut VcpuInner) -> Result<Option<isize>> {
    if let Err(e) = fetch(vm, &g.state, &mut g.emu.insn) {
        return fault_or_error(vcpu, &mut g.state, e);
    }
    let code = g.emu.insn;
    vcpu.stats.inc(st::INSN_EMULATION);
    let mut i = 0;
    let mut opsize32 = false;
    let mut seg = None;
    while let Some(&b) = code.get(i) {
        match b {
            0x66 => opsize32 = true,
            0x26 => seg = Some(state::ES),
            0x2e => seg = Some(state::CS),
            0x36 => seg = Some(state::SS),
            0x3e => seg = Some(state::DS),
            0x64 => seg = Some(state::FS),
            0x65 => seg = Some(state::GS),
            _ => break,
        }
        i += 1;
    }
    let op = code.get(i).copied().unwrap_or(0);
    let op2 = code.get(i + 1).copied().unwrap_or(0);
    let modrm = code.get(i + 2).copied().unwrap_or(0);
    let fail = |vcpu: &Vcpu| {
        vcpu.stats.inc(st::INSN_EMULATION_FAIL);
        internal_error(
            vcpu,
            KVM_INTERNAL_ERROR_EMULATION,
            &[u64::from_le_bytes([
                code[0], code[1], code[2], code[3], code[4], code[5], code[6], code[7],
            ])],
        )
    };
    let s = &mut g.state;
    match (op, op2) {
        (0xf4, _) => {
            s.regs.rip = s.regs.rip.wrapping_add(i as u64 + 1);
            s.dirty = true;
            vcpu.stats.inc(st::HALT_EXITS);
            vcpu.set_exit(KVM_EXIT_HLT);
            Ok(Some(0))
        }
        (0x0f, 0x06) => cr_access(vm, vcpu, g, 2, (i + 2) as u8),
        (0x0f, 0x08) | (0x0f, 0x09) => {
            s.regs.rip = s.regs.rip.wrapping_add(i as u64 + 2);
            s.dirty = true;
            Ok(None)
        }
        (0x0f, 0x20) | (0x0f, 0x22) if modrm >> 6 == 3 => {
            let cr = u64::from((modrm >> 3) & 7);
            let gpr = u64::from(modrm & 7);
            let kind = if op2 == 0x20 { 1 } else { 0 };
            cr_access(vm, vcpu, g, cr | kind << 4 | gpr << 8, (i + 3) as u8)
        }
        (0x0f, 0x21) | (0x0f, 0x23) if modrm >> 6 == 3 => {
            let dr = u64::from((modrm >> 3) & 7);
            let gpr = u64::from(modrm & 7);
            let from = if op2 == 0x21 { 1 << 4 } else { 0 };
            dr_access(s, dr | from | gpr << 8, (i + 3) as u8)
        }
        (0x0f, 0x30) => msr_access(vm, vcpu, g, true, (i + 2) as u8),
        (0x0f, 0x32) => msr_access(vm, vcpu, g, false, (i + 2) as u8),
        (0x0f, 0x01) => {
            let reg = (modrm >> 3) & 7;
            match reg {
                2 | 3 => {
                    let Some((ea, len)) = code.get(i + 2..).and_then(|m| real_mode_ea(s, m, seg))
                    else {
                        return Ok(fail(vcpu));
                    };
                    let mut b = [0u8; 6];
                    if let Err(e) = emulate::read_virt(s, &VmMem(vm), ea, &mut b) {
                        return fault_or_error(vcpu, s, e);
                    }
                    let limit = u16::from_le_bytes([b[0], b[1]]);
                    let mut base = u64::from(u32::from_le_bytes([b[2], b[3], b[4], b[5]]));
                    if !opsize32 {
                        base &= 0xff_ffff;
                    }
                    let t = if reg == 2 { &mut s.gdt } else { &mut s.idt };
                    t.base = base;
                    t.limit = limit;
                    s.regs.rip = s.regs.rip.wrapping_add((i + 2 + len) as u64);
                    s.dirty = true;
                    Ok(None)
                }
                6 if modrm >> 6 == 3 => {
                    let v = emulate::gpr64(s, modrm & 7) & 0xffff;
                    cr_access(vm, vcpu, g, 3 << 4 | v << 16, (i + 3) as u8)
                }
                _ => Ok(fail(vcpu)),
            }
        }
        _ => Ok(fail(vcpu)),
    }
}

fn debug_arch_bytes(a: &kvm_debug_exit_arch) -> KVec<u8> {
    let mut v = KVec::new();
    for part in [
        &a.exception.to_le_bytes()[..],
        &a.pad.to_le_bytes()[..],
        &a.pc.to_le_bytes()[..],
        &a.dr6.to_le_bytes()[..],
        &a.dr7.to_le_bytes()[..],
    ] {
        let _ = v.extend_from_slice(part, GFP_KERNEL);
    }
    v
}

fn io_exit(vcpu: &Vcpu, port: u16, size: u8, input: bool, count: u32) {
    type Io = kvm_run__bindgen_ty_1__bindgen_ty_4;
    vcpu.set_exit(KVM_EXIT_IO);
    let dir = if input {
        KVM_EXIT_IO_IN
    } else {
        KVM_EXIT_IO_OUT
    } as u8;
    vcpu.run_put(RUN_U + offset_of!(Io, direction), &dir);
    vcpu.run_put(RUN_U + offset_of!(Io, size), &size);
    vcpu.run_put(RUN_U + offset_of!(Io, port), &port);
    vcpu.run_put(RUN_U + offset_of!(Io, count), &count);
    vcpu.run_put(
        RUN_U + offset_of!(Io, data_offset),
        &(u64::from(KVM_PIO_PAGE_OFFSET) * 4096),
    );
}

fn fault_or_error(vcpu: &Vcpu, s: &mut VcpuState, e: EmuError) -> Result<Option<isize>> {
    match e {
        EmuError::Fault(f) => {
            inject(s, f);
            Ok(None)
        }
        EmuError::Unsupported => Ok(internal_error(vcpu, KVM_INTERNAL_ERROR_EMULATION, &[])),
        EmuError::Host(e) => Err(e),
    }
}

/// Fetches up to 15 instruction bytes at CS:RIP.
fn fetch(vm: &Vm, s: &VcpuState, buf: &mut [u8; 15]) -> core::result::Result<(), EmuError> {
    let rip = emulate::linear_rip(s);
    // Never cross into a page the instruction may not touch: fetch what fits first.
    let first = (4096 - (rip & 0xfff) as usize).min(15);
    emulate::read_virt(
        s,
        &VmMem(vm),
        rip,
        buf.get_mut(..first).ok_or(EmuError::Unsupported)?,
    )?;
    if first < 15 {
        let _ = emulate::read_virt(
            s,
            &VmMem(vm),
            rip.wrapping_add(first as u64),
            buf.get_mut(first..).ok_or(EmuError::Unsupported)?,
        );
    }
    Ok(())
}

fn mmio(
    vm: &Vm,
    vcpu: &Vcpu,
    g: &mut VcpuInner,
    gpa: u64,
    write: bool,
    exit: [u64; 5],
) -> Result<Option<isize>> {
    let code = &mut g.emu.insn;
    if let Err(e) = fetch(vm, &g.state, code) {
        return fault_or_error(vcpu, &mut g.state, e);
    }
    vcpu.stats.inc(st::INSN_EMULATION);
    let code = g.emu.insn;
    let Some(op) = emulate::decode_mmio(&g.state, &code) else {
        return Ok(emulation_failure(vm, vcpu, &mut g.state, &code, exit));
    };
    if write && !op.write {
        return Ok(emulation_failure(vm, vcpu, &mut g.state, &code, exit));
    }
    if g.lapic.is_some() && gpa & lapic::base::ADDR == g.state.apic_base & lapic::base::ADDR {
        apic_mmio(vm, vcpu, g, gpa, &op, &code);
        return Ok(None);
    }
    if op.write
        && (super::ioeventfd::write(vm, gpa, u32::from(op.size), false, op.value)
            || super::coalesced::write(vm, gpa, u32::from(op.size), false, &op.value.to_le_bytes()))
    {
        // Taken by a coalesced zone: the write is complete without an exit.
        g.state.regs.rip = g.state.regs.rip.wrapping_add(u64::from(op.len));
        advance_string_op(&mut g.state, &code, &op);
        return Ok(None);
    }
    vcpu.stats.inc(st::MMIO_EXITS);
    type Mmio = kvm_run__bindgen_ty_1__bindgen_ty_6;
    vcpu.set_exit(KVM_EXIT_MMIO);
    vcpu.run_put(RUN_U + offset_of!(Mmio, phys_addr), &gpa);
    vcpu.run_put(RUN_U + offset_of!(Mmio, len), &u32::from(op.size));
    vcpu.run_put(RUN_U + offset_of!(Mmio, is_write), &u8::from(op.write));
    let data = op.value.to_le_bytes();
    vcpu.run_put(RUN_U + offset_of!(Mmio, data), &data);
    if op.write {
        // A write completes now: RIP moves past the instruction before userspace sees it.
        g.state.regs.rip = g.state.regs.rip.wrapping_add(u64::from(op.len));
        advance_string_op(&mut g.state, &code, &op);
        g.pending = Pending::None;
    } else {
        g.pending = Pending::MmioRead { op };
    }
    Ok(Some(0))
}

/// STOS to MMIO: one iteration per exit, RDI (and RCX with REP) updated.
fn advance_string_op(s: &mut VcpuState, code: &[u8], op: &MemOp) {
    if !op.stos {
        return;
    }
    let io = emulate::decode_string_io(s, code);
    let step = u64::from(op.size);
    let m = emulate::size_mask(io.addr_size);
    let di = emulate::gpr64(s, 7);
    let nd = if emulate::df(s) {
        di.wrapping_sub(step)
    } else {
        di.wrapping_add(step)
    };
    emulate::set_gpr(s, 7, io.addr_size, false, nd & m);
    if io.rep {
        let cx = emulate::gpr64(s, 1) & m;
        let ncx = cx.wrapping_sub(1) & m;
        emulate::set_gpr(s, 1, io.addr_size, false, ncx);
        if ncx != 0 {
            // Not done: run the instruction again.
            s.regs.rip = s.regs.rip.wrapping_sub(u64::from(op.len));
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn string_io(
    vm: &Vm,
    vcpu: &Vcpu,
    g: &mut VcpuInner,
    port: u16,
    size: u8,
    input: bool,
    rep: bool,
    len: u8,
) -> Result<Option<isize>> {
    if let Err(e) = fetch(vm, &g.state, &mut g.emu.insn) {
        return fault_or_error(vcpu, &mut g.state, e);
    }
    let code = g.emu.insn;
    let s = &mut g.state;
    let mut io = emulate::decode_string_io(s, &code);
    io.rep = rep;
    let m = emulate::size_mask(io.addr_size);
    let mut count = if rep { emulate::gpr64(s, 1) & m } else { 1 };
    if count == 0 {
        s.regs.rip = s.regs.rip.wrapping_add(u64::from(len));
        return Ok(None);
    }
    // As many as fit in the PIO page, and without DF=1 page crossings, one at a time.
    count = count.min(4096u64.checked_div(u64::from(size)).unwrap_or(1));
    if emulate::df(s) {
        count = 1;
    }
    let count = count as u32;
    if !input {
        let si = emulate::gpr64(s, 6) & m;
        let src = emulate::linear(s, io.seg, si, io.addr_size);
        let n = count as usize * usize::from(size);
        let mut buf = KVec::with_capacity(n, GFP_KERNEL_ACCOUNT)?;
        buf.resize(n, 0u8, GFP_KERNEL_ACCOUNT)?;
        if let Err(e) = emulate::read_virt(s, &VmMem(vm), src, &mut buf) {
            return fault_or_error(vcpu, s, e);
        }
        vcpu.pio.write_bytes(0, &buf)?;
    }
    g.pending = Pending::StringPio {
        input,
        size,
        count,
        io,
        len,
        linear_rip: emulate::linear_rip(&g.state),
    };
    vcpu.stats.inc(st::IO_EXITS);
    io_exit(vcpu, port, size, input, count);
    Ok(Some(0))
}

/// Completes what the last exit left to userspace, KVM's `complete_userspace_io`.
fn complete_pending(vm: &Vm, vcpu: &Vcpu, g: &mut VcpuInner) -> Result {
    let pending = core::mem::replace(&mut g.pending, Pending::None);
    let s = &mut g.state;
    match pending {
        Pending::None => {}
        Pending::Pio {
            input,
            size,
            len,
            linear_rip,
        } => {
            if emulate::linear_rip(s) != linear_rip {
                return Ok(());
            }
            if input {
                let mut b = [0u8; 8];
                vcpu.pio
                    .read_bytes(0, b.get_mut(..usize::from(size)).ok_or(EINVAL)?)?;
                let v = u64::from_le_bytes(b);
                // Narrow sizes merge into RAX; 4 bytes zero-extend.
                emulate::set_gpr(s, 0, if size < 4 { size } else { 4 }, false, v);
            }
            s.skip_instruction(len);
        }
        Pending::StringPio {
            input,
            size,
            count,
            io,
            len,
            linear_rip,
        } => {
            if emulate::linear_rip(s) != linear_rip {
                return Ok(());
            }
            let m = emulate::size_mask(io.addr_size);
            // Userspace may have changed RCX during the exit: complete no more elements
            // than it now asks for (KVM only promises not to overrun anything then).
            let cx_now = emulate::gpr64(s, 1) & m;
            let count = if io.rep {
                u64::from(count).min(cx_now)
            } else {
                u64::from(count)
            };
            let bytes = count * u64::from(size);
            let (reg, seg) = if input {
                (7u8, state::ES)
            } else {
                (6u8, io.seg)
            };
            let ptr = emulate::gpr64(s, reg) & m;
            if input {
                let n = bytes as usize;
                let mut buf = KVec::with_capacity(n, GFP_KERNEL_ACCOUNT)?;
                buf.resize(n, 0u8, GFP_KERNEL_ACCOUNT)?;
                vcpu.pio.read_bytes(0, &mut buf)?;
                let dst = emulate::linear(s, seg, ptr, io.addr_size);
                if let Err(e) = emulate::write_virt(s, &VmMem(vm), dst, &buf) {
                    if let EmuError::Fault(f) = e {
                        inject(s, f);
                        return Ok(());
                    }
                    return Err(EFAULT);
                }
            }
            let np = if emulate::df(s) {
                ptr.wrapping_sub(bytes)
            } else {
                ptr.wrapping_add(bytes)
            };
            emulate::set_gpr(s, reg, io.addr_size, false, np & m);
            let mut done = true;
            if io.rep {
                let cx = cx_now.saturating_sub(count) & m;
                emulate::set_gpr(s, 1, io.addr_size, false, cx);
                done = cx == 0;
            }
            if done {
                s.skip_instruction(len);
            }
        }
        Pending::Msr {
            write,
            len,
            linear_rip,
        } => {
            if emulate::linear_rip(s) != linear_rip {
                return Ok(());
            }
            type Msr = kvm_run__bindgen_ty_1__bindgen_ty_23;
            let mut e = [0u8; 1];
            vcpu.run
                .read_bytes(RUN_U + offset_of!(Msr, error), &mut e)?;
            if e[0] != 0 {
                inject(s, emulate::gp(0));
                return Ok(());
            }
            if !write {
                let mut b = [0u8; 8];
                vcpu.run.read_bytes(RUN_U + offset_of!(Msr, data), &mut b)?;
                let v = u64::from_le_bytes(b);
                s.regs.rax = v & 0xffff_ffff;
                s.regs.rdx = v >> 32;
            }
            s.skip_instruction(len);
            s.dirty = true;
        }
        Pending::MmioRead { op } => {
            type Mmio = kvm_run__bindgen_ty_1__bindgen_ty_6;
            let mut b = [0u8; 8];
            vcpu.run
                .read_bytes(RUN_U + offset_of!(Mmio, data), &mut b)?;
            emulate::complete_mmio_read(s, &op, u64::from_le_bytes(b));
            s.skip_instruction(op.len);
        }
    }
    Ok(())
}

fn cr_access(vm: &Vm, vcpu: &Vcpu, g: &mut VcpuInner, qual: u64, len: u8) -> Result<Option<isize>> {
    let valid4 = emulate::cr4_valid_bits(&g.cpuid);
    let s = &mut g.state;
    let cr = (qual & 15) as u8;
    let kind = (qual >> 4) & 3;
    let gpr = ((qual >> 8) & 15) as u8;
    let mut exit_tpr = false;
    let r = match kind {
        0 => {
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
        1 => {
            let v = match cr {
                3 => s.cr3,
                8 => s.cr8,
                _ => 0,
            };
            emulate::set_gpr(s, gpr, 8, false, v);
            Ok(None)
        }
        2 => {
            s.cr0 &= !state::cr0::TS;
            Ok(None)
        }
        _ => {
            // LMSW: the low four bits of CR0; PE cannot be cleared.
            let src = (qual >> 16) & 0xf;
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
            if effect.load_pdptrs && !emulate::load_pdptrs(s, &VmMem(vm))? {
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
    s.regs.rip = s.regs.rip.wrapping_add(u64::from(len));
    s.dirty = true;
    if exit_tpr {
        // No in-kernel local APIC: userspace's APIC takes the new TPR (KVM_EXIT_SET_TPR).
        vcpu.set_exit(KVM_EXIT_SET_TPR);
        return Ok(Some(0));
    }
    Ok(None)
}

// ---- State ioctls ------------------------------------------------------------------------

fn set_regs(s: &mut VcpuState, r: &kvm_regs) {
    s.regs = *r;
    s.regs.rflags |= state::rflags::FIXED;
    s.events.exception = None;
    s.dirty = true;
}

fn get_sregs(s: &VcpuState) -> kvm_sregs {
    let mut out = kvm_sregs {
        es: s.segs[state::ES],
        cs: s.segs[state::CS],
        ss: s.segs[state::SS],
        ds: s.segs[state::DS],
        fs: s.segs[state::FS],
        gs: s.segs[state::GS],
        ldt: s.segs[state::LDTR],
        tr: s.segs[state::TR],
        gdt: s.gdt,
        idt: s.idt,
        cr0: s.cr0,
        cr2: s.cr2,
        cr3: s.cr3,
        cr4: s.cr4,
        cr8: s.cr8,
        efer: s.efer,
        apic_base: s.apic_base,
        ..Default::default()
    };
    if let (Some(v), true) = (s.events.interrupt, s.events.interrupt_injected) {
        if let Some(w) = out.interrupt_bitmap.get_mut(usize::from(v) / 64) {
            *w |= 1 << (v % 64);
        }
    }
    out
}

fn get_sregs2(s: &VcpuState) -> kvm_sregs2 {
    let b = get_sregs(s);
    let mut out = kvm_sregs2 {
        cs: b.cs,
        ds: b.ds,
        es: b.es,
        fs: b.fs,
        gs: b.gs,
        ss: b.ss,
        tr: b.tr,
        ldt: b.ldt,
        gdt: b.gdt,
        idt: b.idt,
        cr0: b.cr0,
        cr2: b.cr2,
        cr3: b.cr3,
        cr4: b.cr4,
        cr8: b.cr8,
        efer: b.efer,
        apic_base: b.apic_base,
        ..Default::default()
    };
    if s.pae_paging() {
        out.flags = u64::from(KVM_SREGS2_FLAGS_PDPTRS_VALID);
        out.pdptrs = s.pdptrs;
    }
    out
}

/// KVM's `kvm_is_valid_sregs` plus the CR0/CR4/EFER checks.
fn sregs_valid(g: &VcpuInner, cr0: u64, cr4: u64, efer: u64, cs_l: u8, cr3: u64) -> bool {
    use state::{cr0 as c0, cr4 as c4, efer as ef};
    if efer & ef::LME != 0 && cr0 & c0::PG != 0 {
        let cr3_ok = crate::x86::validate::legal_gpa(cr3, guest_phys_bits(g));
        if cr4 & c4::PAE == 0 || efer & ef::LMA == 0 || !cr3_ok {
            return false;
        }
    } else if efer & ef::LMA != 0 || cs_l != 0 {
        return false;
    }
    if cr0 >> 32 != 0
        || (cr0 & c0::NW != 0 && cr0 & c0::CD == 0)
        || (cr0 & c0::PG != 0 && cr0 & c0::PE == 0)
    {
        return false;
    }
    if cr4 & !emulate::cr4_valid_bits(&g.cpuid) != 0 {
        return false;
    }
    let env = MsrEnv {
        host_tsc: 0,
        cpuid: &g.cpuid,
        arch_capabilities: 0,
        host_initiated: true,
        platform_info_readable: true,
        quirks: crate::x86::quirks::Quirks::default(),
        pv_features: None,
    };
    let mut probe = g.state.clone();
    emulate::set_msr(&mut probe, &env, crate::sys::msr::index::EFER, efer).is_ok()
}

fn set_sregs_common(g: &mut VcpuInner, b: &kvm_sregs) -> Result {
    if !sregs_valid(g, b.cr0, b.cr4, b.efer, b.cs.l, b.cr3) {
        return Err(EINVAL);
    }
    let bits = guest_phys_bits(g);
    if let Some(a) = g.lapic.as_mut() {
        // IA32_APIC_BASE as a host write would set it; CR8 is the APIC's TPR.
        a.set_base(&mut g.state.apic_base, b.apic_base, true, bits)
            .map_err(|_| EINVAL)?;
        a.set_cr8(b.cr8 & 0xf);
    } else {
        if b.apic_base & 0xffff_fff0_0000_02ff != 0 {
            return Err(EINVAL);
        }
        g.state.apic_base = b.apic_base;
    }
    let s = &mut g.state;
    s.idt = b.idt;
    s.gdt = b.gdt;
    s.cr2 = b.cr2;
    s.cr3 = b.cr3;
    s.efer = b.efer;
    s.cr0 = b.cr0 | state::cr0::ET;
    s.cr4 = b.cr4;
    s.segs = [b.es, b.cs, b.ss, b.ds, b.fs, b.gs, b.ldt, b.tr];
    s.cr8 = b.cr8 & 0xf;
    s.dirty = true;
    Ok(())
}

fn set_sregs(vm: &Vm, g: &mut VcpuInner, b: &kvm_sregs) -> Result {
    set_sregs_common(g, b)?;
    if g.state.pae_paging() {
        let _ = emulate::load_pdptrs(&mut g.state, &VmMem(vm));
    }
    vm.flush_gen.fetch_add(1, Ordering::SeqCst);
    // The first pending interrupt in the bitmap is queued again.
    for (i, &w) in b.interrupt_bitmap.iter().enumerate() {
        if w != 0 {
            g.state.events.interrupt = Some((i * 64 + w.trailing_zeros() as usize) as u8);
            g.state.events.interrupt_injected = false;
            break;
        }
    }
    Ok(())
}

fn set_sregs2(vm: &Vm, g: &mut VcpuInner, s2: &kvm_sregs2) -> Result {
    if s2.flags & !u64::from(KVM_SREGS2_FLAGS_PDPTRS_VALID) != 0 {
        return Err(EINVAL);
    }
    let b = kvm_sregs {
        cs: s2.cs,
        ds: s2.ds,
        es: s2.es,
        fs: s2.fs,
        gs: s2.gs,
        ss: s2.ss,
        tr: s2.tr,
        ldt: s2.ldt,
        gdt: s2.gdt,
        idt: s2.idt,
        cr0: s2.cr0,
        cr2: s2.cr2,
        cr3: s2.cr3,
        cr4: s2.cr4,
        cr8: s2.cr8,
        efer: s2.efer,
        apic_base: s2.apic_base,
        ..Default::default()
    };
    let pae = b.cr0 & state::cr0::PG != 0
        && b.cr4 & state::cr4::PAE != 0
        && b.efer & state::efer::LME == 0;
    if s2.flags & u64::from(KVM_SREGS2_FLAGS_PDPTRS_VALID) != 0 && !pae {
        return Err(EINVAL);
    }
    set_sregs_common(g, &b)?;
    if s2.flags & u64::from(KVM_SREGS2_FLAGS_PDPTRS_VALID) != 0 {
        g.state.pdptrs = s2.pdptrs;
    } else if g.state.pae_paging() {
        let _ = emulate::load_pdptrs(&mut g.state, &VmMem(vm));
    }
    vm.flush_gen.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

fn get_fpu(a: &[u8]) -> kvm_fpu {
    let rd = |o: usize, n: usize| -> u64 {
        let mut b = [0u8; 8];
        if let (Some(d), Some(s)) = (b.get_mut(..n), a.get(o..o + n)) {
            d.copy_from_slice(s);
        }
        u64::from_le_bytes(b)
    };
    let mut f = kvm_fpu {
        fcw: rd(0, 2) as u16,
        fsw: rd(2, 2) as u16,
        ftwx: rd(4, 1) as u8,
        last_opcode: rd(6, 2) as u16,
        last_ip: rd(8, 8),
        last_dp: rd(16, 8),
        // `mxcsr` stays 0: KVM never fills it in (KVM_GET_XSAVE shows MXCSR).
        ..Default::default()
    };
    for (i, r) in f.fpr.iter_mut().enumerate() {
        if let Some(s) = a.get(32 + i * 16..48 + i * 16) {
            r.copy_from_slice(s);
        }
    }
    for (i, r) in f.xmm.iter_mut().enumerate() {
        if let Some(s) = a.get(160 + i * 16..176 + i * 16) {
            r.copy_from_slice(s);
        }
    }
    f
}

fn set_fpu(a: &mut [u8], f: &kvm_fpu) {
    let mut put = |o: usize, b: &[u8]| {
        if let Some(d) = a.get_mut(o..o + b.len()) {
            d.copy_from_slice(b);
        }
    };
    put(0, &f.fcw.to_le_bytes());
    put(2, &f.fsw.to_le_bytes());
    put(4, &[f.ftwx]);
    put(6, &f.last_opcode.to_le_bytes());
    put(8, &f.last_ip.to_le_bytes());
    put(16, &f.last_dp.to_le_bytes());
    // `mxcsr` is ignored, as KVM does: only KVM_SET_XSAVE (checked) changes MXCSR.
    for (i, r) in f.fpr.iter().enumerate() {
        put(32 + i * 16, r);
    }
    for (i, r) in f.xmm.iter().enumerate() {
        put(160 + i * 16, r);
    }
    // x87 and SSE state are now in the area.
    let mut bv = [0u8; 8];
    if let Some(s) = a.get(512..520) {
        bv.copy_from_slice(s);
    }
    let v = u64::from_le_bytes(bv) | 3;
    if let Some(d) = a.get_mut(512..520) {
        d.copy_from_slice(&v.to_le_bytes());
    }
}

/// `KVM_CAP_XSAVE2`: bytes of the XSAVE buffer (at least `struct kvm_xsave`).
pub(crate) fn xsave2_size(k: &Kvm) -> usize {
    (k.arch.fpu_size as usize).max(size_of::<kvm_xsave>())
}

fn write_xsave(g: &VcpuInner, arg: usize, size: usize) -> Result<isize> {
    let area = g.fpu.bytes();
    let mut out = KVVec::with_capacity(size, GFP_KERNEL_ACCOUNT)?;
    out.resize(size, 0u8, GFP_KERNEL_ACCOUNT)?;
    let n = area.len().min(size);
    if let (Some(d), Some(s)) = (out.get_mut(..n), area.get(..n)) {
        d.copy_from_slice(s);
    }
    uaccess::write_slice(arg, &out)?;
    Ok(0)
}

fn set_xsave(g: &mut VcpuInner, arg: usize) -> Result<isize> {
    // KVM copies at least the whole `struct kvm_xsave`.
    let size = g.fpu.bytes().len().max(size_of::<kvm_xsave>());
    let mut buf = KVVec::with_capacity(size, GFP_KERNEL_ACCOUNT)?;
    buf.resize(size, 0u8, GFP_KERNEL_ACCOUNT)?;
    super::uaccess::read_into(arg, &mut buf)?;
    // Without XSAVE on the host only x87 and SSE state exist (KVM takes those two).
    let supported = if cpu::boot_cpu_has(cpu::Feature::Xsave) {
        crate::x86::cpuid::supported_xcr0()
    } else {
        0b11
    };
    if !fpu::user_area_valid(&buf, supported) {
        return Err(EINVAL);
    }
    fpu::install_user_area(g.fpu.bytes_mut(), &buf);
    Ok(0)
}

fn msrs_ioctl(vm: &Vm, vcpu: &Vcpu, g: &mut VcpuInner, arg: usize, write: bool) -> Result<isize> {
    let nmsrs = uaccess::read_header8(arg)?;
    if nmsrs >= super::dev::MAX_IO_MSRS {
        return Err(E2BIG);
    }
    let addr = uaccess::offset(arg, size_of::<kvm_msrs>())?;
    let mut entries: KVVec<kvm_msr_entry> = uaccess::read_vec(addr, nmsrs as usize)?;
    let advertised = |m: u32| vm.kvm.msrs.to_save.contains(&m) || vm.kvm.msrs.emulated.contains(&m);
    let mut done = 0isize;
    for e in entries.iter_mut() {
        let ok = if write {
            write_msr(vm, vcpu, g, e.index, e.data, true).is_ok()
                || (e.data == 0 && advertised(e.index))
        } else {
            match read_msr(vm, g, e.index, true) {
                Some(v) => {
                    e.data = v;
                    true
                }
                None => {
                    e.data = 0;
                    advertised(e.index)
                }
            }
        };
        if !ok {
            break;
        }
        done += 1;
    }
    if write {
        g.state.dirty = true;
    } else {
        uaccess::write_slice(addr, &entries)?;
    }
    Ok(done)
}

fn set_cpuid2(vm: &Vm, g: &mut VcpuInner, arg: usize) -> Result<isize> {
    let nent = uaccess::read_header8(arg)?;
    if nent as usize > crate::x86::cpuid::MAX_ENTRIES {
        return Err(E2BIG);
    }
    let addr = uaccess::offset(arg, size_of::<kvm_cpuid2>())?;
    let entries: KVVec<kvm_cpuid_entry2> = uaccess::read_vec(addr, nent as usize)?;
    set_cpuid_table(vm, g, &entries)
}

/// `KVM_SET_CPUID`, the first format: entries without subleaf or flags, taken as
/// KVM_SET_CPUID2 entries with index 0 and no flags (as KVM converts them).
fn set_cpuid(vm: &Vm, g: &mut VcpuInner, arg: usize) -> Result<isize> {
    let nent = uaccess::read_header8(arg)?;
    if nent as usize > crate::x86::cpuid::MAX_ENTRIES {
        return Err(E2BIG);
    }
    let addr = uaccess::offset(arg, size_of::<kvm_cpuid>())?;
    let old: KVVec<kvm_cpuid_entry> = uaccess::read_vec(addr, nent as usize)?;
    let mut entries = KVVec::with_capacity(old.len(), GFP_KERNEL_ACCOUNT)?;
    for e in old.iter() {
        entries.push(
            kvm_cpuid_entry2 {
                function: e.function,
                eax: e.eax,
                ebx: e.ebx,
                ecx: e.ecx,
                edx: e.edx,
                ..Default::default()
            },
            GFP_KERNEL_ACCOUNT,
        )?;
    }
    set_cpuid_table(vm, g, &entries)
}

/// Installs a CPUID table (both KVM_SET_CPUID forms).
fn set_cpuid_table(vm: &Vm, g: &mut VcpuInner, entries: &[kvm_cpuid_entry2]) -> Result<isize> {
    // After the first KVM_RUN, KVM only accepts the same table again, compared with the
    // bits it keeps in step with vCPU state applied to both (a table read back with
    // KVM_GET_CPUID2 shows them).
    if g.has_run {
        let rt = crate::x86::cpuid::Runtime {
            cr4: g.state.cr4,
            xcr0: g.state.xcr0,
            apic_base: g.state.apic_base,
            mwait: vm.quirks().cpuid_mwait(g.state.msrs.misc_enable),
        };
        let view = |e: &kvm_cpuid_entry2| {
            (
                e.function,
                e.index,
                e.flags,
                crate::x86::cpuid::runtime_view(e, rt),
            )
        };
        let same = entries.len() == g.cpuid.len()
            && entries
                .iter()
                .zip(g.cpuid.iter())
                .all(|(a, b)| view(a) == view(b));
        return if same { Ok(0) } else { Err(EINVAL) };
    }
    let mut v = KVec::with_capacity(entries.len(), GFP_KERNEL_ACCOUNT)?;
    for e in entries.iter() {
        v.push(*e, GFP_KERNEL_ACCOUNT)?;
    }
    g.cpuid = v;
    if let Some(a) = g.lapic.as_mut() {
        let ecx = g
            .cpuid
            .iter()
            .find(|e| e.function == 1)
            .map_or(0, |e| e.ecx);
        a.set_cpuid(ecx & (1 << 21) != 0, ecx & (1 << 24) != 0);
    }
    Ok(0)
}

// ---- sync_regs (KVM_CAP_SYNC_REGS) -------------------------------------------------------

const SYNC: usize = offset_of!(kvm_run, s);

fn sync_regs_out(vcpu: &Vcpu, g: &VcpuInner, valid: u64) {
    let s = &g.state;
    if valid & u64::from(KVM_SYNC_X86_REGS) != 0 {
        vcpu.run_put(SYNC + offset_of!(kvm_sync_regs, regs), &s.regs);
    }
    if valid & u64::from(KVM_SYNC_X86_SREGS) != 0 {
        vcpu.run_put(SYNC + offset_of!(kvm_sync_regs, sregs), &get_sregs(s));
    }
    if valid & u64::from(KVM_SYNC_X86_EVENTS) != 0 {
        vcpu.run_put(SYNC + offset_of!(kvm_sync_regs, events), &events::get(s));
    }
}

fn read_run<T: FromBytes + IntoBytes>(vcpu: &Vcpu, off: usize) -> Result<T> {
    let mut v = T::new_zeroed();
    vcpu.run.read_bytes(off, v.as_mut_bytes())?;
    Ok(v)
}

fn sync_regs_in(vm: &Vm, vcpu: &Vcpu, g: &mut VcpuInner, dirty: u64) -> Result {
    if dirty & u64::from(KVM_SYNC_X86_REGS) != 0 {
        let r: kvm_regs = read_run(vcpu, SYNC + offset_of!(kvm_sync_regs, regs))?;
        set_regs(&mut g.state, &r);
    }
    if dirty & u64::from(KVM_SYNC_X86_SREGS) != 0 {
        let s: kvm_sregs = read_run(vcpu, SYNC + offset_of!(kvm_sync_regs, sregs))?;
        set_sregs(vm, g, &s)?;
        apic_changed(vcpu, g);
    }
    if dirty & u64::from(KVM_SYNC_X86_EVENTS) != 0 {
        let e: kvm_vcpu_events = read_run(vcpu, SYNC + offset_of!(kvm_sync_regs, events))?;
        events::set(&mut g.state, &e)?;
    }
    // KVM clears kvm_dirty_regs once it took the state.
    vcpu.run_put(offset_of!(kvm_run, kvm_dirty_regs), &0u64);
    Ok(())
}

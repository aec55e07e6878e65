// SPDX-License-Identifier: GPL-2.0

//! CPUs: features, iteration, cross-CPU calls, interrupt and preemption guards, and the
//! few privileged registers a hypervisor reads on the host (CR0/CR3/CR4, GDTR/IDTR, TR).

use super::ffi;
use core::arch::asm;
use core::marker::PhantomData;
use kernel::prelude::*;

/// A CPU feature or bug bit, as the kernel's `boot_cpu_has()` sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Feature {
    Fpu = ffi::RKVM_FEATURE_FPU,
    Fxsr = ffi::RKVM_FEATURE_FXSR,
    Xsave = ffi::RKVM_FEATURE_XSAVE,
    Vmx = ffi::RKVM_FEATURE_VMX,
    Svm = ffi::RKVM_FEATURE_SVM,
    MsrIa32FeatCtl = ffi::RKVM_FEATURE_MSR_IA32_FEAT_CTL,
    La57 = ffi::RKVM_FEATURE_LA57,
    Rdtscp = ffi::RKVM_FEATURE_RDTSCP,
    FlushL1d = ffi::RKVM_FEATURE_FLUSH_L1D,
    ConstantTsc = ffi::RKVM_FEATURE_CONSTANT_TSC,
    ArchCapabilities = ffi::RKVM_FEATURE_ARCH_CAPABILITIES,
    BugL1tf = ffi::RKVM_BUG_L1TF,
    Ibpb = ffi::RKVM_FEATURE_IBPB,
    RsbVmexit = ffi::RKVM_FEATURE_RSB_VMEXIT,
    RsbVmexitLite = ffi::RKVM_FEATURE_RSB_VMEXIT_LITE,
    ClearCpuBuf = ffi::RKVM_FEATURE_CLEAR_CPU_BUF,
    ClearCpuBufVm = ffi::RKVM_FEATURE_CLEAR_CPU_BUF_VM,
    ClearCpuBufVmMmio = ffi::RKVM_FEATURE_CLEAR_CPU_BUF_VM_MMIO,
    Nx = ffi::RKVM_FEATURE_NX,
    Gbpages = ffi::RKVM_FEATURE_GBPAGES,
}

/// Whether the boot CPU (and so, the kernel) has `f`.
pub(crate) fn boot_cpu_has(f: Feature) -> bool {
    // SAFETY: A pure query.
    unsafe { ffi::rkvm_boot_cpu_has(f as c_int) != 0 }
}

/// Whether the CPU this runs on has `f`. Meaningful with preemption off.
pub(crate) fn this_cpu_has(f: Feature) -> bool {
    // SAFETY: A pure query.
    unsafe { ffi::rkvm_this_cpu_has(f as c_int) != 0 }
}

/// Reads this CPU's time-stamp counter.
pub(crate) fn rdtsc() -> u64 {
    // SAFETY: Reads the TSC.
    unsafe { ffi::rkvm_rdtsc() }
}

/// Executes CPUID on this CPU.
pub(crate) fn cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// Number of CPU ids (`nr_cpu_ids`).
pub(crate) fn nr_cpu_ids() -> u32 {
    // SAFETY: Reads a global set at boot.
    unsafe { ffi::rkvm_nr_cpu_ids() }
}

/// Whether `cpu` is online.
pub(crate) fn online(cpu: u32) -> bool {
    // SAFETY: A pure query; out-of-range ids answer false.
    unsafe { ffi::rkvm_cpu_online(cpu) != 0 }
}

/// Whether `cpu` may ever come online.
pub(crate) fn possible(cpu: u32) -> bool {
    // SAFETY: A pure query; out-of-range ids answer false.
    unsafe { ffi::rkvm_cpu_possible(cpu) != 0 }
}

/// Number of online CPUs.
pub(crate) fn num_online() -> u32 {
    // SAFETY: A pure query.
    unsafe { ffi::rkvm_num_online_cpus() }
}

/// Iterates over the possible CPUs.
pub(crate) fn possible_cpus() -> impl Iterator<Item = u32> {
    (0..nr_cpu_ids()).filter(|&c| possible(c))
}

/// The id of the CPU this runs on; stable only while preemption or interrupts are off.
pub(crate) fn this_cpu() -> u32 {
    // SAFETY: A pure query; callers hold off preemption where the answer must stay true.
    unsafe { ffi::rkvm_smp_processor_id() }
}

/// The trampoline that lets C call a Rust closure through a `void *`.
///
/// # Safety
///
/// `arg` is a `&mut F` that is alive and not otherwise used for the call.
unsafe extern "C" fn call_closure<F: FnMut()>(arg: *mut c_void) {
    // SAFETY: `arg` is the `&mut F` the caller of the shim passed, alive for the call.
    let f = unsafe { &mut *arg.cast::<F>() };
    f();
}

/// Runs `f` on `cpu` (with interrupts off there) and waits for it. `ENXIO` if the CPU is
/// offline.
pub(crate) fn run_on<F: FnMut() + Send>(cpu: u32, mut f: F) -> Result {
    // SAFETY: `f` outlives the call because the shim waits for completion, and only the
    // target CPU uses it meanwhile (`F: Send`).
    super::to_result(unsafe {
        ffi::rkvm_run_on_cpu(cpu, Some(call_closure::<F>), (&raw mut f).cast())
    })
}

/// Runs `f` on every online CPU (with interrupts off there) and waits for all of them.
/// `f` may run on several CPUs at once, so it is only used through `&F`.
pub(crate) fn run_on_each<F: Fn() + Sync>(f: F) {
    // SAFETY: `f` outlives the call because the shim waits for completion; concurrent
    // calls only use it through a shared reference (`F: Sync`).
    unsafe { ffi::rkvm_run_on_each_cpu(Some(call_shared::<F>), (&raw const f).cast_mut().cast()) };
}

/// # Safety
///
/// `arg` is a `&F` alive for the call.
unsafe extern "C" fn call_shared<F: Fn()>(arg: *mut c_void) {
    // SAFETY: `arg` is the `&F` `run_on_each` passed, alive for the whole call.
    let f = unsafe { &*arg.cast::<F>() };
    f();
}

/// Holds the CPU hotplug read lock: no CPU comes or goes while it lives.
pub(crate) struct CpusReadGuard(PhantomData<*mut ()>);

impl CpusReadGuard {
    /// Takes `cpus_read_lock()`. May sleep.
    pub(crate) fn new() -> Self {
        // SAFETY: Process context; released in `drop`.
        unsafe { ffi::rkvm_cpus_read_lock() };
        Self(PhantomData)
    }
}

impl Drop for CpusReadGuard {
    fn drop(&mut self) {
        // SAFETY: Taken in `new`.
        unsafe { ffi::rkvm_cpus_read_unlock() };
    }
}

/// Interrupts off on this CPU while it lives (`local_irq_save`). Not `Send`: it must be
/// dropped on the CPU that took it.
pub(crate) struct IrqGuard {
    flags: c_ulong,
    _not_send: PhantomData<*mut ()>,
}

impl IrqGuard {
    /// Disables interrupts.
    pub(crate) fn new() -> Self {
        // SAFETY: Saves and disables; restored in `drop` on the same CPU (not `Send`).
        let flags = unsafe { ffi::rkvm_local_irq_save() };
        Self {
            flags,
            _not_send: PhantomData,
        }
    }
}

impl Drop for IrqGuard {
    fn drop(&mut self) {
        // SAFETY: Restores what `new` saved, on the same CPU.
        unsafe { ffi::rkvm_local_irq_restore(self.flags) };
    }
}

/// Preemption off while it lives.
pub(crate) struct PreemptGuard(PhantomData<*mut ()>);

impl PreemptGuard {
    /// Disables preemption.
    pub(crate) fn new() -> Self {
        // SAFETY: Balanced by `drop`.
        unsafe { ffi::rkvm_preempt_disable() };
        Self(PhantomData)
    }
}

impl Drop for PreemptGuard {
    fn drop(&mut self) {
        // SAFETY: Balances `new`.
        unsafe { ffi::rkvm_preempt_enable() };
    }
}

/// Handles the work the task would do on its way back to userspace (reschedule, task
/// work such as POSIX CPU timers), so that a vCPU loop never starves it. `EINTR` when a
/// signal is pending. May sleep.
pub(crate) fn handle_guest_entry_work() -> Result {
    // SAFETY: Called from process context with interrupts and preemption enabled.
    super::to_result(unsafe { ffi::rkvm_xfer_to_guest_mode_handle_work() })
}

/// A counted reference on a thread's `struct pid`: who runs a vCPU, for directed yield.
///
/// # Invariants
///
/// `0` holds a reference taken by `get_task_pid`, dropped with the value.
pub(crate) struct ThreadRef(core::ptr::NonNull<c_void>);

// SAFETY: A `struct pid` reference may be used and dropped from any thread.
unsafe impl Send for ThreadRef {}
// SAFETY: `yield_to` takes its own reference on the task; shared use is read-only.
unsafe impl Sync for ThreadRef {}

impl ThreadRef {
    /// The current thread.
    pub(crate) fn current() -> Option<Self> {
        // SAFETY: Takes a reference on the current task's pid (process context).
        core::ptr::NonNull::new(unsafe { ffi::rkvm_current_pid_get() }).map(Self)
    }

    /// Whether this is the current thread.
    pub(crate) fn is_current(&self) -> bool {
        // SAFETY: Compares `self.0`, a live pid (the type's invariant), with current's.
        unsafe { ffi::rkvm_pid_is_current(self.0.as_ptr()) != 0 }
    }

    /// The thread's task, while it exists.
    pub(crate) fn task(&self) -> Option<TaskRef> {
        // SAFETY: `self.0` is a live pid reference; the result is a counted reference.
        core::ptr::NonNull::new(unsafe { ffi::rkvm_pid_task_get(self.0.as_ptr()) }).map(TaskRef)
    }
}

/// A counted reference on a task.
///
/// # Invariants
///
/// `0` holds a reference taken by `get_pid_task`; `yield_to` or the drop gives it back.
pub(crate) struct TaskRef(core::ptr::NonNull<c_void>);

impl TaskRef {
    /// Gives this task the rest of the current one's time slice if it is waiting for a
    /// CPU (`yield_to`); whether it did. May schedule.
    pub(crate) fn yield_to(self) -> bool {
        let t = core::mem::ManuallyDrop::new(self);
        // SAFETY: `t.0` is a counted task reference (the type's invariant), which the shim
        // drops; `t` is not dropped again. Process context.
        unsafe { ffi::rkvm_yield_to_task(t.0.as_ptr()) > 0 }
    }
}

impl Drop for TaskRef {
    fn drop(&mut self) {
        // SAFETY: Gives back the reference the type holds.
        unsafe { ffi::rkvm_task_put(self.0.as_ptr()) };
    }
}

impl Drop for ThreadRef {
    fn drop(&mut self) {
        // SAFETY: Drops the reference the type holds.
        unsafe { ffi::rkvm_pid_put(self.0.as_ptr()) };
    }
}

/// Whether the current task is the only one runnable on this CPU.
pub(crate) fn single_task_running() -> bool {
    // SAFETY: Reads this CPU's run-queue length.
    unsafe { ffi::rkvm_single_task_running() != 0 }
}

/// Whether the current task is still runnable: called as it loses its CPU, whether it is
/// preempted (rather than going to sleep).
pub(crate) fn current_runnable() -> bool {
    // SAFETY: Reads the current task's state.
    unsafe { ffi::rkvm_current_runnable() != 0 }
}

/// The current task's time spent waiting to run, in ns (0 without sched_info).
pub(crate) fn current_run_delay() -> u64 {
    // SAFETY: Reads a field of the current task.
    unsafe { ffi::rkvm_current_run_delay() }
}

/// Whether the kernel accounts run delays (sched_info), which steal time needs.
pub(crate) fn sched_info_on() -> bool {
    // SAFETY: No preconditions.
    unsafe { ffi::rkvm_sched_info_on() != 0 }
}

/// Whether the current task has a signal pending.
pub(crate) fn signal_pending() -> bool {
    kernel::current!().signal_pending()
}

/// Whether the scheduler wants this CPU for another task.
pub(crate) fn need_resched() -> bool {
    // SAFETY: Reads the current task's flag.
    unsafe { ffi::rkvm_need_resched() != 0 }
}

/// Yields the CPU if the scheduler wants it. May sleep.
pub(crate) fn cond_resched() {
    // SAFETY: Called from process context only.
    unsafe { ffi::rkvm_cond_resched() };
}

/// Hands a machine check that hit the guest (or its VM entry) to the host's #MC handler.
///
/// The caller has interrupts off (the proof is the guard) and calls it at most once per
/// machine-check exit.
pub(crate) fn machine_check(_irq: &IrqGuard) {
    // SAFETY: Interrupts are off, as the handler expects when called from an exit path;
    // it takes no pointer from us (the shim builds the register frame).
    unsafe { ffi::rkvm_machine_check() }
}

/// Whether the kernel runs without CPU vulnerability mitigations (`mitigations=off`, or
/// built without them).
pub(crate) fn mitigations_off() -> bool {
    // SAFETY: A pure query.
    unsafe { ffi::rkvm_cpu_mitigations_off() != 0 }
}

/// The TSC frequency in kHz the kernel calibrated (0 if unknown).
pub(crate) fn tsc_khz() -> u32 {
    // SAFETY: Reads a global.
    unsafe { ffi::rkvm_tsc_khz() }
}

/// Whether the kernel marked the TSC unstable (its clocksource watchdog, `tsc=unstable`).
pub(crate) fn tsc_unstable() -> bool {
    // SAFETY: Reads a global.
    unsafe { ffi::rkvm_tsc_unstable() != 0 }
}

/// The pid of the current task.
pub(crate) fn current_pid() -> i32 {
    // SAFETY: A pure query on `current`.
    unsafe { ffi::rkvm_pid_of_current() }
}

/// Privileged host registers. Reading them has no side effect.
pub(crate) mod regs {
    use super::*;

    /// CR4.VMXE.
    pub(crate) const CR4_VMXE: u64 = 1 << 13;

    /// Reads CR0.
    pub(crate) fn cr0() -> u64 {
        let v: u64;
        // SAFETY: Reading CR0 at CPL0 has no side effect.
        unsafe { asm!("mov {}, cr0", out(reg) v, options(nomem, nostack, preserves_flags)) };
        v
    }

    /// Reads CR3.
    pub(crate) fn cr3() -> u64 {
        let v: u64;
        // SAFETY: Reading CR3 at CPL0 has no side effect.
        unsafe { asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags)) };
        v
    }

    /// Reads the hardware CR4 (not the kernel's shadow of it).
    pub(crate) fn cr4() -> u64 {
        let v: u64;
        // SAFETY: Reading CR4 at CPL0 has no side effect.
        unsafe { asm!("mov {}, cr4", out(reg) v, options(nomem, nostack, preserves_flags)) };
        v
    }

    /// Sets or clears CR4.VMXE, keeping every other bit of the hardware CR4.
    ///
    /// The kernel's CR4 setters (which also update its per-CPU shadow) are exported to KVM
    /// only, and `native_write_cr4` not at all, so this writes the register directly. The
    /// write changes VMXE alone: the kernel's pinned bits (SMEP, SMAP, UMIP, ...) stay.
    ///
    /// # Safety
    ///
    /// Interrupts are disabled on this CPU from before setting VMXE until after it is
    /// cleared again (no kernel path may rewrite CR4 from its shadow meanwhile), and VMXE
    /// is only cleared outside VMX operation.
    pub(crate) unsafe fn set_cr4_vmxe(on: bool) {
        let cr4 = if on {
            cr4() | CR4_VMXE
        } else {
            cr4() & !CR4_VMXE
        };
        // SAFETY: Only VMXE changes, under the caller's guarantees above.
        unsafe { asm!("mov cr4, {}", in(reg) cr4, options(nostack, preserves_flags)) };
    }

    /// Reads debug register DR`n` (0-3, 6; anything else reads DR7).
    pub(crate) fn dr(n: u8) -> u64 {
        let v: u64;
        // SAFETY: Reading a debug register at CPL0 has no side effect (DR7.GD is never set
        // in the host kernel).
        unsafe {
            match n {
                0 => asm!("mov {}, dr0", out(reg) v, options(nomem, nostack, preserves_flags)),
                1 => asm!("mov {}, dr1", out(reg) v, options(nomem, nostack, preserves_flags)),
                2 => asm!("mov {}, dr2", out(reg) v, options(nomem, nostack, preserves_flags)),
                3 => asm!("mov {}, dr3", out(reg) v, options(nomem, nostack, preserves_flags)),
                6 => asm!("mov {}, dr6", out(reg) v, options(nomem, nostack, preserves_flags)),
                _ => asm!("mov {}, dr7", out(reg) v, options(nomem, nostack, preserves_flags)),
            }
        }
        v
    }

    /// Writes debug register DR`n` (0-3, 6; anything else writes DR7).
    ///
    /// # Safety
    ///
    /// Interrupts are off and the caller puts the host's value back before they are on
    /// again (the kernel's breakpoint bookkeeping must not see a foreign value); a DR7
    /// value arms breakpoints only at addresses the caller chose.
    pub(crate) unsafe fn set_dr(n: u8, v: u64) {
        // SAFETY: The caller's guarantees above.
        unsafe {
            match n {
                0 => asm!("mov dr0, {}", in(reg) v, options(nomem, nostack, preserves_flags)),
                1 => asm!("mov dr1, {}", in(reg) v, options(nomem, nostack, preserves_flags)),
                2 => asm!("mov dr2, {}", in(reg) v, options(nomem, nostack, preserves_flags)),
                3 => asm!("mov dr3, {}", in(reg) v, options(nomem, nostack, preserves_flags)),
                6 => asm!("mov dr6, {}", in(reg) v, options(nomem, nostack, preserves_flags)),
                _ => asm!("mov dr7, {}", in(reg) v, options(nomem, nostack, preserves_flags)),
            }
        }
    }

    /// Reads XCR0 (requires CR4.OSXSAVE, which the caller checked).
    pub(crate) fn xgetbv0() -> u64 {
        let (lo, hi): (u32, u32);
        // SAFETY: XGETBV with ECX=0 is valid with CR4.OSXSAVE set and has no side effects.
        unsafe {
            asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi,
                 options(nomem, nostack, preserves_flags))
        };
        u64::from(hi) << 32 | u64::from(lo)
    }

    /// A descriptor-table register (GDTR or IDTR).
    #[derive(Clone, Copy, Default, Debug)]
    pub(crate) struct DescTable {
        pub(crate) base: u64,
    }

    #[repr(C, packed)]
    #[derive(Default)]
    struct RawDesc {
        limit: u16,
        base: u64,
    }

    /// Reads GDTR.
    pub(crate) fn gdtr() -> DescTable {
        let mut d = RawDesc::default();
        // SAFETY: SGDT stores 10 bytes into `d`, which is exactly that big.
        unsafe { asm!("sgdt [{}]", in(reg) &raw mut d, options(nostack, preserves_flags)) };
        DescTable { base: d.base }
    }

    /// Reads IDTR.
    pub(crate) fn idtr() -> DescTable {
        let mut d = RawDesc::default();
        // SAFETY: SIDT stores 10 bytes into `d`, which is exactly that big.
        unsafe { asm!("sidt [{}]", in(reg) &raw mut d, options(nostack, preserves_flags)) };
        DescTable { base: d.base }
    }

    /// Segment selectors of the host.
    #[derive(Clone, Copy, Default, Debug)]
    pub(crate) struct Selectors {
        pub(crate) cs: u16,
        pub(crate) ss: u16,
        pub(crate) tr: u16,
    }

    /// Reads the host's CS, SS and TR (the C shim saves DS/ES/FS/GS with their bases).
    pub(crate) fn selectors() -> Selectors {
        let (cs, ss, tr): (u16, u16, u16);
        // SAFETY: Moves from segment registers and STR have no side effects.
        unsafe {
            asm!(
                "mov {0:x}, cs",
                "mov {1:x}, ss",
                "str {2:x}",
                out(reg) cs, out(reg) ss, out(reg) tr,
                options(nomem, nostack, preserves_flags)
            )
        };
        Selectors { cs, ss, tr }
    }

    /// The linear address of this CPU's TSS (what TR points at). Interrupts must be off.
    pub(crate) fn tss_base() -> u64 {
        // SAFETY: A pure computation on this CPU's entry area; the caller pins the CPU.
        unsafe { ffi::rkvm_host_tss_base() }
    }
}

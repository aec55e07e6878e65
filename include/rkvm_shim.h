/* SPDX-License-Identifier: GPL-2.0 */
/*
 * rkvm's C shim: plain functions over kernel interfaces that are macros or inline
 * functions, or have no binding in the Rust `kernel` crate. rust/sys/ is the only caller;
 * it gives every function here a safe, typed API.
 *
 * This header is also the input of bindgen (see Kbuild), so it only uses the uapi integer
 * types and opaque pointers: the Rust declarations are generated, never copied by hand.
 */
#ifndef RKVM_SHIM_H
#define RKVM_SHIM_H

#include <linux/types.h>

/* CPU features and bugs the shim can test with boot_cpu_has() / this_cpu_has(). */
enum rkvm_cpu_feature {
	RKVM_FEATURE_FPU,
	RKVM_FEATURE_FXSR,
	RKVM_FEATURE_XSAVE,
	RKVM_FEATURE_XSAVES,
	RKVM_FEATURE_VMX,
	RKVM_FEATURE_SVM,
	RKVM_FEATURE_MSR_IA32_FEAT_CTL,
	RKVM_FEATURE_NX,
	RKVM_FEATURE_LA57,
	RKVM_FEATURE_PCID,
	RKVM_FEATURE_RDTSCP,
	RKVM_FEATURE_RDPID,
	RKVM_FEATURE_FLUSH_L1D,
	RKVM_FEATURE_CONSTANT_TSC,
	RKVM_FEATURE_X2APIC,
	RKVM_FEATURE_ARCH_CAPABILITIES,
	RKVM_BUG_L1TF,
	/* Mitigation choices of the host kernel (synthetic bits; 0 when the kernel has none). */
	RKVM_FEATURE_IBPB,
	RKVM_FEATURE_RSB_VMEXIT,
	RKVM_FEATURE_RSB_VMEXIT_LITE,
	RKVM_FEATURE_CLEAR_CPU_BUF,
	RKVM_FEATURE_CLEAR_CPU_BUF_VM,
	RKVM_FEATURE_CLEAR_CPU_BUF_VM_MMIO,
	RKVM_FEATURE_GBPAGES,
};

int rkvm_boot_cpu_has(int feature);
int rkvm_this_cpu_has(int feature);

/* MSR access that never faults: 0 or -EIO. */
int rkvm_rdmsr_safe(__u32 msr, __u64 *value);
int rkvm_wrmsr_safe(__u32 msr, __u64 value);

/* CPUs. */
unsigned int rkvm_nr_cpu_ids(void);
int rkvm_cpu_online(unsigned int cpu);
int rkvm_cpu_possible(unsigned int cpu);
unsigned int rkvm_num_online_cpus(void);
/* Runs fn(arg) on CPU cpu and waits; 0 or -errno (-ENXIO: CPU offline). */
int rkvm_run_on_cpu(unsigned int cpu, void (*fn)(void *arg), void *arg);
/* Runs fn(arg) on every online CPU (this one included) and waits. */
void rkvm_run_on_each_cpu(void (*fn)(void *arg), void *arg);
void rkvm_cpus_read_lock(void);
void rkvm_cpus_read_unlock(void);

/* Per-CPU memory (alloc_percpu / per_cpu_ptr / free_percpu). */
void *rkvm_percpu_alloc(__u64 size, __u64 align);
void *rkvm_percpu_ptr(void *pcpu, unsigned int cpu);
void rkvm_percpu_free(void *pcpu);

/* kmem caches (kmem_cache_create_usercopy and friends); NULL on failure. */
void *rkvm_kmem_cache_create(const char *name, unsigned int size, unsigned int align,
			     unsigned int useroffset, unsigned int usersize);
void rkvm_kmem_cache_destroy(void *cache);
void *rkvm_kmem_cache_zalloc(void *cache);
void rkvm_kmem_cache_free(void *cache, void *obj);

/* CPU hotplug: a dynamic state in the online section. Returns the state or -errno. */
int rkvm_cpuhp_setup(const char *name, int (*online)(unsigned int cpu),
		     int (*offline)(unsigned int cpu));
void rkvm_cpuhp_remove(int state);

/* The reboot notifier and the syscore ops (one registration of each per module). */
int rkvm_reboot_notifier_register(void (*on_reboot)(void));
void rkvm_reboot_notifier_unregister(void);
void rkvm_syscore_register(int (*suspend)(void), void (*resume)(void), void (*shutdown)(void));
void rkvm_syscore_unregister(void);

/*
 * Preempt notifiers. rkvm_preempt_ops_init() sets the two callbacks once (the seed's
 * kvm_preempt_ops); each notifier carries an opaque context handed to them.
 */
void rkvm_preempt_ops_init(void (*sched_in)(void *ctx, int cpu), void (*sched_out)(void *ctx));
void rkvm_preempt_ops_exit(void);
void *rkvm_preempt_notifier_alloc(void *ctx);
void rkvm_preempt_notifier_free(void *notifier);
/* Attach to / detach from the current task; with preemption disabled around both. */
void rkvm_preempt_notifier_register(void *notifier);
void rkvm_preempt_notifier_unregister(void *notifier);

/*
 * User-return notifiers, one per CPU: on_return(cpu) runs on the CPU when it next returns
 * to userspace after rkvm_user_return_arm() was called on it (with preemption off).
 */
int rkvm_user_return_init(void (*on_return)(unsigned int cpu));
void rkvm_user_return_exit(void);
void rkvm_user_return_arm(void);

/*
 * irqfd: an eventfd whose signal calls fire(owner, gsi) from a work item. NULL and *err
 * on failure. rkvm_irqfd_free() unhooks it, waits for a running fire() and frees it.
 */
void *rkvm_irqfd_assign(int fd, __u32 gsi, void (*fire)(const void *owner, __u32 gsi),
			const void *owner, int *err);
int rkvm_irqfd_matches(void *irqfd, int fd);
int rkvm_irqfd_dead(void *irqfd);
int rkvm_eventfd_check(int fd);
/* eventfd contexts for KVM_IOEVENTFD: get (a reference), signal, put. */
void *rkvm_eventfd_get(int fd, int *err);
void rkvm_eventfd_signal(void *ctx);
void rkvm_eventfd_put(void *ctx);
void rkvm_irqfd_free(void *irqfd);

/*
 * A host timer for a guest device (the in-kernel PIT): an hrtimer on CLOCK_MONOTONIC
 * whose expiries run fire(owner, expiries since the last call) from a work item, in
 * process context; periodic when period_ns is not 0. start() replaces what was armed
 * (waiting for a running fire()); stop() disarms it the same way; free() stops and frees.
 */
void *rkvm_ptimer_new(void (*fire)(const void *owner, __u32 expiries), const void *owner);
void rkvm_ptimer_start(void *t, __u64 delay_ns, __u64 period_ns);
void rkvm_ptimer_stop(void *t);
void rkvm_ptimer_free(void *t);

/* anon_inode_getfd() with fops built in Rust. */
int rkvm_anon_inode_getfd(const char *name, const void *fops, void *priv, int flags);
/* The same for a readable file that also takes pread() (binary stats). */
int rkvm_anon_inode_getfd_pread(const char *name, const void *fops, void *priv, int flags);

/*
 * MMU notifiers on the current process's mm. The callbacks are set once; each
 * registration carries an opaque context handed to them. start() and age() must not
 * sleep. age() says (nonzero) whether the guest used a page of [start, end) since the last
 * clearing age() (the host's "young" bit for the secondary MMU), and with clear set
 * starts a new period.
 */
void rkvm_mmu_notifier_ops_init(void (*start)(void *ctx, __u64 start, __u64 end),
				void (*end)(void *ctx, __u64 start, __u64 end),
				void (*release)(void *ctx),
				int (*age)(void *ctx, __u64 start, __u64 end, int clear));
/* Registers on current->mm; NULL with *err set on failure. */
void *rkvm_mmu_notifier_register(void *ctx, int *err);
void rkvm_mmu_notifier_unregister(void *notifier);
/* The current process's mm, as an opaque identity. */
const void *rkvm_current_mm(void);

/*
 * Guest memory: pins one page of the current process at hva (writable if asked).
 * Returns 0 and the page, or -errno. rkvm_put_page() drops the reference.
 */
int rkvm_get_user_page(__u64 hva, int write, void **page);
void rkvm_put_page(void *page);
/* Takes a reference on a page (one the page fault handler hands to the mm). */
void rkvm_get_page(void *page);

/* Host segment state a VM exit clobbers (LDT, DS/ES/FS/GS selectors, GDT limit). */
struct rkvm_host_segs {
	__u16 ldt, ds, es, fs, gs;
	__u64 fs_base, kernel_gs_base;
};
void rkvm_host_segs_save(struct rkvm_host_segs *s);
void rkvm_host_segs_restore(const struct rkvm_host_segs *s);

/* Kernel FPU use around guest execution (kernel_fpu_begin/end). */
void rkvm_fpu_begin(void);
void rkvm_fpu_end(void);

/* Re-raise an NMI that arrived while the guest ran, so the host's handler sees it. */
void rkvm_self_nmi(void);
/*
 * Hand a machine check that interrupted the guest (or its VM entry) to the host's #MC
 * handler, as if it had hit user mode. Interrupts must be off. No-op without
 * CONFIG_X86_MCE.
 */
void rkvm_machine_check(void);
/*
 * The kernel data segment selector, the memory operand of the VERW that clears CPU
 * buffers before VM entry (the kernel's own copy, x86_verw_sel, is exported to KVM only).
 */
extern const __u16 rkvm_verw_sel;

/* KVM_SET_SIGNAL_MASK: block these signals (a 64-bit sigset) while in KVM_RUN. */
void rkvm_sigmask_activate(__u64 mask);
void rkvm_sigmask_deactivate(void);
/* The host TSC. */
__u64 rkvm_rdtsc(void);

/* Address translation of kernel memory and pages. */
__u64 rkvm_virt_to_phys(const void *addr);
__u64 rkvm_page_to_phys(const void *page);
void *rkvm_page_address(const void *page);
void *rkvm_pfn_to_page(__u64 pfn);
__u64 rkvm_page_to_pfn(const void *page);
/*
 * The first frame of the host's leaf mapping of hva at level 2 (a 2 MiB PMD leaf) or 3
 * (a 1 GiB PUD leaf), writable if write; 0 without one.
 */
__u64 rkvm_host_leaf_pfn(__u64 hva, int write, int level);

/* Host facts. */
/* Whether the kernel runs with mitigations=off (or without CONFIG_CPU_MITIGATIONS). */
int rkvm_cpu_mitigations_off(void);
unsigned int rkvm_tsc_khz(void);
/* Whether the kernel marked the TSC unstable. */
int rkvm_tsc_unstable(void);
int rkvm_signal_pending(void);
/*
 * Before entering the guest: handle what the task would handle on its way to userspace
 * (reschedule, task work such as POSIX CPU timers). -EINTR with a signal pending.
 */
int rkvm_xfer_to_guest_mode_handle_work(void);
int rkvm_need_resched(void);
void rkvm_cond_resched(void);
/* The current task's time waiting on a runqueue (sched_info, ns): steal time's source. */
__u64 rkvm_current_run_delay(void);
/* Whether the current task is still runnable (it is being preempted, not sleeping). */
int rkvm_current_runnable(void);
/* single_task_running(): nothing else is runnable on this CPU. */
int rkvm_single_task_running(void);
/* A reference on the current thread's struct pid. */
void *rkvm_current_pid_get(void);
void rkvm_pid_put(void *pid);
/* Whether pid is the current thread's. */
int rkvm_pid_is_current(const void *pid);
/* A reference on the task of pid, NULL if it is gone. */
void *rkvm_pid_task_get(void *pid);
/* yield_to() task (not the current one), then drop the reference: > 0 when it got the CPU. */
int rkvm_yield_to_task(void *task);
void rkvm_task_put(void *task);
/* Whether the kernel keeps it (sched_info_on()). */
int rkvm_sched_info_on(void);

/* ---- kvmclock ---- */
/* One instant: CLOCK_BOOTTIME and CLOCK_REALTIME in ns, and the TSC then (read with the
 * clocks when the clocksource is the TSC: tsc_based). */
struct rkvm_clock_now {
	__u64 boot_ns;
	__u64 real_ns;
	__u64 tsc;
	int tsc_based;
};
void rkvm_clock_now(struct rkvm_clock_now *c);
/* struct pvclock_vcpu_time_info and struct pvclock_wall_clock (asm/pvclock-abi.h): their
 * sizes, and the guest's copies filled in a buffer of that size. */
unsigned int rkvm_pvclock_size(void);
unsigned int rkvm_pvclock_version_offset(void);
/* `old` is the guest's current copy: a guest-stopped flag the guest has not cleared yet
 * stays; `stopped` sets it. */
void rkvm_pvclock_fill(void *buf, const void *old, __u32 version, __u64 tsc_timestamp,
		       __u64 system_time, __u32 mul, __s8 shift, int stopped);
unsigned int rkvm_wall_clock_size(void);
unsigned int rkvm_wall_clock_version_offset(void);
void rkvm_wall_clock_fill(void *buf, __u32 version, __u32 sec, __u32 nsec);
unsigned int rkvm_smp_processor_id(void);
__u64 rkvm_host_tss_base(void);
int rkvm_pid_of_current(void);

/* ---- Halted vCPUs: a wait queue, the monotonic clock, asynchronous kicks ------------ */
void *rkvm_waitq_alloc(void);
void rkvm_waitq_free(void *wq);
void rkvm_waitq_wake(void *wq);
/*
 * Sleeps (interruptibly) until cond(ctx) holds, a signal is pending, or timeout_ns
 * nanoseconds passed (0: no timeout). Returns 0 when cond held, -EINTR for a signal,
 * -ETIME on timeout.
 */
int rkvm_waitq_wait(void *wq, int (*cond)(void *ctx), void *ctx, __u64 timeout_ns);
/* CLOCK_MONOTONIC in nanoseconds. */
__u64 rkvm_ktime_get_ns(void);
__u64 rkvm_ktime_get_boottime_ns(void);
/* Interrupts `cpu` without waiting for it (a VM exit if it runs a guest). */
void rkvm_kick_cpu_async(unsigned int cpu);

/* Interrupt and preemption control around the VMX window. */
unsigned long rkvm_local_irq_save(void);
void rkvm_local_irq_restore(unsigned long flags);
void rkvm_preempt_disable(void);
void rkvm_preempt_enable(void);

/* The L1D flush on VM entry (vmentry_l1d_flush): what the parameter says. */
enum rkvm_l1d_flush {
	RKVM_L1D_FLUSH_AUTO,
	RKVM_L1D_FLUSH_NEVER,
	RKVM_L1D_FLUSH_COND,
	RKVM_L1D_FLUSH_ALWAYS,
};

/* Module parameters, declared with kvm_intel's names in the shim (module_param). */
struct rkvm_params {
	int ept;
	int vpid;
	int unrestricted_guest;
	int pml;
	int vmentry_l1d_flush;
	/* kvm_amd's. */
	int npt;
};
void rkvm_params_get(struct rkvm_params *out);
/* After hardware_setup: what is really in use, shown under /sys/module/rkvm/parameters. */
void rkvm_params_set_effective(const struct rkvm_params *in);

/* kvm's halt-polling parameters, as they read now (they are writable at run time). */
struct rkvm_halt_poll {
	unsigned int ns;
	unsigned int grow;
	unsigned int grow_start;
	unsigned int shrink;
};
void rkvm_halt_poll_params(struct rkvm_halt_poll *out);

/*
 * kvm's nx_huge_pages and its recovery parameters (see shim_params.c). rkvm_nx_start()
 * resolves "auto" and lets the recovery work call fn(); rkvm_nx_stop() (module exit)
 * waits for it and keeps it from being queued again.
 */
struct rkvm_nx_params {
	/* Bumped whenever nx_huge_pages changes. */
	unsigned int gen;
	unsigned int ratio;
	int recovery;
	unsigned int period_ms;
};
void rkvm_nx_start(void (*fn)(void));
void rkvm_nx_stop(void);
void rkvm_nx_params(struct rkvm_nx_params *out);
/* What a fault needs of them, in one word: the generation << 1 | enabled. */
__u64 rkvm_nx_state(void);
/* Runs the recovery work in `ms` unless it is queued already. */
void rkvm_nx_recovery_kick(unsigned int ms);
/* A VM was created (+1) or freed (-1): nx_huge_pages=never needs none. */
void rkvm_nx_vm_count(int delta);
/* capable(CAP_SYS_BOOT), in the initial namespace. */
int rkvm_capable_sys_boot(void);

/* ---- SVM ----------------------------------------------------------------------------- */
/*
 * Where the fields rkvm uses sit in a VMCB (struct vmcb of asm/svm.h, the APM's layout),
 * as byte offsets from the start of the page; a segment field's offset is that of its
 * struct vmcb_seg, whose own members are at seg_selector .. seg_base.
 */
struct rkvm_vmcb_layout {
	__u16 intercepts;
	__u16 iopm_base_pa;
	__u16 msrpm_base_pa;
	__u16 tsc_offset;
	__u16 asid;
	__u16 tlb_ctl;
	__u16 int_ctl;
	__u16 int_vector;
	__u16 int_state;
	__u16 exit_code;
	__u16 exit_info_1;
	__u16 exit_info_2;
	__u16 exit_int_info;
	__u16 exit_int_info_err;
	__u16 nested_ctl;
	__u16 event_inj;
	__u16 event_inj_err;
	__u16 nested_cr3;
	__u16 clean;
	__u16 next_rip;
	__u16 insn_len;
	__u16 insn_bytes;
	__u16 es, cs, ss, ds, fs, gs, gdtr, ldtr, idtr, tr;
	__u16 seg_selector, seg_attrib, seg_limit, seg_base;
	__u16 cpl;
	__u16 efer;
	__u16 cr4, cr3, cr0, dr7, dr6;
	__u16 rflags, rip, rsp, rax;
	__u16 star, lstar, cstar, sfmask, kernel_gs_base;
	__u16 sysenter_cs, sysenter_esp, sysenter_eip;
	__u16 cr2;
	__u16 g_pat;
	__u16 dbgctl;
};
void rkvm_vmcb_layout_get(struct rkvm_vmcb_layout *l);
/* Physically contiguous pages (SVM's I/O and MSR permission maps), filled with `fill`. */
void *rkvm_contig_alloc(__u32 bytes, __u8 fill);
void rkvm_contig_free(void *virt, __u32 bytes);
/*
 * One hrtimer per CPU whose only effect is its interrupt (SVM has no preemption timer).
 * init/exit at module load and unload; arm (CLOCK_MONOTONIC, absolute) and cancel on the
 * current CPU, with interrupts off.
 */
void rkvm_deadline_timers_init(void);
void rkvm_deadline_timers_exit(void);
void rkvm_deadline_timer_arm(__u64 monotonic_ns);
void rkvm_deadline_timer_cancel(void);

/* kvm-vfio: whether `file` (a struct file) is a VFIO file; 0 without the vfio module. */
int rkvm_vfio_file_is_valid(void *file);

#endif /* RKVM_SHIM_H */

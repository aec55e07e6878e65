// SPDX-License-Identifier: GPL-2.0
/*
 * rkvm's C shim: see include/rkvm_shim.h. Every function is a thin, stateless forwarder
 * to a kernel macro or inline function, except the few registrations that need a C
 * struct the kernel keeps a pointer to (notifier blocks, syscore, preempt ops), which
 * live here as statics.
 */
#include <linux/anon_inodes.h>
#include <linux/capability.h>
#include <linux/entry-virt.h>
#include <linux/mmu_notifier.h>
#include <linux/sched/mm.h>
#include <asm/apic.h>
#include <asm/desc.h>
#include <asm/gsseg.h>
#include <asm/fpu/api.h>
#include <linux/cpu.h>
#include <linux/cpuhotplug.h>
#include <linux/io.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/percpu.h>
#include <linux/preempt.h>
#include <linux/reboot.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/sched/stat.h>
#include <linux/timekeeping.h>
#include <asm/pvclock-abi.h>
#include <linux/slab.h>
#include <linux/smp.h>
#include <linux/syscore_ops.h>
#include <linux/wait.h>
#include <linux/eventfd.h>
#include <linux/file.h>
#include <linux/vfio.h>
#include <linux/poll.h>
#include <linux/hrtimer.h>
#include <linux/user-return-notifier.h>
#include <asm/cpu_entry_area.h>
#include <asm/cpufeature.h>
#include <asm/msr.h>
#include <asm/tsc.h>

#include "rkvm_shim.h"

/* ---- CPU features ------------------------------------------------------------------- */

static int feature_bit(int feature)
{
	switch (feature) {
	case RKVM_FEATURE_FPU: return X86_FEATURE_FPU;
	case RKVM_FEATURE_FXSR: return X86_FEATURE_FXSR;
	case RKVM_FEATURE_XSAVE: return X86_FEATURE_XSAVE;
	case RKVM_FEATURE_XSAVES: return X86_FEATURE_XSAVES;
	case RKVM_FEATURE_VMX: return X86_FEATURE_VMX;
	case RKVM_FEATURE_SVM: return X86_FEATURE_SVM;
	case RKVM_FEATURE_MSR_IA32_FEAT_CTL: return X86_FEATURE_MSR_IA32_FEAT_CTL;
	case RKVM_FEATURE_NX: return X86_FEATURE_NX;
	case RKVM_FEATURE_LA57: return X86_FEATURE_LA57;
	case RKVM_FEATURE_PCID: return X86_FEATURE_PCID;
	case RKVM_FEATURE_RDTSCP: return X86_FEATURE_RDTSCP;
	case RKVM_FEATURE_RDPID: return X86_FEATURE_RDPID;
	case RKVM_FEATURE_FLUSH_L1D: return X86_FEATURE_FLUSH_L1D;
	case RKVM_FEATURE_CONSTANT_TSC: return X86_FEATURE_CONSTANT_TSC;
	case RKVM_FEATURE_X2APIC: return X86_FEATURE_X2APIC;
	case RKVM_FEATURE_ARCH_CAPABILITIES: return X86_FEATURE_ARCH_CAPABILITIES;
	case RKVM_BUG_L1TF: return X86_BUG_L1TF;
#ifdef X86_FEATURE_IBPB
	case RKVM_FEATURE_IBPB: return X86_FEATURE_IBPB;
#endif
#ifdef X86_FEATURE_RSB_VMEXIT
	case RKVM_FEATURE_RSB_VMEXIT: return X86_FEATURE_RSB_VMEXIT;
#endif
#ifdef X86_FEATURE_RSB_VMEXIT_LITE
	case RKVM_FEATURE_RSB_VMEXIT_LITE: return X86_FEATURE_RSB_VMEXIT_LITE;
#endif
#ifdef X86_FEATURE_CLEAR_CPU_BUF
	case RKVM_FEATURE_CLEAR_CPU_BUF: return X86_FEATURE_CLEAR_CPU_BUF;
#endif
#ifdef X86_FEATURE_CLEAR_CPU_BUF_VM
	case RKVM_FEATURE_CLEAR_CPU_BUF_VM: return X86_FEATURE_CLEAR_CPU_BUF_VM;
#endif
#ifdef X86_FEATURE_CLEAR_CPU_BUF_VM_MMIO
	case RKVM_FEATURE_CLEAR_CPU_BUF_VM_MMIO: return X86_FEATURE_CLEAR_CPU_BUF_VM_MMIO;
#endif
	case RKVM_FEATURE_GBPAGES: return X86_FEATURE_GBPAGES;
	}
	return -1;
}

int rkvm_boot_cpu_has(int feature)
{
	int bit = feature_bit(feature);

	return bit >= 0 && boot_cpu_has(bit);
}

int rkvm_this_cpu_has(int feature)
{
	int bit = feature_bit(feature);

	return bit >= 0 && this_cpu_has(bit);
}

/* ---- MSRs --------------------------------------------------------------------------- */

int rkvm_rdmsr_safe(__u32 msr, __u64 *value)
{
	u64 v = 0;
	int r = rdmsrq_safe(msr, &v);

	*value = r ? 0 : v;
	return r ? -EIO : 0;
}

int rkvm_wrmsr_safe(__u32 msr, __u64 value)
{
	return wrmsrq_safe(msr, value) ? -EIO : 0;
}

/* ---- CPUs --------------------------------------------------------------------------- */

unsigned int rkvm_nr_cpu_ids(void) { return nr_cpu_ids; }
int rkvm_cpu_online(unsigned int cpu) { return cpu < nr_cpu_ids && cpu_online(cpu); }
int rkvm_cpu_possible(unsigned int cpu) { return cpu < nr_cpu_ids && cpu_possible(cpu); }
unsigned int rkvm_num_online_cpus(void) { return num_online_cpus(); }

int rkvm_run_on_cpu(unsigned int cpu, void (*fn)(void *arg), void *arg)
{
	return smp_call_function_single(cpu, fn, arg, 1);
}

void rkvm_run_on_each_cpu(void (*fn)(void *arg), void *arg)
{
	on_each_cpu(fn, arg, 1);
}

void rkvm_cpus_read_lock(void) { cpus_read_lock(); }
void rkvm_cpus_read_unlock(void) { cpus_read_unlock(); }

/* ---- Per-CPU memory ----------------------------------------------------------------- */

void *rkvm_percpu_alloc(__u64 size, __u64 align)
{
	return (void __force *)__alloc_percpu(size, align);
}

void *rkvm_percpu_ptr(void *pcpu, unsigned int cpu)
{
	return per_cpu_ptr((void __percpu __force *)pcpu, cpu);
}

void rkvm_percpu_free(void *pcpu)
{
	free_percpu((void __percpu __force *)pcpu);
}

/* ---- kmem caches -------------------------------------------------------------------- */

void *rkvm_kmem_cache_create(const char *name, unsigned int size, unsigned int align,
			     unsigned int useroffset, unsigned int usersize)
{
	return kmem_cache_create_usercopy(name, size, align, SLAB_ACCOUNT, useroffset,
					  usersize, NULL);
}

void rkvm_kmem_cache_destroy(void *cache) { kmem_cache_destroy(cache); }
void *rkvm_kmem_cache_zalloc(void *cache) { return kmem_cache_zalloc(cache, GFP_KERNEL_ACCOUNT); }
void rkvm_kmem_cache_free(void *cache, void *obj) { kmem_cache_free(cache, obj); }

/* ---- CPU hotplug -------------------------------------------------------------------- */

int rkvm_cpuhp_setup(const char *name, int (*online)(unsigned int cpu),
		     int (*offline)(unsigned int cpu))
{
	/* "nocalls": CPUs already online were set up by the caller, as in the seed. */
	return cpuhp_setup_state_nocalls(CPUHP_AP_ONLINE_DYN, name, online, offline);
}

void rkvm_cpuhp_remove(int state)
{
	cpuhp_remove_state_nocalls(state);
}

/* ---- Reboot notifier and syscore ---------------------------------------------------- */

static void (*rkvm_on_reboot)(void);

static int rkvm_reboot_cb(struct notifier_block *nb, unsigned long action, void *data)
{
	rkvm_on_reboot();
	return NOTIFY_OK;
}

static struct notifier_block rkvm_reboot_nb = {
	.notifier_call = rkvm_reboot_cb,
	.priority = 0,
};

int rkvm_reboot_notifier_register(void (*on_reboot)(void))
{
	rkvm_on_reboot = on_reboot;
	return register_reboot_notifier(&rkvm_reboot_nb);
}

void rkvm_reboot_notifier_unregister(void)
{
	unregister_reboot_notifier(&rkvm_reboot_nb);
}

static int (*rkvm_on_suspend)(void);
static void (*rkvm_on_resume)(void);
static void (*rkvm_on_shutdown)(void);

static int rkvm_syscore_suspend(void *data) { return rkvm_on_suspend(); }
static void rkvm_syscore_resume(void *data) { rkvm_on_resume(); }
static void rkvm_syscore_shutdown(void *data) { rkvm_on_shutdown(); }

static const struct syscore_ops rkvm_syscore_ops = {
	.suspend = rkvm_syscore_suspend,
	.resume = rkvm_syscore_resume,
	.shutdown = rkvm_syscore_shutdown,
};

static struct syscore rkvm_syscore = { .ops = &rkvm_syscore_ops };

void rkvm_syscore_register(int (*suspend)(void), void (*resume)(void), void (*shutdown)(void))
{
	rkvm_on_suspend = suspend;
	rkvm_on_resume = resume;
	rkvm_on_shutdown = shutdown;
	register_syscore(&rkvm_syscore);
}

void rkvm_syscore_unregister(void)
{
	unregister_syscore(&rkvm_syscore);
}

/* ---- Preempt notifiers -------------------------------------------------------------- */

struct rkvm_preempt_notifier {
	struct preempt_notifier pn;
	void *ctx;
};

static void (*rkvm_sched_in_cb)(void *ctx, int cpu);
static void (*rkvm_sched_out_cb)(void *ctx);

static void rkvm_sched_in(struct preempt_notifier *pn, int cpu)
{
	rkvm_sched_in_cb(container_of(pn, struct rkvm_preempt_notifier, pn)->ctx, cpu);
}

static void rkvm_sched_out(struct preempt_notifier *pn, struct task_struct *next)
{
	rkvm_sched_out_cb(container_of(pn, struct rkvm_preempt_notifier, pn)->ctx);
}

static struct preempt_ops rkvm_preempt_ops;

void rkvm_preempt_ops_init(void (*sched_in)(void *ctx, int cpu), void (*sched_out)(void *ctx))
{
	rkvm_sched_in_cb = sched_in;
	rkvm_sched_out_cb = sched_out;
	rkvm_preempt_ops.sched_in = rkvm_sched_in;
	rkvm_preempt_ops.sched_out = rkvm_sched_out;
	preempt_notifier_inc();
}

void rkvm_preempt_ops_exit(void)
{
	preempt_notifier_dec();
}

void *rkvm_preempt_notifier_alloc(void *ctx)
{
	struct rkvm_preempt_notifier *n = kzalloc(sizeof(*n), GFP_KERNEL_ACCOUNT);

	if (n) {
		preempt_notifier_init(&n->pn, &rkvm_preempt_ops);
		n->ctx = ctx;
	}
	return n;
}

void rkvm_preempt_notifier_free(void *notifier) { kfree(notifier); }

void rkvm_preempt_notifier_register(void *notifier)
{
	preempt_disable();
	preempt_notifier_register(&((struct rkvm_preempt_notifier *)notifier)->pn);
	preempt_enable();
}

void rkvm_preempt_notifier_unregister(void *notifier)
{
	preempt_disable();
	preempt_notifier_unregister(&((struct rkvm_preempt_notifier *)notifier)->pn);
	preempt_enable();
}

/* ---- User-return notifiers ---------------------------------------------------------- */

struct rkvm_urn {
	struct user_return_notifier urn;
	bool armed;
};

static struct rkvm_urn __percpu *rkvm_urns;
static void (*rkvm_on_user_return)(unsigned int cpu);

static void rkvm_user_return(struct user_return_notifier *urn)
{
	struct rkvm_urn *u = container_of(urn, struct rkvm_urn, urn);
	unsigned long flags;

	/* Disable IRQs so an IPI-driven disarm cannot race with this one. */
	local_irq_save(flags);
	if (u->armed) {
		u->armed = false;
		user_return_notifier_unregister(urn);
		rkvm_on_user_return(smp_processor_id());
	}
	local_irq_restore(flags);
}

int rkvm_user_return_init(void (*on_return)(unsigned int cpu))
{
	int cpu;

	rkvm_urns = alloc_percpu(struct rkvm_urn);
	if (!rkvm_urns)
		return -ENOMEM;
	for_each_possible_cpu(cpu)
		per_cpu_ptr(rkvm_urns, cpu)->urn.on_user_return = rkvm_user_return;
	rkvm_on_user_return = on_return;
	return 0;
}

static void rkvm_user_return_disarm(void *unused)
{
	struct rkvm_urn *u = this_cpu_ptr(rkvm_urns);

	/* Restores the host values now, as the notifier would have. */
	if (u->armed)
		rkvm_user_return(&u->urn);
}

void rkvm_user_return_exit(void)
{
	if (!rkvm_urns)
		return;
	on_each_cpu(rkvm_user_return_disarm, NULL, 1);
	free_percpu(rkvm_urns);
	rkvm_urns = NULL;
}

void rkvm_user_return_arm(void)
{
	struct rkvm_urn *u = this_cpu_ptr(rkvm_urns);

	if (!u->armed) {
		u->armed = true;
		user_return_notifier_register(&u->urn);
	}
}

/* ---- File descriptors --------------------------------------------------------------- */

int rkvm_anon_inode_getfd(const char *name, const void *fops, void *priv, int flags)
{
	return anon_inode_getfd(name, fops, priv, flags);
}

int rkvm_anon_inode_getfd_pread(const char *name, const void *fops, void *priv, int flags)
{
	struct file *file;
	int fd = get_unused_fd_flags(flags & O_CLOEXEC);

	if (fd < 0)
		return fd;
	file = anon_inode_getfile(name, fops, priv, flags);
	if (IS_ERR(file)) {
		put_unused_fd(fd);
		return PTR_ERR(file);
	}
	/* Files of anon inodes are not positional by default; pread() must work. */
	file->f_mode |= FMODE_PREAD;
	fd_install(fd, file);
	return fd;
}

/* ---- MMU notifiers ------------------------------------------------------------------ */

struct rkvm_mmu_notifier {
	struct mmu_notifier mn;
	void *ctx;
};

static void (*rkvm_mn_start_cb)(void *ctx, __u64 start, __u64 end);
static void (*rkvm_mn_end_cb)(void *ctx, __u64 start, __u64 end);
static void (*rkvm_mn_release_cb)(void *ctx);
static int (*rkvm_mn_age_cb)(void *ctx, __u64 start, __u64 end, int clear);

static void *mn_ctx(struct mmu_notifier *mn)
{
	return container_of(mn, struct rkvm_mmu_notifier, mn)->ctx;
}

static int rkvm_mn_invalidate_start(struct mmu_notifier *mn,
				    const struct mmu_notifier_range *range)
{
	/* The callback never sleeps, so it is fine for non-blockable ranges too. */
	rkvm_mn_start_cb(mn_ctx(mn), range->start, range->end);
	return 0;
}

static void rkvm_mn_invalidate_end(struct mmu_notifier *mn,
				   const struct mmu_notifier_range *range)
{
	rkvm_mn_end_cb(mn_ctx(mn), range->start, range->end);
}

static void rkvm_mn_release(struct mmu_notifier *mn, struct mm_struct *mm)
{
	rkvm_mn_release_cb(mn_ctx(mn));
}

/*
 * Page aging (reclaim, idle page tracking). Called under the host's page-table locks:
 * the callback does not sleep. Like KVM on x86, the flushing variant does not flush:
 * a translation left in a TLB only makes a used page look idle a little longer, and
 * before the page can be freed, invalidate_range_start() flushes.
 */
static bool rkvm_mn_clear_young(struct mmu_notifier *mn, struct mm_struct *mm,
				unsigned long start, unsigned long end)
{
	return rkvm_mn_age_cb(mn_ctx(mn), start, end, 1);
}

static bool rkvm_mn_test_young(struct mmu_notifier *mn, struct mm_struct *mm,
			       unsigned long address)
{
	return rkvm_mn_age_cb(mn_ctx(mn), address, address + PAGE_SIZE, 0);
}

static const struct mmu_notifier_ops rkvm_mn_ops = {
	.invalidate_range_start = rkvm_mn_invalidate_start,
	.invalidate_range_end = rkvm_mn_invalidate_end,
	.release = rkvm_mn_release,
	.clear_flush_young = rkvm_mn_clear_young,
	.clear_young = rkvm_mn_clear_young,
	.test_young = rkvm_mn_test_young,
};

void rkvm_mmu_notifier_ops_init(void (*start)(void *ctx, __u64 start, __u64 end),
				void (*end)(void *ctx, __u64 start, __u64 end),
				void (*release)(void *ctx),
				int (*age)(void *ctx, __u64 start, __u64 end, int clear))
{
	rkvm_mn_start_cb = start;
	rkvm_mn_end_cb = end;
	rkvm_mn_release_cb = release;
	rkvm_mn_age_cb = age;
}

void *rkvm_mmu_notifier_register(void *ctx, int *err)
{
	struct rkvm_mmu_notifier *n = kzalloc(sizeof(*n), GFP_KERNEL_ACCOUNT);
	int r;

	if (!n) {
		*err = -ENOMEM;
		return NULL;
	}
	n->ctx = ctx;
	n->mn.ops = &rkvm_mn_ops;
	r = mmu_notifier_register(&n->mn, current->mm);
	if (r) {
		kfree(n);
		*err = r;
		return NULL;
	}
	return n;
}

void rkvm_mmu_notifier_unregister(void *notifier)
{
	struct rkvm_mmu_notifier *n = notifier;

	/* Waits for running callbacks; the notifier holds its own reference on the mm. */
	mmu_notifier_unregister(&n->mn, n->mn.mm);
	kfree(n);
}

const void *rkvm_current_mm(void) { return current->mm; }

int rkvm_get_user_page(__u64 hva, int write, void **page)
{
	struct page *p;
	int r = get_user_pages_fast(hva, 1, write ? FOLL_WRITE : 0, &p);

	if (r == 1) {
		*page = p;
		return 0;
	}
	return r < 0 ? r : -EFAULT;
}

void rkvm_put_page(void *page) { put_page(page); }

void rkvm_get_page(void *page) { get_page(page); }

/* ---- Signals ------------------------------------------------------------------------ */

void rkvm_sigmask_activate(__u64 mask)
{
	sigset_t set;

	set.sig[0] = mask;
	sigdelsetmask(&set, sigmask(SIGKILL) | sigmask(SIGSTOP));
	sigprocmask(SIG_SETMASK, &set, &current->real_blocked);
}

void rkvm_sigmask_deactivate(void)
{
	sigprocmask(SIG_SETMASK, &current->real_blocked, NULL);
	sigemptyset(&current->real_blocked);
}

__u64 rkvm_rdtsc(void) { return rdtsc(); }

/* ---- Addresses ---------------------------------------------------------------------- */

__u64 rkvm_virt_to_phys(const void *addr) { return virt_to_phys((void *)addr); }
__u64 rkvm_page_to_phys(const void *page) { return page_to_phys((struct page *)page); }
void *rkvm_page_address(const void *page) { return page_address(page); }
void *rkvm_pfn_to_page(__u64 pfn) { return pfn_valid(pfn) ? pfn_to_page(pfn) : NULL; }
__u64 rkvm_page_to_pfn(const void *page) { return page_to_pfn((struct page *)page); }

/*
 * The first frame of the 2 MiB mapping (a PMD leaf) of hva in the current process, 0 when
 * a smaller page (or nothing) maps it, or when write is set and the mapping is not
 * writable. A lockless walk, as GUP-fast and KVM's host_pfn_mapping_level do: with
 * interrupts off no page table can be freed under it; a concurrent change is caught by
 * the caller's MMU-notifier sequence check before the result is used.
 */
__u64 rkvm_host_leaf_pfn(__u64 hva, int write, int level)
{
	struct mm_struct *mm = current->mm;
	unsigned long flags;
	__u64 pfn = 0;
	pgd_t pgd;
	p4d_t p4d;
	pud_t pud;
	pmd_t pmd;

	if (!mm || (level != 2 && level != 3))
		return 0;
	local_irq_save(flags);
	pgd = READ_ONCE(*pgd_offset(mm, hva));
	if (pgd_none(pgd))
		goto out;
	p4d = READ_ONCE(*p4d_offset(&pgd, hva));
	if (p4d_none(p4d) || !p4d_present(p4d))
		goto out;
	pud = READ_ONCE(*pud_offset(&p4d, hva));
	if (pud_none(pud) || !pud_present(pud))
		goto out;
	if (pud_leaf(pud)) {
		if (write && !pud_write(pud))
			goto out;
		pfn = pud_pfn(pud);
		/* Level 2 inside a 1 GiB page: the frame of the 2 MiB around hva. */
		if (level == 2)
			pfn += (hva & ~PUD_MASK & PMD_MASK) >> PAGE_SHIFT;
		goto out;
	}
	if (level == 3)
		goto out;
	pmd = READ_ONCE(*pmd_offset(&pud, hva));
	if (pmd_none(pmd) || !pmd_present(pmd) || !pmd_leaf(pmd))
		goto out;
	if (write && !pmd_write(pmd))
		goto out;
	pfn = pmd_pfn(pmd);
out:
	local_irq_restore(flags);
	return pfn;
}

/* ---- Halted vCPUs ------------------------------------------------------------------- */

struct rkvm_waitq {
	wait_queue_head_t head;
};

void *rkvm_waitq_alloc(void)
{
	struct rkvm_waitq *wq = kzalloc(sizeof(*wq), GFP_KERNEL_ACCOUNT);

	if (wq)
		init_waitqueue_head(&wq->head);
	return wq;
}

void rkvm_waitq_free(void *wq) { kfree(wq); }

void rkvm_waitq_wake(void *wq)
{
	struct rkvm_waitq *w = wq;

	wake_up_interruptible_all(&w->head);
}

int rkvm_waitq_wait(void *wq, int (*cond)(void *ctx), void *ctx, __u64 timeout_ns)
{
	struct rkvm_waitq *w = wq;
	long r;

	if (!timeout_ns) {
		r = wait_event_interruptible(w->head, cond(ctx));
		return r ? -EINTR : 0;
	}
	r = wait_event_interruptible_hrtimeout(w->head, cond(ctx), ns_to_ktime(timeout_ns));
	if (r == -ERESTARTSYS)
		return -EINTR;
	return r;
}

__u64 rkvm_ktime_get_ns(void) { return ktime_get_ns(); }
__u64 rkvm_ktime_get_boottime_ns(void) { return ktime_get_boottime_ns(); }

static void rkvm_kick_noop(void *arg) { }

void rkvm_kick_cpu_async(unsigned int cpu)
{
	/* Never the calling CPU: that one is not in a guest. */
	if (cpu != raw_smp_processor_id())
		smp_call_function_single(cpu, rkvm_kick_noop, NULL, 0);
}

/* ---- Host facts --------------------------------------------------------------------- */

unsigned int rkvm_tsc_khz(void) { return tsc_khz; }
int rkvm_tsc_unstable(void) { return check_tsc_unstable(); }
int rkvm_cpu_mitigations_off(void) { return cpu_mitigations_off(); }
int rkvm_signal_pending(void) { return signal_pending(current); }

int rkvm_xfer_to_guest_mode_handle_work(void)
{
#ifdef CONFIG_VIRT_XFER_TO_GUEST_WORK
	return xfer_to_guest_mode_handle_work();
#else
	if (signal_pending(current))
		return -EINTR;
	cond_resched();
	return 0;
#endif
}
int rkvm_need_resched(void) { return need_resched(); }
void rkvm_cond_resched(void) { cond_resched(); }

int rkvm_single_task_running(void)
{
	return single_task_running();
}

void *rkvm_current_pid_get(void)
{
	return get_task_pid(current, PIDTYPE_PID);
}

void rkvm_pid_put(void *pid)
{
	put_pid(pid);
}

int rkvm_pid_is_current(const void *pid)
{
	return pid == task_pid(current);
}

void *rkvm_pid_task_get(void *pid)
{
	return get_pid_task(pid, PIDTYPE_PID);
}

void rkvm_task_put(void *t)
{
	put_task_struct((struct task_struct *)t);
}

int rkvm_yield_to_task(void *t)
{
	struct task_struct *task = t;
	int ret = 0;

	if (task != current)
		ret = yield_to(task, true);
	put_task_struct(task);
	return ret;
}

int rkvm_current_runnable(void)
{
	return task_is_runnable(current);
}

__u64 rkvm_current_run_delay(void)
{
#ifdef CONFIG_SCHED_INFO
	return current->sched_info.run_delay;
#else
	return 0;
#endif
}

int rkvm_sched_info_on(void) { return sched_info_on(); }

/* ---- kvmclock ------------------------------------------------------------------------- */

void rkvm_clock_now(struct rkvm_clock_now *c)
{
	struct system_time_snapshot snap;

	ktime_get_snapshot_id(CLOCK_BOOTTIME, &snap);
	c->boot_ns = ktime_to_ns(snap.systime);
	/* REALTIME - BOOTTIME changes only when the clock is set. */
	c->real_ns = c->boot_ns + (ktime_get_real_ns() - ktime_get_boottime_ns());
	c->tsc_based = snap.valid &&
		       (snap.cs_id == CSID_X86_TSC || snap.cs_id == CSID_X86_TSC_EARLY);
	c->tsc = c->tsc_based ? snap.cycles : rdtsc_ordered();
}

unsigned int rkvm_pvclock_size(void) { return sizeof(struct pvclock_vcpu_time_info); }
unsigned int rkvm_pvclock_version_offset(void)
{
	return offsetof(struct pvclock_vcpu_time_info, version);
}

void rkvm_pvclock_fill(void *buf, const void *old, __u32 version, __u64 tsc_timestamp,
		       __u64 system_time, __u32 mul, __s8 shift, int stopped)
{
	const struct pvclock_vcpu_time_info *o = old;
	struct pvclock_vcpu_time_info *p = buf;
	__u8 flags = (o->flags & PVCLOCK_GUEST_STOPPED) | (stopped ? PVCLOCK_GUEST_STOPPED : 0);

	memset(p, 0, sizeof(*p));
	p->flags = flags;
	p->version = version;
	p->tsc_timestamp = tsc_timestamp;
	p->system_time = system_time;
	p->tsc_to_system_mul = mul;
	p->tsc_shift = shift;
}

unsigned int rkvm_wall_clock_size(void) { return sizeof(struct pvclock_wall_clock); }
unsigned int rkvm_wall_clock_version_offset(void)
{
	return offsetof(struct pvclock_wall_clock, version);
}

void rkvm_wall_clock_fill(void *buf, __u32 version, __u32 sec, __u32 nsec)
{
	struct pvclock_wall_clock *w = buf;

	memset(w, 0, sizeof(*w));
	w->version = version;
	w->sec = sec;
	w->nsec = nsec;
}
unsigned int rkvm_smp_processor_id(void) { return smp_processor_id(); }
int rkvm_pid_of_current(void) { return task_pid_nr(current); }

__u64 rkvm_host_tss_base(void)
{
	/* The address the CPU's TR points at: where VM exits must find the host TSS. */
	return (unsigned long)&get_cpu_entry_area(smp_processor_id())->tss.x86_tss;
}

unsigned long rkvm_local_irq_save(void)
{
	unsigned long flags;

	local_irq_save(flags);
	return flags;
}

void rkvm_local_irq_restore(unsigned long flags) { local_irq_restore(flags); }
void rkvm_preempt_disable(void) { preempt_disable(); }
void rkvm_preempt_enable(void) { preempt_enable(); }

int rkvm_capable_sys_boot(void)
{
	return capable(CAP_SYS_BOOT);
}

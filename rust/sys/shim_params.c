// SPDX-License-Identifier: GPL-2.0
/*
 * rkvm's module parameters: kvm's, kvm_intel's and kvm_amd's names, meaning and
 * permissions, read by the Rust side through include/rkvm_shim.h.
 */
#include <linux/cpu.h>
#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/spinlock.h>
#include <linux/sysfs.h>
#include <linux/workqueue.h>
#include <asm/cpufeature.h>

#include "rkvm_shim.h"

/* ---- Module parameters (kvm_intel's and kvm_amd's names and meaning) ---------------- */

static bool enable_ept = true;
module_param_named(ept, enable_ept, bool, 0444);
MODULE_PARM_DESC(ept, "Use extended page tables (EPT) for guest memory");

static bool enable_vpid = true;
module_param_named(vpid, enable_vpid, bool, 0444);
MODULE_PARM_DESC(vpid, "Tag guest TLB entries with a VPID per vCPU");

static bool enable_unrestricted_guest = true;
module_param_named(unrestricted_guest, enable_unrestricted_guest, bool, 0444);
MODULE_PARM_DESC(unrestricted_guest, "Run real mode and big real mode natively (needs EPT)");

static bool enable_pml = true;
module_param_named(pml, enable_pml, bool, 0444);
MODULE_PARM_DESC(pml, "Use the page-modification log for dirty logging");

/* kvm_amd's: nested paging, the only way rkvm maps guest memory on AMD. */
static bool enable_npt = true;
module_param_named(npt, enable_npt, bool, 0444);
MODULE_PARM_DESC(npt, "Use nested page tables (NPT) for guest memory");

static int l1d_flush = RKVM_L1D_FLUSH_AUTO;
static bool l1d_flush_effective_set;
static const char * const l1d_flush_names[] = {
	[RKVM_L1D_FLUSH_AUTO] = "auto",
	[RKVM_L1D_FLUSH_NEVER] = "never",
	[RKVM_L1D_FLUSH_COND] = "cond",
	[RKVM_L1D_FLUSH_ALWAYS] = "always",
};

static int l1d_flush_set(const char *val, const struct kernel_param *kp)
{
	int i;

	/* Only at load time: the choice is fixed once hardware_setup ran. */
	if (l1d_flush_effective_set)
		return -EPERM;
	for (i = 0; i < ARRAY_SIZE(l1d_flush_names); i++) {
		if (sysfs_streq(val, l1d_flush_names[i])) {
			l1d_flush = i;
			return 0;
		}
	}
	return -EINVAL;
}

static int l1d_flush_get(char *buf, const struct kernel_param *kp)
{
	/* After setup this shows what is in effect; "not required" on unaffected CPUs. */
	if (l1d_flush_effective_set && l1d_flush == RKVM_L1D_FLUSH_NEVER &&
	    !boot_cpu_has_bug(X86_BUG_L1TF))
		return sysfs_emit(buf, "not required\n");
	return sysfs_emit(buf, "%s\n", l1d_flush_names[l1d_flush]);
}

static const struct kernel_param_ops l1d_flush_ops = {
	.set = l1d_flush_set,
	.get = l1d_flush_get,
};
module_param_cb(vmentry_l1d_flush, &l1d_flush_ops, NULL, 0444);
MODULE_PARM_DESC(vmentry_l1d_flush, "L1D flush on VM entry: auto, never, cond, always");

/*
 * kvm's and kvm_intel's parameters that state fixed facts about rkvm: it has no
 * forced-emulation prefix, no virtual PMU, and never ignores an unknown MSR (the guest
 * gets #GP, as with kvm.ignore_msrs=N). They read as kvm's do; loading rkvm with any
 * other value is refused rather than silently not honoured.
 */
static int fixed_bool_set(const char *val, const struct kernel_param *kp)
{
	bool v;

	if (kstrtobool(val, &v) || v != *(bool *)kp->arg)
		return -EINVAL;
	return 0;
}

static int fixed_bool_get(char *buf, const struct kernel_param *kp)
{
	return sysfs_emit(buf, "%c\n", *(bool *)kp->arg ? 'Y' : 'N');
}

static const struct kernel_param_ops fixed_bool_ops = {
	.set = fixed_bool_set,
	.get = fixed_bool_get,
};

static int fixed_int_set(const char *val, const struct kernel_param *kp)
{
	int v;

	if (kstrtoint(val, 0, &v) || v != *(int *)kp->arg)
		return -EINVAL;
	return 0;
}

static int fixed_int_get(char *buf, const struct kernel_param *kp)
{
	return sysfs_emit(buf, "%d\n", *(int *)kp->arg);
}

static const struct kernel_param_ops fixed_int_ops = {
	.set = fixed_int_set,
	.get = fixed_int_get,
};

static int force_emulation_prefix;
module_param_cb(force_emulation_prefix, &fixed_int_ops, &force_emulation_prefix, 0444);
MODULE_PARM_DESC(force_emulation_prefix, "Always 0: rkvm has no forced-emulation prefix");

static bool enable_pmu;
module_param_cb(enable_pmu, &fixed_bool_ops, &enable_pmu, 0444);
MODULE_PARM_DESC(enable_pmu, "Always N: rkvm offers guests no PMU");

static bool enable_mediated_pmu;
module_param_cb(enable_mediated_pmu, &fixed_bool_ops, &enable_mediated_pmu, 0444);
MODULE_PARM_DESC(enable_mediated_pmu, "Always N: rkvm offers guests no PMU");

static bool ignore_msrs;
module_param_cb(ignore_msrs, &fixed_bool_ops, &ignore_msrs, 0444);
MODULE_PARM_DESC(ignore_msrs, "Always N: an unknown MSR access raises #GP in the guest");

/* kvm_amd's: rkvm does not virtualize the APIC in hardware. */
static bool enable_avic;
module_param_cb(avic, &fixed_bool_ops, &enable_avic, 0444);
MODULE_PARM_DESC(avic, "Always N: rkvm does not use AVIC");

/*
 * kvm's halt polling: how long a halted vCPU may spin waiting for its wake-up before it
 * sleeps (the per-vCPU window starts at 0, grows from halt_poll_ns_grow_start by
 * halt_poll_ns_grow after short halts, shrinks by halt_poll_ns_shrink after long ones, and
 * never passes halt_poll_ns). Writable at run time, as kvm's.
 */
static unsigned int halt_poll_ns = 200000;
module_param(halt_poll_ns, uint, 0644);
MODULE_PARM_DESC(halt_poll_ns, "Longest halt poll, in ns (0: never poll)");

static unsigned int halt_poll_ns_grow = 2;
module_param(halt_poll_ns_grow, uint, 0644);
MODULE_PARM_DESC(halt_poll_ns_grow, "Factor a vCPU's halt poll grows by (0: never grows)");

static unsigned int halt_poll_ns_grow_start = 10000;
module_param(halt_poll_ns_grow_start, uint, 0644);
MODULE_PARM_DESC(halt_poll_ns_grow_start, "First halt poll, in ns");

static unsigned int halt_poll_ns_shrink = 2;
module_param(halt_poll_ns_shrink, uint, 0644);
MODULE_PARM_DESC(halt_poll_ns_shrink, "Divisor a vCPU's halt poll shrinks by (0: to none)");

void rkvm_halt_poll_params(struct rkvm_halt_poll *out)
{
	out->ns = READ_ONCE(halt_poll_ns);
	out->grow = READ_ONCE(halt_poll_ns_grow);
	out->grow_start = READ_ONCE(halt_poll_ns_grow_start);
	out->shrink = READ_ONCE(halt_poll_ns_shrink);
}

void rkvm_params_get(struct rkvm_params *out)
{
	out->ept = enable_ept;
	out->vpid = enable_vpid;
	out->unrestricted_guest = enable_unrestricted_guest;
	out->pml = enable_pml;
	out->vmentry_l1d_flush = l1d_flush;
	out->npt = enable_npt;
}

void rkvm_params_set_effective(const struct rkvm_params *in)
{
	enable_ept = in->ept;
	enable_vpid = in->vpid;
	enable_unrestricted_guest = in->unrestricted_guest;
	enable_pml = in->pml;
	l1d_flush = in->vmentry_l1d_flush;
	enable_npt = in->npt;
	l1d_flush_effective_set = true;
}

/*
 * kvm's iTLB multihit mitigation (nx_huge_pages): no guest instruction runs from a huge
 * mapping. "auto" turns it on for CPUs with the erratum unless mitigations are off;
 * "force" and "off" (or a boolean) set it; "never" turns it off for good, only while no
 * VM exists. The value is resolved at load time; after a change every VM's
 * two-dimensional page table is dropped so that it refaults under the new rule, which
 * rkvm does from the recovery work below (bumping the generation it checks).
 *
 * nx_huge_pages_recovery_ratio and _period_ms: every period, 1/ratio of the huge pages a
 * VM split for instruction fetches are unmapped, so that data accesses may map them
 * whole again (period 0: an hour divided by the ratio; ratio 0: no recovery).
 */
static int nx_huge_pages = -1;
static bool nx_hard_disabled;
static unsigned int nx_recovery_ratio = 60;
static unsigned int nx_recovery_period_ms;
/* Generation << 1 | on, in one word: a fault reads both at once. Written only by the
 * parameter setters (serialized by the module parameter lock) and at start. */
static atomic_t nx_word = ATOMIC_INIT(0);
static DEFINE_SPINLOCK(nx_lock);
/* Under nx_lock: live VMs, and whether the recovery work may still be queued. */
static unsigned int nx_vms;
static bool nx_work_live;
static void (*nx_work_fn)(void);

static void nx_work_run(struct work_struct *work)
{
	void (*fn)(void) = READ_ONCE(nx_work_fn);

	if (fn)
		fn();
}

static DECLARE_DELAYED_WORK(nx_work, nx_work_run);

static bool nx_auto(void)
{
	return boot_cpu_has_bug(X86_BUG_ITLB_MULTIHIT) && !cpu_mitigations_off();
}

/* Queues the recovery work in `ms` (sooner if `now`: moves a later expiry forward). */
static void nx_queue(unsigned long ms, bool now)
{
	unsigned long flags;

	spin_lock_irqsave(&nx_lock, flags);
	if (nx_work_live) {
		if (now)
			mod_delayed_work(system_long_wq, &nx_work, 0);
		else
			queue_delayed_work(system_long_wq, &nx_work, msecs_to_jiffies(ms));
	}
	spin_unlock_irqrestore(&nx_lock, flags);
}

static int nx_huge_pages_get(char *buf, const struct kernel_param *kp)
{
	int v = READ_ONCE(nx_huge_pages);

	if (nx_hard_disabled)
		return sysfs_emit(buf, "never\n");
	if (v < 0)
		return sysfs_emit(buf, "auto\n");
	return sysfs_emit(buf, "%c\n", v ? 'Y' : 'N');
}

static int nx_huge_pages_set(const char *val, const struct kernel_param *kp)
{
	int old = READ_ONCE(nx_huge_pages);
	unsigned long flags;
	bool v;

	if (nx_hard_disabled)
		return -EPERM;
	if (sysfs_streq(val, "off")) {
		v = false;
	} else if (sysfs_streq(val, "force")) {
		v = true;
	} else if (sysfs_streq(val, "auto")) {
		v = nx_auto();
	} else if (sysfs_streq(val, "never")) {
		v = false;
		spin_lock_irqsave(&nx_lock, flags);
		if (nx_vms) {
			spin_unlock_irqrestore(&nx_lock, flags);
			return -EBUSY;
		}
		nx_hard_disabled = true;
		spin_unlock_irqrestore(&nx_lock, flags);
	} else if (kstrtobool(val, &v) < 0) {
		return -EINVAL;
	}
	WRITE_ONCE(nx_huge_pages, v);
	if (old != v) {
		atomic_set(&nx_word, ((atomic_read(&nx_word) >> 1) + 1) << 1 | v);
		nx_queue(0, true);
	}
	return 0;
}

static const struct kernel_param_ops nx_huge_pages_ops = {
	.set = nx_huge_pages_set,
	.get = nx_huge_pages_get,
};
module_param_cb(nx_huge_pages, &nx_huge_pages_ops, NULL, 0644);
MODULE_PARM_DESC(nx_huge_pages, "No guest instruction from a huge mapping: auto, force, off, never");

/* Whether recovery runs, and its period in ms. */
static bool nx_recovery(unsigned int *period_ms)
{
	unsigned int ratio = READ_ONCE(nx_recovery_ratio);

	if (READ_ONCE(nx_huge_pages) <= 0 || !ratio)
		return false;
	*period_ms = READ_ONCE(nx_recovery_period_ms);
	if (!*period_ms)
		*period_ms = 3600u * 1000 / min(ratio, 3600u);
	return true;
}

static int nx_recovery_set(const char *val, const struct kernel_param *kp)
{
	unsigned int before = 0, after = 0;
	bool was, is;
	int err;

	if (nx_hard_disabled)
		return -EPERM;
	was = nx_recovery(&before);
	err = param_set_uint(val, kp);
	if (err)
		return err;
	is = nx_recovery(&after);
	/* Recovery turned on, or a shorter period: the work runs now and re-arms. */
	if (is && (!was || after < before))
		nx_queue(0, true);
	return 0;
}

static const struct kernel_param_ops nx_recovery_ops = {
	.set = nx_recovery_set,
	.get = param_get_uint,
};
module_param_cb(nx_huge_pages_recovery_ratio, &nx_recovery_ops, &nx_recovery_ratio, 0644);
MODULE_PARM_DESC(nx_huge_pages_recovery_ratio, "Split huge pages recovered per period: 1/ratio (0: none)");
module_param_cb(nx_huge_pages_recovery_period_ms, &nx_recovery_ops, &nx_recovery_period_ms, 0644);
MODULE_PARM_DESC(nx_huge_pages_recovery_period_ms, "Recovery period in ms (0: an hour / ratio)");

void rkvm_nx_start(void (*fn)(void))
{
	unsigned long flags;

	if (READ_ONCE(nx_huge_pages) < 0)
		WRITE_ONCE(nx_huge_pages, nx_auto());
	atomic_set(&nx_word, (atomic_read(&nx_word) & ~1) | (READ_ONCE(nx_huge_pages) > 0));
	WRITE_ONCE(nx_work_fn, fn);
	spin_lock_irqsave(&nx_lock, flags);
	nx_work_live = true;
	spin_unlock_irqrestore(&nx_lock, flags);
}

void rkvm_nx_stop(void)
{
	unsigned long flags;

	spin_lock_irqsave(&nx_lock, flags);
	nx_work_live = false;
	spin_unlock_irqrestore(&nx_lock, flags);
	cancel_delayed_work_sync(&nx_work);
}

void rkvm_nx_params(struct rkvm_nx_params *out)
{
	out->gen = (unsigned int)atomic_read(&nx_word) >> 1;
	out->ratio = READ_ONCE(nx_recovery_ratio);
	out->recovery = nx_recovery(&out->period_ms);
}

__u64 rkvm_nx_state(void)
{
	return (unsigned int)atomic_read(&nx_word);
}

void rkvm_nx_recovery_kick(unsigned int ms)
{
	nx_queue(ms, false);
}

void rkvm_nx_vm_count(int delta)
{
	unsigned long flags;

	spin_lock_irqsave(&nx_lock, flags);
	nx_vms += delta;
	spin_unlock_irqrestore(&nx_lock, flags);
}

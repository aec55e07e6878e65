// SPDX-License-Identifier: GPL-2.0
/*
 * rkvm's C shim, the part the SVM backend needs: the VMCB layout as the kernel's own
 * struct vmcb defines it, so that no offset is copied by hand. See include/rkvm_shim.h.
 */
#include <linux/bitops.h>
#include <linux/gfp.h>
#include <linux/hrtimer.h>
#include <linux/percpu.h>
#include <linux/string.h>
#include <linux/stddef.h>
#include <asm/io.h>
#include <asm/page.h>
#include <asm/svm.h>

#include "rkvm_shim.h"

#define CTL(f) offsetof(struct vmcb, control.f)
#define SAVE(f) offsetof(struct vmcb, save.f)

void rkvm_vmcb_layout_get(struct rkvm_vmcb_layout *l)
{
	*l = (struct rkvm_vmcb_layout){
		.intercepts = CTL(intercepts),
		.iopm_base_pa = CTL(iopm_base_pa),
		.msrpm_base_pa = CTL(msrpm_base_pa),
		.tsc_offset = CTL(tsc_offset),
		.asid = CTL(asid),
		.tlb_ctl = CTL(tlb_ctl),
		.int_ctl = CTL(int_ctl),
		.int_vector = CTL(int_vector),
		.int_state = CTL(int_state),
		.exit_code = CTL(exit_code),
		.exit_info_1 = CTL(exit_info_1),
		.exit_info_2 = CTL(exit_info_2),
		.exit_int_info = CTL(exit_int_info),
		.exit_int_info_err = CTL(exit_int_info_err),
		.nested_ctl = CTL(misc_ctl),
		.event_inj = CTL(event_inj),
		.event_inj_err = CTL(event_inj_err),
		.nested_cr3 = CTL(nested_cr3),
		.clean = CTL(clean),
		.next_rip = CTL(next_rip),
		.insn_len = CTL(insn_len),
		.insn_bytes = CTL(insn_bytes),
		.es = SAVE(es), .cs = SAVE(cs), .ss = SAVE(ss), .ds = SAVE(ds),
		.fs = SAVE(fs), .gs = SAVE(gs), .gdtr = SAVE(gdtr), .ldtr = SAVE(ldtr),
		.idtr = SAVE(idtr), .tr = SAVE(tr),
		.seg_selector = offsetof(struct vmcb_seg, selector),
		.seg_attrib = offsetof(struct vmcb_seg, attrib),
		.seg_limit = offsetof(struct vmcb_seg, limit),
		.seg_base = offsetof(struct vmcb_seg, base),
		.cpl = SAVE(cpl),
		.efer = SAVE(efer),
		.cr4 = SAVE(cr4), .cr3 = SAVE(cr3), .cr0 = SAVE(cr0),
		.dr7 = SAVE(dr7), .dr6 = SAVE(dr6),
		.rflags = SAVE(rflags), .rip = SAVE(rip), .rsp = SAVE(rsp), .rax = SAVE(rax),
		.star = SAVE(star), .lstar = SAVE(lstar), .cstar = SAVE(cstar),
		.sfmask = SAVE(sfmask), .kernel_gs_base = SAVE(kernel_gs_base),
		.sysenter_cs = SAVE(sysenter_cs), .sysenter_esp = SAVE(sysenter_esp),
		.sysenter_eip = SAVE(sysenter_eip),
		.cr2 = SAVE(cr2),
		.g_pat = SAVE(g_pat),
		.dbgctl = SAVE(dbgctl),
	};
}

void *rkvm_contig_alloc(__u32 bytes, __u8 fill)
{
	void *p = alloc_pages_exact(bytes, GFP_KERNEL_ACCOUNT);

	if (p)
		memset(p, fill, bytes);
	return p;
}

void rkvm_contig_free(void *virt, __u32 bytes)
{
	free_pages_exact(virt, bytes);
}


/*
 * The deadline timer of the SVM window: SVM has no preemption timer, so a per-CPU
 * hrtimer, armed just before the guest runs, makes the host interrupt that ends the
 * guest's run when the in-kernel APIC timer expires. Its handler does nothing: the
 * interrupt alone exits the guest.
 */
static DEFINE_PER_CPU(struct hrtimer, rkvm_deadline_timer);

static enum hrtimer_restart rkvm_deadline_fired(struct hrtimer *t)
{
	return HRTIMER_NORESTART;
}

void rkvm_deadline_timers_init(void)
{
	int cpu;

	for_each_possible_cpu(cpu)
		hrtimer_setup(per_cpu_ptr(&rkvm_deadline_timer, cpu), rkvm_deadline_fired,
			      CLOCK_MONOTONIC, HRTIMER_MODE_ABS_PINNED_HARD);
}

void rkvm_deadline_timers_exit(void)
{
	int cpu;

	for_each_possible_cpu(cpu)
		hrtimer_cancel(per_cpu_ptr(&rkvm_deadline_timer, cpu));
}

void rkvm_deadline_timer_arm(__u64 monotonic_ns)
{
	hrtimer_start(this_cpu_ptr(&rkvm_deadline_timer), ns_to_ktime(monotonic_ns),
		      HRTIMER_MODE_ABS_PINNED_HARD);
}

void rkvm_deadline_timer_cancel(void)
{
	hrtimer_try_to_cancel(this_cpu_ptr(&rkvm_deadline_timer));
}

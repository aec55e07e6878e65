// SPDX-License-Identifier: GPL-2.0
/*
 * rkvm's C shim, the part the VMX window uses between VM entries and exits: host segment
 * state, kernel FPU use, host NMIs and machine checks that hit the guest, and the VERW
 * operand. See include/rkvm_shim.h; the rest of the shim is shim.c.
 */
#include <linux/sched.h>
#include <linux/smp.h>
#include <linux/string.h>
#include <asm/apic.h>
#include <asm/desc.h>
#include <asm/fpu/api.h>
#include <asm/gsseg.h>
#include <asm/mce.h>
#include <asm/msr.h>
#include <asm/segment.h>

#include "rkvm_shim.h"

/* ---- Host state around a VMX window ------------------------------------------------- */

void rkvm_host_segs_save(struct rkvm_host_segs *s)
{
	savesegment(ds, s->ds);
	savesegment(es, s->es);
	savesegment(fs, s->fs);
	savesegment(gs, s->gs);
	asm volatile("sldt %0" : "=g"(s->ldt));
	rdmsrq(MSR_FS_BASE, s->fs_base);
	rdmsrq(MSR_KERNEL_GS_BASE, s->kernel_gs_base);
}

void rkvm_host_segs_restore(const struct rkvm_host_segs *s)
{
	/* VM exit loaded null selectors where the host ones had RPL/TI bits; put them back. */
	if (s->ldt)
		asm volatile("lldt %0" : : "rm"(s->ldt));
	if (s->ds | s->es) {
		loadsegment(ds, s->ds);
		loadsegment(es, s->es);
	}
	if (s->fs & 7) {
		loadsegment(fs, s->fs);
		wrmsrq(MSR_FS_BASE, s->fs_base);
	}
	if (s->gs & 7)
		load_gs_index(s->gs);
	/* The guest's KERNEL_GS_BASE (or load_gs_index) replaced the user's GS base. */
	wrmsrq(MSR_KERNEL_GS_BASE, s->kernel_gs_base);
	/* VM exit set the GDT limit to 0xffff and the TSS limit to 0x67. */
	if (test_thread_flag(TIF_IO_BITMAP)) {
		/*
		 * The task's I/O bitmap lies beyond limit 0x67: reload TR from a writable GDT
		 * (LTR sets the busy bit), as force_reload_TR() does with KVM-only helpers.
		 */
		struct desc_struct *gdt = this_cpu_ptr(&gdt_page)->gdt;
		struct desc_ptr direct = {
			.address = (unsigned long)gdt,
			.size = GDT_SIZE - 1,
		};
		tss_desc tss;

		native_load_gdt(&direct);
		memcpy(&tss, &gdt[GDT_ENTRY_TSS], sizeof(tss_desc));
		tss.type = DESC_TSS;
		write_gdt_entry(gdt, GDT_ENTRY_TSS, &tss, DESC_TSS);
		asm volatile("ltr %w0" : : "q"(GDT_ENTRY_TSS * 8));
	}
	load_fixmap_gdt(raw_smp_processor_id());
}

void rkvm_fpu_begin(void) { kernel_fpu_begin(); }
void rkvm_fpu_end(void) { kernel_fpu_end(); }

void rkvm_self_nmi(void) { apic->send_IPI_self(NMI_VECTOR); }

void rkvm_machine_check(void)
{
#ifdef CONFIG_X86_MCE
	/*
	 * The #MC was taken by the guest (or during its entry); the handler only needs to
	 * know it did not hit the kernel: present it as a user-mode interruption with
	 * interrupts enabled, whatever privilege level the guest was at.
	 */
	struct pt_regs regs = {
		.cs = 3,
		.flags = X86_EFLAGS_IF,
	};

	do_machine_check(&regs);
#endif
}

const __u16 rkvm_verw_sel = __KERNEL_DS;

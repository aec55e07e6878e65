// SPDX-License-Identifier: GPL-2.0
/*
 * The stats move when their events happen (read through KVM_GET_STATS_FD): each step
 * runs a real-mode guest through one kind of event and checks the counters it must
 * move, by how much where KVM pins the number down:
 *   an OUT            exits, io_exits; host_state_reload and fpu_reload (the host's
 *                     state and FPU come back before userspace sees the exit)
 *   first touches     pf_taken, pf_fixed, the VM's pages_4k
 *   an MMIO write     mmio_exits, pf_emulate, insn_emulation
 *   HLT               halt_exits
 *   the hypercall     hypercalls
 *   KVM_INTERRUPT     irq_injections (per attempt), req_event; request_interrupt_window:
 *                     request_irq_exits, irq_window_exits (the guest had IF clear)
 *   KVM_NMI           nmi_injections
 *   a guest that spins while another thread wants its CPU: preemption_reported +
 *                     preemption_other (KVM counts a vCPU thread losing its CPU while
 *                     runnable, not its sleeps); irq_exits (the host's timer
 *                     interrupts the guest)
 *   the host discards a page the guest mapped: the VM's remote_tlb_flush_requests (KVM
 *                     counts remote_tlb_flush only when it had to interrupt a CPU running
 *                     a vCPU), then tlb_flush at the next entry
 *   KVM_NMI while the first NMI's handler runs: nmi_window_exits (the IRET that ends the
 *                     handler opens the window), nmi_injections, req_event
 *   FLDS from MMIO    insn_emulation_fail (no hypervisor emulates x87 loads)
 *   OUTSB from an address the guest's page tables do not map (a 64-bit guest): the
 *                     emulated string I/O raises #PF in the guest, pf_guest
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <sys/time.h>
#include "lib/rkvm_test.h"
#include "lib/stats.h"

#define CODE_GPA 0x1000
#define MMIO_GPA 0x20000

/* 16-bit code, one step per label; each ends with an OUT to 0xf1 telling the step. */
static const uint8_t guest_code[] = {
	/* 00: step 1, OUT */
	0xb0, 0x01, 0xe6, 0xf1,			/* mov al, 1 ; out 0xf1, al */
	/* 04: step 2, touch 4 pages at 0x3000..0x6000 */
	0xc6, 0x06, 0x00, 0x30, 0x11,		/* mov byte [0x3000], 0x11 */
	0xc6, 0x06, 0x00, 0x40, 0x11,		/* mov byte [0x4000], 0x11 */
	0xc6, 0x06, 0x00, 0x50, 0x11,		/* mov byte [0x5000], 0x11 */
	0xc6, 0x06, 0x00, 0x60, 0x11,		/* mov byte [0x6000], 0x11 */
	0xb0, 0x02, 0xe6, 0xf1,			/* mov al, 2 ; out 0xf1, al */
	/* 1c: step 3, an MMIO write at 0x20000 (ES = 0x2000) */
	0xb8, 0x00, 0x20, 0x8e, 0xc0,		/* mov ax, 0x2000 ; mov es, ax */
	0x26, 0xc6, 0x06, 0x00, 0x00, 0x5a,	/* mov byte es:[0], 0x5a */
	/* 27: step 4, HLT */
	0xf4,					/* hlt */
	/* 28: step 5, the hypercall (VMCALL, patched to VMMCALL on AMD) */
	0x66, 0xb8, 0x34, 0x12, 0x00, 0x00,	/* mov eax, 0x1234 */
	0x0f, 0x01, 0xc1,			/* vmcall */
	0xb0, 0x05, 0xe6, 0xf1,			/* mov al, 5 ; out 0xf1, al */
	/* 35: step 6, STI and wait for the interrupt */
	0xfb,					/* sti */
	0xeb, 0xfe,				/* 1: jmp 1b */
};

/* After the first NMI's handler was interrupted: IRET to 0:0x1807 (NMI blocking ends). */
#define CODE2_GPA 0x1800
static const uint8_t code2[] = {
	0x9c,					/* 1800: pushf */
	0x0e,					/* 1801: push cs */
	0x68, 0x07, 0x18,			/* 1802: push 0x1807 */
	0xcf,					/* 1805: iret */
	0x90,					/* 1806: nop */
	0xeb, 0xfe,				/* 1807: jmp $ */
};
/* The second NMI's handler: says so, then an MMIO load no one emulates (DS = 0xd000). */
#define NMI2_GPA 0x1810
static const uint8_t nmi2[] = {
	0xb0, 0x0b, 0xe6, 0xf1,			/* mov al, 11 ; out 0xf1, al */
	0xb8, 0x00, 0xd0, 0x8e, 0xd8,		/* mov ax, 0xd000 ; mov ds, ax */
	0xd9, 0x06, 0x00, 0x00,			/* flds [0] */
	0xeb, 0xfe,				/* jmp $ */
};

/* 64-bit: OUTSB from 4 GiB, which the library's page tables leave unmapped. */
GUEST_CODE(outs_guest, 64,
	"mov $0x100000000, %rsi\n"
	"mov $0xf2, %dx\n"
	"outsb\n"
	"hlt\n"
	"pf_h:\n"
	"mov %cr2, %rax\n"
	"shr $32, %rax\n"
	"out %al, $0xf3\n"
	"hlt\n");
extern const uint8_t pf_h[];

/* Step 12: pf_guest, in a VM of its own. */
static void pf_guest_step(void)
{
	struct guest g = guest_create();
	struct stats s;
	uint64_t before;
	int fd;

	guest_load(g.mem, GUEST_CODE_GPA, outs_guest);
	vcpu_set_long_mode(&g.v, g.mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
	idt_set_gate64(g.mem, 14, GUEST_ADDR(GUEST_CODE_GPA, outs_guest, pf_h));
	fd = ioctl(g.v.fd, KVM_GET_STATS_FD, 0);
	if (fd < 0 || !stats_load(fd, &s))
		BAIL("KVM_GET_STATS_FD");
	before = stats_value(fd, &s, "pf_guest");
	vcpu_run(&g.v);
	if (!is_out(&g.v, 0xf3, 1) || io_out_value(&g.v) != 1)
		BAIL("step 12: no #PF at 4 GiB (%s)", exit_str(&g.v));
	tap_ok(stats_value(fd, &s, "pf_guest") == before + 1,
	       "OUTSB from an unmapped address: #PF in the guest, pf_guest +%llu (want 1)",
	       (unsigned long long)(stats_value(fd, &s, "pf_guest") - before));
	close(fd);
	guest_destroy(&g);
}

#define HYPERCALL_AT 0x2e
#define SPIN_AT 0x36
#define IRQ_VECTOR 0x40
#define ISR_GPA 0x2000

struct ctx {
	int vm_stats, vcpu_stats;
	struct stats vs, cs;
};

static uint64_t cstat(struct ctx *c, const char *name)
{
	return stats_value(c->vcpu_stats, &c->cs, name);
}

static uint64_t vstat(struct ctx *c, const char *name)
{
	return stats_value(c->vm_stats, &c->vs, name);
}

static volatile int spin_stop;

static void *spinner(void *arg)
{
	while (!spin_stop)
		;
	return NULL;
}

static void on_alarm(int sig)
{
}

int main(void)
{
	struct ctx c = { 0 };
	uint64_t before[8];
	struct kvm_interrupt irq = { .irq = IRQ_VECTOR };
	struct vm vm;
	struct vcpu v;
	uint8_t *mem;
	int sys_fd;

	test_watchdog(120);
	sys_fd = kvm_open();
	REQUIRE_CAP(sys_fd, KVM_CAP_BINARY_STATS_FD);
	close(sys_fd);
	tap_plan(19);
	vm = vm_create();
	v = real_mode_vcpu(&vm, CODE_GPA, guest_code, sizeof(guest_code), &mem);
	if (!host_is_intel())
		mem[CODE_GPA + HYPERCALL_AT + 2] = 0xd9; /* vmmcall */
	/* IVT entry IRQ_VECTOR -> 0:ISR_GPA, where an OUT says the interrupt arrived. */
	mem[IRQ_VECTOR * 4] = ISR_GPA & 0xff;
	mem[IRQ_VECTOR * 4 + 1] = ISR_GPA >> 8;
	memcpy(mem + ISR_GPA, "\xb0\x06\xe6\xf1\xeb\xfe", 6); /* mov al, 6 ; out 0xf1, al ; jmp $ */
	c.vm_stats = ioctl(vm.fd, KVM_GET_STATS_FD, 0);
	c.vcpu_stats = ioctl(v.fd, KVM_GET_STATS_FD, 0);
	if (c.vm_stats < 0 || c.vcpu_stats < 0 || !stats_load(c.vm_stats, &c.vs) ||
	    !stats_load(c.vcpu_stats, &c.cs))
		BAIL("KVM_GET_STATS_FD");

	/* Step 1: one OUT. */
	before[0] = cstat(&c, "exits");
	before[1] = cstat(&c, "io_exits");
	before[2] = cstat(&c, "host_state_reload");
	before[3] = cstat(&c, "fpu_reload");
	vcpu_run(&v);
	if (!is_out(&v, 0xf1, 1) || io_out_value(&v) != 1)
		BAIL("step 1: %s", exit_str(&v));
	tap_ok(cstat(&c, "io_exits") == before[1] + 1 && cstat(&c, "exits") >= before[0] + 1,
	       "an OUT: io_exits +%llu (want 1), exits +%llu",
	       (unsigned long long)(cstat(&c, "io_exits") - before[1]),
	       (unsigned long long)(cstat(&c, "exits") - before[0]));
	tap_ok(cstat(&c, "host_state_reload") > before[2] && cstat(&c, "fpu_reload") > before[3],
	       "returning to userspace: host_state_reload +%llu, fpu_reload +%llu",
	       (unsigned long long)(cstat(&c, "host_state_reload") - before[2]),
	       (unsigned long long)(cstat(&c, "fpu_reload") - before[3]));

	/* Step 2: four pages touched for the first time. */
	before[0] = cstat(&c, "pf_taken");
	before[1] = cstat(&c, "pf_fixed");
	before[2] = vstat(&c, "pages_4k");
	vcpu_run(&v);
	if (!is_out(&v, 0xf1, 1) || io_out_value(&v) != 2)
		BAIL("step 2: %s", exit_str(&v));
	tap_ok(cstat(&c, "pf_fixed") >= before[1] + 4 && cstat(&c, "pf_taken") >= before[0] + 4,
	       "4 pages touched: pf_taken +%llu, pf_fixed +%llu (want 4 or more)",
	       (unsigned long long)(cstat(&c, "pf_taken") - before[0]),
	       (unsigned long long)(cstat(&c, "pf_fixed") - before[1]));
	tap_ok(vstat(&c, "pages_4k") >= before[2] + 4, "the VM's pages_4k %llu -> %llu",
	       (unsigned long long)before[2], (unsigned long long)vstat(&c, "pages_4k"));

	/* Step 3: an MMIO write. */
	before[0] = cstat(&c, "mmio_exits");
	before[1] = cstat(&c, "pf_emulate");
	before[2] = cstat(&c, "insn_emulation");
	vcpu_run(&v);
	if (v.run->exit_reason != KVM_EXIT_MMIO || v.run->mmio.phys_addr != MMIO_GPA)
		BAIL("step 3: %s", exit_str(&v));
	tap_ok(cstat(&c, "mmio_exits") == before[0] + 1 && cstat(&c, "pf_emulate") == before[1] + 1 &&
		       cstat(&c, "insn_emulation") >= before[2] + 1,
	       "an MMIO write: mmio_exits +%llu, pf_emulate +%llu (want 1 each), insn_emulation +%llu",
	       (unsigned long long)(cstat(&c, "mmio_exits") - before[0]),
	       (unsigned long long)(cstat(&c, "pf_emulate") - before[1]),
	       (unsigned long long)(cstat(&c, "insn_emulation") - before[2]));

	/* Step 4: HLT (no in-kernel APIC: it exits to userspace). */
	before[0] = cstat(&c, "halt_exits");
	vcpu_run(&v);
	if (v.run->exit_reason != KVM_EXIT_HLT)
		BAIL("step 4: %s", exit_str(&v));
	tap_ok(cstat(&c, "halt_exits") == before[0] + 1, "HLT: halt_exits +%llu (want 1)",
	       (unsigned long long)(cstat(&c, "halt_exits") - before[0]));

	/* Step 5: the hypercall. */
	before[0] = cstat(&c, "hypercalls");
	vcpu_run(&v);
	if (!is_out(&v, 0xf1, 1) || io_out_value(&v) != 5)
		BAIL("step 5: %s", exit_str(&v));
	tap_ok(cstat(&c, "hypercalls") == before[0] + 1, "the hypercall: hypercalls +%llu (want 1)",
	       (unsigned long long)(cstat(&c, "hypercalls") - before[0]));

	/* Step 6: the interrupt window, then KVM_INTERRUPT. */
	before[0] = cstat(&c, "request_irq_exits");
	before[1] = cstat(&c, "irq_injections");
	before[2] = cstat(&c, "irq_window_exits");
	before[3] = cstat(&c, "req_event");
	v.run->request_interrupt_window = 1;
	vcpu_run(&v);
	v.run->request_interrupt_window = 0;
	if (v.run->exit_reason != KVM_EXIT_IRQ_WINDOW_OPEN)
		BAIL("step 6: %s", exit_str(&v));
	tap_ok(cstat(&c, "request_irq_exits") == before[0] + 1 &&
		       cstat(&c, "irq_window_exits") >= before[2] + 1,
	       "the interrupt window opens: request_irq_exits +%llu (want 1), irq_window_exits +%llu",
	       (unsigned long long)(cstat(&c, "request_irq_exits") - before[0]),
	       (unsigned long long)(cstat(&c, "irq_window_exits") - before[2]));
	if (ioctl(v.fd, KVM_INTERRUPT, &irq))
		BAIL("KVM_INTERRUPT");
	vcpu_run(&v);
	if (!is_out(&v, 0xf1, 1) || io_out_value(&v) != 6)
		BAIL("step 6: the interrupt did not arrive (%s)", exit_str(&v));
	/* Counted per attempt: a delivery cut short by an exit (the IVT's or the stack's first
	 * touch) is injected again, on KVM as on rkvm. */
	tap_ok(cstat(&c, "irq_injections") > before[1] && cstat(&c, "req_event") > before[3],
	       "KVM_INTERRUPT: irq_injections +%llu, req_event +%llu",
	       (unsigned long long)(cstat(&c, "irq_injections") - before[1]),
	       (unsigned long long)(cstat(&c, "req_event") - before[3]));

	/* Step 7: the host takes back a page the guest has mapped (the MMU notifier). */
	before[0] = vstat(&c, "remote_tlb_flush_requests");
	if (madvise(mem + 0x3000, 4096, MADV_DONTNEED))
		BAIL("madvise");
	tap_ok(vstat(&c, "remote_tlb_flush_requests") > before[0],
	       "the host discards a mapped page: remote_tlb_flush_requests %llu -> %llu",
	       (unsigned long long)before[0],
	       (unsigned long long)vstat(&c, "remote_tlb_flush_requests"));
	before[2] = cstat(&c, "tlb_flush");

	/* Step 8: KVM_NMI; the IVT sends the NMI to the spin loop, where the guest stays. */
	before[0] = cstat(&c, "nmi_injections");
	mem[2 * 4] = (CODE_GPA + SPIN_AT) & 0xff;
	mem[2 * 4 + 1] = (CODE_GPA + SPIN_AT) >> 8;
	if (ioctl(v.fd, KVM_NMI))
		BAIL("KVM_NMI");
	{
		struct sigaction sa = { .sa_handler = on_alarm };
		cpu_set_t one;
		pthread_t t;
		struct itimerval it = { .it_value = { .tv_usec = 300000 } };

		sigaction(SIGALRM, &sa, NULL);
		/* Step 9: a competitor on the vCPU's CPU while the guest spins. */
		CPU_ZERO(&one);
		CPU_SET(0, &one);
		sched_setaffinity(0, sizeof(one), &one);
		before[1] = cstat(&c, "preemption_reported") + cstat(&c, "preemption_other");
		before[3] = cstat(&c, "irq_exits");
		if (pthread_create(&t, NULL, spinner, NULL))
			BAIL("pthread_create");
		setitimer(ITIMER_REAL, &it, NULL);
		if (ioctl(v.fd, KVM_RUN, 0) != -1 || errno != EINTR)
			BAIL("step 7: the spinning guest ended with %s", exit_str(&v));
		spin_stop = 1;
		pthread_join(t, NULL);
		test_watchdog(120);
	}
	tap_ok(cstat(&c, "tlb_flush") > before[2],
	       "the next entry after the host discarded a page flushed: tlb_flush +%llu",
	       (unsigned long long)(cstat(&c, "tlb_flush") - before[2]));
	tap_ok(cstat(&c, "nmi_injections") == before[0] + 1, "KVM_NMI: nmi_injections +%llu (want 1)",
	       (unsigned long long)(cstat(&c, "nmi_injections") - before[0]));
	tap_ok(cstat(&c, "signal_exits") >= 1, "the alarm ended KVM_RUN: signal_exits %llu",
	       (unsigned long long)cstat(&c, "signal_exits"));
	tap_ok(cstat(&c, "preemption_reported") + cstat(&c, "preemption_other") > before[1],
	       "spinning beside another thread on its CPU: preemption_reported %llu, preemption_other %llu",
	       (unsigned long long)cstat(&c, "preemption_reported"),
	       (unsigned long long)cstat(&c, "preemption_other"));
	tap_ok(cstat(&c, "irq_exits") > before[3],
	       "the host's interrupts stopped the spinning guest: irq_exits +%llu",
	       (unsigned long long)(cstat(&c, "irq_exits") - before[3]));

	/* Step 10: a second KVM_NMI while the first one's handler still runs. */
	{
		struct kvm_regs regs;

		memcpy(mem + CODE2_GPA, code2, sizeof(code2));
		memcpy(mem + NMI2_GPA, nmi2, sizeof(nmi2));
		mem[2 * 4] = NMI2_GPA & 0xff;
		mem[2 * 4 + 1] = NMI2_GPA >> 8;
		vcpu_get_regs(&v, &regs);
		regs.rip = CODE2_GPA;
		vcpu_set_regs(&v, &regs);
	}
	before[0] = cstat(&c, "nmi_window_exits");
	before[1] = cstat(&c, "nmi_injections");
	before[2] = cstat(&c, "req_event");
	if (ioctl(v.fd, KVM_NMI))
		BAIL("KVM_NMI");
	vcpu_run(&v);
	if (!is_out(&v, 0xf1, 1) || io_out_value(&v) != 11)
		BAIL("step 10: the second NMI did not arrive (%s)", exit_str(&v));
	tap_ok(cstat(&c, "nmi_window_exits") >= before[0] + 1 &&
		       cstat(&c, "nmi_injections") == before[1] + 1,
	       "an NMI held back until the handler's IRET: nmi_window_exits +%llu, nmi_injections +%llu (want 1)",
	       (unsigned long long)(cstat(&c, "nmi_window_exits") - before[0]),
	       (unsigned long long)(cstat(&c, "nmi_injections") - before[1]));
	tap_ok(cstat(&c, "req_event") > before[2], "KVM_NMI: req_event +%llu",
	       (unsigned long long)(cstat(&c, "req_event") - before[2]));

	/* Step 11: an MMIO load by an instruction the hypervisor cannot emulate. */
	before[0] = cstat(&c, "insn_emulation_fail");
	vcpu_run(&v);
	if (v.run->exit_reason != KVM_EXIT_INTERNAL_ERROR ||
	    v.run->internal.suberror != KVM_INTERNAL_ERROR_EMULATION)
		BAIL("step 11: %s", exit_str(&v));
	tap_ok(cstat(&c, "insn_emulation_fail") == before[0] + 1,
	       "FLDS from MMIO: insn_emulation_fail +%llu (want 1)",
	       (unsigned long long)(cstat(&c, "insn_emulation_fail") - before[0]));

	pf_guest_step();
	tap_done();
}

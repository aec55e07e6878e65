// SPDX-License-Identifier: GPL-2.0
/*
 * Interrupt injection by a userspace irqchip: KVM_INTERRUPT, request_interrupt_window /
 * ready_for_interrupt_injection / if_flag / KVM_EXIT_IRQ_WINDOW_OPEN, and KVM_NMI
 * (arch/x86/kvm/x86.c kvm_vcpu_ioctl_interrupt, vcpu_run, post_kvm_run_save).
 *
 * Protected mode, IDT built by the test; each handler OUTs its vector, the interrupted EIP
 * and EFLAGS from its stack frame, then IRETs:
 *  - with IF clear, an exit reports if_flag 0 and ready_for_interrupt_injection 0; with
 *    request_interrupt_window set the guest runs on until STI and the instruction in its
 *    shadow, then KVM_EXIT_IRQ_WINDOW_OPEN (ready 1, if_flag 1, RIP right after the
 *    shadow); KVM_INTERRUPT then delivers the vector at that RIP;
 *  - at an exit with IF set, KVM_INTERRUPT is delivered before the next instruction;
 *  - request_interrupt_window with the window already open: KVM_EXIT_IRQ_WINDOW_OPEN
 *    without running an instruction;
 *  - without an in-kernel irqchip KVM_INTERRUPT does not refuse a second vector (api.rst
 *    lists EEXIST, which kvm_vcpu_ioctl_interrupt returns only with a split irqchip): the
 *    later one replaces the earlier and only it is delivered;
 *  - KVM_NMI reaches the vector 2 handler with IF clear;
 *  - KVM_INTERRUPT of vector 256 -> EINVAL.
 * Real mode: KVM_INTERRUPT goes through the IVT; the handler sees IP, CS and FLAGS.
 */
#include "lib/rkvm_test.h"

#define P_M1 0xa0
#define P_M2 0xa1
#define P_VEC 0xa2
#define P_EIP 0xa3
#define P_EFL 0xa4
#define P_M3 0xa5
#define P_M4 0xa6
#define P_M5 0xa7

#define HANDLER(v)                                                                          \
	"irq_h" #v ":\n"                                                                      \
	"push %eax\n"                                                                         \
	"mov $" #v ", %eax\n"                                                                 \
	"out %eax, $" XSTR(P_VEC) "\n"                                                        \
	"mov 4(%esp), %eax\n"                                                                 \
	"out %eax, $" XSTR(P_EIP) "\n"                                                        \
	"mov 12(%esp), %eax\n"                                                                \
	"out %eax, $" XSTR(P_EFL) "\n"                                                        \
	"pop %eax\n"                                                                          \
	"iret\n"

GUEST_CODE(irq_guest, 32,
	"out %al, $" XSTR(P_M1) "\n"
	"mov $100, %ecx\n"
	"1: loop 1b\n"
	"sti\n"
	"nop\n"
	"irq_window:\n"
	"nop\n"
	"out %al, $" XSTR(P_M2) "\n"
	"irq_after_m2:\n"
	"out %al, $" XSTR(P_M3) "\n"
	"irq_after_m3:\n"
	"out %al, $" XSTR(P_M4) "\n"
	"cli\n"
	"out %al, $" XSTR(P_M5) "\n"
	"irq_after_m5:\n"
	"hlt\n"
	HANDLER(2) HANDLER(0x30) HANDLER(0x31) HANDLER(0x32) HANDLER(0x33));
extern const uint8_t irq_window[], irq_after_m2[], irq_after_m3[], irq_after_m5[], irq_h2[],
	irq_h0x30[], irq_h0x31[], irq_h0x32[], irq_h0x33[];

#define ADDR(label) GUEST_ADDR(GUEST_CODE_GPA, irq_guest, label)

/* Real mode, loaded at RM_GPA with CS 0. */
#define RM_GPA 0x1000
GUEST_CODE(rm_guest, 16,
	"sti\n"
	"nop\n"
	"out %al, $0xb0\n"
	"rm_after:\n"
	"hlt\n"
	"rm_handler:\n"
	"push %ax\n"
	"push %bp\n"
	"mov %sp, %bp\n"
	"mov $0x40, %ax\n"
	"out %ax, $0xb1\n"
	"mov 4(%bp), %ax\n"
	"out %ax, $0xb2\n"
	"mov 6(%bp), %ax\n"
	"out %ax, $0xb3\n"
	"mov 8(%bp), %ax\n"
	"out %ax, $0xb4\n"
	"pop %bp\n"
	"pop %ax\n"
	"iret\n");
extern const uint8_t rm_after[], rm_handler[];

/*
 * The RF bit of the EFLAGS image an interrupt pushes depends on the CPU (Bochs sets it for
 * an interrupt injected after an interrupt-window exit, QEMU does not): not compared.
 */
#define X86_EFLAGS_RF 0x10000u

static struct guest g;

static uint64_t rip(void)
{
	struct kvm_regs r;

	vcpu_get_regs(&g.v, &r);
	return r.rip;
}

static void interrupt(uint32_t vec)
{
	struct kvm_interrupt irq = { .irq = vec };

	if (ioctl(g.v.fd, KVM_INTERRUPT, &irq))
		BAIL("KVM_INTERRUPT %#x", vec);
}

/* One check: the next exits are the handler of VEC reporting EIP and EFLAGS. */
static void expect_handler(uint32_t vec, uint64_t eip, uint32_t eflags, const char *what)
{
	uint32_t got[3] = { 0, 0, 0 };
	const int port[3] = { P_VEC, P_EIP, P_EFL };
	int i, ok = 1;

	for (i = 0; i < 3 && ok; i++) {
		vcpu_run(&g.v);
		ok = is_out(&g.v, port[i], 4);
		got[i] = io_out_value(&g.v);
	}
	tap_ok(ok && got[0] == vec && got[1] == eip && (got[2] & ~X86_EFLAGS_RF) == eflags,
	       "%s: handler of vector %#x runs (got %#x), interrupted EIP %#x (want %#llx), EFLAGS "
	       "%#x (want %#x, RF aside)%s%s", what, vec, got[0], got[1], (unsigned long long)eip, got[2],
	       eflags, ok ? "" : "; exit ", ok ? "" : exit_str(&g.v));
}

/* One check: the next exit is an OUT to PORT, with the given if_flag and ready bits. */
static void expect_marker(int port, int if_flag, int ready, const char *what)
{
	vcpu_run(&g.v);
	tap_ok(is_out(&g.v, port, 1) && g.v.run->if_flag == if_flag &&
		       g.v.run->ready_for_interrupt_injection == ready,
	       "%s: OUT to %#x with if_flag %u (want %d), ready_for_interrupt_injection %u "
	       "(want %d) (got %s)", what, port, g.v.run->if_flag, if_flag,
	       g.v.run->ready_for_interrupt_injection, ready, exit_str(&g.v));
}

static void protected_mode(void)
{
	struct kvm_interrupt irq = { .irq = 256 };
	int v;

	g = guest_create();
	guest_load(g.mem, GUEST_CODE_GPA, irq_guest);
	vcpu_set_protected_mode(&g.v, g.mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
	idt_set_gate32(g.mem, 2, ADDR(irq_h2));
	idt_set_gate32(g.mem, 0x30, ADDR(irq_h0x30));
	idt_set_gate32(g.mem, 0x31, ADDR(irq_h0x31));
	idt_set_gate32(g.mem, 0x32, ADDR(irq_h0x32));
	idt_set_gate32(g.mem, 0x33, ADDR(irq_h0x33));

	expect_marker(P_M1, 0, 0, "IF clear");
	g.v.run->request_interrupt_window = 1;
	vcpu_run(&g.v);
	tap_ok(g.v.run->exit_reason == KVM_EXIT_IRQ_WINDOW_OPEN &&
		       g.v.run->ready_for_interrupt_injection == 1 && g.v.run->if_flag == 1,
	       "request_interrupt_window: KVM_EXIT_IRQ_WINDOW_OPEN after STI, ready 1, if_flag 1 "
	       "(got %s, ready %u, if_flag %u)", exit_str(&g.v),
	       g.v.run->ready_for_interrupt_injection, g.v.run->if_flag);
	tap_ok(rip() == ADDR(irq_window), "the window opens after the instruction in STI's shadow: "
	       "RIP %#llx (want %#llx)", (unsigned long long)rip(),
	       (unsigned long long)ADDR(irq_window));
	g.v.run->request_interrupt_window = 0;
	CHECK_RET(g.v.fd, KVM_INTERRUPT, &(struct kvm_interrupt){ .irq = 0x30 }, 0,
		  "KVM_INTERRUPT(0x30) at the window");
	expect_handler(0x30, ADDR(irq_window), 0x202, "KVM_RUN after KVM_INTERRUPT(0x30)");

	expect_marker(P_M2, 1, 1, "IF set");
	interrupt(0x31);
	expect_handler(0x31, ADDR(irq_after_m2), 0x202, "KVM_INTERRUPT(0x31) at an OUT exit");

	expect_marker(P_M3, 1, 1, "IF set");
	g.v.run->request_interrupt_window = 1;
	vcpu_run(&g.v);
	tap_ok(g.v.run->exit_reason == KVM_EXIT_IRQ_WINDOW_OPEN && rip() == ADDR(irq_after_m3),
	       "request_interrupt_window with the window open: KVM_EXIT_IRQ_WINDOW_OPEN at once "
	       "(got %s, RIP %#llx, want %#llx)", exit_str(&g.v), (unsigned long long)rip(),
	       (unsigned long long)ADDR(irq_after_m3));
	g.v.run->request_interrupt_window = 0;

	CHECK_RET(g.v.fd, KVM_INTERRUPT, &(struct kvm_interrupt){ .irq = 0x32 }, 0,
		  "KVM_INTERRUPT(0x32)");
	CHECK_RET(g.v.fd, KVM_INTERRUPT, &(struct kvm_interrupt){ .irq = 0x33 }, 0,
		  "KVM_INTERRUPT(0x33) with 0x32 queued: no in-kernel irqchip, no EEXIST");
	expect_handler(0x33, ADDR(irq_after_m3), 0x202, "the second vector replaced the first");

	expect_marker(P_M4, 1, 1, "IF set");
	expect_marker(P_M5, 0, 0, "after CLI");
	CHECK_RET(g.v.fd, KVM_NMI, 0, 0, "KVM_NMI");
	expect_handler(2, ADDR(irq_after_m5), 0x2, "NMI with IF clear");
	vcpu_run(&g.v);
	v = g.v.run->exit_reason == KVM_EXIT_HLT;
	tap_ok(v, "then the guest halts (got %s)", exit_str(&g.v));
	CHECK_ERRNO(g.v.fd, KVM_INTERRUPT, &irq, EINVAL, "KVM_INTERRUPT(256)");
	guest_destroy(&g);
}

static void real_mode(void)
{
	uint16_t *ivt;
	uint16_t got[4] = { 0, 0, 0, 0 };
	const int port[4] = { 0xb1, 0xb2, 0xb3, 0xb4 };
	int i, ok = 1;

	g = guest_create();
	guest_load(g.mem, RM_GPA, rm_guest);
	ivt = (uint16_t *)g.mem;
	ivt[0x40 * 2] = GUEST_ADDR(RM_GPA, rm_guest, rm_handler);
	ivt[0x40 * 2 + 1] = 0;
	vcpu_set_real_mode(&g.v, RM_GPA);
	{
		struct kvm_regs r;

		vcpu_get_regs(&g.v, &r);
		r.rsp = 0x8000;
		vcpu_set_regs(&g.v, &r);
	}
	expect_marker(0xb0, 1, 1, "real mode, IF set");
	interrupt(0x40);
	for (i = 0; i < 4 && ok; i++) {
		vcpu_run(&g.v);
		ok = is_out(&g.v, port[i], 2);
		got[i] = io_out_value(&g.v);
	}
	tap_ok(ok && got[0] == 0x40 && got[1] == GUEST_ADDR(RM_GPA, rm_guest, rm_after) &&
		       got[2] == 0 && got[3] == 0x202,
	       "real mode: KVM_INTERRUPT(0x40) runs the IVT handler, which finds IP %#x (want "
	       "%#llx), CS %#x, FLAGS %#x (want 0x202) on its stack", got[1],
	       (unsigned long long)GUEST_ADDR(RM_GPA, rm_guest, rm_after), got[2], got[3]);
	vcpu_run(&g.v);
	tap_ok(g.v.run->exit_reason == KVM_EXIT_HLT && rip() == GUEST_ADDR(RM_GPA, rm_guest, rm_handler),
	       "real mode: after IRET the guest halts (got %s)", exit_str(&g.v));
	guest_destroy(&g);
}

int main(void)
{
	test_watchdog(60);
	tap_plan(18 + 3);
	protected_mode();
	real_mode();
	tap_done();
}

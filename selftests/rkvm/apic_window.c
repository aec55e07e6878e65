// SPDX-License-Identifier: GPL-2.0
/*
 * The local APIC's timer and EOI at full speed (split irqchip, xAPIC page), what rkvm's
 * VMX window finishes without going back to its vCPU loop, against KVM:
 *  - 300 one-shot timer periods of 1 us, each waited for in STI; HLT, each interrupt
 *    counted by its handler and EOI'd: all 300 taken, nothing left in ISR or IRR, TMICT
 *    reads back what the guest wrote last, halt_exits at least 300;
 *  - 20 periods of 50 us (the halt then really waits): all taken;
 *  - a self-IPI of a lower class sent from the timer handler waits for the handler's EOI
 *    and IRET, and is taken right at the IRET, before the guest goes on;
 *  - an EOI with nothing in service changes nothing;
 *  - in x2APIC mode, 100 TSC-deadline periods of 1000 cycles and 100 one-shot periods
 *    started through the TMICT MSR, each EOI'd through the EOI MSR: all taken.
 */
#include "lib/rkvm_test.h"
#include "lib/stats.h"

#define APIC "0xfee00"
#define COUNT 0x8000 /* timer interrupts taken */
#define LOWCOUNT 0x8004 /* vector 0x30 taken */
#define ORDER 0x8008 /* LOWCOUNT as the timer handler saw it after its EOI */
#define COUNT2 0x800c /* x2APIC timer interrupts taken */
#define FAST 300
#define SLOW 20
#define X2N 100

GUEST_CODE(win_guest, 32,
	"movl $0x1ff, " APIC "0f0\n"
	"movl $0xb, " APIC "3e0\n" /* divide by 1 */
	"movl $0x40, " APIC "320\n" /* one-shot, vector 0x40 */
	/* Step 1: 1 us periods. */
	"mov $" XSTR(FAST) ", %esi\n"
	"1: movl $1000, " APIC "380\n"
	"sti\n"
	"hlt\n"
	"cli\n"
	"dec %esi\n"
	"jnz 1b\n"
	"out %al, $0x10\n"
	/* Step 2: 50 us periods. */
	"mov $" XSTR(SLOW) ", %esi\n"
	"2: movl $50000, " APIC "380\n"
	"sti\n"
	"hlt\n"
	"cli\n"
	"dec %esi\n"
	"jnz 2b\n"
	"out %al, $0x11\n"
	/* Step 3: the handler sends itself vector 0x30 first. */
	"movl $1, " XSTR(ORDER) "\n"
	"movl $1000, " APIC "380\n"
	"sti\n"
	"hlt\n"
	"cli\n"
	"out %al, $0x12\n"
	/* Step 4: an EOI with nothing in service. */
	"movl $0, " APIC "0b0\n"
	"out %al, $0x13\n"
	/* Step 5: x2APIC, the TSC-deadline timer (vector 0x41) 1000 cycles ahead. */
	"mov $0x1b, %ecx\n"
	"rdmsr\n"
	"or $0x400, %eax\n"
	"wrmsr\n"
	"mov $0x832, %ecx\n"
	"mov $0x40041, %eax\n"
	"xor %edx, %edx\n"
	"wrmsr\n"
	"mov $" XSTR(X2N) ", %esi\n"
	"4: rdtsc\n"
	"add $1000, %eax\n"
	"adc $0, %edx\n"
	"mov $0x6e0, %ecx\n"
	"wrmsr\n"
	"sti\n"
	"hlt\n"
	"cli\n"
	"dec %esi\n"
	"jnz 4b\n"
	"out %al, $0x14\n"
	/* Step 6: one-shot through TMICT's MSR, 1 us. */
	"mov $0x832, %ecx\n"
	"mov $0x41, %eax\n"
	"xor %edx, %edx\n"
	"wrmsr\n"
	"mov $" XSTR(X2N) ", %esi\n"
	"5: mov $0x838, %ecx\n"
	"mov $1000, %eax\n"
	"xor %edx, %edx\n"
	"wrmsr\n"
	"sti\n"
	"hlt\n"
	"cli\n"
	"dec %esi\n"
	"jnz 5b\n"
	"out %al, $0x15\n"
	"hlt\n"
	"x2_h:\n"
	"push %eax\n"
	"push %ecx\n"
	"push %edx\n"
	"incl " XSTR(COUNT2) "\n"
	"mov $0x80b, %ecx\n"
	"xor %eax, %eax\n"
	"xor %edx, %edx\n"
	"wrmsr\n"
	"pop %edx\n"
	"pop %ecx\n"
	"pop %eax\n"
	"iret\n"
	"timer_h:\n"
	"incl " XSTR(COUNT) "\n"
	"cmpl $1, " XSTR(ORDER) "\n"
	"jne 3f\n"
	/* Fixed self-IPI, vector 0x30: below the timer's class, so it waits for the EOI. */
	"movl $0x44030, " APIC "300\n"
	"movl $0, " APIC "0b0\n"
	/* With IF clear in this handler the IPI cannot come before its IRET: LOWCOUNT is
	 * still 0 here; step 3's OUT (after CLI) shows whether it came right at the IRET. */
	"push %eax\n"
	"mov " XSTR(LOWCOUNT) ", %eax\n"
	"add $2, %eax\n"
	"mov %eax, " XSTR(ORDER) "\n"
	"pop %eax\n"
	"iret\n"
	"3: movl $0, " APIC "0b0\n"
	"iret\n"
	"low_h:\n"
	"incl " XSTR(LOWCOUNT) "\n"
	"movl $0, " APIC "0b0\n"
	"iret\n");
extern const uint8_t timer_h[], low_h[], x2_h[];

static uint32_t word(struct kvm_lapic_state *st, int off)
{
	uint32_t v;

	memcpy(&v, st->regs + off, 4);
	return v;
}

static int bits(struct kvm_lapic_state *st, int base)
{
	int i, n = 0;

	for (i = 0; i < 8; i++)
		n += __builtin_popcount(word(st, base + i * 0x10));
	return n;
}

int main(void)
{
	struct guest g = guest_create_split();
	struct kvm_lapic_state st;
	struct stats vs;
	int vstats;
	uint32_t *count, *low, *order, *count2;

	test_watchdog(120);
	tap_plan(8);
	guest_load(g.mem, GUEST_CODE_GPA, win_guest);
	vcpu_set_protected_mode(&g.v, g.mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
	idt_set_gate32(g.mem, 0x40, GUEST_ADDR(GUEST_CODE_GPA, win_guest, timer_h));
	idt_set_gate32(g.mem, 0x30, GUEST_ADDR(GUEST_CODE_GPA, win_guest, low_h));
	idt_set_gate32(g.mem, 0x41, GUEST_ADDR(GUEST_CODE_GPA, win_guest, x2_h));
	count = (uint32_t *)(g.mem + COUNT);
	low = (uint32_t *)(g.mem + LOWCOUNT);
	order = (uint32_t *)(g.mem + ORDER);
	count2 = (uint32_t *)(g.mem + COUNT2);
	vstats = ioctl(g.v.fd, KVM_GET_STATS_FD, 0);
	if (vstats < 0 || !stats_load(vstats, &vs))
		BAIL("KVM_GET_STATS_FD");

	vcpu_run(&g.v);
	if (!is_out(&g.v, 0x10, 1))
		BAIL("step 1: %s", exit_str(&g.v));
	if (ioctl(g.v.fd, KVM_GET_LAPIC, &st))
		BAIL("KVM_GET_LAPIC");
	tap_ok(*count == FAST, "%d periods of 1 us: %u timer interrupts taken", FAST, *count);
	tap_ok(bits(&st, 0x100) == 0 && bits(&st, 0x200) == 0 && word(&st, 0x380) == 1000,
	       "after them: %d in service, %d requested (want 0, 0), TMICT %u (want 1000)",
	       bits(&st, 0x100), bits(&st, 0x200), word(&st, 0x380));
	tap_ok(stats_value(vstats, &vs, "halt_exits") >= FAST,
	       "halt_exits %llu (want at least %d)",
	       (unsigned long long)stats_value(vstats, &vs, "halt_exits"), FAST);

	vcpu_run(&g.v);
	if (!is_out(&g.v, 0x11, 1))
		BAIL("step 2: %s", exit_str(&g.v));
	tap_ok(*count == FAST + SLOW, "%d periods of 50 us: %u timer interrupts in all (want %d)",
	       SLOW, *count, FAST + SLOW);

	vcpu_run(&g.v);
	if (!is_out(&g.v, 0x12, 1))
		BAIL("step 3: %s", exit_str(&g.v));
	/* ORDER = LOWCOUNT + 2 as the handler saw it after its EOI. */
	tap_ok(*low == 1 && *order == 2,
	       "a self-IPI held back by the timer handler: taken once (%u) between the "
	       "handler's IRET and the CLI after HLT, not before (the handler saw %u)", *low,
	       *order - 2);

	vcpu_run(&g.v);
	if (!is_out(&g.v, 0x13, 1))
		BAIL("step 4: %s", exit_str(&g.v));
	if (ioctl(g.v.fd, KVM_GET_LAPIC, &st))
		BAIL("KVM_GET_LAPIC");
	tap_ok(bits(&st, 0x100) == 0 && bits(&st, 0x200) == 0 && *count == FAST + SLOW + 1,
	       "an EOI with nothing in service: %d in service, %d requested, %u timer "
	       "interrupts", bits(&st, 0x100), bits(&st, 0x200), *count);

	vcpu_run(&g.v);
	if (!is_out(&g.v, 0x14, 1))
		BAIL("step 5: %s", exit_str(&g.v));
	tap_ok(*count2 == X2N, "x2APIC, %d TSC-deadline periods of 1000 cycles: %u taken",
	       X2N, *count2);
	vcpu_run(&g.v);
	if (!is_out(&g.v, 0x15, 1))
		BAIL("step 6: %s", exit_str(&g.v));
	if (ioctl(g.v.fd, KVM_GET_LAPIC, &st))
		BAIL("KVM_GET_LAPIC");
	tap_ok(*count2 == 2 * X2N && bits(&st, 0x100) == 0 && bits(&st, 0x200) == 0 &&
	       word(&st, 0x380) == 1000,
	       "x2APIC, %d one-shot periods through the TMICT MSR: %u taken in all (want %d), "
	       "%d in service, %d requested, TMICT %u", X2N, *count2, 2 * X2N,
	       bits(&st, 0x100), bits(&st, 0x200), word(&st, 0x380));
	close(vstats);
	free(vs.descs);
	guest_destroy(&g);
	tap_done();
}

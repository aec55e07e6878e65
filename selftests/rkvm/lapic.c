// SPDX-License-Identifier: GPL-2.0
/*
 * The in-kernel local APIC of a split irqchip (KVM_CAP_SPLIT_IRQCHIP; arch/x86/kvm/lapic.c,
 * x86.c kvm_vm_ioctl_enable_cap, kvm_arch_vcpu_ioctl_run, kvm_vcpu_ioctl_interrupt).
 *
 * Protocol: enabling the capability (EINVAL above KVM_MAX_IRQ_ROUTES, EEXIST a second
 * time or after a vCPU exists); KVM_GET_LAPIC, KVM_SIGNAL_MSI and non-runnable MP states
 * refused (EINVAL) without it; the RESET register file (ID, version, SPIV, DFR, LVTs with
 * ExtINT LINT0 on the BSP only); APs start UNINITIALIZED; KVM_SET_LAPIC round trip with PPR
 * derived from TPR; KVM_INTERRUPT takes one ExtINT at a time (EEXIST).
 *
 * xAPIC from the guest (32-bit protected mode, MMIO at 0xfee00000): ID and version, a
 * self-IPI, TPR holding back a vector (IRR and PPR seen, delivered once TPR drops, ISR set
 * in the handler and clear after EOI), the one-shot timer (TMCCT counting, 0 after expiry),
 * the periodic timer, an NMI self-IPI. Every wait is the guest's HLT, which the in-kernel
 * APIC ends: userspace never sees KVM_EXIT_HLT.
 *
 * x2APIC: IA32_APIC_BASE switch, ID and LDR MSRs, the all-ones MMIO hole, self-IPI MSR,
 * 64-bit ICR, the TSC-deadline timer (IA32_TSC_DEADLINE 0 once expired), #GP reading the
 * write-only EOI MSR.
 *
 * Two vCPUs: vCPU 0 sends INIT and SIPI to vCPU 1 (KVM_RUN of the UNINITIALIZED AP returns
 * EAGAIN once it took them, then the AP runs real-mode code at the SIPI vector), a fixed
 * IPI wakes the halted AP, and KVM_SIGNAL_MSI from userspace wakes it again. Then GSI
 * routing (MSI routes only, with KVM's errnos) and irqfds: an eventfd signal interrupts
 * the AP, one signalled before KVM_IRQFD fires on assignment, a deassigned one is silent.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sys/eventfd.h>
#include <signal.h>
#include <time.h>

#include "lib/rkvm_test.h"

#define P_VAL 0xc0
#define P_VEC 0xc1
#define P_MARK 0xc2
#define P_DONE 0xc3

#define APIC "0xfee00"
#define FLAG GUEST_DATA_GPA

/* A handler that reports its vector, counts in FLAG and EOIs through MMIO. */
#define XHANDLER(v)                                                                         \
	"xh" #v ":\n"                                                                         \
	"push %eax\n"                                                                         \
	"mov $" #v ", %eax\n"                                                                 \
	"out %eax, $" XSTR(P_VEC) "\n"                                                        \
	"incl " XSTR(FLAG) "\n"                                                               \
	"movl $0, " APIC "0b0\n"                                                              \
	"pop %eax\n"                                                                          \
	"iret\n"

/* The same with the x2APIC EOI MSR. */
#define MHANDLER(v)                                                                         \
	"mh" #v ":\n"                                                                         \
	"push %eax\n"                                                                         \
	"push %ecx\n"                                                                         \
	"push %edx\n"                                                                         \
	"mov $" #v ", %eax\n"                                                                 \
	"out %eax, $" XSTR(P_VEC) "\n"                                                        \
	"incl " XSTR(FLAG) "\n"                                                               \
	"mov $0x80b, %ecx\n"                                                                  \
	"xor %eax, %eax\n"                                                                    \
	"xor %edx, %edx\n"                                                                    \
	"wrmsr\n"                                                                             \
	"pop %edx\n"                                                                          \
	"pop %ecx\n"                                                                          \
	"pop %eax\n"                                                                          \
	"iret\n"

/* Sleeps in HLT until FLAG reaches N (IF clear while checking: no lost wake-up). */
#define WAIT_FLAG(n)                                                                        \
	"1: cli\n"                                                                            \
	"cmpl $" #n ", " XSTR(FLAG) "\n"                                                      \
	"jae 2f\n"                                                                            \
	"sti\n"                                                                               \
	"hlt\n"                                                                               \
	"jmp 1b\n"                                                                            \
	"2: movl $0, " XSTR(FLAG) "\n"

#define OUTV(port) "out %eax, $" XSTR(port) "\n"
#define MARK(n) "mov $" #n ", %eax\n" OUTV(P_MARK)

GUEST_CODE(apic_guest, 32,
	/* xAPIC: enable (spurious vector 0xff), ID, version. */
	"movl $0x1ff, " APIC "0f0\n"
	"mov " APIC "020, %eax\n" OUTV(P_VAL)
	"mov " APIC "030, %eax\n" OUTV(P_VAL)
	/* Self-IPI 0x40. */
	"movl $0, " XSTR(FLAG) "\n"
	"movl $0x40040, " APIC "300\n"
	WAIT_FLAG(1)
	MARK(1)
	/* TPR 0x50 holds back 0x41. */
	"movl $0x50, " APIC "080\n"
	"movl $0x40041, " APIC "300\n"
	"sti\n"
	"nop\n"
	"cli\n"
	MARK(2)
	"mov " APIC "220, %eax\n" OUTV(P_VAL)
	"mov " APIC "0a0, %eax\n" OUTV(P_VAL)
	"movl $0, " APIC "080\n"
	WAIT_FLAG(1)
	MARK(3)
	/* One-shot timer, divide by 1: TMCCT counts down from a long count, then stop it. */
	"movl $0xb, " APIC "3e0\n"
	"movl $0x10042, " APIC "320\n"
	"movl $0x10000000, " APIC "380\n"
	"mov " APIC "390, %eax\n" OUTV(P_VAL)
	"movl $0, " APIC "380\n"
	"mov " APIC "390, %eax\n" OUTV(P_VAL)
	/* 100 us one-shot, unmasked. */
	"movl $0x42, " APIC "320\n"
	"movl $100000, " APIC "380\n"
	WAIT_FLAG(1)
	"mov " APIC "390, %eax\n" OUTV(P_VAL)
	MARK(4)
	/*
	 * Periodic, 10 ms: three interrupts, then masked and stopped. Not shorter: under an
	 * emulator one host timer interrupt costs hundreds of microseconds of real time, and
	 * a period near KVM's 200 us floor can keep the emulated host busy in its timer.
	 */
	"movl $0x20043, " APIC "320\n"
	"movl $10000000, " APIC "380\n"
	WAIT_FLAG(3)
	"movl $0x30043, " APIC "320\n"
	"movl $0, " APIC "380\n"
	/* A fourth period may have fired meanwhile: let it in now, and forget its count. */
	"sti\n"
	"nop\n"
	"cli\n"
	"movl $0, " XSTR(FLAG) "\n"
	MARK(5)
	/* NMI self-IPI (delivery mode 4): taken with IF clear. */
	"cli\n"
	"movl $0x40400, " APIC "300\n"
	"nop\n"
	MARK(6)
	/* x2APIC. */
	"mov $0x1b, %ecx\n"
	"rdmsr\n" OUTV(P_VAL)
	"or $0x400, %eax\n"
	"wrmsr\n"
	"mov $0x802, %ecx\n"
	"rdmsr\n" OUTV(P_VAL)
	"mov $0x80d, %ecx\n"
	"rdmsr\n" OUTV(P_VAL)
	"mov " APIC "030, %eax\n" OUTV(P_VAL)
	/* Self-IPI MSR, vector 0x44. */
	"mov $0x83f, %ecx\n"
	"mov $0x44, %eax\n"
	"xor %edx, %edx\n"
	"wrmsr\n"
	WAIT_FLAG(1)
	/* 64-bit ICR: self, fixed, vector 0x45. */
	"mov $0x830, %ecx\n"
	"mov $0x40045, %eax\n"
	"xor %edx, %edx\n"
	"wrmsr\n"
	WAIT_FLAG(1)
	MARK(7)
	/* TSC deadline, vector 0x46, about 200000 cycles ahead. */
	"mov $0x832, %ecx\n"
	"mov $0x40046, %eax\n"
	"xor %edx, %edx\n"
	"wrmsr\n"
	"rdtsc\n"
	"add $200000, %eax\n"
	"adc $0, %edx\n"
	"mov $0x6e0, %ecx\n"
	"wrmsr\n"
	WAIT_FLAG(1)
	"mov $0x6e0, %ecx\n"
	"rdmsr\n" OUTV(P_VAL)
	/* The EOI MSR is write-only: #GP. */
	"mov $0x80b, %ecx\n"
	"rdmsr\n"
	MARK(8)
	"out %al, $" XSTR(P_DONE) "\n"
	"hlt\n"
	XHANDLER(0x40) XHANDLER(0x42) XHANDLER(0x43)
	/* 0x41 also reports ISR word 2 before and after its EOI. */
	"xh0x41:\n"
	"push %eax\n"
	"mov $0x41, %eax\n" OUTV(P_VEC)
	"mov " APIC "120, %eax\n" OUTV(P_VAL)
	"movl $0, " APIC "0b0\n"
	"mov " APIC "120, %eax\n" OUTV(P_VAL)
	"incl " XSTR(FLAG) "\n"
	"pop %eax\n"
	"iret\n"
	MHANDLER(0x44) MHANDLER(0x45) MHANDLER(0x46)
	"nmi_h:\n"
	"push %eax\n"
	"mov $2, %eax\n" OUTV(P_VEC)
	"pop %eax\n"
	"iret\n"
	"gp_h:\n"
	"push %eax\n"
	"mov $13, %eax\n" OUTV(P_VEC)
	"addl $2, 8(%esp)\n"
	"pop %eax\n"
	"add $4, %esp\n"
	"iret\n");
extern const uint8_t xh0x40[], xh0x41[], xh0x42[], xh0x43[], mh0x44[], mh0x45[], mh0x46[],
	nmi_h[], gp_h[];

#define ADDR(label) GUEST_ADDR(GUEST_CODE_GPA, apic_guest, label)

/* vCPU 0 of the two-vCPU VM: INIT and SIPI (vector 8) to APIC 1, then a fixed IPI 0x60. */
GUEST_CODE(bsp_guest, 32,
	"movl $0x1ff, " APIC "0f0\n"
	"movl $0x01000000, " APIC "310\n"
	"movl $0x4500, " APIC "300\n"
	"movl $0x4608, " APIC "300\n"
	MARK(1)
	"movl $0x01000000, " APIC "310\n"
	"movl $0x4060, " APIC "300\n"
	MARK(2)
	"out %al, $" XSTR(P_DONE) "\n"
	"hlt\n");

/* vCPU 1 after the SIPI: real mode at 0x8000 (CS 0x800, IP 0). */
#define AP_GPA 0x8000
GUEST_CODE(ap_guest, 16,
	"mov $0xa1, %ax\n"
	"out %ax, $" XSTR(P_MARK) "\n"
	"1: sti\n"
	"hlt\n"
	"jmp 1b\n"
	"ap_h60:\n"
	"push %ax\n"
	"mov $0x60, %ax\n"
	"out %ax, $" XSTR(P_VEC) "\n"
	"pop %ax\n"
	"iret\n"
	"ap_h71:\n"
	"push %ax\n"
	"mov $0x71, %ax\n"
	"out %ax, $" XSTR(P_VEC) "\n"
	"pop %ax\n"
	"iret\n"
	"ap_h81:\n"
	"push %ax\n"
	"mov $0x81, %ax\n"
	"out %ax, $" XSTR(P_VEC) "\n"
	"pop %ax\n"
	"iret\n"
	"ap_h91:\n"
	"push %ax\n"
	"mov $0x91, %ax\n"
	"out %ax, $" XSTR(P_VEC) "\n"
	"pop %ax\n"
	"iret\n");
extern const uint8_t ap_h60[], ap_h71[], ap_h81[], ap_h91[];

static int enable_split(int vm_fd, uint64_t pins)
{
	struct kvm_enable_cap cap = { .cap = KVM_CAP_SPLIT_IRQCHIP, .args = { pins } };

	return ioctl(vm_fd, KVM_ENABLE_CAP, &cap);
}

static uint32_t reg(const struct kvm_lapic_state *s, int off)
{
	uint32_t v;

	memcpy(&v, s->regs + off, 4);
	return v;
}

static void set_reg(struct kvm_lapic_state *s, int off, uint32_t v)
{
	memcpy(s->regs + off, &v, 4);
}

static uint32_t mp_state(struct vcpu *v)
{
	struct kvm_mp_state m;

	if (ioctl(v->fd, KVM_GET_MP_STATE, &m))
		BAIL("KVM_GET_MP_STATE");
	return m.mp_state;
}

static void protocol(void)
{
	struct vm vm = vm_create();
	struct kvm_lapic_state st;
	struct kvm_mp_state mp = { .mp_state = KVM_MP_STATE_HALTED };
	struct kvm_msi msi = { .address_lo = 0xfee00000, .data = 0x30 };
	struct kvm_interrupt irq = { .irq = 0x30 };
	struct vcpu v0, v1;
	int i, ok, r, e;

	/* A VM without the split irqchip. */
	v0 = vcpu_create(&vm, 0);
	CHECK_ERRNO(v0.fd, KVM_GET_LAPIC, &st, EINVAL, "KVM_GET_LAPIC without an in-kernel APIC");
	CHECK_ERRNO(vm.fd, KVM_SIGNAL_MSI, &msi, EINVAL, "KVM_SIGNAL_MSI without an in-kernel APIC");
	CHECK_ERRNO(v0.fd, KVM_SET_MP_STATE, &mp, EINVAL, "KVM_SET_MP_STATE(HALTED) without one");
	r = enable_split(vm.fd, 24);
	e = errno;
	tap_ok(r == -1 && e == EEXIST, "KVM_CAP_SPLIT_IRQCHIP after a vCPU exists -> EEXIST (got %d/%s)",
	       r, errno_name(e));
	close(v0.fd);
	close(vm.fd);

	vm.fd = ioctl(vm.sys_fd, KVM_CREATE_VM, 0);
	if (vm.fd < 0)
		BAIL("KVM_CREATE_VM");
	r = enable_split(vm.fd, 4097);
	e = errno;
	tap_ok(r == -1 && e == EINVAL, "KVM_CAP_SPLIT_IRQCHIP with 4097 pins -> EINVAL (got %d/%s)", r,
	       errno_name(e));
	tap_ok(enable_split(vm.fd, 24) == 0, "KVM_CAP_SPLIT_IRQCHIP with 24 pins");
	r = enable_split(vm.fd, 24);
	e = errno;
	tap_ok(r == -1 && e == EEXIST, "KVM_CAP_SPLIT_IRQCHIP twice -> EEXIST (got %d/%s)", r,
	       errno_name(e));
	v0 = vcpu_create(&vm, 0);
	v1 = vcpu_create(&vm, 1);
	tap_ok(mp_state(&v0) == KVM_MP_STATE_RUNNABLE && mp_state(&v1) == KVM_MP_STATE_UNINITIALIZED,
	       "the BSP starts runnable (%u), the AP uninitialized (%u)", mp_state(&v0),
	       mp_state(&v1));

	if (ioctl(v0.fd, KVM_GET_LAPIC, &st))
		BAIL("KVM_GET_LAPIC");
	tap_ok(reg(&st, 0x20) == 0 && reg(&st, 0x30) == 0x50014 && reg(&st, 0xf0) == 0xff &&
	       reg(&st, 0xe0) == 0xffffffff && reg(&st, 0x80) == 0,
	       "BSP at RESET: ID %#x, version %#x (want 0x50014), SPIV %#x, DFR %#x, TPR %#x",
	       reg(&st, 0x20), reg(&st, 0x30), reg(&st, 0xf0), reg(&st, 0xe0), reg(&st, 0x80));
	ok = reg(&st, 0x350) == 0x700;
	for (i = 0x320; i <= 0x370; i += 0x10)
		if (i != 0x350)
			ok &= reg(&st, i) == 0x10000;
	tap_ok(ok, "BSP LVTs masked, LINT0 ExtINT (%#x)", reg(&st, 0x350));
	if (ioctl(v1.fd, KVM_GET_LAPIC, &st))
		BAIL("KVM_GET_LAPIC");
	tap_ok(reg(&st, 0x20) == 1u << 24 && reg(&st, 0x350) == 0x10000,
	       "AP at RESET: ID %#x, LINT0 %#x (masked)", reg(&st, 0x20), reg(&st, 0x350));

	vcpu_set_supported_cpuid(&vm, &v0);
	if (ioctl(v0.fd, KVM_GET_LAPIC, &st))
		BAIL("KVM_GET_LAPIC");
	tap_ok(reg(&st, 0x30) == 0x1050014,
	       "with x2APIC in CPUID the version offers directed EOI (%#x)", reg(&st, 0x30));
	set_reg(&st, 0x80, 0x20);
	set_reg(&st, 0xf0, 0x1ff);
	set_reg(&st, 0x320, 0x10033);
	if (ioctl(v0.fd, KVM_SET_LAPIC, &st))
		BAIL("KVM_SET_LAPIC");
	memset(&st, 0, sizeof(st));
	if (ioctl(v0.fd, KVM_GET_LAPIC, &st))
		BAIL("KVM_GET_LAPIC");
	tap_ok(reg(&st, 0x80) == 0x20 && reg(&st, 0xa0) == 0x20 && reg(&st, 0xf0) == 0x1ff &&
	       reg(&st, 0x320) == 0x10033,
	       "KVM_SET_LAPIC round trip: TPR %#x, PPR %#x, SPIV %#x, LVTT %#x", reg(&st, 0x80),
	       reg(&st, 0xa0), reg(&st, 0xf0), reg(&st, 0x320));
	{
		struct kvm_sregs sr;

		vcpu_get_sregs(&v0, &sr);
		tap_ok(sr.cr8 == 2, "CR8 is TPR[7:4] (%llu)", (unsigned long long)sr.cr8);
	}
	tap_ok(ioctl(v0.fd, KVM_INTERRUPT, &irq) == 0, "KVM_INTERRUPT queues an ExtINT");
	CHECK_ERRNO(v0.fd, KVM_INTERRUPT, &irq, EEXIST, "a second KVM_INTERRUPT before it is taken");
	close(v0.fd);
	close(v1.fd);
	close(vm.fd);
	close(vm.sys_fd);
}

static struct guest split_guest(int nvcpus, struct vcpu *second)
{
	struct guest g;

	g.vm = vm_create();
	if (enable_split(g.vm.fd, 24))
		BAIL("KVM_CAP_SPLIT_IRQCHIP");
	if (ioctl(g.vm.fd, KVM_SET_TSS_ADDR, 0xfffbd000))
		BAIL("KVM_SET_TSS_ADDR");
	g.mem = vm_add_memory(&g.vm, 0, 0, GUEST_LOW_SIZE, 0);
	g.v = vcpu_create(&g.vm, 0);
	vcpu_set_supported_cpuid(&g.vm, &g.v);
	if (nvcpus > 1) {
		*second = vcpu_create(&g.vm, 1);
		vcpu_set_supported_cpuid(&g.vm, second);
	}
	return g;
}

/*
 * Every wait in this test ends with a timer or an IPI. A lost one would leave KVM_RUN
 * blocked in the guest's HLT: the watchdog then names the check that never came, and
 * a merely slow one (over a second) is reported as it passes.
 */
static volatile int watch_check;

static void on_alarm(int sig)
{
	printf("# watchdog: no exit for check %d within the limit (HLT never woken?)\n",
	       watch_check);
	fflush(stdout);
	_exit(1);
}

static void timed_run(struct vcpu *v)
{
	long t0 = monotonic_ms(), dt;

	watch_check = tap_run + 1;
	vcpu_run(v);
	dt = monotonic_ms() - t0;
	if (dt > 1000)
		tap_diag("KVM_RUN for check %d took %ld ms", tap_run + 1, dt);
}

/* Runs until the next exit, which must be an OUT of 4 bytes to PORT; returns its value. */
static int next_out(struct vcpu *v, int port, uint32_t *val)
{
	timed_run(v);
	if (v->run->exit_reason != KVM_EXIT_IO)
		BAIL("unexpected exit: %s", exit_str(v));
	if (!is_out(v, port, 4)) {
		tap_diag("unexpected exit: %s", exit_str(v));
		return 0;
	}
	*val = io_out_value(v);
	return 1;
}

/* Runs until the next exit, which must be a 4-byte OUT; returns its port and value. */
static int next_out_any(struct vcpu *v, int *port, uint32_t *val)
{
	timed_run(v);
	if (v->run->exit_reason != KVM_EXIT_IO)
		BAIL("unexpected exit: %s", exit_str(v));
	if (v->run->io.direction != KVM_EXIT_IO_OUT || v->run->io.size != 4) {
		tap_diag("unexpected exit: %s", exit_str(v));
		return 0;
	}
	*port = v->run->io.port;
	*val = io_out_value(v);
	return 1;
}

static void expect(struct vcpu *v, int port, uint32_t want, const char *what)
{
	uint32_t got = 0;
	int ok = next_out(v, port, &got);

	tap_ok(ok && got == want, "%s: %#x (want %#x)", what, got, want);
}

static void guest_apic(void)
{
	struct guest g = split_guest(1, NULL);
	struct kvm_lapic_state st;
	uint32_t tmcct = 0, val = 0;
	int ok, port = 0, i;

	guest_load(g.mem, GUEST_CODE_GPA, apic_guest);
	vcpu_set_protected_mode(&g.v, g.mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
	idt_set_gate32(g.mem, 2, ADDR(nmi_h));
	idt_set_gate32(g.mem, 13, ADDR(gp_h));
	idt_set_gate32(g.mem, 0x40, ADDR(xh0x40));
	idt_set_gate32(g.mem, 0x41, ADDR(xh0x41));
	idt_set_gate32(g.mem, 0x42, ADDR(xh0x42));
	idt_set_gate32(g.mem, 0x43, ADDR(xh0x43));
	idt_set_gate32(g.mem, 0x44, ADDR(mh0x44));
	idt_set_gate32(g.mem, 0x45, ADDR(mh0x45));
	idt_set_gate32(g.mem, 0x46, ADDR(mh0x46));

	expect(&g.v, P_VAL, 0, "xAPIC ID read by the guest");
	expect(&g.v, P_VAL, 0x1050014, "version read by the guest");
	expect(&g.v, P_VEC, 0x40, "self-IPI delivered");
	expect(&g.v, P_MARK, 1, "after the self-IPI");
	expect(&g.v, P_MARK, 2, "TPR 0x50 holds back vector 0x41 (no handler before the marker)");
	expect(&g.v, P_VAL, 0x2, "IRR has 0x41");
	expect(&g.v, P_VAL, 0x50, "PPR follows TPR");
	expect(&g.v, P_VEC, 0x41, "0x41 delivered once TPR is 0");
	expect(&g.v, P_VAL, 0x2, "ISR has 0x41 in its handler");
	expect(&g.v, P_VAL, 0, "ISR clear after EOI");
	expect(&g.v, P_MARK, 3, "after the TPR checks");
	ok = next_out(&g.v, P_VAL, &tmcct);
	tap_ok(ok && tmcct > 0 && tmcct <= 0x10000000, "TMCCT counts down from TMICT (%#x)", tmcct);
	expect(&g.v, P_VAL, 0, "TMCCT 0 once TMICT is 0");
	expect(&g.v, P_VEC, 0x42, "one-shot timer interrupt ends HLT");
	expect(&g.v, P_VAL, 0, "TMCCT 0 after the one-shot expired");
	expect(&g.v, P_MARK, 4, "after the one-shot timer");
	expect(&g.v, P_VEC, 0x43, "periodic timer, first interrupt");
	expect(&g.v, P_VEC, 0x43, "periodic timer, second interrupt");
	expect(&g.v, P_VEC, 0x43, "periodic timer, third interrupt");
	/*
	 * More periods may fire before the guest stops the timer: on a slow emulator the
	 * period is short next to the guest's own instructions. Skip over them.
	 */
	ok = next_out_any(&g.v, &port, &val);
	for (i = 0; i < 1000 && ok && port == P_VEC && val == 0x43; i++)
		ok = next_out_any(&g.v, &port, &val);
	tap_ok(ok && port == P_MARK && val == 5, "after the periodic timer: marker 5 (port %#x, %#x)",
	       port, val);
	expect(&g.v, P_VEC, 2, "NMI self-IPI taken with IF clear");
	expect(&g.v, P_MARK, 6, "after the NMI");
	expect(&g.v, P_VAL, 0xfee00900, "IA32_APIC_BASE: default base, enabled, BSP");
	expect(&g.v, P_VAL, 0, "x2APIC ID MSR");
	expect(&g.v, P_VAL, 1, "x2APIC LDR MSR (cluster 0, bit 0)");
	expect(&g.v, P_VAL, 0xffffffff, "xAPIC MMIO reads all ones in x2APIC mode");
	expect(&g.v, P_VEC, 0x44, "self-IPI MSR");
	expect(&g.v, P_VEC, 0x45, "64-bit ICR self-IPI");
	expect(&g.v, P_MARK, 7, "after the x2APIC IPIs");
	if (ioctl(g.v.fd, KVM_GET_LAPIC, &st))
		BAIL("KVM_GET_LAPIC");
	tap_ok(reg(&st, 0x20) == 0 && reg(&st, 0xd0) == 1 && reg(&st, 0x310) == 0 &&
	       reg(&st, 0x300) == 0x40045,
	       "KVM_GET_LAPIC in x2APIC mode: ID %#x, LDR %#x, ICR %#x:%#x", reg(&st, 0x20),
	       reg(&st, 0xd0), reg(&st, 0x310), reg(&st, 0x300));
	expect(&g.v, P_VEC, 0x46, "TSC-deadline timer interrupt");
	expect(&g.v, P_VAL, 0, "IA32_TSC_DEADLINE 0 after it fired");
	expect(&g.v, P_VEC, 13, "RDMSR of the EOI register raises #GP");
	expect(&g.v, P_MARK, 8, "after the #GP");
	vcpu_run(&g.v);
	tap_ok(is_out(&g.v, P_DONE, 1), "guest done (%s)", exit_str(&g.v));
	guest_destroy(&g);
}

/* The AP's thread: KVM_RUN until stopped by SIGUSR1, recording OUT values in order. */
struct ap_ctx {
	struct vcpu v;
	volatile int outs[8];
	volatile int nouts;
	volatile int bad_exit;
	volatile int stopped;
};

static void on_usr1(int sig)
{
}

static void *ap_thread(void *p)
{
	struct ap_ctx *c = p;

	for (;;) {
		int r = ioctl(c->v.fd, KVM_RUN, 0);

		if (r) {
			if (errno == EINTR) {
				c->stopped = 1;
				return NULL;
			}
			c->bad_exit = 1000 + errno;
			return NULL;
		}
		if (c->v.run->exit_reason != KVM_EXIT_IO || c->nouts >= 8) {
			c->bad_exit = c->v.run->exit_reason;
			return NULL;
		}
		c->outs[c->nouts] = io_out_value(&c->v);
		__sync_synchronize();
		c->nouts++;
	}
}

static int wait_outs(struct ap_ctx *c, int n)
{
	int i;

	for (i = 0; i < 20000 && c->nouts < n && !c->bad_exit; i++)
		usleep(1000);
	return c->nouts >= n;
}

static int set_routes(int vm_fd, const struct kvm_irq_routing_entry *e, int n, uint32_t flags)
{
	struct {
		struct kvm_irq_routing h;
		struct kvm_irq_routing_entry e[4];
	} r;

	memset(&r, 0, sizeof(r));
	r.h.nr = n;
	r.h.flags = flags;
	memcpy(r.e, e, n * sizeof(*e));
	return ioctl(vm_fd, KVM_SET_GSI_ROUTING, &r);
}

static struct kvm_irq_routing_entry msi_route(uint32_t gsi, uint8_t vector)
{
	struct kvm_irq_routing_entry e = { .gsi = gsi, .type = KVM_IRQ_ROUTING_MSI };

	e.u.msi.address_lo = 0xfee00000 | 1 << 12; /* APIC ID 1 */
	e.u.msi.data = vector;
	return e;
}

static long irqfd(int vm_fd, int fd, uint32_t gsi, uint32_t flags)
{
	struct kvm_irqfd f = { .fd = fd, .gsi = gsi, .flags = flags };

	return ioctl(vm_fd, KVM_IRQFD, &f);
}

/*
 * GSI routing and irqfds, with the AP halted. Its handlers never EOI (real mode cannot
 * reach the APIC page), so each new vector is in a higher priority class.
 */
static void irqfd_checks(struct guest *g, struct ap_ctx *c)
{
	struct kvm_irq_routing_entry e[2] = { msi_route(30, 0x81), msi_route(31, 0x91) };
	struct kvm_irq_routing_entry chip = { .gsi = 2, .type = KVM_IRQ_ROUTING_IRQCHIP };
	uint64_t one = 1;
	int efd = eventfd(0, 0), efd2 = eventfd(0, 0), got;
	long r;

	if (efd < 0 || efd2 < 0)
		BAIL("eventfd");
	r = set_routes(g->vm.fd, &chip, 1, 0);
	tap_ok(r == -1 && errno == EINVAL, "an I/O APIC pin route with a split irqchip -> EINVAL");
	r = set_routes(g->vm.fd, e, 2, 1);
	tap_ok(r == -1 && errno == EINVAL, "KVM_SET_GSI_ROUTING flags -> EINVAL");
	e[1].gsi = 30;
	r = set_routes(g->vm.fd, e, 2, 0);
	tap_ok(r == -1 && errno == EINVAL, "two MSI routes for one GSI -> EINVAL");
	e[1].gsi = 31;
	r = set_routes(g->vm.fd, e, 2, 0);
	tap_ok(r == 0, "KVM_SET_GSI_ROUTING: GSI 30 -> vector 0x81, 31 -> 0x91 on APIC 1 (%ld)", r);
	r = irqfd(g->vm.fd, efd, 30, KVM_IRQFD_FLAG_RESAMPLE);
	tap_ok(r == -1 && errno == EINVAL, "a resampling irqfd without an in-kernel I/O APIC -> EINVAL");
	r = irqfd(g->vm.fd, efd, 30, 0);
	tap_ok(r == 0, "KVM_IRQFD: eventfd -> GSI 30 (%ld, errno %d)", r, errno);
	r = irqfd(g->vm.fd, efd, 31, 0);
	tap_ok(r == -1 && errno == EBUSY, "the same eventfd again -> EBUSY (%ld, errno %d)", r, errno);
	if (write(efd, &one, 8) != 8)
		BAIL("write eventfd");
	got = wait_outs(c, 4);
	tap_ok(got && c->outs[3] == 0x81, "signalling the eventfd interrupts the AP with 0x81 (%#x)",
	       c->outs[3]);
	r = irqfd(g->vm.fd, efd, 30, KVM_IRQFD_FLAG_DEASSIGN);
	tap_ok(r == 0, "KVM_IRQFD_FLAG_DEASSIGN (%ld)", r);
	r = irqfd(g->vm.fd, 1000, 30, KVM_IRQFD_FLAG_DEASSIGN);
	tap_ok(r == -1 && errno == EBADF, "deassigning a closed fd -> EBADF (%ld, errno %d)", r, errno);
	/* Signalled before it is assigned: the interrupt comes on assignment. */
	if (write(efd2, &one, 8) != 8 || write(efd, &one, 8) != 8)
		BAIL("write eventfd");
	r = irqfd(g->vm.fd, efd2, 31, 0);
	got = wait_outs(c, 5);
	tap_ok(r == 0 && got && c->outs[4] == 0x91,
	       "an eventfd signalled before KVM_IRQFD fires on assignment: 0x91 (%#x)", c->outs[4]);
	usleep(100 * 1000);
	tap_ok(c->nouts == 5, "the deassigned eventfd no longer interrupts (%d outs)", c->nouts);
	close(efd);
	close(efd2);
}

static void two_vcpus(void)
{
	static struct ap_ctx c;
	struct guest g = split_guest(2, &c.v);
	struct kvm_msi msi = { .address_lo = 0xfee00000 | 1 << 12, .data = 0x71 };
	struct kvm_lapic_state st;
	struct kvm_sregs sr;
	struct sigaction sa = { .sa_handler = on_usr1 };
	struct ioctl_res res;
	pthread_t t;
	long r;
	int got;

	sigaction(SIGUSR1, &sa, NULL);
	guest_load(g.mem, GUEST_CODE_GPA, bsp_guest);
	guest_load(g.mem, AP_GPA, ap_guest);
	/*
	 * The AP's real-mode IVT entries 0x60 and 0x71 (segment 0x800). The
	 * handlers cannot reach the APIC page from real mode, so they never EOI:
	 * 0x60 stays in service and the MSI uses a higher priority class.
	 */
	((uint16_t *)g.mem)[0x60 * 2] = GUEST_ADDR(0, ap_guest, ap_h60);
	((uint16_t *)g.mem)[0x60 * 2 + 1] = AP_GPA >> 4;
	((uint16_t *)g.mem)[0x71 * 2] = GUEST_ADDR(0, ap_guest, ap_h71);
	((uint16_t *)g.mem)[0x71 * 2 + 1] = AP_GPA >> 4;
	((uint16_t *)g.mem)[0x81 * 2] = GUEST_ADDR(0, ap_guest, ap_h81);
	((uint16_t *)g.mem)[0x81 * 2 + 1] = AP_GPA >> 4;
	((uint16_t *)g.mem)[0x91 * 2] = GUEST_ADDR(0, ap_guest, ap_h91);
	((uint16_t *)g.mem)[0x91 * 2 + 1] = AP_GPA >> 4;
	vcpu_set_protected_mode(&g.v, g.mem, GUEST_CODE_GPA, GUEST_STACK_TOP);

	expect(&g.v, P_MARK, 1, "BSP sent INIT and SIPI to APIC 1");
	/* The UNINITIALIZED AP takes both, then KVM_RUN returns EAGAIN. */
	res = do_ioctl(c.v.fd, KVM_RUN, 0);
	tap_ok(res.r == -1 && res.err == EAGAIN, "first KVM_RUN of the AP -> -1/EAGAIN (got %s)",
	       res_str(res));
	tap_ok(mp_state(&c.v) == KVM_MP_STATE_RUNNABLE, "the AP is runnable after INIT and SIPI (%u)",
	       mp_state(&c.v));
	/* INIT left its APIC software-disabled: enable it as the AP's firmware would. */
	if (ioctl(c.v.fd, KVM_GET_LAPIC, &st))
		BAIL("KVM_GET_LAPIC");
	set_reg(&st, 0xf0, 0x1ff);
	if (ioctl(c.v.fd, KVM_SET_LAPIC, &st))
		BAIL("KVM_SET_LAPIC");
	if (pthread_create(&t, NULL, ap_thread, &c))
		BAIL("pthread_create");
	got = wait_outs(&c, 1);
	tap_ok(got && c.outs[0] == 0xa1, "the AP runs its SIPI code (out %#x, bad exit %d)",
	       c.outs[0], c.bad_exit);
	expect(&g.v, P_MARK, 2, "BSP sent fixed IPI 0x60 to APIC 1");
	got = wait_outs(&c, 2);
	tap_ok(got && c.outs[1] == 0x60, "the halted AP takes IPI 0x60 (%#x)", c.outs[1]);
	r = ioctl(g.vm.fd, KVM_SIGNAL_MSI, &msi);
	tap_ok(r == 1, "KVM_SIGNAL_MSI to APIC 1 reaches one APIC (%ld)", r);
	got = wait_outs(&c, 3);
	tap_ok(got && c.outs[2] == 0x71, "the halted AP takes MSI 0x71 above in-service 0x60 (%#x)",
	       c.outs[2]);
	irqfd_checks(&g, &c);
	pthread_kill(t, SIGUSR1);
	pthread_join(t, NULL);
	tap_ok(c.stopped && !c.bad_exit, "a signal ends the halted AP's KVM_RUN with EINTR (%d)",
	       c.bad_exit);
	tap_ok(c.v.run->exit_reason == KVM_EXIT_INTR, "exit reason KVM_EXIT_INTR (%s)",
	       exit_name(c.v.run->exit_reason));
	tap_ok(mp_state(&c.v) == KVM_MP_STATE_HALTED, "the AP stays halted (%u)", mp_state(&c.v));
	vcpu_get_sregs(&c.v, &sr);
	tap_ok(sr.cs.selector == 0x800 && sr.cs.base == 0x8000, "AP CS %#x base %#llx after SIPI 8",
	       sr.cs.selector, (unsigned long long)sr.cs.base);
	vcpu_run(&g.v);
	tap_ok(is_out(&g.v, P_DONE, 1), "BSP done (%s)", exit_str(&g.v));
}

int main(void)
{
	int fd = kvm_open();

	REQUIRE_CAP(fd, KVM_CAP_SPLIT_IRQCHIP);
	close(fd);
	signal(SIGALRM, on_alarm);
	alarm(120);
	tap_plan(16 + 35 + 13 + 12);
	protocol();
	guest_apic();
	two_vcpus();
	tap_done();
}

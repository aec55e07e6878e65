// SPDX-License-Identifier: GPL-2.0
/*
 * A halted vCPU's stats (KVM's kvm_vcpu_halt and kvm_vcpu_block), with the local APIC in
 * the kernel (split irqchip) so that HLT waits there:
 *
 *   a long sleep      the guest halts until userspace sends an MSI 200 ms later: blocking
 *                     reads 1 while it sleeps and 0 after, halt_wakeup counts the wake-up,
 *                     halt_wait_ns and halt_wait_hist hold the sleep. The vCPU's poll
 *                     window starts at 0, so this first halt does not poll.
 *   short halts       the guest halts 40 times on its APIC timer (400 us, one-shot): the
 *                     window grows from 10 us after each halt it was too short for, until
 *                     the timer fires inside the poll. halt_attempted_poll counts the
 *                     polls; halt_successful_poll those that ended the halt without a
 *                     sleep; the ns counters and histograms split them the same way.
 *   KVM_CAP_HALT_POLL the VM's longest poll, in place of the module's halt_poll_ns: with 0
 *                     the next 10 halts do not poll. Flags or a value past 32 bits: EINVAL.
 *
 * The VM's limit is raised to 10 ms for the short halts, so that an emulator's slow wake-ups
 * (longer than the module's default 200 us) still let the window grow.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include "lib/rkvm_test.h"
#include "lib/stats.h"

#define APIC "0xfee00"
#define P_MARK 0xc2
#define COUNT_GPA GUEST_DATA_GPA
#define PERIOD_GPA (GUEST_DATA_GPA + 4)

GUEST_CODE(halt_guest, 32,
	"movl $0x1ff, " APIC "0f0\n"		/* APIC on, spurious vector 0xff */
	"sti\n"
	"hlt\n"					/* until the MSI */
	"cli\n"
	"mov $1, %eax\n"
	"out %eax, $" XSTR(P_MARK) "\n"
	"movl $0xb, " APIC "3e0\n"		/* timer divider 1 */
	"movl $0x41, " APIC "320\n"		/* one-shot, vector 0x41 */
	"2: mov " XSTR(COUNT_GPA) ", %esi\n"
	"1: mov " XSTR(PERIOD_GPA) ", %eax\n"
	"mov %eax, " APIC "380\n"		/* start the timer */
	"sti\n"
	"hlt\n"
	"cli\n"
	"dec %esi\n"
	"jnz 1b\n"
	"mov $2, %eax\n"
	"out %eax, $" XSTR(P_MARK) "\n"
	"jmp 2b\n"
	"irq_h:\n"
	"movl $0, " APIC "0b0\n"		/* EOI */
	"iret\n");
extern const uint8_t irq_h[];

struct ctx {
	struct vcpu v;
	int fd;
	struct stats s;
};

static uint64_t st(struct ctx *c, const char *name)
{
	return stats_value(c->fd, &c->s, name);
}

static void *run_vcpu(void *arg)
{
	struct ctx *c = arg;

	vcpu_run(&c->v);
	return NULL;
}

static int halt_poll_cap(int vm_fd, uint32_t flags, uint64_t ns)
{
	struct kvm_enable_cap cap = { .cap = KVM_CAP_HALT_POLL, .flags = flags, .args = { ns } };

	return ioctl(vm_fd, KVM_ENABLE_CAP, &cap);
}

/* Runs the guest's loop of N halts on a timer of PERIOD bus cycles (ns). */
static void short_halts(struct ctx *c, uint8_t *mem, uint32_t n, uint32_t period)
{
	memcpy(mem + COUNT_GPA, &n, 4);
	memcpy(mem + PERIOD_GPA, &period, 4);
	vcpu_run(&c->v);
	if (!is_out(&c->v, P_MARK, 4) || io_out_value(&c->v) != 2)
		BAIL("the timer loop ended with %s", exit_str(&c->v));
}

int main(void)
{
	struct kvm_msi msi = { .address_lo = 0xfee00000, .data = 0x40 };
	uint64_t before[8], att, ok, fail;
	struct ctx c;
	struct vm vm;
	uint8_t *mem;
	pthread_t t;
	int i, blocked = 0, r, e;

	test_watchdog(240);
	{
		struct guest g = guest_create_split();

		vm = g.vm;
		mem = g.mem;
		c.v = g.v;
	}
	REQUIRE_CAP(vm.sys_fd, KVM_CAP_BINARY_STATS_FD);
	tap_plan(14);
	tap_ok(ioctl(vm.sys_fd, KVM_CHECK_EXTENSION, KVM_CAP_HALT_POLL) == 1,
	       "KVM_CHECK_EXTENSION(KVM_CAP_HALT_POLL) = 1");
	guest_load(mem, GUEST_CODE_GPA, halt_guest);
	vcpu_set_protected_mode(&c.v, mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
	idt_set_gate32(mem, 0x40, GUEST_ADDR(GUEST_CODE_GPA, halt_guest, irq_h));
	idt_set_gate32(mem, 0x41, GUEST_ADDR(GUEST_CODE_GPA, halt_guest, irq_h));
	c.fd = ioctl(c.v.fd, KVM_GET_STATS_FD, 0);
	if (c.fd < 0 || !stats_load(c.fd, &c.s))
		BAIL("KVM_GET_STATS_FD");

	/* A long sleep, ended by an MSI from this thread. */
	before[0] = st(&c, "halt_wakeup");
	before[1] = st(&c, "halt_wait_ns");
	before[2] = stats_hist_sum(c.fd, &c.s, "halt_wait_hist", 27);
	if (pthread_create(&t, NULL, run_vcpu, &c))
		BAIL("pthread_create");
	for (i = 0; i < 1000 && !blocked; i++) {
		usleep(10000);
		blocked = st(&c, "blocking") == 1;
	}
	tap_ok(blocked, "blocking reads 1 while the vCPU sleeps in HLT (after %d ms)", i * 10);
	usleep(200000);
	if (ioctl(vm.fd, KVM_SIGNAL_MSI, &msi) < 0)
		BAIL("KVM_SIGNAL_MSI");
	pthread_join(t, NULL);
	if (!is_out(&c.v, P_MARK, 4) || io_out_value(&c.v) != 1)
		BAIL("after the MSI: %s", exit_str(&c.v));
	tap_ok(st(&c, "blocking") == 0, "blocking reads 0 once it runs again");
	tap_ok(st(&c, "halt_wakeup") >= before[0] + 1, "the MSI woke it: halt_wakeup +%llu",
	       (unsigned long long)(st(&c, "halt_wakeup") - before[0]));
	tap_ok(st(&c, "halt_wait_ns") - before[1] >= 100000000ull,
	       "halt_wait_ns +%llu ns (slept 200 ms or more)",
	       (unsigned long long)(st(&c, "halt_wait_ns") - before[1]));
	tap_ok(stats_hist_sum(c.fd, &c.s, "halt_wait_hist", 27) >= before[2] + 1,
	       "halt_wait_hist: the sleep is in a bucket of 2^26 ns or more (%llu there)",
	       (unsigned long long)stats_hist_sum(c.fd, &c.s, "halt_wait_hist", 27));
	tap_ok(st(&c, "halt_attempted_poll") == 0,
	       "the first halt did not poll (the window starts at 0): halt_attempted_poll %llu",
	       (unsigned long long)st(&c, "halt_attempted_poll"));

	/* Short halts: the window grows until the poll catches the timer. */
	r = halt_poll_cap(vm.fd, 1, 1000);
	e = errno;
	tap_ok(r == -1 && e == EINVAL, "KVM_CAP_HALT_POLL with flags -> EINVAL (%d/%s)", r,
	       errno_name(e));
	r = halt_poll_cap(vm.fd, 0, 1ull << 32);
	e = errno;
	tap_ok(r == -1 && e == EINVAL, "KVM_CAP_HALT_POLL of 2^32 ns -> EINVAL (%d/%s)", r,
	       errno_name(e));
	if (halt_poll_cap(vm.fd, 0, 10000000))
		BAIL("KVM_CAP_HALT_POLL 10 ms");
	before[0] = st(&c, "halt_wakeup");
	short_halts(&c, mem, 40, 400000);
	att = st(&c, "halt_attempted_poll");
	ok = st(&c, "halt_successful_poll");
	fail = att - ok;
	tap_ok(att >= 20 && ok >= 1 && ok <= att,
	       "40 halts of about 400 us: halt_attempted_poll %llu, halt_successful_poll %llu",
	       (unsigned long long)att, (unsigned long long)ok);
	tap_ok(fail >= 1 && st(&c, "halt_poll_fail_ns") > 0,
	       "the first polls (from 10 us) were too short: %llu failed, halt_poll_fail_ns %llu",
	       (unsigned long long)fail, (unsigned long long)st(&c, "halt_poll_fail_ns"));
	tap_ok(st(&c, "halt_poll_success_ns") > 0 &&
		       stats_hist_sum(c.fd, &c.s, "halt_poll_success_hist", 0) == ok &&
		       stats_hist_sum(c.fd, &c.s, "halt_poll_fail_hist", 0) == fail,
	       "halt_poll_success_ns %llu; the histograms hold %llu successes and %llu failures",
	       (unsigned long long)st(&c, "halt_poll_success_ns"),
	       (unsigned long long)stats_hist_sum(c.fd, &c.s, "halt_poll_success_hist", 0),
	       (unsigned long long)stats_hist_sum(c.fd, &c.s, "halt_poll_fail_hist", 0));
	tap_ok(st(&c, "halt_wakeup") - before[0] >= fail,
	       "each failed poll slept and the timer woke it: halt_wakeup +%llu",
	       (unsigned long long)(st(&c, "halt_wakeup") - before[0]));

	/* KVM_CAP_HALT_POLL 0: no polling at all. */
	if (halt_poll_cap(vm.fd, 0, 0))
		BAIL("KVM_CAP_HALT_POLL 0");
	before[0] = st(&c, "halt_attempted_poll");
	before[1] = st(&c, "halt_exits");
	short_halts(&c, mem, 10, 400000);
	tap_ok(st(&c, "halt_attempted_poll") == before[0] && st(&c, "halt_exits") >= before[1] + 10,
	       "with KVM_CAP_HALT_POLL 0, 10 more halts (halt_exits +%llu) polled %llu times",
	       (unsigned long long)(st(&c, "halt_exits") - before[1]),
	       (unsigned long long)(st(&c, "halt_attempted_poll") - before[0]));
	tap_done();
}

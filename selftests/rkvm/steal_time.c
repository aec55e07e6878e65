// SPDX-License-Identifier: GPL-2.0
/*
 * Steal time: MSR_KVM_STEAL_TIME and struct kvm_steal_time in guest memory.
 *  - The supported CPUID offers KVM_FEATURE_STEAL_TIME and the MSR is in
 *    KVM_GET_MSR_INDEX_LIST; KVM_SET_MSRS with reserved bits (1-5) sets nothing.
 *  - The guest enables it at a 64-byte aligned address and reads it back; at every
 *    KVM_RUN the record's version grows and stays even (an odd one left in memory is
 *    taken as junk), preempted is cleared, flags stay 0.
 *  - The vCPU thread, pinned, shares its CPU with a busy thread for 100 ms between two
 *    KVM_RUNs: the guest's steal grows by at least the run delay the scheduler reports
 *    for the vCPU thread (/proc/thread-self/schedstat) in that time, and by no more than
 *    the thread's whole run delay.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <time.h>

#include "lib/rkvm_test.h"

#define MSR_KVM_STEAL_TIME 0x4b564d03
#define KVM_CPUID_FEATURES 0x40000001
#define KVM_FEATURE_STEAL_TIME 5
#define ST_GPA (GUEST_DATA_GPA + 0x1000)
#define P_MARK 0x90
#define P_VAL 0x91

struct steal {
	uint64_t steal;
	uint32_t version;
	uint32_t flags;
	uint8_t preempted;
	uint8_t pad8[3];
	uint32_t pad[11];
};

/* Enables steal time at ST_GPA, reads the MSR back, then marks each round. */
GUEST_CODE(st_guest, 64,
	"mov $" XSTR(MSR_KVM_STEAL_TIME) ", %ecx\n"
	"mov $" XSTR(ST_GPA) " + 1, %eax\n"
	"xor %edx, %edx\n"
	"wrmsr\n"
	"rdmsr\n"
	"out %eax, $" XSTR(P_VAL) "\n"
	"1: mov $1, %al\n"
	"out %al, $" XSTR(P_MARK) "\n"
	"jmp 1b\n");

static uint64_t run_delay_ns(void)
{
	unsigned long long run = 0, wait = 0;
	FILE *f = fopen("/proc/thread-self/schedstat", "r");

	if (!f)
		return 0;
	if (fscanf(f, "%llu %llu", &run, &wait) != 2)
		wait = 0;
	fclose(f);
	return wait;
}

static volatile int spin_stop;

static void *spin(void *arg)
{
	struct timespec t0, t;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	do
		clock_gettime(CLOCK_MONOTONIC, &t);
	while (!spin_stop && (t.tv_sec - t0.tv_sec) * 1000000000ll + t.tv_nsec - t0.tv_nsec <
		 100000000ll);
	return NULL;
}

static int has_feature(int sys_fd)
{
	struct kvm_cpuid2 *c = supported_cpuid(sys_fd);
	int r = 0;
	uint32_t i;

	for (i = 0; i < c->nent; i++)
		if (c->entries[i].function == KVM_CPUID_FEATURES)
			r = !!(c->entries[i].eax & (1u << KVM_FEATURE_STEAL_TIME));
	free(c);
	return r;
}

static int in_index_list(int sys_fd, uint32_t msr)
{
	struct kvm_msr_list *l = calloc(1, sizeof(*l) + 4096 * 4);
	uint32_t i;
	int r = 0;

	l->nmsrs = 4096;
	if (ioctl(sys_fd, KVM_GET_MSR_INDEX_LIST, l))
		BAIL("KVM_GET_MSR_INDEX_LIST");
	for (i = 0; i < l->nmsrs; i++)
		r |= l->indices[i] == msr;
	free(l);
	return r;
}

static int mark(struct vcpu *v)
{
	vcpu_run(v);
	return is_out(v, P_MARK, 1);
}

int main(void)
{
	struct guest g;
	volatile struct steal *st;
	uint32_t v1, v2, v3;
	uint64_t s1, s2, d0, d1, delay;
	cpu_set_t set;
	pthread_t t;
	int ok;

	test_watchdog(60);
	g = guest_create();
	if (!has_feature(g.vm.sys_fd))
		tap_skip_all("KVM_FEATURE_STEAL_TIME not in the supported CPUID");
	tap_plan(7);
	tap_ok(in_index_list(g.vm.sys_fd, MSR_KVM_STEAL_TIME),
	       "MSR_KVM_STEAL_TIME is in KVM_GET_MSR_INDEX_LIST");
	tap_ok(vcpu_set_msr1(&g.v, MSR_KVM_STEAL_TIME, ST_GPA | 1 | 2) == 0,
	       "KVM_SET_MSRS with a reserved bit sets nothing");

	CPU_ZERO(&set);
	CPU_SET(0, &set);
	if (sched_setaffinity(0, sizeof(set), &set))
		BAIL("sched_setaffinity");
	st = (volatile struct steal *)(g.mem + ST_GPA);
	/* Junk before the first update: an odd version, a preempted flag. */
	memset((void *)st, 0, sizeof(*st));
	st->version = 7;
	st->preempted = 1;
	guest_load(g.mem, GUEST_CODE_GPA, st_guest);
	vcpu_set_long_mode(&g.v, g.mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
	vcpu_run(&g.v);
	tap_ok(is_out(&g.v, P_VAL, 4) && io_out_value(&g.v) == ST_GPA + 1,
	       "the guest enables steal time at %#x and reads it back (%s)", ST_GPA + 1,
	       exit_str(&g.v));

	ok = mark(&g.v);
	v1 = st->version;
	s1 = st->steal;
	ok &= mark(&g.v);
	v2 = st->version;
	tap_ok(ok && v1 && !(v1 & 1) && v2 > v1 && !(v2 & 1) && !st->flags && !st->preempted,
	       "each KVM_RUN updates the record: version %u then %u (even), flags %u, "
	       "preempted %u", v1, v2, st->flags, st->preempted);
	tap_ok(s1 <= run_delay_ns(), "steal %llu ns, no more than the thread's run delay %llu",
	       (unsigned long long)s1, (unsigned long long)run_delay_ns());

	s1 = st->steal;
	d0 = run_delay_ns();
	if (pthread_create(&t, NULL, spin, NULL))
		BAIL("pthread_create");
	do
		sched_yield();
	while (run_delay_ns() - d0 < 20000000ull);
	spin_stop = 1;
	pthread_join(t, NULL);
	d1 = run_delay_ns();
	delay = d1 - d0;
	ok = mark(&g.v);
	s2 = st->steal;
	v3 = st->version;
	tap_ok(ok && s2 - s1 >= delay, "after sharing the CPU: steal grew %llu ns, at least the "
	       "%llu ns the vCPU thread waited", (unsigned long long)(s2 - s1),
	       (unsigned long long)delay);
	tap_ok(v3 > v2 && !(v3 & 1) && s2 <= run_delay_ns(),
	       "version %u, steal %llu within the thread's run delay %llu", v3,
	       (unsigned long long)s2, (unsigned long long)run_delay_ns());
	tap_done();
}

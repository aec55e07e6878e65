// SPDX-License-Identifier: GPL-2.0
/*
 * Directed yield: two vCPUs of one VM (in-kernel irqchip) share one host CPU. vCPU 0
 * loops on the KVM_HC_SCHED_YIELD hypercall naming vCPU 1's APIC ID, as a guest waiting
 * for a lock vCPU 1 holds; vCPU 1 spins on PAUSE. When vCPU 1's thread is preempted while
 * runnable, vCPU 0's hypercalls may give it vCPU 0's time: every hypercall counts in
 * directed_yield_attempted, a yield that happened in directed_yield_successful (rkvm
 * yields here; kvm-intel 7.3 under Bochs counted no success in this setup, so only the
 * bound is checked). vCPU 1's pause-loop exits yield too (KVM's kvm_vcpu_on_spin), but
 * KVM counts only the hypercall's yields: its counters stay 0.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include "lib/rkvm_test.h"
#include "lib/stats.h"

#define CODE_GPA 0x1000

/* 1: mov eax, 11 (KVM_HC_SCHED_YIELD) ; mov ebx, 1 ; vmcall ; jmp 1b */
static uint8_t yield_loop[] = {
	0x66, 0xb8, 0x0b, 0x00, 0x00, 0x00, 0x66, 0xbb, 0x01, 0x00, 0x00, 0x00,
	0x0f, 0x01, 0xc1, 0xeb, 0xef,
};
static const uint8_t pause_loop[] = { 0xf3, 0x90, 0xeb, 0xfc }; /* 1: pause ; jmp 1b */

static struct vcpu vcpus[2];

static void on_usr1(int sig)
{
}

static void *runner(void *arg)
{
	struct vcpu *v = arg;
	cpu_set_t one;

	CPU_ZERO(&one);
	CPU_SET(0, &one);
	sched_setaffinity(0, sizeof(one), &one);
	/* Ends with EINTR when main() signals this thread. */
	ioctl(v->fd, KVM_RUN, 0);
	return NULL;
}

static uint64_t stat_of(struct vcpu *v, const char *name)
{
	struct stats s = { 0 };
	int fd = ioctl(v->fd, KVM_GET_STATS_FD, 0);
	uint64_t val;

	if (fd < 0 || !stats_load(fd, &s))
		BAIL("KVM_GET_STATS_FD");
	val = stats_value(fd, &s, name);
	free(s.descs);
	close(fd);
	return val;
}

int main(void)
{
	struct sigaction sa = { .sa_handler = on_usr1 };
	pthread_t t[2];
	struct vm vm;
	uint8_t *mem;

	test_watchdog(120);
	sigaction(SIGUSR1, &sa, NULL);
	vm = vm_create();
	if (ioctl(vm.fd, KVM_SET_TSS_ADDR, 0xfffbd000))
		BAIL("KVM_SET_TSS_ADDR");
	if (ioctl(vm.fd, KVM_CREATE_IRQCHIP, 0))
		BAIL("KVM_CREATE_IRQCHIP");
	mem = vm_add_memory(&vm, 0, 0, 0x10000, 0);
	if (!host_is_intel())
		yield_loop[14] = 0xd9; /* vmmcall */
	memcpy(mem + CODE_GPA, yield_loop, sizeof(yield_loop));
	memcpy(mem + CODE_GPA + 0x100, pause_loop, sizeof(pause_loop));
	for (int i = 0; i < 2; i++) {
		struct kvm_mp_state runnable = { .mp_state = KVM_MP_STATE_RUNNABLE };

		vcpus[i] = vcpu_create(&vm, i);
		vcpu_set_real_mode(&vcpus[i], CODE_GPA + i * 0x100);
		/* The AP starts without waiting for INIT and SIPI. */
		if (ioctl(vcpus[i].fd, KVM_SET_MP_STATE, &runnable))
			BAIL("KVM_SET_MP_STATE");
	}
	tap_plan(3);
	for (int i = 0; i < 2; i++)
		if (pthread_create(&t[i], NULL, runner, &vcpus[i]))
			BAIL("pthread_create");
	usleep(500000);
	for (int i = 0; i < 2; i++) {
		vcpus[i].run->immediate_exit = 1;
		pthread_kill(t[i], SIGUSR1);
		pthread_join(t[i], NULL);
	}
	tap_ok(stat_of(&vcpus[0], "directed_yield_attempted") >= 1,
	       "the hypercall asked to yield to vCPU 1: directed_yield_attempted %llu",
	       (unsigned long long)stat_of(&vcpus[0], "directed_yield_attempted"));
	tap_ok(stat_of(&vcpus[0], "directed_yield_successful") <=
		       stat_of(&vcpus[0], "directed_yield_attempted"),
	       "directed_yield_successful %llu, at most the attempts",
	       (unsigned long long)stat_of(&vcpus[0], "directed_yield_successful"));
	tap_ok(stat_of(&vcpus[1], "directed_yield_attempted") == 0 &&
		       stat_of(&vcpus[1], "directed_yield_successful") == 0,
	       "the pause loop's yields are not counted (%llu, %llu)",
	       (unsigned long long)stat_of(&vcpus[1], "directed_yield_attempted"),
	       (unsigned long long)stat_of(&vcpus[1], "directed_yield_successful"));
	tap_done();
}

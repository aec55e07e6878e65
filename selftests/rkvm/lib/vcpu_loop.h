/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vCPU threads running IO-exit loops, for the SMP tests.
 *
 * Each vCPU runs, in 32-bit protected mode, rounds of a loop of N iterations; every
 * iteration OUTs the remaining count (4 bytes) to the vCPU's own port, increments the
 * vCPU's own counter in guest memory and, with a locked instruction, the VM's shared
 * counter; after the loop the guest halts. The thread (pinned to a CPU) checks every
 * exit: exactly the ports and values in order, then HLT.
 */
#ifndef RKVM_VCPU_LOOP_H
#define RKVM_VCPU_LOOP_H

#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <time.h>

#include "rkvm_test.h"

#define LOOP_SHARED_GPA GUEST_DATA_GPA
#define LOOP_COUNTERS_GPA (GUEST_DATA_GPA + 0x100)

GUEST_CODE(loop_guest, 32,
	"1: mov %ecx, %eax\n"
	"out %eax, %dx\n"
	"incl (%ebx)\n"
	"lock incl (%esi)\n"
	"loop 1b\n"
	"hlt\n");

struct loop_vcpu {
	/* Set up by loop_vm_create. */
	struct vcpu v;
	uint8_t *mem;
	int index;		/* vCPU id */
	uint16_t port;
	int cpu;		/* the CPU the thread pins itself to */
	uint32_t n;		/* iterations per round */
	int min_rounds;
	volatile int *stop;	/* more rounds until *stop (after min_rounds) */
	/* Results. */
	uint64_t exits;
	int rounds, bad, pinned_ok;
	char diag[200];
	pthread_t tid;
};

struct loop_vm {
	struct vm vm;
	uint8_t *mem;
	int nvcpus;
	struct loop_vcpu vcpus[4];
};

static inline int online_cpus(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	return n > 0 ? n : 1;
}

/* Pins the calling thread to CPU; returns whether it runs there now. */
static inline int pin_self(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set))
		return 0;
	return sched_getcpu() == cpu;
}

/* A VM with NVCPUS vCPUs; vCPU i OUTs to PORT_BASE + i and its thread runs on cpus[i]. */
static inline void loop_vm_create(struct loop_vm *lv, int nvcpus, uint16_t port_base,
				  const int *cpus, uint32_t n, int min_rounds, volatile int *stop)
{
	int i;

	lv->vm = vm_create();
	if (ioctl(lv->vm.fd, KVM_SET_TSS_ADDR, 0xfffbd000))
		BAIL("KVM_SET_TSS_ADDR");
	lv->mem = vm_add_memory(&lv->vm, 0, 0, GUEST_LOW_SIZE, 0);
	guest_load(lv->mem, GUEST_CODE_GPA, loop_guest);
	lv->nvcpus = nvcpus;
	for (i = 0; i < nvcpus; i++) {
		struct loop_vcpu *lc = &lv->vcpus[i];

		memset(lc, 0, sizeof(*lc));
		lc->v = vcpu_create(&lv->vm, i);
		lc->mem = lv->mem;
		lc->index = i;
		lc->port = port_base + i;
		lc->cpu = cpus[i];
		lc->n = n;
		lc->min_rounds = min_rounds;
		lc->stop = stop;
		vcpu_set_protected_mode(&lc->v, lv->mem, GUEST_CODE_GPA, GUEST_STACK_TOP - i * 0x1000);
	}
}

static inline uint32_t *loop_counter(struct loop_vcpu *lc)
{
	return (uint32_t *)(lc->mem + LOOP_COUNTERS_GPA + 4 * lc->index);
}

static inline uint32_t loop_shared(struct loop_vm *lv)
{
	return __atomic_load_n((uint32_t *)(lv->mem + LOOP_SHARED_GPA), __ATOMIC_SEQ_CST);
}

static void *loop_thread(void *arg)
{
	struct loop_vcpu *lc = arg;
	struct kvm_run *run = lc->v.run;

	lc->pinned_ok = pin_self(lc->cpu);
	while (!lc->bad && (lc->rounds < lc->min_rounds || !*lc->stop)) {
		struct kvm_regs r;
		uint32_t want = lc->n;

		vcpu_get_regs(&lc->v, &r);
		r.rip = GUEST_CODE_GPA;
		r.rflags = 2;
		r.rcx = lc->n;
		r.rdx = lc->port;
		r.rbx = LOOP_COUNTERS_GPA + 4 * lc->index;
		r.rsi = LOOP_SHARED_GPA;
		vcpu_set_regs(&lc->v, &r);
		for (;;) {
			if (ioctl(lc->v.fd, KVM_RUN, 0)) {
				if (errno == EINTR)
					continue;
				snprintf(lc->diag, sizeof(lc->diag), "KVM_RUN: %s", strerror(errno));
				lc->bad++;
				break;
			}
			if (run->exit_reason == KVM_EXIT_HLT && !want)
				break;
			if (!is_out(&lc->v, lc->port, 4) || io_out_value(&lc->v) != want || !want) {
				snprintf(lc->diag, sizeof(lc->diag),
					 "round %d: exit %s, want OUT of %u to port %#x", lc->rounds,
					 exit_str(&lc->v), want, lc->port);
				lc->bad++;
				break;
			}
			want--;
			lc->exits++;
		}
		if (!lc->bad)
			lc->rounds++;
	}
	return NULL;
}

static inline void loop_vm_start(struct loop_vm *lv)
{
	int i;

	for (i = 0; i < lv->nvcpus; i++)
		if (pthread_create(&lv->vcpus[i].tid, NULL, loop_thread, &lv->vcpus[i]))
			BAIL("pthread_create");
}

static inline void loop_vm_join(struct loop_vm *lv)
{
	int i;

	for (i = 0; i < lv->nvcpus; i++)
		pthread_join(lv->vcpus[i].tid, NULL);
}

/* One check per vCPU and one for the VM: exact exits, counters, shared counter. */
static inline void loop_vm_check(struct loop_vm *lv, const char *name)
{
	uint64_t total = 0;
	int i;

	for (i = 0; i < lv->nvcpus; i++) {
		struct loop_vcpu *lc = &lv->vcpus[i];
		uint64_t want = (uint64_t)lc->rounds * lc->n;

		total += want;
		tap_ok(!lc->bad && lc->rounds >= lc->min_rounds && lc->exits == want &&
			       *loop_counter(lc) == (uint32_t)want,
		       "%s vCPU %d (CPU %d%s): %d rounds, %llu IO exits in order (want %llu), its "
		       "counter %u%s%s", name, i, lc->cpu, lc->pinned_ok ? "" : ", not pinned",
		       lc->rounds, (unsigned long long)lc->exits, (unsigned long long)want,
		       *loop_counter(lc), lc->bad ? "; " : "", lc->diag);
	}
	tap_ok(loop_shared(lv) == (uint32_t)total,
	       "%s: the shared counter, incremented with lock by all vCPUs, is %u (want %llu)", name,
	       loop_shared(lv), (unsigned long long)total);
}

/* ---- The kernel log ------------------------------------------------------------------ */

#include <sys/klog.h>

/* Writes a unique marker into the kernel log; returns it (static buffer). */
static inline const char *kmsg_mark(void)
{
	static char mark[64];
	int fd = open("/dev/kmsg", O_WRONLY);

	snprintf(mark, sizeof(mark), "rkvm selftest mark %d.%ld", getpid(), monotonic_ms());
	if (fd >= 0) {
		if (write(fd, mark, strlen(mark)) < 0)
			mark[0] = 0;
		close(fd);
	} else {
		mark[0] = 0;
	}
	return mark;
}

/*
 * The first line after MARK in the kernel log that shows a kernel bug (Oops, BUG, WARNING,
 * Call Trace, general protection fault), in a static buffer; NULL if none. Without the
 * mark, the whole log.
 */
static inline const char *kmsg_bad_since(const char *mark)
{
	static char line[256];
	static const char *bad[] = { "Oops", "BUG", "WARNING", "Call Trace",
				     "general protection fault", "kernel panic" };
	int size = klogctl(10 /* SYSLOG_ACTION_SIZE_BUFFER */, NULL, 0);
	char *buf, *p, *end;
	unsigned int i;

	if (size <= 0)
		size = 1 << 20;
	buf = malloc(size + 1);
	if (!buf)
		BAIL("malloc");
	size = klogctl(3 /* SYSLOG_ACTION_READ_ALL */, buf, size);
	if (size < 0)
		BAIL("klogctl");
	buf[size] = 0;
	p = *mark ? strstr(buf, mark) : NULL;
	p = p ? p : buf;
	for (; *p; p = end + (*end != 0)) {
		end = strchr(p, '\n');
		if (!end)
			end = p + strlen(p);
		for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			char *hit = memmem(p, end - p, bad[i], strlen(bad[i]));

			if (hit) {
				snprintf(line, sizeof(line), "%.*s", (int)(end - p), p);
				free(buf);
				return line;
			}
		}
	}
	free(buf);
	return NULL;
}

/* The taint bits that mean a kernel bug happened: bad page, died, warning, soft lockup. */
static inline long taint_bad(void)
{
	FILE *f = fopen("/proc/sys/kernel/tainted", "r");
	long t = 0;

	if (f) {
		if (fscanf(f, "%ld", &t) != 1)
			t = 0;
		fclose(f);
	}
	return t & (32 | 128 | 512 | 16384);
}

#endif /* RKVM_VCPU_LOOP_H */

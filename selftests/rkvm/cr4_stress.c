// SPDX-License-Identifier: GPL-2.0
/*
 * Host CR4 changing under running vCPUs.
 *
 * A VM's two vCPUs run rounds of IO-exit loops (lib/vcpu_loop.h) on CPU 0 and CPU 1 (at
 * least 20 rounds of 1000 exits each, at most three seconds). Meanwhile, on the same CPUs:
 *  - two processes (one per CPU) loop prctl(PR_SET_TSC, PR_TSC_SIGSEGV / PR_TSC_ENABLE),
 *    which flips CR4.TSD at once and at every context switch to or from them, and check
 *    that RDTSC faults exactly when it should (100 loops each at least);
 *  - if /sys/bus/event_source/devices/cpu/rdpmc exists, a process writes 0, 1, 2 to it in
 *    turn from alternating CPUs (each write flips CR4.PCE on every CPU by IPI).
 * A hypervisor that restores a stale host CR4 after a VM exit breaks RDTSC for the other
 * processes (or for this one). Checked: every vCPU exit exact, the counters, the RDTSC
 * behaviour, no kernel Oops/BUG/WARNING in the log since the start, no new bad taint.
 */
#include "lib/vcpu_loop.h"

#include <setjmp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#define N 1000
/*
 * Until each toggler did MIN_TOGGLES loops and each vCPU MIN_ROUNDS rounds, at most MAX_MS:
 * about a third of a second of the emulated machine's time under Bochs, where each second
 * takes minutes.
 */
#define MIN_TOGGLES 100
#define MIN_ROUNDS 20
#define MAX_MS 3000
#define RDPMC "/sys/bus/event_source/devices/cpu/rdpmc"

struct shared {
	volatile int stop;
	struct {
		long loops, fault_missing, fault_unexpected;
		int pinned;
	} tsc[2];
	long rdpmc_writes, rdpmc_errors;
};

static struct shared *sh;
static sigjmp_buf jb;

static void on_segv(int sig)
{
	siglongjmp(jb, 1);
}

/* Whether RDTSC faults here (SIGSEGV). */
static int rdtsc_faults(void)
{
	uint32_t lo, hi;

	if (sigsetjmp(jb, 1))
		return 1;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return 0;
}

static void tsc_toggler(int idx, int cpu)
{
	signal(SIGSEGV, on_segv);
	sh->tsc[idx].pinned = pin_self(cpu);
	while (!sh->stop) {
		if (prctl(PR_SET_TSC, PR_TSC_SIGSEGV) || !rdtsc_faults())
			sh->tsc[idx].fault_missing++;
		sched_yield();
		if (prctl(PR_SET_TSC, PR_TSC_ENABLE) || rdtsc_faults())
			sh->tsc[idx].fault_unexpected++;
		sched_yield();
		sh->tsc[idx].loops++;
	}
	_exit(0);
}

static void rdpmc_writer(int ncpu)
{
	static const char *vals[] = { "0", "1", "2" };
	long i;

	for (i = 0; !sh->stop; i++) {
		int fd = open(RDPMC, O_WRONLY);

		pin_self(i % ncpu);
		if (fd < 0 || write(fd, vals[i % 3], 1) != 1)
			sh->rdpmc_errors++;
		else
			sh->rdpmc_writes++;
		if (fd >= 0)
			close(fd);
		sched_yield();
	}
	_exit(0);
}

static pid_t spawn(void (*fn)(int, int), int a, int b)
{
	pid_t pid = fork();

	if (pid < 0)
		BAIL("fork");
	if (!pid)
		fn(a, b);
	return pid;
}

static void rdpmc_child(int ncpu, int unused)
{
	rdpmc_writer(ncpu);
}

int main(void)
{
	int ncpu = online_cpus(), cpus[2] = { 0, 1 % ncpu }, i, status;
	char rdpmc_orig[8] = "";
	static struct loop_vm lv;
	static volatile int stop;
	const char *mark, *bad;
	long taint0, t0;
	pid_t pids[3];
	int npids = 0, have_rdpmc;

	test_watchdog(240);
	tap_plan(3 + 2 + 1 + 2);
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		BAIL("mmap shared");
	memset(sh, 0, sizeof(*sh));
	{
		int fd = open(RDPMC, O_RDWR);

		have_rdpmc = fd >= 0 && read(fd, rdpmc_orig, sizeof(rdpmc_orig) - 1) > 0;
		if (fd >= 0)
			close(fd);
	}
	taint0 = taint_bad();
	mark = kmsg_mark();
	tap_diag("%d CPUs online, %s", ncpu, have_rdpmc ? RDPMC " present" : "no " RDPMC);

	/* The stressors first: no fork after the VM exists (its memory would turn COW). */
	for (i = 0; i < 2; i++)
		pids[npids++] = spawn(tsc_toggler, i, cpus[i]);
	if (have_rdpmc)
		pids[npids++] = spawn(rdpmc_child, ncpu, 0);
	loop_vm_create(&lv, 2, 0x30, cpus, N, 1, &stop);
	t0 = monotonic_ms();
	loop_vm_start(&lv);
	while (monotonic_ms() - t0 < MAX_MS && !lv.vcpus[0].bad && !lv.vcpus[1].bad &&
	       !(sh->tsc[0].loops >= MIN_TOGGLES && sh->tsc[1].loops >= MIN_TOGGLES &&
		 lv.vcpus[0].rounds >= MIN_ROUNDS && lv.vcpus[1].rounds >= MIN_ROUNDS)) {
		usleep(10000);
		rdtsc_faults(); /* this process never asked for TSD */
	}
	stop = 1;
	loop_vm_join(&lv);
	sh->stop = 1;
	for (i = 0; i < npids; i++)
		waitpid(pids[i], &status, 0);
	if (have_rdpmc) {
		int fd = open(RDPMC, O_WRONLY);

		if (fd < 0 || write(fd, rdpmc_orig, strcspn(rdpmc_orig, "\n")) <= 0)
			tap_diag("could not restore %s to %s", RDPMC, rdpmc_orig);
		if (fd >= 0)
			close(fd);
	}
	tap_diag("%ld ms; togglers: %ld and %ld loops", monotonic_ms() - t0, sh->tsc[0].loops,
		 sh->tsc[1].loops);

	loop_vm_check(&lv, "VM");
	for (i = 0; i < 2; i++)
		tap_ok(sh->tsc[i].loops > 0 && !sh->tsc[i].fault_missing &&
			       !sh->tsc[i].fault_unexpected,
		       "PR_SET_TSC toggler on CPU %d%s: %ld loops; RDTSC did not fault under "
		       "PR_TSC_SIGSEGV %ld times, faulted under PR_TSC_ENABLE %ld times", cpus[i],
		       sh->tsc[i].pinned ? "" : " (not pinned)", sh->tsc[i].loops,
		       sh->tsc[i].fault_missing, sh->tsc[i].fault_unexpected);
	if (have_rdpmc)
		tap_ok(sh->rdpmc_writes > 0 && !sh->rdpmc_errors,
		       "%ld writes of 0/1/2 to %s (%ld failed)", sh->rdpmc_writes, RDPMC,
		       sh->rdpmc_errors);
	else
		tap_ok(1, "# SKIP no %s (no hardware PMU in this machine)", RDPMC);
	bad = kmsg_bad_since(mark);
	tap_ok(!bad, "the kernel log has no Oops/BUG/WARNING since the start%s%s", bad ? ": " : "",
	       bad ? bad : "");
	tap_ok(taint_bad() == taint0, "no new bad taint (%#lx, was %#lx)", taint_bad(), taint0);
	tap_done();
}

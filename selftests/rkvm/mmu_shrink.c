// SPDX-License-Identifier: GPL-2.0
/*
 * Memory pressure takes the hypervisor's page-table pages back while a guest runs.
 *
 * A guest sums the first word of each of 128 pages, OUTs the sum and starts over; the
 * test checks every sum. Meanwhile another thread writes 2 to /proc/sys/vm/drop_caches
 * over and over, which calls every shrinker, the hypervisor's MMU shrinker included: it
 * may free the guest's page tables at any moment (rkvm frees them only after every CPU
 * has flushed, and never waits for a lock a VM creation holds while it allocates). A
 * second VM is created and destroyed in a loop by a third thread for that last part. The
 * guest must keep reading its own data, and the host must survive (the debug kernel's
 * KASAN and lockdep watch the rest).
 *
 * drop_caches calls the shrinkers outside reclaim. A child process also drives the
 * largest zone's free pages below its low watermark again and again, so that kswapd (or
 * an allocation's direct reclaim) calls them from reclaim, where lockdep sees the
 * reclaim context: a shrinker that waits for a lock a VM creation holds while it
 * allocates is a possible deadlock there (the debug kernel reports it). The test checks
 * that reclaim ran meanwhile.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>

#include "lib/rkvm_test.h"

#define PAGE 4096ull
#define DATA_GPA 0x1000000ull
#define DATA_PAGES 128
#define PORT_SUM 0x94
#define ROUNDS 200
#define SECONDS 40 /* the most, guest clock: fewer rounds on a slow machine (a debug kernel) */

GUEST_CODE(shrink_guest, 64,
	"2: mov %rbx, %rsi\n"
	"mov $" XSTR(DATA_PAGES) ", %ecx\n"
	"xor %eax, %eax\n"
	"1: add (%rsi), %eax\n"
	"add $4096, %rsi\n"
	"loop 1b\n"
	"out %eax, $" XSTR(PORT_SUM) "\n"
	"jmp 2b\n");

static volatile int stop;
static int drops, drop_errors, vms_made;

static void *dropper(void *arg)
{
	while (!stop) {
		int fd = open("/proc/sys/vm/drop_caches", O_WRONLY);

		if (fd < 0 || write(fd, "2", 1) != 1)
			drop_errors++;
		else
			drops++;
		if (fd >= 0)
			close(fd);
		usleep(10000);
	}
	return NULL;
}

static void *churner(void *arg)
{
	while (!stop) {
		struct guest g = guest_create();

		guest_destroy(&g);
		vms_made++;
		usleep(5000);
	}
	return NULL;
}

/* The sum of the /proc/vmstat counters whose name starts with one of `names`. */
static long vmstat_sum(const char *const *names)
{
	char key[64];
	long v, sum = 0;
	FILE *f = fopen("/proc/vmstat", "r");

	if (!f)
		return -1;
	while (fscanf(f, "%63s %ld", key, &v) == 2) {
		for (const char *const *n = names; *n; n++)
			if (!strncmp(key, *n, strlen(*n)))
				sum += v;
	}
	fclose(f);
	return sum;
}

static const char *const reclaim_counters[] = { "pageoutrun", "allocstall_", NULL };

/*
 * Free pages and low watermark of the zone with the most managed pages (fixed: as it
 * fills, a small zone may have more free pages, and must not be mistaken for it).
 */
static int biggest_zone(long *free, long *low)
{
	char line[256];
	long f = 0, l = 0, v, best = -1;
	FILE *zi = fopen("/proc/zoneinfo", "r");

	if (!zi)
		return -1;
	while (fgets(line, sizeof(line), zi)) {
		if (sscanf(line, " pages free %ld", &v) == 1)
			f = v;
		else if (sscanf(line, " low %ld", &v) == 1)
			l = v;
		else if (sscanf(line, " managed %ld", &v) == 1 && v > best) {
			best = v;
			*free = f;
			*low = l;
		}
	}
	fclose(zi);
	return best <= 0 ? -1 : 0;
}

/*
 * The child: fill the biggest zone down to just below its low watermark (kswapd wakes),
 * hold it a moment, give it all back, again. Chunks halve as free memory nears the mark,
 * so it stops short of the min watermark (where an allocation would reclaim directly, and
 * could end in the OOM killer: this process is the one it would pick).
 */
static void presser(void)
{
	static void *chunk[8192];
	static size_t len[8192];

	for (;;) {
		int n = 0;

		while (n < 8192) {
			long free, low, pages;

			if (biggest_zone(&free, &low) || free < low)
				break;
			pages = (free - low) / 2 + 16;
			len[n] = pages * PAGE;
			chunk[n] = mmap(NULL, len[n], PROT_READ | PROT_WRITE,
					MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
			if (chunk[n] == MAP_FAILED)
				break;
			n++;
		}
		usleep(100000);
		while (n--)
			munmap(chunk[n], len[n]);
		usleep(100000);
	}
}

int main(void)
{
	uint32_t want = 0, bad = 0, sum = 0;
	long reclaim0, reclaim1;
	pthread_t t1, t2;
	pid_t child, parent;
	struct kvm_regs regs;
	struct guest g;
	uint8_t *data;
	time_t t0;
	int i;

	test_watchdog(240);
	if (access("/proc/sys/vm/drop_caches", W_OK))
		tap_skip_all("/proc/sys/vm/drop_caches is not writable");
	tap_plan(4);
	g = guest_create();
	data = vm_add_memory(&g.vm, 1, DATA_GPA, DATA_PAGES * PAGE, 0);
	for (i = 0; i < DATA_PAGES; i++) {
		*(uint32_t *)(data + i * PAGE) = 0x1000 + i;
		want += 0x1000 + i;
	}
	guest_load(g.mem, GUEST_CODE_GPA, shrink_guest);
	vcpu_set_long_mode(&g.v, g.mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
	vcpu_get_regs(&g.v, &regs);
	regs.rbx = DATA_GPA;
	vcpu_set_regs(&g.v, &regs);

	reclaim0 = vmstat_sum(reclaim_counters);
	parent = getpid();
	child = fork();
	if (child < 0)
		BAIL("fork");
	if (child == 0) {
		/* Never outlive the test (a BAIL or the watchdog): the pressure would stay. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(0);
		presser();
		_exit(0);
	}
	if (pthread_create(&t1, NULL, dropper, NULL) || pthread_create(&t2, NULL, churner, NULL))
		BAIL("pthread_create");
	t0 = time(NULL);
	/* At least ROUNDS rounds, and until reclaim ran (or the time is up). */
	for (i = 0; time(NULL) - t0 < SECONDS; i++) {
		if (i >= ROUNDS && i % 16 == 0 && vmstat_sum(reclaim_counters) > reclaim0)
			break;
		vcpu_run(&g.v);
		if (!is_out(&g.v, PORT_SUM, 4)) {
			tap_diag("round %d: %s", i, exit_str(&g.v));
			bad++;
			break;
		}
		sum = io_out_value(&g.v);
		if (sum != want && bad++ < 3)
			tap_diag("round %d: sum %#x, want %#x", i, sum, want);
	}
	stop = 1;
	pthread_join(t1, NULL);
	pthread_join(t2, NULL);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	reclaim1 = vmstat_sum(reclaim_counters);
	tap_ok(i >= 5 && !bad, "%d rounds of the guest's sum, %u wrong", i, bad);
	tap_ok(drops > 0 && !drop_errors, "%d shrinker calls meanwhile (%d failed writes)", drops,
	       drop_errors);
	tap_ok(vms_made > 0, "%d VMs created and destroyed meanwhile", vms_made);
	tap_ok(reclaim0 >= 0 && reclaim1 > reclaim0,
	       "memory pressure made the kernel reclaim meanwhile (kswapd runs and direct reclaims: %ld)",
	       reclaim1 - reclaim0);
	tap_done();
}

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
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <time.h>

#include "lib/rkvm_test.h"

#define PAGE 4096ull
#define DATA_GPA 0x1000000ull
#define DATA_PAGES 128
#define PORT_SUM 0x94
#define ROUNDS 200
#define SECONDS 15 /* or fewer rounds when the machine is slow (a debug kernel) */

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

int main(void)
{
	uint32_t want = 0, bad = 0, sum = 0;
	pthread_t t1, t2;
	struct kvm_regs regs;
	struct guest g;
	uint8_t *data;
	time_t t0;
	int i;

	test_watchdog(240);
	if (access("/proc/sys/vm/drop_caches", W_OK))
		tap_skip_all("/proc/sys/vm/drop_caches is not writable");
	tap_plan(3);
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

	if (pthread_create(&t1, NULL, dropper, NULL) || pthread_create(&t2, NULL, churner, NULL))
		BAIL("pthread_create");
	t0 = time(NULL);
	for (i = 0; i < ROUNDS && time(NULL) - t0 < SECONDS; i++) {
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
	tap_ok(i >= 5 && !bad, "%d rounds of the guest's sum, %u wrong", i, bad);
	tap_ok(drops > 0 && !drop_errors, "%d shrinker calls meanwhile (%d failed writes)", drops,
	       drop_errors);
	tap_ok(vms_made > 0, "%d VMs created and destroyed meanwhile", vms_made);
	tap_done();
}

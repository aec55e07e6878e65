// SPDX-License-Identifier: GPL-2.0
/*
 * Two vCPUs fault on the same guest page while the VMM supplies it on demand through
 * userfaultfd (as a VMM doing post-copy migration does): both faults wait in the kernel
 * until the VMM copies the page in, then the page is mapped once. The vCPU that comes
 * second either finds the mapping the first made (KVM counts that as pf_spurious) or,
 * if it went back to the guest first, no longer faults at all; both read the copied
 * byte.
 */
#define _GNU_SOURCE
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <sys/syscall.h>
#include "lib/rkvm_test.h"
#include "lib/stats.h"

#define CODE_GPA 0x1000
#define PAGE_GPA 0x8000

static const uint8_t guest_code[] = {
	0xe6, 0xf2,				/* out 0xf2, al (the code page is mapped) */
	0xa0, 0x00, 0x80,			/* mov al, [0x8000] */
	0xe6, 0xf1,				/* out 0xf1, al */
	0xf4,					/* hlt */
};

/* Adds the vCPU's pf_fixed and pf_spurious to FIXED and SPURIOUS. */
static void add_pf_stats(struct vcpu *v, uint64_t *fixed, uint64_t *spurious)
{
	struct stats s;
	int fd = ioctl(v->fd, KVM_GET_STATS_FD, 0);

	if (fd < 0 || !stats_load(fd, &s))
		BAIL("KVM_GET_STATS_FD");
	*spurious += stats_value(fd, &s, "pf_spurious");
	*fixed += stats_value(fd, &s, "pf_fixed");
	free(s.descs);
	close(fd);
}

static void *run_vcpu(void *arg)
{
	vcpu_run(arg);
	return NULL;
}

int main(void)
{
	struct uffdio_api api = { .api = UFFD_API };
	struct uffdio_register reg = { .mode = UFFDIO_REGISTER_MODE_MISSING };
	struct uffdio_copy copy = { 0 };
	uint64_t spurious = 0, fixed = 0, fixed0 = 0, spurious0 = 0;
	struct vcpu v[2];
	pthread_t t[2];
	struct vm vm;
	uint8_t *mem, *src;
	int uffd, i, faults = 0, read_ok = 1;

	test_watchdog(120);
	uffd = syscall(__NR_userfaultfd, O_CLOEXEC);
	if (uffd < 0)
		tap_skip_all("no userfaultfd");
	if (ioctl(uffd, UFFDIO_API, &api))
		BAIL("UFFDIO_API");
	tap_plan(3);
	vm = vm_create();
	v[0] = real_mode_vcpu(&vm, CODE_GPA, guest_code, sizeof(guest_code), &mem);
	v[1] = vcpu_create(&vm, 1);
	vcpu_set_real_mode(&v[1], CODE_GPA);
	/* Each vCPU first runs to its OUT to 0xf2: the code page's faults are behind it. */
	for (i = 0; i < 2; i++) {
		if (vcpu_run(&v[i]) != KVM_EXIT_IO || !is_out(&v[i], 0xf2, 1))
			BAIL("vCPU %d: %s before the race", i, exit_str(&v[i]));
		add_pf_stats(&v[i], &fixed0, &spurious0);
	}
	/* The page is missing: a fault on it waits for this thread. */
	madvise(mem + PAGE_GPA, 4096, MADV_DONTNEED);
	reg.range.start = (uintptr_t)(mem + PAGE_GPA);
	reg.range.len = 4096;
	if (ioctl(uffd, UFFDIO_REGISTER, &reg))
		BAIL("UFFDIO_REGISTER");
	for (i = 0; i < 2; i++)
		if (pthread_create(&t[i], NULL, run_vcpu, &v[i]))
			BAIL("pthread_create");
	/* Both vCPUs wait in their fault. */
	while (faults < 2) {
		struct pollfd p = { .fd = uffd, .events = POLLIN };
		struct uffd_msg msg;

		if (poll(&p, 1, 20000) != 1)
			break;
		if (read(uffd, &msg, sizeof(msg)) == sizeof(msg) && msg.event == UFFD_EVENT_PAGEFAULT &&
		    msg.arg.pagefault.address == reg.range.start)
			faults++;
	}
	tap_ok(faults == 2, "both vCPUs wait for the missing page (%d faults reported)", faults);
	src = aligned_alloc(4096, 4096);
	memset(src, 0x5a, 4096);
	copy.dst = reg.range.start;
	copy.src = (uintptr_t)src;
	copy.len = 4096;
	if (ioctl(uffd, UFFDIO_COPY, &copy))
		BAIL("UFFDIO_COPY");
	for (i = 0; i < 2; i++) {
		pthread_join(t[i], NULL);
		if (!is_out(&v[i], 0xf1, 1) || io_out_value(&v[i]) != 0x5a) {
			tap_diag("vCPU %d: %s", i, exit_str(&v[i]));
			read_ok = 0;
		}
		add_pf_stats(&v[i], &fixed, &spurious);
	}
	tap_ok(read_ok, "both vCPUs read the byte the VMM copied in (0x5a)");
	tap_ok(fixed - fixed0 == 1 && spurious - spurious0 <= 1,
	       "the page was mapped once: pf_fixed +%llu (want 1), pf_spurious +%llu (0 or 1)",
	       (unsigned long long)(fixed - fixed0), (unsigned long long)(spurious - spurious0));
	tap_done();
}

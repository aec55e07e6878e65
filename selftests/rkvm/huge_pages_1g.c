// SPDX-License-Identifier: GPL-2.0
/*
 * 1 GiB mappings in the two-dimensional page table. A memslot of 1 GiB at a 1 GiB aligned
 * guest address, backed by a 1 GiB hugetlbfs page:
 *  - the guest's writes at both ends of it map it with one entry (pages_1g 1, pages_2m 0);
 *  - turning on dirty logging leaves no 1 GiB mapping, and a write is then logged page by
 *    page; turning it off lets the next touch map 1 GiB again;
 *  - memory the host maps read-only is mapped for reading only, 1 GiB at once: the guest's
 *    read works, its write ends KVM_RUN with EFAULT and never reaches the page.
 * Needs a free 1 GiB huge page, reserved at boot (hugepagesz=1G hugepages=1, which the
 * qemu-svm leg passes), and a CPU with 1 GiB pages; skipped otherwise.
 */
#include <sys/mman.h>
#include "lib/rkvm_test.h"
#include "lib/stats.h"

#ifndef MAP_HUGE_1GB
#define MAP_HUGE_1GB (30 << 26)
#endif

#define GIANT_SLOT 1
#define GIANT_GPA 0x40000000ull
#define GB1 (1ull << 30)
#define FREE_1G "/sys/kernel/mm/hugepages/hugepages-1048576kB/free_hugepages"

GUEST_CODE(giant_guest, 32,
	/* Step 1: a write at each end. */
	"movb $0x11, 0x40000000\n"
	"movb $0x22, 0x7ffff000\n"
	"outb %al, $0x10\n"
	/* Step 2 (logging on): one more write. */
	"movb $0x33, 0x40003000\n"
	"outb %al, $0x11\n"
	/* Step 3 (logging off): a touch. */
	"movb $0x44, 0x40005000\n"
	"outb %al, $0x12\n"
	/* Step 4 (read-only): read, then write. */
	"movb 0x40100000, %al\n"
	"outb %al, $0x13\n"
	"movb $0x55, 0x40100000\n"
	"outb %al, $0x14\n"
	"hlt\n");

static struct guest g;
static int vm_stats;
static struct stats vs;

static unsigned long long vm_stat(const char *name)
{
	return (unsigned long long)stats_value(vm_stats, &vs, name);
}

static void set_slot(uint8_t *hva, uint32_t flags)
{
	vm_set_slot(g.vm.fd, GIANT_SLOT, GIANT_GPA, GB1, hva, flags);
}

static int free_giant_pages(void)
{
	FILE *f = fopen(FREE_1G, "r");
	int n = 0;

	if (f) {
		if (fscanf(f, "%d", &n) != 1)
			n = 0;
		fclose(f);
	}
	return n;
}

int main(void)
{
	static uint64_t bitmap[GB1 / 4096 / 64];
	struct kvm_dirty_log log = { .slot = GIANT_SLOT, .dirty_bitmap = bitmap };
	uint8_t *hva;
	long r;

	test_watchdog(300);
	if (free_giant_pages() < 1)
		tap_skip_all("no free 1 GiB huge page (boot with hugepagesz=1G hugepages=1)");
	hva = mmap(NULL, GB1, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_HUGE_1GB, -1, 0);
	if (hva == MAP_FAILED)
		tap_skip_all("mmap of a 1 GiB huge page failed");
	g = guest_create();
	set_slot(hva, 0);
	guest_load(g.mem, GUEST_CODE_GPA, giant_guest);
	vcpu_set_protected_mode(&g.v, g.mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
	vm_stats = ioctl(g.vm.fd, KVM_GET_STATS_FD, 0);
	if (vm_stats < 0 || !stats_load(vm_stats, &vs))
		BAIL("KVM_GET_STATS_FD");
	tap_plan(6);

	run_to_out(&g.v, 0x10);
	tap_ok(vm_stat("pages_1g") == 1 && vm_stat("pages_2m") == 0 && hva[0] == 0x11 &&
	       hva[GB1 - 4096] == 0x22,
	       "a write at each end of 1 GiB: pages_1g %llu (want 1), pages_2m %llu (want 0), "
	       "the writes reached the host", vm_stat("pages_1g"), vm_stat("pages_2m"));

	set_slot(hva, KVM_MEM_LOG_DIRTY_PAGES);
	tap_ok(vm_stat("pages_1g") == 0, "dirty logging on: pages_1g %llu (want 0)",
	       vm_stat("pages_1g"));
	run_to_out(&g.v, 0x11);
	r = ioctl(g.vm.fd, KVM_GET_DIRTY_LOG, &log);
	tap_ok(r == 0 && bitmap[0] == 1ull << 3 && vm_stat("pages_1g") == 0 && hva[0x3000] == 0x33,
	       "a write with logging on: KVM_GET_DIRTY_LOG %ld, first word %#llx (want page 3 "
	       "alone), pages_1g %llu", r, (unsigned long long)bitmap[0], vm_stat("pages_1g"));

	set_slot(hva, 0);
	run_to_out(&g.v, 0x12);
	tap_ok(vm_stat("pages_1g") == 1 && hva[0x5000] == 0x44,
	       "logging off, touched again: pages_1g %llu (want 1)", vm_stat("pages_1g"));

	if (mprotect(hva, GB1, PROT_READ))
		BAIL("mprotect");
	run_to_out(&g.v, 0x13);
	tap_ok(io_out_value(&g.v) == 0 && vm_stat("pages_1g") == 1,
	       "read-only: the guest reads (read %#llx), pages_1g %llu (want 1)",
	       (unsigned long long)io_out_value(&g.v), vm_stat("pages_1g"));
	r = ioctl(g.v.fd, KVM_RUN, 0);
	tap_ok(r == -1 && errno == EFAULT && hva[0x100000] == 0,
	       "its write ends KVM_RUN with EFAULT (%ld, errno %d), the page unchanged", r, errno);
	close(vm_stats);
	free(vs.descs);
	guest_destroy(&g);
	munmap(hva, GB1);
	tap_done();
}

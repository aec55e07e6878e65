// SPDX-License-Identifier: GPL-2.0
/*
 * 2 MiB mappings in the two-dimensional page table. A memslot of 4 MiB whose memory the
 * host backs with transparent huge pages (2 MiB aligned, MADV_HUGEPAGE):
 *  - the guest's first writes map it 2 MiB at a time (the VM's pages_2m);
 *  - turning on dirty logging leaves no 2 MiB mapping (KVM splits them, rkvm unmaps them),
 *    and a write is then logged page by page;
 *  - turning it off lets the next touches map 2 MiB again;
 *  - the guest executes from a 2 MiB mapping; it stays whole unless the CPU has the iTLB
 *    multihit erratum and the kernel mitigates it (KVM's nx_huge_pages, "auto"), when the
 *    fetch splits it (the test kernel is built without CPU mitigations, so neither
 *    hypervisor splits there);
 *  - memory the host maps read-only is mapped for reading only, 2 MiB or not: the guest's
 *    read works, its write ends KVM_RUN with EFAULT and never reaches the page.
 * The kernel turns transparent huge pages off on machines with less than 512 MiB (the test
 * machines): the test turns them on for madvise()d memory alone, and back as they were at
 * its end. Skipped when the host still did not back the region with huge pages.
 */
#include "lib/rkvm_test.h"
#include "lib/stats.h"
#include "lib/thp.h"

#define HUGE_SLOT 1
#define HUGE_GPA 0x40000000ull
#define HUGE_SIZE (4ull << 20)
#define MB2 (2ull << 20)

GUEST_CODE(huge_guest, 32,
	/* Step 1: one write in each 2 MiB. */
	"movb $0x11, 0x40000000\n"
	"movb $0x22, 0x40201000\n"
	"outb %al, $0x10\n"
	/* Step 2 (logging on): one more write. */
	"movb $0x33, 0x40003000\n"
	"outb %al, $0x11\n"
	/* Step 3 (logging off): touch both halves again. */
	"movb $0x44, 0x40005000\n"
	"movb $0x45, 0x40205000\n"
	"outb %al, $0x12\n"
	/* Step 4: call a RET placed in the upper half. */
	"mov $0x40300000, %eax\n"
	"call *%eax\n"
	"outb %al, $0x15\n"
	/* Step 5 (upper half read-only): read, then write. */
	"movb 0x40200000, %al\n"
	"outb %al, $0x13\n"
	"movb $0x55, 0x40200000\n"
	"outb %al, $0x14\n"
	"hlt\n");

static struct guest g;
static int vm_stats;
static struct stats vs;

static uint64_t pages_2m(void)
{
	return stats_value(vm_stats, &vs, "pages_2m");
}

static void set_slot(uint8_t *hva, uint32_t flags)
{
	vm_set_slot(g.vm.fd, HUGE_SLOT, HUGE_GPA, HUGE_SIZE, hva, flags);
}

/* Whether the CPU has the iTLB multihit erratum (the kernel's view). */
static int itlb_multihit(void)
{
	char line[128] = "";
	FILE *f = fopen("/sys/devices/system/cpu/vulnerabilities/itlb_multihit", "r");

	if (f) {
		if (!fgets(line, sizeof(line), f))
			line[0] = 0;
		fclose(f);
	}
	return line[0] && strncmp(line, "Not affected", 12);
}

int main(void)
{
	uint64_t bitmap[HUGE_SIZE / 4096 / 64] = { 0 };
	struct kvm_dirty_log log = { .slot = HUGE_SLOT, .dirty_bitmap = bitmap };
	uint8_t *raw, *hva;
	long r;

	test_watchdog(120);
	thp_madvise();
	hva = thp_region(HUGE_SIZE, &raw);
	g = guest_create();
	set_slot(hva, 0);
	guest_load(g.mem, GUEST_CODE_GPA, huge_guest);
	vcpu_set_protected_mode(&g.v, g.mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
	vm_stats = ioctl(g.vm.fd, KVM_GET_STATS_FD, 0);
	if (vm_stats < 0 || !stats_load(vm_stats, &vs))
		BAIL("KVM_GET_STATS_FD");

	run_to_out(&g.v, 0x10);
	if (anon_huge_kb() < 2048) {
		char why[128];

		snprintf(why, sizeof(why), "the host backed the region with small pages "
			 "(AnonHugePages %ld kB)", anon_huge_kb());
		tap_skip_all(why);
	}
	tap_plan(8);
	tap_ok(pages_2m() == 2 && hva[0] == 0x11 && hva[MB2 + 0x1000] == 0x22,
	       "a write in each 2 MiB half: pages_2m %llu (want 2), the writes reached the host",
	       (unsigned long long)pages_2m());

	set_slot(hva, KVM_MEM_LOG_DIRTY_PAGES);
	tap_ok(pages_2m() == 0, "dirty logging on: pages_2m %llu (want 0)",
	       (unsigned long long)pages_2m());
	run_to_out(&g.v, 0x11);
	r = ioctl(g.vm.fd, KVM_GET_DIRTY_LOG, &log);
	tap_ok(r == 0 && bitmap[0] == 1ull << 3 && pages_2m() == 0 && hva[0x3000] == 0x33,
	       "a write with logging on: KVM_GET_DIRTY_LOG %ld, first word %#llx (want page 3 "
	       "alone), pages_2m %llu",
	       r, (unsigned long long)bitmap[0], (unsigned long long)pages_2m());

	set_slot(hva, 0);
	run_to_out(&g.v, 0x12);
	tap_ok(pages_2m() == 2 && hva[0x5000] == 0x44 && hva[MB2 + 0x5000] == 0x45,
	       "logging off, both halves touched again: pages_2m %llu (want 2)",
	       (unsigned long long)pages_2m());

	hva[MB2 + 0x100000] = 0xc3; /* ret */
	run_to_out(&g.v, 0x15);
	tap_ok(pages_2m() == 2 || (itlb_multihit() && pages_2m() == 1),
	       "the guest ran code from a 2 MiB mapping: pages_2m %llu (want 2, or 1 with the "
	       "iTLB multihit erratum: %s)", (unsigned long long)pages_2m(),
	       itlb_multihit() ? "present" : "absent");

	if (mprotect(hva + MB2, MB2, PROT_READ))
		BAIL("mprotect");
	run_to_out(&g.v, 0x13);
	tap_ok(io_out_value(&g.v) == 0,
	       "the guest reads the read-only half (read %#llx)",
	       (unsigned long long)io_out_value(&g.v));
	r = ioctl(g.v.fd, KVM_RUN, 0);
	tap_ok(r == -1 && errno == EFAULT, "its write there ends KVM_RUN with EFAULT (%ld, errno %d)",
	       r, errno);
	tap_ok(hva[MB2] == 0, "the read-only page is unchanged (%#x)", hva[MB2]);
	close(vm_stats);
	free(vs.descs);
	tap_done();
}

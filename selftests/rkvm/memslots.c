// SPDX-License-Identifier: GPL-2.0
/*
 * Memory slots changing between runs, and KVM_SET_USER_MEMORY_REGION's errors
 * (virt/kvm/kvm_main.c kvm_set_memory_region).
 *
 * A 32-bit guest probe reads (or writes then reads) the dword at the address in EBX and
 * OUTs it. Between runs the test adds a slot, moves it (same id, new GPA: the guest finds
 * the data at the new GPA and the old GPA becomes MMIO), writes the host memory (the guest
 * sees it), changes only its flags, deletes it (its GPAs become MMIO) and creates slots
 * where there was MMIO before.
 *
 * Errors: an overlap with another slot (create or move) -> EEXIST; a GPA, size or HVA not
 * page aligned, an HVA the user may not access, a GPA range that wraps, unknown flags ->
 * EINVAL; deleting a slot that does not exist -> EINVAL; slot id >= KVM_CAP_NR_MEMSLOTS ->
 * EINVAL (id KVM_CAP_NR_MEMSLOTS - 1 works); changing the size, the HVA or
 * KVM_MEM_READONLY of an existing slot -> EINVAL. A failed call changes nothing.
 * KVM_SET_USER_MEMORY_REGION2 adds a slot and refuses an overlap the same way.
 *
 * A slot moved by one page, over its own old range, is not an overlap.
 *
 * Many slots: MANY one-page slots, one every other page, each page holding its index.
 * The guest finds the right page in the slots it probes and MMIO in the holes between
 * them; a move onto either neighbour, or a new slot across one, is EEXIST; a move into
 * the hole beside works. Then they are deleted in an order unlike the creation order,
 * and their addresses are MMIO again. (rkvm keeps slots in trees; this checks its
 * lookups and overlap tests with neighbours on both sides.)
 */
#include "lib/rkvm_test.h"

#define PROBE_GPA GUEST_CODE_GPA
#define PORT 0x30
#define A_GPA 0x100000ull
#define B_GPA 0x200000ull
#define C_GPA 0x300000ull
#define SLOT_SIZE 0x4000
#define MMIO_DATA 0xabcdef01u
#define MANY 2000
#define MANY_ID 100
#define MANY_GPA 0x1000000ull
#define MANY_AT(i) (MANY_GPA + 2ull * (i) * 0x1000)

GUEST_CODE(probe, 32,
	"mov (%ebx), %eax\n"
	"out %eax, $" XSTR(PORT) "\n"
	"hlt\n"
	"probe_write:\n"
	"mov %ecx, (%ebx)\n"
	"mov (%ebx), %eax\n"
	"out %eax, $" XSTR(PORT) "\n"
	"hlt\n");
extern const uint8_t probe_write[];

static struct guest g;

struct probe {
	uint32_t val;		/* the value the guest OUT */
	int mmio;		/* it took an MMIO read exit at the probed address */
	int ok;			/* the exits were as expected */
};

/* Runs the probe at ADDR (a write of WVAL first, if WRITE); MMIO reads get MMIO_DATA. */
static struct probe run_probe(uint64_t addr, int write, uint32_t wval)
{
	struct probe p = { 0, 0, 1 };
	struct kvm_regs r;
	struct kvm_run *run = g.v.run;

	vcpu_get_regs(&g.v, &r);
	r.rip = write ? GUEST_ADDR(PROBE_GPA, probe, probe_write) : PROBE_GPA;
	r.rbx = addr;
	r.rcx = wval;
	r.rflags = 2;
	vcpu_set_regs(&g.v, &r);
	for (;;) {
		vcpu_run(&g.v);
		if (run->exit_reason == KVM_EXIT_MMIO && !run->mmio.is_write &&
		    run->mmio.phys_addr == addr && run->mmio.len == 4 && !p.mmio) {
			p.mmio = 1;
			memcpy(run->mmio.data, &(uint32_t){ MMIO_DATA }, 4);
			continue;
		}
		if (run->exit_reason == KVM_EXIT_MMIO && run->mmio.is_write && write &&
		    run->mmio.phys_addr == addr && run->mmio.len == 4)
			continue;
		break;
	}
	if (!is_out(&g.v, PORT, 4)) {
		tap_diag("probe of %#llx: unexpected exit %s", (unsigned long long)addr,
			 exit_str(&g.v));
		p.ok = 0;
		return p;
	}
	p.val = io_out_value(&g.v);
	vcpu_run(&g.v);
	if (run->exit_reason != KVM_EXIT_HLT) {
		tap_diag("probe of %#llx: %s instead of HLT", (unsigned long long)addr,
			 exit_str(&g.v));
		p.ok = 0;
	}
	return p;
}

/* One check: the guest reads WANT at ADDR from memory (no MMIO exit). */
static void expect_mem(uint64_t addr, uint32_t want, const char *why)
{
	struct probe p = run_probe(addr, 0, 0);

	tap_ok(p.ok && !p.mmio && p.val == want, "%s: guest reads %#x at %#llx (want %#x from "
	       "memory%s)", why, p.val, (unsigned long long)addr, want, p.mmio ? ", got an MMIO exit" : "");
}

/* One check: the guest's read of ADDR is an MMIO exit. */
static void expect_mmio(uint64_t addr, const char *why)
{
	struct probe p = run_probe(addr, 0, 0);

	tap_ok(p.ok && p.mmio && p.val == MMIO_DATA, "%s: guest read of %#llx exits as MMIO "
	       "(mmio %d, value %#x)", why, (unsigned long long)addr, p.mmio, p.val);
}

static struct kvm_userspace_memory_region region(uint32_t slot, uint32_t flags, uint64_t gpa,
						 uint64_t size, void *hva)
{
	struct kvm_userspace_memory_region r = {
		.slot = slot, .flags = flags, .guest_phys_addr = gpa, .memory_size = size,
		.userspace_addr = (uintptr_t)hva,
	};
	return r;
}

#define CHECK_REGION(want, slot, flags, gpa, size, hva, ...)                                  \
	({                                                                                   \
		struct kvm_userspace_memory_region __r = region(slot, flags, gpa, size, hva);  \
		(want) ? CHECK_ERRNO(g.vm.fd, KVM_SET_USER_MEMORY_REGION, &__r, want, __VA_ARGS__) \
		       : CHECK_RET(g.vm.fd, KVM_SET_USER_MEMORY_REGION, &__r, 0, __VA_ARGS__);  \
	})

static uint32_t *new_mem(size_t size, uint32_t first, uint32_t last)
{
	uint32_t *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (m == MAP_FAILED)
		BAIL("mmap");
	m[0] = first;
	m[(size - 0x1000) / 4] = last;
	return m;
}

static void many_slots(void)
{
	static const int probed[] = { 0, 1, 777, MANY - 1 };
	uint32_t *pages = mmap(NULL, MANY * 0x1000ul, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int failed = 0, first_err = 0;

	if (pages == MAP_FAILED)
		BAIL("mmap");
	for (int i = 0; i < MANY; i++) {
		struct kvm_userspace_memory_region r =
			region(MANY_ID + i, 0, MANY_AT(i), 0x1000, pages + i * 1024);

		pages[i * 1024] = 0x50000 + i;
		if (ioctl(g.vm.fd, KVM_SET_USER_MEMORY_REGION, &r) && !failed++)
			first_err = errno;
	}
	tap_ok(!failed, "%d one-page slots added (%d failed, first errno %d)", MANY, failed,
	       first_err);
	for (unsigned int k = 0; k < sizeof(probed) / sizeof(probed[0]); k++)
		expect_mem(MANY_AT(probed[k]), 0x50000 + probed[k], "many slots: slot's own page");
	expect_mmio(MANY_AT(777) + 0x1000, "many slots: the hole after slot 777");
	expect_mmio(MANY_AT(MANY), "many slots: past the last slot");
	CHECK_REGION(EEXIST, MANY_ID + 777, 0, MANY_AT(778), 0x1000, pages + 777 * 1024,
		     "move slot %d onto its upper neighbour", MANY_ID + 777);
	CHECK_REGION(EEXIST, MANY_ID + 777, 0, MANY_AT(776), 0x1000, pages + 777 * 1024,
		     "move slot %d onto its lower neighbour", MANY_ID + 777);
	CHECK_REGION(EEXIST, 50, 0, MANY_AT(100) + 0x1000, 0x3000, pages,
		     "a new 3-page slot across slot %d and the holes beside it", MANY_ID + 101);
	CHECK_REGION(0, MANY_ID + 777, 0, MANY_AT(777) + 0x1000, 0x1000, pages + 777 * 1024,
		     "move slot %d into the hole above it", MANY_ID + 777);
	expect_mem(MANY_AT(777) + 0x1000, 0x50000 + 777, "many slots: the moved slot");
	expect_mmio(MANY_AT(777), "many slots: where the moved slot was");
	expect_mem(MANY_AT(778), 0x50000 + 778, "many slots: the moved slot's neighbour");
	/* 7919 is prime, so i = k * 7919 % MANY visits every slot once. */
	failed = 0;
	for (int k = 0; k < MANY; k++) {
		int i = k * 7919 % MANY;
		struct kvm_userspace_memory_region r =
			region(MANY_ID + i, 0, i == 777 ? MANY_AT(777) + 0x1000 : MANY_AT(i), 0,
			       pages + i * 1024);

		if (ioctl(g.vm.fd, KVM_SET_USER_MEMORY_REGION, &r) && !failed++)
			first_err = errno;
		if (k == MANY / 2)
			expect_mmio(MANY_AT(i), "many slots: a slot deleted half way");
	}
	tap_ok(!failed, "%d slots deleted (%d failed, first errno %d)", MANY, failed, first_err);
	expect_mmio(MANY_AT(0), "many slots: the first slot's page after deletion");
	expect_mmio(MANY_AT(MANY - 1), "many slots: the last slot's page after deletion");
	munmap(pages, MANY * 0x1000ul);
}

int main(void)
{
	uint32_t *m1, *m2, *m3;
	long nslots;
	struct probe p;

	test_watchdog(60);
	g = guest_create();
	tap_plan(74);
	nslots = ioctl(g.vm.fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_MEMSLOTS);
	guest_load(g.mem, PROBE_GPA, probe);
	vcpu_set_protected_mode(&g.v, g.mem, PROBE_GPA, GUEST_STACK_TOP);
	m1 = new_mem(SLOT_SIZE, 0x11111111, 0x13131313);
	m2 = new_mem(2 * SLOT_SIZE, 0x21212121, 0x23232323);
	m3 = new_mem(SLOT_SIZE, 0x31313131, 0x33333333);

	/* Add, move, write from the host, change flags, delete. */
	expect_mmio(A_GPA, "before any slot there");
	CHECK_REGION(0, 1, 0, A_GPA, SLOT_SIZE, m1, "add slot 1 at %#llx", A_GPA);
	expect_mem(A_GPA, 0x11111111, "slot 1 added");
	expect_mem(A_GPA + SLOT_SIZE - 0x1000, 0x13131313, "slot 1 added, last page");
	CHECK_REGION(0, 1, 0, B_GPA, SLOT_SIZE, m1, "move slot 1 to %#llx", B_GPA);
	expect_mem(B_GPA, 0x11111111, "slot 1 moved");
	expect_mem(B_GPA + SLOT_SIZE - 0x1000, 0x13131313, "slot 1 moved, last page");
	expect_mmio(A_GPA, "slot 1 moved away");
	expect_mmio(A_GPA + SLOT_SIZE - 0x1000, "slot 1 moved away, last page");
	p = run_probe(B_GPA + 4, 1, 0x5555aaaa);
	tap_ok(p.ok && !p.mmio && p.val == 0x5555aaaa && m1[1] == 0x5555aaaa,
	       "a guest write to the moved slot lands in its memory (guest reads %#x, host "
	       "sees %#x)", p.val, m1[1]);
	m1[0] = 0x12121212;
	expect_mem(B_GPA, 0x12121212, "host wrote the slot's memory");
	CHECK_REGION(0, 1, KVM_MEM_LOG_DIRTY_PAGES, B_GPA, SLOT_SIZE, m1,
		     "slot 1: set KVM_MEM_LOG_DIRTY_PAGES (flags only)");
	expect_mem(B_GPA, 0x12121212, "slot 1 logs dirty pages");
	CHECK_REGION(0, 1, 0, B_GPA, SLOT_SIZE, m1, "slot 1: clear KVM_MEM_LOG_DIRTY_PAGES");
	CHECK_REGION(0, 1, 0, B_GPA, SLOT_SIZE, m1, "slot 1: the same region again (no change)");
	CHECK_REGION(0, 1, 0, B_GPA, 0, m1, "delete slot 1 (memory_size 0)");
	expect_mmio(B_GPA, "slot 1 deleted");
	tap_ok(m1[0] == 0x12121212 && m1[1] == 0x5555aaaa,
	       "the deleted slot's memory is left alone (%#x %#x)", m1[0], m1[1]);

	/* Slots where there was MMIO. */
	CHECK_REGION(0, 1, 0, A_GPA, 2 * SLOT_SIZE, m2,
		     "re-create slot 1 at %#llx, with other memory and size", A_GPA);
	expect_mem(A_GPA, 0x21212121, "slot 1 re-created");
	expect_mem(A_GPA + 2 * SLOT_SIZE - 0x1000, 0x23232323, "slot 1 re-created, last page");
	CHECK_REGION(0, 2, 0, C_GPA, SLOT_SIZE, m3, "add slot 2 at %#llx", C_GPA);
	expect_mem(C_GPA, 0x31313131, "slot 2 added");

	/* Overlaps. */
	CHECK_REGION(EEXIST, 3, 0, A_GPA + 0x1000, SLOT_SIZE, m3,
		     "slot 3 overlapping slot 1's end");
	CHECK_REGION(EEXIST, 3, 0, A_GPA - 0x1000, 0x2000, m3,
		     "slot 3 overlapping slot 1's first page");
	CHECK_REGION(EEXIST, 3, 0, 0, 0x1000, m3, "slot 3 inside slot 0");
	CHECK_REGION(EEXIST, 2, 0, A_GPA + SLOT_SIZE, SLOT_SIZE, m3,
		     "move slot 2 onto slot 1's second half");
	CHECK_REGION(0, 3, 0, A_GPA + 2 * SLOT_SIZE, SLOT_SIZE, m3,
		     "slot 3 right after slot 1 (adjacent, no overlap)");
	CHECK_REGION(0, 3, 0, A_GPA + 2 * SLOT_SIZE, 0, m3, "delete slot 3");

	/* Malformed regions. */
	CHECK_REGION(EINVAL, 3, 0, 0x400800, SLOT_SIZE, m3, "GPA 0x400800 not page aligned");
	CHECK_REGION(EINVAL, 3, 0, 0x400000, 0x1800, m3, "size 0x1800 not a page multiple");
	CHECK_REGION(EINVAL, 3, 0, 0x400000, SLOT_SIZE, (uint8_t *)m3 + 0x100,
		     "HVA not page aligned");
	CHECK_REGION(EINVAL, 3, 0, 0x400000, SLOT_SIZE, KERNEL_ADDR, "HVA in the kernel half");
	CHECK_REGION(EINVAL, 3, 0, 0xfffffffffffff000ull, 0x2000, m3, "GPA range wraps around");
	CHECK_REGION(EINVAL, 3, 0x80, 0x400000, SLOT_SIZE, m3, "unknown flag 0x80");
	CHECK_REGION(EINVAL, 3, KVM_MEM_GUEST_MEMFD, 0x400000, SLOT_SIZE, m3,
		     "KVM_MEM_GUEST_MEMFD with KVM_SET_USER_MEMORY_REGION (v1)");
	CHECK_REGION(EINVAL, 7, 0, 0x400000, 0, m3, "delete slot 7, which does not exist");
	CHECK_REGION(EINVAL, nslots, 0, 0x400000, SLOT_SIZE, m3,
		     "slot id %ld = KVM_CAP_NR_MEMSLOTS", nslots);
	CHECK_REGION(EINVAL, 0xffff, 0, 0x400000, SLOT_SIZE, m3, "slot id 0xffff");
	CHECK_REGION(0, nslots - 1, 0, 0x400000, SLOT_SIZE, m3,
		     "slot id %ld = KVM_CAP_NR_MEMSLOTS - 1", nslots - 1);
	CHECK_REGION(0, nslots - 1, 0, 0x400000, 0, m3, "delete slot %ld", nslots - 1);

	/* Changing what cannot change. */
	CHECK_REGION(EINVAL, 2, 0, C_GPA, 2 * SLOT_SIZE, m3, "slot 2: grow to 2x its size");
	CHECK_REGION(EINVAL, 2, 0, C_GPA, SLOT_SIZE - 0x1000, m3, "slot 2: shrink by a page");
	CHECK_REGION(EINVAL, 2, 0, C_GPA, SLOT_SIZE, m1, "slot 2: another HVA");
	if (ioctl(g.vm.fd, KVM_CHECK_EXTENSION, KVM_CAP_READONLY_MEM) > 0)
		CHECK_REGION(EINVAL, 2, KVM_MEM_READONLY, C_GPA, SLOT_SIZE, m3,
			     "slot 2: set KVM_MEM_READONLY");
	else
		tap_ok(1, "# SKIP no KVM_CAP_READONLY_MEM");

	/* KVM_SET_USER_MEMORY_REGION2: the same semantics. */
	if (ioctl(g.vm.fd, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY2) > 0) {
		struct kvm_userspace_memory_region2 r2 = {
			.slot = 4, .guest_phys_addr = 0x500000, .memory_size = SLOT_SIZE,
			.userspace_addr = (uintptr_t)m3,
		};

		CHECK_RET(g.vm.fd, KVM_SET_USER_MEMORY_REGION2, &r2, 0,
			  "KVM_SET_USER_MEMORY_REGION2: slot 4 at 0x500000 (slot 2's memory too)");
		expect_mem(0x500000, 0x31313131, "slot 4 added with REGION2");
		r2.slot = 5;
		r2.guest_phys_addr = 0x500000 + SLOT_SIZE - 0x1000;
		CHECK_ERRNO(g.vm.fd, KVM_SET_USER_MEMORY_REGION2, &r2, EEXIST,
			    "KVM_SET_USER_MEMORY_REGION2: slot 5 overlapping slot 4");
	} else {
		for (int i = 0; i < 3; i++)
			tap_ok(1, "# SKIP no KVM_CAP_USER_MEMORY2");
	}

	/* Nothing changed. */
	expect_mem(A_GPA, 0x21212121, "after the failed calls, slot 1");
	expect_mem(C_GPA, 0x31313131, "after the failed calls, slot 2");
	expect_mmio(0x400000, "after the failed calls, 0x400000");
	/* A move over the slot's own old range is no overlap. */
	CHECK_REGION(0, 2, 0, C_GPA + 0x1000, SLOT_SIZE, m3,
		     "move slot 2 up one page, over its own old range");
	expect_mem(C_GPA + 0x1000, 0x31313131, "slot 2 moved up a page");
	expect_mmio(C_GPA, "below slot 2 after its move up");
	CHECK_REGION(0, 2, 0, C_GPA, SLOT_SIZE, m3, "move slot 2 back down a page");
	expect_mem(C_GPA, 0x31313131, "slot 2 moved back");
	many_slots();
	tap_done();
}

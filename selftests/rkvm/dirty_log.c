// SPDX-License-Identifier: GPL-2.0
/*
 * Dirty page logging: KVM_GET_DIRTY_LOG and KVM_CLEAR_DIRTY_LOG (virt/kvm/kvm_main.c
 * kvm_get_dirty_log_protect, kvm_clear_dirty_log_protect).
 *
 * A 32-bit guest writes one dword into each page of a list (code, list, GDT and stack all
 * live in slot 0, which does not log; the guest runs without paging, so no A/D bits are
 * written). The logged slot has 100 pages, so its bitmap is two u64s with 28 bits past the
 * slot that must stay 0, and KVM writes exactly 16 bytes.
 *
 * Without manual protection, GET returns exactly the pages written since the last GET and
 * clears them; pages written again after a GET are logged again; CLEAR works too (api.rst:
 * it "can always be used" once KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 is advertised). With
 * KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 enabled, GET does not clear; CLEAR (whole slot or a
 * 64-page aligned range) clears the given bits only, and cleared pages written again are
 * logged again.
 *
 * Another slot added, moved (over its own old range) and deleted between a run and GET
 * leaves the logged pages in the bitmap.
 *
 * Errors: a slot without KVM_MEM_LOG_DIRTY_PAGES or no slot -> ENOENT; slot id >=
 * KVM_CAP_NR_MEMSLOTS -> EINVAL; a bad bitmap pointer -> EFAULT; CLEAR with first_page
 * not a multiple of 64, a range past the slot, or a length that is neither a multiple
 * of 64 nor up to the slot's end -> EINVAL; ENABLE_CAP with unknown flags or options ->
 * EINVAL.
 */
#include "lib/rkvm_test.h"

#define LOG_SLOT 1
#define LOG_GPA 0x100000ull
#define NPAGES 100
#define TABLE_GPA GUEST_DATA_GPA
#define CANARY 0x5a5a5a5a5a5a5a5aull

GUEST_CODE(dirty_guest, 32,
	"mov $" XSTR(TABLE_GPA) ", %esi\n"
	"1: mov (%esi), %eax\n"
	"cmp $-1, %eax\n"
	"je 2f\n"
	"mov %eax, %edx\n"
	"shl $12, %edx\n"
	"add $" XSTR(LOG_GPA) ", %edx\n"
	"mov %eax, 8(%edx)\n"
	"add $4, %esi\n"
	"jmp 1b\n"
	"2: hlt\n");

static const int set_a[] = { 0, 1, 5, 63, 64, 99, -1 };
static const int set_b[] = { 1, 2, 64, 70, -1 };

struct pages {
	uint64_t bits[2];
};

static struct pages pages_of(const int *list)
{
	struct pages p = { { 0, 0 } };

	for (; *list >= 0; list++)
		p.bits[*list / 64] |= 1ull << (*list % 64);
	return p;
}

static struct pages pages_or(struct pages a, struct pages b)
{
	a.bits[0] |= b.bits[0];
	a.bits[1] |= b.bits[1];
	return a;
}

static struct pages pages_andnot(struct pages a, struct pages b)
{
	a.bits[0] &= ~b.bits[0];
	a.bits[1] &= ~b.bits[1];
	return a;
}

static const char *pages_str(const uint64_t *bits)
{
	static char buf[2][256];
	static int k;
	int i, n = 0;

	k ^= 1;
	buf[k][0] = 0;
	for (i = 0; i < 128 && n < 240; i++)
		if (bits[i / 64] & (1ull << (i % 64)))
			n += snprintf(buf[k] + n, sizeof(buf[k]) - n, "%s%d", n ? "," : "", i);
	if (!n)
		snprintf(buf[k], sizeof(buf[k]), "none");
	return buf[k];
}

static struct guest g;
static uint8_t *logmem;

/* The guest writes the pages of LIST; one check: it halts and each page got its index. */
static void guest_writes(const int *list, const char *what)
{
	uint32_t *table = (uint32_t *)(g.mem + TABLE_GPA);
	int i, bad = 0;

	for (i = 0; list[i] >= 0; i++) {
		table[i] = list[i];
		*(uint32_t *)(logmem + list[i] * 0x1000 + 8) = 0;
	}
	table[i] = 0xffffffff;
	vcpu_set_rip(&g.v, GUEST_CODE_GPA);
	vcpu_run(&g.v);
	for (i = 0; list[i] >= 0; i++)
		bad += *(uint32_t *)(logmem + list[i] * 0x1000 + 8) != (uint32_t)list[i];
	tap_ok(g.v.run->exit_reason == KVM_EXIT_HLT && !bad,
	       "%s: the guest wrote pages {%s} and halted (%s, %d pages without the write)", what,
	       pages_str(pages_of(list).bits), exit_str(&g.v), bad);
}

/* One check: KVM_GET_DIRTY_LOG returns exactly WANT in 16 bytes. */
static void expect_log(struct pages want, const char *what)
{
	uint64_t buf[4] = { CANARY, CANARY, CANARY, CANARY };
	struct kvm_dirty_log log = { .slot = LOG_SLOT, .dirty_bitmap = buf };
	struct ioctl_res res = do_ioctl(g.vm.fd, KVM_GET_DIRTY_LOG, (unsigned long)&log);

	tap_ok(res.r == 0 && buf[0] == want.bits[0] && buf[1] == want.bits[1] &&
		       buf[2] == CANARY && buf[3] == CANARY,
	       "%s: KVM_GET_DIRTY_LOG -> 0 (got %s), pages {%s} (want {%s}), nothing written "
	       "past 16 bytes", what, res_str(res), pages_str(buf), pages_str(want.bits));
}

/* One check: KVM_CLEAR_DIRTY_LOG(FIRST, NUM, BITS) returns 0. */
static void clear_log(uint64_t first, uint32_t num, const uint64_t *bits, const char *what)
{
	struct kvm_clear_dirty_log c = {
		.slot = LOG_SLOT, .num_pages = num, .first_page = first, .dirty_bitmap = (void *)bits,
	};

	CHECK_RET(g.vm.fd, KVM_CLEAR_DIRTY_LOG, &c, 0, "KVM_CLEAR_DIRTY_LOG(first %llu, num %u, %s)",
		  (unsigned long long)first, num, what);
}

static void setup(void)
{
	g = guest_create();
	logmem = vm_add_memory(&g.vm, LOG_SLOT, LOG_GPA, NPAGES * 0x1000,
			       KVM_MEM_LOG_DIRTY_PAGES);
	guest_load(g.mem, GUEST_CODE_GPA, dirty_guest);
	vcpu_set_protected_mode(&g.v, g.mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
}

static void errors(void)
{
	long nslots = ioctl(g.vm.fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_MEMSLOTS);
	uint64_t buf[4];
	struct kvm_dirty_log log = { .slot = 0, .dirty_bitmap = buf };
	struct kvm_clear_dirty_log c = { .slot = 0, .num_pages = 64, .dirty_bitmap = buf };

	CHECK_ERRNO(g.vm.fd, KVM_GET_DIRTY_LOG, &log, ENOENT,
		    "KVM_GET_DIRTY_LOG on slot 0 (no KVM_MEM_LOG_DIRTY_PAGES)");
	log.slot = 9;
	CHECK_ERRNO(g.vm.fd, KVM_GET_DIRTY_LOG, &log, ENOENT, "KVM_GET_DIRTY_LOG on slot 9 (none)");
	log.slot = nslots;
	CHECK_ERRNO(g.vm.fd, KVM_GET_DIRTY_LOG, &log, EINVAL,
		    "KVM_GET_DIRTY_LOG on slot %ld = KVM_CAP_NR_MEMSLOTS", nslots);
	log.slot = LOG_SLOT;
	log.dirty_bitmap = inaccessible_page();
	CHECK_ERRNO(g.vm.fd, KVM_GET_DIRTY_LOG, &log, EFAULT,
		    "KVM_GET_DIRTY_LOG with the bitmap in a PROT_NONE page");
	CHECK_ERRNO(g.vm.fd, KVM_GET_DIRTY_LOG, NULL, EFAULT, "KVM_GET_DIRTY_LOG(NULL)");
	if (ioctl(g.vm.fd, KVM_CHECK_EXTENSION, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2) > 0)
		CHECK_ERRNO(g.vm.fd, KVM_CLEAR_DIRTY_LOG, &c, ENOENT,
			    "KVM_CLEAR_DIRTY_LOG on slot 0 (no KVM_MEM_LOG_DIRTY_PAGES), manual "
			    "mode off");
	else
		tap_ok(1, "# SKIP KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 not advertised");
}

static void clear_errors(void)
{
	uint64_t zero[2] = { 0, 0 };
	struct kvm_clear_dirty_log c = { .slot = LOG_SLOT, .dirty_bitmap = zero };

	c.first_page = 1;
	c.num_pages = 64;
	CHECK_ERRNO(g.vm.fd, KVM_CLEAR_DIRTY_LOG, &c, EINVAL,
		    "KVM_CLEAR_DIRTY_LOG first_page 1 (not a multiple of 64)");
	c.first_page = 0;
	c.num_pages = NPAGES + 1;
	CHECK_ERRNO(g.vm.fd, KVM_CLEAR_DIRTY_LOG, &c, EINVAL,
		    "KVM_CLEAR_DIRTY_LOG num_pages %d (past the slot)", NPAGES + 1);
	c.first_page = 64;
	c.num_pages = 40;
	CHECK_ERRNO(g.vm.fd, KVM_CLEAR_DIRTY_LOG, &c, EINVAL,
		    "KVM_CLEAR_DIRTY_LOG pages 64..103 (past the slot's %d)", NPAGES);
	c.first_page = 128;
	c.num_pages = 0;
	CHECK_ERRNO(g.vm.fd, KVM_CLEAR_DIRTY_LOG, &c, EINVAL,
		    "KVM_CLEAR_DIRTY_LOG first_page 128 (past the slot)");
	c.first_page = 0;
	c.num_pages = 10;
	CHECK_ERRNO(g.vm.fd, KVM_CLEAR_DIRTY_LOG, &c, EINVAL,
		    "KVM_CLEAR_DIRTY_LOG pages 0..9 (not a multiple of 64, not to the end)");
	c.num_pages = 64;
	c.dirty_bitmap = inaccessible_page();
	CHECK_ERRNO(g.vm.fd, KVM_CLEAR_DIRTY_LOG, &c, EFAULT,
		    "KVM_CLEAR_DIRTY_LOG with the bitmap in a PROT_NONE page");
	c.slot = 9;
	c.dirty_bitmap = zero;
	CHECK_ERRNO(g.vm.fd, KVM_CLEAR_DIRTY_LOG, &c, ENOENT, "KVM_CLEAR_DIRTY_LOG on slot 9 (none)");
}

int main(void)
{
	struct pages a = pages_of(set_a), b = pages_of(set_b), none = { { 0, 0 } };
	struct kvm_enable_cap cap = { .cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 };
	uint64_t ones[2] = { ~0ull, ~0ull };
	uint64_t bit70 = 1ull << (70 - 64);
	int single[] = { 3, 99, -1 };
	long manual;

	test_watchdog(60);
	tap_plan(18 + 29);

	/* Without manual protection: GET returns and clears. */
	setup();
	expect_log(none, "before the guest ran");
	guest_writes(set_a, "first run");
	/* Another slot's changes leave the logging slot's bitmap as it is. */
	{
		void *other = mmap(NULL, 0x2000, PROT_READ | PROT_WRITE,
				   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		struct kvm_userspace_memory_region r = {
			.slot = 5, .guest_phys_addr = 0x800000, .memory_size = 0x2000,
			.userspace_addr = (uintptr_t)other,
		};

		CHECK_RET(g.vm.fd, KVM_SET_USER_MEMORY_REGION, &r, 0, "add slot 5 at 0x800000");
		r.guest_phys_addr = 0x801000;
		CHECK_RET(g.vm.fd, KVM_SET_USER_MEMORY_REGION, &r, 0,
			  "move slot 5 up a page, over its own old range");
		r.memory_size = 0;
		CHECK_RET(g.vm.fd, KVM_SET_USER_MEMORY_REGION, &r, 0, "delete slot 5");
		munmap(other, 0x2000);
	}
	expect_log(a, "after the first run and slot 5's add, move and delete");
	expect_log(none, "right after that GET");
	guest_writes(set_b, "second run");
	expect_log(b, "after the second run (pages 1 and 64 logged again)");
	/* "It can always be used as long as KVM_CHECK_EXTENSION confirms" the capability. */
	if (ioctl(g.vm.fd, KVM_CHECK_EXTENSION, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2) > 0) {
		uint64_t not70[2] = { b.bits[0], b.bits[1] & ~(1ull << (70 - 64)) };

		guest_writes(set_b, "third run");
		clear_log(0, NPAGES, not70, "the third run's pages but 70, manual mode off");
		expect_log(pages_of((int[]){ 70, -1 }), "after the third run and the clear");
	} else {
		for (int i = 0; i < 3; i++)
			tap_ok(1, "# SKIP KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 not advertised");
	}
	errors();
	guest_destroy(&g);

	/* With KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2. */
	setup();
	manual = ioctl(g.vm.fd, KVM_CHECK_EXTENSION, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);
	if (!(manual & KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE)) {
		for (int i = 0; i < 29; i++)
			tap_ok(1, "# SKIP KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 not advertised");
		tap_done();
	}
	cap.flags = 1;
	cap.args[0] = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE;
	CHECK_ERRNO(g.vm.fd, KVM_ENABLE_CAP, &cap, EINVAL,
		    "KVM_ENABLE_CAP(MANUAL_DIRTY_LOG_PROTECT2) with flags 1");
	cap.flags = 0;
	cap.args[0] = 4;
	CHECK_ERRNO(g.vm.fd, KVM_ENABLE_CAP, &cap, EINVAL,
		    "KVM_ENABLE_CAP(MANUAL_DIRTY_LOG_PROTECT2) with unknown option 4");
	cap.args[0] = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE;
	CHECK_RET(g.vm.fd, KVM_ENABLE_CAP, &cap, 0,
		  "KVM_ENABLE_CAP(MANUAL_DIRTY_LOG_PROTECT2, MANUAL_PROTECT_ENABLE)");
	expect_log(none, "manual: before the guest ran");
	guest_writes(set_a, "manual: first run");
	expect_log(a, "manual: after the first run");
	expect_log(a, "manual: GET again (GET does not clear)");
	guest_writes(set_b, "manual: second run");
	expect_log(pages_or(a, b), "manual: after the second run");
	clear_log(0, NPAGES, a.bits, "the first run's pages");
	expect_log(pages_andnot(b, a), "manual: after clearing the first run's pages");
	clear_log(64, NPAGES - 64, &bit70, "page 70 of pages 64..99");
	expect_log(pages_andnot(pages_andnot(b, a), pages_of((int[]){ 70, -1 })),
		   "manual: after clearing page 70");
	guest_writes(set_a, "manual: third run, the first run's pages again");
	expect_log(pages_or(a, pages_of((int[]){ 2, -1 })),
		   "manual: cleared pages written again are logged again");
	clear_log(0, NPAGES, ones, "all bits set, also past the slot");
	expect_log(none, "manual: after clearing everything");
	guest_writes(single, "manual: fourth run");
	expect_log(pages_of(single), "manual: after the fourth run");
	clear_log(64, NPAGES - 64, ones, "pages 64..99");
	expect_log(pages_of((int[]){ 3, -1 }), "manual: after clearing pages 64..99");
	clear_errors();
	expect_log(pages_of((int[]){ 3, -1 }), "manual: the failed clears cleared nothing");
	guest_destroy(&g);
	tap_done();
}

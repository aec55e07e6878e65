// SPDX-License-Identifier: GPL-2.0
/*
 * The dirty ring: KVM_CAP_DIRTY_LOG_RING(_ACQ_REL), the ring mapped from the vCPU fd at
 * KVM_DIRTY_LOG_PAGE_OFFSET, KVM_RESET_DIRTY_RINGS and KVM_EXIT_DIRTY_RING_FULL
 * (virt/kvm/dirty_ring.c, kvm_vm_ioctl_enable_dirty_log_ring).
 *
 * Sizes: a power of two, at least a page and the reserved entries (else EINVAL), at most
 * the size KVM_CHECK_EXTENSION reports (else E2BIG); once per VM, before any vCPU
 * (EINVAL); the flags are ignored. The ring must be mapped shared (a private mapping: EINVAL). With rings,
 * KVM_GET_DIRTY_LOG and KVM_CLEAR_DIRTY_LOG answer ENXIO.
 *
 * A 32-bit guest writes one dword into each page of a list in a logged slot (code, list
 * and stack live in slot 0, which does not log; no paging, so no A/D bits). Each page's
 * first write publishes one entry (slot, page offset, KVM_DIRTY_GFN_F_DIRTY); writes
 * before the reset add none; after userspace marks the entries KVM_DIRTY_GFN_F_RESET,
 * KVM_RESET_DIRTY_RINGS returns how many it freed, zeroes their flags and write-protects
 * the pages again, so their next write is published again. An entry userspace corrupted
 * (a slot that does not exist, an offset past the slot) is freed and nothing else
 * happens: its page stays writable. A ring filled to its soft limit makes KVM_RUN exit
 * with KVM_EXIT_DIRTY_RING_FULL, again and again until the reset; with resets, a guest
 * writing more pages than the ring holds finishes with every page published, each once
 * but for the page whose write was under way at a full exit: the exit comes after its
 * fault was handled and before the write, and the reset protects it again, so the write
 * faults and publishes it once more (at most one page per reset).
 */
#include "lib/rkvm_test.h"

#define LOG_SLOT 1
#define LOG_GPA 0x100000ull
#define NPAGES 16
#define RING_BYTES 0x10000
#define BIG_PAGES 1100
#define SMALL_RING 0x4000
#define TABLE_GPA GUEST_DATA_GPA

/* Writes each page of the list at TABLE_GPA (ended by -1), then halts. */
GUEST_CODE(list_guest, 32,
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

/* Writes pages 0 .. n-1 (n at TABLE_GPA) in order, then halts. */
GUEST_CODE(seq_guest, 32,
	"mov (" XSTR(TABLE_GPA) "), %ecx\n"
	"mov $" XSTR(LOG_GPA) ", %edx\n"
	"1: mov %ecx, 8(%edx)\n"
	"add $0x1000, %edx\n"
	"dec %ecx\n"
	"jnz 1b\n"
	"hlt\n");

struct ringvm {
	struct guest g;
	struct kvm_dirty_gfn *ring;
	uint32_t entries;
	uint32_t next; /* the next entry to collect */
};

static long enable_ring(int vm_fd, uint64_t bytes)
{
	struct kvm_enable_cap cap = { .cap = KVM_CAP_DIRTY_LOG_RING, .args = { bytes } };

	return ioctl(vm_fd, KVM_ENABLE_CAP, &cap) ? -errno : 0;
}

/* A VM with a ring of BYTES per vCPU, a logged slot of PAGES and one vCPU running
 * seq_guest (SEQ) or list_guest. */
static struct ringvm ringvm_create(uint64_t bytes, int pages, int seq)
{
	struct ringvm r = { .entries = bytes / sizeof(struct kvm_dirty_gfn) };

	r.g.vm = vm_create();
	if (enable_ring(r.g.vm.fd, bytes))
		BAIL("KVM_ENABLE_CAP(KVM_CAP_DIRTY_LOG_RING, %llu)", (unsigned long long)bytes);
	if (ioctl(r.g.vm.fd, KVM_SET_TSS_ADDR, 0xfffbd000))
		BAIL("KVM_SET_TSS_ADDR");
	r.g.mem = vm_add_memory(&r.g.vm, 0, 0, GUEST_LOW_SIZE, 0);
	vm_add_memory(&r.g.vm, LOG_SLOT, LOG_GPA, pages * 0x1000ull, KVM_MEM_LOG_DIRTY_PAGES);
	r.g.v = vcpu_create(&r.g.vm, 0);
	vcpu_set_supported_cpuid(&r.g.vm, &r.g.v);
	if (seq)
		guest_load(r.g.mem, GUEST_CODE_GPA, seq_guest);
	else
		guest_load(r.g.mem, GUEST_CODE_GPA, list_guest);
	vcpu_set_protected_mode(&r.g.v, r.g.mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
	r.ring = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, r.g.v.fd,
		      KVM_DIRTY_LOG_PAGE_OFFSET * getpagesize());
	if (r.ring == MAP_FAILED)
		BAIL("mmap of the dirty ring");
	return r;
}

static void run_from_start(struct ringvm *r)
{
	vcpu_set_rip(&r->g.v, GUEST_CODE_GPA);
	vcpu_run(&r->g.v);
}

/*
 * Collects the published entries from r->next on: marks each KVM_DIRTY_GFN_F_RESET and
 * counts the pages of LOG_SLOT in SEEN (how often each was published); returns how many
 * entries it collected, and counts entries of another slot in *OTHER.
 */
static int collect(struct ringvm *r, int *seen, int npages, int *other)
{
	int n = 0;

	for (;;) {
		struct kvm_dirty_gfn *e = &r->ring[r->next % r->entries];

		if (!(__atomic_load_n(&e->flags, __ATOMIC_ACQUIRE) & KVM_DIRTY_GFN_F_DIRTY))
			break;
		if (e->slot == LOG_SLOT && e->offset < (uint64_t)npages)
			seen[e->offset]++;
		else
			(*other)++;
		__atomic_store_n(&e->flags, KVM_DIRTY_GFN_F_RESET, __ATOMIC_RELEASE);
		r->next++;
		n++;
	}
	return n;
}

static void set_list(struct ringvm *r, const int *list)
{
	uint32_t *table = (uint32_t *)(r->g.mem + TABLE_GPA);
	int i;

	for (i = 0; list[i] >= 0; i++)
		table[i] = list[i];
	table[i] = 0xffffffff;
}

static const char *seen_str(const int *seen, int npages)
{
	static char bufs[2][256];
	static int k;
	char *buf = bufs[k ^= 1];
	int i, n = 0;

	buf[0] = 0;
	for (i = 0; i < npages && n < 240; i++)
		if (seen[i])
			n += snprintf(buf + n, sizeof(buf) - n, "%s%d%s", n ? "," : "", i,
				      seen[i] > 1 ? "(x2+)" : "");
	return n ? buf : "none";
}

/* One check: the guest wrote LIST and halted, and the ring published exactly WANT. */
static void expect_published(struct ringvm *r, const int *list, const int *want, const char *what)
{
	int seen[NPAGES] = { 0 }, want_seen[NPAGES] = { 0 }, other = 0, n, ok;

	set_list(r, list);
	run_from_start(r);
	n = collect(r, seen, NPAGES, &other);
	for (; *want >= 0; want++)
		want_seen[*want] = 1;
	ok = r->g.v.run->exit_reason == KVM_EXIT_HLT && !other &&
	     !memcmp(seen, want_seen, sizeof(seen));
	tap_ok(ok, "%s: the guest halted (%s); %d entries published: pages {%s} of slot %d, %d "
	       "of other slots (want {%s})", what, exit_str(&r->g.v), n, seen_str(seen, NPAGES),
	       LOG_SLOT, other, seen_str(want_seen, NPAGES));
}

static void sizes(void)
{
	struct guest g;
	struct vm vm = vm_create();
	long max = ioctl(vm.sys_fd, KVM_CHECK_EXTENSION, KVM_CAP_DIRTY_LOG_RING);
	long acq = ioctl(vm.sys_fd, KVM_CHECK_EXTENSION, KVM_CAP_DIRTY_LOG_RING_ACQ_REL);
	long vmmax = ioctl(vm.fd, KVM_CHECK_EXTENSION, KVM_CAP_DIRTY_LOG_RING);
	const struct {
		uint64_t bytes;
		long want;
		const char *why;
	} bad[] = {
		{ 0, -EINVAL, "0" },
		{ 3 * 4096, -EINVAL, "not a power of two" },
		{ 2048, -EINVAL, "less than a page" },
		{ 2ull << 20, -E2BIG, "past the largest" },
		/* KVM takes the size as a u32: this is 0. */
		{ 1ull << 40, -EINVAL, "1 TiB, whose low 32 bits are 0" },
	};

	tap_ok(max == 65536 * 16 && acq == max && vmmax == max,
	       "KVM_CHECK_EXTENSION(KVM_CAP_DIRTY_LOG_RING) = %ld, _ACQ_REL = %ld, on the VM %ld "
	       "(want 1 MiB: 65536 entries)", max, acq, vmmax);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		long r = enable_ring(vm.fd, bad[i].bytes);

		tap_ok(r == bad[i].want, "KVM_ENABLE_CAP(DIRTY_LOG_RING, %llu: %s) -> %ld (want %ld)",
		       (unsigned long long)bad[i].bytes, bad[i].why, r, bad[i].want);
	}
	tap_ok(enable_ring(vm.fd, RING_BYTES) == 0 && enable_ring(vm.fd, RING_BYTES) == -EINVAL &&
		       enable_ring(vm.fd, 2 * RING_BYTES) == -EINVAL,
	       "KVM_ENABLE_CAP(DIRTY_LOG_RING, 64 KiB) -> 0, then again (same or twice the size) "
	       "-> EINVAL");
	close(vm.fd);
	close(vm.sys_fd);
	vm = vm_create();
	{
		struct kvm_enable_cap cap = {
			.cap = KVM_CAP_DIRTY_LOG_RING_ACQ_REL, .flags = 1, .args = { RING_BYTES },
		};

		CHECK_RET(vm.fd, KVM_ENABLE_CAP, &cap, 0,
			  "KVM_ENABLE_CAP(DIRTY_LOG_RING_ACQ_REL, 64 KiB) with flags 1 (ignored)");
	}
	close(vm.fd);
	close(vm.sys_fd);
	g = guest_create();
	tap_ok(enable_ring(g.vm.fd, RING_BYTES) == -EINVAL,
	       "KVM_ENABLE_CAP(DIRTY_LOG_RING) after KVM_CREATE_VCPU -> EINVAL");
	guest_destroy(&g);
}

static void ring_basics(void)
{
	struct ringvm r = ringvm_create(RING_BYTES, NPAGES, 0);
	int a[] = { 0, 3, 7, 7, 3, -1 }, pages[] = { 0, 3, 7, -1 }, none[] = { -1 };
	uint64_t bits[1];
	struct kvm_dirty_log log = { .slot = LOG_SLOT, .dirty_bitmap = bits };
	struct kvm_clear_dirty_log c = { .slot = LOG_SLOT, .num_pages = 16, .dirty_bitmap = bits };
	void *priv = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, r.g.v.fd,
			  KVM_DIRTY_LOG_PAGE_OFFSET * getpagesize());
	int err = priv == MAP_FAILED ? errno : 0;
	long n;

	tap_ok(err == EINVAL, "mmap of the ring MAP_PRIVATE -> EINVAL (got %s)", strerror(err));
	if (priv != MAP_FAILED)
		munmap(priv, 4096);
	CHECK_ERRNO(r.g.vm.fd, KVM_GET_DIRTY_LOG, &log, ENXIO, "KVM_GET_DIRTY_LOG with rings");
	CHECK_ERRNO(r.g.vm.fd, KVM_CLEAR_DIRTY_LOG, &c, ENXIO, "KVM_CLEAR_DIRTY_LOG with rings");

	expect_published(&r, a, pages, "pages 0,3,7,7,3");
	expect_published(&r, a, none, "the same pages before the reset");
	n = ioctl(r.g.vm.fd, KVM_RESET_DIRTY_RINGS);
	tap_ok(n == 3 && !r.ring[0].flags && !r.ring[1].flags && !r.ring[2].flags,
	       "KVM_RESET_DIRTY_RINGS -> %ld (want 3, the collected entries); their flags are now "
	       "%u, %u, %u (want 0)", n, r.ring[0].flags, r.ring[1].flags, r.ring[2].flags);
	n = ioctl(r.g.vm.fd, KVM_RESET_DIRTY_RINGS);
	tap_ok(n == 0, "KVM_RESET_DIRTY_RINGS again -> %ld (want 0)", n);
	expect_published(&r, a, pages, "the same pages after the reset");

	/*
	 * Corrupt two of the three collected entries: only the third's page is protected.
	 * (KVM batches neighbouring entries of one slot; the bad slot between them keeps the
	 * bad offset out of the intact entry's batch.)
	 */
	r.ring[3].offset = ~0ull;
	r.ring[4].slot = 0x7fff;
	n = ioctl(r.g.vm.fd, KVM_RESET_DIRTY_RINGS);
	tap_ok(n == 3, "KVM_RESET_DIRTY_RINGS with a bad slot and a bad offset in two entries -> "
		       "%ld (want 3)", n);
	{
		int want[] = { r.ring[5].offset < NPAGES ? (int)r.ring[5].offset : 0, -1 };

		expect_published(&r, a, want, "after that reset, only the intact entry's page");
	}
	guest_destroy(&r.g);
}

static void ring_full(void)
{
	struct ringvm r = ringvm_create(SMALL_RING, BIG_PAGES, 1);
	static int seen[BIG_PAGES];
	int other = 0, missing = 0, twice = 0, fulls = 0, rounds = 0, first_n, first_bad = -1, i;
	uint32_t again;

	*(uint32_t *)(r.g.mem + TABLE_GPA) = BIG_PAGES;
	run_from_start(&r);
	tap_ok(r.g.v.run->exit_reason == KVM_EXIT_DIRTY_RING_FULL,
	       "%d pages written with a ring of %u entries: KVM_RUN exits with "
	       "KVM_EXIT_DIRTY_RING_FULL (%s)", BIG_PAGES, r.entries, exit_str(&r.g.v));
	vcpu_run(&r.g.v);
	again = r.g.v.run->exit_reason;
	first_n = collect(&r, seen, BIG_PAGES, &other);
	tap_ok(again == KVM_EXIT_DIRTY_RING_FULL && first_n < (int)r.entries && first_n > 0,
	       "KVM_RUN again without a reset: KVM_EXIT_DIRTY_RING_FULL again (exit %u); %d "
	       "entries published, fewer than the ring's %u", again, first_n, r.entries);
	while (r.g.v.run->exit_reason == KVM_EXIT_DIRTY_RING_FULL && rounds++ < 100) {
		ioctl(r.g.vm.fd, KVM_RESET_DIRTY_RINGS);
		vcpu_run(&r.g.v);
		fulls += r.g.v.run->exit_reason == KVM_EXIT_DIRTY_RING_FULL;
		collect(&r, seen, BIG_PAGES, &other);
	}
	for (i = 0; i < BIG_PAGES; i++) {
		missing += !seen[i];
		twice += seen[i] > 1;
		if (seen[i] != 1 && first_bad < 0)
			first_bad = i;
	}
	tap_ok(r.g.v.run->exit_reason == KVM_EXIT_HLT && !missing && twice <= rounds && !other,
	       "with %d resets the guest finished (%s) after %d more full rings; of the %d pages, "
	       "%d never published, %d more than once (at most one per reset; first: %d); %d "
	       "entries of other slots", rounds, exit_str(&r.g.v), fulls, BIG_PAGES, missing,
	       twice, first_bad, other);
	guest_destroy(&r.g);
}

int main(void)
{
	test_watchdog(120);
	tap_plan(9 + 10 + 3);
	sizes();
	ring_basics();
	ring_full();
	tap_done();
}

// SPDX-License-Identifier: GPL-2.0
/*
 * Page aging through the MMU notifier: the host's idle page tracking
 * (/sys/kernel/mm/page_idle/bitmap, Documentation/admin-guide/mm/idle_page_tracking.rst)
 * sees which pages of guest memory the guest used, as on KVM.
 *
 * NPAGES pages of anonymous memory (no THP: one 4 KiB mapping per page on both sides),
 * each holding its index, back a memslot. The guest reads every page, so each is mapped
 * in the EPT/NPT. The host marks them all idle: the hypervisor's clear_young must
 * forget that use. Then the guest reads the even pages only, and XORs what it reads:
 *  - the even pages are no longer idle (the hypervisor reports them young): at most 10%
 *    may still read idle, the slack the KVM selftest access_tracking_perf_test allows
 *    for translations still cached in a TLB;
 *  - no odd page is young: the guest did not touch them;
 *  - the XOR is right: pages mapped again after aging are the same host pages.
 * Without clear_young/test_young (rkvm before it had them) every page stays idle.
 *
 * Reading PFNs from /proc/self/pagemap and the bitmap need root: skipped otherwise. Only
 * pages on an LRU list can be marked idle, and pages in the bitmap's last, partial
 * 64-page word cannot be read or written at all; the test judges the pages that read
 * idle right after marking, and fails if fewer than half of them do.
 */
#include "lib/rkvm_test.h"

#define NPAGES 1024
#define PAGE 4096ull
#define TARGET_GPA 0x1000000ull /* 16 MiB: inside the guest's identity map */
#define PORT 0x93

/* XORs the dword at RSI, RSI + RCX, ... (RDX of them) into EAX, OUTs it, halts. */
GUEST_CODE(touch, 64,
	"xor %eax, %eax\n"
	"1: xor (%rsi), %eax\n"
	"add %rcx, %rsi\n"
	"dec %rdx\n"
	"jnz 1b\n"
	"out %eax, $" XSTR(PORT) "\n"
	"hlt\n");

static struct guest g;
static uint32_t *mem;

/* What page I holds (set once; the host never reads guest memory after marking it
 * idle, since a host read would make the page young by itself). */
static uint32_t pattern(int i)
{
	return 0x1000 + i * 0x10001u;
}

/* Runs the guest over every STRIDE-th page; checks the XOR it reports. */
static void guest_touch(int stride, const char *what)
{
	struct kvm_regs r;
	uint32_t want = 0;

	for (int i = 0; i < NPAGES; i += stride)
		want ^= pattern(i);
	vcpu_set_long_mode(&g.v, g.mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
	vcpu_get_regs(&g.v, &r);
	r.rsi = TARGET_GPA;
	r.rcx = stride * PAGE;
	r.rdx = NPAGES / stride;
	vcpu_set_regs(&g.v, &r);
	expect_out(&g.v, PORT, want, what);
	vcpu_run(&g.v);
	tap_ok(g.v.run->exit_reason == KVM_EXIT_HLT, "%s: the guest halts (%s)", what,
	       exit_str(&g.v));
}

static uint64_t pfn_of(int pagemap, const void *p)
{
	uint64_t e = 0;

	if (pread(pagemap, &e, 8, (uintptr_t)p / PAGE * 8) != 8)
		BAIL("pagemap");
	return (e >> 63) ? e & ((1ull << 55) - 1) : 0;
}

/*
 * 1 idle, 0 not, -1 cannot tell: the bitmap is read and written in whole 64-page
 * words, and the last word, past the highest PFN, is not there (0 bytes).
 */
static int is_idle(int bitmap, uint64_t pfn)
{
	uint64_t w = 0;

	if (pread(bitmap, &w, 8, pfn / 64 * 8) != 8)
		return -1;
	return (w >> (pfn % 64)) & 1;
}

static int mark_idle(int bitmap, uint64_t pfn)
{
	uint64_t w = 1ull << (pfn % 64);

	return pwrite(bitmap, &w, 8, pfn / 64 * 8) == 8;
}

int main(void)
{
	static uint64_t pfn[NPAGES];
	static char tracked[NPAGES];
	int bitmap, pagemap, ntracked = 0, even = 0, even_idle = 0, odd = 0, odd_young = 0;

	test_watchdog(120);
	bitmap = open("/sys/kernel/mm/page_idle/bitmap", O_RDWR);
	if (bitmap < 0)
		tap_skip_all("no /sys/kernel/mm/page_idle/bitmap (needs root and "
			     "CONFIG_IDLE_PAGE_TRACKING)");
	pagemap = open("/proc/self/pagemap", O_RDONLY);
	if (pagemap < 0)
		BAIL("open pagemap");
	g = guest_create();
	tap_plan(9);
	guest_load(g.mem, GUEST_CODE_GPA, touch);
	mem = vm_add_memory(&g.vm, 1, TARGET_GPA, NPAGES * PAGE, 0);
	madvise(mem, NPAGES * PAGE, MADV_NOHUGEPAGE);
	for (int i = 0; i < NPAGES; i++)
		mem[i * PAGE / 4] = pattern(i);

	guest_touch(1, "the guest reads every page");
	for (int i = 0; i < NPAGES; i++) {
		pfn[i] = pfn_of(pagemap, (char *)mem + i * PAGE);
		if (pfn[i] && !mark_idle(bitmap, pfn[i]))
			pfn[i] = 0;
	}
	for (int i = 0; i < NPAGES; i++) {
		tracked[i] = pfn[i] && is_idle(bitmap, pfn[i]) == 1;
		ntracked += tracked[i];
	}
	tap_ok(ntracked >= NPAGES / 2, "%d of %d pages read idle after marking (need half)",
	       ntracked, NPAGES);

	guest_touch(2, "after marking, the guest reads the even pages");
	for (int i = 0; i < NPAGES; i++) {
		if (!tracked[i])
			continue;
		if (i % 2 == 0) {
			even++;
			even_idle += is_idle(bitmap, pfn[i]) != 0;
		} else {
			odd++;
			odd_young += is_idle(bitmap, pfn[i]) == 0;
		}
	}
	tap_ok(even > 0 && even_idle <= even / 10,
	       "pages the guest read are young again: %d of %d still idle (at most 10%%)",
	       even_idle, even);
	tap_ok(odd > 0 && odd_young == 0, "pages the guest did not read stay idle: %d of %d young",
	       odd_young, odd);

	guest_touch(1, "after aging, the guest reads every page again");
	tap_done();
}

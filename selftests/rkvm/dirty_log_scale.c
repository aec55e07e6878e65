// SPDX-License-Identifier: GPL-2.0
/*
 * Dirty logging costs what is mapped, not what the caller names.
 *
 *  - KVM_CLEAR_DIRTY_LOG (manual protection) with an all-ones mask over a 16 GiB slot
 *    the guest never touched, and KVM_GET_DIRTY_LOG of that slot, each return 0 well
 *    within 2 s (KVM needs about a millisecond; a hypervisor that walks its page tables
 *    from the root once per mask bit, under a spinlock, needs many seconds and stalls a
 *    host CPU meanwhile). The bound is a guard against that stall, not a benchmark.
 *  - The mask is applied exactly: the guest writes 64 pages and GET shows all 64; CLEAR
 *    of the even pages leaves exactly the odd ones; CLEAR of the odd ones leaves none.
 *    Every cleared page was write-protected again: when the guest writes all 64 once
 *    more, all 64 are dirty again.
 */
#include <time.h>

#include "lib/rkvm_test.h"

#define PAGE 4096ull
#define BIG_GPA (4ull << 30)
#define BIG_PAGES (4ull << 20) /* 16 GiB */
#define SMALL_GPA 0x1000000ull
#define SMALL_PAGES 64
#define PORT_DONE 0x93

/* Writes one byte to each of RCX pages from RSI, OUTs PORT_DONE, halts. */
GUEST_CODE(dls_guest, 64,
	"1: incb (%rsi)\n"
	"add $4096, %rsi\n"
	"loop 1b\n"
	"out %al, $" XSTR(PORT_DONE) "\n"
	"hlt\n");

static long now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static uint64_t get_log(struct vm *vm, uint32_t slot)
{
	uint64_t bits = 0;
	struct kvm_dirty_log log = { .slot = slot, .dirty_bitmap = &bits };

	if (ioctl(vm->fd, KVM_GET_DIRTY_LOG, &log))
		BAIL("KVM_GET_DIRTY_LOG");
	return bits;
}

static void run_writer(struct guest *g)
{
	struct kvm_regs regs;

	vcpu_set_long_mode(&g->v, g->mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
	vcpu_get_regs(&g->v, &regs);
	regs.rsi = SMALL_GPA;
	regs.rcx = SMALL_PAGES;
	vcpu_set_regs(&g->v, &regs);
	vcpu_run(&g->v);
	if (!is_out(&g->v, PORT_DONE, 1))
		BAIL("guest: %s", exit_str(&g->v));
	vcpu_run(&g->v);
}

int main(void)
{
	struct kvm_enable_cap cap = {
		.cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
		.args[0] = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE,
	};
	struct kvm_clear_dirty_log clear;
	struct kvm_dirty_log log;
	uint64_t even = 0x5555555555555555ull, bits;
	struct ioctl_res res;
	uint8_t *big, *small, *mask;
	struct guest g;
	long t0, ms;

	test_watchdog(240);
	g = guest_create();
	if (ioctl(g.vm.fd, KVM_CHECK_EXTENSION, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2) <= 0)
		tap_skip_all("KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 not advertised");
	tap_plan(6);
	if (ioctl(g.vm.fd, KVM_ENABLE_CAP, &cap))
		BAIL("enable manual dirty-log protection");

	big = mmap(NULL, BIG_PAGES * PAGE, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	mask = malloc(BIG_PAGES / 8);
	if (big == MAP_FAILED || !mask)
		BAIL("16 GiB of address space and its mask");
	vm_set_slot(g.vm.fd, 1, BIG_GPA, BIG_PAGES * PAGE, big, KVM_MEM_LOG_DIRTY_PAGES);
	memset(mask, 0xff, BIG_PAGES / 8);
	clear = (struct kvm_clear_dirty_log){ .slot = 1, .num_pages = BIG_PAGES, .dirty_bitmap = mask };
	t0 = now_ms();
	res = do_ioctl(g.vm.fd, KVM_CLEAR_DIRTY_LOG, (unsigned long)&clear);
	ms = now_ms() - t0;
	tap_ok(res.r == 0 && ms < 2000, "CLEAR_DIRTY_LOG of 4M pages, all bits set: %s in %ld ms",
	       res_str(res), ms);
	log = (struct kvm_dirty_log){ .slot = 1, .dirty_bitmap = mask };
	t0 = now_ms();
	res = do_ioctl(g.vm.fd, KVM_GET_DIRTY_LOG, (unsigned long)&log);
	ms = now_ms() - t0;
	tap_ok(res.r == 0 && ms < 2000 && !mask[0] && !mask[BIG_PAGES / 8 - 1],
	       "GET_DIRTY_LOG of the untouched 16 GiB slot: %s in %ld ms, nothing dirty", res_str(res),
	       ms);

	small = mmap(NULL, SMALL_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		     -1, 0);
	if (small == MAP_FAILED)
		BAIL("mmap");
	vm_set_slot(g.vm.fd, 2, SMALL_GPA, SMALL_PAGES * PAGE, small, KVM_MEM_LOG_DIRTY_PAGES);
	guest_load(g.mem, GUEST_CODE_GPA, dls_guest);
	run_writer(&g);
	bits = get_log(&g.vm, 2);
	tap_ok(bits == ~0ull, "the guest wrote 64 pages: dirty %#llx", (unsigned long long)bits);
	clear = (struct kvm_clear_dirty_log){ .slot = 2, .num_pages = SMALL_PAGES, .dirty_bitmap = &even };
	res = do_ioctl(g.vm.fd, KVM_CLEAR_DIRTY_LOG, (unsigned long)&clear);
	bits = get_log(&g.vm, 2);
	tap_ok(res.r == 0 && bits == ~even, "CLEAR of the even pages: %s, dirty %#llx", res_str(res),
	       (unsigned long long)bits);
	clear.dirty_bitmap = &bits;
	bits = ~even;
	res = do_ioctl(g.vm.fd, KVM_CLEAR_DIRTY_LOG, (unsigned long)&clear);
	bits = get_log(&g.vm, 2);
	tap_ok(res.r == 0 && bits == 0, "CLEAR of the odd pages too: %s, dirty %#llx", res_str(res),
	       (unsigned long long)bits);
	run_writer(&g);
	bits = get_log(&g.vm, 2);
	tap_ok(bits == ~0ull, "every cleared page was write-protected: the guest's writes dirty all 64 again (%#llx)",
	       (unsigned long long)bits);
	tap_done();
}

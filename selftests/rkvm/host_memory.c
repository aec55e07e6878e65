// SPDX-License-Identifier: GPL-2.0
/*
 * The guest gets only the host memory it was given, with the host's permissions.
 *
 *  - A writable memslot over memory the VMM may only read: the zero page behind an
 *    untouched PROT_READ anonymous mapping, and a write-sealed memfd mapped read-only.
 *    The guest reads the page (and sees its contents), then writes it: KVM_RUN fails
 *    with EFAULT, and the host page is unchanged (the zero page still reads zero in a
 *    new mapping; the memfd still holds what was written to it).
 *  - Memslots must lie below the highest guest frame the two-dimensional page tables can
 *    map (KVM: the host's MAXPHYADDR): a slot at or across that limit, or at 2^48, or
 *    moved there, is refused with EINVAL; the last pages below the limit are accepted.
 *  - A deleted memslot leaves nothing behind: after the guest read a slot's page, the
 *    slot is deleted and its memory unmapped; the guest's next read of that address is
 *    an MMIO exit, not the old page.
 *
 * A hypervisor with the first bug lets the guest write the host's shared zero page, which
 * breaks every process: this test runs late in its boot.
 */
#define _GNU_SOURCE
#include <sys/syscall.h>

#include "lib/rkvm_test.h"

#define PAGE 4096ull
#define TARGET_GPA 0x1000000ull /* 16 MiB: inside the guest's identity map */
#define PORT_READ 0x91
#define PORT_WROTE 0x92

/* Reads the byte at RSI (OUT to PORT_READ), writes 0x42 there, OUTs PORT_WROTE, halts. */
GUEST_CODE(hm_guest, 64,
	"movb (%rsi), %al\n"
	"out %al, $" XSTR(PORT_READ) "\n"
	"movb $0x42, (%rsi)\n"
	"out %al, $" XSTR(PORT_WROTE) "\n"
	"hlt\n");

/* Reads the byte at RSI, OUTs it to PORT_READ, halts. */
GUEST_CODE(hm_reader, 64,
	"movb (%rsi), %al\n"
	"out %al, $" XSTR(PORT_READ) "\n"
	"hlt\n");

static int set_region(struct vm *vm, uint32_t slot, uint64_t gpa, uint64_t size, void *hva)
{
	struct kvm_userspace_memory_region r = {
		.slot = slot,
		.guest_phys_addr = gpa,
		.memory_size = size,
		.userspace_addr = (uintptr_t)hva,
	};

	return ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, &r) ? errno : 0;
}

static void start_guest(struct guest *g, const uint8_t *code, size_t len, uint64_t rsi)
{
	struct kvm_regs regs;

	memcpy(g->mem + GUEST_CODE_GPA, code, len);
	vcpu_set_long_mode(&g->v, g->mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
	vcpu_get_regs(&g->v, &regs);
	regs.rsi = rsi;
	vcpu_set_regs(&g->v, &regs);
}

/*
 * The guest reads and then writes the page at TARGET_GPA backed by HVA (slot 1, writable):
 * the read must see WANT, the write must fail KVM_RUN with EFAULT.
 */
static void write_to_readonly(void *hva, uint8_t want, const char *what)
{
	struct guest g = guest_create();
	struct ioctl_res res;
	int e;

	e = set_region(&g.vm, 1, TARGET_GPA, PAGE, hva);
	tap_ok(e == 0, "%s: a writable memslot over it is accepted (%s)", what, errno_name(e));
	start_guest(&g, hm_guest, hm_guest_end - hm_guest, TARGET_GPA);
	vcpu_run(&g.v);
	tap_ok(is_out(&g.v, PORT_READ, 1) && io_out_value(&g.v) == want,
	       "%s: the guest reads %#x (%s)", what, want, exit_str(&g.v));
	res = do_ioctl(g.v.fd, KVM_RUN, 0);
	tap_ok(res.r == -1 && res.err == EFAULT, "%s: the guest's write -> KVM_RUN -1/EFAULT (got %s, %s)",
	       what, res_str(res), res.r == 0 ? exit_str(&g.v) : "no exit");
	guest_destroy(&g);
}

static void readonly_host_pages(void)
{
	const char text[] = "sealed";
	uint8_t *anon, *fresh, *m;
	char back[sizeof(text)] = { 0 };
	int fd;

	/* The zero page behind an untouched read-only anonymous mapping. */
	anon = mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (anon == MAP_FAILED)
		BAIL("mmap PROT_READ");
	write_to_readonly(anon, 0, "zero page of a PROT_READ mapping");
	fresh = mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (fresh == MAP_FAILED)
		BAIL("mmap PROT_READ");
	tap_ok(anon[0] == 0 && fresh[0] == 0, "the zero page still reads 0 (%#x, new mapping %#x)",
	       anon[0], fresh[0]);
	munmap(fresh, PAGE);
	munmap(anon, PAGE);

	/* A write-sealed memfd, mapped shared and read-only. */
	fd = syscall(SYS_memfd_create, "rkvm-sealed", MFD_ALLOW_SEALING);
	if (fd < 0)
		BAIL("memfd_create");
	if (ftruncate(fd, PAGE) || pwrite(fd, text, sizeof(text), 0) != sizeof(text))
		BAIL("fill memfd");
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL))
		BAIL("F_ADD_SEALS");
	m = mmap(NULL, PAGE, PROT_READ, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		BAIL("mmap sealed memfd");
	write_to_readonly(m, 's', "sealed memfd");
	if (pread(fd, back, sizeof(back), 0) != sizeof(back))
		BAIL("pread memfd");
	tap_ok(!memcmp(back, text, sizeof(text)), "the sealed memfd still holds \"%s\" (\"%.6s\")",
	       text, back);
	munmap(m, PAGE);
	close(fd);
}

/* The guest-physical address bits of the host (CPUID 0x80000008), as KVM limits slots. */
static int host_phys_bits(void)
{
	uint32_t a = 0x80000000, b, c, d;

	__asm__ volatile("cpuid" : "+a"(a), "=b"(b), "=c"(c), "=d"(d));
	if (a < 0x80000008)
		return 36;
	a = 0x80000008;
	c = 0;
	__asm__ volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d));
	return a & 0xff;
}

static void slot_limits(void)
{
	int bits = host_phys_bits();
	uint64_t top = 1ull << (bits < 48 ? bits : 48);
	struct guest g = guest_create();
	void *mem = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int e;

	if (mem == MAP_FAILED)
		BAIL("mmap");
	tap_diag("host MAXPHYADDR %d: memslots must end at or below %#llx", bits,
		 (unsigned long long)top);
	e = set_region(&g.vm, 2, 1ull << 48 | TARGET_GPA, PAGE, mem);
	tap_ok(e == EINVAL, "a memslot at 2^48 + 16 MiB -> EINVAL (got %s)", errno_name(e));
	e = set_region(&g.vm, 2, top, PAGE, mem);
	tap_ok(e == EINVAL, "a memslot at the limit -> EINVAL (got %s)", errno_name(e));
	e = set_region(&g.vm, 2, top - PAGE, 2 * PAGE, mem);
	tap_ok(e == EINVAL, "a memslot across the limit -> EINVAL (got %s)", errno_name(e));
	if (bits <= 48) {
		e = set_region(&g.vm, 2, top - 2 * PAGE, 2 * PAGE, mem);
		tap_ok(e == 0, "the last two pages below the limit are accepted (%s)", errno_name(e));
	} else {
		tap_ok(1, "# SKIP MAXPHYADDR %d is beyond a 4-level walk", bits);
		set_region(&g.vm, 2, TARGET_GPA, 2 * PAGE, mem);
	}
	e = set_region(&g.vm, 2, 1ull << 48, 2 * PAGE, mem);
	tap_ok(e == EINVAL, "moving that memslot to 2^48 -> EINVAL (got %s)", errno_name(e));
	guest_destroy(&g);
	munmap(mem, 2 * PAGE);
}

static void deleted_slot(void)
{
	struct guest g = guest_create();
	uint8_t *mem = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct kvm_regs regs;
	int e;

	if (mem == MAP_FAILED)
		BAIL("mmap");
	memset(mem, 0x5a, PAGE);
	if (set_region(&g.vm, 1, TARGET_GPA, PAGE, mem))
		BAIL("memslot");
	start_guest(&g, hm_reader, hm_reader_end - hm_reader, TARGET_GPA);
	vcpu_run(&g.v);
	tap_ok(is_out(&g.v, PORT_READ, 1) && io_out_value(&g.v) == 0x5a,
	       "the guest reads the slot's page: %s", exit_str(&g.v));
	e = set_region(&g.vm, 1, TARGET_GPA, 0, mem);
	munmap(mem, PAGE);
	vcpu_run(&g.v);
	vcpu_get_regs(&g.v, &regs);
	regs.rip = GUEST_CODE_GPA;
	vcpu_set_regs(&g.v, &regs);
	vcpu_run(&g.v);
	tap_ok(!e && g.v.run->exit_reason == KVM_EXIT_MMIO && !g.v.run->mmio.is_write &&
		       g.v.run->mmio.phys_addr == TARGET_GPA,
	       "after the slot is deleted and unmapped, the read is MMIO (%s)", exit_str(&g.v));
	guest_destroy(&g);
}

int main(void)
{
	test_watchdog(120);
	tap_plan(15);
	readonly_host_pages();
	slot_limits();
	deleted_slot();
	tap_done();
}

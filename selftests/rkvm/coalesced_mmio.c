// SPDX-License-Identifier: GPL-2.0
/*
 * Coalesced MMIO and PIO: guest writes into registered zones do not exit; they appear in
 * the VM's ring page (mapped at KVM_COALESCED_MMIO_PAGE_OFFSET of every vCPU fd) in
 * order, with address, length, data and the PIO flag. Reads of a zone, writes outside it,
 * writes after KVM_UNREGISTER_COALESCED_MMIO and writes into a full ring exit as usual.
 * The ring page is touched before the first zone exists (rkvm makes the ring then) and
 * is the page the entries appear in; a page of the vCPU mapping past the ring gets
 * SIGBUS.
 */
#include <setjmp.h>
#include <signal.h>
#include "lib/rkvm_test.h"

#define CODE_GPA 0x1000
#define ZONE 0xd0000	/* no memory there: MMIO */
#define PORT 0x3f0
#define P_MARK 0xe0
#define RING_FILL 200
#define RING_MAX ((4096 - sizeof(struct kvm_coalesced_mmio_ring)) / sizeof(struct kvm_coalesced_mmio))

/* Real mode, DS = ZONE >> 4. */
GUEST_CODE(cm_guest, 16,
	"mov $0xd000, %ax\n"
	"mov %ax, %ds\n"
	"movb $0x11, (0)\n"		/* coalesced */
	"movw $0x2233, (2)\n"		/* coalesced */
	"movl $0x44556677, (8)\n"	/* coalesced */
	"mov $" XSTR(PORT) ", %dx\n"
	"mov $0x88, %al\n"
	"out %al, %dx\n"		/* coalesced PIO */
	"movb $0x99, (0x100)\n"		/* outside the zone: MMIO exit */
	"mov (0), %al\n"		/* a read of the zone: MMIO exit */
	"out %al, $" XSTR(P_MARK) "\n"	/* after unregistering: */
	"movb $0x12, (0)\n"		/* MMIO exit */
	"out %al, $" XSTR(P_MARK) "\n"	/* zone registered again, ring nearly full */
	"mov $" XSTR(RING_FILL) ", %cx\n"
	"1: movb $0x34, (4)\n"
	"loop 1b\n"
	"hlt\n");

static struct kvm_coalesced_mmio_ring *ring;

static int ring_count(void)
{
	return (ring->last + RING_MAX - ring->first) % RING_MAX;
}

static struct kvm_coalesced_mmio *ring_entry(int i)
{
	return &ring->coalesced_mmio[(ring->first + i) % RING_MAX];
}

static sigjmp_buf bus_jb;

static void on_sigbus(int sig)
{
	(void)sig;
	siglongjmp(bus_jb, 1);
}

/* Whether reading the byte at P raises SIGBUS. */
static int read_sigbus(volatile uint8_t *p)
{
	struct sigaction sa = { .sa_handler = on_sigbus }, old;
	int bus = 0;

	sigaction(SIGBUS, &sa, &old);
	if (sigsetjmp(bus_jb, 1))
		bus = 1;
	else
		(void)*p;
	sigaction(SIGBUS, &old, NULL);
	return bus;
}

static int zone(int fd, unsigned long req, uint64_t addr, uint32_t size, uint32_t pio)
{
	struct kvm_coalesced_mmio_zone z = { .addr = addr, .size = size, .pio = pio };

	return ioctl(fd, req, &z);
}

int main(void)
{
	struct vm vm;
	struct vcpu v;
	uint8_t *mem;
	uint32_t r;
	int off, n, exits;
	long ret;

	test_watchdog(120);
	vm = vm_create();
	off = ioctl(vm.sys_fd, KVM_CHECK_EXTENSION, KVM_CAP_COALESCED_MMIO);
	if (off <= 0)
		tap_skip_all("no KVM_CAP_COALESCED_MMIO");
	tap_plan(19);
	tap_ok(off == KVM_COALESCED_MMIO_PAGE_OFFSET, "the ring is at page %d of the vCPU mapping",
	       off);
	if (ioctl(vm.fd, KVM_SET_TSS_ADDR, 0xfffbd000))
		BAIL("KVM_SET_TSS_ADDR");
	mem = vm_add_memory(&vm, 0, 0, 0x10000, 0);
	guest_load(mem, CODE_GPA, cm_guest);
	v = vcpu_create(&vm, 0);
	vcpu_set_real_mode(&v, CODE_GPA);
	ring = (void *)((uint8_t *)v.run + off * 4096);
	tap_ok(ring->first == 0 && ring->last == 0,
	       "before any zone, the ring page reads empty (first %u last %u)", ring->first,
	       ring->last);
	{
		/* One page more than KVM_GET_VCPU_MMAP_SIZE. */
		uint8_t *big = mmap(NULL, v.run_size + 4096, PROT_READ, MAP_SHARED, v.fd, 0);

		if (big == MAP_FAILED)
			BAIL("mmap of the vCPU fd");
		tap_ok(read_sigbus(big + v.run_size) && !read_sigbus(big),
		       "the page past the vCPU mapping's size gets SIGBUS, the run page does not");
		munmap(big, v.run_size + 4096);
	}

	ret = zone(vm.fd, KVM_REGISTER_COALESCED_MMIO, ZONE, 0x10, 2);
	tap_ok(ret == -1 && errno == EINVAL, "pio = 2 -> EINVAL (%ld, errno %d)", ret, errno);
	if (zone(vm.fd, KVM_REGISTER_COALESCED_MMIO, ZONE, 0x10, 0) ||
	    zone(vm.fd, KVM_REGISTER_COALESCED_MMIO, PORT, 1, 1))
		BAIL("KVM_REGISTER_COALESCED_MMIO");

	r = vcpu_run(&v);
	tap_ok(r == KVM_EXIT_MMIO && v.run->mmio.phys_addr == ZONE + 0x100 && v.run->mmio.is_write,
	       "first exit: the write outside the zone (%s)", exit_str(&v));
	n = ring_count();
	tap_ok(n == 4, "4 writes wait in the ring (%d, first %u last %u)", n, ring->first, ring->last);
	tap_ok(n >= 1 && ring_entry(0)->phys_addr == ZONE && ring_entry(0)->len == 1 &&
		       ring_entry(0)->data[0] == 0x11 && !ring_entry(0)->pio,
	       "entry 0: byte 0x11 at the zone's start");
	tap_ok(n >= 2 && ring_entry(1)->phys_addr == ZONE + 2 && ring_entry(1)->len == 2 &&
		       *(uint16_t *)ring_entry(1)->data == 0x2233,
	       "entry 1: word 0x2233 at +2");
	tap_ok(n >= 3 && ring_entry(2)->phys_addr == ZONE + 8 && ring_entry(2)->len == 4 &&
		       *(uint32_t *)ring_entry(2)->data == 0x44556677,
	       "entry 2: dword 0x44556677 at +8");
	tap_ok(n >= 4 && ring_entry(3)->phys_addr == PORT && ring_entry(3)->len == 1 &&
		       ring_entry(3)->data[0] == 0x88 && ring_entry(3)->pio == 1,
	       "entry 3: OUT 0x88 to port %#x, flagged PIO", PORT);
	ring->first = ring->last;

	r = vcpu_run(&v);
	tap_ok(r == KVM_EXIT_MMIO && v.run->mmio.phys_addr == ZONE && !v.run->mmio.is_write,
	       "a read of the zone exits (%s)", exit_str(&v));
	v.run->mmio.data[0] = 0x5a;
	r = vcpu_run(&v);
	tap_ok(r == KVM_EXIT_IO && is_out(&v, P_MARK, 1) && io_out_value(&v) == 0x5a,
	       "the read completes with userspace's data (%s)", exit_str(&v));

	ret = zone(vm.fd, KVM_UNREGISTER_COALESCED_MMIO, ZONE, 0x10, 0);
	tap_ok(ret == 0, "KVM_UNREGISTER_COALESCED_MMIO (%ld)", ret);
	r = vcpu_run(&v);
	tap_ok(r == KVM_EXIT_MMIO && v.run->mmio.phys_addr == ZONE && v.run->mmio.is_write &&
		       ring_count() == 0,
	       "after unregistering, the write exits (%s)", exit_str(&v));
	r = vcpu_run(&v);
	tap_ok(r == KVM_EXIT_IO && is_out(&v, P_MARK, 1), "guest at the ring-fill loop (%s)",
	       exit_str(&v));

	/* RING_FILL writes into a ring that holds RING_MAX - 1. */
	if (zone(vm.fd, KVM_REGISTER_COALESCED_MMIO, ZONE, 0x10, 0))
		BAIL("KVM_REGISTER_COALESCED_MMIO again");
	r = vcpu_run(&v);
	n = ring_count();
	tap_ok(r == KVM_EXIT_MMIO && v.run->mmio.phys_addr == ZONE + 4 && n == (int)RING_MAX - 1,
	       "a full ring (%d of %zu) turns the next write into an exit (%s)", n,
	       (size_t)RING_MAX, exit_str(&v));
	ring->first = ring->last;
	for (exits = 0; (r = vcpu_run(&v)) == KVM_EXIT_MMIO && exits < RING_FILL; exits++)
		ring->first = ring->last;
	n = ring_count();
	tap_ok(r == KVM_EXIT_HLT && exits == 0 && n == RING_FILL - (int)RING_MAX,
	       "the rest coalesces once drained: %d in the ring, %d more exits (%s)", n, exits,
	       exit_str(&v));
	tap_ok(ring_entry(0)->phys_addr == ZONE + 4 && ring_entry(0)->data[0] == 0x34,
	       "and each entry is the loop's byte");
	ret = zone(vm.fd, KVM_UNREGISTER_COALESCED_MMIO, PORT, 1, 1);
	tap_ok(ret == 0, "KVM_UNREGISTER_COALESCED_MMIO of the port (%ld)", ret);
	tap_done();
}

// SPDX-License-Identifier: GPL-2.0
/*
 * KVM_IOEVENTFD: guest writes to a registered MMIO address or I/O port signal an eventfd
 * instead of exiting (any value, or with KVM_IOEVENTFD_FLAG_DATAMATCH only the given one;
 * a non-matching write exits as usual), and KVM's errnos: a bad length (EINVAL), a
 * colliding registration (EEXIST), removing one that is not there (ENOENT).
 */
#include "lib/rkvm_test.h"
#include <sys/eventfd.h>

#define CODE_GPA 0x1000
#define MMIO 0xd0000
#define PORT 0x70
#define P_DONE 0xe0

/* Real mode, DS = MMIO >> 4. */
GUEST_CODE(ioe_guest, 16,
	"mov $0xd000, %ax\n"
	"mov %ax, %ds\n"
	"movb $0x11, (0)\n"		/* wildcard MMIO: signals */
	"movw $0x1234, (8)\n"		/* datamatch 0x1234: signals */
	"movw $0x5555, (8)\n"		/* no match: MMIO exit */
	"mov $0x42, %al\n"
	"out %al, $" XSTR(PORT) "\n"	/* PIO: signals */
	"mov $1, %al\n"
	"out %al, $" XSTR(P_DONE) "\n"
	"hlt\n");

static long ioe(int vm_fd, uint64_t addr, uint32_t len, int fd, uint32_t flags, uint64_t data)
{
	struct kvm_ioeventfd a = {
		.datamatch = data, .addr = addr, .len = len, .fd = fd, .flags = flags,
	};

	return ioctl(vm_fd, KVM_IOEVENTFD, &a);
}

static uint64_t count(int fd)
{
	uint64_t v = 0;

	if (read(fd, &v, 8) != 8)
		return 0;
	return v;
}

int main(void)
{
	struct vm vm;
	struct vcpu v;
	uint8_t *mem;
	int e1, e2, e3;
	long r;

	test_watchdog(60);
	vm = vm_create();
	REQUIRE_CAP(vm.sys_fd, KVM_CAP_IOEVENTFD);
	tap_plan(11);
	if (ioctl(vm.fd, KVM_SET_TSS_ADDR, 0xfffbd000))
		BAIL("KVM_SET_TSS_ADDR");
	mem = vm_add_memory(&vm, 0, 0, 0x10000, 0);
	guest_load(mem, CODE_GPA, ioe_guest);
	v = vcpu_create(&vm, 0);
	vcpu_set_real_mode(&v, CODE_GPA);
	e1 = eventfd(0, EFD_NONBLOCK);
	e2 = eventfd(0, EFD_NONBLOCK);
	e3 = eventfd(0, EFD_NONBLOCK);
	if (e1 < 0 || e2 < 0 || e3 < 0)
		BAIL("eventfd");

	r = ioe(vm.fd, MMIO, 3, e1, 0, 0);
	tap_ok(r == -1 && errno == EINVAL, "length 3 -> EINVAL (%ld, errno %d)", r, errno);
	r = ioe(vm.fd, MMIO, 1, e1, 0, 0);
	tap_ok(r == 0, "MMIO %#x, 1 byte, any value (%ld, errno %d)", MMIO, r, errno);
	r = ioe(vm.fd, MMIO, 1, e2, 0, 0);
	tap_ok(r == -1 && errno == EEXIST, "the same address again -> EEXIST (%ld, errno %d)", r,
	       errno);
	r = ioe(vm.fd, MMIO + 8, 2, e2, KVM_IOEVENTFD_FLAG_DATAMATCH, 0x1234);
	tap_ok(r == 0, "MMIO %#x, 2 bytes, only 0x1234 (%ld, errno %d)", MMIO + 8, r, errno);
	r = ioe(vm.fd, PORT, 1, e3, KVM_IOEVENTFD_FLAG_PIO, 0);
	tap_ok(r == 0, "port %#x (%ld, errno %d)", PORT, r, errno);

	tap_ok(vcpu_run(&v) == KVM_EXIT_MMIO && v.run->mmio.phys_addr == MMIO + 8 &&
		       v.run->mmio.is_write && *(uint16_t *)v.run->mmio.data == 0x5555,
	       "the first exit is the write that does not match (%s)", exit_str(&v));
	tap_ok(count(e1) == 1 && count(e2) == 1,
	       "the wildcard and the matching write signalled their eventfds");
	tap_ok(vcpu_run(&v) == KVM_EXIT_IO && is_out(&v, P_DONE, 1),
	       "the OUT to the port did not exit either (%s)", exit_str(&v));
	tap_ok(count(e3) == 1, "and signalled its eventfd");
	r = ioe(vm.fd, PORT, 1, e3, KVM_IOEVENTFD_FLAG_PIO | KVM_IOEVENTFD_FLAG_DEASSIGN, 0);
	tap_ok(r == 0, "KVM_IOEVENTFD_FLAG_DEASSIGN (%ld, errno %d)", r, errno);
	r = ioe(vm.fd, PORT, 1, e3, KVM_IOEVENTFD_FLAG_PIO | KVM_IOEVENTFD_FLAG_DEASSIGN, 0);
	tap_ok(r == -1 && errno == ENOENT, "deassigning it again -> ENOENT (%ld, errno %d)", r,
	       errno);
	tap_done();
}

// SPDX-License-Identifier: GPL-2.0
/*
 * A real-mode guest does arithmetic, writes a counter to an I/O port 20 000 times and
 * halts. Every exit must be the expected KVM_EXIT_IO, the registers at KVM_EXIT_HLT must
 * hold the arithmetic results, and RIP must point just past the HLT.
 */
#include "lib/rkvm_test.h"

#define CODE_GPA 0x1000
#define PORT 0xf1
#define LOOPS 20000

/* 16-bit code; offsets in the comments. */
static const uint8_t guest_code[] = {
	0xb8, 0x34, 0x12,	/* 00: mov ax, 0x1234 */
	0xbb, 0x11, 0x00,	/* 03: mov bx, 0x0011 */
	0x01, 0xd8,		/* 06: add ax, bx      -> 0x1245 */
	0x89, 0xc6,		/* 08: mov si, ax */
	0xba, PORT, 0x00,	/* 0a: mov dx, PORT */
	0xb9, LOOPS & 0xff, LOOPS >> 8, /* 0d: mov cx, LOOPS */
	0x88, 0xc8,		/* 10: mov al, cl */
	0xee,			/* 12: out dx, al */
	0xe2, 0xfb,		/* 13: loop 0x10 */
	0xb8, 0x06, 0x00,	/* 15: mov ax, 6 */
	0xbb, 0x07, 0x00,	/* 18: mov bx, 7 */
	0xf7, 0xe3,		/* 1b: mul bx          -> dx:ax = 42 */
	0xf4,			/* 1d: hlt */
};

int main(void)
{
	struct vm vm;
	struct vcpu v;
	struct kvm_regs regs;
	uint8_t *mem;
	int ios = 0, bad_io = 0;
	uint32_t reason;

	test_watchdog(120);
	vm = vm_create();
	tap_plan(7);
	/* Needed where the CPU lacks unrestricted guest; harmless elsewhere. */
	if (ioctl(vm.fd, KVM_SET_TSS_ADDR, 0xfffbd000))
		BAIL("KVM_SET_TSS_ADDR");
	mem = vm_add_memory(&vm, 0, 0, 0x10000, 0);
	memcpy(mem + CODE_GPA, guest_code, sizeof(guest_code));
	v = vcpu_create(&vm, 0);
	vcpu_set_real_mode(&v, CODE_GPA);
	/*
	 * The PIO data page (page 1 of the mapping) touched before any exit: zeros, and the
	 * page the OUTs below then put their data in.
	 */
	{
		const uint8_t *pio = (const uint8_t *)v.run + KVM_PIO_PAGE_OFFSET * 4096;
		int nonzero = 0;

		for (int i = 0; i < 4096; i++)
			nonzero += pio[i] != 0;
		tap_ok(!nonzero, "the PIO data page reads as zeros before the first exit (%d not)",
		       nonzero);
	}

	for (;;) {
		if (ioctl(v.fd, KVM_RUN, 0))
			BAIL("KVM_RUN after %d IO exits", ios);
		reason = v.run->exit_reason;
		if (reason != KVM_EXIT_IO)
			break;
		{
			uint8_t *data = (uint8_t *)v.run + v.run->io.data_offset;
			uint8_t want = (uint8_t)(LOOPS - ios);

			if (v.run->io.direction != KVM_EXIT_IO_OUT || v.run->io.port != PORT ||
			    v.run->io.size != 1 || v.run->io.count != 1 || *data != want) {
				if (!bad_io++)
					tap_diag("IO exit %d: dir %u port %#x size %u count %u data %#x (want %#x)",
						 ios, v.run->io.direction, v.run->io.port, v.run->io.size,
						 v.run->io.count, *data, want);
			}
		}
		if (++ios > LOOPS)
			break;
	}
	tap_ok(ios == LOOPS, "%d IO exits (want %d)", ios, LOOPS);
	tap_ok(!bad_io, "every IO exit is an 8-bit OUT of the counter to port %#x", PORT);
	if (!tap_ok(reason == KVM_EXIT_HLT, "final exit is HLT (got %s)", exit_name(reason)))
		tap_diag("hardware_exit_reason / suberror %#llx",
			 (unsigned long long)v.run->hw.hardware_exit_reason);
	if (ioctl(v.fd, KVM_GET_REGS, &regs))
		BAIL("KVM_GET_REGS");
	tap_ok(regs.rip == CODE_GPA + sizeof(guest_code), "RIP %#llx just past HLT (want %#zx)",
	       (unsigned long long)regs.rip, CODE_GPA + sizeof(guest_code));
	tap_ok((regs.rax & 0xffff) == 42 && (regs.rdx & 0xffff) == 0,
	       "mul result dx:ax = %#llx:%#llx (want 0:0x2a)", (unsigned long long)regs.rdx & 0xffff,
	       (unsigned long long)regs.rax & 0xffff);
	tap_ok((regs.rsi & 0xffff) == 0x1245 && (regs.rcx & 0xffff) == 0,
	       "add result si = %#llx (want 0x1245), cx = %#llx (want 0)",
	       (unsigned long long)regs.rsi & 0xffff, (unsigned long long)regs.rcx & 0xffff);
	tap_done();
}

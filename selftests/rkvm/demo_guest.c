// SPDX-License-Identifier: GPL-2.0
/*
 * The demo: a real-mode guest prints a line on its 16550 serial port (COM1, 0x3f8),
 * polling the line status register before each byte as a real driver does. This VMM
 * models just enough of the UART: LSR always reads "transmitter empty", THR writes are
 * echoed to stdout. Used by `make demo`.
 */
#include "lib/rkvm_test.h"

#define CODE_GPA 0x1000
#define TEXT_GPA 0x1100
#define COM1 0x3f8

static const uint8_t guest_code[] = {
	0xbe, TEXT_GPA & 0xff, TEXT_GPA >> 8,	/* 00: mov si, TEXT_GPA */
	0x8a, 0x04,				/* 03: mov al, [si] */
	0x84, 0xc0,				/* 05: test al, al */
	0x74, 0x11,				/* 07: jz 0x1a */
	0xba, 0xfd, 0x03,			/* 09: mov dx, COM1 + 5 (LSR) */
	0xec,					/* 0c: in al, dx */
	0xa8, 0x20,				/* 0d: test al, 0x20 (THRE) */
	0x74, 0xfb,				/* 0f: jz 0x0c */
	0xba, 0xf8, 0x03,			/* 11: mov dx, COM1 (THR) */
	0x8a, 0x04,				/* 14: mov al, [si] */
	0xee,					/* 16: out dx, al */
	0x46,					/* 17: inc si */
	0xeb, 0xe9,				/* 18: jmp 0x03 */
	0xf4,					/* 1a: hlt */
};

static const char text[] = "Hello from a guest running on rkvm!\n";

int main(void)
{
	struct vm vm;
	struct vcpu v;
	uint8_t *mem;
	char line[128];
	size_t len = 0;
	int exits = 0;

	test_watchdog(60);
	vm = vm_create();
	if (ioctl(vm.fd, KVM_SET_TSS_ADDR, 0xfffbd000))
		BAIL("KVM_SET_TSS_ADDR");
	mem = vm_add_memory(&vm, 0, 0, 0x10000, 0);
	memcpy(mem + CODE_GPA, guest_code, sizeof(guest_code));
	memcpy(mem + TEXT_GPA, text, sizeof(text));
	v = vcpu_create(&vm, 0);
	vcpu_set_real_mode(&v, CODE_GPA);

	for (;;) {
		uint8_t *data;

		if (ioctl(v.fd, KVM_RUN, 0))
			BAIL("KVM_RUN");
		exits++;
		if (v.run->exit_reason != KVM_EXIT_IO)
			break;
		data = (uint8_t *)v.run + v.run->io.data_offset;
		if (v.run->io.direction == KVM_EXIT_IO_IN && v.run->io.port == COM1 + 5)
			*data = 0x60; /* THR empty, transmitter idle */
		else if (v.run->io.direction == KVM_EXIT_IO_OUT && v.run->io.port == COM1 &&
			 len < sizeof(line) - 1)
			line[len++] = *data;
	}
	line[len] = 0;
	printf("guest serial: %s", line);
	printf("vm exits seen by the VMM: %d, last exit: %s\n", exits, exit_name(v.run->exit_reason));
	print_vm_stats(vm.fd, "  ");
	return v.run->exit_reason == KVM_EXIT_HLT && !strcmp(line, text) ? 0 : 1;
}

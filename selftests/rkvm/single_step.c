// SPDX-License-Identifier: GPL-2.0
/*
 * The guest's own single-stepping (RFLAGS.TF) over instructions the hypervisor completes
 * for it: after each one the guest gets the #DB the CPU would raise, with DR6.BS, and
 * its return address is the next instruction (KVM's kvm_skip_emulated_instruction).
 * A real-mode guest sets TF and runs XOR (native), CPUID (completed by the hypervisor,
 * inside rkvm's VMX window), OUT (completed around an exit to userspace), a write to a
 * coalesced MMIO zone (emulated, no exit) and RDMSR (completed by the hypervisor); its
 * #DB handler reports the return IP and DR6 of each trap.
 */
#include "lib/rkvm_test.h"

#define CODE_GPA 0x1000
#define HANDLER_GPA 0x1100
#define MMIO_GPA 0x20000
#define P_IP 0xf3
#define P_DR6 0xf4
#define P_DONE 0xf2

static const uint8_t guest_code[] = {
	0xb8, 0x00, 0x20, 0x8e, 0xc0,		/* 1000: mov ax, 0x2000 ; mov es, ax */
	0x66, 0xb9, 0x1b, 0x00, 0x00, 0x00,	/* 1005: mov ecx, 0x1b */
	0x9c, 0x58, 0x0d, 0x00, 0x01, 0x50, 0x9d, /* 100b: pushf; pop ax; or ax, 0x100; push ax; popf */
	0x66, 0x31, 0xc0,			/* 1012: xor eax, eax   -> trap at 1015 */
	0x0f, 0xa2,				/* 1015: cpuid          -> trap at 1017 */
	0xe6, 0xf1,				/* 1017: out 0xf1, al   -> trap at 1019 */
	0x26, 0xa2, 0x00, 0x00,			/* 1019: mov es:[0], al -> trap at 101d */
	0x66, 0xb9, 0x1b, 0x00, 0x00, 0x00,	/* 101d: mov ecx, 0x1b  -> trap at 1023 */
	0x0f, 0x32,				/* 1023: rdmsr          -> trap at 1025 */
	0x9c, 0x58, 0x25, 0xff, 0xfe, 0x50, 0x9d, /* 1025: clear TF the same way */
	0xe6, 0xf2,				/* out 0xf2, al: done */
	0xf4,
};

/* #DB: report the return IP and DR6, return with TF still set in the saved FLAGS. */
static const uint8_t handler[] = {
	0x55,					/* push bp */
	0x89, 0xe5,				/* mov bp, sp */
	0x66, 0x50,				/* push eax */
	0x8b, 0x46, 0x02,			/* mov ax, [bp+2] (the return IP) */
	0xe7, P_IP,				/* out P_IP, ax */
	0x0f, 0x21, 0xf0,			/* mov eax, dr6 */
	0x66, 0xe7, P_DR6,			/* out P_DR6, eax */
	0x66, 0x58,				/* pop eax */
	0x5d,					/* pop bp */
	0xcf,					/* iret */
};

static const uint16_t want[] = { 0x1015, 0x1017, 0x1019, 0x101d, 0x1023, 0x1025 };
static const char *const what[] = { "XOR (native)", "CPUID", "OUT to userspace",
				    "MMIO write to a coalesced zone", "MOV (native)", "RDMSR" };

int main(void)
{
	struct kvm_coalesced_mmio_zone z = { .addr = MMIO_GPA, .size = 4 };
	uint16_t ip[16];
	uint32_t dr6[16];
	int n = 0, m = 0, done = 0, i;
	struct vm vm;
	struct vcpu v;
	uint8_t *mem;

	test_watchdog(60);
	vm = vm_create();
	v = real_mode_vcpu(&vm, CODE_GPA, guest_code, sizeof(guest_code), &mem);
	memcpy(mem + HANDLER_GPA, handler, sizeof(handler));
	mem[1 * 4] = HANDLER_GPA & 0xff;
	mem[1 * 4 + 1] = HANDLER_GPA >> 8;
	if (ioctl(vm.fd, KVM_REGISTER_COALESCED_MMIO, &z))
		BAIL("KVM_REGISTER_COALESCED_MMIO");
	tap_plan(6);
	for (i = 0; i < 64 && !done; i++) {
		vcpu_run(&v);
		if (v.run->exit_reason != KVM_EXIT_IO || v.run->io.direction != KVM_EXIT_IO_OUT)
			BAIL("unexpected exit %s", exit_str(&v));
		switch (v.run->io.port) {
		case P_IP:
			if (n < 16)
				ip[n++] = io_out_value(&v);
			break;
		case P_DR6:
			if (m < 16)
				dr6[m++] = io_out_value(&v);
			break;
		case P_DONE:
			done = 1;
			break;
		}
	}
	if (!done)
		BAIL("the guest never finished (%d traps)", n);
	for (i = 0; i < 6; i++)
		tap_ok(i < n && ip[i] == want[i] && i < m && (dr6[i] & 0x4000),
		       "TF over %s: #DB returns to %#x (want %#x), DR6 %#x (BS set)", what[i],
		       i < n ? ip[i] : 0, want[i], i < m ? dr6[i] : 0);
	tap_done();
}

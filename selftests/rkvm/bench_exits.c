// SPDX-License-Identifier: GPL-2.0
/*
 * Benchmark (not a test): the cost of VM exits, measured with the guest's
 * CLOCK_MONOTONIC. Under Bochs that clock counts emulated instructions, so the numbers
 * compare path lengths of two hypervisors in the same boot, not real-world speed.
 *
 *   io      N OUTs, each a round trip to this VMM (exit to userspace and back)
 *   cpuid   N CPUIDs, each handled inside the hypervisor, then one OUT
 *
 * Prints one line per kind: "bench <kind> <exits> <ns per exit>".
 */
#include <time.h>
#include "lib/rkvm_test.h"

#define CODE_GPA 0x1000
#define N 5000

/* mov cx, N ; loop: out 0xf1, al ; loop loop ; hlt */
static const uint8_t io_code[] = {
	0xb9, N & 0xff, N >> 8, 0xe6, 0xf1, 0xe2, 0xfc, 0xf4,
};

/* mov si, N ; loop: xor eax, eax ; cpuid ; dec si ; jnz loop ; out 0xf1, al ; hlt */
static const uint8_t cpuid_code[] = {
	0xbe, N & 0xff, N >> 8, 0x66, 0x31, 0xc0, 0x0f, 0xa2, 0x4e, 0x75, 0xf8, 0xe6, 0xf1, 0xf4,
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static void run_one(const char *kind, const uint8_t *code, size_t len, int exits)
{
	struct vm vm = vm_create();
	struct vcpu v;
	uint8_t *mem;
	uint64_t t0, t1;

	ioctl(vm.fd, KVM_SET_TSS_ADDR, 0xfffbd000);
	mem = vm_add_memory(&vm, 0, 0, 0x10000, 0);
	memcpy(mem + CODE_GPA, code, len);
	v = vcpu_create(&vm, 0);
	vcpu_set_real_mode(&v, CODE_GPA);
	t0 = now_ns();
	for (;;) {
		if (ioctl(v.fd, KVM_RUN, 0))
			BAIL("KVM_RUN");
		if (v.run->exit_reason != KVM_EXIT_IO)
			break;
	}
	t1 = now_ns();
	if (v.run->exit_reason != KVM_EXIT_HLT)
		BAIL("%s: unexpected exit %s", kind, exit_name(v.run->exit_reason));
	printf("bench %s %d %llu\n", kind, exits, (unsigned long long)((t1 - t0) / exits));
	print_vm_stats(vm.fd, "# ");
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	test_watchdog(300);
	run_one("io", io_code, sizeof(io_code), N);
	run_one("cpuid", cpuid_code, sizeof(cpuid_code), N);
	return 0;
}

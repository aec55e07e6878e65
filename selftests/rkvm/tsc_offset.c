// SPDX-License-Identifier: GPL-2.0
/*
 * The vCPU attribute KVM_VCPU_TSC_CTRL/KVM_VCPU_TSC_OFFSET: HAS/GET/SET_DEVICE_ATTR on the
 * vCPU fd (ENXIO for any other group or attribute), and a guest RDTSC that reads the
 * host's TSC plus the offset userspace set.
 */
#include "lib/rkvm_test.h"
#include <x86intrin.h>

#define CODE_GPA 0x1000
#define P_TSC 0xe0
#define OFFSET (1ull << 50)

GUEST_CODE(tsc_guest, 16,
	"rdtsc\n"
	"out %eax, $" XSTR(P_TSC) "\n"
	"mov %edx, %eax\n"
	"out %eax, $" XSTR(P_TSC) "\n"
	"hlt\n");

static long attr(int fd, unsigned long req, uint32_t group, uint64_t a, uint64_t *val)
{
	struct kvm_device_attr d = { .group = group, .attr = a, .addr = (uintptr_t)val };

	return ioctl(fd, req, &d);
}

int main(void)
{
	uint64_t off = OFFSET, got = 0, before, after, guest;
	struct vm vm;
	struct vcpu v;
	uint8_t *mem;
	uint32_t lo, hi;
	long r;

	test_watchdog(60);
	vm = vm_create();
	REQUIRE_CAP(vm.sys_fd, KVM_CAP_VCPU_ATTRIBUTES);
	tap_plan(8);
	if (ioctl(vm.fd, KVM_SET_TSS_ADDR, 0xfffbd000))
		BAIL("KVM_SET_TSS_ADDR");
	mem = vm_add_memory(&vm, 0, 0, 0x10000, 0);
	guest_load(mem, CODE_GPA, tsc_guest);
	v = vcpu_create(&vm, 0);
	vcpu_set_real_mode(&v, CODE_GPA);

	r = attr(v.fd, KVM_HAS_DEVICE_ATTR, KVM_VCPU_TSC_CTRL, KVM_VCPU_TSC_OFFSET, NULL);
	tap_ok(r == 0, "KVM_HAS_DEVICE_ATTR(TSC_CTRL, TSC_OFFSET) (%ld, errno %d)", r, errno);
	r = attr(v.fd, KVM_HAS_DEVICE_ATTR, KVM_VCPU_TSC_CTRL, 1, NULL);
	tap_ok(r == -1 && errno == ENXIO, "an unknown attribute -> ENXIO (%ld, errno %d)", r, errno);
	r = attr(v.fd, KVM_GET_DEVICE_ATTR, 7, KVM_VCPU_TSC_OFFSET, &got);
	tap_ok(r == -1 && errno == ENXIO, "an unknown group -> ENXIO (%ld, errno %d)", r, errno);
	r = attr(v.fd, KVM_SET_DEVICE_ATTR, KVM_VCPU_TSC_CTRL, KVM_VCPU_TSC_OFFSET, &off);
	tap_ok(r == 0, "KVM_SET_DEVICE_ATTR: offset 2^50 (%ld, errno %d)", r, errno);
	r = attr(v.fd, KVM_GET_DEVICE_ATTR, KVM_VCPU_TSC_CTRL, KVM_VCPU_TSC_OFFSET, &got);
	tap_ok(r == 0 && got == OFFSET, "KVM_GET_DEVICE_ATTR reads it back (%#llx)",
	       (unsigned long long)got);
	r = attr(v.fd, KVM_GET_DEVICE_ATTR, KVM_VCPU_TSC_CTRL, KVM_VCPU_TSC_OFFSET,
		 (uint64_t *)8);
	tap_ok(r == -1 && errno == EFAULT, "a bad address -> EFAULT (%ld, errno %d)", r, errno);

	before = __rdtsc();
	if (vcpu_run(&v) != KVM_EXIT_IO || !is_out(&v, P_TSC, 4))
		BAIL("guest: %s", exit_str(&v));
	lo = io_out_value(&v);
	if (vcpu_run(&v) != KVM_EXIT_IO || !is_out(&v, P_TSC, 4))
		BAIL("guest: %s", exit_str(&v));
	hi = io_out_value(&v);
	after = __rdtsc();
	guest = (uint64_t)hi << 32 | lo;
	tap_ok(before + OFFSET <= guest && guest <= after + OFFSET,
	       "guest RDTSC %#llx is the host's plus the offset (host %#llx..%#llx)",
	       (unsigned long long)guest, (unsigned long long)before, (unsigned long long)after);
	tap_ok(vcpu_run(&v) == KVM_EXIT_HLT, "guest halts (%s)", exit_str(&v));
	tap_done();
}

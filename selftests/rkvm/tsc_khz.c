// SPDX-License-Identifier: GPL-2.0
/*
 * KVM_SET_TSC_KHZ and KVM_GET_TSC_KHZ on vCPU and VM fds (arch/x86/kvm/x86.c
 * kvm_set_tsc_khz, kvm_arch_vm_ioctl; KVM_CAP_TSC_CONTROL, KVM_CAP_VM_TSC_CONTROL).
 *
 * Checks:
 *  - KVM_CAP_TSC_CONTROL and KVM_CAP_VM_TSC_CONTROL agree;
 *  - a vCPU starts at the VM's rate, which is the host's (KVM_GET_TSC_KHZ on both fds);
 *  - KVM_SET_TSC_KHZ(0) gives the host's calibrated rate; a rate 100 ppm off (inside KVM's
 *    250 ppm tolerance) is taken and reported as asked;
 *  - with TSC scaling: half the host's rate is taken, reported, and the TSC read back
 *    with KVM_GET_MSRS and the guest's RDTSC advance at that rate over 300 ms, and the
 *    two read the same TSC;
 *    0x7fffffff kHz -> EINVAL;
 *    KVM_SET_TSC_KHZ on the VM before its vCPUs sets their rate;
 *  - without TSC scaling: half the host's rate -> EINVAL;
 *  - KVM_SET_TSC_KHZ on the VM once a vCPU exists -> EINVAL.
 */
#include "lib/rkvm_test.h"
#include <time.h>

#define MSR_IA32_TSC 0x10
#define CODE_GPA 0x1000
#define P_TSC 0xe0

/* Real mode: RDTSC, both halves out, again. */
GUEST_CODE(rate_guest, 16,
	"1: rdtsc\n"
	"out %eax, $" XSTR(P_TSC) "\n"
	"mov %edx, %eax\n"
	"out %eax, $" XSTR(P_TSC) "\n"
	"jmp 1b\n");

/* The guest's RDTSC. */
static uint64_t guest_rdtsc(struct vcpu *v)
{
	uint32_t lo, hi;

	if (vcpu_run(v) != KVM_EXIT_IO || !is_out(v, P_TSC, 4))
		BAIL("guest: %s", exit_str(v));
	lo = io_out_value(v);
	if (vcpu_run(v) != KVM_EXIT_IO || !is_out(v, P_TSC, 4))
		BAIL("guest: %s", exit_str(v));
	hi = io_out_value(v);
	return (uint64_t)hi << 32 | lo;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

int main(void)
{
	struct vm vm, vm2;
	struct vcpu v, v2;
	long host, r, ctl, vmctl;

	test_watchdog(60);
	tap_plan(12);
	vm = vm_create();
	if (ioctl(vm.fd, KVM_SET_TSS_ADDR, 0xfffbd000))
		BAIL("KVM_SET_TSS_ADDR");
	guest_load(vm_add_memory(&vm, 0, 0, 0x10000, 0), CODE_GPA, rate_guest);
	v = vcpu_create(&vm, 0);
	vcpu_set_real_mode(&v, CODE_GPA);
	ctl = ioctl(vm.sys_fd, KVM_CHECK_EXTENSION, KVM_CAP_TSC_CONTROL);
	vmctl = ioctl(vm.sys_fd, KVM_CHECK_EXTENSION, KVM_CAP_VM_TSC_CONTROL);
	tap_ok(ctl == vmctl && (ctl == 0 || ctl == 1),
	       "KVM_CAP_TSC_CONTROL %ld, KVM_CAP_VM_TSC_CONTROL %ld", ctl, vmctl);
	host = ioctl(vm.fd, KVM_GET_TSC_KHZ, 0);
	r = ioctl(v.fd, KVM_GET_TSC_KHZ, 0);
	tap_ok(host > 0 && r == host, "the vCPU runs at the VM's rate, the host's: %ld kHz (%ld)",
	       r, host);

	/*
	 * 0 means the kernel's calibrated TSC rate. (A VM's default can differ from it: KVM
	 * starts VMs at the CPU's top rate where the TSC is not constant, as under QEMU.)
	 */
	r = ioctl(v.fd, KVM_SET_TSC_KHZ, 0);
	host = ioctl(v.fd, KVM_GET_TSC_KHZ, 0);
	tap_ok(r == 0 && host > 0, "KVM_SET_TSC_KHZ(0): the host's rate, %ld kHz (%ld)", host, r);
	r = ioctl(v.fd, KVM_SET_TSC_KHZ, host + host / 10000);
	tap_ok(r == 0 && ioctl(v.fd, KVM_GET_TSC_KHZ, 0) == host + host / 10000,
	       "100 ppm off the host's rate: taken and reported (%ld, %ld kHz)", r,
	       ioctl(v.fd, KVM_GET_TSC_KHZ, 0));

	r = ioctl(v.fd, KVM_SET_TSC_KHZ, host / 2);
	if (ctl) {
		uint64_t t0, t1, n0, n1, rate;

		tap_ok(r == 0 && ioctl(v.fd, KVM_GET_TSC_KHZ, 0) == host / 2,
		       "with TSC scaling, half the host's rate is taken (%ld, %ld kHz)", r,
		       ioctl(v.fd, KVM_GET_TSC_KHZ, 0));
		n0 = now_ns();
		t0 = vcpu_get_msr1(&v, MSR_IA32_TSC);
		usleep(300 * 1000);
		t1 = vcpu_get_msr1(&v, MSR_IA32_TSC);
		n1 = now_ns();
		rate = (t1 - t0) * 1000000 / (n1 - n0);	/* kHz */
		tap_ok(rate > (uint64_t)host * 45 / 100 && rate < (uint64_t)host * 55 / 100,
		       "and the TSC advances at it: %llu kHz over %llu ms (host %ld)",
		       (unsigned long long)rate, (unsigned long long)(n1 - n0) / 1000000, host);
		/* The guest's own RDTSC runs at that rate too (the CPU's multiplier). */
		t0 = guest_rdtsc(&v);
		n0 = now_ns();
		usleep(300 * 1000);
		t1 = guest_rdtsc(&v);
		n1 = now_ns();
		rate = (t1 - t0) * 1000000 / (n1 - n0);
		tap_ok(rate > (uint64_t)host * 45 / 100 && rate < (uint64_t)host * 55 / 100,
		       "and so does the guest's RDTSC: %llu kHz", (unsigned long long)rate);
		/* The same TSC, not just the same rate: what the guest reads, userspace reads. */
		t0 = guest_rdtsc(&v);
		t1 = vcpu_get_msr1(&v, MSR_IA32_TSC);
		tap_ok(t1 - t0 < (uint64_t)host / 2 * 50,
		       "the guest's RDTSC and KVM_GET_MSRS agree (%lld cycles apart)",
		       (long long)(t1 - t0));
		r = ioctl(v.fd, KVM_SET_TSC_KHZ, 0x7fffffff);
		tap_ok(r == -1 && errno == EINVAL, "0x7fffffff kHz -> EINVAL (%ld, errno %d)", r, errno);
	} else {
		/* (KVM then reports the rate it refused; rkvm keeps the old one.) */
		tap_ok(r == -1 && errno == EINVAL, "without TSC scaling, half the host's rate -> EINVAL");
		tap_ok(1, "# SKIP no TSC scaling");
		tap_ok(1, "# SKIP no TSC scaling");
		tap_ok(1, "# SKIP no TSC scaling");
		tap_ok(1, "# SKIP no TSC scaling");
	}

	vm2 = vm_create();
	r = ioctl(vm2.fd, KVM_SET_TSC_KHZ, 2345678);
	tap_ok(r == 0 && ioctl(vm2.fd, KVM_GET_TSC_KHZ, 0) == 2345678,
	       "KVM_SET_TSC_KHZ(2345678) on a VM without vCPUs (%ld)", r);
	v2 = vcpu_create(&vm2, 0);
	if (ctl)
		tap_ok(ioctl(v2.fd, KVM_GET_TSC_KHZ, 0) == 2345678, "its new vCPU runs at 2345678 kHz (%ld)",
		       ioctl(v2.fd, KVM_GET_TSC_KHZ, 0));
	else
		tap_ok(1, "# SKIP no TSC scaling");
	r = ioctl(vm2.fd, KVM_SET_TSC_KHZ, 1000000);
	tap_ok(r == -1 && errno == EINVAL, "KVM_SET_TSC_KHZ on the VM after a vCPU -> EINVAL (%ld, %d)",
	       r, errno);
	tap_done();
}

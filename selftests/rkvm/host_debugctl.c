// SPDX-License-Identifier: GPL-2.0
/*
 * The host's IA32_DEBUGCTL survives running a guest. A VM exit clears the MSR, so the
 * hypervisor must put the host's value back. The test pins itself to CPU 0, sets
 * DEBUGCTL.BTF (bit 1: single-step on branches, harmless while nothing single-steps)
 * through /dev/cpu/0/msr, runs a guest on that CPU and reads the MSR back. Skips when
 * the MSR device is missing or the CPU (or emulator) does not keep the bit.
 */
#define _GNU_SOURCE
#include <sched.h>
#include "lib/rkvm_test.h"

#define MSR_IA32_DEBUGCTL 0x1d9
#define DEBUGCTL_BTF (1ull << 1)

GUEST_CODE(debugctl_guest, 32,
	"mov $1000, %ecx\n"
	"1:\n"
	"loop 1b\n"
	"hlt\n");

static int msr_fd = -1;

static int msr_read(uint64_t *v)
{
	return pread(msr_fd, v, 8, MSR_IA32_DEBUGCTL) == 8;
}

static int msr_write(uint64_t v)
{
	return pwrite(msr_fd, &v, 8, MSR_IA32_DEBUGCTL) == 8;
}

int main(void)
{
	uint64_t old = 0, set = 0, after = 0;
	struct guest g;
	cpu_set_t cpus;

	test_watchdog(60);
	CPU_ZERO(&cpus);
	CPU_SET(0, &cpus);
	if (sched_setaffinity(0, sizeof(cpus), &cpus))
		tap_skip_all("cannot pin to CPU 0");
	msr_fd = open("/dev/cpu/0/msr", O_RDWR | O_CLOEXEC);
	if (msr_fd < 0)
		tap_skip_all("no /dev/cpu/0/msr (CONFIG_X86_MSR)");
	if (!msr_read(&old))
		tap_skip_all("IA32_DEBUGCTL cannot be read on this CPU");
	if (!msr_write(old | DEBUGCTL_BTF) || !msr_read(&set) || !(set & DEBUGCTL_BTF)) {
		msr_write(old);
		tap_skip_all("this CPU does not keep IA32_DEBUGCTL.BTF");
	}
	tap_plan(2);
	g = guest_create();
	guest_load(g.mem, GUEST_CODE_GPA, debugctl_guest);
	vcpu_set_protected_mode(&g.v, g.mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
	tap_ok(vcpu_run(&g.v) == KVM_EXIT_HLT, "the guest ran on CPU 0 and halted (%s)",
	       exit_str(&g.v));
	after = 0;
	msr_read(&after);
	msr_write(old);
	tap_ok(after == set, "host IA32_DEBUGCTL after the guest: %#llx (set to %#llx)",
	       (unsigned long long)after, (unsigned long long)set);
	guest_destroy(&g);
	tap_done();
}

// SPDX-License-Identifier: GPL-2.0
/*
 * KVM_CAP_X86_USER_SPACE_MSR: with KVM_MSR_EXIT_REASON_UNKNOWN enabled, a guest RDMSR or
 * WRMSR of an MSR the hypervisor does not know exits to userspace as KVM_EXIT_X86_RDMSR /
 * KVM_EXIT_X86_WRMSR (reason, index, data), and userspace completes it: the data it
 * returns lands in EDX:EAX, and error = 1 makes the instruction #GP. A known MSR that
 * refuses a value (INVAL, not enabled here) still raises #GP without an exit.
 */
#include "lib/rkvm_test.h"

#define CODE_GPA 0x1000
#define UNKNOWN_MSR 0x474f4f00u /* unknown to both (the KVM selftests use it too) */
#define P_VAL 0xe0
#define P_GP 0xe1
#define P_DONE 0xe2

/* Real mode at CS 0; #GP (vector 13) reports on P_GP and skips the faulting 2-byte insn. */
GUEST_CODE(msr_guest, 16,
	"mov $" XSTR(UNKNOWN_MSR) ", %ecx\n"
	"rdmsr\n"
	"out %eax, $" XSTR(P_VAL) "\n"
	"mov %edx, %eax\n"
	"out %eax, $" XSTR(P_VAL) "\n"
	"mov $0x00112233, %eax\n"
	"mov $0xaabbccdd, %edx\n"
	"wrmsr\n"			/* userspace accepts it */
	"out %eax, $" XSTR(P_VAL) "\n"
	"wrmsr\n"			/* userspace fails it: #GP */
	"out %eax, $" XSTR(P_VAL) "\n"
	"mov $0x1b, %ecx\n"		/* IA32_APIC_BASE, reserved bit 0: INVAL, no exit */
	"mov $1, %eax\n"
	"xor %edx, %edx\n"
	"wrmsr\n"
	"out %eax, $" XSTR(P_DONE) "\n"
	"hlt\n"
	"gp_handler:\n"
	"push %bp\n"
	"mov %sp, %bp\n"
	"addw $2, 2(%bp)\n"		/* skip the 2-byte RDMSR/WRMSR */
	"mov $13, %ax\n"
	"out %ax, $" XSTR(P_GP) "\n"
	"pop %bp\n"
	"iret\n");
extern const uint8_t gp_handler[];

static uint32_t run_exit(struct vcpu *v)
{
	return vcpu_run(v);
}

int main(void)
{
	struct kvm_enable_cap cap = { .cap = KVM_CAP_X86_USER_SPACE_MSR };
	struct vm vm;
	struct vcpu v;
	uint8_t *mem;
	uint32_t r;
	long ret;

	test_watchdog(120);
	vm = vm_create();
	REQUIRE_CAP(vm.sys_fd, KVM_CAP_X86_USER_SPACE_MSR);
	tap_plan(14);
	if (ioctl(vm.fd, KVM_SET_TSS_ADDR, 0xfffbd000))
		BAIL("KVM_SET_TSS_ADDR");
	mem = vm_add_memory(&vm, 0, 0, 0x10000, 0);
	guest_load(mem, CODE_GPA, msr_guest);
	((uint16_t *)mem)[13 * 2] = GUEST_ADDR(CODE_GPA, msr_guest, gp_handler);
	((uint16_t *)mem)[13 * 2 + 1] = 0;

	cap.args[0] = 8;
	ret = ioctl(vm.fd, KVM_ENABLE_CAP, &cap);
	tap_ok(ret == -1 && errno == EINVAL, "an unknown exit reason bit -> EINVAL (%ld, errno %d)",
	       ret, errno);
	cap.args[0] = KVM_MSR_EXIT_REASON_UNKNOWN;
	ret = ioctl(vm.fd, KVM_ENABLE_CAP, &cap);
	tap_ok(ret == 0, "KVM_ENABLE_CAP(X86_USER_SPACE_MSR, UNKNOWN) (%ld, errno %d)", ret, errno);
	v = vcpu_create(&vm, 0);
	vcpu_set_real_mode(&v, CODE_GPA);

	r = run_exit(&v);
	tap_ok(r == KVM_EXIT_X86_RDMSR && v.run->msr.reason == KVM_MSR_EXIT_REASON_UNKNOWN &&
		       v.run->msr.index == UNKNOWN_MSR && v.run->msr.error == 0,
	       "RDMSR of an unknown MSR -> KVM_EXIT_X86_RDMSR, reason UNKNOWN, index %#x (%s)",
	       v.run->msr.index, exit_str(&v));
	v.run->msr.data = 0x1122334455667788ull;
	r = run_exit(&v);
	tap_ok(r == KVM_EXIT_IO && is_out(&v, P_VAL, 4) && io_out_value(&v) == 0x55667788,
	       "EAX gets the low half of userspace's data (%s)", exit_str(&v));
	r = run_exit(&v);
	tap_ok(r == KVM_EXIT_IO && is_out(&v, P_VAL, 4) && io_out_value(&v) == 0x11223344,
	       "EDX gets the high half (%s)", exit_str(&v));

	r = run_exit(&v);
	tap_ok(r == KVM_EXIT_X86_WRMSR && v.run->msr.reason == KVM_MSR_EXIT_REASON_UNKNOWN &&
		       v.run->msr.index == UNKNOWN_MSR && v.run->msr.data == 0xaabbccdd00112233ull,
	       "WRMSR -> KVM_EXIT_X86_WRMSR with data %#llx (%s)",
	       (unsigned long long)v.run->msr.data, exit_str(&v));
	r = run_exit(&v);
	tap_ok(r == KVM_EXIT_IO && is_out(&v, P_VAL, 4) && io_out_value(&v) == 0x00112233,
	       "the accepted WRMSR completes without a fault (%s)", exit_str(&v));

	r = run_exit(&v);
	tap_ok(r == KVM_EXIT_X86_WRMSR, "second WRMSR exits too (%s)", exit_str(&v));
	v.run->msr.error = 1;
	r = run_exit(&v);
	tap_ok(r == KVM_EXIT_IO && is_out(&v, P_GP, 2) && io_out_value(&v) == 13,
	       "msr.error = 1 -> #GP in the guest (%s)", exit_str(&v));
	r = run_exit(&v);
	tap_ok(r == KVM_EXIT_IO && is_out(&v, P_VAL, 4),
	       "the guest goes on after the faulting WRMSR (%s)", exit_str(&v));

	/* A known MSR refusing a value: INVAL is not enabled, so #GP and no exit. */
	r = run_exit(&v);
	tap_ok(r == KVM_EXIT_IO && is_out(&v, P_GP, 2),
	       "WRMSR of a reserved IA32_APIC_BASE bit -> #GP, no exit (%s)", exit_str(&v));
	r = run_exit(&v);
	tap_ok(r == KVM_EXIT_IO && is_out(&v, P_DONE, 4), "guest done (%s)", exit_str(&v));
	r = run_exit(&v);
	tap_ok(r == KVM_EXIT_HLT, "then HLT (%s)", exit_str(&v));

	/* A VM without the capability: the same RDMSR is a plain #GP. */
	{
		struct vm vm2 = vm_create();
		struct vcpu v2;
		uint8_t *mem2;

		if (ioctl(vm2.fd, KVM_SET_TSS_ADDR, 0xfffbd000))
			BAIL("KVM_SET_TSS_ADDR");
		mem2 = vm_add_memory(&vm2, 0, 0, 0x10000, 0);
		memcpy(mem2, mem, 0x10000);
		v2 = vcpu_create(&vm2, 0);
		vcpu_set_real_mode(&v2, CODE_GPA);
		r = run_exit(&v2);
		tap_ok(r == KVM_EXIT_IO && is_out(&v2, P_GP, 2),
		       "without the capability the RDMSR raises #GP (%s)", exit_str(&v2));
	}
	tap_done();
}

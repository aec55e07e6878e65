// SPDX-License-Identifier: GPL-2.0
/*
 * MSR_PLATFORM_INFO and KVM_CAP_MSR_PLATFORM_INFO: the reset value offers CPUID faulting,
 * userspace sets the MSR, the guest reads it while the capability is on and gets #GP
 * when it is off; the guest may turn CPUID faulting on in MSR_MISC_FEATURES_ENABLES, and
 * userspace then cannot withdraw the faulting bit.
 */
#include "lib/rkvm_test.h"

#define CODE_GPA 0x1000
#define P_VAL 0xe0
#define P_GP 0xe1
#define MSR_PLATFORM_INFO 0xce
#define MSR_MISC_FEATURES_ENABLES 0x140
#define CPUID_FAULT (1ull << 31)

GUEST_CODE(pi_guest, 16,
	"mov $" XSTR(MSR_PLATFORM_INFO) ", %ecx\n"
	"rdmsr\n"
	"out %eax, $" XSTR(P_VAL) "\n"
	"rdmsr\n"			/* after the capability is turned off: #GP */
	"out %eax, $" XSTR(P_VAL) "\n"
	"mov $" XSTR(MSR_MISC_FEATURES_ENABLES) ", %ecx\n"
	"mov $1, %eax\n"
	"xor %edx, %edx\n"
	"wrmsr\n"			/* CPUID faulting on */
	"xor %eax, %eax\n"
	"cpuid\n"			/* ring 0: no fault */
	"out %eax, $" XSTR(P_VAL) "\n"
	"hlt\n"
	"gp_handler:\n"
	"push %bp\n"
	"mov %sp, %bp\n"
	"addw $2, 2(%bp)\n"
	"mov $13, %ax\n"
	"out %ax, $" XSTR(P_GP) "\n"
	"pop %bp\n"
	"iret\n");
extern const uint8_t gp_handler[];

static uint64_t get_msr(struct vcpu *v, uint32_t idx, long *r)
{
	struct {
		struct kvm_msrs h;
		struct kvm_msr_entry e;
	} m = { .h.nmsrs = 1, .e.index = idx };

	*r = ioctl(v->fd, KVM_GET_MSRS, &m);
	return m.e.data;
}

static long set_msr(struct vcpu *v, uint32_t idx, uint64_t val)
{
	struct {
		struct kvm_msrs h;
		struct kvm_msr_entry e;
	} m = { .h.nmsrs = 1, .e.index = idx, .e.data = val };

	return ioctl(v->fd, KVM_SET_MSRS, &m);
}

int main(void)
{
	struct kvm_enable_cap cap = { .cap = KVM_CAP_MSR_PLATFORM_INFO };
	struct vm vm;
	struct vcpu v;
	uint8_t *mem;
	uint64_t val;
	long r;

	test_watchdog(60);
	vm = vm_create();
	REQUIRE_CAP(vm.sys_fd, KVM_CAP_MSR_PLATFORM_INFO);
	tap_plan(9);
	if (ioctl(vm.fd, KVM_SET_TSS_ADDR, 0xfffbd000))
		BAIL("KVM_SET_TSS_ADDR");
	mem = vm_add_memory(&vm, 0, 0, 0x10000, 0);
	guest_load(mem, CODE_GPA, pi_guest);
	((uint16_t *)mem)[13 * 2] = GUEST_ADDR(CODE_GPA, pi_guest, gp_handler);
	((uint16_t *)mem)[13 * 2 + 1] = 0;
	v = vcpu_create(&vm, 0);
	vcpu_set_supported_cpuid(&vm, &v);
	vcpu_set_real_mode(&v, CODE_GPA);

	val = get_msr(&v, MSR_PLATFORM_INFO, &r);
	tap_ok(r == 1 && (val & CPUID_FAULT), "reset MSR_PLATFORM_INFO offers CPUID faulting (%#llx)",
	       (unsigned long long)val);
	r = set_msr(&v, MSR_PLATFORM_INFO, val | 0xff00);
	tap_ok(r == 1, "userspace sets it to %#llx (%ld)", (unsigned long long)(val | 0xff00), r);

	tap_ok(vcpu_run(&v) == KVM_EXIT_IO && is_out(&v, P_VAL, 4) &&
		       io_out_value(&v) == (uint32_t)(val | 0xff00),
	       "the guest reads what userspace set (%s)", exit_str(&v));
	cap.args[0] = 0;
	if (ioctl(vm.fd, KVM_ENABLE_CAP, &cap))
		BAIL("KVM_ENABLE_CAP(MSR_PLATFORM_INFO, 0)");
	tap_ok(vcpu_run(&v) == KVM_EXIT_IO && is_out(&v, P_GP, 2),
	       "with the capability off RDMSR raises #GP (%s)", exit_str(&v));
	tap_ok(vcpu_run(&v) == KVM_EXIT_IO && is_out(&v, P_VAL, 4), "the guest goes on (%s)",
	       exit_str(&v));
	tap_ok(vcpu_run(&v) == KVM_EXIT_IO && is_out(&v, P_VAL, 4) && io_out_value(&v) > 0,
	       "CPUID faulting on, CPUID in ring 0 still works (%s)", exit_str(&v));
	val = get_msr(&v, MSR_MISC_FEATURES_ENABLES, &r);
	tap_ok(r == 1 && val == 1, "MSR_MISC_FEATURES_ENABLES reads 1 (%#llx)",
	       (unsigned long long)val);
	r = set_msr(&v, MSR_PLATFORM_INFO, 0xff00);
	tap_ok(r == 0, "clearing the faulting bit while it is in use is refused (%ld)", r);
	tap_ok(vcpu_run(&v) == KVM_EXIT_HLT, "guest halts (%s)", exit_str(&v));
	tap_done();
}

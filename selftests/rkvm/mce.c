// SPDX-License-Identifier: GPL-2.0
/*
 * Machine checks: KVM_CAP_MCE, KVM_X86_GET_MCE_CAP_SUPPORTED, KVM_X86_SETUP_MCE,
 * KVM_X86_SET_MCE and the MCG_* / MCi_* MSRs, with good and bad input.
 *
 * A real-mode guest enables CR4.MCE, reads MCG_CAP, gets #GP for a non-zero write to
 * MC0_STATUS and halts. Userspace then reports an uncorrected error in bank 1: the guest
 * takes #MC, its handler reads MC1_STATUS and MCG_STATUS, clears both and returns.
 * Corrected errors only fill their bank (a second one sets OVER), an uncorrected error in
 * a bank whose MCi_CTL is 0 is dropped, and one while MCG_STATUS.MCIP is set shuts the
 * vCPU down at the next KVM_RUN.
 */
#include "lib/rkvm_test.h"

#define CODE_GPA 0x1000
#define P_VAL 0xe0
#define P_GP 0xe1
#define P_HI 0xe2
#define P_MCG 0xe3

#define MSR_MCG_CAP 0x179
#define MSR_MCG_STATUS 0x17a
#define MSR_MCG_CTL 0x17b
#define MSR_MC_CTL(b) (0x400 + 4 * (b))
#define MSR_MC_STATUS(b) (0x401 + 4 * (b))
#define MSR_MC_ADDR(b) (0x402 + 4 * (b))
#define MSR_MC_MISC(b) (0x403 + 4 * (b))
#define MSR_MC0_CTL2 0x280

#define MCG_CTL_P (1ull << 8)
#define MCG_SER_P (1ull << 24)
#define MCG_STATUS_RIPV (1ull << 0)
#define MCG_STATUS_MCIP (1ull << 2)
#define MCI_VAL (1ull << 63)
#define MCI_OVER (1ull << 62)
#define MCI_UC (1ull << 61)
#define MCI_EN (1ull << 60)
#define MCI_S (1ull << 56)
#define BANKS 10

GUEST_CODE(mce_guest, 16,
	"mov %cr4, %eax\n"
	"or $0x40, %eax\n"		/* CR4.MCE */
	"mov %eax, %cr4\n"
	"mov $" XSTR(MSR_MCG_CAP) ", %ecx\n"
	"rdmsr\n"
	"out %eax, $" XSTR(P_VAL) "\n"
	"mov $0x401, %ecx\n"		/* MC0_STATUS := 1: #GP on an Intel-like guest */
	"mov $1, %eax\n"
	"xor %edx, %edx\n"
	"wrmsr\n"
	"hlt\n"				/* userspace reports an error: #MC */
	"hlt\n"
	"mc_handler:\n"
	"mov $0x405, %ecx\n"		/* MC1_STATUS */
	"rdmsr\n"
	"mov %edx, %eax\n"
	"out %eax, $" XSTR(P_HI) "\n"
	"mov $" XSTR(MSR_MCG_STATUS) ", %ecx\n"
	"rdmsr\n"
	"out %eax, $" XSTR(P_MCG) "\n"
	"xor %eax, %eax\n"
	"xor %edx, %edx\n"
	"wrmsr\n"			/* MCG_STATUS := 0 */
	"mov $0x405, %ecx\n"
	"wrmsr\n"			/* MC1_STATUS := 0 (clearing is always allowed) */
	"iret\n"
	"gp_handler:\n"
	"push %bp\n"
	"mov %sp, %bp\n"
	"addw $2, 2(%bp)\n"		/* past the 2-byte WRMSR */
	"mov $13, %ax\n"
	"out %ax, $" XSTR(P_GP) "\n"
	"pop %bp\n"
	"iret\n");
extern const uint8_t mc_handler[], gp_handler[];

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

static long set_mce(struct vcpu *v, uint8_t bank, uint64_t status, uint64_t mcg_status)
{
	struct kvm_x86_mce m = {
		.status = status, .addr = 0xabc000, .misc = 0x86, .mcg_status = mcg_status,
		.bank = bank,
	};

	return ioctl(v->fd, KVM_X86_SET_MCE, &m);
}

static int setup_einval(struct vcpu *v, uint64_t cap)
{
	return ioctl(v->fd, KVM_X86_SETUP_MCE, &cap) == -1 && errno == EINVAL;
}

int main(void)
{
	struct vm vm;
	struct vcpu v;
	uint8_t *mem;
	uint64_t supported = 0, cap, val, uc;
	long r, n;
	int ok;

	test_watchdog(60);
	vm = vm_create();
	REQUIRE_CAP(vm.sys_fd, KVM_CAP_MCE);
	tap_plan(24);
	n = ioctl(vm.sys_fd, KVM_CHECK_EXTENSION, KVM_CAP_MCE);
	tap_ok(n == 32, "KVM_CAP_MCE: %ld banks", n);
	r = ioctl(vm.sys_fd, KVM_X86_GET_MCE_CAP_SUPPORTED, &supported);
	tap_ok(r == 0 && (supported & (MCG_CTL_P | MCG_SER_P)) == (MCG_CTL_P | MCG_SER_P),
	       "KVM_X86_GET_MCE_CAP_SUPPORTED: MCG_CTL_P and MCG_SER_P (%#llx)",
	       (unsigned long long)supported);

	if (ioctl(vm.fd, KVM_SET_TSS_ADDR, 0xfffbd000))
		BAIL("KVM_SET_TSS_ADDR");
	mem = vm_add_memory(&vm, 0, 0, 0x10000, 0);
	guest_load(mem, CODE_GPA, mce_guest);
	((uint16_t *)mem)[18 * 2] = GUEST_ADDR(CODE_GPA, mce_guest, mc_handler);
	((uint16_t *)mem)[18 * 2 + 1] = 0;
	((uint16_t *)mem)[13 * 2] = GUEST_ADDR(CODE_GPA, mce_guest, gp_handler);
	((uint16_t *)mem)[13 * 2 + 1] = 0;
	v = vcpu_create(&vm, 0);
	vcpu_set_supported_cpuid(&vm, &v);
	vcpu_set_real_mode(&v, CODE_GPA);

	val = get_msr(&v, MSR_MCG_CAP, &r);
	tap_ok(r == 1 && val == 32, "a new vCPU's MCG_CAP: 32 banks, nothing else (%#llx)",
	       (unsigned long long)val);
	tap_ok(setup_einval(&v, MCG_CTL_P) && setup_einval(&v, 33 | MCG_CTL_P) &&
		       setup_einval(&v, BANKS | (1ull << 9)),
	       "KVM_X86_SETUP_MCE: no banks, 33 banks, an unsupported bit (MCG_EXT_P) -> EINVAL");
	cap = BANKS | MCG_CTL_P | MCG_SER_P;
	r = ioctl(v.fd, KVM_X86_SETUP_MCE, &cap);
	tap_ok(r == 0, "KVM_X86_SETUP_MCE(%d banks, MCG_CTL_P, MCG_SER_P) (%ld)", BANKS, r);
	/* On AMD, KVM keeps only bits 8:0 (the rest is reserved there). */
	if (!host_is_intel())
		cap &= 0x1ff;
	val = get_msr(&v, MSR_MCG_CAP, &r);
	tap_ok(r == 1 && val == cap, "MCG_CAP reads %#llx (%#llx)", (unsigned long long)cap,
	       (unsigned long long)val);
	ok = get_msr(&v, MSR_MCG_CTL, &r) == ~0ull && r == 1;
	for (int b = 0; b < BANKS; b++)
		ok &= get_msr(&v, MSR_MC_CTL(b), &r) == ~0ull && r == 1;
	tap_ok(ok, "MCG_CTL and every MCi_CTL start all ones");
	get_msr(&v, MSR_MC_CTL(BANKS), &r);
	tap_ok(r == 0, "MC%d_CTL, past the banks, does not exist (%ld)", BANKS, r);
	tap_ok(set_msr(&v, MSR_MC_CTL(0), 0x1234) == 0 && set_msr(&v, MSR_MCG_CTL, 5) == 0,
	       "MC0_CTL := 0x1234 and MCG_CTL := 5 are refused (only 0 or all ones)");
	tap_ok(set_msr(&v, MSR_MC_CTL(0), ~(1ull << 10)) == 1,
	       "MC0_CTL := all ones but bit 10 is taken (KVM's K8 GART allowance)");
	set_msr(&v, MSR_MC_CTL(0), ~0ull);
	tap_ok(set_msr(&v, MSR_MC0_CTL2, 1) == 0 && set_msr(&v, MSR_MC0_CTL2, 0) == 1,
	       "without CMCI, MC0_CTL2 takes only 0 from userspace");

	tap_ok(vcpu_run(&v) == KVM_EXIT_IO && is_out(&v, P_VAL, 4) &&
		       io_out_value(&v) == (uint32_t)cap,
	       "the guest reads MCG_CAP %#x (%s)", (uint32_t)cap, exit_str(&v));
	tap_ok(vcpu_run(&v) == KVM_EXIT_IO && is_out(&v, P_GP, 2),
	       "the guest's non-zero write to MC0_STATUS raises #GP (%s)", exit_str(&v));
	tap_ok(vcpu_run(&v) == KVM_EXIT_HLT, "the guest halts (%s)", exit_str(&v));

	tap_ok(set_mce(&v, BANKS, MCI_VAL, 0) == -1 && errno == EINVAL &&
		       set_mce(&v, 1, MCI_UC, 0) == -1 && errno == EINVAL,
	       "KVM_X86_SET_MCE: a bank past the count, a status without VAL -> EINVAL");
	uc = MCI_VAL | MCI_UC | MCI_EN | MCI_S | 0x1234;
	r = set_mce(&v, 1, uc, MCG_STATUS_MCIP | MCG_STATUS_RIPV);
	tap_ok(r == 0, "KVM_X86_SET_MCE: an uncorrected error in bank 1 (%ld)", r);
	tap_ok(vcpu_run(&v) == KVM_EXIT_IO && is_out(&v, P_HI, 4) &&
		       io_out_value(&v) == (uint32_t)(uc >> 32),
	       "the guest takes #MC and reads MC1_STATUS %#x:... (%s)", (uint32_t)(uc >> 32),
	       exit_str(&v));
	tap_ok(vcpu_run(&v) == KVM_EXIT_IO && is_out(&v, P_MCG, 4) &&
		       io_out_value(&v) == (MCG_STATUS_MCIP | MCG_STATUS_RIPV),
	       "... and MCG_STATUS MCIP|RIPV (%s)", exit_str(&v));
	tap_ok(vcpu_run(&v) == KVM_EXIT_HLT, "its handler returns, the guest halts (%s)",
	       exit_str(&v));
	ok = get_msr(&v, MSR_MC_STATUS(1), &r) == 0 && get_msr(&v, MSR_MC_ADDR(1), &r) == 0xabc000 &&
	     get_msr(&v, MSR_MC_MISC(1), &r) == 0x86 && get_msr(&v, MSR_MCG_STATUS, &r) == 0;
	tap_ok(ok, "MC1_STATUS and MCG_STATUS cleared by the guest, MC1_ADDR/MISC as reported");

	r = set_mce(&v, 3, MCI_VAL | 0x11, 0);
	val = get_msr(&v, MSR_MC_STATUS(3), &n);
	tap_ok(r == 0 && val == (MCI_VAL | 0x11), "a corrected error only fills bank 3 (%#llx)",
	       (unsigned long long)val);
	r = set_mce(&v, 3, MCI_VAL | 0x22, 0);
	val = get_msr(&v, MSR_MC_STATUS(3), &n);
	tap_ok(r == 0 && val == (MCI_VAL | MCI_OVER | 0x22),
	       "a second one replaces it and sets OVER (%#llx)", (unsigned long long)val);
	set_msr(&v, MSR_MC_CTL(2), 0);
	r = set_mce(&v, 2, uc, MCG_STATUS_MCIP | MCG_STATUS_RIPV);
	val = get_msr(&v, MSR_MC_STATUS(2), &n);
	tap_ok(r == 0 && val == 0, "with MC2_CTL 0 an uncorrected error there is dropped (%#llx)",
	       (unsigned long long)val);
	set_msr(&v, MSR_MCG_STATUS, MCG_STATUS_MCIP);
	r = set_mce(&v, 4, uc, MCG_STATUS_MCIP | MCG_STATUS_RIPV);
	tap_ok(r == 0 && vcpu_run(&v) == KVM_EXIT_SHUTDOWN,
	       "an uncorrected error while MCIP is set: shutdown at the next KVM_RUN (%s)",
	       exit_str(&v));
	tap_done();
}

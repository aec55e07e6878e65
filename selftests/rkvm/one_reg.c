// SPDX-License-Identifier: GPL-2.0
/*
 * KVM_GET_ONE_REG, KVM_SET_ONE_REG and KVM_GET_REG_LIST on x86 (arch/x86/kvm/msrs.c
 * kvm_get_set_one_reg, kvm_get_reg_list; Documentation/virt/kvm/api.rst 4.68): a register
 * id names an MSR (KVM_X86_REG_MSR) or a KVM register (KVM_X86_REG_KVM: the shadow-stack
 * pointer, with CET only).
 *
 * Checks: KVM_CAP_ONE_REG is 1; an MSR written with SET_ONE_REG reads back through
 * GET_ONE_REG and KVM_GET_MSRS, and one written with KVM_SET_MSRS through GET_ONE_REG;
 * EINVAL for an MSR the vCPU does not have, a value the MSR refuses, another arch, a
 * reserved bit, an unknown type, a 32-bit size, and (without shadow stacks in the
 * supported CPUID) KVM_REG_GUEST_SSP; EFAULT for an unmapped value address both ways;
 * KVM_GET_REG_LIST gives n 0 without shadow stacks (1 and the SSP id with them).
 */
#include "lib/rkvm_test.h"

#define MSR_STAR 0xc0000081
#define MSR_IA32_CR_PAT 0x277

#ifndef KVM_X86_REG_MSR
#error "needs the 7.3 uapi headers"
#endif

static long one_reg(struct vcpu *v, unsigned long cmd, uint64_t id, void *addr)
{
	struct kvm_one_reg r = { .id = id, .addr = (uint64_t)(uintptr_t)addr };

	return ioctl(v->fd, cmd, &r);
}

static int has_shstk(int sys_fd)
{
	struct kvm_cpuid2 *c = supported_cpuid(sys_fd);
	uint32_t i;

	for (i = 0; i < c->nent; i++)
		if (c->entries[i].function == 7 && c->entries[i].index == 0)
			return !!(c->entries[i].ecx & (1u << 7));
	return 0;
}

static void bad_id(struct vcpu *v, uint64_t id, const char *what)
{
	uint64_t val = 0;
	long r;

	r = one_reg(v, KVM_GET_ONE_REG, id, &val);
	tap_ok(r == -1 && errno == EINVAL, "KVM_GET_ONE_REG with %s -> EINVAL (%ld, errno %d)",
	       what, r, errno);
}

int main(void)
{
	struct guest g = guest_create();
	uint64_t val = 0, star = KVM_X86_REG_MSR(MSR_STAR);
	struct {
		struct kvm_reg_list l;
		uint64_t regs[4];
	} list = { .l.n = 4 };
	int shstk = has_shstk(g.vm.sys_fd);
	long r;

	test_watchdog(60);
	tap_plan(17);
	r = ioctl(g.vm.sys_fd, KVM_CHECK_EXTENSION, KVM_CAP_ONE_REG);
	tap_ok(r == 1, "KVM_CAP_ONE_REG is 1 (%ld)", r);

	val = 0xfeed00001234;
	r = one_reg(&g.v, KVM_SET_ONE_REG, star, &val);
	tap_ok(r == 0, "KVM_SET_ONE_REG(MSR_STAR) (%ld, errno %d)", r, errno);
	val = 0;
	r = one_reg(&g.v, KVM_GET_ONE_REG, star, &val);
	tap_ok(r == 0 && val == 0xfeed00001234, "KVM_GET_ONE_REG(MSR_STAR) reads it back (%#llx)",
	       (unsigned long long)val);
	tap_ok(vcpu_get_msr1(&g.v, MSR_STAR) == 0xfeed00001234, "KVM_GET_MSRS agrees");
	if (vcpu_set_msr1(&g.v, MSR_STAR, 0x4321) != 1)
		BAIL("KVM_SET_MSRS(MSR_STAR)");
	r = one_reg(&g.v, KVM_GET_ONE_REG, star, &val);
	tap_ok(r == 0 && val == 0x4321, "a KVM_SET_MSRS value reads through KVM_GET_ONE_REG (%#llx)",
	       (unsigned long long)val);

	bad_id(&g.v, KVM_X86_REG_MSR(0x1234567), "an MSR the vCPU does not have");
	val = ~0ull;
	r = one_reg(&g.v, KVM_SET_ONE_REG, KVM_X86_REG_MSR(MSR_IA32_CR_PAT), &val);
	tap_ok(r == -1 && errno == EINVAL, "KVM_SET_ONE_REG of an invalid PAT -> EINVAL (%ld, %d)",
	       r, errno);
	bad_id(&g.v, (star & ~KVM_REG_ARCH_MASK) | KVM_REG_ARM64, "another arch");
	bad_id(&g.v, star | 1ull << 40, "a reserved bit (40)");
	bad_id(&g.v, star | 1ull << 48, "a reserved bit (48)");
	bad_id(&g.v, (star & ~(0xffull << 32)) | 1ull << 32, "type 1");
	bad_id(&g.v, (star & ~KVM_REG_SIZE_MASK) | KVM_REG_SIZE_U32, "a 32-bit MSR");
	if (!shstk)
		bad_id(&g.v, KVM_X86_REG_KVM(KVM_REG_GUEST_SSP), "KVM_REG_GUEST_SSP without CET");
	else
		tap_ok(1, "# SKIP the CPU offers shadow stacks");

	r = one_reg(&g.v, KVM_GET_ONE_REG, star, NULL);
	tap_ok(r == -1 && errno == EFAULT, "KVM_GET_ONE_REG to address 0 -> EFAULT (%ld, %d)", r,
	       errno);
	r = one_reg(&g.v, KVM_SET_ONE_REG, star, NULL);
	tap_ok(r == -1 && errno == EFAULT, "KVM_SET_ONE_REG from address 0 -> EFAULT (%ld, %d)", r,
	       errno);
	r = ioctl(g.v.fd, KVM_GET_REG_LIST, NULL);
	tap_ok(r == -1 && errno == EFAULT, "KVM_GET_REG_LIST at address 0 -> EFAULT (%ld, %d)", r,
	       errno);
	r = ioctl(g.v.fd, KVM_GET_REG_LIST, &list);
	tap_ok(r == 0 && list.l.n == (uint64_t)shstk,
	       "KVM_GET_REG_LIST: n %llu (want %d: the SSP with shadow stacks only)",
	       (unsigned long long)list.l.n, shstk);
	guest_destroy(&g);
	tap_done();
}

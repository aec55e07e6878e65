// SPDX-License-Identifier: GPL-2.0
/*
 * KVM hypercalls from a 64-bit guest, and KVM_X86_QUIRK_FIX_HYPERCALL_INSN.
 *  - The native hypercall instruction (VMCALL on Intel, VMMCALL on AMD): an unknown
 *    number returns -KVM_ENOSYS in RAX, KVM_HC_VAPIC_POLL_IRQ and KVM_HC_SCHED_YIELD
 *    return 0.
 *  - The other vendor's instruction (a guest that booted on the other vendor's CPU):
 *    with the quirk on (the default) the hypervisor rewrites it in guest memory to the
 *    native one, which then runs (SCHED_YIELD returns 0, no #UD reaches the guest); with
 *    KVM_CAP_DISABLE_QUIRKS2 turning the quirk off, the guest gets #UD and its code is
 *    left alone.
 *  - KVM_CAP_ENFORCE_PV_FEATURE_CPUID (a vCPU capability; unknown vCPU capabilities and
 *    flags -> EINVAL): with it, SCHED_YIELD needs KVM_FEATURE_PV_SCHED_YIELD in the
 *    guest's KVM_CPUID_FEATURES leaf (else -KVM_ENOSYS); VAPIC_POLL_IRQ needs nothing.
 */
#include "lib/rkvm_test.h"

#define QUIRK_FIX_HYPERCALL_INSN (1ull << 5)
#define P_VAL 0x90
#define P_UD 0x98
#define KVM_ENOSYS 1000

GUEST_CODE(hc_guest, 64,
	"mov $11, %eax\n"		/* KVM_HC_SCHED_YIELD */
	"xor %ebx, %ebx\n"
	"hc_site1: .byte 0xcc, 0xcc, 0xcc\n"
	"out %eax, $" XSTR(P_VAL) "\n"
	"mov $0x1234, %eax\n"		/* no such hypercall */
	"hc_site2: .byte 0xcc, 0xcc, 0xcc\n"
	"out %eax, $" XSTR(P_VAL) "\n"
	"mov $1, %eax\n"		/* KVM_HC_VAPIC_POLL_IRQ */
	"hc_site3: .byte 0xcc, 0xcc, 0xcc\n"
	"out %eax, $" XSTR(P_VAL) "\n"
	"hlt\n"
	"hc_ud:\n"
	"mov $6, %al\n"
	"out %al, $" XSTR(P_UD) "\n"
	"mov $0xdead, %eax\n"
	"addq $3, (%rsp)\n"
	"iretq\n");
extern const uint8_t hc_site1[], hc_site2[], hc_site3[], hc_ud[];

static const uint8_t vmcall[3] = { 0x0f, 0x01, 0xc1 };
static const uint8_t vmmcall[3] = { 0x0f, 0x01, 0xd9 };

#define SITE(label) (GUEST_ADDR(GUEST_CODE_GPA, hc_guest, label))

#define KVM_CPUID_FEATURES 0x40000001
#define KVM_FEATURE_PV_SCHED_YIELD (1u << 13)

/* Enforces the PV CPUID with the given KVM_CPUID_FEATURES EAX; 0 or -1/errno. */
static int enforce_pv(struct guest *g, uint32_t features)
{
	struct kvm_enable_cap c = { .cap = KVM_CAP_ENFORCE_PV_FEATURE_CPUID, .args = { 1 } };
	struct kvm_cpuid2 *cpuid = supported_cpuid(g->vm.sys_fd);
	uint32_t i;

	for (i = 0; i < cpuid->nent; i++)
		if (cpuid->entries[i].function == KVM_CPUID_FEATURES)
			cpuid->entries[i].eax = features;
	if (ioctl(g->v.fd, KVM_SET_CPUID2, cpuid))
		BAIL("KVM_SET_CPUID2");
	free(cpuid);
	return ioctl(g->v.fd, KVM_ENABLE_CAP, &c);
}

/* disable_quirk: 1 to turn FIX_HYPERCALL_INSN off; -1 for the native instruction at
 * the first site too. */
static struct guest hc_create(int disable_quirk)
{
	const uint8_t *native = host_is_intel() ? vmcall : vmmcall;
	const uint8_t *foreign = disable_quirk < 0 ? native : host_is_intel() ? vmmcall : vmcall;
	struct guest g = guest_create();

	if (disable_quirk > 0) {
		struct kvm_enable_cap c = { .cap = KVM_CAP_DISABLE_QUIRKS2,
					    .args = { QUIRK_FIX_HYPERCALL_INSN } };

		if (ioctl(g.vm.fd, KVM_ENABLE_CAP, &c))
			BAIL("KVM_CAP_DISABLE_QUIRKS2");
	}
	guest_load(g.mem, GUEST_CODE_GPA, hc_guest);
	memcpy(g.mem + SITE(hc_site1), foreign, 3);
	memcpy(g.mem + SITE(hc_site2), native, 3);
	memcpy(g.mem + SITE(hc_site3), native, 3);
	vcpu_set_long_mode(&g.v, g.mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
	idt_set_gate64(g.mem, 6, SITE(hc_ud));
	return g;
}

/* The next exit: 1 for an OUT to P_VAL (its value in *val), 2 for the #UD marker. */
static int next(struct vcpu *v, uint32_t *val)
{
	vcpu_run(v);
	if (is_out(v, P_VAL, 4)) {
		*val = io_out_value(v);
		return 1;
	}
	if (is_out(v, P_UD, 1) && *io_data(v) == 6)
		return 2;
	return 0;
}

int main(void)
{
	const uint8_t *native = host_is_intel() ? vmcall : vmmcall;
	const uint8_t *foreign = host_is_intel() ? vmmcall : vmcall;
	struct guest g;
	uint32_t val = 0;
	long quirks;
	int k;

	test_watchdog(60);
	g = hc_create(0);
	quirks = ioctl(g.vm.sys_fd, KVM_CHECK_EXTENSION, KVM_CAP_DISABLE_QUIRKS2);
	if (quirks <= 0 || !(quirks & QUIRK_FIX_HYPERCALL_INSN))
		tap_skip_all("KVM_X86_QUIRK_FIX_HYPERCALL_INSN cannot be turned off");
	tap_plan(8 + 6);

	k = next(&g.v, &val);
	tap_ok(k == 1 && val == 0, "quirk on: the other vendor's %s runs as the native "
	       "hypercall, SCHED_YIELD returns 0 (exit kind %d, RAX %#x)",
	       host_is_intel() ? "VMMCALL" : "VMCALL", k, val);
	tap_ok(!memcmp(g.mem + SITE(hc_site1), native, 3),
	       "and it was rewritten to %s in guest memory (%02x %02x %02x)",
	       host_is_intel() ? "VMCALL" : "VMMCALL", g.mem[SITE(hc_site1)],
	       g.mem[SITE(hc_site1) + 1], g.mem[SITE(hc_site1) + 2]);
	k = next(&g.v, &val);
	tap_ok(k == 1 && val == (uint32_t)-KVM_ENOSYS, "hypercall 0x1234 returns -KVM_ENOSYS "
	       "(RAX %#x)", val);
	k = next(&g.v, &val);
	tap_ok(k == 1 && val == 0, "KVM_HC_VAPIC_POLL_IRQ returns 0 (RAX %#x)", val);
	vcpu_run(&g.v);
	tap_ok(g.v.run->exit_reason == KVM_EXIT_HLT, "the guest halts (%s)", exit_str(&g.v));
	guest_destroy(&g);

	g = hc_create(1);
	k = next(&g.v, &val);
	tap_ok(k == 2, "quirk off: the other vendor's instruction raises #UD in the guest "
	       "(exit kind %d, %s)", k, exit_str(&g.v));
	k = next(&g.v, &val);
	tap_ok(k == 1 && val == 0xdead, "the #UD handler skipped it (RAX %#x)", val);
	tap_ok(!memcmp(g.mem + SITE(hc_site1), foreign, 3),
	       "and the guest's code is unchanged (%02x %02x %02x)", g.mem[SITE(hc_site1)],
	       g.mem[SITE(hc_site1) + 1], g.mem[SITE(hc_site1) + 2]);
	guest_destroy(&g);

	g = hc_create(-1);
	{
		struct kvm_enable_cap c = { .cap = KVM_CAP_ENFORCE_PV_FEATURE_CPUID, .flags = 1 };
		struct ioctl_res r = do_ioctl(g.v.fd, KVM_ENABLE_CAP, (unsigned long)&c);

		tap_ok(r.r == -1 && r.err == EINVAL, "vCPU KVM_ENABLE_CAP with flags -> -1/EINVAL "
		       "(got %s)", res_str(r));
		c = (struct kvm_enable_cap){ .cap = KVM_CAP_X86_USER_SPACE_MSR };
		r = do_ioctl(g.v.fd, KVM_ENABLE_CAP, (unsigned long)&c);
		tap_ok(r.r == -1 && r.err == EINVAL, "vCPU KVM_ENABLE_CAP of a VM capability -> "
		       "-1/EINVAL (got %s)", res_str(r));
	}
	tap_ok(enforce_pv(&g, 0) == 0, "KVM_CAP_ENFORCE_PV_FEATURE_CPUID with no PV features");
	k = next(&g.v, &val);
	tap_ok(k == 1 && val == (uint32_t)-KVM_ENOSYS, "then SCHED_YIELD returns -KVM_ENOSYS "
	       "(RAX %#x)", val);
	next(&g.v, &val);
	k = next(&g.v, &val);
	tap_ok(k == 1 && val == 0, "and VAPIC_POLL_IRQ still 0 (RAX %#x)", val);
	guest_destroy(&g);

	g = hc_create(-1);
	if (enforce_pv(&g, KVM_FEATURE_PV_SCHED_YIELD))
		BAIL("KVM_CAP_ENFORCE_PV_FEATURE_CPUID");
	k = next(&g.v, &val);
	tap_ok(k == 1 && val == 0, "enforced with KVM_FEATURE_PV_SCHED_YIELD: SCHED_YIELD "
	       "returns 0 (RAX %#x)", val);
	guest_destroy(&g);
	tap_done();
}

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

static struct guest hc_create(int disable_quirk)
{
	const uint8_t *native = host_is_intel() ? vmcall : vmmcall;
	const uint8_t *foreign = host_is_intel() ? vmmcall : vmcall;
	struct guest g = guest_create();

	if (disable_quirk) {
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
	tap_plan(8);

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
	tap_done();
}

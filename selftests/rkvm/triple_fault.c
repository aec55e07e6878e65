// SPDX-License-Identifier: GPL-2.0
/*
 * A triple fault ends KVM_RUN with KVM_EXIT_SHUTDOWN.
 *
 * In each of real mode, 32-bit protected mode and 64-bit mode (a fresh VM each), the guest
 * OUTs a marker, loads an empty IDT (lidt, limit 0) and raises an exception (int3, ud2):
 * the exception's vector is past the IDT limit (#GP), so is #GP's (#DF), so is #DF's:
 * shutdown. The marker proves the guest ran up to there; the state after the shutdown is
 * not checked (KVM on AMD resets the vCPU at a shutdown, KVM on Intel does not).
 */
#include "lib/rkvm_test.h"

#define PORT 0x40

GUEST_CODE(tf_real, 16,
	"mov $0x16, %al\n"
	"out %al, $" XSTR(PORT) "\n"
	"lidtl %cs:(tf_real_idtr - tf_real)\n"
	"int3\n"
	"hlt\n"
	"tf_real_idtr: .word 0\n"
	".long 0\n");

GUEST_CODE(tf_prot, 32,
	"mov $0x32, %al\n"
	"out %al, $" XSTR(PORT) "\n"
	"lidtl (tf_prot_idtr - tf_prot + " XSTR(GUEST_CODE_GPA) ")\n"
	"int3\n"
	"hlt\n"
	"tf_prot_idtr: .word 0\n"
	".long 0\n");

GUEST_CODE(tf_long, 64,
	"mov $0x64, %al\n"
	"out %al, $" XSTR(PORT) "\n"
	"lidtq tf_long_idtr(%rip)\n"
	"ud2\n"
	"hlt\n"
	"tf_long_idtr: .word 0\n"
	".quad 0\n");

enum mode { REAL, PROT, LONG };

static void triple_fault(enum mode m, const char *name, const uint8_t *code, size_t len,
			 uint8_t marker)
{
	struct guest g = guest_create();

	memcpy(g.mem + GUEST_CODE_GPA, code, len);
	if (m == REAL) {
		struct kvm_sregs s;

		vcpu_get_sregs(&g.v, &s);
		s.cs.base = GUEST_CODE_GPA;
		s.cs.selector = GUEST_CODE_GPA >> 4;
		vcpu_set_sregs(&g.v, &s);
		vcpu_set_rip(&g.v, 0);
	} else if (m == PROT) {
		vcpu_set_protected_mode(&g.v, g.mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
	} else {
		vcpu_set_long_mode(&g.v, g.mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
	}
	vcpu_run(&g.v);
	tap_ok(is_out(&g.v, PORT, 1) && *io_data(&g.v) == marker,
	       "%s: the guest OUTs its marker %#x first (got %s)", name, marker, exit_str(&g.v));
	vcpu_run(&g.v);
	tap_ok(g.v.run->exit_reason == KVM_EXIT_SHUTDOWN,
	       "%s: an exception with an empty IDT -> KVM_EXIT_SHUTDOWN (got %s)", name,
	       exit_str(&g.v));
	guest_destroy(&g);
}

int main(void)
{
	test_watchdog(60);
	tap_plan(6);
	triple_fault(REAL, "real mode, int3", tf_real, tf_real_end - tf_real, 0x16);
	triple_fault(PROT, "protected mode, int3", tf_prot, tf_prot_end - tf_prot, 0x32);
	triple_fault(LONG, "64-bit mode, ud2", tf_long, tf_long_end - tf_long, 0x64);
	tap_done();
}

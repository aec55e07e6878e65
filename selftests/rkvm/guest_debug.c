// SPDX-License-Identifier: GPL-2.0
/*
 * KVM_SET_GUEST_DEBUG (arch/x86/kvm/x86.c kvm_arch_vcpu_ioctl_set_guest_debug, the #DB
 * and #BP exits of vmx.c / svm.c).
 *
 * Single-step (ENABLE|SINGLESTEP), protected mode: every KVM_RUN executes one instruction
 * and returns KVM_EXIT_DEBUG with debug.arch.exception 1, DR6.BS set, and pc = RIP of the
 * next instruction, through a loop and a jump: the exact RIP sequence. The TF that KVM
 * uses is not visible in KVM_GET_REGS. Without the flag the guest runs to its HLT.
 *
 * Software breakpoints (ENABLE|USE_SW_BP): int3 gives KVM_EXIT_DEBUG with exception 3 and
 * pc at the int3; userspace steps over it by advancing RIP (not checked on AMD: KVM
 * intercepts #BP there too, but QEMU's SVM does not apply the intercept to INT3). Without
 * the flag, int3 is delivered to the guest's #BP handler, which sees the address after
 * the int3.
 *
 * Injection (ENABLE|INJECT_DB, ENABLE|INJECT_BP): the guest's #DB handler runs at the next
 * KVM_RUN and sees the interrupted EIP; a second injection while one is pending -> EBUSY.
 * A debugger's round trip: with USE_SW_BP the guest's int3 exits (KVM_EXIT_DEBUG, pc at
 * the int3); handing it back with INJECT_BP runs the guest's #BP handler, which sees the
 * EIP after the int3, as if the debugger had not been there (Intel only, see above).
 */
#include "lib/rkvm_test.h"

#define DR6_BS (1u << 14)
#define X86_EFLAGS_TF 0x100

GUEST_CODE(ss_guest, 32,
	"ss0: mov $3, %ecx\n"
	"ss1: xor %eax, %eax\n"
	"ss2: add %ecx, %eax\n"
	"ss3: loop ss2\n"
	"ss4: jmp ss6\n"
	"ss5: ud2\n"
	"ss6: lea 1(%eax,%eax,2), %edx\n"
	"ss7: nop\n"
	"ss8: hlt\n");
extern const uint8_t ss0[], ss1[], ss2[], ss3[], ss4[], ss6[], ss7[], ss8[];

GUEST_CODE(bp_guest, 32,
	"mov $0x11, %al\n"
	"out %al, $0xc0\n"
	"bp_int3: int3\n"
	"mov $0x22, %al\n"
	"out %al, $0xc0\n"
	"bp_int3b: int3\n"
	"bp_after2: hlt\n"
	"bp_handler:\n"
	"push %eax\n"
	"mov $3, %eax\n"
	"out %eax, $0xc1\n"
	"mov 4(%esp), %eax\n"
	"out %eax, $0xc2\n"
	"pop %eax\n"
	"iret\n");
extern const uint8_t bp_int3[], bp_int3b[], bp_after2[], bp_handler[];

static void single_step(void)
{
	const uint8_t *seq[] = { ss1, ss2, ss3, ss2, ss3, ss2, ss3, ss4, ss6, ss7, ss8 };
	struct kvm_guest_debug dbg = { .control = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP };
	struct kvm_guest_debug off = { .control = 0 };
	struct guest g = guest_create();
	struct kvm_regs r;
	int i, tf = 0;

	guest_load(g.mem, GUEST_CODE_GPA, ss_guest);
	vcpu_set_protected_mode(&g.v, g.mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
	CHECK_RET(g.v.fd, KVM_SET_GUEST_DEBUG, &dbg, 0, "KVM_SET_GUEST_DEBUG(ENABLE|SINGLESTEP)");
	for (i = 0; i < (int)(sizeof(seq) / sizeof(seq[0])); i++) {
		uint64_t want = GUEST_ADDR(GUEST_CODE_GPA, ss_guest, seq[i]);
		struct kvm_run *run = g.v.run;

		vcpu_run(&g.v);
		vcpu_get_regs(&g.v, &r);
		tf |= r.rflags & X86_EFLAGS_TF;
		tap_ok(run->exit_reason == KVM_EXIT_DEBUG && run->debug.arch.exception == 1 &&
			       run->debug.arch.pc == want && r.rip == want &&
			       (run->debug.arch.dr6 & DR6_BS),
		       "step %d: KVM_EXIT_DEBUG, exception 1, DR6.BS, pc = RIP = %#llx (got %s, RIP "
		       "%#llx)", i + 1, (unsigned long long)want, exit_str(&g.v),
		       (unsigned long long)r.rip);
		if (run->exit_reason != KVM_EXIT_DEBUG)
			BAIL("not a debug exit: %s", exit_str(&g.v));
	}
	tap_ok(!tf, "KVM_GET_REGS never showed RFLAGS.TF while single-stepping");
	tap_ok((uint32_t)r.rax == 6 && (uint32_t)r.rcx == 0 && (uint32_t)r.rdx == 19,
	       "at the HLT, not run yet: eax %#llx (want 6), ecx %#llx (want 0), edx %#llx (want "
	       "19)", (unsigned long long)r.rax, (unsigned long long)r.rcx,
	       (unsigned long long)r.rdx);
	CHECK_RET(g.v.fd, KVM_SET_GUEST_DEBUG, &off, 0, "KVM_SET_GUEST_DEBUG(0)");
	vcpu_run(&g.v);
	vcpu_get_regs(&g.v, &r);
	tap_ok(g.v.run->exit_reason == KVM_EXIT_HLT && r.rip == GUEST_ADDR(GUEST_CODE_GPA, ss_guest,
	       ss_guest_end),
	       "single-step off: the guest runs its HLT (got %s, RIP %#llx)", exit_str(&g.v),
	       (unsigned long long)r.rip);
	guest_destroy(&g);
}

static void sw_breakpoints(void)
{
	struct kvm_guest_debug dbg = { .control = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_SW_BP };
	struct kvm_guest_debug off = { .control = 0 };
	uint64_t int3 = GUEST_ADDR(GUEST_CODE_GPA, bp_guest, bp_int3);
	uint64_t after2 = GUEST_ADDR(GUEST_CODE_GPA, bp_guest, bp_after2);
	struct guest g = guest_create();
	struct kvm_regs r;
	uint32_t vec, eip;

	guest_load(g.mem, GUEST_CODE_GPA, bp_guest);
	vcpu_set_protected_mode(&g.v, g.mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
	idt_set_gate32(g.mem, 3, GUEST_ADDR(GUEST_CODE_GPA, bp_guest, bp_handler));
	CHECK_RET(g.v.fd, KVM_SET_GUEST_DEBUG, &dbg, 0, "KVM_SET_GUEST_DEBUG(ENABLE|USE_SW_BP)");
	if (!host_is_intel()) {
		/* KVM intercepts #BP, but QEMU's SVM does not apply that intercept to INT3. */
		for (int i = 0; i < 4; i++)
			tap_ok(1, "# SKIP QEMU's SVM does not intercept INT3 for KVM");
		vcpu_set_rip(&g.v, int3 + 1);
		vcpu_run(&g.v);
		goto no_sw_bp;
	}
	vcpu_run(&g.v);
	tap_ok(is_out(&g.v, 0xc0, 1) && *io_data(&g.v) == 0x11, "the guest OUTs 0x11 (got %s)",
	       exit_str(&g.v));
	vcpu_run(&g.v);
	vcpu_get_regs(&g.v, &r);
	tap_ok(g.v.run->exit_reason == KVM_EXIT_DEBUG && g.v.run->debug.arch.exception == 3 &&
		       g.v.run->debug.arch.pc == int3,
	       "int3: KVM_EXIT_DEBUG, exception 3, pc %#llx at the int3 (got %s)",
	       (unsigned long long)int3, exit_str(&g.v));
	tap_ok(r.rip == int3, "RIP %#llx is at the int3 (want %#llx)", (unsigned long long)r.rip,
	       (unsigned long long)int3);
	r.rip = int3 + 1;
	vcpu_set_regs(&g.v, &r);
	vcpu_run(&g.v);
	tap_ok(is_out(&g.v, 0xc0, 1) && *io_data(&g.v) == 0x22,
	       "RIP advanced past the int3: the guest continues and OUTs 0x22 (got %s)",
	       exit_str(&g.v));

no_sw_bp:
	CHECK_RET(g.v.fd, KVM_SET_GUEST_DEBUG, &off, 0, "KVM_SET_GUEST_DEBUG(0)");
	vcpu_run(&g.v);
	vec = is_out(&g.v, 0xc1, 4) ? io_out_value(&g.v) : ~0u;
	vcpu_run(&g.v);
	eip = is_out(&g.v, 0xc2, 4) ? io_out_value(&g.v) : ~0u;
	tap_ok(vec == 3 && eip == after2, "without USE_SW_BP, int3 reaches the guest's #BP handler "
	       "(vector %#x), which sees EIP %#x after the int3 (want %#llx; last exit %s)", vec,
	       eip, (unsigned long long)after2, exit_str(&g.v));
	vcpu_run(&g.v);
	tap_ok(g.v.run->exit_reason == KVM_EXIT_HLT, "after IRET the guest halts (got %s)",
	       exit_str(&g.v));
	(void)bp_int3b;
	guest_destroy(&g);
}

GUEST_CODE(inj_guest, 32,
	"mov $0xc0, %dx\n"
	"mov $0x33, %al\n"
	"out %al, (%dx)\n"
	"inj_a: nop\n"
	"mov $0x44, %al\n"
	"out %al, (%dx)\n"
	"inj_b: int3\n"
	"inj_c: mov $0x55, %al\n"
	"out %al, (%dx)\n"
	"hlt\n"
	"inj_db:\n"
	"push %eax\n"
	"mov $1, %eax\n"
	"jmp inj_report\n"
	"inj_bp:\n"
	"push %eax\n"
	"mov $3, %eax\n"
	"inj_report:\n"
	"push %edx\n"
	"mov $0xc1, %dx\n"
	"out %eax, (%dx)\n"
	"mov 8(%esp), %eax\n"
	"mov $0xc2, %dx\n"
	"out %eax, (%dx)\n"
	"pop %edx\n"
	"pop %eax\n"
	"iret\n");
extern const uint8_t inj_a[], inj_b[], inj_c[], inj_db[], inj_bp[];

static int out_is(struct vcpu *v, uint16_t port, uint32_t *val)
{
	vcpu_run(v);
	if (v->run->exit_reason != KVM_EXIT_IO || v->run->io.port != port)
		return 0;
	*val = v->run->io.size == 4 ? io_out_value(v) : *io_data(v);
	return 1;
}

static void injection(void)
{
	struct kvm_guest_debug db = { .control = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_INJECT_DB };
	struct kvm_guest_debug bp = { .control = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_INJECT_BP };
	struct kvm_guest_debug sw = { .control = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_SW_BP };
	struct guest g = guest_create();
	uint32_t vec = 0, eip = 0, val = 0;
	int ok;

	guest_load(g.mem, GUEST_CODE_GPA, inj_guest);
	vcpu_set_protected_mode(&g.v, g.mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
	idt_set_gate32(g.mem, 1, GUEST_ADDR(GUEST_CODE_GPA, inj_guest, inj_db));
	idt_set_gate32(g.mem, 3, GUEST_ADDR(GUEST_CODE_GPA, inj_guest, inj_bp));
	tap_ok(out_is(&g.v, 0xc0, &val) && val == 0x33, "the guest OUTs 0x33 (%s)",
	       exit_str(&g.v));
	CHECK_RET(g.v.fd, KVM_SET_GUEST_DEBUG, &db, 0, "KVM_SET_GUEST_DEBUG(ENABLE|INJECT_DB)");
	CHECK_ERRNO(g.v.fd, KVM_SET_GUEST_DEBUG, &bp, EBUSY,
		    "KVM_SET_GUEST_DEBUG(ENABLE|INJECT_BP) with the #DB still pending");
	ok = out_is(&g.v, 0xc1, &vec) && out_is(&g.v, 0xc2, &eip);
	tap_ok(ok && vec == 1 && eip == GUEST_ADDR(GUEST_CODE_GPA, inj_guest, inj_a),
	       "the guest's #DB handler runs (vector %u) and sees EIP %#x (want %#llx)", vec, eip,
	       (unsigned long long)GUEST_ADDR(GUEST_CODE_GPA, inj_guest, inj_a));
	tap_ok(out_is(&g.v, 0xc0, &val) && val == 0x44, "after IRET the guest OUTs 0x44 (%s)",
	       exit_str(&g.v));
	CHECK_RET(g.v.fd, KVM_SET_GUEST_DEBUG, &sw, 0, "KVM_SET_GUEST_DEBUG(ENABLE|USE_SW_BP)");
	if (host_is_intel()) {
		vcpu_run(&g.v);
		tap_ok(g.v.run->exit_reason == KVM_EXIT_DEBUG && g.v.run->debug.arch.exception == 3 &&
			       g.v.run->debug.arch.pc == GUEST_ADDR(GUEST_CODE_GPA, inj_guest, inj_b),
		       "the guest's int3 exits (%s)", exit_str(&g.v));
		CHECK_RET(g.v.fd, KVM_SET_GUEST_DEBUG, &bp, 0,
			  "handing it back: KVM_SET_GUEST_DEBUG(ENABLE|INJECT_BP)");
	} else {
		tap_ok(1, "# SKIP QEMU's SVM does not intercept INT3 for KVM");
		tap_ok(1, "# SKIP (no #BP exit to hand back)");
	}
	ok = out_is(&g.v, 0xc1, &vec) && out_is(&g.v, 0xc2, &eip);
	tap_ok(ok && vec == 3 && eip == GUEST_ADDR(GUEST_CODE_GPA, inj_guest, inj_c),
	       "the guest's #BP handler runs (vector %u) and sees EIP %#x after the int3 "
	       "(want %#llx)", vec, eip,
	       (unsigned long long)GUEST_ADDR(GUEST_CODE_GPA, inj_guest, inj_c));
	ok = out_is(&g.v, 0xc0, &val) && val == 0x55;
	vcpu_run(&g.v);
	tap_ok(ok && g.v.run->exit_reason == KVM_EXIT_HLT, "the guest OUTs 0x55 and halts (%s)",
	       exit_str(&g.v));
	(void)inj_b;
	guest_destroy(&g);
}

int main(void)
{
	test_watchdog(60);
	tap_plan(1 + 11 + 4 + 1 + 7 + 10);
	single_step();
	sw_breakpoints();
	injection();
	tap_done();
}

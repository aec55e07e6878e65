// SPDX-License-Identifier: GPL-2.0
/*
 * Guest state that KVM_SET_SREGS accepts but the CPU refuses to enter gives
 * KVM_EXIT_FAIL_ENTRY, with the hardware's reason and the CPU of the attempt.
 *
 * Both vendors: 64-bit mode with a code segment that has both L and D/B set. KVM's
 * kvm_is_valid_sregs does not look at CS.D/B, but the VM-entry checks do, on Intel (SDM:
 * "if the L bit is set, the D/B bit must be clear" for an IA-32e mode guest; reason
 * 0x80000021, invalid guest state with bit 31 "VM-entry failure") and on AMD (APM VMRUN
 * consistency checks: EFER.LME, CR0.PG, CR4.PAE, CS.L and CS.D all set; VMEXIT_INVALID,
 * which KVM reports as SVM_EXIT_ERR, -1).
 * Intel only (AMD does not check segment types or TR): protected mode with CS of
 * descriptor type 1 (a data segment), and protected mode with an unusable TR.
 *
 * On Intel the failed entry executes nothing (RIP unchanged) and once userspace repairs the
 * state the guest runs to its HLT (on AMD that depends on the CPU). fail_entry.cpu is the CPU the entry was attempted on: the test
 * pins itself to the CPU it runs on.
 */
#define _GNU_SOURCE
#include <sched.h>

#include "lib/rkvm_test.h"

#define PORT 0x50
#define INTEL_INVALID_STATE 0x80000021ull
#define SVM_EXIT_ERR (~0ull)

GUEST_CODE(fe_guest64, 64,
	"mov $0x64, %al\n"
	"out %al, $" XSTR(PORT) "\n"
	"hlt\n");

GUEST_CODE(fe_guest32, 32,
	"mov $0x32, %al\n"
	"out %al, $" XSTR(PORT) "\n"
	"hlt\n");

static int cpu;

/*
 * 4 checks: FAIL_ENTRY with REASON on our CPU, RIP unchanged, then FIX runs the guest.
 * On AMD, KVM reports the VMCB's exit code, whose upper half depends on the (emulated)
 * CPU when KVM runs nested (svm_is_vmrun_failure compares 32 bits then), and the state a
 * failed VMRUN leaves in the VMCB is the CPU's business: there only the failure and the
 * low 32 bits of the reason are checked.
 */
static void fail_then_fix(struct guest *g, const char *what, uint64_t reason, uint8_t marker,
			  void (*fix)(struct kvm_sregs *))
{
	uint64_t got;
	int intel = host_is_intel();
	struct kvm_regs r;
	struct kvm_sregs s;

	vcpu_run(&g->v);
	got = g->v.run->fail_entry.hardware_entry_failure_reason;
	tap_ok(g->v.run->exit_reason == KVM_EXIT_FAIL_ENTRY &&
		       (intel ? got == reason : (uint32_t)got == (uint32_t)reason),
	       "%s: KVM_EXIT_FAIL_ENTRY, hardware reason %#llx%s (got %s)", what,
	       (unsigned long long)reason, intel ? "" : " (low 32 bits)", exit_str(&g->v));
	tap_ok(g->v.run->exit_reason == KVM_EXIT_FAIL_ENTRY && g->v.run->fail_entry.cpu == (uint32_t)cpu,
	       "%s: fail_entry.cpu %u is the CPU the test is pinned to (%d)", what,
	       g->v.run->fail_entry.cpu, cpu);
	if (!intel) {
		tap_ok(1, "# SKIP %s: the state after a failed VMRUN is up to the CPU", what);
		tap_ok(1, "# SKIP %s: the state after a failed VMRUN is up to the CPU", what);
		return;
	}
	vcpu_get_regs(&g->v, &r);
	tap_ok(r.rip == GUEST_CODE_GPA, "%s: RIP %#llx unchanged (want %#x)", what,
	       (unsigned long long)r.rip, GUEST_CODE_GPA);
	vcpu_get_sregs(&g->v, &s);
	fix(&s);
	vcpu_set_sregs(&g->v, &s);
	vcpu_run(&g->v);
	if (is_out(&g->v, PORT, 1) && *io_data(&g->v) == marker)
		vcpu_run(&g->v);
	tap_ok(g->v.run->exit_reason == KVM_EXIT_HLT, "%s: repaired, the guest OUTs %#x and "
	       "halts (last exit %s)", what, marker, exit_str(&g->v));
}

static void fix_cs_db(struct kvm_sregs *s) { s->cs.db = 0; }
static void fix_cs_type(struct kvm_sregs *s) { s->cs.type = 0xb; }
static void fix_tr(struct kvm_sregs *s) { s->tr = seg_tss(); }

int main(void)
{
	int intel = host_is_intel();
	struct kvm_sregs s;
	struct guest g;
	cpu_set_t set;

	test_watchdog(60);
	cpu = sched_getcpu();
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (cpu < 0 || sched_setaffinity(0, sizeof(set), &set))
		BAIL("pin to the current CPU");
	tap_plan(3 * 5);

	/* CS.L and CS.D/B both set in 64-bit mode. */
	g = guest_create();
	guest_load(g.mem, GUEST_CODE_GPA, fe_guest64);
	vcpu_set_long_mode(&g.v, g.mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
	vcpu_get_sregs(&g.v, &s);
	s.cs.db = 1;
	CHECK_RET(g.v.fd, KVM_SET_SREGS, &s, 0, "KVM_SET_SREGS: 64-bit mode, CS.L = CS.D/B = 1");
	fail_then_fix(&g, "CS.L and CS.D/B", intel ? INTEL_INVALID_STATE : SVM_EXIT_ERR, 0x64,
		      fix_cs_db);
	guest_destroy(&g);

	if (!intel) {
		for (int i = 0; i < 2 * 5; i++)
			tap_ok(1, "# SKIP the CS type and TR checks are Intel VM-entry checks");
		tap_done();
	}

	/* CS with a data segment type. */
	g = guest_create();
	guest_load(g.mem, GUEST_CODE_GPA, fe_guest32);
	vcpu_set_protected_mode(&g.v, g.mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
	vcpu_get_sregs(&g.v, &s);
	s.cs.type = 1;
	CHECK_RET(g.v.fd, KVM_SET_SREGS, &s, 0, "KVM_SET_SREGS: protected mode, CS type 1 (data)");
	fail_then_fix(&g, "CS type 1", INTEL_INVALID_STATE, 0x32, fix_cs_type);
	guest_destroy(&g);

	/* TR unusable. */
	g = guest_create();
	guest_load(g.mem, GUEST_CODE_GPA, fe_guest32);
	vcpu_set_protected_mode(&g.v, g.mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
	vcpu_get_sregs(&g.v, &s);
	s.tr.unusable = 1;
	s.tr.present = 0;
	CHECK_RET(g.v.fd, KVM_SET_SREGS, &s, 0, "KVM_SET_SREGS: protected mode, TR unusable");
	fail_then_fix(&g, "TR unusable", INTEL_INVALID_STATE, 0x32, fix_tr);
	guest_destroy(&g);
	tap_done();
}

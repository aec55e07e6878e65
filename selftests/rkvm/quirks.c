// SPDX-License-Identifier: GPL-2.0
/*
 * KVM_CAP_DISABLE_QUIRKS2 with the two MONITOR/MWAIT quirks
 * (KVM_X86_QUIRK_MWAIT_NEVER_UD_FAULTS, KVM_X86_QUIRK_MISC_ENABLE_NO_MWAIT), and
 * MONITOR/MWAIT themselves.
 *  - KVM_CHECK_EXTENSION(KVM_CAP_DISABLE_QUIRKS2) includes both; a quirk outside the
 *    reported set -> EINVAL, while KVM_CAP_DISABLE_QUIRKS ignores it.
 *  - By default MONITOR and MWAIT run as NOPs in a 64-bit guest, whatever its CPUID says.
 *  - With MWAIT_NEVER_UD_FAULTS off, both raise #UD (the guest's handler OUTs the vector
 *    and skips them) unless the guest's CPUID has MONITOR.
 *  - With MISC_ENABLE_NO_MWAIT off as well, IA32_MISC_ENABLE bit 18 decides instead, and
 *    CPUID.1:ECX.MONITOR (read by the guest and by KVM_GET_CPUID2) follows it; changing
 *    the bit needs SSE3 in the guest's CPUID (else KVM_SET_MSRS sets nothing).
 */
#include "lib/rkvm_test.h"

#define QUIRK_MISC_ENABLE_NO_MWAIT (1ull << 4)
#define QUIRK_MWAIT_NEVER_UD_FAULTS (1ull << 6)
#define MSR_IA32_MISC_ENABLE 0x1a0
#define MISC_ENABLE_MWAIT (1ull << 18)
#define ECX_MWAIT (1u << 3)
#define ECX_SSE3 (1u << 0)

#define PORT_CPUID 0x91
#define PORT_STEP 0x90
#define PORT_UD 0x98

/* CPUID.1:ECX, then MONITOR and MWAIT, each followed by a step marker; then HLT. */
GUEST_CODE(mw_guest, 64,
	"mov $1, %eax\n"
	"xor %ecx, %ecx\n"
	"cpuid\n"
	"mov %ecx, %eax\n"
	"out %eax, $" XSTR(PORT_CPUID) "\n"
	"mov $" XSTR(GUEST_DATA_GPA) ", %eax\n"
	"xor %ecx, %ecx\n"
	"xor %edx, %edx\n"
	"monitor\n"
	"mov $1, %al\n"
	"out %al, $" XSTR(PORT_STEP) "\n"
	"xor %eax, %eax\n"
	"xor %ecx, %ecx\n"
	"mwait\n"
	"mov $2, %al\n"
	"out %al, $" XSTR(PORT_STEP) "\n"
	"hlt\n"
	/* #UD: report the vector, step over the 3-byte instruction. */
	"mw_ud_handler:\n"
	"mov $6, %al\n"
	"out %al, $" XSTR(PORT_UD) "\n"
	"addq $3, (%rsp)\n"
	"iretq\n");
extern const uint8_t mw_ud_handler[];

struct outcome {
	int ok;			/* the guest ran to HLT with the expected exits */
	uint32_t cpuid_ecx;	/* CPUID.1:ECX as the guest saw it */
	int monitor_ud, mwait_ud;
	char what[96];
};

static uint64_t misc(struct vcpu *v)
{
	return vcpu_get_msr1(v, MSR_IA32_MISC_ENABLE);
}

static long set_misc(struct vcpu *v, uint64_t val)
{
	return vcpu_set_msr1(v, MSR_IA32_MISC_ENABLE, val);
}

static struct ioctl_res disable_quirks(int vm_fd, uint32_t cap, uint64_t quirks)
{
	struct kvm_enable_cap c = { .cap = cap, .args = { quirks } };

	return do_ioctl(vm_fd, KVM_ENABLE_CAP, (unsigned long)&c);
}

/* The vCPU's CPUID: the supported one with MONITOR (and SSE3) as asked. */
static void set_cpuid(struct guest *g, int mwait, int sse3)
{
	struct kvm_cpuid2 *c = supported_cpuid(g->vm.sys_fd);
	uint32_t i;

	for (i = 0; i < c->nent; i++) {
		if (c->entries[i].function != 1)
			continue;
		c->entries[i].ecx &= ~(ECX_MWAIT | ECX_SSE3);
		c->entries[i].ecx |= (mwait ? ECX_MWAIT : 0) | (sse3 ? ECX_SSE3 : 0);
	}
	if (ioctl(g->v.fd, KVM_SET_CPUID2, c))
		BAIL("KVM_SET_CPUID2");
	free(c);
}

/* KVM_GET_CPUID2's leaf 1 ECX. */
static uint32_t cpuid2_ecx(struct guest *g)
{
	struct {
		struct kvm_cpuid2 h;
		struct kvm_cpuid_entry2 e[128];
	} c = { .h.nent = 128 };
	uint32_t i;

	if (ioctl(g->v.fd, KVM_GET_CPUID2, &c))
		BAIL("KVM_GET_CPUID2");
	for (i = 0; i < c.h.nent; i++)
		if (c.e[i].function == 1)
			return c.e[i].ecx;
	return 0;
}

static struct guest mw_create(uint64_t quirks, int cpuid_mwait)
{
	struct guest g = guest_create();
	struct ioctl_res r;

	/*
	 * Quirks first, as a VMM sets up a VM: KVM brings the CPUID bits that follow vCPU
	 * state up to date at KVM_SET_CPUID2 and on later changes of that state, not when a
	 * quirk changes (rkvm at once).
	 */
	if (quirks) {
		r = disable_quirks(g.vm.fd, KVM_CAP_DISABLE_QUIRKS2, quirks);
		if (r.r)
			BAIL("KVM_CAP_DISABLE_QUIRKS2 %#llx: %s", (unsigned long long)quirks,
			     res_str(r));
	}
	set_cpuid(&g, cpuid_mwait, 1);
	guest_load(g.mem, GUEST_CODE_GPA, mw_guest);
	vcpu_set_long_mode(&g.v, g.mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
	idt_set_gate64(g.mem, 6, GUEST_ADDR(GUEST_CODE_GPA, mw_guest, mw_ud_handler));
	return g;
}

/* Runs the guest to its HLT; records which instructions faulted. */
static struct outcome mw_run(struct guest *g)
{
	struct outcome o = { .ok = 1 };
	int step = 0, i;

	vcpu_run(&g->v);
	if (!is_out(&g->v, PORT_CPUID, 4)) {
		o.ok = 0;
		snprintf(o.what, sizeof(o.what), "first exit %s", exit_str(&g->v));
		return o;
	}
	o.cpuid_ecx = io_out_value(&g->v);
	for (i = 0; i < 6 && step < 2; i++) {
		vcpu_run(&g->v);
		if (is_out(&g->v, PORT_UD, 1) && *io_data(&g->v) == 6) {
			if (step == 0)
				o.monitor_ud = 1;
			else
				o.mwait_ud = 1;
		} else if (is_out(&g->v, PORT_STEP, 1) && *io_data(&g->v) == step + 1) {
			step++;
		} else {
			break;
		}
	}
	if (step == 2)
		vcpu_run(&g->v);
	if (step != 2 || g->v.run->exit_reason != KVM_EXIT_HLT) {
		o.ok = 0;
		snprintf(o.what, sizeof(o.what), "after step %d: %s", step, exit_str(&g->v));
	} else {
		snprintf(o.what, sizeof(o.what), "MONITOR %s, MWAIT %s",
			 o.monitor_ud ? "#UD" : "NOP", o.mwait_ud ? "#UD" : "NOP");
	}
	return o;
}

static void expect_case(uint64_t quirks, int cpuid_mwait, int misc_mwait, int want_ud,
			const char *name)
{
	struct guest g = mw_create(quirks, cpuid_mwait);
	struct outcome o;

	if (misc_mwait && set_misc(&g.v, misc(&g.v) | MISC_ENABLE_MWAIT) != 1)
		BAIL("KVM_SET_MSRS(MISC_ENABLE.MWAIT)");
	o = mw_run(&g);
	tap_ok(o.ok && o.monitor_ud == want_ud && o.mwait_ud == want_ud,
	       "%s: MONITOR and MWAIT %s (%s)", name, want_ud ? "#UD" : "run as NOPs", o.what);
	guest_destroy(&g);
}

int main(void)
{
	struct guest g;
	struct outcome o;
	struct ioctl_res r;
	long supported, set;
	uint32_t ecx;

	test_watchdog(60);
	g = guest_create();
	supported = ioctl(g.vm.sys_fd, KVM_CHECK_EXTENSION, KVM_CAP_DISABLE_QUIRKS2);
	if (supported <= 0)
		tap_skip_all("KVM_CAP_DISABLE_QUIRKS2 not advertised by the device");
	tap_plan(14);
	tap_ok((supported & (QUIRK_MWAIT_NEVER_UD_FAULTS | QUIRK_MISC_ENABLE_NO_MWAIT)) ==
		       (QUIRK_MWAIT_NEVER_UD_FAULTS | QUIRK_MISC_ENABLE_NO_MWAIT),
	       "KVM_CAP_DISABLE_QUIRKS2 offers MWAIT_NEVER_UD_FAULTS and MISC_ENABLE_NO_MWAIT "
	       "(%#lx)", supported);
	r = disable_quirks(g.vm.fd, KVM_CAP_DISABLE_QUIRKS2, 1ull << 63);
	tap_ok(r.r == -1 && r.err == EINVAL, "KVM_CAP_DISABLE_QUIRKS2 of a quirk it does not "
	       "offer -> -1/EINVAL (got %s)", res_str(r));
	r = disable_quirks(g.vm.fd, KVM_CAP_DISABLE_QUIRKS, 1ull << 63);
	tap_ok(r.r == 0, "KVM_CAP_DISABLE_QUIRKS of the same -> ignored, 0 (got %s)", res_str(r));
	guest_destroy(&g);

	expect_case(0, 0, 0, 0, "default quirks, no MONITOR in CPUID");
	expect_case(QUIRK_MWAIT_NEVER_UD_FAULTS, 0, 0, 1,
		    "MWAIT_NEVER_UD_FAULTS off, no MONITOR in CPUID");
	expect_case(QUIRK_MWAIT_NEVER_UD_FAULTS, 1, 0, 0,
		    "MWAIT_NEVER_UD_FAULTS off, MONITOR in CPUID");
	expect_case(QUIRK_MWAIT_NEVER_UD_FAULTS, 0, 1, 1,
		    "MWAIT_NEVER_UD_FAULTS off, MISC_ENABLE.MWAIT set but the quirk ignores it");

	/* Both quirks off: IA32_MISC_ENABLE.MWAIT decides and CPUID follows. */
	g = mw_create(QUIRK_MWAIT_NEVER_UD_FAULTS | QUIRK_MISC_ENABLE_NO_MWAIT, 1);
	ecx = cpuid2_ecx(&g);
	tap_ok(!(ecx & ECX_MWAIT) && !(misc(&g.v) & MISC_ENABLE_MWAIT),
	       "both quirks off, MONITOR in the CPUID set: MISC_ENABLE.MWAIT is clear, so "
	       "KVM_GET_CPUID2 shows no MONITOR (ecx %#x)", ecx);
	o = mw_run(&g);
	tap_ok(o.ok && !(o.cpuid_ecx & ECX_MWAIT) && o.monitor_ud && o.mwait_ud,
	       "the guest sees no MONITOR (ecx %#x) and both #UD (%s)", o.cpuid_ecx, o.what);
	guest_destroy(&g);

	g = mw_create(QUIRK_MWAIT_NEVER_UD_FAULTS | QUIRK_MISC_ENABLE_NO_MWAIT, 0);
	set = set_misc(&g.v, misc(&g.v) | MISC_ENABLE_MWAIT);
	ecx = cpuid2_ecx(&g);
	tap_ok(set == 1 && (ecx & ECX_MWAIT), "MISC_ENABLE.MWAIT set with KVM_SET_MSRS (%ld): "
	       "KVM_GET_CPUID2 shows MONITOR (ecx %#x)", set, ecx);
	o = mw_run(&g);
	tap_ok(o.ok && (o.cpuid_ecx & ECX_MWAIT) && !o.monitor_ud && !o.mwait_ud,
	       "the guest sees MONITOR (ecx %#x) and both run as NOPs (%s)", o.cpuid_ecx, o.what);
	set = set_misc(&g.v, misc(&g.v) & ~MISC_ENABLE_MWAIT);
	ecx = cpuid2_ecx(&g);
	tap_ok(set == 1 && !(ecx & ECX_MWAIT), "cleared again (%ld): MONITOR gone from "
	       "KVM_GET_CPUID2 (ecx %#x)", set, ecx);
	guest_destroy(&g);

	/* Without SSE3 the bit cannot change; with the quirk on it is plain storage. */
	g = guest_create();
	set_cpuid(&g, 0, 0);
	r = disable_quirks(g.vm.fd, KVM_CAP_DISABLE_QUIRKS2, QUIRK_MISC_ENABLE_NO_MWAIT);
	if (r.r)
		BAIL("KVM_CAP_DISABLE_QUIRKS2");
	tap_ok(set_misc(&g.v, misc(&g.v) | MISC_ENABLE_MWAIT) == 0 &&
		       !(misc(&g.v) & MISC_ENABLE_MWAIT),
	       "quirk off, no SSE3 in CPUID: KVM_SET_MSRS of MISC_ENABLE.MWAIT sets nothing");
	guest_destroy(&g);
	g = guest_create();
	set_cpuid(&g, 0, 0);
	set = set_misc(&g.v, misc(&g.v) | MISC_ENABLE_MWAIT);
	ecx = cpuid2_ecx(&g);
	tap_ok(set == 1 && (misc(&g.v) & MISC_ENABLE_MWAIT) && !(ecx & ECX_MWAIT),
	       "quirk on: the bit is stored (%ld) and CPUID keeps no MONITOR (ecx %#x)", set, ecx);
	guest_destroy(&g);
	tap_done();
}

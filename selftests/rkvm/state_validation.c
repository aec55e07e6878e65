// SPDX-License-Identifier: GPL-2.0
/*
 * Bad state from userspace or from the guest never reaches the hardware: KVM's errno for
 * the ioctl, #GP for the guest, and the host runs on (arch/x86/kvm/regs.c
 * kvm_is_valid_sregs, kvm_vcpu_ioctl_x86_set_debugregs; x86.c __kvm_set_xcr,
 * kvm_vcpu_ioctl_x86_set_xcrs, kvm_vcpu_ioctl_x86_set_vcpu_events,
 * kvm_arch_vcpu_ioctl_set_mpstate, kvm_arch_vcpu_ioctl_set_guest_debug; msrs.c
 * __kvm_set_msr, is_noncanonical_msr_address).
 *
 * A 64-bit guest (CR4.OSXSAVE set) whose #GP handler reports vector 13 and skips the
 * faulting instruction. Before it runs:
 *  - KVM_SET_SREGS -> EINVAL: CR0 bit 32, CR0.NW without CD, CR0.PG without PE, CR4 bit 15
 *    and bit 32, EFER bit 2 and bit 63, EFER.LMA outside long mode, LME+PG without LMA,
 *    CS.L outside long mode, long mode with a CR3 bit at the guest's MAXPHYADDR;
 *    KVM_SET_SREGS2 with CR0.PG without PE -> EINVAL;
 *  - KVM_SET_XCRS -> EINVAL: XCR0 0, AVX without SSE, bit 63, flags, 17 entries; an entry
 *    for XCR1 only is ignored (0);
 *  - KVM_SET_DEBUGREGS -> EINVAL with DR6 or DR7 bit 32;
 *  - KVM_SET_MSRS (host) sets nothing (0) for non-canonical LSTAR, CSTAR,
 *    KERNEL_GS_BASE, FS_BASE, GS_BASE and for TSC_AUX bit 32; IA32_SYSENTER_ESP/EIP are
 *    made canonical (1; read back sign-extended from bit 47, the same for 57 bits here);
 *  - KVM_SET_VCPU_EVENTS -> EINVAL: exception 32, 255, NMI (2), an unknown flag;
 *  - KVM_SET_MP_STATE -> EINVAL without an in-kernel APIC: HALTED, 0xdeadbeef.
 * Then the guest runs (the bad values left nothing behind) and gets #GP from WRMSR of
 * non-canonical LSTAR, CSTAR, KERNEL_GS_BASE, FS_BASE, GS_BASE, of TSC_AUX bit 32, from
 * XSETBV of XCR0 0, of XCR1, of XCR0 bit 63, from MOV to DR7 and DR6 with bit 32.
 * KVM_SET_GUEST_DEBUG with USE_HW_BP and debugreg[7] bit 32 succeeds (KVM does not look
 * at it); the next KVM_RUN fails the entry or runs the guest, and with debugging off again
 * the guest runs on.
 * Events from KVM_SET_VCPU_EVENTS, each on a fresh 64-bit guest whose handler reports the
 * error code it got (x86.c kvm_inject_exception, vmx/vmx.c vmx_inject_exception,
 * vmx_set_interrupt_shadow): an injected #GP with error code 0xdead0018 delivers 0x18 with
 * VMX (only the low 16 bits; the whole code with SVM), not a failed entry; interrupt
 * shadow MOV_SS|STI (one kind kept, MOV SS; reads back as MOV_SS with VMX) and MOV_SS with
 * RFLAGS.IF 0 run on, set before the first KVM_RUN or after an OUT exit; STI with IF 0
 * after an OUT exit runs on (finishing the OUT ends the shadow). KVM_SET_VCPU_EVENTS ->
 * EINVAL: smi.smm_inside_nmi without SMM, VALID_TRIPLE_FAULT without the capability; a
 * pending exception 255 without VALID_PAYLOAD is ignored (0).
 * A split-irqchip VM: KVM_SET_MP_STATE 0xdeadbeef -> EINVAL; KVM_SET_LAPIC of a periodic
 * timer with TMICT 1 at divide-by-1 (KVM stretches the period) keeps TMICT, and the guest
 * (interrupts off) runs on.
 */
#include "lib/rkvm_test.h"

#define P_EXC 0xe0
#define P_STEP 0xe1

#define MSR_FS_BASE 0xc0000100
#define MSR_GS_BASE 0xc0000101
#define MSR_KERNEL_GS_BASE 0xc0000102
#define MSR_LSTAR 0xc0000082
#define MSR_CSTAR 0xc0000083
#define MSR_TSC_AUX 0xc0000103
#define MSR_SYSENTER_ESP 0x175
#define MSR_SYSENTER_EIP 0x176

/* WRMSR of EDX:EAX = HI:LO to MSR (2 bytes to skip on #GP), then OUT step N. */
#define WR(msr, hi, lo, n)                                                                  \
	"mov $" #msr ", %ecx\n"                                                               \
	"mov $" #hi ", %edx\n"                                                                \
	"mov $" #lo ", %eax\n"                                                                \
	"mov $2, %r15\n"                                                                      \
	"wrmsr\n"                                                                             \
	"mov $" #n ", %eax\n"                                                                 \
	"out %eax, $" XSTR(P_STEP) "\n"

/* XSETBV of XCR ECX = EDX:EAX (3 bytes), then OUT step N. */
#define XS(ecx, hi, lo, n)                                                                  \
	"mov $" #ecx ", %ecx\n"                                                               \
	"mov $" #hi ", %edx\n"                                                                \
	"mov $" #lo ", %eax\n"                                                                \
	"mov $3, %r15\n"                                                                      \
	"xsetbv\n"                                                                            \
	"mov $" #n ", %eax\n"                                                                 \
	"out %eax, $" XSTR(P_STEP) "\n"

GUEST_CODE(sv_guest, 64,
	WR(0xc0000082, 0x80000000, 0, 1)
	WR(0xc0000083, 0x80000000, 0, 2)
	WR(0xc0000102, 0x80000000, 0, 3)
	WR(0xc0000100, 0x80000000, 0, 4)
	WR(0xc0000101, 0x80000000, 0, 5)
	WR(0xc0000103, 1, 0, 6)
	XS(0, 0, 0, 7)
	XS(1, 0, 3, 8)
	XS(0, 0x80000000, 3, 9)
	"mov $0x100000400, %rax\n"
	"mov $3, %r15\n"
	"mov %rax, %dr7\n"
	"mov $10, %eax\n"
	"out %eax, $" XSTR(P_STEP) "\n"
	"mov $0x1ffff0ff0, %rax\n"
	"mov $3, %r15\n"
	"mov %rax, %dr6\n"
	"mov $11, %eax\n"
	"out %eax, $" XSTR(P_STEP) "\n"
	"sv_final:\n"
	"mov $99, %eax\n"
	"out %eax, $" XSTR(P_STEP) "\n"
	"jmp sv_final\n"
	"sv_gp:\n"
	"mov $13, %eax\n"
	"out %eax, $" XSTR(P_EXC) "\n"
	"add $8, %rsp\n"
	"add %r15, (%rsp)\n"
	"iretq\n");
extern const uint8_t sv_gp[], sv_final[];

static const char *const steps[] = {
	"", "WRMSR LSTAR 0x8000000000000000", "WRMSR CSTAR 0x8000000000000000",
	"WRMSR KERNEL_GS_BASE 0x8000000000000000", "WRMSR FS_BASE 0x8000000000000000",
	"WRMSR GS_BASE 0x8000000000000000", "WRMSR TSC_AUX bit 32", "XSETBV XCR0 0",
	"XSETBV XCR1", "XSETBV XCR0 bit 63", "MOV DR7 bit 32", "MOV DR6 bit 32",
};

static struct guest g;
static struct kvm_sregs good;

static void sregs_bad(const char *what, void (*mod)(struct kvm_sregs *))
{
	struct kvm_sregs s = good;

	mod(&s);
	CHECK_ERRNO(g.v.fd, KVM_SET_SREGS, &s, EINVAL, "KVM_SET_SREGS with %s", what);
}

static void cr0_hi(struct kvm_sregs *s) { s->cr0 |= 1ull << 32; }
static void cr0_nw(struct kvm_sregs *s) { s->cr0 |= 1ull << 29; s->cr0 &= ~(1ull << 30); }
static void cr0_pg_nope(struct kvm_sregs *s) { s->cr0 &= ~CR0_PE; s->efer = 0; s->cs.l = 0; }
static void cr4_15(struct kvm_sregs *s) { s->cr4 |= 1ull << 15; }
static void cr4_32(struct kvm_sregs *s) { s->cr4 |= 1ull << 32; }
static void efer_2(struct kvm_sregs *s) { s->efer |= 1ull << 2; }
static void efer_63(struct kvm_sregs *s) { s->efer |= 1ull << 63; }
static void lma_only(struct kvm_sregs *s)
{
	s->cr0 &= ~CR0_PG;
	s->efer = EFER_LMA;
	s->cs = seg_code32();
}
static void no_lma(struct kvm_sregs *s) { s->efer = EFER_LME; }
static void cs_l(struct kvm_sregs *s)
{
	s->cr0 &= ~CR0_PG;
	s->efer = 0;
	s->cs.l = 1;
}
static uint64_t cr3_bit;
static void cr3_high(struct kvm_sregs *s) { s->cr3 |= cr3_bit; }

static void set_xcr(const char *what, uint32_t nr, uint32_t flags, uint32_t xcr, uint64_t v,
		    int want_err)
{
	struct kvm_xcrs x;

	memset(&x, 0, sizeof(x));
	x.nr_xcrs = nr;
	x.flags = flags;
	x.xcrs[0].xcr = xcr;
	x.xcrs[0].value = v;
	if (want_err)
		CHECK_ERRNO(g.v.fd, KVM_SET_XCRS, &x, EINVAL, "KVM_SET_XCRS with %s", what);
	else
		CHECK_RET(g.v.fd, KVM_SET_XCRS, &x, 0, "KVM_SET_XCRS with %s", what);
}

static void events_bad(const char *what, int nr, uint32_t flags)
{
	struct kvm_vcpu_events e;

	if (ioctl(g.v.fd, KVM_GET_VCPU_EVENTS, &e))
		BAIL("KVM_GET_VCPU_EVENTS");
	if (nr >= 0) {
		e.exception.injected = 1;
		e.exception.nr = nr;
	}
	e.flags |= flags;
	CHECK_ERRNO(g.v.fd, KVM_SET_VCPU_EVENTS, &e, EINVAL, "KVM_SET_VCPU_EVENTS with %s", what);
}

/* The guest's MAXPHYADDR as its CPUID (the supported one) gives it, 36 without the leaf. */
static int guest_maxphyaddr(void)
{
	struct kvm_cpuid2 *c = supported_cpuid(g.vm.sys_fd);
	int i, bits = 36;

	for (i = 0; i < (int)c->nent; i++)
		if (c->entries[i].function == 0x80000008)
			bits = c->entries[i].eax & 0xff;
	free(c);
	return bits;
}

static void run_expect(int port, uint32_t val, const char *what)
{
	vcpu_run(&g.v);
	tap_ok(is_out(&g.v, port, 4) && (uint32_t)io_out_value(&g.v) == val, "%s (%s)", what,
	       exit_str(&g.v));
}

static void vm_checks(void)
{
	struct kvm_sregs2 s2;
	struct kvm_debugregs d;
	struct kvm_guest_debug dbg;
	struct kvm_mp_state mp;
	uint64_t esp, eip;
	int i, bits;

	g = guest_create();
	guest_load(g.mem, GUEST_CODE_GPA, sv_guest);
	vcpu_set_long_mode(&g.v, g.mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
	idt_set_gate64(g.mem, 13, GUEST_ADDR(GUEST_CODE_GPA, sv_guest, sv_gp));
	vcpu_get_sregs(&g.v, &good);
	good.cr4 |= CR4_OSXSAVE;
	vcpu_set_sregs(&g.v, &good);

	sregs_bad("CR0 bit 32", cr0_hi);
	sregs_bad("CR0.NW without CD", cr0_nw);
	sregs_bad("CR0.PG without PE", cr0_pg_nope);
	sregs_bad("CR4 bit 15 (reserved)", cr4_15);
	sregs_bad("CR4 bit 32", cr4_32);
	sregs_bad("EFER bit 2 (reserved)", efer_2);
	sregs_bad("EFER bit 63", efer_63);
	sregs_bad("EFER.LMA without paging", lma_only);
	sregs_bad("EFER.LME and CR0.PG without LMA", no_lma);
	sregs_bad("CS.L outside long mode", cs_l);
	bits = guest_maxphyaddr();
	if (bits < 52) {
		char what[64];

		cr3_bit = 1ull << bits;
		snprintf(what, sizeof(what), "CR3 bit %d in long mode (MAXPHYADDR %d)", bits, bits);
		sregs_bad(what, cr3_high);
	} else {
		tap_ok(1, "# SKIP guest MAXPHYADDR %d", bits);
	}
	if (ioctl(g.vm.sys_fd, KVM_CHECK_EXTENSION, KVM_CAP_SREGS2) > 0) {
		if (ioctl(g.v.fd, KVM_GET_SREGS2, &s2))
			BAIL("KVM_GET_SREGS2");
		s2.cr0 &= ~CR0_PE;
		s2.efer = 0;
		s2.cs.l = 0;
		s2.flags = 0;
		CHECK_ERRNO(g.v.fd, KVM_SET_SREGS2, &s2, EINVAL, "KVM_SET_SREGS2 with CR0.PG without PE");
	} else {
		tap_ok(1, "# SKIP no KVM_CAP_SREGS2");
	}

	set_xcr("XCR0 0 (no x87)", 1, 0, 0, 0, 1);
	set_xcr("XCR0 x87|AVX without SSE", 1, 0, 0, 5, 1);
	set_xcr("XCR0 bit 63", 1, 0, 0, 3ull | 1ull << 63, 1);
	set_xcr("flags 1", 1, 1, 0, 3, 1);
	set_xcr("17 entries", 17, 0, 0, 3, 1);
	set_xcr("one entry for XCR1 (ignored)", 1, 0, 1, 3, 0);

	if (ioctl(g.v.fd, KVM_GET_DEBUGREGS, &d))
		BAIL("KVM_GET_DEBUGREGS");
	d.dr6 |= 1ull << 32;
	CHECK_ERRNO(g.v.fd, KVM_SET_DEBUGREGS, &d, EINVAL, "KVM_SET_DEBUGREGS with DR6 bit 32");
	d.dr6 &= ~(1ull << 32);
	d.dr7 |= 1ull << 32;
	CHECK_ERRNO(g.v.fd, KVM_SET_DEBUGREGS, &d, EINVAL, "KVM_SET_DEBUGREGS with DR7 bit 32");

	tap_ok(vcpu_set_msr1(&g.v, MSR_LSTAR, 1ull << 63) == 0 &&
		       vcpu_set_msr1(&g.v, MSR_CSTAR, 1ull << 63) == 0 &&
		       vcpu_set_msr1(&g.v, MSR_KERNEL_GS_BASE, 1ull << 63) == 0,
	       "KVM_SET_MSRS of non-canonical LSTAR, CSTAR, KERNEL_GS_BASE sets nothing");
	tap_ok(vcpu_set_msr1(&g.v, MSR_FS_BASE, 1ull << 63) == 0 &&
		       vcpu_set_msr1(&g.v, MSR_GS_BASE, 1ull << 63) == 0,
	       "KVM_SET_MSRS of non-canonical FS_BASE, GS_BASE sets nothing");
	/* kvm-amd keeps TSC_AUX's upper half and SYSENTER_ESP/EIP as written. */
	if (host_is_intel())
		tap_ok(vcpu_set_msr1(&g.v, MSR_TSC_AUX, 1ull << 32) == 0,
		       "KVM_SET_MSRS of TSC_AUX bit 32 sets nothing");
	else
		tap_ok(1, "# SKIP TSC_AUX bit 32 (VMX semantics)");
	tap_ok(vcpu_set_msr1(&g.v, MSR_SYSENTER_ESP, 0x8000123456789abcull) == 1 &&
		       vcpu_set_msr1(&g.v, MSR_SYSENTER_EIP, 0x80007edcba987654ull) == 1,
	       "KVM_SET_MSRS of non-canonical SYSENTER_ESP/EIP succeeds");
	esp = vcpu_get_msr1(&g.v, MSR_SYSENTER_ESP);
	eip = vcpu_get_msr1(&g.v, MSR_SYSENTER_EIP);
	tap_ok(!host_is_intel() || (esp == 0x123456789abcull && eip == 0x7edcba987654ull),
	       "they read back canonical (%#llx, %#llx; want 0x123456789abc, 0x7edcba987654)%s",
	       (unsigned long long)esp, (unsigned long long)eip,
	       host_is_intel() ? "" : " # SKIP VMX semantics");

	events_bad("exception 32", 32, 0);
	events_bad("exception 255", 255, 0);
	events_bad("exception 2 (NMI)", 2, 0);
	events_bad("flag bit 31", -1, 1u << 31);

	mp.mp_state = KVM_MP_STATE_HALTED;
	CHECK_ERRNO(g.v.fd, KVM_SET_MP_STATE, &mp, EINVAL,
		    "KVM_SET_MP_STATE HALTED without an in-kernel APIC");
	mp.mp_state = 0xdeadbeef;
	CHECK_ERRNO(g.v.fd, KVM_SET_MP_STATE, &mp, EINVAL, "KVM_SET_MP_STATE 0xdeadbeef");

	/* The guest runs on the state from before, and faults where it must. */
	for (i = 1; i <= 11; i++) {
		char what[96];

		vcpu_run(&g.v);
		/*
		 * With SVM the segment-base and SYSCALL MSRs and TSC_AUX are the guest's own
		 * (no intercept): the CPU decides, and under QEMU there is no #GP.
		 */
		if (!host_is_intel() && i <= 6 && is_out(&g.v, P_STEP, 4) &&
		    io_out_value(&g.v) == (uint64_t)i) {
			tap_ok(1, "# SKIP guest %s: not intercepted with SVM", steps[i]);
			continue;
		}
		if (!is_out(&g.v, P_EXC, 4) || io_out_value(&g.v) != 13) {
			tap_ok(0, "guest %s -> #GP (got %s)", steps[i], exit_str(&g.v));
			continue;
		}
		snprintf(what, sizeof(what), "guest %s -> #GP, then the guest goes on", steps[i]);
		run_expect(P_STEP, i, what);
	}
	run_expect(P_STEP, 99, "the guest reaches its end");

	/* KVM does not check userspace's DR7 for hardware breakpoints. */
	memset(&dbg, 0, sizeof(dbg));
	dbg.control = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP;
	dbg.arch.debugreg[7] = 0x100000400ull;
	CHECK_RET(g.v.fd, KVM_SET_GUEST_DEBUG, &dbg, 0,
		  "KVM_SET_GUEST_DEBUG with USE_HW_BP and debugreg[7] bit 32");
	vcpu_run(&g.v);
	tap_ok(g.v.run->exit_reason == KVM_EXIT_FAIL_ENTRY || is_out(&g.v, P_STEP, 4),
	       "KVM_RUN fails the entry or runs the guest (%s)", exit_str(&g.v));
	memset(&dbg, 0, sizeof(dbg));
	CHECK_RET(g.v.fd, KVM_SET_GUEST_DEBUG, &dbg, 0, "KVM_SET_GUEST_DEBUG off");
	vcpu_set_rip(&g.v, GUEST_ADDR(GUEST_CODE_GPA, sv_guest, sv_final));
	run_expect(P_STEP, 99, "then the guest runs on");
	guest_destroy(&g);
}

GUEST_CODE(sv_loop, 32,
	"1: mov $0x77, %eax\n"
	"out %eax, $" XSTR(P_STEP) "\n"
	"jmp 1b\n");

/*
 * Events from KVM_SET_VCPU_EVENTS, each on a fresh 64-bit guest that loops on OUT 0x77 and
 * whose handler for every vector reports the error code the CPU pushed (0xffffffff: none).
 */
#define P_EVENT 0xe2

GUEST_CODE(sv_ev_guest, 64,
	"sv_ev_loop:\n"
	"mov $0x77, %eax\n"
	"out %eax, $" XSTR(P_STEP) "\n"
	"jmp sv_ev_loop\n"
	"sv_ev_handler:\n"
	"mov $0xffffffff, %eax\n"
	/* Without an error code the CS slot is at 8(%rsp). */
	"cmpq $" XSTR(SEL_CODE64) ", 8(%rsp)\n"
	"je 1f\n"
	"pop %rax\n"
	"1:\n"
	"out %eax, $" XSTR(P_EVENT) "\n"
	"iretq\n");
extern const uint8_t sv_ev_handler[];

struct ev_case {
	const char *what;
	int first;		/* set before the first KVM_RUN (else after an OUT exit) */
	int exc;		/* injected exception vector, or -1 */
	int has_code;
	uint32_t code;
	int shadow;		/* interrupt.shadow with VALID_SHADOW, or -1 */
	uint32_t want;		/* the handler's report, or 0x77: the loop runs on */
};

#define MOV_SS KVM_X86_SHADOW_INT_MOV_SS
#define STI KVM_X86_SHADOW_INT_STI

static const struct ev_case ev_cases[] = {
	{ "#GP, error code 0xdead0018", 0, 13, 1, 0xdead0018, -1, 0x18 },
	{ "#GP, error code 0xdead0018", 1, 13, 1, 0xdead0018, -1, 0x18 },
	{ "shadow MOV_SS|STI, IF 0", 1, -1, 0, 0, MOV_SS | STI, 0x77 },
	{ "shadow MOV_SS, IF 0", 1, -1, 0, 0, MOV_SS, 0x77 },
	{ "shadow STI, IF 0", 0, -1, 0, 0, STI, 0x77 },
	{ "shadow MOV_SS|STI, IF 0", 0, -1, 0, 0, MOV_SS | STI, 0x77 },
};

static void ev_case_run(const struct ev_case *c)
{
	struct guest eg = guest_create();
	const char *when = c->first ? "before the first KVM_RUN" : "after an OUT exit";
	struct kvm_vcpu_events e;
	struct ioctl_res res;
	uint32_t got;
	int i, ok;

	guest_load(eg.mem, GUEST_CODE_GPA, sv_ev_guest);
	vcpu_set_long_mode(&eg.v, eg.mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
	for (i = 0; i < 256; i++)
		idt_set_gate64(eg.mem, i, GUEST_ADDR(GUEST_CODE_GPA, sv_ev_guest, sv_ev_handler));
	if (!c->first) {
		vcpu_run(&eg.v);
		if (!is_out(&eg.v, P_STEP, 4))
			BAIL("events guest did not start (%s)", exit_str(&eg.v));
	}
	if (ioctl(eg.v.fd, KVM_GET_VCPU_EVENTS, &e))
		BAIL("KVM_GET_VCPU_EVENTS");
	if (c->exc >= 0) {
		e.exception.injected = 1;
		e.exception.nr = c->exc;
		e.exception.has_error_code = c->has_code;
		e.exception.error_code = c->code;
	}
	if (c->shadow >= 0) {
		e.interrupt.shadow = c->shadow;
		e.flags |= KVM_VCPUEVENT_VALID_SHADOW;
	}
	res = do_ioctl(eg.v.fd, KVM_SET_VCPU_EVENTS, (unsigned long)&e);
	if (res.r) {
		tap_ok(0, "KVM_SET_VCPU_EVENTS %s %s: %s", c->what, when, res_str(res));
		guest_destroy(&eg);
		return;
	}
	vcpu_run(&eg.v);
	got = (uint32_t)io_out_value(&eg.v);
	if (c->want == 0x77)
		ok = is_out(&eg.v, P_STEP, 4) && got == 0x77;
	else
		/* SVM delivers all 32 bits of the error code; VMX only the low 16. */
		ok = is_out(&eg.v, P_EVENT, 4) &&
		     (got == c->want || (!host_is_intel() && c->has_code && got == c->code));
	tap_ok(ok, "KVM_SET_VCPU_EVENTS %s %s, then KVM_RUN: %s (%s)", c->what, when,
	       c->want == 0x77 ? "the guest runs on" : "the guest takes the event",
	       exit_str(&eg.v));
	guest_destroy(&eg);
}

static void inject_checks(void)
{
	struct guest eg = guest_create();
	struct kvm_vcpu_events base, e;
	size_t i;

	for (i = 0; i < sizeof(ev_cases) / sizeof(ev_cases[0]); i++)
		ev_case_run(&ev_cases[i]);

	if (ioctl(eg.v.fd, KVM_GET_VCPU_EVENTS, &base))
		BAIL("KVM_GET_VCPU_EVENTS");
	e = base;
	e.flags |= KVM_VCPUEVENT_VALID_SHADOW;
	e.interrupt.shadow = MOV_SS | STI;
	if (ioctl(eg.v.fd, KVM_SET_VCPU_EVENTS, &e) || ioctl(eg.v.fd, KVM_GET_VCPU_EVENTS, &e))
		BAIL("KVM_SET/GET_VCPU_EVENTS");
	/* VMX keeps one kind (MOV SS first); SVM has one shadow bit and reports both. */
	tap_ok(e.interrupt.shadow == (host_is_intel() ? MOV_SS : (MOV_SS | STI)),
	       "KVM_SET_VCPU_EVENTS shadow MOV_SS|STI reads back as %s (got %u)",
	       host_is_intel() ? "MOV_SS" : "MOV_SS|STI", e.interrupt.shadow);
	e = base;
	e.flags |= KVM_VCPUEVENT_VALID_SMM;
	e.smi.smm_inside_nmi = 1;
	if (ioctl(eg.vm.sys_fd, KVM_CHECK_EXTENSION, KVM_CAP_X86_SMM) > 0)
		tap_ok(1, "# SKIP KVM_CAP_X86_SMM: the device has SMM");
	else
		CHECK_ERRNO(eg.v.fd, KVM_SET_VCPU_EVENTS, &e, EINVAL,
			    "KVM_SET_VCPU_EVENTS with smi.smm_inside_nmi without SMM");
	e = base;
	e.flags |= KVM_VCPUEVENT_VALID_TRIPLE_FAULT;
	e.triple_fault.pending = 1;
	CHECK_ERRNO(eg.v.fd, KVM_SET_VCPU_EVENTS, &e, EINVAL,
		    "KVM_SET_VCPU_EVENTS with VALID_TRIPLE_FAULT, KVM_CAP_X86_TRIPLE_FAULT_EVENT off");
	e = base;
	e.exception.pending = 1;
	e.exception.nr = 255;
	CHECK_RET(eg.v.fd, KVM_SET_VCPU_EVENTS, &e, 0,
		  "KVM_SET_VCPU_EVENTS with exception.pending, nr 255 without VALID_PAYLOAD (ignored)");
	guest_destroy(&eg);
}

static void lapic_checks(void)
{
	struct kvm_enable_cap cap = { .cap = KVM_CAP_SPLIT_IRQCHIP, .args = { 24 } };
	struct kvm_lapic_state st;
	struct kvm_mp_state mp;
	uint32_t v;
	int i;

	g.vm = vm_create();
	if (ioctl(g.vm.sys_fd, KVM_CHECK_EXTENSION, KVM_CAP_SPLIT_IRQCHIP) <= 0 ||
	    ioctl(g.vm.fd, KVM_ENABLE_CAP, &cap)) {
		for (i = 0; i < 5; i++)
			tap_ok(1, "# SKIP no KVM_CAP_SPLIT_IRQCHIP");
		return;
	}
	if (ioctl(g.vm.fd, KVM_SET_TSS_ADDR, 0xfffbd000))
		BAIL("KVM_SET_TSS_ADDR");
	g.mem = vm_add_memory(&g.vm, 0, 0, GUEST_LOW_SIZE, 0);
	g.v = vcpu_create(&g.vm, 0);
	vcpu_set_supported_cpuid(&g.vm, &g.v);
	guest_load(g.mem, GUEST_CODE_GPA, sv_loop);
	vcpu_set_protected_mode(&g.v, g.mem, GUEST_CODE_GPA, GUEST_STACK_TOP);

	mp.mp_state = 0xdeadbeef;
	CHECK_ERRNO(g.v.fd, KVM_SET_MP_STATE, &mp, EINVAL,
		    "split irqchip: KVM_SET_MP_STATE 0xdeadbeef");
	if (ioctl(g.v.fd, KVM_GET_LAPIC, &st))
		BAIL("KVM_GET_LAPIC");
	v = 0x1ff;				/* SPIV: enabled */
	memcpy(st.regs + 0xf0, &v, 4);
	v = 0xb;				/* TDCR: divide by 1 */
	memcpy(st.regs + 0x3e0, &v, 4);
	v = 1 << 17 | 0x40;			/* LVTT: periodic, vector 0x40 */
	memcpy(st.regs + 0x320, &v, 4);
	v = 1;					/* TMICT */
	memcpy(st.regs + 0x380, &v, 4);
	CHECK_RET(g.v.fd, KVM_SET_LAPIC, &st, 0, "KVM_SET_LAPIC: periodic timer, TMICT 1, divide 1");
	memset(&st, 0, sizeof(st));
	if (ioctl(g.v.fd, KVM_GET_LAPIC, &st))
		BAIL("KVM_GET_LAPIC");
	memcpy(&v, st.regs + 0x380, 4);
	tap_ok(v == 1, "KVM_GET_LAPIC: TMICT 1 (%u)", v);
	for (i = 0; i < 2; i++)
		run_expect(P_STEP, 0x77, "the guest runs with the timer firing");
	guest_destroy(&g);
}

int main(void)
{
	test_watchdog(200);
	tap_plan(62);
	vm_checks();
	inject_checks();
	lapic_checks();
	tap_done();
}

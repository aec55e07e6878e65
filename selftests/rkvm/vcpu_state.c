// SPDX-License-Identifier: GPL-2.0
/*
 * vCPU state ioctls: REGS, SREGS, SREGS2, FPU, XSAVE, XSAVE2, XCRS, DEBUGREGS, VCPU_EVENTS,
 * MP_STATE (arch/x86/kvm/regs.c, x86.c).
 *
 * A 64-bit guest first leaves non-trivial state behind (x87 stack, XMM registers, all
 * GPRs). Then, for each ioctl pair:
 *  - GET -> SET -> GET gives identical bytes (padding included);
 *  - SET of modified values -> GET returns them. The values are given in the form both
 *    vendors report (accessed code/data types, busy TSS, G consistent with the limit).
 *    Normalized by KVM and checked as such: RFLAGS bit 1 is always set; an interrupt
 *    shadow set as MOV SS reads back with MOV SS set (AMD has a single shadow bit and
 *    reports MOV SS|STI). Not compared: kvm_fpu.mxcsr (KVM's
 *    KVM_GET_FPU leaves it 0 and KVM_SET_FPU ignores it);
 *  - the FPU and XSAVE views agree: XMM registers set with one are read with the other;
 *  - SREGS2: in 32-bit PAE paging mode, without PDPTRS_VALID the PDPTRs are loaded from
 *    guest memory at CR3, with it they are the given ones;
 *  - bad inputs get KVM's errno and change nothing: SREGS with CR0.PG without PE,
 *    NW without CD, a CR0 bit above 31, EFER.LME+CR0.PG without CR4.PAE; SREGS2 with an
 *    unknown flag or PDPTRS_VALID outside PAE paging; XSAVE with an unsupported feature
 *    bit, a reserved header byte, a reserved MXCSR bit; XCRS with XCR0 lacking x87, AVX
 *    without SSE, an unsupported bit, flags, nr_xcrs > 16; DEBUGREGS with DR6/DR7 bits
 *    above 31 or flags; VCPU_EVENTS with an unknown flag, PAYLOAD without the
 *    capability, an injected NMI or vector > 31 exception; MP_STATE other than RUNNABLE
 *    without an in-kernel irqchip -> EINVAL.
 */
#include "lib/rkvm_test.h"

#define WORK_GPA (GUEST_CODE_GPA + 0x1000)
#define XMM_GPA GUEST_DATA_GPA
#define PDPT_GPA 0xb000

GUEST_CODE(state_guest, 64,
	"fninit\n"
	"fld1\n"
	"fldpi\n"
	"fldl2e\n"
	"mov $" XSTR(XMM_GPA) ", %rax\n"
	"movdqu 0x00(%rax), %xmm0\n"
	"movdqu 0x10(%rax), %xmm1\n"
	"movdqu 0x20(%rax), %xmm2\n"
	"movdqu 0x30(%rax), %xmm3\n"
	"movdqu 0x40(%rax), %xmm4\n"
	"movdqu 0x50(%rax), %xmm5\n"
	"movdqu 0x60(%rax), %xmm6\n"
	"movdqu 0x70(%rax), %xmm7\n"
	"movdqu 0x80(%rax), %xmm8\n"
	"movdqu 0xf0(%rax), %xmm15\n"
	"mov $0x1111111111111111, %rax\n"
	"mov $0x2222222222222222, %rbx\n"
	"mov $0x3333333333333333, %rcx\n"
	"mov $0x4444444444444444, %rdx\n"
	"mov $0x5555555555555555, %rsi\n"
	"mov $0x6666666666666666, %rdi\n"
	"mov $0x7777777777777777, %rbp\n"
	"mov $0x8888888888888888, %r8\n"
	"mov $0x9999999999999999, %r9\n"
	"mov $0xaaaaaaaaaaaaaaaa, %r10\n"
	"mov $0xbbbbbbbbbbbbbbbb, %r11\n"
	"mov $0xcccccccccccccccc, %r12\n"
	"mov $0xdddddddddddddddd, %r13\n"
	"mov $0xeeeeeeeeeeeeeeee, %r14\n"
	"mov $0xffffffffffffffff, %r15\n"
	"out %al, $0x80\n"
	"hlt\n");

static struct guest g;

static int first_diff(const void *a, const void *b, size_t n)
{
	const uint8_t *x = a, *y = b;
	size_t i;

	for (i = 0; i < n; i++)
		if (x[i] != y[i])
			return i;
	return -1;
}

/* One check: GET -> SET -> GET returns 0, 0, 0 and identical bytes. */
static void round_trip(const char *name, unsigned long get, unsigned long set, size_t size)
{
	uint8_t *a = malloc(size), *b = malloc(size);
	struct ioctl_res r1, r2, r3;
	int d;

	memset(a, 0x5a, size);
	memset(b, 0xa5, size);
	r1 = do_ioctl(g.v.fd, get, (unsigned long)a);
	r2 = do_ioctl(g.v.fd, set, (unsigned long)a);
	r3 = do_ioctl(g.v.fd, get, (unsigned long)b);
	d = first_diff(a, b, size);
	tap_ok(!r1.r && !r2.r && !r3.r && d < 0,
	       "%s: GET (%s) -> SET (%s) -> GET (%s) gives identical bytes (first difference at "
	       "byte %d of %zu)", name, res_str(r1), res_str(r2), res_str(r3), d, size);
	free(a);
	free(b);
}

/* One check: SET of WANT -> 0, then GET returns exactly WANT (SIZE bytes). */
static void set_get(const char *name, unsigned long get, unsigned long set, const void *want,
		    size_t size)
{
	uint8_t *b = malloc(size);
	struct ioctl_res r1, r2;
	int d;

	memset(b, 0xa5, size);
	r1 = do_ioctl(g.v.fd, set, (unsigned long)want);
	r2 = do_ioctl(g.v.fd, get, (unsigned long)b);
	d = first_diff(want, b, size);
	tap_ok(!r1.r && !r2.r && d < 0, "%s: SET (%s) then GET (%s) returns the values set (first "
	       "difference at byte %d)", name, res_str(r1), res_str(r2), d);
	free(b);
}

/* One check: SET of BAD -> -1/EINVAL and GET still returns BEFORE. */
static void set_bad(const char *name, unsigned long get, unsigned long set, const void *bad,
		    const void *before, size_t size)
{
	uint8_t *b = malloc(size);
	struct ioctl_res r1, r2;
	int d;

	memset(b, 0xa5, size);
	r1 = do_ioctl(g.v.fd, set, (unsigned long)bad);
	r2 = do_ioctl(g.v.fd, get, (unsigned long)b);
	d = first_diff(before, b, size);
	tap_ok(r1.r == -1 && r1.err == EINVAL && !r2.r && d < 0,
	       "%s -> -1/EINVAL (got %s), state unchanged (first difference at byte %d)", name,
	       res_str(r1), d);
	free(b);
}

static void regs(void)
{
	struct kvm_regs r, want;

	round_trip("REGS", KVM_GET_REGS, KVM_SET_REGS, sizeof(r));
	vcpu_get_regs(&g.v, &r);
	tap_ok(r.rax == 0x1111111111111111ull && r.r15 == ~0ull && r.rip == GUEST_ADDR(WORK_GPA,
	       state_guest, state_guest_end), "REGS: the guest's rax %#llx r15 %#llx, RIP %#llx at "
	       "the end of its code", (unsigned long long)r.rax, (unsigned long long)r.r15,
	       (unsigned long long)r.rip);
	for (int i = 0; i < 16; i++)
		((uint64_t *)&want)[i] = 0x0101010101010101ull * (i + 1) ^ 0x8000000000000000ull;
	want.rip = WORK_GPA + 0x123;
	want.rflags = 0x2 | 0x1 | 0x40 | 0x800;	/* CF ZF OF */
	set_get("REGS: distinct GPRs, RIP, RFLAGS CF|ZF|OF", KVM_GET_REGS, KVM_SET_REGS, &want,
		sizeof(want));
	want.rflags = 0;
	if (ioctl(g.v.fd, KVM_SET_REGS, &want))
		BAIL("KVM_SET_REGS");
	vcpu_get_regs(&g.v, &r);
	tap_ok(r.rflags == 2, "REGS: RFLAGS 0 reads back as 2 (bit 1 is fixed; got %#llx)",
	       (unsigned long long)r.rflags);
}

static void sregs(void)
{
	struct kvm_sregs s, want, bad;

	round_trip("SREGS", KVM_GET_SREGS, KVM_SET_SREGS, sizeof(s));
	vcpu_get_sregs(&g.v, &s);
	want = s;
	want.fs.base = 0x00007f1234560000ull;
	want.gs.base = 0xffff888123450000ull;
	want.es.selector = 0;
	want.idt.base = 0x3000;
	want.idt.limit = 0xfff;
	want.gdt.limit = 0x37;
	want.cr2 = 0xdeadb000;
	want.cr8 = 5;
	want.cr0 |= CR0_WP;
	want.cr4 |= 1ull << 7;		/* PGE */
	set_get("SREGS: FS/GS bases, IDT, GDT limit, CR2, CR8, CR0.WP, CR4.PGE", KVM_GET_SREGS,
		KVM_SET_SREGS, &want, sizeof(want));

	bad = want;
	bad.cr0 &= ~CR0_PE;
	set_bad("SREGS: CR0.PG without CR0.PE", KVM_GET_SREGS, KVM_SET_SREGS, &bad, &want,
		sizeof(want));
	bad = want;
	bad.cr0 |= 1ull << 29;		/* NW */
	bad.cr0 &= ~(1ull << 30);	/* CD */
	set_bad("SREGS: CR0.NW without CR0.CD", KVM_GET_SREGS, KVM_SET_SREGS, &bad, &want,
		sizeof(want));
	bad = want;
	bad.cr0 |= 1ull << 32;
	set_bad("SREGS: CR0 bit 32", KVM_GET_SREGS, KVM_SET_SREGS, &bad, &want, sizeof(want));
	bad = want;
	bad.cr4 &= ~CR4_PAE;
	set_bad("SREGS: EFER.LME and CR0.PG without CR4.PAE", KVM_GET_SREGS, KVM_SET_SREGS, &bad,
		&want, sizeof(want));
}

/* 32-bit PAE paging: the PDPTRs. */
static void sregs2(void)
{
	struct kvm_sregs2 s, want, bad;
	uint64_t *pdpt = (uint64_t *)(g.mem + PDPT_GPA);
	struct kvm_sregs v1;
	int i;

	round_trip("SREGS2 (64-bit mode)", KVM_GET_SREGS2, KVM_SET_SREGS2, sizeof(s));
	if (ioctl(g.v.fd, KVM_GET_SREGS2, &s))
		BAIL("KVM_GET_SREGS2");
	tap_ok(s.flags == 0, "SREGS2 in 64-bit mode: flags %#llx (want 0: no PDPTRs)",
	       (unsigned long long)s.flags);
	bad = s;
	bad.flags = 2;
	set_bad("SREGS2 with unknown flag 2", KVM_GET_SREGS2, KVM_SET_SREGS2, &bad, &s, sizeof(s));
	bad = s;
	bad.flags = KVM_SREGS2_FLAGS_PDPTRS_VALID;
	bad.pdptrs[0] = 0x5001;
	set_bad("SREGS2 with PDPTRS_VALID in 64-bit mode", KVM_GET_SREGS2, KVM_SET_SREGS2, &bad,
		&s, sizeof(s));

	for (i = 0; i < 4; i++)
		pdpt[i] = (GUEST_PD_GPA + i * 0x1000) | 1;
	want = s;
	want.cs = seg_code32();
	want.cr0 = CR0_PE | CR0_ET | CR0_NE | CR0_PG;
	want.cr4 = CR4_PAE;
	want.cr3 = PDPT_GPA;
	want.efer = 0;
	want.flags = 0;
	memset(want.pdptrs, 0, sizeof(want.pdptrs));
	if (ioctl(g.v.fd, KVM_SET_SREGS2, &want))
		BAIL("KVM_SET_SREGS2 (PAE paging)");
	if (ioctl(g.v.fd, KVM_GET_SREGS2, &s))
		BAIL("KVM_GET_SREGS2");
	tap_ok(s.flags == KVM_SREGS2_FLAGS_PDPTRS_VALID && s.pdptrs[0] == pdpt[0] &&
		       s.pdptrs[1] == pdpt[1] && s.pdptrs[2] == pdpt[2] && s.pdptrs[3] == pdpt[3],
	       "SREGS2 into PAE paging without PDPTRS_VALID: GET has flags %#llx (want 1) and the "
	       "PDPTEs at CR3 %#llx %#llx %#llx %#llx", (unsigned long long)s.flags,
	       (unsigned long long)s.pdptrs[0], (unsigned long long)s.pdptrs[1],
	       (unsigned long long)s.pdptrs[2], (unsigned long long)s.pdptrs[3]);
	want = s;
	for (i = 0; i < 4; i++)
		want.pdptrs[i] = 0x20001 + i * 0x1000;
	set_get("SREGS2 with PDPTRS_VALID and other PDPTRs than in memory", KVM_GET_SREGS2,
		KVM_SET_SREGS2, &want, sizeof(want));
	round_trip("SREGS2 (PAE paging)", KVM_GET_SREGS2, KVM_SET_SREGS2, sizeof(s));
	vcpu_get_sregs(&g.v, &v1);
	vcpu_set_sregs(&g.v, &v1);
	if (ioctl(g.v.fd, KVM_GET_SREGS2, &s))
		BAIL("KVM_GET_SREGS2");
	tap_ok(s.flags == KVM_SREGS2_FLAGS_PDPTRS_VALID && s.pdptrs[0] == pdpt[0] &&
		       s.pdptrs[3] == pdpt[3],
	       "KVM_SET_SREGS (v1) in PAE paging reloads the PDPTRs from memory (%#llx, want %#llx)",
	       (unsigned long long)s.pdptrs[0], (unsigned long long)pdpt[0]);
}

static void fpu_xsave(void)
{
	struct kvm_fpu f, want;
	struct kvm_xsave *x, *xw, *bad;
	uint8_t *xmm = g.mem + XMM_GPA;
	long xsave2;
	int i;

	round_trip("FPU", KVM_GET_FPU, KVM_SET_FPU, sizeof(f));
	if (ioctl(g.v.fd, KVM_GET_FPU, &f))
		BAIL("KVM_GET_FPU");
	tap_ok(!memcmp(f.xmm[0], xmm, 16 * 9) && !memcmp(f.xmm[15], xmm + 0xf0, 16) &&
		       (f.fsw >> 11 & 7) == 5 && f.fcw == 0x37f,
	       "FPU: the guest's XMM0-8 and XMM15, FCW %#x (want 0x37f after fninit), TOP %u (want "
	       "5: three loads)", f.fcw, f.fsw >> 11 & 7);
	want = f;
	for (i = 0; i < 16; i++)
		memset(want.xmm[i], 0x10 + i, 16);
	for (i = 0; i < 8; i++) {
		memset(want.fpr[i], 0, 16);
		want.fpr[i][7] = 0x80;		/* 1.0 * 2^(i) as 80-bit extended */
		want.fpr[i][8] = i;
		want.fpr[i][9] = 0x3f;
	}
	want.fcw = 0x27f;
	want.fsw = 0x3800;
	want.ftwx = 0xff;
	want.last_opcode = 0x5d9;
	want.last_ip = 0x1234;
	want.last_dp = 0x5678;
	want.mxcsr = 0;
	want.pad1 = 0;
	want.pad2 = 0;
	set_get("FPU: x87 registers, FCW, FSW, FTW, FOP, FIP, FDP, XMM0-15", KVM_GET_FPU,
		KVM_SET_FPU, &want, sizeof(want));

	if (ioctl(g.vm.sys_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE) <= 0) {
		for (i = 0; i < 8; i++)
			tap_ok(1, "# SKIP no KVM_CAP_XSAVE");
		return;
	}
	x = calloc(1, sizeof(*x));
	xw = calloc(1, sizeof(*x));
	bad = calloc(1, sizeof(*x));
	if (ioctl(g.v.fd, KVM_GET_XSAVE, x))
		BAIL("KVM_GET_XSAVE");
	tap_ok(!memcmp((uint8_t *)x->region + 160, want.xmm, 256) &&
		       (x->region[128] & 3) == 3,
	       "XSAVE: the legacy area holds the XMM registers set with KVM_SET_FPU, XSTATE_BV "
	       "%#x has x87|SSE", x->region[128]);
	round_trip("XSAVE", KVM_GET_XSAVE, KVM_SET_XSAVE, sizeof(*x));
	*xw = *x;
	for (i = 0; i < 256; i++)
		((uint8_t *)xw->region)[160 + i] = i;
	xw->region[0] = (xw->region[0] & 0xffff0000) | 0x37f;	/* FCW */
	xw->region[128] |= 3;			/* XSTATE_BV: x87, SSE */
	set_get("XSAVE: XMM0-15 and FCW in the legacy area", KVM_GET_XSAVE, KVM_SET_XSAVE, xw,
		sizeof(*xw));
	if (ioctl(g.v.fd, KVM_GET_FPU, &f))
		BAIL("KVM_GET_FPU");
	tap_ok(!memcmp(f.xmm, (uint8_t *)xw->region + 160, 256) && f.fcw == 0x37f,
	       "FPU: KVM_GET_FPU shows the XMM registers and FCW set with KVM_SET_XSAVE");

	*bad = *xw;
	bad->region[129] = 0x80000000;		/* XSTATE_BV bit 63 */
	set_bad("XSAVE with XSTATE_BV bit 63", KVM_GET_XSAVE, KVM_SET_XSAVE, bad, xw, sizeof(*x));
	*bad = *xw;
	bad->region[134] = 1;			/* header reserved bytes (offset 536) */
	set_bad("XSAVE with a reserved header byte set", KVM_GET_XSAVE, KVM_SET_XSAVE, bad, xw,
		sizeof(*x));
	*bad = *xw;
	bad->region[6] = 0xffff0000 | 0x1f80;	/* MXCSR reserved bits */
	set_bad("XSAVE with MXCSR reserved bits", KVM_GET_XSAVE, KVM_SET_XSAVE, bad, xw,
		sizeof(*x));

	xsave2 = ioctl(g.vm.fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
	if (xsave2 < (long)sizeof(*x)) {
		tap_ok(1, "# SKIP KVM_CAP_XSAVE2 is %ld", xsave2);
	} else {
		uint8_t *b = malloc(xsave2 + 64);

		memset(b, 0xa5, xsave2 + 64);
		i = ioctl(g.v.fd, KVM_GET_XSAVE2, b);
		tap_ok(!i && !memcmp(b, xw, sizeof(*x)) && b[xsave2] == 0xa5 &&
			       b[xsave2 + 63] == 0xa5,
		       "XSAVE2: KVM_GET_XSAVE2 writes KVM_CAP_XSAVE2 = %ld bytes, the first 4096 as "
		       "KVM_GET_XSAVE's", xsave2);
		free(b);
	}
}

static void xcrs(void)
{
	struct kvm_xcrs x, want, bad;
	struct kvm_cpuid_entry2 *e;
	struct kvm_cpuid2 *c;
	uint64_t supported = 0;
	uint32_t i;

	if (ioctl(g.vm.sys_fd, KVM_CHECK_EXTENSION, KVM_CAP_XCRS) <= 0) {
		for (i = 0; i < 10; i++)
			tap_ok(1, "# SKIP no KVM_CAP_XCRS");
		return;
	}
	c = supported_cpuid(g.vm.sys_fd);
	for (i = 0; i < c->nent; i++) {
		e = &c->entries[i];
		if (e->function == 0xd && e->index == 0)
			supported = e->eax | (uint64_t)e->edx << 32;
	}
	free(c);
	round_trip("XCRS", KVM_GET_XCRS, KVM_SET_XCRS, sizeof(x));
	if (ioctl(g.v.fd, KVM_GET_XCRS, &x))
		BAIL("KVM_GET_XCRS");
	tap_ok(x.nr_xcrs == 1 && x.flags == 0 && x.xcrs[0].xcr == 0 && (x.xcrs[0].value & 1),
	       "XCRS: one XCR, XCR0 = %#llx (x87 set)", (unsigned long long)x.xcrs[0].value);
	want = x;
	want.xcrs[0].value = 3;
	set_get("XCRS: XCR0 = x87|SSE", KVM_GET_XCRS, KVM_SET_XCRS, &want, sizeof(want));
	if (supported & 4) {
		want.xcrs[0].value = 7;
		set_get("XCRS: XCR0 = x87|SSE|AVX", KVM_GET_XCRS, KVM_SET_XCRS, &want, sizeof(want));
	} else {
		tap_ok(1, "# SKIP no AVX in CPUID 0xD");
	}
	bad = want;
	bad.xcrs[0].value = 2;
	set_bad("XCRS: XCR0 without x87", KVM_GET_XCRS, KVM_SET_XCRS, &bad, &want, sizeof(want));
	bad = want;
	bad.xcrs[0].value = 5;
	set_bad("XCRS: XCR0 with AVX but not SSE", KVM_GET_XCRS, KVM_SET_XCRS, &bad, &want,
		sizeof(want));
	bad = want;
	bad.xcrs[0].value = 3 | 1ull << 62;
	set_bad("XCRS: XCR0 bit 62 (unsupported)", KVM_GET_XCRS, KVM_SET_XCRS, &bad, &want,
		sizeof(want));
	bad = want;
	bad.flags = 1;
	set_bad("XCRS: flags 1", KVM_GET_XCRS, KVM_SET_XCRS, &bad, &want, sizeof(want));
	bad = want;
	bad.nr_xcrs = KVM_MAX_XCRS + 1;
	set_bad("XCRS: nr_xcrs 17", KVM_GET_XCRS, KVM_SET_XCRS, &bad, &want, sizeof(want));
	want.xcrs[0].value = 1;
	set_get("XCRS: XCR0 = x87", KVM_GET_XCRS, KVM_SET_XCRS, &want, sizeof(want));
}

static void debugregs(void)
{
	struct kvm_debugregs d, want, bad;

	round_trip("DEBUGREGS", KVM_GET_DEBUGREGS, KVM_SET_DEBUGREGS, sizeof(d));
	memset(&want, 0, sizeof(want));
	want.db[0] = 0x1000;
	want.db[1] = 0x2008;
	want.db[2] = 0xffffffff81000000ull;
	want.db[3] = 0x7fff0000;
	want.dr6 = 0xffff0ff1;
	want.dr7 = 0x00000403;
	set_get("DEBUGREGS: DR0-3, DR6 B0, DR7 L0|G0", KVM_GET_DEBUGREGS, KVM_SET_DEBUGREGS, &want,
		sizeof(want));
	bad = want;
	bad.dr7 |= 1ull << 32;
	set_bad("DEBUGREGS: DR7 bit 32", KVM_GET_DEBUGREGS, KVM_SET_DEBUGREGS, &bad, &want,
		sizeof(want));
	bad = want;
	bad.dr6 |= 1ull << 40;
	set_bad("DEBUGREGS: DR6 bit 40", KVM_GET_DEBUGREGS, KVM_SET_DEBUGREGS, &bad, &want,
		sizeof(want));
	bad = want;
	bad.flags = 1;
	set_bad("DEBUGREGS: flags 1", KVM_GET_DEBUGREGS, KVM_SET_DEBUGREGS, &bad, &want,
		sizeof(want));
	want.dr7 = 0x400;
	want.dr6 = 0xffff0ff0;
	set_get("DEBUGREGS: DR7 and DR6 back to their reset values", KVM_GET_DEBUGREGS,
		KVM_SET_DEBUGREGS, &want, sizeof(want));
}

static int ev_ok;

/* SET_VCPU_EVENTS(E), GET_VCPU_EVENTS(GOT); ev_ok says both returned 0. */
static void ev_set_get(struct kvm_vcpu_events *e, struct kvm_vcpu_events *got)
{
	struct ioctl_res r1, r2;

	memset(got, 0, sizeof(*got));
	r1 = do_ioctl(g.v.fd, KVM_SET_VCPU_EVENTS, (unsigned long)e);
	r2 = do_ioctl(g.v.fd, KVM_GET_VCPU_EVENTS, (unsigned long)got);
	ev_ok = !r1.r && !r2.r;
	if (!ev_ok)
		tap_diag("KVM_SET_VCPU_EVENTS %s, KVM_GET_VCPU_EVENTS %s", res_str(r1), res_str(r2));
}

/* One check: SET of BASE with NMI_PENDING and SHADOW valid, then GET returns BASE. */
static void restore_events(const struct kvm_vcpu_events *base)
{
	struct kvm_vcpu_events rst = *base, got;
	int d;

	rst.flags |= KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SHADOW;
	ev_set_get(&rst, &got);
	d = first_diff(base, &got, sizeof(got));
	tap_ok(ev_ok && d < 0, "VCPU_EVENTS: back to nothing pending (SET with NMI_PENDING and SHADOW "
	       "valid), GET returns the first GET's bytes (first difference at byte %d)", d);
}

static void events(void)
{
	struct kvm_vcpu_events base, e, got, bad;

	round_trip("VCPU_EVENTS", KVM_GET_VCPU_EVENTS, KVM_SET_VCPU_EVENTS, sizeof(e));
	if (ioctl(g.v.fd, KVM_GET_VCPU_EVENTS, &base))
		BAIL("KVM_GET_VCPU_EVENTS");
	tap_ok(!base.exception.injected && !base.interrupt.injected && !base.nmi.pending &&
		       !base.nmi.masked && (base.flags & KVM_VCPUEVENT_VALID_NMI_PENDING) &&
		       (base.flags & KVM_VCPUEVENT_VALID_SHADOW),
	       "VCPU_EVENTS: nothing pending, flags %#x report NMI_PENDING and SHADOW", base.flags);

	e = base;
	e.exception.injected = 1;
	e.exception.nr = 13;
	e.exception.has_error_code = 1;
	e.exception.error_code = 0x18;
	ev_set_get(&e, &got);
	tap_ok(ev_ok && got.exception.injected && got.exception.nr == 13 &&
		       got.exception.has_error_code && got.exception.error_code == 0x18,
	       "VCPU_EVENTS: an injected #GP(0x18) comes back (injected %u nr %u has_error_code %u "
	       "error_code %#x)", got.exception.injected, got.exception.nr,
	       got.exception.has_error_code, got.exception.error_code);
	restore_events(&base);

	e = base;
	e.interrupt.injected = 1;
	e.interrupt.nr = 0x41;
	e.interrupt.shadow = KVM_X86_SHADOW_INT_MOV_SS;
	e.flags |= KVM_VCPUEVENT_VALID_SHADOW;
	ev_set_get(&e, &got);
	tap_ok(ev_ok && got.interrupt.injected && got.interrupt.nr == 0x41 &&
		       (got.interrupt.shadow & KVM_X86_SHADOW_INT_MOV_SS),
	       "VCPU_EVENTS: an injected interrupt 0x41 and a MOV SS shadow come back (injected %u "
	       "nr %#x shadow %u: AMD has one shadow bit and reports it as MOV SS|STI)", got.interrupt.injected, got.interrupt.nr, got.interrupt.shadow);
	restore_events(&base);

	e = base;
	e.flags |= KVM_VCPUEVENT_VALID_NMI_PENDING;
	e.nmi.pending = 1;
	e.nmi.masked = 1;
	ev_set_get(&e, &got);
	tap_ok(ev_ok && got.nmi.pending == 1 && got.nmi.masked == 1 && !got.nmi.injected,
	       "VCPU_EVENTS: a pending NMI, NMIs masked come back (pending %u masked %u injected %u)",
	       got.nmi.pending, got.nmi.masked, got.nmi.injected);
	restore_events(&base);

	bad = base;
	bad.flags |= 0x8000;
	set_bad("VCPU_EVENTS: unknown flag 0x8000", KVM_GET_VCPU_EVENTS, KVM_SET_VCPU_EVENTS, &bad,
		&base, sizeof(base));
	bad = base;
	bad.flags |= KVM_VCPUEVENT_VALID_PAYLOAD;
	set_bad("VCPU_EVENTS: VALID_PAYLOAD without KVM_CAP_EXCEPTION_PAYLOAD", KVM_GET_VCPU_EVENTS,
		KVM_SET_VCPU_EVENTS, &bad, &base, sizeof(base));
	bad = base;
	bad.exception.injected = 1;
	bad.exception.nr = 2;
	set_bad("VCPU_EVENTS: injected exception 2 (NMI)", KVM_GET_VCPU_EVENTS, KVM_SET_VCPU_EVENTS,
		&bad, &base, sizeof(base));
	bad = base;
	bad.exception.injected = 1;
	bad.exception.nr = 32;
	set_bad("VCPU_EVENTS: injected exception 32", KVM_GET_VCPU_EVENTS, KVM_SET_VCPU_EVENTS, &bad,
		&base, sizeof(base));
}

static void mp_state(void)
{
	struct kvm_mp_state m = { 0 }, run = { KVM_MP_STATE_RUNNABLE }, bad;

	round_trip("MP_STATE", KVM_GET_MP_STATE, KVM_SET_MP_STATE, sizeof(m));
	if (ioctl(g.v.fd, KVM_GET_MP_STATE, &m))
		BAIL("KVM_GET_MP_STATE");
	tap_ok(m.mp_state == KVM_MP_STATE_RUNNABLE, "MP_STATE: the BSP is RUNNABLE (got %u)",
	       m.mp_state);
	bad.mp_state = KVM_MP_STATE_HALTED;
	set_bad("MP_STATE: HALTED without an in-kernel irqchip", KVM_GET_MP_STATE, KVM_SET_MP_STATE,
		&bad, &run, sizeof(run));
	bad.mp_state = KVM_MP_STATE_UNINITIALIZED;
	set_bad("MP_STATE: UNINITIALIZED without an in-kernel irqchip", KVM_GET_MP_STATE,
		KVM_SET_MP_STATE, &bad, &run, sizeof(run));
	bad.mp_state = 99;
	set_bad("MP_STATE: 99", KVM_GET_MP_STATE, KVM_SET_MP_STATE, &bad, &run, sizeof(run));
}

int main(void)
{
	int i;

	test_watchdog(60);
	g = guest_create();
	REQUIRE_CAP(g.vm.sys_fd, KVM_CAP_DEBUGREGS);
	REQUIRE_CAP(g.vm.sys_fd, KVM_CAP_VCPU_EVENTS);
	REQUIRE_CAP(g.vm.sys_fd, KVM_CAP_SREGS2);
	REQUIRE_CAP(g.vm.sys_fd, KVM_CAP_MP_STATE);
	tap_plan(1 + 4 + 6 + 11 + 10 + 6 + 12 + 5 + 8);

	for (i = 0; i < 256; i++)
		g.mem[XMM_GPA + i] = 0x80 + i;
	guest_load(g.mem, WORK_GPA, state_guest);
	vcpu_set_long_mode(&g.v, g.mem, WORK_GPA, GUEST_STACK_TOP);
	vcpu_run(&g.v);
	if (!is_out(&g.v, 0x80, 1))
		BAIL("guest: %s", exit_str(&g.v));
	vcpu_run(&g.v);
	tap_ok(g.v.run->exit_reason == KVM_EXIT_HLT, "the guest set up its state and halted (%s)",
	       exit_str(&g.v));

	regs();
	sregs();
	fpu_xsave();
	xcrs();
	debugregs();
	events();
	mp_state();
	sregs2();
	tap_done();
}

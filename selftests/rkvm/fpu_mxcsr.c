// SPDX-License-Identifier: GPL-2.0
/*
 * MXCSR and the XSAVE header from userspace must never reach XRSTOR unchecked
 * (arch/x86/kvm/x86.c kvm_arch_vcpu_ioctl_set_fpu, kvm_vcpu_ioctl_x86_set_xsave;
 * arch/x86/kernel/fpu/xstate.c copy_uabi_to_xstate, validate_user_xstate_header).
 *
 * A 64-bit guest stores its MXCSR and OUTs it. Checks:
 *  - KVM_SET_FPU with mxcsr 0xffffffff succeeds and is ignored: KVM_GET_XSAVE still shows
 *    the old MXCSR (KVM_GET_FPU's mxcsr is always 0: KVM never fills it in), and the
 *    guest runs and reads the old MXCSR;
 *  - KVM_SET_XSAVE -> EINVAL for: XCOMP_BV bit 63 (compacted format), XCOMP_BV bit 0, a
 *    reserved header byte (the last one), MXCSR 0xffffffff with x87|SSE in XSTATE_BV,
 *    MXCSR with SSE only, MXCSR with a bit outside the CPU's MXCSR_MASK but within 0xffff
 *    (only when the CPU has such a bit); the guest runs after each;
 *  - KVM_SET_XSAVE with XSTATE_BV 0 and MXCSR 0xffffffff succeeds (the kernel loads MXCSR
 *    only with x87, SSE or AVX state) and keeps the old MXCSR, which the guest reads;
 *  - KVM_SET_XSAVE with MXCSR 0x7f80 (valid) and x87|SSE: the guest reads 0x7f80.
 */
#include "lib/rkvm_test.h"

#define P_MXCSR 0xc0

GUEST_CODE(mxcsr_guest, 64,
	"1: sub $8, %rsp\n"
	"stmxcsr (%rsp)\n"
	"mov (%rsp), %eax\n"
	"add $8, %rsp\n"
	"out %eax, $" XSTR(P_MXCSR) "\n"
	"jmp 1b\n");

static struct guest g;

/* Runs the guest once; returns the MXCSR it reports, or -1 after any other exit. */
static int64_t guest_mxcsr(void)
{
	vcpu_run(&g.v);
	if (!is_out(&g.v, P_MXCSR, 4)) {
		tap_diag("unexpected exit: %s", exit_str(&g.v));
		return -1;
	}
	return (uint32_t)io_out_value(&g.v);
}

/* The host's MXCSR_MASK as FXSAVE reports it (0 means 0xffbf). */
static uint32_t host_mxcsr_mask(void)
{
	uint8_t area[512] __attribute__((aligned(16)));
	uint32_t m;

	memset(area, 0, sizeof(area));
	__asm__ volatile("fxsave %0" : "=m"(area));
	memcpy(&m, area + 28, 4);
	return m ? m : 0xffbf;
}

static void xsave_bad(struct kvm_xsave *base, const char *what, void (*mod)(struct kvm_xsave *))
{
	struct kvm_xsave *x = malloc(sizeof(*x));
	int64_t m;

	if (!x)
		BAIL("malloc");
	*x = *base;
	mod(x);
	CHECK_ERRNO(g.v.fd, KVM_SET_XSAVE, x, EINVAL, "KVM_SET_XSAVE with %s", what);
	m = guest_mxcsr();
	tap_ok(m == (base->region[6]), "then the guest runs with the old MXCSR (%#llx, want %#x)",
	       (long long)m, base->region[6]);
	free(x);
}

static void xcomp_bv63(struct kvm_xsave *x) { x->region[131] = 0x80000000; }
static void xcomp_bv0(struct kvm_xsave *x) { x->region[130] = 1; }
static void hdr_last(struct kvm_xsave *x) { ((uint8_t *)x->region)[575] = 1; }
static void mxcsr_all(struct kvm_xsave *x) { x->region[6] = 0xffffffff; x->region[128] |= 3; }
static void mxcsr_sse(struct kvm_xsave *x)
{
	x->region[6] = 0x10000 | 0x1f80;
	x->region[128] = 2;
	x->region[129] = 0;
}

static uint32_t odd_bit;
static void mxcsr_odd(struct kvm_xsave *x) { x->region[6] = 0x1f80 | odd_bit; x->region[128] |= 3; }

int main(void)
{
	struct kvm_xsave *x, *w;
	struct kvm_fpu f;
	uint32_t mask;
	int64_t m;
	int i;

	test_watchdog(120);
	tap_plan(22);
	g = guest_create();
	guest_load(g.mem, GUEST_CODE_GPA, mxcsr_guest);
	vcpu_set_long_mode(&g.v, g.mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
	if (ioctl(g.vm.sys_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE) <= 0)
		tap_skip_all("KVM_CAP_XSAVE not advertised by the device");
	x = calloc(1, sizeof(*x));
	w = calloc(1, sizeof(*w));
	if (!x || !w)
		BAIL("calloc");

	m = guest_mxcsr();
	tap_ok(m == 0x1f80, "the guest starts with MXCSR 0x1f80 (%#llx)", (long long)m);

	/* KVM_SET_FPU's mxcsr is ignored. */
	if (ioctl(g.v.fd, KVM_GET_FPU, &f))
		BAIL("KVM_GET_FPU");
	f.mxcsr = 0xffffffff;
	CHECK_RET(g.v.fd, KVM_SET_FPU, &f, 0, "KVM_SET_FPU with mxcsr 0xffffffff");
	if (ioctl(g.v.fd, KVM_GET_FPU, &f))
		BAIL("KVM_GET_FPU");
	tap_ok(f.mxcsr == 0, "KVM_GET_FPU: mxcsr %#x (0: KVM never fills it in)", f.mxcsr);
	if (ioctl(g.v.fd, KVM_GET_XSAVE, x))
		BAIL("KVM_GET_XSAVE");
	tap_ok(x->region[6] == 0x1f80, "KVM_GET_XSAVE: MXCSR still 0x1f80 (%#x)", x->region[6]);
	m = guest_mxcsr();
	tap_ok(m == 0x1f80, "KVM_RUN after it: the guest reads MXCSR 0x1f80 (%#llx)", (long long)m);

	/* Bad XSAVE headers and MXCSR values. */
	if (ioctl(g.v.fd, KVM_GET_XSAVE, x))
		BAIL("KVM_GET_XSAVE");
	xsave_bad(x, "XCOMP_BV bit 63 (compacted format)", xcomp_bv63);
	xsave_bad(x, "XCOMP_BV bit 0", xcomp_bv0);
	xsave_bad(x, "the last reserved header byte set", hdr_last);
	xsave_bad(x, "MXCSR 0xffffffff and x87|SSE state", mxcsr_all);
	xsave_bad(x, "MXCSR bit 16 and SSE state only", mxcsr_sse);
	mask = host_mxcsr_mask();
	for (i = 0; i < 16 && !odd_bit; i++)
		if (!(mask & (1u << i)))
			odd_bit = 1u << i;
	if (odd_bit) {
		char what[80];

		snprintf(what, sizeof(what), "MXCSR bit %#x outside MXCSR_MASK %#x", odd_bit, mask);
		xsave_bad(x, what, mxcsr_odd);
	} else {
		tap_ok(1, "# SKIP MXCSR_MASK %#x has every bit of 0xffff", mask);
		tap_ok(1, "# SKIP");
	}

	/* Without x87, SSE or AVX state MXCSR is not taken. */
	*w = *x;
	w->region[6] = 0xffffffff;
	w->region[128] = 0;
	w->region[129] = 0;
	CHECK_RET(g.v.fd, KVM_SET_XSAVE, w, 0,
		  "KVM_SET_XSAVE with XSTATE_BV 0 and MXCSR 0xffffffff (MXCSR not taken)");
	if (ioctl(g.v.fd, KVM_GET_XSAVE, w))
		BAIL("KVM_GET_XSAVE");
	tap_ok(w->region[6] == 0x1f80, "KVM_GET_XSAVE: MXCSR still 0x1f80 (%#x)", w->region[6]);
	m = guest_mxcsr();
	tap_ok(m == 0x1f80, "the guest reads MXCSR 0x1f80 (%#llx)", (long long)m);

	/* A valid MXCSR is taken. */
	*w = *x;
	w->region[6] = 0x7f80;
	w->region[128] |= 3;
	CHECK_RET(g.v.fd, KVM_SET_XSAVE, w, 0, "KVM_SET_XSAVE with MXCSR 0x7f80 and x87|SSE");
	m = guest_mxcsr();
	tap_ok(m == 0x7f80, "the guest reads MXCSR 0x7f80 (%#llx)", (long long)m);

	guest_destroy(&g);
	tap_done();
}

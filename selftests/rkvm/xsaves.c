// SPDX-License-Identifier: GPL-2.0
/*
 * XSAVES and IA32_XSS (arch/x86/kvm/msrs.c MSR_IA32_XSS, x86.c kvm_load_guest_xsave_state;
 * tools/testing/selftests/kvm/x86/xss_msr_test.c). Without CET no supervisor state
 * component is supported, so IA32_XSS holds 0; when the CPU has XSAVES it is offered
 * (CPUID.0xD.1:EAX bit 3) and runs in the guest with that IA32_XSS loaded, whatever the
 * host's own value is.
 *
 * Checks, when KVM_GET_SUPPORTED_CPUID offers XSAVES (else all skipped):
 *  - KVM_GET_MSRS(IA32_XSS) reads 0; KVM_SET_MSRS of 0 is taken;
 *  - KVM_SET_MSRS of each single bit 0..63 is refused (0 entries processed), unless
 *    the bit is supported, and then IA32_XSS is in KVM_GET_MSR_INDEX_LIST;
 *  - the guest (long mode, CPUID as supported) sees XSAVES in CPUID, reads IA32_XSS as
 *    0, takes #GP on WRMSR(IA32_XSS) of bit 11 (CET user state) and of bit 0 (x87, never
 *    a supervisor component);
 *  - the guest's XSAVES of every component (EDX:EAX all ones) with XCR0 = x87|SSE writes
 *    the compacted format with XCOMP_BV bit 63 and exactly x87|SSE (no supervisor
 *    component: the host's IA32_XSS is not the guest's), and XRSTORS of that area works;
 *  - with every supported component in XCR0, CPUID.0xD.1:EBX is their compacted size;
 *  - with XSAVES taken out of the guest's CPUID: KVM_SET_MSRS(IA32_XSS, 0) is refused
 *    and the guest's XSAVES raises #UD.
 */
#include "lib/rkvm_test.h"

#define P_VAL 0x90
#define P_MARK 0x91
#define P_GP 0x98
#define MSR_IA32_XSS 0xda0
#define AREA_GPA 0x40000
#define XCR0_GPA 0x42000

#define MARK(n) "mov $" #n ", %al\nout %al, $" XSTR(P_MARK) "\n"
#define OUT_EAX "out %eax, $" XSTR(P_VAL) "\n"

GUEST_CODE(xs_guest, 64,
	"mov $0xd, %eax\n"
	"mov $1, %ecx\n"
	"cpuid\n"
	OUT_EAX
	/* CR4.OSXSAVE, XCR0 = x87|SSE. */
	"mov %cr4, %rax\n"
	"or $0x40000, %rax\n"
	"mov %rax, %cr4\n"
	"xor %ecx, %ecx\n"
	"mov $3, %eax\n"
	"xor %edx, %edx\n"
	"xsetbv\n"
	"mov $" XSTR(MSR_IA32_XSS) ", %ecx\n"
	"rdmsr\n"
	OUT_EAX
	"mov $" XSTR(MSR_IA32_XSS) ", %ecx\n"
	"mov $0x800, %eax\n"
	"xor %edx, %edx\n"
	"wrmsr\n"
	MARK(1)
	"mov $" XSTR(MSR_IA32_XSS) ", %ecx\n"
	"mov $1, %eax\n"
	"xor %edx, %edx\n"
	"wrmsr\n"
	MARK(2)
	/* Every component asked for: only XCR0's and IA32_XSS's can be saved. */
	"mov $" XSTR(AREA_GPA) ", %rdi\n"
	"mov $-1, %eax\n"
	"mov $-1, %edx\n"
	"xsaves (%rdi)\n"
	"mov 0x208(%rdi), %eax\n"
	OUT_EAX
	"mov 0x20c(%rdi), %eax\n"
	OUT_EAX
	"mov $-1, %eax\n"
	"mov $-1, %edx\n"
	"xrstors (%rdi)\n"
	MARK(3)
	/* Every supported component in XCR0: CPUID.0xD.1:EBX, the compacted size. */
	"mov " XSTR(XCR0_GPA) ", %eax\n"
	"mov " XSTR(XCR0_GPA) "+4, %edx\n"
	"xor %ecx, %ecx\n"
	"xsetbv\n"
	"mov $0xd, %eax\n"
	"mov $1, %ecx\n"
	"cpuid\n"
	"mov %ebx, %eax\n"
	OUT_EAX
	"hlt\n"
	/* #GP: report it and skip the 2-byte WRMSR. */
	"xs_gp:\n"
	"add $8, %rsp\n"
	"push %rax\n"
	"mov $13, %al\n"
	"out %al, $" XSTR(P_GP) "\n"
	"pop %rax\n"
	"addq $2, (%rsp)\n"
	"iretq\n");
extern const uint8_t xs_gp[];

/* A guest whose CPUID lacks XSAVES: XSAVES raises #UD. */
GUEST_CODE(noxs_guest, 64,
	"mov %cr4, %rax\n"
	"or $0x40000, %rax\n"
	"mov %rax, %cr4\n"
	"xor %ecx, %ecx\n"
	"mov $3, %eax\n"
	"xor %edx, %edx\n"
	"xsetbv\n"
	"mov $" XSTR(AREA_GPA) ", %rdi\n"
	"xsaves (%rdi)\n"
	MARK(4)
	"hlt\n"
	"noxs_ud:\n"
	"mov $6, %al\n"
	"out %al, $" XSTR(P_GP) "\n"
	"hlt\n");
extern const uint8_t noxs_ud[];

static int in_msr_list(int sys_fd, uint32_t index)
{
	struct kvm_msr_list *l = calloc(1, sizeof(*l) + 1024 * sizeof(uint32_t));
	int found = 0;
	uint32_t i;

	if (!l)
		BAIL("calloc");
	l->nmsrs = 1024;
	if (ioctl(sys_fd, KVM_GET_MSR_INDEX_LIST, l))
		BAIL("KVM_GET_MSR_INDEX_LIST");
	for (i = 0; i < l->nmsrs; i++)
		found |= l->indices[i] == index;
	free(l);
	return found;
}

/* Runs until an OUT; returns its port and (4-byte or 1-byte) value. */
static int next_out(struct vcpu *v, uint32_t *val)
{
	vcpu_run(v);
	if (v->run->exit_reason != KVM_EXIT_IO || v->run->io.direction != KVM_EXIT_IO_OUT) {
		tap_diag("unexpected exit: %s", exit_str(v));
		return -1;
	}
	*val = v->run->io.size == 4 ? io_out_value(v) : ((uint8_t *)v->run)[v->run->io.data_offset];
	return v->run->io.port;
}

static void expect(struct vcpu *v, int port, uint32_t want, const char *what)
{
	uint32_t got = 0;
	int p = next_out(v, &got);

	tap_ok(p == port && got == want, "%s: port %#x value %#x (want %#x at %#x)", what, p, got,
	       want, port);
}

int main(void)
{
	struct kvm_cpuid2 *c;
	struct guest g;
	int i, refused = 0, listed, bad = 0;
	uint32_t xsaves = 0, compacted = 576;
	uint64_t xcr0 = 3;

	test_watchdog(120);
	tap_plan(16);
	g = guest_create();
	c = supported_cpuid(g.vm.sys_fd);
	for (i = 0; i < (int)c->nent; i++)
		if (c->entries[i].function == 0xd && c->entries[i].index == 1)
			xsaves = c->entries[i].eax & (1u << 3);
		else if (c->entries[i].function == 0xd && c->entries[i].index == 0)
			xcr0 = c->entries[i].eax | (uint64_t)c->entries[i].edx << 32;
	/* The compacted size of XCR0's components, from the sub-leaves' sizes and alignment. */
	for (i = 2; i < 64; i++) {
		int j;

		if (!(xcr0 & (1ull << i)))
			continue;
		for (j = 0; j < (int)c->nent; j++) {
			struct kvm_cpuid_entry2 *e = &c->entries[j];

			if (e->function == 0xd && e->index == (uint32_t)i) {
				if (e->ecx & 2)
					compacted = (compacted + 63) & ~63u;
				compacted += e->eax;
			}
		}
	}
	if (!xsaves)
		tap_skip_all("KVM_GET_SUPPORTED_CPUID does not offer XSAVES on this CPU");

	/* Userspace's view. */
	tap_ok(vcpu_get_msr1(&g.v, MSR_IA32_XSS) == 0, "KVM_GET_MSRS(IA32_XSS) reads 0");
	tap_ok(vcpu_set_msr1(&g.v, MSR_IA32_XSS, 0) == 1, "KVM_SET_MSRS(IA32_XSS, 0) is taken");
	listed = in_msr_list(g.vm.sys_fd, MSR_IA32_XSS);
	for (i = 0; i < 64; i++) {
		long r = vcpu_set_msr1(&g.v, MSR_IA32_XSS, 1ull << i);

		if (r == 0)
			refused++;
		else if (r != 1 || !listed)
			bad++;
	}
	tap_ok(!bad, "every IA32_XSS bit is refused or supported and listed (%d refused, %d bad)",
	       refused, bad);
	tap_ok(vcpu_set_msr1(&g.v, MSR_IA32_XSS, 1) == 0, "bit 0 (x87) is refused");
	vcpu_set_msr1(&g.v, MSR_IA32_XSS, 0);

	/* The guest's view. */
	guest_load(g.mem, GUEST_CODE_GPA, xs_guest);
	vcpu_set_long_mode(&g.v, g.mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
	idt_set_gate64(g.mem, 13, GUEST_ADDR(GUEST_CODE_GPA, xs_guest, xs_gp));
	memset(g.mem + AREA_GPA, 0, 4096);
	memcpy(g.mem + XCR0_GPA, &xcr0, 8);	/* XSAVES leaves header bytes 16-63 alone */
	{
		uint32_t eax = 0;
		int p = next_out(&g.v, &eax);

		tap_ok(p == P_VAL && (eax & (1u << 3)), "the guest's CPUID.0xD.1:EAX has XSAVES (%#x)",
		       eax);
	}
	expect(&g.v, P_VAL, 0, "the guest reads IA32_XSS as 0");
	expect(&g.v, P_GP, 13, "WRMSR(IA32_XSS) of bit 11 (CET user state): #GP");
	expect(&g.v, P_MARK, 1, "after it");
	expect(&g.v, P_GP, 13, "WRMSR(IA32_XSS) of bit 0: #GP");
	expect(&g.v, P_MARK, 2, "after it");
	expect(&g.v, P_VAL, 3, "XSAVES: XCOMP_BV holds x87|SSE and no supervisor component");
	expect(&g.v, P_VAL, 0x80000000, "XSAVES: XCOMP_BV bit 63 (compacted format)");
	expect(&g.v, P_MARK, 3, "XRSTORS of that area");
	expect(&g.v, P_VAL, compacted, "CPUID.0xD.1:EBX with every supported component: the compacted size");
	guest_destroy(&g);

	/* The same CPUID without XSAVES. */
	g = guest_create();
	for (i = 0; i < (int)c->nent; i++)
		if (c->entries[i].function == 0xd && c->entries[i].index == 1)
			c->entries[i].eax &= ~(1u << 3);
	if (ioctl(g.v.fd, KVM_SET_CPUID2, c))
		BAIL("KVM_SET_CPUID2");
	tap_ok(vcpu_set_msr1(&g.v, MSR_IA32_XSS, 0) == 0,
	       "without XSAVES in the guest's CPUID, KVM_SET_MSRS(IA32_XSS, 0) is refused");
	guest_load(g.mem, GUEST_CODE_GPA, noxs_guest);
	vcpu_set_long_mode(&g.v, g.mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
	idt_set_gate64(g.mem, 6, GUEST_ADDR(GUEST_CODE_GPA, noxs_guest, noxs_ud));
	expect(&g.v, P_GP, 6, "and the guest's XSAVES raises #UD");
	guest_destroy(&g);
	tap_done();
}

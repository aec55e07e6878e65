// SPDX-License-Identifier: GPL-2.0
/*
 * 64-bit mode with 4-level page tables the test builds in guest memory: the first 4 GiB
 * identity-mapped with 2 MiB pages, plus 4 KiB pages at virtual 0xc0000000 that alias a
 * second memory slot (at 1 GiB) in reverse page order.
 *
 * The same 64-bit program runs twice, each time in a fresh VM:
 *   1. the vCPU starts in 64-bit mode, set with KVM_SET_SREGS;
 *   2. the vCPU starts in 32-bit protected mode and the guest enters long mode itself
 *      (CR4.PAE, CR3, EFER.LME with WRMSR, CR0.PG, far jump to a 64-bit code segment).
 * The program fills 512 qwords, reads them back (sum and xor), writes through the aliased
 * pages and reads the backing pages through the identity map, OUTs computed values and
 * halts. Checked: the OUT values, every register at HLT, the memory the host sees, the
 * accessed/dirty bits the CPU set in the guest's PTEs, KVM_TRANSLATE of the alias, and
 * (for 2) the mode the guest switched to.
 */
#include "lib/rkvm_test.h"

#define WORK_GPA (GUEST_CODE_GPA + 0x1000)
#define PT_GPA 0xa000		/* the page table of the alias (PD3[0]) */
#define HIGH_GPA 0x40000000ull	/* slot 1, 2 MiB */
#define HIGH_SIZE 0x200000
#define ARRAY_GPA (HIGH_GPA + 0x10000)
#define ALIAS_GVA 0xc0000000ull
#define NPAGES 8
#define K 0x0123456789abcdefull
#define PORT_SUM_LO 0x20
#define PORT_SUM_HI 0x21
#define PORT_ORDER 0x22

GUEST_CODE(lm_work, 64,
	/* Fill a[i] = i * K. */
	"mov $" XSTR(K) ", %r8\n"
	"xor %ecx, %ecx\n"
	"mov $" XSTR(ARRAY_GPA) ", %rdi\n"
	"1: mov %rcx, %rax\n"
	"imul %r8, %rax\n"
	"mov %rax, (%rdi,%rcx,8)\n"
	"inc %rcx\n"
	"cmp $512, %rcx\n"
	"jne 1b\n"
	/* Read back: r9 = sum, r10 = xor. */
	"xor %r9d, %r9d\n"
	"xor %r10d, %r10d\n"
	"xor %ecx, %ecx\n"
	"2: mov (%rdi,%rcx,8), %rax\n"
	"add %rax, %r9\n"
	"xor %rax, %r10\n"
	"inc %rcx\n"
	"cmp $512, %rcx\n"
	"jne 2b\n"
	/* Alias page i gets (i + 1) * 0x1111111111111111. */
	"mov $0x1111111111111111, %r11\n"
	"mov $" XSTR(ALIAS_GVA) ", %rsi\n"
	"xor %ecx, %ecx\n"
	"3: lea 1(%rcx), %rax\n"
	"imul %r11, %rax\n"
	"mov %rcx, %rdx\n"
	"shl $12, %rdx\n"
	"mov %rax, (%rsi,%rdx)\n"
	"inc %rcx\n"
	"cmp $" XSTR(NPAGES) ", %rcx\n"
	"jne 3b\n"
	/* The backing pages in physical order: r12 = one nibble per page. */
	"mov $" XSTR(HIGH_GPA) ", %rsi\n"
	"xor %r12d, %r12d\n"
	"xor %ecx, %ecx\n"
	"4: mov %rcx, %rdx\n"
	"shl $12, %rdx\n"
	"mov (%rsi,%rdx), %rax\n"
	"and $0xf, %eax\n"
	"shl $4, %r12\n"
	"or %rax, %r12\n"
	"inc %rcx\n"
	"cmp $" XSTR(NPAGES) ", %rcx\n"
	"jne 4b\n"
	"mov %r9, %rax\n"
	"out %eax, $" XSTR(PORT_SUM_LO) "\n"
	"shr $32, %rax\n"
	"out %eax, $" XSTR(PORT_SUM_HI) "\n"
	"mov %r12, %rax\n"
	"out %eax, $" XSTR(PORT_ORDER) "\n"
	"mov %r10, %rbx\n"
	"cmp %r12, %rax\n"		/* equal: ZF PF */
	"hlt\n"
	"lm_work_after_hlt:\n");
extern const uint8_t lm_work_after_hlt[];

/* 32-bit protected mode (paging off) -> long mode, then jump to WORK_GPA. */
GUEST_CODE(lm_switch, 32,
	"mov %cr4, %eax\n"
	"or $0x20, %eax\n"		/* PAE */
	"mov %eax, %cr4\n"
	"mov $" XSTR(GUEST_PML4_GPA) ", %eax\n"
	"mov %eax, %cr3\n"
	"mov $0xc0000080, %ecx\n"	/* EFER */
	"rdmsr\n"
	"or $0x100, %eax\n"		/* LME */
	"wrmsr\n"
	"mov %cr0, %eax\n"
	"or $0x80000000, %eax\n"	/* PG: IA-32e mode, compatibility mode */
	"mov %eax, %cr0\n"
	"ljmp $" XSTR(SEL_CODE64) ", $(lm_switch_64 - lm_switch + " XSTR(GUEST_CODE_GPA) ")\n"
	".code64\n"
	"lm_switch_64:\n"
	"xor %eax, %eax\n"
	"xor %ecx, %ecx\n"
	"xor %edx, %edx\n"
	"mov $" XSTR(WORK_GPA) ", %rax\n"
	"jmp *%rax\n");

struct expect {
	uint64_t sum, xor;
};

static struct expect expected(void)
{
	struct expect e = { 0, 0 };
	uint64_t i;

	for (i = 0; i < 512; i++) {
		e.sum += i * K;
		e.xor ^= i * K;
	}
	return e;
}

/* The alias: PD3[0] -> PT_GPA; PT[i] -> HIGH_GPA page (NPAGES - 1 - i). */
static void build_alias(uint8_t *mem)
{
	uint64_t *pd3 = (uint64_t *)(mem + GUEST_PD_GPA + 3 * 0x1000);
	uint64_t *pt = (uint64_t *)(mem + PT_GPA);
	int i;

	memset(pt, 0, 0x1000);
	for (i = 0; i < NPAGES; i++)
		pt[i] = (HIGH_GPA + (NPAGES - 1 - i) * 0x1000ull) | PTE_P | PTE_RW;
	pd3[0] = PT_GPA | PTE_P | PTE_RW;
}

/* Runs the program and checks it: 10 checks. */
static void run_and_check(struct guest *g, uint8_t *high, const char *how)
{
	struct expect e = expected();
	uint64_t *pt = (uint64_t *)(g->mem + PT_GPA);
	uint64_t *pd3 = (uint64_t *)(g->mem + GUEST_PD_GPA + 3 * 0x1000);
	uint64_t want_rip = GUEST_ADDR(WORK_GPA, lm_work, lm_work_after_hlt);
	struct kvm_translation tr;
	struct kvm_regs r;
	int i, bad = 0, ad = 0;

	vcpu_run(&g->v);
	tap_ok(is_out(&g->v, PORT_SUM_LO, 4) && io_out_value(&g->v) == (uint32_t)e.sum,
	       "%s: OUT of the sum's low half %#x to port %#x (got %s)", how, (uint32_t)e.sum,
	       PORT_SUM_LO, exit_str(&g->v));
	vcpu_run(&g->v);
	tap_ok(is_out(&g->v, PORT_SUM_HI, 4) && io_out_value(&g->v) == e.sum >> 32,
	       "%s: OUT of the sum's high half %#x to port %#x (got %s)", how,
	       (uint32_t)(e.sum >> 32), PORT_SUM_HI, exit_str(&g->v));
	vcpu_run(&g->v);
	tap_ok(is_out(&g->v, PORT_ORDER, 4) && io_out_value(&g->v) == 0x87654321,
	       "%s: OUT of the alias page order 0x87654321 to port %#x (got %s)", how, PORT_ORDER,
	       exit_str(&g->v));
	vcpu_run(&g->v);
	tap_ok(g->v.run->exit_reason == KVM_EXIT_HLT, "%s: then HLT (got %s)", how,
	       exit_str(&g->v));

	vcpu_get_regs(&g->v, &r);
	tap_ok(r.rip == want_rip && r.rflags == 0x46 && r.rsp == GUEST_STACK_TOP && r.rbp == 0,
	       "%s: RIP %#llx (want %#llx) RFLAGS %#llx (want 0x46) RSP %#llx RBP %#llx", how,
	       (unsigned long long)r.rip, (unsigned long long)want_rip,
	       (unsigned long long)r.rflags, (unsigned long long)r.rsp, (unsigned long long)r.rbp);
	tap_ok(r.rax == 0x87654321 && r.rbx == e.xor && r.rcx == NPAGES &&
		       r.rdx == (NPAGES - 1) << 12 && r.rsi == HIGH_GPA && r.rdi == ARRAY_GPA,
	       "%s: rax %#llx rbx %#llx rcx %#llx rdx %#llx rsi %#llx rdi %#llx (want 0x87654321 "
	       "%#llx 8 0x7000 %#llx %#llx)", how, (unsigned long long)r.rax,
	       (unsigned long long)r.rbx, (unsigned long long)r.rcx, (unsigned long long)r.rdx,
	       (unsigned long long)r.rsi, (unsigned long long)r.rdi, (unsigned long long)e.xor,
	       HIGH_GPA, ARRAY_GPA);
	tap_ok(r.r8 == K && r.r9 == e.sum && r.r10 == e.xor && r.r11 == 0x1111111111111111ull &&
		       r.r12 == 0x87654321 && !r.r13 && !r.r14 && !r.r15,
	       "%s: r8 %#llx r9 %#llx r10 %#llx r11 %#llx r12 %#llx r13-15 %#llx %#llx %#llx",
	       how, (unsigned long long)r.r8, (unsigned long long)r.r9, (unsigned long long)r.r10,
	       (unsigned long long)r.r11, (unsigned long long)r.r12, (unsigned long long)r.r13,
	       (unsigned long long)r.r14, (unsigned long long)r.r15);

	for (i = 0; i < 512; i++)
		bad += ((uint64_t *)(high + 0x10000))[i] != i * K;
	for (i = 0; i < NPAGES; i++)
		bad += *(uint64_t *)(high + i * 0x1000) != (NPAGES - i) * 0x1111111111111111ull;
	tap_ok(!bad, "%s: the host sees the 512 qwords and the 8 alias writes in place (%d wrong)",
	       how, bad);
	for (i = 0; i < NPAGES; i++)
		ad += (pt[i] & 0x60) == 0x60;
	tap_ok(ad == NPAGES && (pd3[0] & 0x20) && !pt[NPAGES],
	       "%s: the CPU set accessed+dirty in the %d alias PTEs (%d have both) and accessed in "
	       "the PDE (%#llx)", how, NPAGES, ad, (unsigned long long)pd3[0]);

	memset(&tr, 0, sizeof(tr));
	tr.linear_address = ALIAS_GVA + 3 * 0x1000 + 0x123;
	if (ioctl(g->v.fd, KVM_TRANSLATE, &tr))
		BAIL("KVM_TRANSLATE");
	i = tr.valid && tr.physical_address == HIGH_GPA + 4 * 0x1000 + 0x123;
	memset(&tr, 0, sizeof(tr));
	tr.linear_address = ALIAS_GVA + NPAGES * 0x1000;
	if (ioctl(g->v.fd, KVM_TRANSLATE, &tr))
		BAIL("KVM_TRANSLATE");
	tap_ok(i && !tr.valid, "%s: KVM_TRANSLATE %#llx -> %#llx, and the page after the alias is "
	       "not valid (valid %u)", how, ALIAS_GVA + 3 * 0x1000 + 0x123,
	       HIGH_GPA + 4 * 0x1000 + 0x123, tr.valid);
}

static struct guest setup(uint8_t **high)
{
	struct guest g = guest_create();

	*high = vm_add_memory(&g.vm, 1, HIGH_GPA, HIGH_SIZE, 0);
	guest_load(g.mem, WORK_GPA, lm_work);
	return g;
}

int main(void)
{
	struct kvm_segment cs64 = seg_code64();
	struct kvm_sregs s;
	struct guest g;
	uint8_t *high;

	test_watchdog(60);
	tap_plan(2 * 10 + 2 + 3);

	/* 1. Straight into 64-bit mode. */
	g = setup(&high);
	vcpu_set_long_mode(&g.v, g.mem, WORK_GPA, GUEST_STACK_TOP);
	build_alias(g.mem);
	vcpu_get_sregs(&g.v, &s);
	tap_ok(s.cr0 == (CR0_PE | CR0_ET | CR0_NE | CR0_PG) && s.cr3 == GUEST_PML4_GPA &&
		       s.cr4 == (CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT) &&
		       s.efer == (EFER_LME | EFER_LMA),
	       "KVM_GET_SREGS returns the long mode set: CR0 %#llx CR3 %#llx CR4 %#llx EFER %#llx",
	       (unsigned long long)s.cr0, (unsigned long long)s.cr3, (unsigned long long)s.cr4,
	       (unsigned long long)s.efer);
	tap_ok(s.cs.l && !s.cs.db && s.cs.selector == SEL_CODE64 && s.cs.type == cs64.type,
	       "KVM_GET_SREGS returns the 64-bit CS: selector %#x l %u db %u type %u", s.cs.selector,
	       s.cs.l, s.cs.db, s.cs.type);
	run_and_check(&g, high, "started in 64-bit mode");
	guest_destroy(&g);

	/* 2. Protected mode -> long mode by the guest. */
	g = setup(&high);
	guest_load(g.mem, GUEST_CODE_GPA, lm_switch);
	vcpu_set_protected_mode(&g.v, g.mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
	guest_page_tables_init(g.mem);
	build_alias(g.mem);
	run_and_check(&g, high, "switched by the guest");
	vcpu_get_sregs(&g.v, &s);
	tap_ok(s.efer == (EFER_LME | EFER_LMA), "after the switch: EFER %#llx (want LME|LMA 0x500)",
	       (unsigned long long)s.efer);
	tap_ok(s.cr0 == (CR0_PE | CR0_ET | CR0_NE | CR0_PG) && s.cr4 == CR4_PAE &&
		       s.cr3 == GUEST_PML4_GPA,
	       "after the switch: CR0 %#llx (want 0x80000031) CR4 %#llx (want 0x20) CR3 %#llx",
	       (unsigned long long)s.cr0, (unsigned long long)s.cr4, (unsigned long long)s.cr3);
	tap_ok(s.cs.l && !s.cs.db && s.cs.selector == SEL_CODE64 && s.cs.base == 0 && s.cs.present,
	       "after the far jump: CS selector %#x l %u db %u base %#llx p %u (want 0x18 l 1 db 0)",
	       s.cs.selector, s.cs.l, s.cs.db, (unsigned long long)s.cs.base, s.cs.present);
	guest_destroy(&g);
	tap_done();
}

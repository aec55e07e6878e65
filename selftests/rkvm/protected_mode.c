// SPDX-License-Identifier: GPL-2.0
/*
 * 32-bit protected mode, with a flat GDT the test builds in guest memory.
 *
 * The same 32-bit program runs twice, each time in a fresh VM:
 *   1. the vCPU starts in real mode; the guest loads the GDT (lgdt), sets CR0.PE, far
 *      jumps to the 32-bit code segment and loads the data segments itself;
 *   2. the vCPU starts directly in protected mode, its segments set with KVM_SET_SREGS.
 * The program sums 1..100 in a loop, calls a function through the stack, does a 32x32->64
 * multiply, writes and reads back memory, OUTs two results and halts. Checked: the two
 * OUT exits, every register at the HLT exit (RIP just past the HLT, RFLAGS of the last
 * compare), the stack and data memory the guest wrote, and the segment state
 * (KVM_GET_SREGS) that the far jump and segment loads produced.
 */
#include "lib/rkvm_test.h"

#define WORK_GPA (GUEST_CODE_GPA + 0x1000)
#define PORT_SUM 0x10
#define PORT_ROT 0x11

/* Real mode, CS base GUEST_CODE_GPA: switch to protected mode, then jump to WORK_GPA. */
GUEST_CODE(pm_switch, 16,
	"cli\n"
	"lgdtl %cs:(pm_switch_gdtr - pm_switch)\n"
	"mov %cr0, %eax\n"
	"or $1, %eax\n"
	"mov %eax, %cr0\n"
	"ljmpl $" XSTR(SEL_CODE32) ", $(pm_switch_32 - pm_switch + " XSTR(GUEST_CODE_GPA) ")\n"
	"pm_switch_gdtr: .word " XSTR(GDT_LIMIT) "\n"
	".long " XSTR(GUEST_GDT_GPA) "\n"
	".code32\n"
	"pm_switch_32:\n"
	"mov $" XSTR(SEL_DATA) ", %ax\n"
	"mov %ax, %ds\n"
	"mov %ax, %es\n"
	"mov %ax, %fs\n"
	"mov %ax, %gs\n"
	"mov %ax, %ss\n"
	"mov $" XSTR(GUEST_STACK_TOP) ", %esp\n"
	"mov $" XSTR(WORK_GPA) ", %eax\n"
	"jmp *%eax\n");

/* 32-bit, loaded at WORK_GPA, entered with ESP = GUEST_STACK_TOP. */
GUEST_CODE(pm_work, 32,
	"xor %eax, %eax\n"
	"mov $100, %ecx\n"
	"1: add %ecx, %eax\n"
	"loop 1b\n"			/* eax = 5050, ecx = 0 */
	"mov %eax, %ebx\n"
	"push %ebx\n"
	"call pm_work_fn\n"		/* esi = 3 * 5050 + 7 */
	"pm_work_ret:\n"
	"add $4, %esp\n"
	"mov $0x12345678, %eax\n"
	"mov $0x9abcdef0, %edi\n"
	"mul %edi\n"			/* edx:eax = 0x12345678 * 0x9abcdef0 */
	"mov %eax, %ebp\n"
	"mov %edx, %edi\n"
	"movl $0xcafebabe, " XSTR(GUEST_DATA_GPA) "\n"
	"mov " XSTR(GUEST_DATA_GPA) ", %ecx\n"
	"rol $8, %ecx\n"		/* ecx = 0xfebabeca */
	"mov %ecx, " XSTR(GUEST_DATA_GPA) "+4\n"
	"mov %ebx, %eax\n"
	"out %eax, $" XSTR(PORT_SUM) "\n"
	"mov %ecx, %eax\n"
	"out %eax, $" XSTR(PORT_ROT) "\n"
	"cmp $0xfebabeca, %eax\n"	/* ZF, PF */
	"hlt\n"
	"pm_work_end_hlt:\n"
	"pm_work_fn:\n"
	"mov 4(%esp), %eax\n"
	"lea 7(%eax,%eax,2), %esi\n"
	"ret\n");
extern const uint8_t pm_work_ret[], pm_work_end_hlt[];

static void check_segment(const char *what, const struct kvm_segment *got,
			  const struct kvm_segment *want)
{
	tap_ok(got->base == want->base && got->limit == want->limit &&
		       got->selector == want->selector && got->type == want->type &&
		       got->present == want->present && got->dpl == want->dpl &&
		       got->db == want->db && got->s == want->s && got->l == want->l &&
		       got->g == want->g && !got->unusable,
	       "%s: selector %#x base %#llx limit %#x type %u p %u dpl %u db %u s %u l %u g %u "
	       "unusable %u (want selector %#x base %#llx limit %#x type %u p 1 dpl 0 db %u s 1 "
	       "l %u g 1)",
	       what, got->selector, (unsigned long long)got->base, got->limit, got->type,
	       got->present, got->dpl, got->db, got->s, got->l, got->g, got->unusable,
	       want->selector, (unsigned long long)want->base, want->limit, want->type, want->db,
	       want->l);
}

/* Runs the program to its HLT and checks it: 8 checks. */
static void run_and_check(struct guest *g, const char *how)
{
	uint64_t prod = (uint64_t)0x12345678 * 0x9abcdef0ull;
	struct kvm_regs r;
	uint32_t *stack = (uint32_t *)(g->mem + GUEST_STACK_TOP);
	uint32_t *data = (uint32_t *)(g->mem + GUEST_DATA_GPA);
	uint64_t want_rip = GUEST_ADDR(WORK_GPA, pm_work, pm_work_end_hlt);
	uint64_t ret_addr = GUEST_ADDR(WORK_GPA, pm_work, pm_work_ret);

	vcpu_run(&g->v);
	tap_ok(is_out(&g->v, PORT_SUM, 4) && io_out_value(&g->v) == 5050,
	       "%s: first exit is OUT of 5050 (sum 1..100) to port %#x, 4 bytes (got %s)", how,
	       PORT_SUM, exit_str(&g->v));
	vcpu_run(&g->v);
	tap_ok(is_out(&g->v, PORT_ROT, 4) && io_out_value(&g->v) == 0xfebabeca,
	       "%s: second exit is OUT of 0xfebabeca (memory read back, rotated) to port %#x "
	       "(got %s)", how, PORT_ROT, exit_str(&g->v));
	vcpu_run(&g->v);
	tap_ok(g->v.run->exit_reason == KVM_EXIT_HLT, "%s: third exit is HLT (got %s)", how,
	       exit_str(&g->v));
	vcpu_get_regs(&g->v, &r);
	tap_ok(r.rip == want_rip && r.rflags == 0x46, "%s: RIP %#llx (want %#llx, past the HLT), "
	       "RFLAGS %#llx (want 0x46: ZF PF of the compare)", how, (unsigned long long)r.rip,
	       (unsigned long long)want_rip, (unsigned long long)r.rflags);
	tap_ok(r.rax == 0xfebabeca && r.rbx == 5050 && r.rcx == 0xfebabeca &&
		       r.rdx == prod >> 32 && r.rsi == 3 * 5050 + 7 && r.rdi == prod >> 32 &&
		       r.rbp == (uint32_t)prod && r.rsp == GUEST_STACK_TOP,
	       "%s: rax %#llx rbx %#llx rcx %#llx rdx %#llx rsi %#llx rdi %#llx rbp %#llx rsp %#llx "
	       "(want 0xfebabeca 0x13ba 0xfebabeca %#llx 0x3b35 %#llx %#llx %#x)", how,
	       (unsigned long long)r.rax, (unsigned long long)r.rbx, (unsigned long long)r.rcx,
	       (unsigned long long)r.rdx, (unsigned long long)r.rsi, (unsigned long long)r.rdi,
	       (unsigned long long)r.rbp, (unsigned long long)r.rsp,
	       (unsigned long long)(prod >> 32), (unsigned long long)(prod >> 32),
	       (unsigned long long)(uint32_t)prod, GUEST_STACK_TOP);
	tap_ok(!r.r8 && !r.r9 && !r.r10 && !r.r11 && !r.r12 && !r.r13 && !r.r14 && !r.r15,
	       "%s: r8-r15 stay 0 (32-bit code cannot touch them)", how);
	tap_ok(stack[-1] == 5050 && stack[-2] == ret_addr,
	       "%s: the stack holds the pushed argument %#x (want 0x13ba) and the return address "
	       "%#x (want %#llx)", how, stack[-1], stack[-2], (unsigned long long)ret_addr);
	tap_ok(data[0] == 0xcafebabe && data[1] == 0xfebabeca,
	       "%s: guest memory holds the stored words %#x %#x (want 0xcafebabe 0xfebabeca)", how,
	       data[0], data[1]);
}

int main(void)
{
	struct kvm_segment cs = seg_code32(), ds = seg_data();
	struct kvm_sregs s;
	struct guest g;

	test_watchdog(60);
	tap_plan(2 * 8 + 7 + 7);

	/* 1. Real mode -> protected mode by the guest itself. */
	g = guest_create();
	guest_gdt_init(g.mem);
	guest_load(g.mem, GUEST_CODE_GPA, pm_switch);
	guest_load(g.mem, WORK_GPA, pm_work);
	vcpu_get_sregs(&g.v, &s);
	s.cs.base = GUEST_CODE_GPA;
	s.cs.selector = GUEST_CODE_GPA >> 4;
	vcpu_set_sregs(&g.v, &s);
	vcpu_set_rip(&g.v, 0);
	run_and_check(&g, "real mode switch");
	vcpu_get_sregs(&g.v, &s);
	tap_ok(s.cr0 == (0x60000010 | CR0_PE), "after the switch: CR0 %#llx (want 0x60000011: the "
	       "reset value CD|NW|ET plus PE)", (unsigned long long)s.cr0);
	check_segment("after the far jump: CS", &s.cs, &cs);
	check_segment("after mov to DS: DS", &s.ds, &ds);
	check_segment("after mov to ES: ES", &s.es, &ds);
	check_segment("after mov to SS: SS", &s.ss, &ds);
	check_segment("after mov to FS: FS", &s.fs, &ds);
	tap_ok(s.gdt.base == GUEST_GDT_GPA && s.gdt.limit == GDT_LIMIT,
	       "after lgdt: GDT base %#llx limit %#x (want %#x %#x)", (unsigned long long)s.gdt.base,
	       s.gdt.limit, GUEST_GDT_GPA, GDT_LIMIT);
	guest_destroy(&g);

	/* 2. Straight into protected mode with KVM_SET_SREGS. */
	g = guest_create();
	guest_load(g.mem, WORK_GPA, pm_work);
	vcpu_set_protected_mode(&g.v, g.mem, WORK_GPA, GUEST_STACK_TOP);
	vcpu_get_sregs(&g.v, &s);
	check_segment("after KVM_SET_SREGS: CS", &s.cs, &cs);
	check_segment("after KVM_SET_SREGS: SS", &s.ss, &ds);
	tap_ok(s.cr0 == (CR0_PE | CR0_ET | CR0_NE) && s.efer == 0,
	       "after KVM_SET_SREGS: CR0 %#llx (want 0x31) EFER %#llx (want 0)",
	       (unsigned long long)s.cr0, (unsigned long long)s.efer);
	run_and_check(&g, "started in protected mode");
	vcpu_get_sregs(&g.v, &s);
	check_segment("at HLT: CS", &s.cs, &cs);
	check_segment("at HLT: DS", &s.ds, &ds);
	check_segment("at HLT: SS", &s.ss, &ds);
	tap_ok(s.cr0 == (CR0_PE | CR0_ET | CR0_NE),
	       "at HLT: CR0 %#llx (want 0x31)", (unsigned long long)s.cr0);
	guest_destroy(&g);
	tap_done();
}

// SPDX-License-Identifier: GPL-2.0
/*
 * MMIO: a 64-bit guest reads and writes an address outside every memory slot, and writes
 * a KVM_MEM_READONLY slot.
 *
 * Each access must exit with KVM_EXIT_MMIO carrying the guest physical address, the access
 * size, the direction and, for writes, the bytes written. For reads the test puts the data
 * in kvm_run->mmio.data and the next KVM_RUN must complete the instruction with it: the
 * final registers show that 8- and 16-bit loads keep the upper register bits, 32-bit
 * loads zero-extend to 64, movzx zero-extends and movsx sign-extends. Covered forms: mov
 * r/m <- imm (8/16/32/64), mov r/m <- reg (8/16/32/64), mov reg <- r/m (8/16/32/64),
 * movzx, movsx, mov with a 64-bit moffs (A0, A3, REX.W A1) and stos.
 *
 * A read-only slot reads like memory (no exit); a write to it exits as an MMIO write and
 * leaves the memory untouched.
 */
#include "lib/rkvm_test.h"

#define WORK_GPA (GUEST_CODE_GPA + 0x1000)
#define MMIO_GPA 0xd0000000ull
#define RO_GPA 0x40000000ull
#define RO_SIZE 0x10000
#define RO_WORD0 0x0f1e2d3c4b5a6978ull
#define RO_WORD1 0x8796a5b4c3d2e1f0ull

GUEST_CODE(mmio_guest, 64,
	"mov $" XSTR(MMIO_GPA) ", %rdi\n"
	/* Writes. */
	"movb $0x11, (%rdi)\n"
	"movw $0x2233, 2(%rdi)\n"
	"movl $0x44556677, 4(%rdi)\n"
	"mov $0x8899aabbccddeeff, %rax\n"
	"mov %rax, 8(%rdi)\n"
	"mov %al, 0x10(%rdi)\n"
	"mov %ax, 0x12(%rdi)\n"
	"mov %eax, 0x14(%rdi)\n"
	"movq $-2, 0x18(%rdi)\n"
	/* Reads. */
	"mov 0x20(%rdi), %bl\n"
	"mov 0x22(%rdi), %cx\n"
	"mov 0x24(%rdi), %edx\n"
	"mov 0x28(%rdi), %rsi\n"
	"movzbl 0x30(%rdi), %r8d\n"
	"movzwq 0x32(%rdi), %r9\n"
	"movsbq 0x34(%rdi), %r10\n"
	"movswl 0x36(%rdi), %r11d\n"
	"movsbw 0x38(%rdi), %r12w\n"
	/* moffs forms. */
	"movabs " XSTR(MMIO_GPA) "+0x40, %al\n"
	"movabs %eax, " XSTR(MMIO_GPA) "+0x44\n"
	"movabs " XSTR(MMIO_GPA) "+0x48, %rax\n"
	/* stos. */
	"mov $" XSTR(MMIO_GPA) "+0x50, %rdi\n"
	"mov $0xfeedface, %eax\n"
	"stosl\n"
	/* The read-only slot. */
	"mov $" XSTR(RO_GPA) ", %r13\n"
	"mov (%r13), %r14\n"
	"movq $0x77, 8(%r13)\n"
	"mov 8(%r13), %r15\n"
	"hlt\n"
	"mmio_guest_after_hlt:\n");
extern const uint8_t mmio_guest_after_hlt[];

struct step {
	int write;
	uint64_t addr;
	uint32_t len;
	uint64_t data;
	const char *insn;
};

static const struct step steps[] = {
	{ 1, MMIO_GPA + 0x00, 1, 0x11, "movb $imm8" },
	{ 1, MMIO_GPA + 0x02, 2, 0x2233, "movw $imm16" },
	{ 1, MMIO_GPA + 0x04, 4, 0x44556677, "movl $imm32" },
	{ 1, MMIO_GPA + 0x08, 8, 0x8899aabbccddeeffull, "mov %rax" },
	{ 1, MMIO_GPA + 0x10, 1, 0xff, "mov %al" },
	{ 1, MMIO_GPA + 0x12, 2, 0xeeff, "mov %ax" },
	{ 1, MMIO_GPA + 0x14, 4, 0xccddeeff, "mov %eax" },
	{ 1, MMIO_GPA + 0x18, 8, 0xfffffffffffffffeull, "movq $simm32" },
	{ 0, MMIO_GPA + 0x20, 1, 0xa5, "mov to %bl" },
	{ 0, MMIO_GPA + 0x22, 2, 0xb6c7, "mov to %cx" },
	{ 0, MMIO_GPA + 0x24, 4, 0xd8e9fa0b, "mov to %edx" },
	{ 0, MMIO_GPA + 0x28, 8, 0x0123456789abcdefull, "mov to %rsi" },
	{ 0, MMIO_GPA + 0x30, 1, 0x80, "movzbl to %r8d" },
	{ 0, MMIO_GPA + 0x32, 2, 0x8001, "movzwq to %r9" },
	{ 0, MMIO_GPA + 0x34, 1, 0x80, "movsbq to %r10" },
	{ 0, MMIO_GPA + 0x36, 2, 0x8001, "movswl to %r11d" },
	{ 0, MMIO_GPA + 0x38, 1, 0xfe, "movsbw to %r12w" },
	{ 0, MMIO_GPA + 0x40, 1, 0x5a, "mov moffs64 to %al (A0)" },
	{ 1, MMIO_GPA + 0x44, 4, 0xccddee5a, "mov %eax to moffs64 (A3)" },
	{ 0, MMIO_GPA + 0x48, 8, 0x1122334455667788ull, "mov moffs64 to %rax (REX.W A1)" },
	{ 1, MMIO_GPA + 0x50, 4, 0xfeedface, "stosl" },
	{ 1, RO_GPA + 8, 8, 0x77, "movq $0x77 to the read-only slot" },
};
#define N_STEPS (int)(sizeof(steps) / sizeof(steps[0]))

int main(void)
{
	uint64_t want_rip = GUEST_ADDR(WORK_GPA, mmio_guest, mmio_guest_after_hlt);
	struct kvm_regs r;
	struct guest g;
	uint64_t *ro;
	int i;

	test_watchdog(60);
	g = guest_create();
	REQUIRE_CAP(g.vm.fd, KVM_CAP_READONLY_MEM);
	tap_plan(N_STEPS + 7);

	ro = vm_add_memory(&g.vm, 1, RO_GPA, RO_SIZE, KVM_MEM_READONLY);
	ro[0] = RO_WORD0;
	ro[1] = RO_WORD1;
	guest_load(g.mem, WORK_GPA, mmio_guest);
	vcpu_set_long_mode(&g.v, g.mem, WORK_GPA, GUEST_STACK_TOP);
	vcpu_get_regs(&g.v, &r);
	r.rbx = r.rcx = r.rdx = r.r8 = r.r9 = r.r11 = ~0ull;
	r.rsi = r.r10 = 0;
	r.r12 = 0x1111111111111111ull;
	vcpu_set_regs(&g.v, &r);

	for (i = 0; i < N_STEPS; i++) {
		const struct step *s = &steps[i];
		struct kvm_run *run = g.v.run;
		uint64_t got = 0;
		int ok;

		vcpu_run(&g.v);
		ok = run->exit_reason == KVM_EXIT_MMIO && run->mmio.phys_addr == s->addr &&
		     run->mmio.len == s->len && run->mmio.is_write == s->write;
		if (s->write) {
			memcpy(&got, run->mmio.data, s->len <= 8 ? s->len : 8);
			ok = ok && got == s->data;
			tap_ok(ok, "%s: MMIO write %#llx len %u data %#llx (got %s)", s->insn,
			       (unsigned long long)s->addr, s->len, (unsigned long long)s->data,
			       exit_str(&g.v));
		} else {
			tap_ok(ok, "%s: MMIO read %#llx len %u (got %s)", s->insn,
			       (unsigned long long)s->addr, s->len, exit_str(&g.v));
			memset(run->mmio.data, 0xcc, sizeof(run->mmio.data));
			memcpy(run->mmio.data, &s->data, s->len);
		}
		if (!ok && run->exit_reason != KVM_EXIT_MMIO) {
			for (i++; i < N_STEPS; i++)
				tap_ok(0, "%s: not reached", steps[i].insn);
			break;
		}
	}

	vcpu_run(&g.v);
	tap_ok(g.v.run->exit_reason == KVM_EXIT_HLT, "then HLT (got %s)", exit_str(&g.v));
	vcpu_get_regs(&g.v, &r);
	tap_ok(r.rip == want_rip, "RIP %#llx just past the HLT (want %#llx)",
	       (unsigned long long)r.rip, (unsigned long long)want_rip);
	tap_ok(r.rbx == 0xffffffffffffffa5ull && r.rcx == 0xffffffffffffb6c7ull &&
		       r.rdx == 0xd8e9fa0bull && r.rsi == 0x0123456789abcdefull,
	       "plain loads: rbx %#llx (want 0xffffffffffffffa5: 8-bit keeps the rest) rcx %#llx "
	       "(want 0xffffffffffffb6c7) rdx %#llx (want 0xd8e9fa0b: 32-bit zero-extends) rsi "
	       "%#llx (want 0x123456789abcdef)", (unsigned long long)r.rbx,
	       (unsigned long long)r.rcx, (unsigned long long)r.rdx, (unsigned long long)r.rsi);
	tap_ok(r.r8 == 0x80 && r.r9 == 0x8001 && r.r10 == 0xffffffffffffff80ull &&
		       r.r11 == 0xffff8001ull && r.r12 == 0x111111111111fffeull,
	       "movzx/movsx: r8 %#llx (want 0x80) r9 %#llx (want 0x8001) r10 %#llx (want "
	       "0xffffffffffffff80) r11 %#llx (want 0xffff8001) r12 %#llx (want 0x111111111111fffe)",
	       (unsigned long long)r.r8, (unsigned long long)r.r9, (unsigned long long)r.r10,
	       (unsigned long long)r.r11, (unsigned long long)r.r12);
	tap_ok(r.rax == 0xfeedface && r.rdi == MMIO_GPA + 0x54,
	       "rax %#llx (want 0xfeedface), rdi %#llx (want %#llx: stosl advanced it by 4)",
	       (unsigned long long)r.rax, (unsigned long long)r.rdi, MMIO_GPA + 0x54);
	tap_ok(r.r13 == RO_GPA && r.r14 == RO_WORD0 && r.r15 == RO_WORD1,
	       "the read-only slot reads as memory: r14 %#llx (want %#llx), r15 %#llx after the "
	       "write (want the old %#llx)", (unsigned long long)r.r14, RO_WORD0,
	       (unsigned long long)r.r15, RO_WORD1);
	tap_ok(ro[0] == RO_WORD0 && ro[1] == RO_WORD1,
	       "the read-only slot's memory is unchanged: %#llx %#llx", (unsigned long long)ro[0],
	       (unsigned long long)ro[1]);
	tap_done();
}

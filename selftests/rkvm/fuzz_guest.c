// SPDX-License-Identifier: GPL-2.0
/*
 * fuzz_guest: a seeded fuzzer of guest code and vCPU state.
 *
 *   fuzz_guest [-s SEED] [-n PROGRAMS] [-t SECONDS] [-p EVERY] [-v]
 *
 * Each program is a guest instruction stream, either random bytes or built from a table
 * of instructions that exit or stress the hypervisor (port IO with REP, MOV to/from CRs
 * and DRs, RDMSR/WRMSR with chosen or random ECX, CPUID, HLT, INT n, IRET, LGDT/LIDT/
 * LLDT/LTR, MOV SS, SYSCALL/SYSENTER, XSETBV, VMCALL, INVLPG, WBINVD, MONITOR/MWAIT,
 * RDTSC(P), RDPMC, PAUSE, memory accesses to MMIO, the APIC page, a read-only slot, very
 * high GPAs and across slot edges, string ops, self-modifying stores, ...). It runs in
 * real, protected or long mode (page tables in guest memory; a second PML4 entry maps
 * 1 GiB pages at physical addresses up to 2^51), on top of vCPU state that is valid or
 * mutated through KVM_SET_SREGS/REGS/MSRS/XSAVE/FPU/XCRS/DEBUGREGS/VCPU_EVENTS/
 * GUEST_DEBUG/LAPIC/MP_STATE: the hypervisor must reject what is invalid with an errno or
 * run it.
 *
 * Every vector's handler reports itself with an OUT to port 0xef and halts. A program
 * runs until HLT, SHUTDOWN, FAIL_ENTRY, INTERNAL_ERROR, an error from KVM_RUN, MAX_EXITS
 * exits or its time bound (a per-thread timer signal ends KVM_RUN); IO and MMIO exits are
 * answered with random data. A VM (with random capabilities: the split or the full
 * irqchip with or without the PIT, whose state is also mutated; user-space
 * MSRs, an MSR filter, emulation-failure exits, coalesced MMIO, ioeventfds) serves
 * VM_PROGRAMS programs on its two vCPUs, whose state is reset for every program.
 *
 * Program i draws from a PRNG seeded by (seed, i): -v prints each program's bytes and
 * setup, so a program that breaks a host can be replayed by itself (-f i -n 1).
 *
 * Without -n and -t it is a TAP test: a short fixed-seed campaign, then checks that must
 * hold on KVM and rkvm alike: it completed, a fresh VM still runs a guest to its IO exit
 * and HLT, and the kernel log shows no splat since the start.
 */
#include "lib/fuzz.h"

#include <sys/eventfd.h>

#define VM_PROGRAMS 100
#define MAX_EXITS 48
#define NVCPUS 2

#define STUB_GPA 0xa000		/* 256 handler stubs of 8 bytes */
#define PDPT_HI_GPA 0xb000	/* the second PML4 entry's PDPT (1 GiB pages) */
#define PAE_PDPT_GPA 0xc000	/* a PAE PDPT for 32-bit paging over the same PDs */
#define SCRATCH_GPA GUEST_DATA_GPA
#define CODE_MAX 0x2000
#define HI_GPA 0x1000000ull	/* slot 1: 1 MiB */
#define RO_GPA 0x2000000ull	/* slot 2: 64 KiB, KVM_MEM_READONLY */
#define MMIO_GPA 0xd0000000ull
#define HIGH_VA 0x8000000000ull	/* PML4[1]: VA 512 GiB + i GiB -> PA 2^(36 + i % 16) */
#define PORT_EXC 0xef

#define TAP_SEED 0x2026
#define TAP_PROGRAMS 1500

static struct fuzz_opts opts = { .seed = TAP_SEED, .tap = 1 };

struct gvm {
	struct vm vm;
	struct vcpu v[NVCPUS];
	uint8_t *mem, *hi, *ro;
	int lapic, full_irqchip, user_msr;
};

static struct gvm G;
static struct kvm_cpuid2 *cpuid;
static long n_programs, n_exits, n_vms, n_set_fail, n_bad_run, exit_hist[64], vec_hist[256];
static long xsave_size;

/* ---- The code emitter ------------------------------------------------------------------- */

struct gen {
	struct rng *r;
	uint8_t *p, *start, *end;
	int bits;		/* 16, 32 or 64 */
	char names[512];	/* what was emitted, for -v */
};

static void b(struct gen *g, uint8_t v)
{
	if (g->p < g->end)
		*g->p++ = v;
}

static void bs(struct gen *g, const char *s, int n)
{
	while (n--)
		b(g, (uint8_t)*s++);
}

static void imm32(struct gen *g, uint32_t v)
{
	bs(g, (const char *)&v, 4);
}

static void name(struct gen *g, const char *n)
{
	size_t l = strlen(g->names);

	if (l + strlen(n) + 2 < sizeof(g->names))
		snprintf(g->names + l, sizeof(g->names) - l, "%s%s", l ? " " : "", n);
}

/* 32-bit operand/address prefixes for the current mode (real mode needs 66/67). */
static void op32(struct gen *g) { if (g->bits == 16) b(g, 0x66); }
static void ad32(struct gen *g) { if (g->bits == 16) b(g, 0x67); }

/* mov $v, %reg (0 eax, 1 ecx, 2 edx, 3 ebx, 4 esp, 5 ebp, 6 esi, 7 edi). */
static void mov_imm(struct gen *g, int reg, uint64_t v)
{
	if (g->bits == 64 && v >> 32) {
		b(g, 0x48);
		b(g, 0xb8 + reg);
		bs(g, (const char *)&v, 8);
		return;
	}
	op32(g);
	b(g, 0xb8 + reg);
	imm32(g, (uint32_t)v);
}

static uint64_t rnd_addr(struct gen *g)
{
	struct rng *r = g->r;

	switch (rnd(r, 12)) {
	case 0: return MMIO_GPA + rnd(r, 0x2000);
	case 1: return 0xfee00000 + (rnd(r, 0x40) << 4);	/* the APIC page */
	case 2: return HI_GPA + rnd(r, 0x100000);
	case 3: return RO_GPA + rnd(r, 0x10000);
	case 4: return GUEST_CODE_GPA + rnd(r, 0x100);		/* self-modifying */
	case 5: return SCRATCH_GPA + rnd(r, 0x1000);
	case 6: return GUEST_LOW_SIZE - rnd(r, 8);		/* across the slot's end */
	case 7: return HI_GPA + 0x100000 - rnd(r, 8);
	case 8: return g->bits == 64 ? HIGH_VA + (rnd(r, 16) << 30) + rnd(r, 0x1000) : rng_u32(r);
	case 9: return 0xfec00000 + rnd(r, 0x100);		/* IOAPIC */
	case 10: return rnd_num(r);
	default: return GUEST_STACK_TOP - rnd(r, 0x100);
	}
}

static const uint32_t msr_list[] = {
	0x10, 0x1b, 0x3a, 0x3b, 0x48, 0x49, 0x8b, 0x9e, 0xc1, 0xce, 0xe1, 0xfe, 0x10a, 0x140,
	0x174, 0x175, 0x176, 0x179, 0x17a, 0x186, 0x1a0, 0x1d9, 0x200, 0x277, 0x2ff, 0x38f, 0x400,
	0x480, 0x48d, 0x491, 0x6e0, 0x800, 0x802, 0x808, 0x80b, 0x830, 0x832, 0x838, 0x83f,
	0xd90, 0xda0, 0xc0000080, 0xc0000081, 0xc0000082, 0xc0000084, 0xc0000100, 0xc0000101,
	0xc0000102, 0xc0000103, 0x4b564d00, 0x4b564d01, 0x4b564d02, 0x4b564d03, 0x4b564d04,
	0x4b564d05, 0x4b564d06, 0x4b564d07, 0x11, 0x12, 0x40000000, 0x40000001,
};
#define N_MSRS (sizeof(msr_list) / sizeof(msr_list[0]))

static uint32_t rnd_msr(struct rng *r)
{
	return chance(r, 85) ? msr_list[rnd(r, N_MSRS)] : rng_u32(r);
}

/* A value for an MSR: a GPA with the enable bit for the PV MSRs, else edges and noise. */
static uint64_t rnd_msr_value(struct rng *r, uint32_t msr)
{
	if (msr >= 0x4b564d00 && msr <= 0x4b564d07 && chance(r, 70)) {
		static const uint64_t gpas[] = { SCRATCH_GPA, RO_GPA, MMIO_GPA, HI_GPA + 0xfff0,
						 GUEST_LOW_SIZE - 0x10, 1ull << 47, 0 };

		return gpas[rnd(r, 7)] + rnd(r, 2) * 0x40 + rnd(r, 4);
	}
	return rnd_num(r);
}

static void emit_one(struct gen *g)
{
	struct rng *r = g->r;
	int c = rnd(r, 44);

	switch (c) {
	case 0: { /* OUT imm8, often to the PIC, PIT or speaker port */
		static const uint8_t dev[] = { 0x20, 0x21, 0xa0, 0xa1, 0x40, 0x41, 0x42, 0x43, 0x61 };

		mov_imm(g, 0, rng_u32(r));
		if (rnd(r, 2)) op32(g);
		b(g, rnd(r, 2) ? 0xe6 : 0xe7);
		b(g, chance(r, 40) ? dev[rnd(r, 9)] : rnd(r, 256));
		name(g, "out");
		break;
	}
	case 1: /* IN imm8 */
		b(g, rnd(r, 2) ? 0xe4 : 0xe5);
		b(g, rnd(r, 256));
		name(g, "in");
		break;
	case 2: /* IN/OUT dx */
		mov_imm(g, 2, chance(r, 80) ? rnd(r, 0x400) : rng_u32(r));
		b(g, 0xec + rnd(r, 4));
		name(g, "io-dx");
		break;
	case 3: { /* REP INS/OUTS */
		mov_imm(g, 2, rnd(r, 0x400));
		mov_imm(g, 1, chance(r, 80) ? rnd(r, 17) : rng_u32(r));
		mov_imm(g, 7, rnd_addr(g));
		mov_imm(g, 6, rnd_addr(g));
		if (chance(r, 20)) b(g, 0xfd); /* STD */
		ad32(g);
		if (chance(r, 80)) b(g, 0xf3);
		if (chance(r, 30)) op32(g);
		b(g, 0x6c + rnd(r, 4));
		b(g, 0xfc);
		name(g, "rep-ins/outs");
		break;
	}
	case 4: { /* MOV to CR */
		static const int crs[] = { 0, 0, 3, 4, 4, 8, 2, 1, 5 };
		int cr = crs[rnd(r, 9)];
		static const uint64_t vals[] = { 0x80000011, 0x80000033, 0x60000010, 0x11, 0x1,
						 0x20, 0x6f8, 0x20020, 0x3006f8, 0x4000 };

		mov_imm(g, 0, chance(r, 50) ? vals[rnd(r, 10)] ^ (chance(r, 50) ? 1ull << rnd(r, 32) : 0)
					    : rnd_num(r));
		if (cr == 8 && g->bits == 64) b(g, 0x44);
		b(g, 0x0f); b(g, 0x22); b(g, 0xc0 | (cr & 7) << 3);
		name(g, "mov-cr");
		break;
	}
	case 5: { /* MOV from CR */
		int cr = (int[]){ 0, 2, 3, 4, 8, 1 }[rnd(r, 6)];

		if (cr == 8 && g->bits == 64) b(g, 0x44);
		b(g, 0x0f); b(g, 0x20); b(g, 0xc0 | (cr & 7) << 3 | rnd(r, 8));
		name(g, "read-cr");
		break;
	}
	case 6: /* MOV to/from DR */
		mov_imm(g, 0, chance(r, 50) ? GUEST_CODE_GPA + rnd(r, 0x40) : rnd_num(r));
		b(g, 0x0f); b(g, rnd(r, 2) ? 0x23 : 0x21); b(g, 0xc0 | rnd(r, 8) << 3);
		name(g, "mov-dr");
		break;
	case 7: { /* WRMSR */
		uint32_t msr = rnd_msr(r);
		uint64_t v = rnd_msr_value(r, msr);

		mov_imm(g, 1, msr);
		mov_imm(g, 0, (uint32_t)v);
		mov_imm(g, 2, v >> 32);
		b(g, 0x0f); b(g, 0x30);
		name(g, "wrmsr");
		break;
	}
	case 8: /* RDMSR */
		mov_imm(g, 1, rnd_msr(r));
		b(g, 0x0f); b(g, 0x32);
		name(g, "rdmsr");
		break;
	case 9: { /* CPUID */
		static const uint32_t leaves[] = { 0, 1, 2, 4, 6, 7, 0xa, 0xb, 0xd, 0x14, 0x1f,
						   0x40000000, 0x40000001, 0x80000000, 0x80000001,
						   0x80000008, 0x8000001f };

		mov_imm(g, 0, chance(r, 80) ? leaves[rnd(r, 17)] : rng_u32(r));
		mov_imm(g, 1, rnd(r, 4));
		b(g, 0x0f); b(g, 0xa2);
		name(g, "cpuid");
		break;
	}
	case 10: /* HLT, sometimes with interrupts enabled */
		if (chance(r, 40)) b(g, 0xfb);
		b(g, 0xf4);
		name(g, "hlt");
		break;
	case 11: /* INT n, INT3, INT1, INTO */
		switch (rnd(r, 4)) {
		case 0: b(g, 0xcd); b(g, rnd(r, 256)); break;
		case 1: b(g, 0xcc); break;
		case 2: b(g, 0xf1); break;
		default: b(g, 0xce);
		}
		name(g, "int");
		break;
	case 12: /* IRET, far RET, after pushing junk */
		if (chance(r, 50)) { b(g, 0x68); imm32(g, rng_u32(r)); }
		if (g->bits == 64 && chance(r, 50)) b(g, 0x48);
		b(g, rnd(r, 3) ? 0xcf : 0xcb);
		name(g, "iret");
		break;
	case 13: { /* LGDT/LIDT of random pseudo-descriptors, SGDT/SIDT */
		mov_imm(g, 3, chance(r, 70) ? SCRATCH_GPA + rnd(r, 0x100) : rnd_addr(g));
		ad32(g);
		if (g->bits == 16 && chance(r, 50)) op32(g);
		b(g, 0x0f); b(g, 0x01); b(g, (uint8_t[]){ 0x13, 0x1b, 0x03, 0x0b }[rnd(r, 4)]);
		name(g, "lgdt/lidt");
		break;
	}
	case 14: /* LLDT/LTR/VERR/VERW/LAR/LSL with a random selector */
		mov_imm(g, 0, chance(r, 50) ? (uint32_t[]){ 0, 8, 0x10, 0x18, 0x20, 0x23 }[rnd(r, 6)] : rng_u32(r));
		b(g, 0x0f);
		if (chance(r, 70)) {
			b(g, 0x00); b(g, (uint8_t[]){ 0xd0, 0xd8, 0xe0, 0xe8, 0xc8 }[rnd(r, 5)]);
		} else {
			b(g, rnd(r, 2) ? 0x02 : 0x03); b(g, 0xc0);
		}
		name(g, "lldt/ltr");
		break;
	case 15: /* MOV SS (blocks events for one instruction), then something that exits */
		mov_imm(g, 0, chance(r, 70) ? SEL_DATA : rnd(r, 0x10000));
		b(g, 0x8e); b(g, 0xd0);
		b(g, (uint8_t[]){ 0xf4, 0xcc, 0xf1, 0xe6 }[rnd(r, 4)]);
		if (g->p[-1] == 0xe6) b(g, 0x80);
		name(g, "mov-ss");
		break;
	case 16: /* SYSCALL/SYSRET/SYSENTER/SYSEXIT */
		b(g, 0x0f); b(g, (uint8_t[]){ 0x05, 0x07, 0x34, 0x35 }[rnd(r, 4)]);
		name(g, "syscall");
		break;
	case 17: { /* XSETBV/XGETBV */
		static const uint64_t x[] = { 1, 3, 7, 0x1f, 0xe7, 0x2e7, 0x207, 0x60007, 2 };
		uint64_t v = chance(r, 80) ? x[rnd(r, 9)] : rng_u64(r);

		mov_imm(g, 1, chance(r, 90) ? 0 : rnd(r, 4));
		mov_imm(g, 0, (uint32_t)v);
		mov_imm(g, 2, v >> 32);
		b(g, 0x0f); b(g, 0x01); b(g, rnd(r, 4) ? 0xd1 : 0xd0);
		name(g, "xsetbv");
		break;
	}
	case 18: /* VMCALL/VMMCALL with a hypercall number */
		mov_imm(g, 0, chance(r, 80) ? rnd(r, 14) : rng_u32(r));
		mov_imm(g, 3, rnd_num(r));
		mov_imm(g, 1, rnd_num(r));
		b(g, 0x0f); b(g, 0x01); b(g, rnd(r, 4) ? 0xc1 : 0xd9);
		name(g, "vmcall");
		break;
	case 19: /* INVLPG, CLFLUSH */
		mov_imm(g, 3, rnd_addr(g));
		ad32(g);
		b(g, 0x0f);
		if (rnd(r, 2)) { b(g, 0x01); b(g, 0x3b); } else { b(g, 0xae); b(g, 0x3b); }
		name(g, "invlpg");
		break;
	case 20: /* WBINVD, INVD, CLTS, LMSW, SMSW */
		b(g, 0x0f);
		switch (rnd(r, 5)) {
		case 0: b(g, 0x09); break;
		case 1: b(g, 0x08); break;
		case 2: b(g, 0x06); break;
		case 3: b(g, 0x01); b(g, 0xf0); break;
		default: b(g, 0x01); b(g, 0xe0);
		}
		name(g, "wbinvd/clts");
		break;
	case 21: /* MONITOR/MWAIT */
		mov_imm(g, 0, rnd_addr(g));
		mov_imm(g, 1, rnd(r, 2));
		mov_imm(g, 2, 0);
		b(g, 0x0f); b(g, 0x01); b(g, 0xc8);
		if (chance(r, 60)) { mov_imm(g, 0, rnd(r, 0x40)); b(g, 0x0f); b(g, 0x01); b(g, 0xc9); }
		name(g, "monitor/mwait");
		break;
	case 22: /* RDTSC, RDTSCP, RDPMC, RDRAND, RDSEED, RDPID */
		switch (rnd(r, 5)) {
		case 0: b(g, 0x0f); b(g, 0x31); break;
		case 1: b(g, 0x0f); b(g, 0x01); b(g, 0xf9); break;
		case 2: mov_imm(g, 1, chance(r, 50) ? rnd(r, 8) : rng_u32(r)); b(g, 0x0f); b(g, 0x33); break;
		case 3: b(g, 0x0f); b(g, 0xc7); b(g, rnd(r, 2) ? 0xf0 : 0xf8); break;
		default: b(g, 0xf3); b(g, 0x0f); b(g, 0xc7); b(g, 0xf8);
		}
		name(g, "rdtsc/rdpmc");
		break;
	case 23: /* PAUSE */
		b(g, 0xf3); b(g, 0x90);
		name(g, "pause");
		break;
	case 24: case 25: case 26: case 27: { /* A memory access at an interesting address */
		static const char *forms[] = {
			"\x89\x03", "\x8b\x03", "\x88\x03", "\x8a\x03", "\x66\x89\x03", "\x87\x03",
			"\xf0\x0f\xc1\x03", "\x0f\xb1\x03", "\x0f\xc7\x0b", "\x0f\xc3\x03",
			"\x0f\x10\x03", "\x0f\x11\x03", "\x0f\xae\x03", "\x0f\xae\x0b", "\x0f\xae\x23",
			"\x0f\xae\x2b", "\xff\x33", "\xff\x03", "\xc7\x03", "\x0f\xb6\x03", "\xf0\x0f\xab\x03",
			"\x66\x0f\xe7\x03", "\xdd\x03", "\xd9\x3b",
		};
		int f = rnd(r, sizeof(forms) / sizeof(forms[0]));

		mov_imm(g, 3, rnd_addr(g));
		mov_imm(g, 0, rng_u32(r));
		if (f == 14 || f == 15) mov_imm(g, 2, rnd(r, 2) ? 0 : rng_u32(r)); /* xsave mask */
		ad32(g);
		if (g->bits == 64 && chance(r, 30) && forms[f][0] != 0x66 && forms[f][0] != (char)0xf0) b(g, 0x48);
		bs(g, forms[f], strlen(forms[f]));
		if (f == 18) imm32(g, rng_u32(r));
		name(g, "mem");
		break;
	}
	case 28: case 29: { /* String ops */
		mov_imm(g, 6, rnd_addr(g));
		mov_imm(g, 7, rnd_addr(g));
		mov_imm(g, 1, chance(r, 80) ? rnd(r, 64) : rng_u32(r));
		if (chance(r, 20)) b(g, 0xfd);
		ad32(g);
		if (chance(r, 30)) op32(g);
		if (chance(r, 80)) b(g, rnd(r, 4) ? 0xf3 : 0xf2);
		b(g, (uint8_t[]){ 0xa4, 0xa5, 0xaa, 0xab, 0xac, 0xad, 0xa6, 0xa7, 0xae }[rnd(r, 9)]);
		b(g, 0xfc);
		name(g, "string");
		break;
	}
	case 30: { /* Self-modifying: a store into the code a few bytes ahead */
		uint32_t ahead = (uint32_t)(g->p - g->start) + 12 + rnd(r, 16);
		/* (In real mode only "unreal" data limits reach it: #GP otherwise.) */
		mov_imm(g, 3, GUEST_CODE_GPA + ahead);
		ad32(g);
		b(g, 0xc6); b(g, 0x03); b(g, (uint8_t[]){ 0xf4, 0x90, 0xcc, 0x0f, rnd(r, 256) }[rnd(r, 5)]);
		name(g, "smc");
		break;
	}
	case 31: /* RFLAGS games: TF, IF, AC, NT, IOPL, VM via POPF */
		b(g, 0x68);
		imm32(g, 2 | (uint32_t)(1u << (uint32_t[]){ 8, 9, 18, 14, 12, 17, 10, 21 }[rnd(r, 8)]) |
		      (chance(r, 20) ? rng_u32(r) : 0));
		b(g, 0x9d);
		name(g, "popf");
		break;
	case 32: /* STI/CLI pairs, and a NOP window */
		b(g, 0xfb); b(g, 0x90); b(g, 0x90); b(g, rnd(r, 2) ? 0xfa : 0x90);
		name(g, "sti");
		break;
	case 33: /* Short jumps and calls (loops come out of negative offsets) */
		if (rnd(r, 2)) { b(g, 0xeb); b(g, chance(r, 80) ? rnd(r, 16) : rnd(r, 256)); }
		else { b(g, 0xe8); imm32(g, chance(r, 80) ? rnd(r, 16) : rng_u32(r)); }
		name(g, "jmp");
		break;
	case 34: /* UD2 and prefix soup */
		if (rnd(r, 2)) { b(g, 0x0f); b(g, 0x0b); }
		else {
			int i, n = 1 + rnd(r, 15);

			for (i = 0; i < n; i++)
				b(g, (uint8_t[]){ 0xf0, 0xf2, 0xf3, 0x66, 0x67, 0x2e, 0x26, 0x64, 0x65, 0x40, 0x48 }[rnd(r, 11)]);
			b(g, rnd(r, 256));
		}
		name(g, "ud");
		break;
	case 35: /* APIC registers: ICR (IPIs, INIT, SIPI), timer, EOI, TPR, SVR */
		mov_imm(g, 3, 0xfee00000 + (uint32_t[]){ 0x300, 0x310, 0x380, 0x320, 0xb0, 0x80, 0xf0, 0x350, 0x3e0 }[rnd(r, 9)]);
		mov_imm(g, 0, chance(r, 50) ? (uint32_t)rnd(r, 8) << 8 | (uint32_t)rnd(r, 256) | (uint32_t)rnd(r, 4) << 18 | 1u << 14
					   : rng_u32(r));
		ad32(g); op32(g); b(g, 0x89); b(g, 0x03);
		name(g, "apic");
		break;
	case 36: /* Far jump or call through a random selector */
		if (g->bits == 64) {
			mov_imm(g, 3, SCRATCH_GPA + rnd(r, 0x100));
			b(g, 0xff); b(g, rnd(r, 2) ? 0x2b : 0x1b);
		} else {
			op32(g); b(g, rnd(r, 2) ? 0xea : 0x9a);
			imm32(g, rng_u32(r) & 0xffff);
			if (g->bits == 16) { b(g, rnd(r, 256)); b(g, 0); }
			b(g, rnd(r, 256)); b(g, rnd(r, 2) ? 0 : rnd(r, 256));
		}
		name(g, "far");
		break;
	case 37: /* Segment register loads */
		mov_imm(g, 0, chance(r, 60) ? (uint32_t[]){ 0, 8, 0x10, 0x18, 0x20, 0x13 }[rnd(r, 6)] : rng_u32(r));
		b(g, 0x8e); b(g, (uint8_t[]){ 0xd8, 0xc0, 0xe0, 0xe8 }[rnd(r, 4)]);
		name(g, "mov-seg");
		break;
	case 38: /* FPU/SSE state, with MXCSR loads from scratch memory */
		mov_imm(g, 3, SCRATCH_GPA + rnd(r, 0x100));
		ad32(g);
		b(g, 0x0f); b(g, 0xae); b(g, rnd(r, 2) ? 0x13 : 0x1b);
		if (chance(r, 30)) { b(g, 0xdb); b(g, 0xe3); } /* fninit */
		name(g, "ldmxcsr");
		break;
	case 39: /* PUSH/POP storms near the stack top and across pages */
		mov_imm(g, 4, chance(r, 70) ? GUEST_STACK_TOP - rnd(r, 0x20) : rnd_addr(g));
		b(g, 0x50 + rnd(r, 8)); b(g, 0x58 + rnd(r, 8));
		name(g, "stack");
		break;
	case 40: /* A long countdown loop: the run timer usually ends it */
		if (chance(r, 30)) {
			mov_imm(g, 1, 1 + rnd(r, 1 << 22));
			b(g, 0xe2); b(g, 0xfe); /* loop . */
			name(g, "spin");
		}
		break;
	case 41: /* ENTER/LEAVE with odd sizes */
		b(g, 0xc8); b(g, rnd(r, 256)); b(g, rnd(r, 256)); b(g, rnd(r, 32));
		b(g, 0xc9);
		name(g, "enter");
		break;
	default: { /* A few random bytes */
		int i, n = 1 + rnd(r, 8);

		for (i = 0; i < n; i++)
			b(g, rnd(r, 256));
		name(g, "bytes");
	}
	}
}

/* ---- VMs and vCPU state ----------------------------------------------------------------- */

static void *add_slot(uint32_t slot, uint64_t gpa, size_t size, uint32_t flags)
{
	struct kvm_userspace_memory_region r;
	void *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (mem == MAP_FAILED)
		BAIL("mmap");
	r.slot = slot;
	r.flags = flags;
	r.guest_phys_addr = gpa;
	r.memory_size = size;
	r.userspace_addr = (uintptr_t)mem;
	fuzz_count(ioctl(G.vm.fd, KVM_SET_USER_MEMORY_REGION, &r), errno);
	return mem;
}

static void enable_cap(int fd, uint32_t cap, uint64_t a0)
{
	struct kvm_enable_cap c = { .cap = cap, .args = { a0 } };

	fuzz_count(ioctl(fd, KVM_ENABLE_CAP, &c), errno);
}

static void gvm_destroy(void)
{
	int i;

	if (!G.mem)
		return;
	for (i = 0; i < NVCPUS; i++) {
		munmap(G.v[i].run, G.v[i].run_size);
		close(G.v[i].fd);
	}
	close(G.vm.fd);
	close(G.vm.sys_fd);
	munmap(G.mem, GUEST_LOW_SIZE);
	munmap(G.hi, 0x100000);
	munmap(G.ro, 0x10000);
	memset(&G, 0, sizeof(G));
}

/* A VM with random capabilities, three slots and two vCPUs. */
static void gvm_create(struct rng *r)
{
	int i;

	gvm_destroy();
	G.vm = vm_create();
	n_vms++;
	fuzz_count(ioctl(G.vm.fd, KVM_SET_TSS_ADDR, 0xfffbd000), errno);
	/* No irqchip, the split one, or the full one (PIC, I/O APIC, maybe the PIT). */
	G.full_irqchip = chance(r, 35);
	G.lapic = G.full_irqchip || chance(r, 50);
	if (G.full_irqchip) {
		struct kvm_pit_config pit = { .flags = rnd(r, 2) ? KVM_PIT_SPEAKER_DUMMY : 0 };

		fuzz_count(ioctl(G.vm.fd, KVM_CREATE_IRQCHIP, 0), errno);
		if (chance(r, 70))
			fuzz_count(ioctl(G.vm.fd, KVM_CREATE_PIT2, &pit), errno);
	} else if (G.lapic) {
		enable_cap(G.vm.fd, KVM_CAP_SPLIT_IRQCHIP, 24);
	}
	if (chance(r, 30))
		enable_cap(G.vm.fd, KVM_CAP_EXIT_ON_EMULATION_FAILURE, 1);
	if (chance(r, 20)) {
		G.user_msr = 1;
		enable_cap(G.vm.fd, KVM_CAP_X86_USER_SPACE_MSR, 7);
	}
	if (chance(r, 10))
		enable_cap(G.vm.fd, KVM_CAP_X86_DISABLE_EXITS, rnd(r, 16) & fuzz_disable_exits_mask());
	if (chance(r, 20))
		enable_cap(G.vm.fd, KVM_CAP_MSR_PLATFORM_INFO, rnd(r, 2));
	if (chance(r, 15)) {
		static uint8_t bitmap[0x400];
		struct kvm_msr_filter f = { .flags = rnd(r, 2) };

		rng_fill(r, bitmap, sizeof(bitmap));
		f.ranges[0] = (struct kvm_msr_filter_range){ .flags = 1 + rnd(r, 3), .nmsrs = 0x2000,
							     .base = rnd(r, 2) ? 0 : 0xc0000000,
							     .bitmap = bitmap };
		fuzz_count(ioctl(G.vm.fd, KVM_X86_SET_MSR_FILTER, &f), errno);
	}
	if (chance(r, 20)) {
		struct kvm_coalesced_mmio_zone z = { .addr = MMIO_GPA, .size = 0x1000 };

		fuzz_count(ioctl(G.vm.fd, KVM_REGISTER_COALESCED_MMIO, &z), errno);
	}
	if (chance(r, 20)) {
		struct kvm_ioeventfd e = { .addr = MMIO_GPA + 0x100, .len = 4,
					   .fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC) };

		fuzz_count(ioctl(G.vm.fd, KVM_IOEVENTFD, &e), errno);
	}
	G.mem = add_slot(0, 0, GUEST_LOW_SIZE, 0);
	G.hi = add_slot(1, HI_GPA, 0x100000, chance(r, 30) ? KVM_MEM_LOG_DIRTY_PAGES : 0);
	G.ro = add_slot(2, RO_GPA, 0x10000, KVM_MEM_READONLY);
	rng_fill(r, G.ro, 0x10000);
	for (i = 0; i < NVCPUS; i++) {
		G.v[i] = vcpu_create(&G.vm, i);
		fuzz_count(ioctl(G.v[i].fd, KVM_SET_CPUID2, cpuid), errno);
	}
}

/* The handler stubs (mov $vec, %al; out %al, $0xef; hlt) and the vector tables. */
static void write_stubs(int bits, int no_idt)
{
	int v;

	for (v = 0; v < 256; v++) {
		uint8_t *s = G.mem + STUB_GPA + 8 * v;

		s[0] = 0xb0; s[1] = v; s[2] = 0xe6; s[3] = PORT_EXC; s[4] = 0xf4;
		s[5] = 0xeb; s[6] = 0xfd; /* back to the HLT if woken up */
		if (bits == 16)
			((uint32_t *)G.mem)[v] = STUB_GPA + 8 * v; /* IVT: segment 0 */
		else if (bits == 32)
			idt_set_gate32(G.mem, v, STUB_GPA + 8 * v);
		else
			idt_set_gate64(G.mem, v, STUB_GPA + 8 * v);
	}
	if (no_idt)
		memset(G.mem + GUEST_IDT_GPA, 0, 0x1000);
}

static long set_ioctl(int fd, unsigned long req, void *arg)
{
	long ret = fuzz_count(ioctl(fd, req, arg), errno);

	if (ret < 0)
		n_set_fail++;
	return ret;
}

/* Puts vCPU V in MODE with the program's registers; resets the state programs mutate. */
static void vcpu_reset(struct rng *r, struct vcpu *v, int bits, int no_idt)
{
	struct kvm_sregs sregs;
	struct kvm_regs regs;
	struct kvm_vcpu_events ev;
	struct kvm_debugregs dr;
	struct kvm_guest_debug gd;
	struct kvm_mp_state mp = { KVM_MP_STATE_RUNNABLE };
	struct kvm_xcrs xcrs;
	struct kvm_fpu fpu;

	memset(&gd, 0, sizeof(gd));
	fuzz_count(ioctl(v->fd, KVM_SET_GUEST_DEBUG, &gd), errno);
	memset(&ev, 0, sizeof(ev));
	fuzz_count(ioctl(v->fd, KVM_SET_VCPU_EVENTS, &ev), errno);
	fuzz_count(ioctl(v->fd, KVM_SET_MP_STATE, &mp), errno);
	memset(&dr, 0, sizeof(dr));
	dr.dr6 = 0xffff0ff0;
	dr.dr7 = 0x400;
	fuzz_count(ioctl(v->fd, KVM_SET_DEBUGREGS, &dr), errno);
	memset(&xcrs, 0, sizeof(xcrs));
	xcrs.nr_xcrs = 1;
	xcrs.xcrs[0].value = 1;
	fuzz_count(ioctl(v->fd, KVM_SET_XCRS, &xcrs), errno);
	memset(&fpu, 0, sizeof(fpu));
	fpu.fcw = 0x37f;
	fpu.mxcsr = 0x1f80;
	fuzz_count(ioctl(v->fd, KVM_SET_FPU, &fpu), errno);

	if (fuzz_count(ioctl(v->fd, KVM_GET_SREGS, &sregs), errno))
		return;
	guest_gdt_init(G.mem);
	sregs.gdt.base = GUEST_GDT_GPA;
	sregs.gdt.limit = GDT_LIMIT;
	sregs.tr = seg_tss();
	sregs.ldt = (struct kvm_segment){ .limit = 0xffff, .type = 2, .present = 1, .unusable = 1 };
	sregs.cr2 = 0;
	sregs.cr8 = 0;
	if (bits == 16) {
		struct kvm_segment s = { .base = 0, .limit = 0xffff, .selector = 0, .type = 3,
					 .present = 1, .s = 1 };

		sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = s;
		if (chance(r, 30)) /* "unreal" mode: 4 GiB data limits */
			sregs.ds.limit = sregs.es.limit = 0xffffffff, sregs.ds.g = sregs.es.g = 1;
		s.type = 0xb;
		s.selector = GUEST_CODE_GPA >> 4;
		s.base = GUEST_CODE_GPA;
		sregs.cs = s;
		sregs.idt.base = 0;
		sregs.idt.limit = no_idt ? 0 : 0x3ff;
		sregs.cr0 = CR0_ET | CR0_NE;
		sregs.cr3 = 0;
		sregs.cr4 = 0;
		sregs.efer = 0;
	} else {
		sregs.cs = bits == 64 ? seg_code64() : seg_code32();
		sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = seg_data();
		sregs.idt.base = GUEST_IDT_GPA;
		sregs.idt.limit = no_idt ? 0 : bits == 64 ? 0xfff : 0x7ff;
		sregs.cr0 = CR0_PE | CR0_ET | CR0_NE | (bits == 64 ? CR0_PG : 0);
		sregs.cr3 = GUEST_PML4_GPA;
		sregs.cr4 = bits == 64 ? CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT : 0;
		sregs.efer = bits == 64 ? EFER_LME | EFER_LMA | EFER_SCE : 0;
		if (bits == 32 && chance(r, 20)) {
			/* 32-bit paging with PAE through the same tables' low 4 GiB. */
			sregs.cr0 |= CR0_PG;
			sregs.cr3 = PAE_PDPT_GPA;
			sregs.cr4 |= CR4_PAE;
		}
	}
	if (chance(r, 10))
		mutate(r, &sregs, sizeof(sregs));
	set_ioctl(v->fd, KVM_SET_SREGS, &sregs);

	memset(&regs, 0, sizeof(regs));
	rng_fill(r, &regs, sizeof(regs));
	regs.rip = bits == 16 ? 0 : GUEST_CODE_GPA;
	regs.rsp = bits == 16 ? 0xfff0 : GUEST_STACK_TOP - 0x100;
	regs.rflags = 2;
	if (chance(r, 10))
		regs.rflags |= 1ull << (int[]){ 8, 9, 18, 14, 17, 12, 21 }[rnd(r, 7)];
	if (bits != 64) {
		/* Upper halves are not reachable outside long mode, but set anyway sometimes. */
		if (chance(r, 80)) {
			regs.rax &= 0xffffffff; regs.rbx &= 0xffffffff; regs.rcx &= 0xffffffff;
			regs.rdx &= 0xffffffff; regs.rsi &= 0xffffffff; regs.rdi &= 0xffffffff;
			regs.rbp &= 0xffffffff;
		}
	}
	set_ioctl(v->fd, KVM_SET_REGS, &regs);
}

/* Random changes to the state through the vCPU ioctls, each rejected or taken. */
static void mutate_state(struct rng *r, struct vcpu *v)
{
	uint8_t buf[16384];

	if (chance(r, 20)) {
		struct { struct kvm_msrs h; struct kvm_msr_entry e[4]; } m;
		int i;

		memset(&m, 0, sizeof(m));
		m.h.nmsrs = 1 + rnd(r, 4);
		for (i = 0; i < 4; i++) {
			m.e[i].index = rnd_msr(r);
			m.e[i].data = rnd_msr_value(r, m.e[i].index);
		}
		set_ioctl(v->fd, KVM_SET_MSRS, &m);
	}
	if (chance(r, 10)) {
		struct kvm_xcrs x;

		memset(&x, 0, sizeof(x));
		x.nr_xcrs = chance(r, 90) ? 1 : rnd(r, 20);
		x.xcrs[0].xcr = chance(r, 90) ? 0 : rng_u32(r);
		x.xcrs[0].value = chance(r, 70) ? (uint64_t[]){ 1, 3, 7, 0x1f, 0xe7, 0x2e7, 0x207, 2 }[rnd(r, 8)]
						: rng_u64(r);
		set_ioctl(v->fd, KVM_SET_XCRS, &x);
	}
	if (chance(r, 10)) {
		struct kvm_debugregs d;
		int i;

		memset(&d, 0, sizeof(d));
		for (i = 0; i < 4; i++)
			d.db[i] = chance(r, 60) ? GUEST_CODE_GPA + rnd(r, 0x40) : rnd_addr(&(struct gen){ .r = r, .bits = 64 });
		d.dr6 = chance(r, 80) ? 0xffff0ff0 : rng_u64(r);
		d.dr7 = chance(r, 80) ? 0x400 | rnd(r, 0x100) | (uint64_t)rng_u32(r) << 16 : rng_u64(r);
		set_ioctl(v->fd, KVM_SET_DEBUGREGS, &d);
	}
	if (chance(r, 10)) {
		struct kvm_vcpu_events e;

		memset(&e, 0, sizeof(e));
		fuzz_count(ioctl(v->fd, KVM_GET_VCPU_EVENTS, &e), errno);
		switch (rnd(r, 5)) {
		case 0:
			e.exception.injected = 1;
			e.exception.nr = rnd(r, 32);
			e.exception.has_error_code = rnd(r, 2);
			e.exception.error_code = rng_u32(r);
			break;
		case 1:
			e.nmi.pending = 1;
			e.nmi.masked = rnd(r, 2);
			break;
		case 2:
			e.interrupt.injected = 1;
			e.interrupt.nr = rnd(r, 256);
			e.interrupt.soft = rnd(r, 2);
			break;
		case 3:
			e.interrupt.shadow = rnd(r, 4);
			e.flags |= KVM_VCPUEVENT_VALID_SHADOW;
			break;
		default:
			mutate(r, &e, sizeof(e));
		}
		set_ioctl(v->fd, KVM_SET_VCPU_EVENTS, &e);
	}
	if (chance(r, 5)) {
		struct kvm_guest_debug d;
		int i;

		memset(&d, 0, sizeof(d));
		d.control = KVM_GUESTDBG_ENABLE | (uint32_t)rnd(r, 16) << 1 | (uint32_t)rnd(r, 4) << 16;
		for (i = 0; i < 4; i++)
			d.arch.debugreg[i] = GUEST_CODE_GPA + rnd(r, 0x40);
		d.arch.debugreg[7] = rng_u32(r) | 0x400;
		set_ioctl(v->fd, KVM_SET_GUEST_DEBUG, &d);
	}
	if (chance(r, 4) && xsave_size <= (long)sizeof(buf)) {
		memset(buf, 0, sizeof(buf));
		if (!fuzz_count(ioctl(v->fd, KVM_GET_XSAVE, buf), errno)) {
			mutate(r, buf, chance(r, 50) ? 32 : xsave_size);
			fuzz_sanitize_fpu(buf, 1);
			set_ioctl(v->fd, KVM_SET_XSAVE, buf);
		}
	}
	if (chance(r, 4)) {
		struct kvm_fpu f;

		if (!fuzz_count(ioctl(v->fd, KVM_GET_FPU, &f), errno)) {
			mutate(r, &f, sizeof(f));
			fuzz_sanitize_fpu(&f, 0);
			set_ioctl(v->fd, KVM_SET_FPU, &f);
		}
	}
	if (chance(r, 5) && G.full_irqchip) {
		struct kvm_irqchip c = { .chip_id = rnd(r, 3) };
		struct kvm_pit_state2 p;
		struct kvm_irq_level l = { .irq = rnd(r, 30), .level = rnd(r, 2) };

		if (!fuzz_count(ioctl(G.vm.fd, KVM_GET_IRQCHIP, &c), errno)) {
			mutate(r, &c.chip, sizeof(c.chip.ioapic));
			set_ioctl(G.vm.fd, KVM_SET_IRQCHIP, &c);
		}
		if (!fuzz_count(ioctl(G.vm.fd, KVM_GET_PIT2, &p), errno) && chance(r, 50)) {
			mutate(r, &p, sizeof(p));
			set_ioctl(G.vm.fd, KVM_SET_PIT2, &p);
		}
		fuzz_count(ioctl(G.vm.fd, KVM_IRQ_LINE, &l), errno);
	}
	if (chance(r, 5) && G.lapic) {
		struct kvm_lapic_state l;

		if (!fuzz_count(ioctl(v->fd, KVM_GET_LAPIC, &l), errno)) {
			mutate(r, &l, sizeof(l));
			set_ioctl(v->fd, KVM_SET_LAPIC, &l);
		}
	}
	if (chance(r, 3)) {
		struct kvm_mp_state mp = { chance(r, 80) ? rnd(r, 9) : rng_u32(r) };

		set_ioctl(v->fd, KVM_SET_MP_STATE, &mp);
	}
	if (chance(r, 3))
		fuzz_count(ioctl(v->fd, rnd(r, 2) ? KVM_NMI : KVM_SMI, 0), errno);
	if (chance(r, 3)) {
		struct kvm_interrupt irq = { rnd(r, 256) };

		fuzz_count(ioctl(v->fd, KVM_INTERRUPT, &irq), errno);
	}
	if (chance(r, 3)) {
		struct kvm_sregs2 s2;

		if (!fuzz_count(ioctl(v->fd, KVM_GET_SREGS2, &s2), errno)) {
			mutate(r, &s2, sizeof(s2));
			set_ioctl(v->fd, KVM_SET_SREGS2, &s2);
		}
	}
}

/* ---- Running a program --------------------------------------------------------------------- */

static const char *mode_name(int bits)
{
	return bits == 16 ? "real" : bits == 32 ? "protected" : "long";
}

/* Runs vCPU V until the program ends; returns the number of exits. */
static int run_program(struct rng *r, struct vcpu *v, long prog)
{
	int exits, err;

	for (exits = 0; exits < MAX_EXITS; exits++) {
		struct kvm_run *run = v->run;
		long ret = fuzz_run(v->fd, 2000 + rnd(r, 20000), &err);

		if (ret < 0) {
			if (err != EINTR)
				n_bad_run++;
			if (opts.verbose)
				printf("P%ld: KVM_RUN -> %s\n", prog, errno_name(err));
			break;
		}
		n_exits++;
		exit_hist[run->exit_reason < 64 ? run->exit_reason : 0]++;
		if (opts.verbose)
			printf("P%ld: exit %s\n", prog, exit_str(v));
		switch (run->exit_reason) {
		case KVM_EXIT_IO:
			if (run->io.port == PORT_EXC && run->io.direction == KVM_EXIT_IO_OUT) {
				vec_hist[*io_data(v)]++;
				break;
			}
			if (run->io.direction == KVM_EXIT_IO_IN) {
				uint64_t n = (uint64_t)run->io.size * run->io.count;

				if (run->io.data_offset < v->run_size && n <= v->run_size - run->io.data_offset)
					rng_fill(r, io_data(v), n);
			}
			continue;
		case KVM_EXIT_MMIO:
			if (!run->mmio.is_write)
				rng_fill(r, run->mmio.data, 8);
			continue;
		case KVM_EXIT_X86_RDMSR:
		case KVM_EXIT_X86_WRMSR:
			run->msr.error = rnd(r, 2);
			run->msr.data = rnd_num(r);
			continue;
		case KVM_EXIT_DEBUG:
		case KVM_EXIT_IRQ_WINDOW_OPEN:
		case KVM_EXIT_INTR:
			continue;
		case KVM_EXIT_HYPERCALL:
			run->hypercall.ret = rnd_num(r);
			continue;
		default:
			/* HLT, SHUTDOWN, FAIL_ENTRY, INTERNAL_ERROR, SYSTEM_EVENT, ... */
			return exits + 1;
		}
		if (run->exit_reason == KVM_EXIT_IO)
			break; /* the exception report: the stub halts next */
	}
	return exits;
}

static void one_program(long prog)
{
	static char what[48];
	struct rng r = rng_derive(opts.seed, prog, 7);
	int bits = (int[]){ 16, 32, 64, 64 }[rnd(&r, 4)], no_idt = chance(&r, 10);
	int vi = rnd(&r, NVCPUS), random_bytes = chance(&r, 25), len, exits;
	struct vcpu *v;
	struct gen g;

	snprintf(what, sizeof(what), "program %ld", prog);
	fuzz_busy(0, what);
	if (!G.mem || prog % VM_PROGRAMS == 0) {
		struct rng vr = rng_derive(opts.seed, prog / VM_PROGRAMS, 8);

		gvm_create(&vr);
	}
	v = &G.v[vi];
	/* Guest memory: page tables (and the high PML4 entry), stubs, code, scratch. */
	guest_page_tables_init(G.mem);
	{
		uint64_t *pml4 = (uint64_t *)(G.mem + GUEST_PML4_GPA);
		uint64_t *pdpt = (uint64_t *)(G.mem + PDPT_HI_GPA);
		uint64_t *pae = (uint64_t *)(G.mem + PAE_PDPT_GPA);
		int i;

		for (i = 0; i < 4; i++)
			pae[i] = (GUEST_PD_GPA + i * 0x1000) | PTE_P;
		pml4[1] = PDPT_HI_GPA | PTE_P | PTE_RW;
		for (i = 0; i < 512; i++)
			pdpt[i] = (1ull << (36 + i % 16)) | PTE_P | PTE_RW | PTE_PS;
	}
	write_stubs(bits, no_idt);
	rng_fill(&r, G.mem + SCRATCH_GPA, 0x1000);
	if (chance(&r, 20)) {
		uint8_t *page = G.hi + rnd(&r, 0x100) * 0x1000;

		rng_fill(&r, page, 0x1000);
	}
	memset(&g, 0, sizeof(g));
	g.r = &r;
	g.bits = bits;
	g.start = g.p = G.mem + GUEST_CODE_GPA;
	g.end = g.start + CODE_MAX - 16;
	if (random_bytes) {
		len = 16 + rnd(&r, 512);
		rng_fill(&r, g.p, len);
		g.p += len;
		name(&g, "random-bytes");
	} else {
		int i, n = 1 + rnd(&r, 24);

		for (i = 0; i < n; i++)
			emit_one(&g);
	}
	len = g.p - g.start;
	memset(g.p, 0xf4, 16); /* HLT after the end */
	vcpu_reset(&r, v, bits, no_idt);
	if (chance(&r, 60))
		mutate_state(&r, v);
	if (opts.verbose) {
		int i;

		printf("P%ld: vm %ld vcpu %d %s%s len %d: %s\nP%ld: code", prog, n_vms, vi,
		       mode_name(bits), no_idt ? " no-idt" : "", len, g.names, prog);
		for (i = 0; i < len; i++)
			printf(" %02x", g.start[i]);
		printf("\n");
		/* -v 2 (FUZZ_VERBOSE=2): let the console drain, should this program hang the host. */
		if (opts.verbose > 1)
			usleep(50000);
	}
	exits = run_program(&r, v, prog);
	(void)exits;
	n_programs++;
	fuzz_idle(0);
}

/* A fresh VM runs a real-mode guest to OUT 0x42 and HLT. */
GUEST_CODE(check_guest, 16,
	"mov $0x42, %al\n"
	"out %al, $0x10\n"
	"hlt\n");

static int check_fresh_vm(char *diag, size_t n)
{
	struct guest g = guest_create();
	int ok, err;

	guest_load(g.mem, 0x1000, check_guest);
	vcpu_set_real_mode(&g.v, 0x1000);
	ok = !fuzz_run(g.v.fd, 2000000, &err) && is_out(&g.v, 0x10, 1) && *io_data(&g.v) == 0x42;
	snprintf(diag, n, "first exit %s (%s)", exit_str(&g.v), errno_name(err));
	if (ok) {
		ok = !fuzz_run(g.v.fd, 2000000, &err) && g.v.run->exit_reason == KVM_EXIT_HLT;
		snprintf(diag, n, "second exit %s (%s)", exit_str(&g.v), errno_name(err));
	}
	guest_destroy(&g);
	return ok;
}

int main(int argc, char **argv)
{
	const char *mark, *splat;
	char diag[256];
	long prog, ms, first = 0;
	int sys, i;

	/* -f FIRST: start at program FIRST (its VM is the one it would have had). */
	for (i = 1; i < argc - 1; i++)
		if (!strcmp(argv[i], "-f")) {
			first = strtol(argv[i + 1], NULL, 0);
			memmove(&argv[i], &argv[i + 2], (argc - i - 1) * sizeof(argv[0]));
			argc -= 2;
			break;
		}
	fuzz_parse(&opts, argc, argv);
	/* FUZZ_FIRST stands for -f in the image (see lib/fuzz.h). */
	if (opts.tap && getenv("FUZZ_FIRST"))
		first = strtol(getenv("FUZZ_FIRST"), NULL, 0);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (opts.tap) {
		if (!opts.iterations && !opts.seconds)
			opts.iterations = TAP_PROGRAMS;
		opts.progress = opts.progress == 1000 ? 500 : opts.progress;
		tap_plan(3);
	} else if (opts.progress == 1000) {
		opts.progress = 500;
	}
	printf("# fuzz_guest: seed %#llx, %ld programs from %ld, %ld s, device %s\n",
	       (unsigned long long)opts.seed, opts.iterations, first, opts.seconds, kvm_device());
	fuzz_signals_init();
	fuzz_ptr_init();
	fuzz_thread_timer();
	sys = kvm_open();
	cpuid = supported_cpuid(sys);
	xsave_size = ioctl(sys, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
	if (xsave_size < 4096)
		xsave_size = 4096;
	close(sys);
	mark = fuzz_kmsg_mark("fuzz_guest");
	fuzz_watchdog_start();
	{
		long start = monotonic_ms();

		for (prog = first; ; prog++) {
			if (opts.iterations && prog - first >= opts.iterations)
				break;
			if (opts.seconds && monotonic_ms() - start >= opts.seconds * 1000)
				break;
			one_program(prog);
			if (n_programs % opts.progress == 0)
				printf("# progress: %ld programs, %ld exits, %ld ioctls, %ld s\n", n_programs,
				       n_exits, fuzz_ioctls, (monotonic_ms() - start) / 1000);
		}
		ms = monotonic_ms() - start;
	}
	gvm_destroy();
	fuzz_print_errnos("# ");
	printf("# exits:");
	for (i = 0; i < 64; i++)
		if (exit_hist[i])
			printf(" %s=%ld", exit_name(i), exit_hist[i]);
	printf("\n# exception vectors reported:");
	for (i = 0; i < 256; i++)
		if (vec_hist[i])
			printf(" %d=%ld", i, vec_hist[i]);
	printf("\n# summary: seed %#llx vms %ld programs %ld exits %ld ioctls %ld rejected-sets %ld "
	       "run-errors %ld faults %ld ms %ld programs/min %ld\n", (unsigned long long)opts.seed,
	       n_vms, n_programs, n_exits, fuzz_ioctls, n_set_fail, n_bad_run, fuzz_faults, ms,
	       ms ? n_programs * 60000 / ms : 0);
	if (!opts.tap)
		return 0;
	tap_ok(n_programs > 0 && (!opts.iterations || n_programs == opts.iterations),
	       "%ld guest programs ran (%ld exits) and the process survived",
	       n_programs, n_exits);
	tap_ok(check_fresh_vm(diag, sizeof(diag)),
	       "after the campaign, a fresh VM runs a real-mode guest to OUT 0x42 and HLT (%s)", diag);
	splat = mark[0] ? fuzz_kmsg_splat(mark) : NULL;
	tap_ok(!splat, "the kernel log since the start is clean%s%s",
	       splat ? ": " : "", splat ? splat : "");
	tap_done();
}

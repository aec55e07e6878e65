// SPDX-License-Identifier: GPL-2.0
/*
 * The guest's CPUID is the table userspace sets (arch/x86/kvm/cpuid.c).
 *
 * The test takes KVM_GET_SUPPORTED_CPUID, changes some values (leaf 1 signature and
 * feature bits, the brand string, the hypervisor signature at 0x40000000) and sets it with
 * KVM_SET_CPUID2. A guest executes CPUID for a list of leaves (with their subleaf where the
 * index is significant) and OUTs EAX, EBX, ECX, EDX: each must equal the table. KVM owns
 * a few bits and updates them at run time, which are not compared: leaf 1 ECX.OSXSAVE
 * (CR4.OSXSAVE) and EDX.APIC (APIC_BASE enable), leaf 7 ECX.OSPKE (CR4.PKE), and leaf 0xD
 * subleaves 0 and 1 EBX (the XSAVE area size for XCR0 / XSS).
 *
 * KVM_GET_CPUID2: a fresh vCPU has no entries; too small an nent -> E2BIG; a large enough
 * one gets exactly the entries set (same masks), its count, and nothing past them.
 * KVM_SET_CPUID2 with a huge nent -> E2BIG. After KVM_RUN, setting the same table again
 * works and setting a different one -> EINVAL (kvm_cpuid_check_equal).
 */
#include "lib/rkvm_test.h"

#define LIST_GPA GUEST_DATA_GPA
#define PORT 0x60	/* 0x60..0x63: EAX, EBX, ECX, EDX */
#define CANARY 0xa5a5a5a5u

GUEST_CODE(cpuid_guest, 32,
	"mov $" XSTR(LIST_GPA) ", %esi\n"
	"1: mov (%esi), %eax\n"
	"cmp $-1, %eax\n"
	"je 2f\n"
	"mov 4(%esi), %ecx\n"
	"cpuid\n"
	"out %eax, $" XSTR(PORT) "\n"
	"mov %ebx, %eax\n"
	"out %eax, $" XSTR(PORT) "+1\n"
	"mov %ecx, %eax\n"
	"out %eax, $" XSTR(PORT) "+2\n"
	"mov %edx, %eax\n"
	"out %eax, $" XSTR(PORT) "+3\n"
	"add $8, %esi\n"
	"jmp 1b\n"
	"2: hlt\n");

static const struct {
	uint32_t function, index;
} wanted[] = {
	{ 0, 0 }, { 1, 0 }, { 6, 0 }, { 7, 0 }, { 7, 1 }, { 0xd, 0 }, { 0xd, 1 },
	{ 0x40000000, 0 }, { 0x80000000, 0 }, { 0x80000001, 0 }, { 0x80000002, 0 },
	{ 0x80000003, 0 }, { 0x80000004, 0 }, { 0x80000008, 0 },
};
#define N_WANTED (int)(sizeof(wanted) / sizeof(wanted[0]))

static struct kvm_cpuid_entry2 *find(struct kvm_cpuid2 *c, uint32_t fn, uint32_t idx)
{
	uint32_t i;

	for (i = 0; i < c->nent; i++)
		if (c->entries[i].function == fn &&
		    (!(c->entries[i].flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) ||
		     c->entries[i].index == idx))
			return &c->entries[i];
	return NULL;
}

/* The bits KVM updates at run time, per register (EAX, EBX, ECX, EDX). */
static void runtime_mask(uint32_t fn, uint32_t idx, uint32_t mask[4])
{
	mask[0] = mask[1] = mask[2] = mask[3] = ~0u;
	if (fn == 1) {
		mask[2] &= ~(1u << 27);	/* OSXSAVE */
		mask[3] &= ~(1u << 9);	/* APIC */
	} else if (fn == 7 && idx == 0) {
		mask[2] &= ~(1u << 4);	/* OSPKE */
	} else if (fn == 0xd && idx <= 1) {
		mask[1] = 0;		/* XSAVE area size */
	}
}

static int same_entry(const struct kvm_cpuid_entry2 *a, const struct kvm_cpuid_entry2 *b)
{
	uint32_t m[4];

	runtime_mask(a->function, a->index, m);
	return a->function == b->function && a->index == b->index && a->flags == b->flags &&
	       !((a->eax ^ b->eax) & m[0]) && !((a->ebx ^ b->ebx) & m[1]) &&
	       !((a->ecx ^ b->ecx) & m[2]) && !((a->edx ^ b->edx) & m[3]);
}

static struct kvm_cpuid2 *alloc_cpuid(uint32_t room)
{
	struct kvm_cpuid2 *c = malloc(sizeof(*c) + room * sizeof(c->entries[0]));

	if (!c)
		BAIL("malloc");
	memset(c->entries, 0xa5, room * sizeof(c->entries[0]));
	c->nent = room;
	c->padding = 0;
	return c;
}

static void modify(struct kvm_cpuid2 *c)
{
	static const char brand[48] = "rkvm selftest: CPUID round trip, brand string";
	struct kvm_cpuid_entry2 *e;
	int i;

	e = find(c, 1, 0);
	if (e) {
		e->eax = 0x000806f8;		/* family 6, model 0x8f, stepping 8 */
		e->ebx = 0x00010800;		/* CLFLUSH 64 bytes, 1 logical CPU, APIC ID 0 */
		e->ecx &= ~((1u << 20) | (1u << 23));	/* no SSE4.2, no POPCNT */
	}
	for (i = 0; i < 3; i++) {
		e = find(c, 0x80000002 + i, 0);
		if (e)
			memcpy(&e->eax, brand + 16 * i, 16);
	}
	e = find(c, 0x40000000, 0);
	if (e) {
		memcpy(&e->ebx, "rkvmTESTcpid", 12);
	}
	e = find(c, 6, 0);
	if (e)
		e->eax ^= 0x10;
}

int main(void)
{
	struct kvm_cpuid2 *set, *got, *small;
	struct guest g;
	struct vcpu v1;
	uint32_t *list;
	int i, n = 0, bad, untouched;
	struct ioctl_res res;

	test_watchdog(60);
	g = guest_create();
	set = supported_cpuid(g.vm.sys_fd);
	modify(set);
	list = (uint32_t *)(g.mem + LIST_GPA);
	for (i = 0; i < N_WANTED; i++) {
		if (!find(set, wanted[i].function, wanted[i].index))
			continue;
		list[2 * n] = wanted[i].function;
		list[2 * n + 1] = wanted[i].index;
		n++;
	}
	list[2 * n] = 0xffffffff;
	tap_plan(4 + n + 1 + 4 + 2);

	/* KVM_GET_CPUID2 of a vCPU that never had a CPUID table. */
	v1 = vcpu_create(&g.vm, 1);
	got = alloc_cpuid(8);
	res = do_ioctl(v1.fd, KVM_GET_CPUID2, (unsigned long)got);
	tap_ok(res.r == 0 && got->nent == 0 && got->entries[0].function == 0xa5a5a5a5,
	       "KVM_GET_CPUID2 of a new vCPU -> 0 (got %s), nent 0 (got %u), nothing written",
	       res_str(res), got->nent);
	free(got);

	CHECK_RET(g.v.fd, KVM_SET_CPUID2, set, 0,
		  "KVM_SET_CPUID2 with the supported table, %u entries, modified", set->nent);
	small = alloc_cpuid(0);
	small->nent = 0x10000;
	CHECK_ERRNO(g.v.fd, KVM_SET_CPUID2, small, E2BIG, "KVM_SET_CPUID2 with nent 0x10000");
	small->nent = set->nent - 1;
	CHECK_ERRNO(g.v.fd, KVM_GET_CPUID2, small, E2BIG, "KVM_GET_CPUID2 with nent %u (one short)",
		    set->nent - 1);

	/* The guest reads its CPUID. */
	guest_load(g.mem, GUEST_CODE_GPA, cpuid_guest);
	vcpu_set_protected_mode(&g.v, g.mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
	for (i = 0; i < n; i++) {
		uint32_t fn = list[2 * i], idx = list[2 * i + 1], r[4], m[4];
		struct kvm_cpuid_entry2 *e = find(set, fn, idx);
		int k, ok = 1;

		runtime_mask(fn, idx, m);
		for (k = 0; k < 4 && ok; k++) {
			vcpu_run(&g.v);
			ok = is_out(&g.v, PORT + k, 4);
			r[k] = io_out_value(&g.v);
		}
		tap_ok(ok && !((r[0] ^ e->eax) & m[0]) && !((r[1] ^ e->ebx) & m[1]) &&
			       !((r[2] ^ e->ecx) & m[2]) && !((r[3] ^ e->edx) & m[3]),
		       "guest CPUID(%#x, %u) = %08x %08x %08x %08x (table %08x %08x %08x %08x%s)", fn,
		       idx, r[0], r[1], r[2], r[3], e->eax, e->ebx, e->ecx, e->edx,
		       ok ? "" : exit_str(&g.v));
		if (!ok)
			BAIL("unexpected exit %s", exit_str(&g.v));
	}
	vcpu_run(&g.v);
	tap_ok(g.v.run->exit_reason == KVM_EXIT_HLT, "the guest halts after %d leaves (got %s)", n,
	       exit_str(&g.v));

	/* KVM_GET_CPUID2 returns the table. */
	got = alloc_cpuid(set->nent + 4);
	res = do_ioctl(g.v.fd, KVM_GET_CPUID2, (unsigned long)got);
	tap_ok(res.r == 0 && got->nent == set->nent,
	       "KVM_GET_CPUID2 with room for %u -> 0 (got %s), nent %u (want %u)", set->nent + 4,
	       res_str(res), got->nent, set->nent);
	bad = 0;
	for (i = 0; i < (int)set->nent && i < (int)got->nent; i++) {
		struct kvm_cpuid_entry2 *e = find(got, set->entries[i].function,
						  set->entries[i].index);

		if (!e || !same_entry(&set->entries[i], e)) {
			if (!bad++)
				tap_diag("entry %#x/%u differs", set->entries[i].function,
					 set->entries[i].index);
		}
	}
	tap_ok(!bad, "every entry set comes back (but KVM's run-time bits): %d differ", bad);
	untouched = 1;
	for (i = set->nent; i < (int)set->nent + 4; i++)
		untouched &= got->entries[i].function == 0xa5a5a5a5 && got->entries[i].eax == 0xa5a5a5a5;
	tap_ok(untouched, "nothing written past the %u entries", set->nent);
	got->nent = 0;
	CHECK_ERRNO(g.v.fd, KVM_GET_CPUID2, got, E2BIG, "KVM_GET_CPUID2 with nent 0");

	/* After KVM_RUN: the same table again is fine, another one is not. */
	CHECK_RET(g.v.fd, KVM_SET_CPUID2, set, 0, "after KVM_RUN: KVM_SET_CPUID2, the same table");
	find(set, 1, 0)->eax ^= 1;
	CHECK_ERRNO(g.v.fd, KVM_SET_CPUID2, set, EINVAL,
		    "after KVM_RUN: KVM_SET_CPUID2 with leaf 1 EAX changed");
	tap_done();
}

// SPDX-License-Identifier: GPL-2.0
/*
 * What a guest changed just before an OUT is what the state ioctls read at that exit,
 * and what the guest still has when it runs on, whatever userspace did in between.
 *
 * A real-mode guest loads DS, ES and FS, its GDTR and IA32_SYSENTER_ESP (an MSR whose
 * writes do not exit), then reports DS and ES through OUTs. Userspace writes the general
 * registers at the first exit without reading anything else (KVM_SET_REGS), then reads
 * the MSR and the segment registers at the second. A hypervisor that keeps part of the
 * state in the hardware after an IN or OUT (rkvm) must bring it back for each: a stale
 * copy shows the reset values, or reloads them into the guest.
 *
 * A second guest far-jumps to a new CS and runs IN: userspace answers it and reads the
 * segment registers (KVM_GET_SREGS) before KVM_RUN; the guest must get the value once
 * and go on (the IN completes at the linear RIP recorded at the exit, so CS's base must
 * be current there).
 */
#include "lib/rkvm_test.h"

#define CODE_GPA 0x1000
#define GDTR_GPA 0x1080
#define SYSENTER_ESP 0x175

/* 16-bit code; offsets in the comments. */
static const uint8_t guest_code[] = {
	0xb8, 0x34, 0x12,			/* 00: mov ax, 0x1234 */
	0x8e, 0xd8,				/* 03: mov ds, ax */
	0xb8, 0x45, 0x23,			/* 05: mov ax, 0x2345 */
	0x8e, 0xc0,				/* 08: mov es, ax */
	0xb8, 0x45, 0x03,			/* 0a: mov ax, 0x0345 */
	0x8e, 0xe0,				/* 0d: mov fs, ax */
	0x2e, 0x0f, 0x01, 0x16, 0x80, 0x10,	/* 0f: lgdt cs:[0x1080] */
	0x66, 0xb9, 0x75, 0x01, 0x00, 0x00,	/* 15: mov ecx, 0x175 */
	0x66, 0xb8, 0x34, 0x12, 0xcd, 0xab,	/* 1b: mov eax, 0xabcd1234 */
	0x66, 0x31, 0xd2,			/* 21: xor edx, edx */
	0x0f, 0x30,				/* 24: wrmsr */
	0x66, 0xe7, 0x10,			/* 26: out 0x10, eax */
	0x66, 0x31, 0xc0,			/* 29: xor eax, eax */
	0x8c, 0xd8,				/* 2c: mov ax, ds */
	0x66, 0xe7, 0x11,			/* 2e: out 0x11, eax */
	0x8c, 0xc0,				/* 31: mov ax, es */
	0x66, 0xe7, 0x12,			/* 33: out 0x12, eax */
	0xf4,					/* 36: hlt */
};

/* A far jump to 0x300:0 (CS base 0x3000), then IN AL from 0x20 and OUT EAX to 0x21. */
#define JUMP_GPA 0x2000
#define FAR_GPA 0x3000
static const uint8_t jump_code[] = { 0xea, 0x00, 0x00, 0x00, 0x03 };
static const uint8_t far_code[] = { 0xe4, 0x20, 0x66, 0xe7, 0x21, 0xf4 };

/* LGDT with a 16-bit operand: a 16-bit limit and a 24-bit base. */
static const uint8_t gdtr[] = { 0xff, 0x0f, 0x89, 0x67, 0x05, 0x00 };

static void check_sregs(struct vcpu *v, const char *when)
{
	struct kvm_sregs s;

	vcpu_get_sregs(v, &s);
	tap_ok(s.ds.selector == 0x1234 && s.ds.base == 0x12340,
	       "%s: DS %#x base %#llx (want 0x1234, 0x12340)", when, s.ds.selector,
	       (unsigned long long)s.ds.base);
	tap_ok(s.es.selector == 0x2345 && s.es.base == 0x23450 && s.fs.selector == 0x345 &&
		       s.fs.base == 0x3450,
	       "%s: ES %#x base %#llx, FS %#x base %#llx (want 0x2345/0x23450, 0x345/0x3450)", when,
	       s.es.selector, (unsigned long long)s.es.base, s.fs.selector,
	       (unsigned long long)s.fs.base);
	tap_ok(s.gdt.base == 0x56789 && s.gdt.limit == 0xfff,
	       "%s: GDTR base %#llx limit %#x (want 0x56789, 0xfff)", when,
	       (unsigned long long)s.gdt.base, s.gdt.limit);
}

int main(void)
{
	struct vm vm;
	struct vcpu v;
	struct kvm_regs regs;
	uint8_t *mem;
	uint32_t val;
	int ok;

	test_watchdog(120);
	vm = vm_create();
	tap_plan(14);
	v = real_mode_vcpu(&vm, CODE_GPA, guest_code, sizeof(guest_code), &mem);
	memcpy(mem + GDTR_GPA, gdtr, sizeof(gdtr));

	tap_ok(guest_next_out(&v, 0x10, &val), "the guest's first OUT (%s)", exit_str(&v));
	/* Only the general registers: nothing asks for the rest of the state. */
	vcpu_get_regs(&v, &regs);
	regs.rbx = 0x5a5a;
	vcpu_set_regs(&v, &regs);
	tap_ok(guest_next_out(&v, 0x11, &val) && val == 0x1234,
	       "after KVM_SET_REGS at an OUT exit the guest still has DS 0x1234 (read %#x; %s)", val,
	       exit_str(&v));
	tap_ok(vcpu_get_msr1(&v, SYSENTER_ESP) == 0xabcd1234,
	       "KVM_GET_MSRS at the next OUT exit: IA32_SYSENTER_ESP %#llx (want 0xabcd1234)",
	       (unsigned long long)vcpu_get_msr1(&v, SYSENTER_ESP));
	check_sregs(&v, "KVM_GET_SREGS at an OUT exit");
	tap_ok(guest_next_out(&v, 0x12, &val) && val == 0x2345,
	       "the guest then reads ES 0x2345 (read %#x; %s)", val, exit_str(&v));
	tap_ok(vcpu_run(&v) == KVM_EXIT_HLT, "the guest halts (%s)", exit_str(&v));
	check_sregs(&v, "KVM_GET_SREGS at HLT");
	vcpu_get_regs(&v, &regs);
	tap_ok(regs.rbx == 0x5a5a && regs.rip == CODE_GPA + sizeof(guest_code),
	       "RBX %#llx (want 0x5a5a), RIP %#llx past the HLT", (unsigned long long)regs.rbx,
	       (unsigned long long)regs.rip);

	{
		struct vm vm2 = vm_create();
		struct vcpu v2;
		struct kvm_sregs sr;
		uint8_t *mem2;

		v2 = real_mode_vcpu(&vm2, JUMP_GPA, jump_code, sizeof(jump_code), &mem2);
		memcpy(mem2 + FAR_GPA, far_code, sizeof(far_code));
		if (vcpu_run(&v2) != KVM_EXIT_IO || v2.run->io.direction != KVM_EXIT_IO_IN ||
		    v2.run->io.port != 0x20)
			BAIL("expected IN from 0x20: %s", exit_str(&v2));
		*((uint8_t *)v2.run + v2.run->io.data_offset) = 0x5a;
		vcpu_get_sregs(&v2, &sr);
		tap_ok(sr.cs.selector == 0x300 && sr.cs.base == 0x3000,
		       "after a far jump and an IN: CS %#x base %#llx (want 0x300, 0x3000)",
		       sr.cs.selector, (unsigned long long)sr.cs.base);
		val = 0;
		ok = guest_next_out(&v2, 0x21, &val) && val == 0x5a;
		tap_ok(ok, "KVM_GET_SREGS between the IN and KVM_RUN: the guest got 0x5a and went "
		       "on (OUT %#x; %s)", val, exit_str(&v2));
	}
	tap_done();
}

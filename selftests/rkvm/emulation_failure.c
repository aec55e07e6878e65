// SPDX-License-Identifier: GPL-2.0
/*
 * An MMIO access by an instruction the hypervisor cannot emulate (FLDS from an address
 * with no memory): at CPL 0, KVM_EXIT_INTERNAL_ERROR with suberror EMULATION, the
 * instruction bytes (KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES) and the exit
 * information, and a #UD waiting for the guest. With KVM_CAP_EXIT_ON_EMULATION_FAILURE
 * the exit comes without the #UD, so userspace can skip the instruction.
 */
#include "lib/rkvm_test.h"

#define CODE_GPA 0x1000
#define P_UD 0xe0
#define P_DONE 0xe1

/* Real mode; DS points at 0xd0000, where there is no memory. */
GUEST_CODE(ef_guest, 16,
	"mov $0xd000, %ax\n"
	"mov %ax, %ds\n"
	"flds (0)\n"			/* d9 06 00 00: exits, then #UD */
	"flds (0)\n"			/* with the capability: exits, skipped */
	"mov $1, %al\n"
	"out %al, $" XSTR(P_DONE) "\n"
	"hlt\n"
	"ud_handler:\n"
	"push %bp\n"
	"mov %sp, %bp\n"
	"addw $4, 2(%bp)\n"		/* past the 4-byte FLDS */
	"mov $6, %al\n"
	"out %al, $" XSTR(P_UD) "\n"
	"pop %bp\n"
	"iret\n");
extern const uint8_t ud_handler[];

int main(void)
{
	struct kvm_enable_cap cap = { .cap = KVM_CAP_EXIT_ON_EMULATION_FAILURE };
	struct kvm_regs regs;
	struct vm vm;
	struct vcpu v;
	uint8_t *mem, *b;
	uint64_t want_reason;
	uint32_t r;
	long ret;

	test_watchdog(60);
	vm = vm_create();
	REQUIRE_CAP(vm.sys_fd, KVM_CAP_EXIT_ON_EMULATION_FAILURE);
	tap_plan(9);
	if (ioctl(vm.fd, KVM_SET_TSS_ADDR, 0xfffbd000))
		BAIL("KVM_SET_TSS_ADDR");
	mem = vm_add_memory(&vm, 0, 0, 0x10000, 0);
	guest_load(mem, CODE_GPA, ef_guest);
	((uint16_t *)mem)[6 * 2] = GUEST_ADDR(CODE_GPA, ef_guest, ud_handler);
	((uint16_t *)mem)[6 * 2 + 1] = 0;
	v = vcpu_create(&vm, 0);
	vcpu_set_real_mode(&v, CODE_GPA);

	r = vcpu_run(&v);
	b = v.run->emulation_failure.insn_bytes;
	tap_ok(r == KVM_EXIT_INTERNAL_ERROR &&
		       v.run->emulation_failure.suberror == KVM_INTERNAL_ERROR_EMULATION,
	       "FLDS from MMIO -> KVM_EXIT_INTERNAL_ERROR, suberror EMULATION (%s)", exit_str(&v));
	tap_ok(v.run->emulation_failure.flags & KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES &&
		       v.run->emulation_failure.ndata >= 3,
	       "with the instruction bytes (flags %#llx, ndata %u)",
	       (unsigned long long)v.run->emulation_failure.flags, v.run->emulation_failure.ndata);
	tap_ok(v.run->emulation_failure.insn_size >= 2 && b[0] == 0xd9 && b[1] == 0x06,
	       "bytes %02x %02x..., %u of them", b[0], b[1], v.run->emulation_failure.insn_size);
	/* The hardware's exit reason: VMX's EPT violation (48) or SVM's nested page fault. */
	want_reason = host_is_intel() ? 48 : 0x400;
	tap_ok(v.run->emulation_failure.ndata == 8 && v.run->internal.data[3] == want_reason,
	       "then the exit information: reason %#llx (want %#llx: the nested page fault), "
	       "%u entries", (unsigned long long)v.run->internal.data[3],
	       (unsigned long long)want_reason, v.run->emulation_failure.ndata);
	r = vcpu_run(&v);
	tap_ok(r == KVM_EXIT_IO && is_out(&v, P_UD, 1),
	       "resuming delivers #UD to the guest (%s)", exit_str(&v));

	cap.args[0] = 2;
	ret = ioctl(vm.fd, KVM_ENABLE_CAP, &cap);
	tap_ok(ret == -1 && errno == EINVAL, "KVM_ENABLE_CAP with args[0] = 2 -> EINVAL");
	cap.args[0] = 1;
	ret = ioctl(vm.fd, KVM_ENABLE_CAP, &cap);
	tap_ok(ret == 0, "KVM_ENABLE_CAP(EXIT_ON_EMULATION_FAILURE, 1) (%ld)", ret);
	r = vcpu_run(&v);
	tap_ok(r == KVM_EXIT_INTERNAL_ERROR &&
		       v.run->emulation_failure.suberror == KVM_INTERNAL_ERROR_EMULATION,
	       "the second FLDS exits too (%s)", exit_str(&v));
	vcpu_get_regs(&v, &regs);
	regs.rip += 4;
	vcpu_set_regs(&v, &regs);
	r = vcpu_run(&v);
	tap_ok(r == KVM_EXIT_IO && is_out(&v, P_DONE, 1),
	       "and with the capability no #UD follows once it is skipped (%s)", exit_str(&v));
	tap_done();
}

// SPDX-License-Identifier: GPL-2.0
/*
 * A flood of NMIs from userspace must not overflow anything (arch/x86/kvm/x86.c
 * process_nmi: KVM counts queued NMIs and keeps at most two, one injected and one
 * pending).
 *
 * Split irqchip, one vCPU in 32-bit protected mode whose NMI handler counts NMIs in guest
 * memory. While the guest waits at an OUT exit, userspace sends 50000 KVM_NMI and 50000
 * KVM_SIGNAL_MSI with delivery mode NMI. Checks:
 *  - every ioctl succeeds (KVM_SIGNAL_MSI reaches one APIC);
 *  - the guest then takes one or two NMIs (KVM: two; never more);
 *  - NMIs still work afterwards: one more MSI NMI is counted once, and so is a KVM_NMI.
 */
#include "lib/rkvm_test.h"

#define P_READY 0xd0
#define P_COUNT 0xd1
#define COUNT_GPA GUEST_DATA_GPA
#define N_EACH 50000

GUEST_CODE(nmi_guest, 32,
	"1: out %al, $" XSTR(P_READY) "\n"
	"mov $2000, %ecx\n"
	"2: loop 2b\n"
	"mov (" XSTR(COUNT_GPA) "), %eax\n"
	"out %eax, $" XSTR(P_COUNT) "\n"
	"jmp 1b\n"
	"nmi_handler:\n"
	"incl (" XSTR(COUNT_GPA) ")\n"
	"iret\n");
extern const uint8_t nmi_handler[];

static struct guest g;

static int enable_split(int vm_fd)
{
	struct kvm_enable_cap cap = { .cap = KVM_CAP_SPLIT_IRQCHIP, .args = { 24 } };

	return ioctl(vm_fd, KVM_ENABLE_CAP, &cap);
}

/* Runs to the READY exit, then to the COUNT exit; returns the count (or -1). */
static int64_t next(int want_ready)
{
	if (want_ready) {
		vcpu_run(&g.v);
		if (!is_out(&g.v, P_READY, 1)) {
			tap_diag("unexpected exit: %s", exit_str(&g.v));
			return -1;
		}
		return 0;
	}
	vcpu_run(&g.v);
	if (!is_out(&g.v, P_COUNT, 4)) {
		tap_diag("unexpected exit: %s", exit_str(&g.v));
		return -1;
	}
	return (uint32_t)io_out_value(&g.v);
}

int main(void)
{
	struct kvm_msi msi = { .address_lo = 0xfee00000, .data = 4 << 8 };
	struct kvm_lapic_state st;
	long bad_nmi = 0, bad_msi = 0, r;
	int64_t c1, c2, c3;
	uint32_t spiv;
	int i;

	test_watchdog(280);
	g.vm = vm_create();
	REQUIRE_CAP(g.vm.sys_fd, KVM_CAP_SPLIT_IRQCHIP);
	tap_plan(7);
	if (enable_split(g.vm.fd))
		BAIL("KVM_CAP_SPLIT_IRQCHIP");
	if (ioctl(g.vm.fd, KVM_SET_TSS_ADDR, 0xfffbd000))
		BAIL("KVM_SET_TSS_ADDR");
	g.mem = vm_add_memory(&g.vm, 0, 0, GUEST_LOW_SIZE, 0);
	g.v = vcpu_create(&g.vm, 0);
	vcpu_set_supported_cpuid(&g.vm, &g.v);
	guest_load(g.mem, GUEST_CODE_GPA, nmi_guest);
	vcpu_set_protected_mode(&g.v, g.mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
	idt_set_gate32(g.mem, 2, GUEST_ADDR(GUEST_CODE_GPA, nmi_guest, nmi_handler));
	/* Software-enable the APIC (SPIV bit 8). */
	if (ioctl(g.v.fd, KVM_GET_LAPIC, &st))
		BAIL("KVM_GET_LAPIC");
	spiv = 0x1ff;
	memcpy(st.regs + 0xf0, &spiv, 4);
	if (ioctl(g.v.fd, KVM_SET_LAPIC, &st))
		BAIL("KVM_SET_LAPIC");

	if (next(1) < 0)
		BAIL("no READY exit");
	for (i = 0; i < N_EACH; i++) {
		if (ioctl(g.v.fd, KVM_NMI, 0))
			bad_nmi++;
		r = ioctl(g.vm.fd, KVM_SIGNAL_MSI, &msi);
		if (r != 1)
			bad_msi++;
	}
	tap_ok(!bad_nmi, "%d KVM_NMI succeed (%ld failed)", N_EACH, bad_nmi);
	tap_ok(!bad_msi, "%d KVM_SIGNAL_MSI NMIs reach one APIC each (%ld did not)", N_EACH,
	       bad_msi);
	c1 = next(0);
	tap_ok(c1 >= 1 && c1 <= 2, "the guest takes one or two NMIs of the flood (%lld)",
	       (long long)c1);

	if (next(1) < 0)
		BAIL("no READY exit");
	r = ioctl(g.vm.fd, KVM_SIGNAL_MSI, &msi);
	tap_ok(r == 1, "one more KVM_SIGNAL_MSI NMI (%ld)", r);
	c2 = next(0);
	tap_ok(c2 == c1 + 1, "it is taken once (count %lld, want %lld)", (long long)c2,
	       (long long)c1 + 1);

	if (next(1) < 0)
		BAIL("no READY exit");
	CHECK_RET(g.v.fd, KVM_NMI, 0, 0, "one more KVM_NMI");
	c3 = next(0);
	tap_ok(c3 == c2 + 1, "it is taken once (count %lld, want %lld)", (long long)c3,
	       (long long)c2 + 1);
	guest_destroy(&g);
	tap_done();
}

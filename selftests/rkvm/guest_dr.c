// SPDX-License-Identifier: GPL-2.0
/*
 * The guest's own debug registers: a 32-bit guest puts an instruction breakpoint in DR0
 * and a data-write breakpoint in DR1, enables them in DR7 and runs over both. Each must
 * raise #DB in the guest (its IDT handler reads DR6: B0, then B1), at the guest's
 * addresses: the hypervisor loads the guest's DR0-DR3 while they are enabled and gives
 * the host's back afterwards. KVM_GET_DEBUGREGS then shows what the guest left. The same
 * again with KVM_SET_GUEST_DEBUG(ENABLE | USE_SW_BP): #DB still belongs to the guest.
 */
#include "lib/rkvm_test.h"

#define P_DR6 0xe0
#define P_MARK 0xe1
#define DATA (GUEST_DATA_GPA + 0x40)

GUEST_CODE(dr_guest, 32,
	"mov $(bp_target - dr_guest + " XSTR(GUEST_CODE_GPA) "), %eax\n"
	"mov %eax, %dr0\n"
	"mov $" XSTR(DATA) ", %eax\n"
	"mov %eax, %dr1\n"
	/* L0 execute, L1 write of 4 bytes (R/W1 = 01, LEN1 = 11). */
	"mov $0x00d00405, %eax\n"
	"mov %eax, %dr7\n"
	"mov $1, %al\n"
	"out %al, $" XSTR(P_MARK) "\n"
	"bp_target:\n"
	"nop\n"				/* #DB before it executes: B0 */
	"mov $2, %al\n"
	"out %al, $" XSTR(P_MARK) "\n"
	"movl $0x1234, " XSTR(DATA) "\n"	/* #DB after it executes: B1 */
	"mov $3, %al\n"
	"out %al, $" XSTR(P_MARK) "\n"
	"hlt\n"
	"db_handler:\n"
	"mov %dr6, %eax\n"
	"out %eax, $" XSTR(P_DR6) "\n"
	/* Disarm what fired (an instruction breakpoint would fire again at the IRET). */
	"mov %eax, %ecx\n"
	"and $1, %ecx\n"			/* B0 -> L0 */
	"mov %eax, %edx\n"
	"and $2, %edx\n"
	"shl $1, %edx\n"			/* B1 -> L1 */
	"or %edx, %ecx\n"
	"not %ecx\n"
	"mov %dr7, %eax\n"
	"and %ecx, %eax\n"
	"mov %eax, %dr7\n"
	"mov $0xffff0ff0, %eax\n"
	"mov %eax, %dr6\n"
	"iret\n");
extern const uint8_t bp_target[], db_handler[];

static struct guest g;

static int next(int port, uint32_t *val)
{
	if (vcpu_run(&g.v) != KVM_EXIT_IO || g.v.run->io.direction != KVM_EXIT_IO_OUT)
		return 0;
	if (g.v.run->io.port != port)
		return 0;
	*val = io_out_value(&g.v);
	return 1;
}

static void run_guest(int debug)
{
	struct kvm_guest_debug dbg = { .control = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_SW_BP };
	const char *how = debug ? " (userspace debugging on)" : "";
	struct kvm_debugregs d;
	uint32_t v = 0;

	g = guest_create();
	guest_load(g.mem, GUEST_CODE_GPA, dr_guest);
	vcpu_set_protected_mode(&g.v, g.mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
	idt_set_gate32(g.mem, 1, GUEST_ADDR(GUEST_CODE_GPA, dr_guest, db_handler));
	if (debug && ioctl(g.v.fd, KVM_SET_GUEST_DEBUG, &dbg))
		BAIL("KVM_SET_GUEST_DEBUG");

	tap_ok(next(P_MARK, &v) && v == 1, "guest armed DR0 and DR1%s", how);
	tap_ok(next(P_DR6, &v) && (v & 0xf) == 1,
	       "the instruction breakpoint raised #DB in the guest, DR6 %#x (B0)%s", v, how);
	tap_ok(next(P_MARK, &v) && v == 2, "the guest went on past it%s", how);
	tap_ok(next(P_DR6, &v) && (v & 0xf) == 2,
	       "the data breakpoint raised #DB in the guest, DR6 %#x (B1)%s", v, how);
	tap_ok(next(P_MARK, &v) && v == 3, "the guest went on past it%s", how);
	tap_ok(vcpu_run(&g.v) == KVM_EXIT_HLT, "guest halts (%s)", exit_str(&g.v));
	if (ioctl(g.v.fd, KVM_GET_DEBUGREGS, &d))
		BAIL("KVM_GET_DEBUGREGS");
	tap_ok(d.db[0] == GUEST_ADDR(GUEST_CODE_GPA, dr_guest, bp_target) && d.db[1] == DATA,
	       "KVM_GET_DEBUGREGS: DR0 %#llx, DR1 %#llx", (unsigned long long)d.db[0],
	       (unsigned long long)d.db[1]);
	tap_ok((d.dr7 & 0xff) == 0 && (d.dr6 & 0xf) == 0,
	       "DR7 disarmed by the guest (%#llx), DR6 cleared (%#llx)",
	       (unsigned long long)d.dr7, (unsigned long long)d.dr6);
	guest_destroy(&g);
}

/*
 * Userspace's own hardware breakpoint (KVM_GUESTDBG_USE_HW_BP) on the guest's breakpoint
 * target: KVM_EXIT_DEBUG there with DR6.B0, while the guest's DR0-DR3 stay its own (read
 * back unchanged); with debugging off again the guest's breakpoints take over.
 */
static void run_hw_bp(void)
{
	struct kvm_guest_debug dbg = { .control = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP };
	uint64_t target = GUEST_ADDR(GUEST_CODE_GPA, dr_guest, bp_target);
	struct kvm_debugregs d;
	uint32_t v = 0;

	g = guest_create();
	guest_load(g.mem, GUEST_CODE_GPA, dr_guest);
	vcpu_set_protected_mode(&g.v, g.mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
	idt_set_gate32(g.mem, 1, GUEST_ADDR(GUEST_CODE_GPA, dr_guest, db_handler));
	dbg.arch.debugreg[0] = target;
	dbg.arch.debugreg[7] = 0x401;
	if (ioctl(g.v.fd, KVM_SET_GUEST_DEBUG, &dbg))
		BAIL("KVM_SET_GUEST_DEBUG(USE_HW_BP)");
	tap_ok(next(P_MARK, &v) && v == 1, "guest armed its DR0 and DR1 (userspace's breakpoint on)");
	tap_ok(vcpu_run(&g.v) == KVM_EXIT_DEBUG && g.v.run->debug.arch.exception == 1 &&
		       g.v.run->debug.arch.pc == target && (g.v.run->debug.arch.dr6 & 0xf) == 1,
	       "userspace's DR0 -> KVM_EXIT_DEBUG at %#llx, DR6 %#llx (%s)",
	       (unsigned long long)g.v.run->debug.arch.pc,
	       (unsigned long long)g.v.run->debug.arch.dr6, exit_str(&g.v));
	if (ioctl(g.v.fd, KVM_GET_DEBUGREGS, &d))
		BAIL("KVM_GET_DEBUGREGS");
	tap_ok(d.db[0] == target && d.db[1] == DATA && (d.dr7 & 0xff) == 0x05,
	       "the guest's own DR0 %#llx, DR1 %#llx, DR7 %#llx are kept",
	       (unsigned long long)d.db[0], (unsigned long long)d.db[1],
	       (unsigned long long)d.dr7);
	dbg.control = 0;
	if (ioctl(g.v.fd, KVM_SET_GUEST_DEBUG, &dbg))
		BAIL("KVM_SET_GUEST_DEBUG(0)");
	tap_ok(next(P_DR6, &v) && (v & 0xf) == 1,
	       "debugging off: the guest's own breakpoint fires there, DR6 %#x", v);
	tap_ok(next(P_MARK, &v) && v == 2, "the guest went on past it");
	guest_destroy(&g);
}

int main(void)
{
	int intel = host_is_intel();

	test_watchdog(60);
	tap_plan(intel ? 21 : 8);
	run_guest(0);
	/*
	 * With software breakpoints for userspace, #DB is still the guest's. Only checked on
	 * Intel: kvm-amd (under QEMU TCG) loses the guest's DR0-DR3 writes in this mode.
	 */
	if (intel) {
		run_guest(1);
		run_hw_bp();
	}
	tap_done();
}

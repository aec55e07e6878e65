// SPDX-License-Identifier: GPL-2.0
/*
 * A guest that loops with interrupts disabled, on exits the hypervisor handles in the
 * kernel (CPUID, RDMSR of IA32_MISC_ENABLE) or on no exit at all, never returns to
 * userspace by itself: only a signal ends its KVM_RUN. That must still happen, and the
 * host must keep running its own timers meanwhile.
 *
 * The exit-free loop needs the CPU to exit for the host's interrupt whatever the
 * guest's IF ("external-interrupt exiting"). Bochs 3.0 did not, and kvm-intel's guest
 * then held the emulated machine forever; the bench patches Bochs
 * (tools/bench/bochs-patches/). The exit loops also need the hypervisor to let the
 * host take that interrupt: KVM handles every exit with host interrupts enabled, while a
 * hypervisor that handles exits in an interrupts-off loop must bound that loop itself.
 * Under the unpatched Bochs rkvm's loop ran forever (found by fuzz_guest, seed 20261205,
 * program 5412); rkvm now ends it after 4 ms whatever the CPU does.
 *
 * For each loop: SIGALRM every 20 ms (ITIMER_REAL) ends KVM_RUN with -1/EINTR and
 * KVM_EXIT_INTR, the handler ran, the guest made progress (its loop counter in ESI is
 * nonzero) and RIP is inside the loop.
 */
#include <sys/time.h>

#include "lib/rkvm_test.h"

GUEST_CODE(loop_guest, 32,
	"cli\n"
	"xor %esi, %esi\n"
	"loop_cpuid:\n"
	"xor %eax, %eax\n"
	"cpuid\n"
	"inc %esi\n"
	"jmp loop_cpuid\n"
	"loop_cpuid_end:\n"
	"loop_rdmsr:\n"
	"mov $0x1a0, %ecx\n"
	"rdmsr\n"
	"inc %esi\n"
	"jmp loop_rdmsr\n"
	"loop_rdmsr_end:\n"
	"loop_spin:\n"
	"inc %esi\n"
	"jmp loop_spin\n"
	"loop_spin_end:\n"
	"hlt\n");
extern const uint8_t loop_cpuid[], loop_cpuid_end[], loop_rdmsr[], loop_rdmsr_end[];
extern const uint8_t loop_spin[], loop_spin_end[];

#define ADDR(label) GUEST_ADDR(GUEST_CODE_GPA, loop_guest, label)

static volatile sig_atomic_t alrm_count;

static void on_alrm(int sig)
{
	alrm_count++;
}

static void one_loop(struct guest *g, uint64_t start, uint64_t end, const char *what)
{
	struct itimerval on = { { 0, 20000 }, { 0, 20000 } }, off = { { 0, 0 }, { 0, 0 } };
	struct ioctl_res res;
	struct kvm_regs r;

	vcpu_get_regs(&g->v, &r);
	r.rip = start;
	r.rsi = 0;
	r.rflags = 2; /* IF clear */
	vcpu_set_regs(&g->v, &r);
	alrm_count = 0;
	signal(SIGALRM, on_alrm);
	if (setitimer(ITIMER_REAL, &on, NULL))
		BAIL("setitimer");
	res = do_ioctl(g->v.fd, KVM_RUN, 0);
	setitimer(ITIMER_REAL, &off, NULL);
	test_watchdog(120);
	tap_ok(res.r == -1 && res.err == EINTR && g->v.run->exit_reason == KVM_EXIT_INTR,
	       "%s loop, IF clear: SIGALRM ends KVM_RUN with -1/EINTR, KVM_EXIT_INTR (got %s, %s)",
	       what, res_str(res), exit_str(&g->v));
	tap_ok(alrm_count > 0, "%s loop: the SIGALRM handler ran (%d times)", what,
	       (int)alrm_count);
	vcpu_get_regs(&g->v, &r);
	tap_ok(r.rsi > 0 && r.rip >= start && r.rip < end,
	       "%s loop: the guest made progress (ESI %llu) and RIP %#llx is in [%#llx, %#llx)",
	       what, (unsigned long long)r.rsi, (unsigned long long)r.rip,
	       (unsigned long long)start, (unsigned long long)end);
}

int main(void)
{
	struct guest g;

	test_watchdog(120);
	g = guest_create();
	tap_plan(9);
	guest_load(g.mem, GUEST_CODE_GPA, loop_guest);
	vcpu_set_protected_mode(&g.v, g.mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
	one_loop(&g, ADDR(loop_cpuid), ADDR(loop_cpuid_end), "CPUID");
	one_loop(&g, ADDR(loop_rdmsr), ADDR(loop_rdmsr_end), "RDMSR(IA32_MISC_ENABLE)");
	one_loop(&g, ADDR(loop_spin), ADDR(loop_spin_end), "exit-free");
	guest_destroy(&g);
	tap_done();
}

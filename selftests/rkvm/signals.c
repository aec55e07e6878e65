// SPDX-License-Identifier: GPL-2.0
/*
 * Signals and immediate_exit end KVM_RUN with -1/EINTR (virt/kvm/kvm_main.c KVM_RUN,
 * arch/x86/kvm/x86.c kvm_arch_vcpu_ioctl_run and vcpu_run; api.rst "immediate_exit").
 *
 *  - The guest spins on a flag in memory; a timer (setitimer ITIMER_REAL, then
 *    ITIMER_PROF, whose expiry the kernel handles as task work) with a no-op handler
 *    interrupts it: -1/EINTR, exit_reason KVM_EXIT_INTR, the handler ran, RIP is in the
 *    loop. With the flag set, the next KVM_RUN continues the guest.
 *  - KVM_SET_SIGNAL_MASK: with SIGUSR1 blocked in the thread but not in the vCPU's mask, a
 *    pending SIGUSR1 ends KVM_RUN before the guest runs an instruction, and stays pending
 *    (blocked again on return); with SIGUSR1 in the vCPU's mask the guest runs; a mask
 *    length other than 8 -> EINVAL; NULL removes the mask.
 *  - immediate_exit = 1: -1/EINTR without running the guest.
 *  - A pending operation completes on such a KVM_RUN, and nothing more runs: an IN whose
 *    data userspace supplied (with immediate_exit), an MMIO read (with a pending unmasked
 *    signal).
 */
#define _GNU_SOURCE
#include <sys/time.h>

#include "lib/rkvm_test.h"

#define FLAG_GPA GUEST_DATA_GPA
#define MMIO_GPA 0xd0000000u
#define PORT_DONE 0x70
#define PORT_IN 0x71
#define PORT_IN_ECHO 0x72
#define PORT_MMIO_ECHO 0x73
#define PORT_READY 0x74

GUEST_CODE(sig_guest, 32,
	"out %al, $" XSTR(PORT_READY) "\n"
	"sig_guest_spin:\n"
	"sti\n"
	"1: cmpl $0, " XSTR(FLAG_GPA) "\n"
	"je 1b\n"
	"sig_guest_loop_end:\n"
	"mov $0x11, %al\n"
	"out %al, $" XSTR(PORT_DONE) "\n"
	"hlt\n"
	"sig_guest_in:\n"
	"in $" XSTR(PORT_IN) ", %al\n"
	"sig_guest_after_in:\n"
	"out %al, $" XSTR(PORT_IN_ECHO) "\n"
	"hlt\n"
	"sig_guest_mmio:\n"
	"mov " XSTR(MMIO_GPA) ", %eax\n"
	"sig_guest_after_mmio:\n"
	"out %eax, $" XSTR(PORT_MMIO_ECHO) "\n"
	"hlt\n");
extern const uint8_t sig_guest_spin[], sig_guest_loop_end[], sig_guest_in[], sig_guest_after_in[],
	sig_guest_mmio[], sig_guest_after_mmio[];

#define ADDR(label) GUEST_ADDR(GUEST_CODE_GPA, sig_guest, label)

static volatile sig_atomic_t prof_count, alrm_count, usr1_count;

static void on_prof(int sig) { prof_count++; }
static void on_alrm(int sig) { alrm_count++; }
static void on_usr1(int sig) { usr1_count++; }

static struct guest g;

static struct kvm_signal_mask *sigmask_arg(const sigset_t *set, uint32_t len)
{
	static union {
		struct kvm_signal_mask m;
		uint8_t bytes[sizeof(struct kvm_signal_mask) + 16];
	} u;

	memset(&u, 0, sizeof(u));
	u.m.len = len;
	memcpy(u.m.sigset, set, 8);
	return &u.m;
}

static uint64_t rip(void)
{
	struct kvm_regs r;

	vcpu_get_regs(&g.v, &r);
	return r.rip;
}

/* Consumes a pending SIGUSR1; returns whether there was one. */
static int take_usr1(void)
{
	struct timespec zero = { 0, 0 };
	sigset_t s;

	sigemptyset(&s);
	sigaddset(&s, SIGUSR1);
	return sigtimedwait(&s, NULL, &zero) == SIGUSR1;
}

static int usr1_pending(void)
{
	sigset_t s;

	sigpending(&s);
	return sigismember(&s, SIGUSR1);
}

/* Sets the flag and RIP, runs: one check that the guest OUTs 0x11 and halts. */
static void expect_completes(const char *what)
{
	int ok;

	vcpu_run(&g.v);
	ok = is_out(&g.v, PORT_DONE, 1) && *io_data(&g.v) == 0x11;
	if (ok)
		vcpu_run(&g.v);
	tap_ok(ok && g.v.run->exit_reason == KVM_EXIT_HLT,
	       "%s: the guest leaves the loop, OUTs 0x11 and halts (last exit %s)", what,
	       exit_str(&g.v));
}

int main(void)
{
	struct itimerval on = { { 0, 20000 }, { 0, 20000 } }, off = { { 0, 0 }, { 0, 0 } };
	struct itimerval backstop = { { 0, 0 }, { 5, 0 } };
	volatile uint32_t *flag;
	struct ioctl_res res;
	struct kvm_regs r;
	sigset_t empty, usr1;
	uint64_t at;

	test_watchdog(120);
	g = guest_create();
	REQUIRE_CAP(g.vm.sys_fd, KVM_CAP_IMMEDIATE_EXIT);
	tap_plan(31);
	flag = (uint32_t *)(g.mem + FLAG_GPA);
	guest_load(g.mem, GUEST_CODE_GPA, sig_guest);
	vcpu_set_protected_mode(&g.v, g.mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
	signal(SIGPROF, on_prof);
	signal(SIGUSR1, on_usr1);
	sigemptyset(&empty);
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);

	/*
	 * Timer signals interrupt a spinning guest. The guest spins with IF set: Bochs does
	 * not VM-exit on a host interrupt while the guest has IF clear, so there the host's
	 * timers would never fire during such a KVM_RUN (nothing is injected either way: no
	 * in-kernel irqchip, no KVM_INTERRUPT).
	 */
	*flag = 0;
	vcpu_run(&g.v);
	tap_ok(is_out(&g.v, PORT_READY, 1), "the guest starts with an OUT to port %#x (got %s)",
	       PORT_READY, exit_str(&g.v));
	/* ITIMER_REAL (this replaces the watchdog's alarm for a moment). */
	signal(SIGALRM, on_alrm);
	if (setitimer(ITIMER_REAL, &on, NULL))
		BAIL("setitimer");
	res = do_ioctl(g.v.fd, KVM_RUN, 0);
	setitimer(ITIMER_REAL, &off, NULL);
	tap_ok(res.r == -1 && res.err == EINTR && g.v.run->exit_reason == KVM_EXIT_INTR,
	       "KVM_RUN of a spinning guest, SIGALRM every 20 ms (ITIMER_REAL) -> -1/EINTR, "
	       "KVM_EXIT_INTR (got %s, %s)", res_str(res), exit_str(&g.v));
	tap_ok(alrm_count > 0, "the SIGALRM handler ran (%d times)", (int)alrm_count);
	at = rip();
	tap_ok(at >= ADDR(sig_guest_spin) && at < ADDR(sig_guest_loop_end),
	       "RIP %#llx is in the spin loop [%#llx, %#llx)", (unsigned long long)at,
	       (unsigned long long)ADDR(sig_guest_spin), (unsigned long long)ADDR(sig_guest_loop_end));
	/* ITIMER_PROF, with a 5 s ITIMER_REAL as a backstop. */
	alrm_count = 0;
	if (setitimer(ITIMER_PROF, &on, NULL) || setitimer(ITIMER_REAL, &backstop, NULL))
		BAIL("setitimer");
	res = do_ioctl(g.v.fd, KVM_RUN, 0);
	setitimer(ITIMER_PROF, &off, NULL);
	setitimer(ITIMER_REAL, &off, NULL);
	tap_ok(res.r == -1 && res.err == EINTR && g.v.run->exit_reason == KVM_EXIT_INTR,
	       "KVM_RUN of a spinning guest, SIGPROF every 20 ms of CPU time (ITIMER_PROF) -> "
	       "-1/EINTR, KVM_EXIT_INTR (got %s, %s)", res_str(res), exit_str(&g.v));
	tap_ok(prof_count > 0 && !alrm_count, "SIGPROF ended KVM_RUN: its handler ran (%d times) "
	       "and the 5 s backstop SIGALRM did not fire (%d)", (int)prof_count, (int)alrm_count);
	test_watchdog(120);
	*flag = 1;
	expect_completes("flag set, KVM_RUN again");

	/* KVM_SET_SIGNAL_MASK. */
	if (sigprocmask(SIG_BLOCK, &usr1, NULL))
		BAIL("sigprocmask");
	CHECK_ERRNO(g.v.fd, KVM_SET_SIGNAL_MASK, sigmask_arg(&empty, 4), EINVAL,
		    "KVM_SET_SIGNAL_MASK with len 4");
	CHECK_ERRNO(g.v.fd, KVM_SET_SIGNAL_MASK, sigmask_arg(&empty, 16), EINVAL,
		    "KVM_SET_SIGNAL_MASK with len 16");
	CHECK_RET(g.v.fd, KVM_SET_SIGNAL_MASK, sigmask_arg(&empty, 8), 0,
		  "KVM_SET_SIGNAL_MASK with an empty set (len 8)");
	vcpu_set_rip(&g.v, ADDR(sig_guest_spin));
	raise(SIGUSR1);
	usr1_count = 0;
	res = do_ioctl(g.v.fd, KVM_RUN, 0);
	tap_ok(res.r == -1 && res.err == EINTR && g.v.run->exit_reason == KVM_EXIT_INTR,
	       "SIGUSR1 pending, blocked in the thread, not in the vCPU mask: KVM_RUN -> -1/EINTR, "
	       "KVM_EXIT_INTR (got %s, %s)", res_str(res), exit_str(&g.v));
	tap_ok(rip() == ADDR(sig_guest_spin), "the guest did not run: RIP %#llx (want %#llx)",
	       (unsigned long long)rip(), (unsigned long long)ADDR(sig_guest_spin));
	tap_ok(usr1_pending() && !usr1_count,
	       "SIGUSR1 is still pending and its handler did not run (blocked again on return)");
	CHECK_RET(g.v.fd, KVM_SET_SIGNAL_MASK, sigmask_arg(&usr1, 8), 0,
		  "KVM_SET_SIGNAL_MASK with {SIGUSR1}");
	expect_completes("SIGUSR1 pending and in the vCPU mask");
	CHECK_RET(g.v.fd, KVM_SET_SIGNAL_MASK, NULL, 0, "KVM_SET_SIGNAL_MASK(NULL): no mask");
	vcpu_set_rip(&g.v, ADDR(sig_guest_spin));
	expect_completes("SIGUSR1 pending, blocked, no vCPU mask");
	tap_ok(take_usr1(), "SIGUSR1 was pending all along");

	/* immediate_exit. */
	vcpu_set_rip(&g.v, ADDR(sig_guest_spin));
	g.v.run->immediate_exit = 1;
	res = do_ioctl(g.v.fd, KVM_RUN, 0);
	tap_ok(res.r == -1 && res.err == EINTR, "immediate_exit = 1: KVM_RUN -> -1/EINTR (got %s)",
	       res_str(res));
	tap_ok(rip() == ADDR(sig_guest_spin), "immediate_exit = 1: the guest did not run (RIP %#llx)",
	       (unsigned long long)rip());
	g.v.run->immediate_exit = 0;
	expect_completes("immediate_exit = 0");

	/* A pending IN completes with immediate_exit, and nothing after it runs. */
	vcpu_set_rip(&g.v, ADDR(sig_guest_in));
	vcpu_run(&g.v);
	tap_ok(g.v.run->exit_reason == KVM_EXIT_IO && g.v.run->io.direction == KVM_EXIT_IO_IN &&
		       g.v.run->io.port == PORT_IN && g.v.run->io.size == 1,
	       "IN from port %#x exits (got %s)", PORT_IN, exit_str(&g.v));
	*io_data(&g.v) = 0x5a;
	g.v.run->immediate_exit = 1;
	res = do_ioctl(g.v.fd, KVM_RUN, 0);
	g.v.run->immediate_exit = 0;
	vcpu_get_regs(&g.v, &r);
	tap_ok(res.r == -1 && res.err == EINTR, "IN data supplied, immediate_exit = 1: KVM_RUN -> "
	       "-1/EINTR (got %s)", res_str(res));
	tap_ok((r.rax & 0xff) == 0x5a && r.rip == ADDR(sig_guest_after_in),
	       "the IN completed: AL %#llx (want 0x5a), RIP %#llx (want %#llx, the OUT not run)",
	       (unsigned long long)r.rax & 0xff, (unsigned long long)r.rip,
	       (unsigned long long)ADDR(sig_guest_after_in));
	vcpu_run(&g.v);
	tap_ok(is_out(&g.v, PORT_IN_ECHO, 1) && *io_data(&g.v) == 0x5a,
	       "then the guest OUTs what it read (got %s)", exit_str(&g.v));

	/* A pending MMIO read completes with a pending unmasked signal. */
	vcpu_set_rip(&g.v, ADDR(sig_guest_mmio));
	vcpu_run(&g.v);
	tap_ok(g.v.run->exit_reason == KVM_EXIT_MMIO && !g.v.run->mmio.is_write &&
		       g.v.run->mmio.phys_addr == MMIO_GPA && g.v.run->mmio.len == 4,
	       "MMIO read of %#x exits (got %s)", MMIO_GPA, exit_str(&g.v));
	memcpy(g.v.run->mmio.data, &(uint32_t){ 0x12345678 }, 4);
	CHECK_RET(g.v.fd, KVM_SET_SIGNAL_MASK, sigmask_arg(&empty, 8), 0,
		  "KVM_SET_SIGNAL_MASK with an empty set");
	raise(SIGUSR1);
	res = do_ioctl(g.v.fd, KVM_RUN, 0);
	vcpu_get_regs(&g.v, &r);
	tap_ok(res.r == -1 && res.err == EINTR, "MMIO data supplied, SIGUSR1 pending and unmasked: "
	       "KVM_RUN -> -1/EINTR (got %s)", res_str(res));
	tap_ok((uint32_t)r.rax == 0x12345678 && r.rip == ADDR(sig_guest_after_mmio),
	       "the MMIO read completed: EAX %#llx (want 0x12345678), RIP %#llx (want %#llx, the OUT "
	       "not run)", (unsigned long long)(uint32_t)r.rax, (unsigned long long)r.rip,
	       (unsigned long long)ADDR(sig_guest_after_mmio));
	take_usr1();
	CHECK_RET(g.v.fd, KVM_SET_SIGNAL_MASK, NULL, 0, "KVM_SET_SIGNAL_MASK(NULL)");
	vcpu_run(&g.v);
	tap_ok(is_out(&g.v, PORT_MMIO_ECHO, 4) && io_out_value(&g.v) == 0x12345678,
	       "then the guest OUTs what it read (got %s)", exit_str(&g.v));
	tap_done();
}

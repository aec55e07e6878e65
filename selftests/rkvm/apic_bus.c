// SPDX-License-Identifier: GPL-2.0
/*
 * KVM_CAP_X86_APIC_BUS_CYCLES_NS: the length of the local APIC's bus cycle, the clock
 * its timer counts in (before the divide configuration). KVM's default is 1 ns.
 *  - KVM_CHECK_EXTENSION says 1 on the system fd and the VM's current value on a VM fd.
 *  - KVM_ENABLE_CAP checks the value first (0, or so long that TMICT 0xffffffff at
 *    divide-by-128 would overflow 64 bits of nanoseconds -> EINVAL), then wants an
 *    in-kernel local APIC (else ENXIO) and no vCPU yet (else EINVAL).
 *  - The timer counts at that rate: userspace starts a masked one-shot timer with
 *    KVM_SET_LAPIC (TMCCT = TMICT = 0xffffffff, divide by 1), sleeps, and reads TMCCT back
 *    with KVM_GET_LAPIC. The counts that went by, times the bus cycle, must match the time
 *    that passed (within 10%), in a VM with 40 ns cycles and in one with the default.
 */
#define _GNU_SOURCE
#include <time.h>

#include "lib/rkvm_test.h"

#define BUS_NS 40
#define SLEEP_MS 100

static long check_ext(int fd)
{
	return ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_X86_APIC_BUS_CYCLES_NS);
}

static struct ioctl_res enable(int vm_fd, uint32_t cap, uint64_t arg)
{
	struct kvm_enable_cap c = { .cap = cap, .args = { arg } };

	return do_ioctl(vm_fd, KVM_ENABLE_CAP, (unsigned long)&c);
}

static uint64_t now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + t.tv_nsec;
}

static void set_reg(struct kvm_lapic_state *s, int off, uint32_t v)
{
	memcpy(s->regs + off, &v, 4);
}

static uint32_t reg(const struct kvm_lapic_state *s, int off)
{
	uint32_t v;

	memcpy(&v, s->regs + off, 4);
	return v;
}

/* Runs the timer of V's APIC for about SLEEP_MS; one check. */
static void measure(struct vcpu *v, uint64_t bus_ns, const char *what)
{
	struct kvm_lapic_state st;
	uint64_t t0, t0b, t1a, t1, counted, lo, hi;
	uint32_t tmcct;

	if (ioctl(v->fd, KVM_GET_LAPIC, &st))
		BAIL("KVM_GET_LAPIC");
	set_reg(&st, 0xf0, 0x1ff);		/* SPIV: software enabled */
	set_reg(&st, 0x320, 0x10000 | 0x40);	/* LVTT: one-shot, masked */
	set_reg(&st, 0x3e0, 0xb);		/* TDCR: divide by 1 */
	set_reg(&st, 0x380, 0xffffffff);	/* TMICT */
	set_reg(&st, 0x390, 0xffffffff);	/* TMCCT: counting starts here */
	t0 = now_ns();
	if (ioctl(v->fd, KVM_SET_LAPIC, &st))
		BAIL("KVM_SET_LAPIC");
	t0b = now_ns();
	usleep(SLEEP_MS * 1000);
	t1a = now_ns();
	if (ioctl(v->fd, KVM_GET_LAPIC, &st))
		BAIL("KVM_GET_LAPIC");
	t1 = now_ns();
	tmcct = reg(&st, 0x390);
	counted = (uint64_t)(0xffffffffu - tmcct) * bus_ns;
	/* The timer ran at least t1a - t0b and at most t1 - t0. */
	lo = (t1a - t0b) / 10 * 9;
	hi = (t1 - t0) / 10 * 11;
	tap_ok(tmcct != 0 && counted >= lo && counted <= hi,
	       "%s: TMCCT %#x after %llu us: %llu counts x %llu ns = %llu us (want %llu..%llu)",
	       what, tmcct, (unsigned long long)(t1 - t0) / 1000,
	       (unsigned long long)(0xffffffffu - tmcct), (unsigned long long)bus_ns,
	       (unsigned long long)counted / 1000, (unsigned long long)lo / 1000,
	       (unsigned long long)hi / 1000);
}

int main(void)
{
	struct vm vm, def;
	struct vcpu v, dv;
	struct ioctl_res r;

	test_watchdog(60);
	vm = vm_create();
	REQUIRE_CAP(vm.sys_fd, KVM_CAP_SPLIT_IRQCHIP);
	tap_plan(12);
	tap_ok(check_ext(vm.sys_fd) == 1, "KVM_CHECK_EXTENSION on the system fd: 1 (got %ld)",
	       check_ext(vm.sys_fd));
	tap_ok(check_ext(vm.fd) == 1, "on a new VM: the default, 1 ns (got %ld)", check_ext(vm.fd));
	r = enable(vm.fd, KVM_CAP_X86_APIC_BUS_CYCLES_NS, 0);
	tap_ok(r.r == -1 && r.err == EINVAL, "0 ns -> -1/EINVAL, checked before the irqchip (got %s)",
	       res_str(r));
	r = enable(vm.fd, KVM_CAP_X86_APIC_BUS_CYCLES_NS, BUS_NS);
	tap_ok(r.r == -1 && r.err == ENXIO, "%d ns without an in-kernel APIC -> -1/ENXIO (got %s)",
	       BUS_NS, res_str(r));
	r = enable(vm.fd, KVM_CAP_SPLIT_IRQCHIP, 24);
	if (r.r)
		BAIL("KVM_CAP_SPLIT_IRQCHIP");
	/* 0xffffffff * 128 * 2^25 ns just fits in 64 bits; one more nanosecond does not. */
	r = enable(vm.fd, KVM_CAP_X86_APIC_BUS_CYCLES_NS, (1ull << 25) + 1);
	tap_ok(r.r == -1 && r.err == EINVAL, "2^25 + 1 ns (the longest timer would overflow) -> "
	       "-1/EINVAL (got %s)", res_str(r));
	r = enable(vm.fd, KVM_CAP_X86_APIC_BUS_CYCLES_NS, 1ull << 25);
	tap_ok(r.r == 0 && check_ext(vm.fd) == 1 << 25, "2^25 ns, the longest that fits (got %s, "
	       "the VM says %ld)", res_str(r), check_ext(vm.fd));
	r = enable(vm.fd, KVM_CAP_X86_APIC_BUS_CYCLES_NS, BUS_NS);
	tap_ok(r.r == 0, "%d ns with a split irqchip (got %s)", BUS_NS, res_str(r));
	tap_ok(check_ext(vm.fd) == BUS_NS, "the VM now says %d (got %ld)", BUS_NS, check_ext(vm.fd));
	v = vcpu_create(&vm, 0);
	r = enable(vm.fd, KVM_CAP_X86_APIC_BUS_CYCLES_NS, 10);
	tap_ok(r.r == -1 && r.err == EINVAL, "after KVM_CREATE_VCPU -> -1/EINVAL (got %s)",
	       res_str(r));
	tap_ok(check_ext(vm.fd) == BUS_NS, "and the VM keeps %d (got %ld)", BUS_NS, check_ext(vm.fd));

	def = vm_create();
	r = enable(def.fd, KVM_CAP_SPLIT_IRQCHIP, 24);
	if (r.r)
		BAIL("KVM_CAP_SPLIT_IRQCHIP");
	dv = vcpu_create(&def, 0);
	measure(&v, BUS_NS, "40 ns bus cycles");
	measure(&dv, 1, "the default 1 ns");
	tap_done();
}

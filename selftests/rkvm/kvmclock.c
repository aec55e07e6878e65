// SPDX-License-Identifier: GPL-2.0
/*
 * kvmclock: KVM_GET_CLOCK / KVM_SET_CLOCK and the guest's MSR_KVM_SYSTEM_TIME_NEW and
 * MSR_KVM_WALL_CLOCK_NEW records (Documentation/virt/kvm/x86/msr.rst).
 *  - KVM_CAP_ADJUST_CLOCK reports KVM_CLOCK_REALTIME; the supported CPUID offers
 *    KVM_FEATURE_CLOCKSOURCE2; unknown KVM_SET_CLOCK flags -> EINVAL.
 *  - KVM_SET_CLOCK(10 s) then KVM_GET_CLOCK reads 10 s plus the time in between; with
 *    KVM_CLOCK_REALTIME a wall time 5 s ago adds those 5 s. KVM_GET_CLOCK reports the
 *    host TSC and wall time with the clock.
 *  - The guest enables its time record and reads its TSC: the record's version is even,
 *    and system_time + scale(TSC - tsc_timestamp) with the record's multiplier and shift
 *    lies between the KVM_GET_CLOCK readings taken before and after that KVM_RUN.
 *  - The guest's wall-clock record holds the wall time at which the VM clock read 0.
 *  - KVM_KVMCLOCK_CTRL (KVM_CAP_KVMCLOCK_CTRL): EINVAL before the guest enabled its time
 *    record; afterwards the next record carries PVCLOCK_GUEST_STOPPED (bit 1 of flags).
 */
#include <time.h>

#include "lib/rkvm_test.h"

#define MSR_KVM_WALL_CLOCK_NEW 0x4b564d00
#define MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01
#define KVM_CPUID_FEATURES 0x40000001
#define KVM_FEATURE_CLOCKSOURCE2 3
#define TIME_GPA (GUEST_DATA_GPA + 0x1000)
#define WALL_GPA (GUEST_DATA_GPA + 0x2000)
#define P_LO 0x90
#define P_HI 0x91
#define NS 1000000000ull

/* The ABI records (msr.rst). */
struct time_info {
	uint32_t version;
	uint32_t pad0;
	uint64_t tsc_timestamp;
	uint64_t system_time;
	uint32_t mul;
	int8_t shift;
	uint8_t flags;
	uint8_t pad[2];
};

struct wall_clock {
	uint32_t version;
	uint32_t sec;
	uint32_t nsec;
};

GUEST_CODE(kc_guest, 64,
	"mov $" XSTR(MSR_KVM_WALL_CLOCK_NEW) ", %ecx\n"
	"mov $" XSTR(WALL_GPA) ", %eax\n"
	"xor %edx, %edx\n"
	"wrmsr\n"
	"mov $" XSTR(MSR_KVM_SYSTEM_TIME_NEW) ", %ecx\n"
	"mov $" XSTR(TIME_GPA) " + 1, %eax\n"
	"wrmsr\n"
	"out %al, $0x92\n"		/* a round trip: the record is written on entry */
	"rdtsc\n"
	"mov %edx, %ebx\n"
	"out %eax, $" XSTR(P_LO) "\n"
	"mov %ebx, %eax\n"
	"out %eax, $" XSTR(P_HI) "\n"
	"out %al, $0x93\n"		/* after KVM_KVMCLOCK_CTRL */
	"hlt\n");

static uint64_t get_clock(struct vm *vm, struct kvm_clock_data *d)
{
	memset(d, 0, sizeof(*d));
	if (ioctl(vm->fd, KVM_GET_CLOCK, d))
		BAIL("KVM_GET_CLOCK");
	return d->clock;
}

static struct ioctl_res set_clock(struct vm *vm, uint64_t clock, uint32_t flags,
				  uint64_t realtime)
{
	struct kvm_clock_data d = { .clock = clock, .flags = flags, .realtime = realtime };

	return do_ioctl(vm->fd, KVM_SET_CLOCK, (unsigned long)&d);
}

/* KVM reports the wall time and host TSC with its clock only on a TSC clocksource. */
static int clocksource_is_tsc(void)
{
	char buf[32] = "";
	FILE *f = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "r");

	if (!f)
		return 0;
	if (!fgets(buf, sizeof(buf), f))
		buf[0] = 0;
	fclose(f);
	return !strncmp(buf, "tsc", 3);
}

static uint64_t real_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_REALTIME, &t);
	return t.tv_sec * NS + t.tv_nsec;
}

/* The guest's pvclock reading at guest TSC `tsc`. */
static uint64_t pv_read(const struct time_info *t, uint64_t tsc)
{
	uint64_t delta = tsc - t->tsc_timestamp;

	if (t->shift < 0)
		delta >>= -t->shift;
	else
		delta <<= t->shift;
	return t->system_time + (uint64_t)(((unsigned __int128)delta * t->mul) >> 32);
}

int main(void)
{
	struct kvm_clock_data d0, d1;
	struct kvm_cpuid2 *c;
	struct time_info ti;
	struct wall_clock wc;
	struct ioctl_res r;
	struct guest g;
	uint64_t t, tsc, now, epoch, wall;
	uint32_t i;
	int cs2 = 0, ok;
	long caps;

	test_watchdog(60);
	g = guest_create();
	caps = ioctl(g.vm.sys_fd, KVM_CHECK_EXTENSION, KVM_CAP_ADJUST_CLOCK);
	if (caps <= 0 || !(caps & KVM_CLOCK_REALTIME))
		tap_skip_all("KVM_CAP_ADJUST_CLOCK without KVM_CLOCK_REALTIME");
	if (!clocksource_is_tsc())
		tap_skip_all("the host clocksource is not the TSC");
	tap_plan(11);
	c = supported_cpuid(g.vm.sys_fd);
	for (i = 0; i < c->nent; i++)
		if (c->entries[i].function == KVM_CPUID_FEATURES)
			cs2 = !!(c->entries[i].eax & (1u << KVM_FEATURE_CLOCKSOURCE2));
	free(c);
	tap_ok(cs2, "the supported CPUID offers KVM_FEATURE_CLOCKSOURCE2");
	r = set_clock(&g.vm, 0, 0x100, 0);
	tap_ok(r.r == -1 && r.err == EINVAL, "KVM_SET_CLOCK with flag 0x100 -> -1/EINVAL (got %s)",
	       res_str(r));

	r = set_clock(&g.vm, 10 * NS, 0, 0);
	t = get_clock(&g.vm, &d0);
	tap_ok(r.r == 0 && t >= 10 * NS && t < 11 * NS, "KVM_SET_CLOCK(10 s): KVM_GET_CLOCK "
	       "%llu ns", (unsigned long long)t);
	tap_ok((d0.flags & (KVM_CLOCK_REALTIME | KVM_CLOCK_HOST_TSC)) ==
		       (KVM_CLOCK_REALTIME | KVM_CLOCK_HOST_TSC) && d0.realtime && d0.host_tsc,
	       "KVM_GET_CLOCK also reports the wall time and host TSC (flags %#x)", d0.flags);
	r = set_clock(&g.vm, 0, KVM_CLOCK_REALTIME, real_ns() - 5 * NS);
	t = get_clock(&g.vm, &d0);
	tap_ok(r.r == 0 && t >= 5 * NS && t < 6 * NS, "KVM_SET_CLOCK(0, wall time 5 s ago): "
	       "%llu ns", (unsigned long long)t);

	r = do_ioctl(g.v.fd, KVM_KVMCLOCK_CTRL, 0);
	tap_ok(r.r == -1 && r.err == EINVAL, "KVM_KVMCLOCK_CTRL before the guest enabled "
	       "kvmclock -> -1/EINVAL (got %s)", res_str(r));
	guest_load(g.mem, GUEST_CODE_GPA, kc_guest);
	vcpu_set_long_mode(&g.v, g.mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
	vcpu_run(&g.v);
	ok = is_out(&g.v, 0x92, 1);
	get_clock(&g.vm, &d0);
	vcpu_run(&g.v);
	ok &= is_out(&g.v, P_LO, 4);
	tsc = io_out_value(&g.v);
	vcpu_run(&g.v);
	ok &= is_out(&g.v, P_HI, 4);
	tsc |= (uint64_t)io_out_value(&g.v) << 32;
	get_clock(&g.vm, &d1);
	memcpy(&ti, g.mem + TIME_GPA, sizeof(ti));
	tap_ok(ok && !(ti.version & 1) && ti.version && ti.mul,
	       "the guest's time record: version %u, mul %u, shift %d (%s)", ti.version, ti.mul,
	       ti.shift, exit_str(&g.v));
	t = pv_read(&ti, tsc);
	tap_ok((t >= d0.clock && t <= d1.clock) || !host_tsc_stable() || !host_is_intel(),
	       "the guest's kvmclock at its RDTSC: %llu ns, within KVM_GET_CLOCK's %llu..%llu%s",
	       (unsigned long long)t, (unsigned long long)d0.clock, (unsigned long long)d1.clock,
	       t >= d0.clock && t <= d1.clock ? "" : TSC_FLAKE_SKIP);

	r = do_ioctl(g.v.fd, KVM_KVMCLOCK_CTRL, 0);
	vcpu_run(&g.v);
	memcpy(&ti, g.mem + TIME_GPA, sizeof(ti));
	tap_ok(r.r == 0 && is_out(&g.v, 0x93, 1) && (ti.flags & 2) && !(ti.version & 1),
	       "KVM_KVMCLOCK_CTRL (%s): the next record has PVCLOCK_GUEST_STOPPED (flags %#x)",
	       res_str(r), ti.flags);

	memcpy(&wc, g.mem + WALL_GPA, sizeof(wc));
	now = real_ns();
	t = get_clock(&g.vm, &d1);
	epoch = now - t;
	wall = wc.sec * NS + wc.nsec;
	tap_ok(!(wc.version & 1) && wc.version, "the wall-clock record: version %u", wc.version);
	tap_ok(wall + NS / 10 > epoch && wall < epoch + NS / 10,
	       "it holds the wall time at VM clock 0: %llu.%09u s (want about %llu s)",
	       (unsigned long long)wc.sec, wc.nsec, (unsigned long long)(epoch / NS));
	tap_done();
}

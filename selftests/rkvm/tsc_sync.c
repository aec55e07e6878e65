// SPDX-License-Identifier: GPL-2.0
/*
 * TSC matching across a VM's vCPUs (arch/x86/kvm/x86.c kvm_synchronize_tsc): a VMM creates
 * vCPUs one by one and writes each one's IA32_TSC separately, yet the guest must see one
 * TSC. KVM takes a new vCPU, a userspace write of 0, and (after userspace's first write) a
 * value within a second of what the last write reads by now as meant to be simultaneous:
 * they share the current offset. Any other value starts a new generation.
 *
 * Checks (TSCs read with KVM_GET_MSRS, back to back; "together" is within 50 ms of each
 * other, "apart" is more than 5 s):
 *  - vCPU 1, created 300 ms after vCPU 0, reads the same TSC;
 *  - the same value written to vCPU 0 and, 300 ms later, to vCPU 1: together;
 *  - a value 10 s ahead written to vCPU 1: apart from vCPU 0, and near what was written;
 *  - vCPU 2, created then, joins vCPU 1's generation;
 *  - a userspace write of 0 to vCPU 0 joins that generation too (it does not reset it);
 *  - userspace's first value, 500 ms ahead of the vCPUs' TSC, is taken as it is (not
 *    matched: the one-second slop applies only after a first write); the same value on
 *    vCPU 1 then joins it;
 *  - KVM_VCPU_TSC_OFFSET copied from vCPU 1 to vCPU 0: together; a vCPU created next
 *    joins that offset.
 */
#include "lib/rkvm_test.h"

#define MSR_IA32_TSC 0x10

static uint64_t khz;

static int64_t ms_of(int64_t cycles)
{
	return cycles / (int64_t)khz;
}

static int64_t tsc_gap(struct vcpu *a, struct vcpu *b)
{
	uint64_t ta = vcpu_get_msr1(a, MSR_IA32_TSC);
	uint64_t tb = vcpu_get_msr1(b, MSR_IA32_TSC);

	return (int64_t)(tb - ta);
}

static void set_tsc(struct vcpu *v, uint64_t val)
{
	if (vcpu_set_msr1(v, MSR_IA32_TSC, val) != 1)
		BAIL("KVM_SET_MSRS(IA32_TSC)");
}

static uint64_t offset_of(struct vcpu *v)
{
	uint64_t off = 0;
	struct kvm_device_attr a = { .group = KVM_VCPU_TSC_CTRL, .attr = KVM_VCPU_TSC_OFFSET,
				     .addr = (uintptr_t)&off };

	if (ioctl(v->fd, KVM_GET_DEVICE_ATTR, &a))
		BAIL("KVM_GET_DEVICE_ATTR(KVM_VCPU_TSC_OFFSET)");
	return off;
}

int main(void)
{
	struct vm vm;
	struct vcpu v0, v1, v2, v3;
	uint64_t x, off;
	int64_t gap;
	long r;

	test_watchdog(120);
	tap_plan(10);
	vm = vm_create();
	v0 = vcpu_create(&vm, 0);
	usleep(300 * 1000);
	v1 = vcpu_create(&vm, 1);
	r = ioctl(v0.fd, KVM_GET_TSC_KHZ, 0);
	if (r <= 0)
		BAIL("KVM_GET_TSC_KHZ");
	khz = r;

	gap = tsc_gap(&v0, &v1);
	tap_ok(llabs(ms_of(gap)) < 50, "vCPU 1, created 300 ms later, reads vCPU 0's TSC (%lld ms apart)",
	       (long long)ms_of(gap));

	/*
	 * Userspace's first value is taken as it is, even within a second of the vCPUs'
	 * TSC; the same value on the next vCPU then joins it.
	 */
	x = vcpu_get_msr1(&v0, MSR_IA32_TSC) + 500ull * khz;
	set_tsc(&v0, x);
	gap = tsc_gap(&v1, &v0);
	tap_ok(ms_of(gap) > 400 && ms_of(gap) < 600,
	       "userspace's first value, 500 ms ahead, is not matched (%lld ms apart)",
	       (long long)ms_of(gap));
	set_tsc(&v1, x);
	gap = tsc_gap(&v0, &v1);
	tap_ok(llabs(ms_of(gap)) < 50, "the same value on vCPU 1 then joins it (%lld ms apart)",
	       (long long)ms_of(gap));

	x = 1000000ull * khz;	/* 1000 s */
	set_tsc(&v0, x);
	usleep(300 * 1000);
	set_tsc(&v1, x);
	gap = tsc_gap(&v0, &v1);
	tap_ok(llabs(ms_of(gap)) < 50,
	       "one value written 300 ms apart to two vCPUs: one TSC (%lld ms apart)",
	       (long long)ms_of(gap));

	set_tsc(&v1, x + 10000ull * khz);
	gap = tsc_gap(&v0, &v1);
	tap_ok(ms_of(gap) > 5000, "a value 10 s ahead starts a generation of its own (%lld ms apart)",
	       (long long)ms_of(gap));
	tap_ok(ms_of(vcpu_get_msr1(&v1, MSR_IA32_TSC) - x) >= 10000 &&
	       ms_of(vcpu_get_msr1(&v1, MSR_IA32_TSC) - x) < 11000,
	       "and vCPU 1 reads what was written (%lld ms past 1000 s)",
	       (long long)ms_of(vcpu_get_msr1(&v1, MSR_IA32_TSC) - x));

	v2 = vcpu_create(&vm, 2);
	gap = tsc_gap(&v1, &v2);
	tap_ok(llabs(ms_of(gap)) < 50, "vCPU 2, created now, joins vCPU 1's TSC (%lld ms apart)",
	       (long long)ms_of(gap));

	set_tsc(&v0, 0);
	gap = tsc_gap(&v0, &v1);
	tap_ok(llabs(ms_of(gap)) < 50,
	       "userspace's 0 in vCPU 0's IA32_TSC joins that generation too (%lld ms apart)",
	       (long long)ms_of(gap));

	set_tsc(&v0, x);
	off = offset_of(&v1);
	{
		struct kvm_device_attr a = { .group = KVM_VCPU_TSC_CTRL,
					     .attr = KVM_VCPU_TSC_OFFSET, .addr = (uintptr_t)&off };

		if (ioctl(v0.fd, KVM_SET_DEVICE_ATTR, &a))
			BAIL("KVM_SET_DEVICE_ATTR(KVM_VCPU_TSC_OFFSET)");
	}
	gap = tsc_gap(&v0, &v1);
	tap_ok(llabs(ms_of(gap)) < 50, "vCPU 1's KVM_VCPU_TSC_OFFSET given to vCPU 0: one TSC (%lld ms)",
	       (long long)ms_of(gap));
	/* That offset is now the VM's: a vCPU created next starts there too. */
	v3 = vcpu_create(&vm, 3);
	gap = tsc_gap(&v1, &v3);
	tap_ok(llabs(ms_of(gap)) < 50, "and vCPU 3, created then, joins it (%lld ms apart)",
	       (long long)ms_of(gap));
	tap_done();
}

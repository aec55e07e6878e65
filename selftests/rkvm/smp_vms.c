// SPDX-License-Identifier: GPL-2.0
/*
 * Two VMs with two vCPUs each, one thread per vCPU, the threads pinned across two CPUs
 * (VM A: vCPU 0 on CPU 0, vCPU 1 on CPU 1; VM B the other way round), all running at
 * once. Each vCPU runs a loop of 5000 IO exits (lib/vcpu_loop.h): every exit must be the
 * expected OUT, in order, then HLT; the vCPU's counter in guest memory must be 5000 and
 * the VM's shared counter, incremented with a locked instruction by both vCPUs from two
 * CPUs at once, exactly 10000. With one CPU online everything runs on CPU 0.
 */
#include "lib/vcpu_loop.h"

#define N 5000

int main(void)
{
	int ncpu = online_cpus();
	int cpus_a[2] = { 0, 1 % ncpu }, cpus_b[2] = { 1 % ncpu, 0 };
	static struct loop_vm a, b;
	static volatile int stop = 1;
	long t0;

	test_watchdog(300);
	tap_plan(2 * 3 + 1);
	loop_vm_create(&a, 2, 0x10, cpus_a, N, 1, &stop);
	loop_vm_create(&b, 2, 0x20, cpus_b, N, 1, &stop);
	t0 = monotonic_ms();
	loop_vm_start(&a);
	loop_vm_start(&b);
	loop_vm_join(&a);
	loop_vm_join(&b);
	tap_diag("%d CPUs online, 4 vCPUs x %d exits in %ld ms", ncpu, N, monotonic_ms() - t0);
	loop_vm_check(&a, "VM A");
	loop_vm_check(&b, "VM B");
	tap_ok(ncpu < 2 || (a.vcpus[0].pinned_ok && a.vcpus[1].pinned_ok && b.vcpus[0].pinned_ok &&
			    b.vcpus[1].pinned_ok),
	       "with %d CPUs, every vCPU thread ran pinned to its CPU", ncpu);
	tap_done();
}

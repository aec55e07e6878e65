// SPDX-License-Identifier: GPL-2.0
/*
 * The L1D flush on VM entry (L1TF) and its stat: with vmentry_l1d_flush at "cond" or
 * "always" (the kernel command line's bench.l1d=MODE loads kvm-intel and rkvm so, on a
 * CPU with the L1TF bug), every KVM_RUN after an exit to userspace flushes before it
 * enters the guest, and l1d_flush counts each flush. Skipped where the hypervisor does
 * not flush (a CPU without the bug, or the parameter at "never").
 */
#include "lib/rkvm_test.h"
#include "lib/stats.h"

#define CODE_GPA 0x1000
#define EXITS 50

static const uint8_t guest_code[] = {
	0xe6, 0xf1,				/* 1: out 0xf1, al */
	0xeb, 0xfc,				/* jmp 1b */
};

int main(void)
{
	const char *hv = getenv("RKVM_HV");
	char path[128], mode[32] = "", l1tf[128] = "";
	struct stats cs;
	struct vm vm;
	struct vcpu v;
	uint64_t before;
	uint8_t *mem;
	FILE *f;
	int fd, i;

	snprintf(path, sizeof(path), "/sys/module/%s/parameters/vmentry_l1d_flush",
		 hv && !strcmp(hv, "rkvm") ? "rkvm" : "kvm_intel");
	f = fopen(path, "r");
	if (!f)
		tap_skip_all("no vmentry_l1d_flush parameter (not VMX)");
	if (!fgets(mode, sizeof(mode), f))
		mode[0] = 0;
	fclose(f);
	mode[strcspn(mode, "\n")] = 0;
	f = fopen("/sys/devices/system/cpu/vulnerabilities/l1tf", "r");
	if (f) {
		if (!fgets(l1tf, sizeof(l1tf), f))
			l1tf[0] = 0;
		fclose(f);
		l1tf[strcspn(l1tf, "\n")] = 0;
	}
	if (strcmp(mode, "cond") && strcmp(mode, "always")) {
		snprintf(path, sizeof(path), "vmentry_l1d_flush is '%s' (L1TF: %s)", mode, l1tf);
		tap_skip_all(path);
	}
	test_watchdog(120);
	tap_plan(1);
	vm = vm_create();
	v = real_mode_vcpu(&vm, CODE_GPA, guest_code, sizeof(guest_code), &mem);
	fd = ioctl(v.fd, KVM_GET_STATS_FD, 0);
	if (fd < 0 || !stats_load(fd, &cs))
		BAIL("KVM_GET_STATS_FD");
	before = stats_value(fd, &cs, "l1d_flush");
	for (i = 0; i < EXITS; i++) {
		vcpu_run(&v);
		if (!is_out(&v, 0xf1, 1))
			BAIL("exit %d: %s", i, exit_str(&v));
	}
	tap_ok(stats_value(fd, &cs, "l1d_flush") - before >= EXITS,
	       "vmentry_l1d_flush=%s (L1TF: %s): %d runs after exits to userspace, l1d_flush +%llu",
	       mode, l1tf, EXITS, (unsigned long long)(stats_value(fd, &cs, "l1d_flush") - before));
	tap_done();
}

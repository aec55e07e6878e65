// SPDX-License-Identifier: GPL-2.0
/*
 * WBINVD is intercepted: a guest must not be able to write back and invalidate every
 * cache of the host at will. A 32-bit guest runs WBINVD 100 times and halts; the vCPU's
 * binary stats (KVM_GET_STATS_FD) must count at least 100 more exits than before.
 */
#include "lib/rkvm_test.h"

#define ROUNDS 100
#define NAME_SIZE 48

GUEST_CODE(wbinvd_guest, 32,
	"mov $" XSTR(ROUNDS) ", %ecx\n"
	"1:\n"
	"wbinvd\n"
	"loop 1b\n"
	"hlt\n");

/* The value of vCPU stat NAME read from stats fd FD, or ~0 when absent. */
static uint64_t stat_value(int fd, const char *name)
{
	struct kvm_stats_header h;
	size_t desc_size;
	uint64_t v = ~0ull;
	uint8_t *descs;
	uint32_t i;

	if (pread(fd, &h, sizeof(h), 0) != sizeof(h) || h.name_size != NAME_SIZE ||
	    h.num_desc == 0 || h.num_desc > 1000)
		return v;
	desc_size = sizeof(struct kvm_stats_desc) + h.name_size;
	descs = calloc(h.num_desc, desc_size);
	if (!descs || pread(fd, descs, desc_size * h.num_desc, h.desc_offset) !=
			      (ssize_t)(desc_size * h.num_desc))
		goto out;
	for (i = 0; i < h.num_desc; i++) {
		struct kvm_stats_desc *d = (struct kvm_stats_desc *)(descs + i * desc_size);

		if (!strcmp(d->name, name)) {
			if (pread(fd, &v, 8, h.data_offset + d->offset) != 8)
				v = ~0ull;
			break;
		}
	}
out:
	free(descs);
	return v;
}

int main(void)
{
	uint64_t before, after;
	struct guest g;
	int stats;

	test_watchdog(60);
	tap_plan(3);
	g = guest_create();
	guest_load(g.mem, GUEST_CODE_GPA, wbinvd_guest);
	vcpu_set_protected_mode(&g.v, g.mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
	stats = ioctl(g.v.fd, KVM_GET_STATS_FD, 0);
	if (stats < 0)
		BAIL("KVM_GET_STATS_FD");
	before = stat_value(stats, "exits");
	tap_ok(before != ~0ull, "the vCPU has an 'exits' stat (%llu)", (unsigned long long)before);
	tap_ok(vcpu_run(&g.v) == KVM_EXIT_HLT, "the guest ran %d WBINVDs and halted (%s)", ROUNDS,
	       exit_str(&g.v));
	after = stat_value(stats, "exits");
	tap_ok(after != ~0ull && after >= before + ROUNDS,
	       "every WBINVD exited: %llu exits, %llu before", (unsigned long long)after,
	       (unsigned long long)before);
	close(stats);
	guest_destroy(&g);
	tap_done();
}

// SPDX-License-Identifier: GPL-2.0
/*
 * KVM_GET_STATS_FD on a VM and a vCPU: the header, id string and descriptor layout of
 * KVM's binary stats, values that follow what the guest did (a real-mode loop of OUTs
 * counts in io_exits), pread and read agreeing, a read-only fd that takes no ioctl, and
 * the fd outliving the VM and vCPU fds it came from. The four files carry KVM's names
 * (what /proc/self/fd shows): kvm-vm, kvm-vcpu:0, kvm-vm-stats, kvm-vcpu-stats:0.
 */
#include "lib/rkvm_test.h"
#include "lib/stats.h"

#define CODE_GPA 0x1000
#define PORT 0xf1
#define LOOPS 1000

/* 16-bit code: LOOPS OUTs to PORT, then HLT. */
static const uint8_t guest_code[] = {
	0xba, PORT, 0x00,			/* mov dx, PORT */
	0xb9, LOOPS & 0xff, LOOPS >> 8,		/* mov cx, LOOPS */
	0xee,					/* 1: out dx, al */
	0xe2, 0xfd,				/* loop 1b */
	0xf4,					/* hlt */
};

/* Every descriptor: known type/unit/base, a name, nonzero size, aligned data offset. */
static int descs_sane(struct stats *s, const char **bad)
{
	uint32_t i, j;

	for (i = 0; i < s->h.num_desc; i++) {
		struct kvm_stats_desc *d = desc_at(s, i);
		uint32_t type = d->flags & KVM_STATS_TYPE_MASK;

		*bad = d->name;
		if (type > KVM_STATS_TYPE_MAX || (d->flags & KVM_STATS_UNIT_MASK) > KVM_STATS_UNIT_MAX ||
		    (d->flags & KVM_STATS_BASE_MASK) > KVM_STATS_BASE_MAX || !d->size ||
		    !d->name[0] || strnlen(d->name, NAME_SIZE) >= NAME_SIZE || d->offset % 8 ||
		    (type == KVM_STATS_TYPE_LINEAR_HIST) != !!d->bucket_size) {
			tap_diag("descriptor %u '%s': flags %#x exponent %d size %u offset %u bucket %u",
				 i, d->name, d->flags, d->exponent, d->size, d->offset,
				 d->bucket_size);
			return 0;
		}
		/* Names are unique. */
		for (j = 0; j < i; j++)
			if (!strcmp(desc_at(s, j)->name, d->name))
				return 0;
	}
	return 1;
}

int main(void)
{
	struct stats vs = { 0 }, cs = { 0 };
	struct kvm_stats_desc *d;
	char want[NAME_SIZE], buf[256], rbuf[256];
	const char *bad = "";
	struct vm vm;
	struct vcpu v;
	uint8_t *mem;
	int sys_fd, vm_stats, vcpu_stats, ios = 0;
	uint64_t io_exits, exits;
	long r;

	test_watchdog(120);
	sys_fd = kvm_open();
	REQUIRE_CAP(sys_fd, KVM_CAP_BINARY_STATS_FD);
	close(sys_fd);
	tap_plan(17);
	vm = vm_create();
	if (ioctl(vm.fd, KVM_SET_TSS_ADDR, 0xfffbd000))
		BAIL("KVM_SET_TSS_ADDR");
	mem = vm_add_memory(&vm, 0, 0, 0x10000, 0);
	memcpy(mem + CODE_GPA, guest_code, sizeof(guest_code));
	v = vcpu_create(&vm, 0);
	vcpu_set_real_mode(&v, CODE_GPA);

	/* The VM's file. */
	vm_stats = ioctl(vm.fd, KVM_GET_STATS_FD, 0);
	tap_ok(vm_stats >= 0, "KVM_GET_STATS_FD on the VM (%d, errno %d)", vm_stats, errno);
	if (vm_stats < 0 || !stats_load(vm_stats, &vs))
		BAIL("reading the VM's stats header and descriptors");
	snprintf(want, sizeof(want), "kvm-%d", getpid());
	tap_ok(!strcmp(vs.id, want), "VM stats id '%s' (want '%s')", vs.id, want);
	tap_ok(vs.h.flags == 0 && vs.h.id_offset == sizeof(vs.h) &&
		       vs.h.desc_offset >= vs.h.id_offset + NAME_SIZE &&
		       vs.h.data_offset >= vs.h.desc_offset + vs.desc_size * vs.h.num_desc,
	       "VM header: id, descriptors, data in order (%u/%u/%u, %u stats)", vs.h.id_offset,
	       vs.h.desc_offset, vs.h.data_offset, vs.h.num_desc);
	tap_ok(descs_sane(&vs, &bad), "VM descriptors well formed (last looked at: %s)", bad);
	d = stats_find(&vs, "remote_tlb_flush");
	tap_ok(d && (d->flags & KVM_STATS_TYPE_MASK) == KVM_STATS_TYPE_CUMULATIVE && d->size == 1,
	       "remote_tlb_flush is a cumulative counter");
	d = stats_find(&vs, "pages_4k");
	tap_ok(d && (d->flags & KVM_STATS_TYPE_MASK) == KVM_STATS_TYPE_INSTANT,
	       "pages_4k is an instant counter");

	/* The vCPU's file, before and after the guest's OUT loop. */
	vcpu_stats = ioctl(v.fd, KVM_GET_STATS_FD, 0);
	tap_ok(vcpu_stats >= 0, "KVM_GET_STATS_FD on the vCPU (%d, errno %d)", vcpu_stats, errno);
	if (vcpu_stats < 0 || !stats_load(vcpu_stats, &cs))
		BAIL("reading the vCPU's stats header and descriptors");
	snprintf(want, sizeof(want), "kvm-%d/vcpu-0", getpid());
	tap_ok(!strcmp(cs.id, want), "vCPU stats id '%s' (want '%s')", cs.id, want);
	tap_ok(descs_sane(&cs, &bad), "vCPU descriptors well formed (last looked at: %s)", bad);
	{
		const int fds[] = { vm.fd, v.fd, vm_stats, vcpu_stats };
		static const char *const names[] = { "anon_inode:kvm-vm", "anon_inode:kvm-vcpu:0",
						     "anon_inode:kvm-vm-stats",
						     "anon_inode:kvm-vcpu-stats:0" };
		char got[4][64] = { "", "", "", "" }, link[64];
		int same = 1;

		for (int i = 0; i < 4; i++) {
			snprintf(link, sizeof(link), "/proc/self/fd/%d", fds[i]);
			if (readlink(link, got[i], sizeof(got[i]) - 1) < 0)
				snprintf(got[i], sizeof(got[i]), "(errno %d)", errno);
			same &= !strcmp(got[i], names[i]);
		}
		tap_ok(same, "file names as KVM's: %s, %s, %s, %s", got[0], got[1], got[2],
		       got[3]);
	}
	d = stats_find(&cs, "halt_wait_hist");
	tap_ok(d && (d->flags & KVM_STATS_TYPE_MASK) == KVM_STATS_TYPE_LOG_HIST &&
		       (d->flags & KVM_STATS_UNIT_MASK) == KVM_STATS_UNIT_SECONDS &&
		       d->exponent == -9 && d->size == 32,
	       "halt_wait_hist: a log histogram of nanoseconds, 32 buckets");
	io_exits = stats_value(vcpu_stats, &cs, "io_exits");
	tap_ok(io_exits == 0, "io_exits 0 before KVM_RUN (%llu)", (unsigned long long)io_exits);
	while (vcpu_run(&v) == KVM_EXIT_IO && ios <= LOOPS)
		ios++;
	if (v.run->exit_reason != KVM_EXIT_HLT || ios != LOOPS)
		BAIL("guest: %d IO exits, then %s", ios, exit_str(&v));
	io_exits = stats_value(vcpu_stats, &cs, "io_exits");
	exits = stats_value(vcpu_stats, &cs, "exits");
	tap_ok(io_exits == LOOPS && exits >= io_exits, "after %d OUTs: io_exits %llu, exits %llu",
	       LOOPS, (unsigned long long)io_exits, (unsigned long long)exits);

	/* read() from the start sees what pread() sees. */
	r = read(vcpu_stats, rbuf, sizeof(rbuf));
	tap_ok(r == sizeof(rbuf) && pread(vcpu_stats, buf, sizeof(buf), 0) == sizeof(buf) &&
		       !memcmp(buf, rbuf, sizeof(buf)),
	       "read() and pread() agree on the first %zu bytes (%ld)", sizeof(buf), r);
	r = write(vcpu_stats, buf, 1);
	tap_ok(r == -1 && errno == EBADF, "write() fails with EBADF (%ld, errno %d)", r, errno);
	r = ioctl(vcpu_stats, KVM_RUN, 0);
	tap_ok(r == -1 && errno == ENOTTY, "an ioctl on the stats fd fails with ENOTTY (%ld, errno %d)",
	       r, errno);

	/* The stats fds keep their VM and vCPU alive. */
	munmap(v.run, v.run_size);
	close(v.fd);
	close(vm.fd);
	io_exits = stats_value(vcpu_stats, &cs, "io_exits");
	tap_ok(io_exits == LOOPS && stats_value(vm_stats, &vs, "pages_4k") != ~0ull,
	       "both stats fds still read after the VM and vCPU fds are closed (io_exits %llu)",
	       (unsigned long long)io_exits);
	close(vcpu_stats);
	close(vm_stats);
	free(vs.descs);
	free(cs.descs);
	tap_done();
}

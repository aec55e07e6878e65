// SPDX-License-Identifier: GPL-2.0
/*
 * kvm's nx_huge_pages (the iTLB multihit mitigation) and its recovery, on whichever
 * hypervisor runs the test (kvm's parameters, or rkvm's of the same names):
 *  - with nx_huge_pages off, a read maps 2 MiB of transparent-huge-page memory at once;
 *  - turning it on ("force") drops the mapping, so the guest's next fetch there maps
 *    4 KiB pages instead: nx_lpage_splits 1, pages_2m 0;
 *  - with nx_huge_pages_recovery_ratio 1 and _period_ms 100 the split is recovered within
 *    a few periods (nx_lpage_splits 0) and the next read maps 2 MiB again;
 *  - "never" is refused while a VM exists (EBUSY), a word it does not know with EINVAL;
 *  - KVM_CAP_VM_DISABLE_NX_HUGE_PAGES: only with args[0] 0 and before the first vCPU; a VM
 *    with it executes from its 2 MiB mapping without splitting it.
 * The parameters are put back as they were at exit. Skipped when the host did not back
 * the region with a huge page, or when nx_huge_pages is "never".
 */
#include "lib/rkvm_test.h"
#include "lib/stats.h"
#include "lib/thp.h"

#define HUGE_SLOT 1
#define HUGE_GPA 0x40000000ull
#define HUGE_SIZE (4ull << 20)
#define MB2 (2ull << 20)
#define RET_OFF (MB2 + 0x100000)

GUEST_CODE(nx_guest, 32,
	/* A read in the upper 2 MiB. */
	"movb 0x40200000, %al\n"
	"outb %al, $0x10\n"
	/* A call to the RET the host put there. */
	"mov $0x40300000, %eax\n"
	"call *%eax\n"
	"outb %al, $0x11\n"
	/* Another read there. */
	"movb 0x40210000, %al\n"
	"outb %al, $0x12\n"
	"hlt\n");

static const char *params[] = { "nx_huge_pages", "nx_huge_pages_recovery_ratio",
				"nx_huge_pages_recovery_period_ms" };
static char saved[3][32];
static int nsaved;

static void param_path(char *path, size_t n, const char *name)
{
	const char *hv = getenv("RKVM_HV");

	snprintf(path, n, "/sys/module/%s/parameters/%s",
		 hv && !strcmp(hv, "rkvm") ? "rkvm" : "kvm", name);
}

static int param_read(const char *name, char *buf, size_t n)
{
	char path[128];
	FILE *f;
	int ok;

	param_path(path, sizeof(path), name);
	f = fopen(path, "r");
	if (!f)
		return 0;
	ok = fgets(buf, n, f) != NULL;
	fclose(f);
	buf[strcspn(buf, "\n")] = 0;
	return ok;
}

/* Writes VALUE; 0 or the errno. */
static int param_write(const char *name, const char *value)
{
	char path[128];
	int fd, err = 0;

	param_path(path, sizeof(path), name);
	fd = open(path, O_WRONLY);
	if (fd < 0)
		return errno;
	if (write(fd, value, strlen(value)) < 0)
		err = errno;
	close(fd);
	return err;
}

static void params_restore(void)
{
	int i;

	for (i = nsaved - 1; i >= 0; i--)
		param_write(params[i], saved[i]);
}

static void set_param(const char *name, const char *value)
{
	int err = param_write(name, value);

	if (err)
		BAIL("writing %s to %s: %s", value, name, strerror(err));
}

struct nx_vm {
	struct guest g;
	int stats_fd;
	struct stats st;
};

static uint64_t vm_stat(struct nx_vm *n, const char *name)
{
	return stats_value(n->stats_fd, &n->st, name);
}

/* A guest with the huge slot at HVA; DISABLE_NX: KVM_CAP_VM_DISABLE_NX_HUGE_PAGES first. */
static void nx_vm_create(struct nx_vm *n, uint8_t *hva, int disable_nx)
{
	struct kvm_enable_cap cap = { .cap = KVM_CAP_VM_DISABLE_NX_HUGE_PAGES };
	struct vm vm = vm_create();

	if (disable_nx && ioctl(vm.fd, KVM_ENABLE_CAP, &cap))
		BAIL("KVM_CAP_VM_DISABLE_NX_HUGE_PAGES");
	n->g = guest_create_on(vm);
	vm_set_slot(n->g.vm.fd, HUGE_SLOT, HUGE_GPA, HUGE_SIZE, hva, 0);
	guest_load(n->g.mem, GUEST_CODE_GPA, nx_guest);
	vcpu_set_protected_mode(&n->g.v, n->g.mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
	n->stats_fd = ioctl(n->g.vm.fd, KVM_GET_STATS_FD, 0);
	if (n->stats_fd < 0 || !stats_load(n->stats_fd, &n->st))
		BAIL("KVM_GET_STATS_FD");
}

static void nx_vm_destroy(struct nx_vm *n)
{
	close(n->stats_fd);
	free(n->st.descs);
	guest_destroy(&n->g);
}

int main(void)
{
	struct kvm_enable_cap cap = { .cap = KVM_CAP_VM_DISABLE_NX_HUGE_PAGES };
	struct nx_vm a, b;
	uint8_t *raw, *hva;
	char mode[32] = "";
	int i, err, waited;
	long r;

	test_watchdog(120);
	for (i = 0; i < 3; i++) {
		if (!param_read(params[i], saved[i], sizeof(saved[i])))
			tap_skip_all("the hypervisor has no nx_huge_pages parameters");
	}
	if (!strcmp(saved[0], "never"))
		tap_skip_all("nx_huge_pages is 'never'");
	nsaved = 3;
	atexit(params_restore);
	thp_madvise();
	hva = thp_region(HUGE_SIZE, &raw);
	hva[RET_OFF] = 0xc3; /* ret */
	if (anon_huge_kb() < 2048) {
		char why[128];

		snprintf(why, sizeof(why), "the host backed the region with small pages "
			 "(AnonHugePages %ld kB)", anon_huge_kb());
		tap_skip_all(why);
	}
	set_param(params[1], "1");
	set_param(params[2], "100");
	set_param(params[0], "off");
	tap_plan(10);

	nx_vm_create(&a, hva, 0);
	run_to_out(&a.g.v, 0x10);
	tap_ok(vm_stat(&a, "pages_2m") == 1 && vm_stat(&a, "nx_lpage_splits") == 0,
	       "nx_huge_pages off, a read: pages_2m %llu (want 1), nx_lpage_splits %llu (want 0)",
	       (unsigned long long)vm_stat(&a, "pages_2m"),
	       (unsigned long long)vm_stat(&a, "nx_lpage_splits"));

	set_param(params[0], "force");
	param_read(params[0], mode, sizeof(mode));
	tap_ok(!strcmp(mode, "Y"), "nx_huge_pages=force reads back as '%s' (want Y)", mode);
	run_to_out(&a.g.v, 0x11);
	tap_ok(vm_stat(&a, "nx_lpage_splits") == 1 && vm_stat(&a, "pages_2m") == 0,
	       "turned on, then a fetch from that 2 MiB: nx_lpage_splits %llu (want 1), "
	       "pages_2m %llu (want 0)",
	       (unsigned long long)vm_stat(&a, "nx_lpage_splits"),
	       (unsigned long long)vm_stat(&a, "pages_2m"));

	for (waited = 0; waited < 3000 && vm_stat(&a, "nx_lpage_splits"); waited += 50)
		usleep(50000);
	tap_ok(vm_stat(&a, "nx_lpage_splits") == 0,
	       "recovery (ratio 1, period 100 ms): nx_lpage_splits %llu after %d ms (want 0)",
	       (unsigned long long)vm_stat(&a, "nx_lpage_splits"), waited);
	run_to_out(&a.g.v, 0x12);
	tap_ok(vm_stat(&a, "pages_2m") == 1,
	       "a read after the recovery maps 2 MiB again: pages_2m %llu (want 1)",
	       (unsigned long long)vm_stat(&a, "pages_2m"));

	err = param_write(params[0], "never");
	tap_ok(err == EBUSY, "nx_huge_pages=never with a VM alive: %s (want EBUSY)",
	       strerror(err));
	err = param_write(params[0], "sometimes");
	tap_ok(err == EINVAL, "nx_huge_pages=sometimes: %s (want EINVAL)", strerror(err));

	/* KVM_CAP_VM_DISABLE_NX_HUGE_PAGES. */
	{
		struct vm vm = vm_create();

		cap.args[0] = 1;
		r = ioctl(vm.fd, KVM_ENABLE_CAP, &cap);
		err = errno;
		tap_ok(ioctl(vm.fd, KVM_CHECK_EXTENSION, KVM_CAP_VM_DISABLE_NX_HUGE_PAGES) == 1 &&
		       r == -1 && err == EINVAL,
		       "KVM_CAP_VM_DISABLE_NX_HUGE_PAGES advertised, args[0] 1 refused (%ld, %s)",
		       r, strerror(err));
		close(vm.fd);
		close(vm.sys_fd);
	}
	nx_vm_destroy(&a);
	nx_vm_create(&b, hva, 1);
	run_to_out(&b.g.v, 0x10);
	run_to_out(&b.g.v, 0x11);
	tap_ok(vm_stat(&b, "nx_lpage_splits") == 0 && vm_stat(&b, "pages_2m") == 1,
	       "with the capability, a fetch keeps the 2 MiB mapping: nx_lpage_splits %llu "
	       "(want 0), pages_2m %llu (want 1)",
	       (unsigned long long)vm_stat(&b, "nx_lpage_splits"),
	       (unsigned long long)vm_stat(&b, "pages_2m"));
	cap.args[0] = 0;
	r = ioctl(b.g.vm.fd, KVM_ENABLE_CAP, &cap);
	err = errno;
	tap_ok(r == -1 && err == EINVAL, "the capability after the first vCPU: %ld, %s (want EINVAL)",
	       r, strerror(err));
	nx_vm_destroy(&b);
	munmap(raw, HUGE_SIZE + MB2);
	tap_done();
}

// SPDX-License-Identifier: GPL-2.0
/*
 * Kernel memory sized by userspace is charged to the caller's memory cgroup.
 *
 * A dirty-logged memslot of 128 GiB needs a 4 MiB dirty bitmap in the kernel (KVM keeps
 * two). Outside any limit the slot is accepted. A process in a memory cgroup limited to
 * 2 MiB asks for the same slot: the bitmap is charged to its cgroup, so the request fails
 * with ENOMEM or the cgroup's OOM killer ends the process; it does not succeed. The
 * cgroup's memory.events count the limit being hit.
 *
 * Needs cgroup v2 with the memory controller (skips without).
 */
#define _GNU_SOURCE
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "lib/rkvm_test.h"

#define SLOT_SIZE (128ull << 30)
#define LIMIT "2097152"

static char root[128], child[160];
static int mounted;

static int write_file(const char *dir, const char *name, const char *val)
{
	char path[256];
	int fd, ok;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_WRONLY);
	if (fd < 0)
		return -1;
	ok = write(fd, val, strlen(val)) == (ssize_t)strlen(val);
	close(fd);
	return ok ? 0 : -1;
}

static long events_max(void)
{
	char path[256], key[64];
	long v, max = -1;
	FILE *f;

	snprintf(path, sizeof(path), "%s/memory.events", child);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fscanf(f, "%63s %ld", key, &v) == 2)
		if (!strcmp(key, "max"))
			max = v;
	fclose(f);
	return max;
}

static int setup_cgroup(void)
{
	char buf[256] = { 0 };
	int fd;

	snprintf(root, sizeof(root), "/sys/fs/cgroup");
	if (access("/sys/fs/cgroup/cgroup.controllers", R_OK)) {
		snprintf(root, sizeof(root), "/tmp/rkvm-cgroup");
		mkdir(root, 0755);
		if (mount("none", root, "cgroup2", 0, NULL))
			return -1;
		mounted = 1;
	}
	snprintf(buf, sizeof(buf), "%s/cgroup.controllers", root);
	fd = open(buf, O_RDONLY);
	memset(buf, 0, sizeof(buf));
	if (fd < 0 || read(fd, buf, sizeof(buf) - 1) <= 0 || !strstr(buf, "memory"))
		return -1;
	close(fd);
	if (write_file(root, "cgroup.subtree_control", "+memory"))
		return -1;
	snprintf(child, sizeof(child), "%s/rkvm-test", root);
	if (mkdir(child, 0755) && errno != EEXIST)
		return -1;
	return write_file(child, "memory.max", LIMIT);
}

/* Creates a VM and the big dirty-logged slot; returns 0 or the errno. */
static int big_slot(void)
{
	struct kvm_userspace_memory_region r = {
		.slot = 1,
		.flags = KVM_MEM_LOG_DIRTY_PAGES,
		.memory_size = SLOT_SIZE,
	};
	void *mem = mmap(NULL, SLOT_SIZE, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	int sys = open(kvm_device(), O_RDWR), vm, e;

	if (mem == MAP_FAILED || sys < 0)
		return EBADF;
	vm = ioctl(sys, KVM_CREATE_VM, 0);
	if (vm < 0)
		return errno;
	r.userspace_addr = (uintptr_t)mem;
	e = ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r) ? errno : 0;
	close(vm);
	close(sys);
	munmap(mem, SLOT_SIZE);
	return e;
}

static int phys_bits(void)
{
	uint32_t a = 0x80000008, b, c = 0, d;

	__asm__ volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d));
	return a & 0xff;
}

int main(void)
{
	int e, status;
	pid_t pid;
	long before, after;

	test_watchdog(120);
	if (phys_bits() < 38)
		tap_skip_all("MAXPHYADDR below 38 bits: no room for a 128 GiB slot");
	if (setup_cgroup())
		tap_skip_all("no cgroup v2 memory controller");
	tap_plan(3);
	e = big_slot();
	tap_ok(e == 0, "without a limit, a 128 GiB dirty-logged slot is accepted (%s)",
	       errno_name(e));

	before = events_max();
	pid = fork();
	if (pid == 0) {
		char me[32];

		snprintf(me, sizeof(me), "%d", getpid());
		if (write_file(child, "cgroup.procs", me))
			_exit(3);
		e = big_slot();
		_exit(e == 0 ? 0 : e == ENOMEM ? 1 : 2);
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid)
		BAIL("fork/wait");
	after = events_max();
	tap_ok((WIFEXITED(status) && WEXITSTATUS(status) == 1) ||
		       (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL),
	       "in a cgroup limited to 2 MiB it fails: %s %d (1 = ENOMEM, SIGKILL = cgroup OOM)",
	       WIFEXITED(status) ? "exit" : "signal",
	       WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
	tap_ok(after > before, "the cgroup hit its limit (memory.events max %ld -> %ld)", before,
	       after);
	rmdir(child);
	if (mounted)
		umount(root);
	tap_done();
}

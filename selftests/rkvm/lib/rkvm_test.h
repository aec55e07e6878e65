/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Tiny harness for rkvm's selftests: TAP output and the few KVM calls every test needs.
 *
 * Every test opens the device named by $KVM_DEVICE (default /dev/kvm), so the same binary
 * runs against reference KVM and against rkvm. Tests use only <linux/kvm.h> from the test
 * kernel's own uapi headers.
 */
#ifndef RKVM_TEST_H
#define RKVM_TEST_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

/* ---- TAP ---------------------------------------------------------------------------- */

static int tap_planned, tap_run, tap_failed;

static inline void tap_plan(int n)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	tap_planned = n;
	printf("TAP version 13\n1..%d\n", n);
}

/* Records one result; returns cond so callers can stop early on failure. */
static inline int tap_ok(int cond, const char *fmt, ...)
{
	va_list ap;

	tap_run++;
	if (!cond)
		tap_failed++;
	printf("%sok %d - ", cond ? "" : "not ", tap_run);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	return cond;
}

static inline void tap_diag(const char *fmt, ...)
{
	va_list ap;

	printf("# ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
}

/* Skips the rest of the plan with a reason and exits 4 (kselftest's KSFT_SKIP). */
static inline __attribute__((noreturn)) void tap_skip_all(const char *why)
{
	printf("1..0 # SKIP %s\n", why);
	exit(4);
}

/* Ends the test: exit 0 only if every planned check ran and passed. */
static inline __attribute__((noreturn)) void tap_done(void)
{
	if (tap_run != tap_planned) {
		printf("# planned %d checks, ran %d\n", tap_planned, tap_run);
		exit(1);
	}
	printf("# %d passed, %d failed\n", tap_run - tap_failed, tap_failed);
	exit(tap_failed ? 1 : 0);
}

/* Aborts the test with a diagnostic (the remaining planned checks count as failed). */
#define BAIL(...)                                                                          \
	do {                                                                               \
		printf("Bail out! ");                                                     \
		printf(__VA_ARGS__);                                                       \
		printf(" (%s:%d, errno %d %s)\n", __FILE__, __LINE__, errno, strerror(errno)); \
		exit(1);                                                                   \
	} while (0)

/* ---- KVM helpers ---------------------------------------------------------------------- */

static inline const char *kvm_device(void)
{
	const char *dev = getenv("KVM_DEVICE");

	return dev && *dev ? dev : "/dev/kvm";
}

static inline int kvm_open(void)
{
	int fd = open(kvm_device(), O_RDWR | O_CLOEXEC);

	if (fd < 0)
		BAIL("open %s", kvm_device());
	return fd;
}

/* Skips the whole test unless the device advertises CAP (kselftest's TEST_REQUIRE). */
#define REQUIRE_CAP(fd, cap)                                                               \
	do {                                                                               \
		if (ioctl((fd), KVM_CHECK_EXTENSION, (cap)) <= 0)                          \
			tap_skip_all(#cap " not advertised by the device");                 \
	} while (0)

struct vm {
	int sys_fd;
	int fd;
};

struct vcpu {
	int fd;
	struct kvm_run *run;
	size_t run_size;
};

static inline struct vm vm_create(void)
{
	struct vm vm;

	vm.sys_fd = kvm_open();
	if (ioctl(vm.sys_fd, KVM_GET_API_VERSION, 0) != KVM_API_VERSION)
		BAIL("KVM_GET_API_VERSION");
	/* Every VM of these tests runs from user memory slots. */
	REQUIRE_CAP(vm.sys_fd, KVM_CAP_USER_MEMORY);
	vm.fd = ioctl(vm.sys_fd, KVM_CREATE_VM, 0);
	if (vm.fd < 0)
		BAIL("KVM_CREATE_VM");
	return vm;
}

/* Maps SIZE bytes of anonymous memory at guest physical GPA in SLOT; returns the host address. */
static inline void *vm_add_memory(struct vm *vm, uint32_t slot, uint64_t gpa, size_t size,
				  uint32_t flags)
{
	struct kvm_userspace_memory_region r;
	void *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (mem == MAP_FAILED)
		BAIL("mmap guest memory");
	r.slot = slot;
	r.flags = flags;
	r.guest_phys_addr = gpa;
	r.memory_size = size;
	r.userspace_addr = (uintptr_t)mem;
	if (ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, &r))
		BAIL("KVM_SET_USER_MEMORY_REGION slot %u", slot);
	return mem;
}

static inline struct vcpu vcpu_create(struct vm *vm, int id)
{
	struct vcpu v;
	int sz = ioctl(vm->sys_fd, KVM_GET_VCPU_MMAP_SIZE, 0);

	if (sz <= 0)
		BAIL("KVM_GET_VCPU_MMAP_SIZE");
	v.fd = ioctl(vm->fd, KVM_CREATE_VCPU, id);
	if (v.fd < 0)
		BAIL("KVM_CREATE_VCPU %d", id);
	v.run_size = sz;
	v.run = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED, v.fd, 0);
	if (v.run == MAP_FAILED)
		BAIL("mmap kvm_run");
	return v;
}

/* Puts the vCPU in real mode with CS base/selector 0 and the given registers. */
static inline void vcpu_set_real_mode(struct vcpu *v, uint64_t rip)
{
	struct kvm_sregs sregs;
	struct kvm_regs regs;

	if (ioctl(v->fd, KVM_GET_SREGS, &sregs))
		BAIL("KVM_GET_SREGS");
	sregs.cs.base = 0;
	sregs.cs.selector = 0;
	if (ioctl(v->fd, KVM_SET_SREGS, &sregs))
		BAIL("KVM_SET_SREGS");
	memset(&regs, 0, sizeof(regs));
	regs.rip = rip;
	regs.rflags = 2;
	if (ioctl(v->fd, KVM_SET_REGS, &regs))
		BAIL("KVM_SET_REGS");
}

static inline const char *exit_name(uint32_t reason)
{
	static char buf[32];

	switch (reason) {
	case KVM_EXIT_UNKNOWN: return "UNKNOWN";
	case KVM_EXIT_IO: return "IO";
	case KVM_EXIT_HLT: return "HLT";
	case KVM_EXIT_MMIO: return "MMIO";
	case KVM_EXIT_SHUTDOWN: return "SHUTDOWN";
	case KVM_EXIT_FAIL_ENTRY: return "FAIL_ENTRY";
	case KVM_EXIT_INTR: return "INTR";
	case KVM_EXIT_INTERNAL_ERROR: return "INTERNAL_ERROR";
	case KVM_EXIT_DEBUG: return "DEBUG";
	case KVM_EXIT_IRQ_WINDOW_OPEN: return "IRQ_WINDOW_OPEN";
	case KVM_EXIT_X86_RDMSR: return "X86_RDMSR";
	case KVM_EXIT_X86_WRMSR: return "X86_WRMSR";
	}
	snprintf(buf, sizeof(buf), "%u", reason);
	return buf;
}

/* ---- Checking ioctl results ------------------------------------------------------------ */

static inline const char *errno_name(int e)
{
	static char buf[16];

	switch (e) {
	case 0: return "0";
	case EPERM: return "EPERM";
	case ENOENT: return "ENOENT";
	case EIO: return "EIO";
	case ENXIO: return "ENXIO";
	case E2BIG: return "E2BIG";
	case EBADF: return "EBADF";
	case ENOMEM: return "ENOMEM";
	case EFAULT: return "EFAULT";
	case EBUSY: return "EBUSY";
	case EEXIST: return "EEXIST";
	case ENODEV: return "ENODEV";
	case EINVAL: return "EINVAL";
	case ENOTTY: return "ENOTTY";
	case ENOSPC: return "ENOSPC";
	case ERANGE: return "ERANGE";
	case EOPNOTSUPP: return "EOPNOTSUPP";
	}
	snprintf(buf, sizeof(buf), "errno %d", e);
	return buf;
}

/* The outcome of one ioctl: its return value and errno (0 unless it returned -1). */
struct ioctl_res {
	long r;
	int err;
};

static inline struct ioctl_res do_ioctl(int fd, unsigned long req, unsigned long arg)
{
	struct ioctl_res res;

	errno = 0;
	res.r = ioctl(fd, req, arg);
	res.err = res.r == -1 ? errno : 0;
	return res;
}

/* Describes an outcome as "ret N" or "-1/ERRNO" (static buffer: one use per printf). */
static inline const char *res_str(struct ioctl_res res)
{
	static char buf[2][48];
	static int i;

	i ^= 1;
	if (res.r == -1)
		snprintf(buf[i], sizeof(buf[i]), "-1/%s", errno_name(res.err));
	else
		snprintf(buf[i], sizeof(buf[i]), "ret %ld", res.r);
	return buf[i];
}

/* One check: ioctl(fd, req, arg) must fail with errno WANT. */
#define CHECK_ERRNO(fd, req, arg, want, ...)                                                   \
	({                                                                                     \
		struct ioctl_res __res = do_ioctl((fd), (req), (unsigned long)(arg));          \
		char __what[160];                                                              \
		snprintf(__what, sizeof(__what), __VA_ARGS__);                                 \
		tap_ok(__res.r == -1 && __res.err == (want), "%s -> -1/%s (got %s)", __what,   \
		       errno_name(want), res_str(__res));                                      \
	})

/* One check: ioctl(fd, req, arg) must return WANT. */
#define CHECK_RET(fd, req, arg, want, ...)                                                     \
	({                                                                                     \
		struct ioctl_res __res = do_ioctl((fd), (req), (unsigned long)(arg));          \
		char __what[160];                                                              \
		snprintf(__what, sizeof(__what), __VA_ARGS__);                                 \
		tap_ok(__res.r == (long)(want), "%s -> %ld (got %s)", __what, (long)(want),    \
		       res_str(__res));                                                        \
	})

/* ---- Bad user addresses ------------------------------------------------------------------ */

/* A page reserved with PROT_NONE: any access to it faults, and it is never reused. */
static inline void *inaccessible_page(void)
{
	static void *p;

	if (!p) {
		p = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			BAIL("mmap PROT_NONE");
	}
	return p;
}

/* An address in the kernel half: access_ok() refuses it. */
#define KERNEL_ADDR ((void *)0xffff888000000000ull)

/*
 * Returns a pointer P such that [P, P + size) is readable and writable and the byte at
 * P + size is the first of an inaccessible page: a struct header placed there is fine, and
 * anything the kernel reads or writes past it faults. SIZE must be at most one page.
 */
static inline void *buf_before_guard(size_t size)
{
	long pg = sysconf(_SC_PAGESIZE);
	uint8_t *p = mmap(NULL, 2 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED || (long)size > pg)
		BAIL("mmap guard buffer");
	if (mprotect(p + pg, pg, PROT_NONE))
		BAIL("mprotect guard page");
	return p + pg - size;
}

/* Arms a watchdog so a stuck vCPU fails the test instead of hanging the run. */
static inline void test_watchdog(unsigned int seconds)
{
	signal(SIGALRM, SIG_DFL);
	alarm(seconds);
}

/* Prints the nonzero stats of this VM's debugfs directory ("<pid>-<fd>", as KVM names it). */
static inline void print_vm_stats(int vm_fd, const char *prefix)
{
	const char *hv = strstr(kvm_device(), "rkvm") ? "rkvm" : "kvm";
	char dir[128], path[512], val[64];
	struct dirent *e;
	DIR *d;

	snprintf(dir, sizeof(dir), "/sys/kernel/debug/%s/%d-%d", hv, getpid(), vm_fd);
	d = opendir(dir);
	if (!d) {
		printf("no stats directory %s\n", dir);
		return;
	}
	printf("%sstats of this VM (%s, nonzero only):\n", prefix, dir);
	while ((e = readdir(d))) {
		FILE *f;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		if (fgets(val, sizeof(val), f) && strcmp(val, "0\n"))
			printf("%s%-28s %s", prefix, e->d_name, val);
		fclose(f);
	}
	closedir(d);
}

#endif /* RKVM_TEST_H */

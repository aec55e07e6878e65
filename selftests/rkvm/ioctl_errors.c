// SPDX-License-Identifier: GPL-2.0
/*
 * Bad calls on VM and vCPU fds (virt/kvm/kvm_main.c kvm_vm_ioctl, kvm_vcpu_ioctl,
 * kvm_vm_ioctl_create_vcpu; arch/x86/kvm/x86.c kvm_arch_vm_ioctl, kvm_arch_vcpu_ioctl).
 *
 *  - An unknown ioctl: -> ENOTTY on a VM fd (kvm_arch_vm_ioctl's default), -> EINVAL on a
 *    vCPU fd (kvm_arch_vcpu_ioctl's default; a non-KVMIO type is EINVAL too). A vCPU
 *    ioctl on a VM fd -> ENOTTY, a VM ioctl on a vCPU fd -> EINVAL. KVM_RUN with a
 *    non-zero argument -> EINVAL. KVM_HAS/GET/SET_DEVICE_ATTR on a VM fd -> ENOTTY
 *    (x86 has no VM attributes).
 *  - Every pointer-taking VM and vCPU ioctl rkvm implements, with a NULL pointer, a
 *    PROT_NONE page, a kernel address, and a struct whose last byte is in an
 *    inaccessible page -> EFAULT; also arrays behind a readable header (CPUID2 entries,
 *    MSR entries, the signal mask's sigset).
 *  - KVM_CREATE_VCPU: id >= KVM_CAP_MAX_VCPU_ID (and -1) -> EINVAL, the largest id works,
 *    a duplicate id -> EEXIST. KVM_SET_IDENTITY_MAP_ADDR once a vCPU exists -> EINVAL;
 *    KVM_SET_TSS_ADDR above 4 GiB - 3 pages -> EINVAL.
 *  - From a forked child (another mm), VM and vCPU ioctls -> EIO, while the system fd
 *    still works there.
 */
#include <sys/wait.h>

#include "lib/rkvm_test.h"

#define UNKNOWN_IOCTL _IO(KVMIO, 0xff)
#define FOREIGN_IOCTL 0x5401 /* TCGETS */

struct ptr_ioctl {
	unsigned long req;
	const char *name;
	size_t size;	/* of the struct the pointer points to */
	int null_ok;	/* NULL is a valid argument */
};

static const struct ptr_ioctl vm_ioctls[] = {
#define P(r, s) { r, #r, s, 0 }
	P(KVM_SET_USER_MEMORY_REGION, sizeof(struct kvm_userspace_memory_region)),
	P(KVM_SET_USER_MEMORY_REGION2, sizeof(struct kvm_userspace_memory_region2)),
	P(KVM_GET_DIRTY_LOG, sizeof(struct kvm_dirty_log)),
	P(KVM_CLEAR_DIRTY_LOG, sizeof(struct kvm_clear_dirty_log)),
	P(KVM_ENABLE_CAP, sizeof(struct kvm_enable_cap)),
};

static const struct ptr_ioctl vcpu_ioctls[] = {
	P(KVM_GET_REGS, sizeof(struct kvm_regs)),
	P(KVM_SET_REGS, sizeof(struct kvm_regs)),
	P(KVM_GET_SREGS, sizeof(struct kvm_sregs)),
	P(KVM_SET_SREGS, sizeof(struct kvm_sregs)),
	P(KVM_GET_SREGS2, sizeof(struct kvm_sregs2)),
	P(KVM_SET_SREGS2, sizeof(struct kvm_sregs2)),
	P(KVM_GET_FPU, sizeof(struct kvm_fpu)),
	P(KVM_SET_FPU, sizeof(struct kvm_fpu)),
	P(KVM_GET_XSAVE, sizeof(struct kvm_xsave)),
	P(KVM_SET_XSAVE, sizeof(struct kvm_xsave)),
	P(KVM_GET_XCRS, sizeof(struct kvm_xcrs)),
	P(KVM_SET_XCRS, sizeof(struct kvm_xcrs)),
	P(KVM_GET_MSRS, sizeof(struct kvm_msrs)),
	P(KVM_SET_MSRS, sizeof(struct kvm_msrs)),
	P(KVM_GET_CPUID2, sizeof(struct kvm_cpuid2)),
	P(KVM_SET_CPUID2, sizeof(struct kvm_cpuid2)),
	P(KVM_GET_DEBUGREGS, sizeof(struct kvm_debugregs)),
	P(KVM_SET_DEBUGREGS, sizeof(struct kvm_debugregs)),
	P(KVM_GET_VCPU_EVENTS, sizeof(struct kvm_vcpu_events)),
	P(KVM_SET_VCPU_EVENTS, sizeof(struct kvm_vcpu_events)),
	P(KVM_GET_MP_STATE, sizeof(struct kvm_mp_state)),
	P(KVM_SET_MP_STATE, sizeof(struct kvm_mp_state)),
	P(KVM_TRANSLATE, sizeof(struct kvm_translation)),
	P(KVM_SET_GUEST_DEBUG, sizeof(struct kvm_guest_debug)),
	P(KVM_INTERRUPT, sizeof(struct kvm_interrupt)),
	{ KVM_SET_SIGNAL_MASK, "KVM_SET_SIGNAL_MASK", sizeof(struct kvm_signal_mask), 1 },
#undef P
};
#define N_VM (int)(sizeof(vm_ioctls) / sizeof(vm_ioctls[0]))
#define N_VCPU (int)(sizeof(vcpu_ioctls) / sizeof(vcpu_ioctls[0]))

/* 3 or 4 checks: NULL (unless valid), PROT_NONE, kernel address, struct crossing a guard. */
static void bad_pointers(int fd, const struct ptr_ioctl *p)
{
	uint8_t *cross = buf_before_guard(p->size - 1);

	if (!p->null_ok)
		CHECK_ERRNO(fd, p->req, NULL, EFAULT, "%s(NULL)", p->name);
	CHECK_ERRNO(fd, p->req, inaccessible_page(), EFAULT, "%s(PROT_NONE page)", p->name);
	CHECK_ERRNO(fd, p->req, KERNEL_ADDR, EFAULT, "%s(kernel address)", p->name);
	memset(cross, 0, p->size - 1);
	CHECK_ERRNO(fd, p->req, cross, EFAULT, "%s(its %zu-byte struct's last byte inaccessible)",
		    p->name, p->size);
}

/* Arrays behind a readable header: 5 checks. */
static void bad_arrays(struct vm *vm, int fd)
{
	struct kvm_cpuid2 *c = buf_before_guard(sizeof(*c));
	struct kvm_msrs *m = buf_before_guard(sizeof(*m));
	struct kvm_signal_mask *s = buf_before_guard(sizeof(*s));

	memset(c, 0, sizeof(*c));
	c->nent = 1;
	CHECK_ERRNO(fd, KVM_SET_CPUID2, c, EFAULT, "KVM_SET_CPUID2, nent 1, the entry inaccessible");
	c->nent = 256;
	/* Whatever the calls above did, the vCPU has the supported CPUID again. */
	vcpu_set_supported_cpuid(vm, &(struct vcpu){ .fd = fd });
	CHECK_ERRNO(fd, KVM_GET_CPUID2, c, EFAULT,
		    "KVM_GET_CPUID2, nent 256, the entries inaccessible (the vCPU has a CPUID)");
	memset(m, 0, sizeof(*m));
	m->nmsrs = 1;
	CHECK_ERRNO(fd, KVM_SET_MSRS, m, EFAULT, "KVM_SET_MSRS, nmsrs 1, the entry inaccessible");
	CHECK_ERRNO(fd, KVM_GET_MSRS, m, EFAULT, "KVM_GET_MSRS, nmsrs 1, the entry inaccessible");
	s->len = 8;
	CHECK_ERRNO(fd, KVM_SET_SIGNAL_MASK, s, EFAULT,
		    "KVM_SET_SIGNAL_MASK, len 8, the sigset inaccessible");
}

/* From a forked child: 7 results, sent through a pipe. */
struct child_results {
	struct ioctl_res vm_ext, vm_unknown, vm_mem, vcpu_regs, vcpu_run, sys_api, sys_create;
};

static void forked_child(struct vm *vm, struct vcpu *v)
{
	struct kvm_userspace_memory_region r = { .slot = 5, .memory_size = 0x1000 };
	struct child_results res;
	struct kvm_regs regs;
	int fd[2], status;
	pid_t pid;

	if (pipe(fd))
		BAIL("pipe");
	pid = fork();
	if (pid < 0)
		BAIL("fork");
	if (!pid) {
		r.userspace_addr = (uintptr_t)mmap(NULL, 0x1000, PROT_READ | PROT_WRITE,
						   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		r.guest_phys_addr = 0x800000;
		res.vm_ext = do_ioctl(vm->fd, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY);
		res.vm_unknown = do_ioctl(vm->fd, UNKNOWN_IOCTL, 0);
		res.vm_mem = do_ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, (unsigned long)&r);
		res.vcpu_regs = do_ioctl(v->fd, KVM_GET_REGS, (unsigned long)&regs);
		res.vcpu_run = do_ioctl(v->fd, KVM_RUN, 0);
		res.sys_api = do_ioctl(vm->sys_fd, KVM_GET_API_VERSION, 0);
		res.sys_create = do_ioctl(vm->sys_fd, KVM_CREATE_VM, 0);
		if (write(fd[1], &res, sizeof(res)) != sizeof(res))
			_exit(1);
		_exit(0);
	}
	close(fd[1]);
	if (read(fd[0], &res, sizeof(res)) != sizeof(res))
		BAIL("read from the child");
	waitpid(pid, &status, 0);
	close(fd[0]);
	tap_ok(res.vm_ext.r == -1 && res.vm_ext.err == EIO,
	       "forked child: KVM_CHECK_EXTENSION on the VM fd -> -1/EIO (got %s)",
	       res_str(res.vm_ext));
	tap_ok(res.vm_unknown.r == -1 && res.vm_unknown.err == EIO,
	       "forked child: an unknown ioctl on the VM fd -> -1/EIO (got %s)",
	       res_str(res.vm_unknown));
	tap_ok(res.vm_mem.r == -1 && res.vm_mem.err == EIO,
	       "forked child: KVM_SET_USER_MEMORY_REGION -> -1/EIO (got %s)", res_str(res.vm_mem));
	tap_ok(res.vcpu_regs.r == -1 && res.vcpu_regs.err == EIO,
	       "forked child: KVM_GET_REGS on the vCPU fd -> -1/EIO (got %s)",
	       res_str(res.vcpu_regs));
	tap_ok(res.vcpu_run.r == -1 && res.vcpu_run.err == EIO,
	       "forked child: KVM_RUN -> -1/EIO (got %s)", res_str(res.vcpu_run));
	tap_ok(res.sys_api.r == KVM_API_VERSION && res.sys_create.r >= 0,
	       "forked child: the system fd works (KVM_GET_API_VERSION %s, KVM_CREATE_VM %s)",
	       res_str(res.sys_api), res_str(res.sys_create));
	/* The parent is unaffected. */
	CHECK_RET(vm->fd, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY, 1,
		  "the parent still uses its VM fd after the child's calls");
}

int main(void)
{
	struct vm vm = vm_create();
	struct vcpu v, v2;
	long max_id;
	uint64_t ident = 0xfeffc000;
	int i;

	test_watchdog(60);
	tap_plan(6 + 6 + 7 + 3 + N_VM * 4 + (N_VCPU * 4 - 1) + 5 + 7);

	/* Before any vCPU. */
	CHECK_ERRNO(vm.fd, KVM_SET_IDENTITY_MAP_ADDR, NULL, EFAULT, "KVM_SET_IDENTITY_MAP_ADDR(NULL)");
	CHECK_ERRNO(vm.fd, KVM_SET_IDENTITY_MAP_ADDR, inaccessible_page(), EFAULT,
		    "KVM_SET_IDENTITY_MAP_ADDR(PROT_NONE page)");
	CHECK_RET(vm.fd, KVM_SET_IDENTITY_MAP_ADDR, &ident, 0,
		  "KVM_SET_IDENTITY_MAP_ADDR(0xfeffc000) before any vCPU");
	CHECK_ERRNO(vm.fd, KVM_SET_TSS_ADDR, 0xfffff000, EINVAL,
		    "KVM_SET_TSS_ADDR(0xfffff000): the 3 pages do not fit below 4 GiB");
	CHECK_RET(vm.fd, KVM_SET_TSS_ADDR, 0xfffbd000, 0, "KVM_SET_TSS_ADDR(0xfffbd000)");
	max_id = ioctl(vm.sys_fd, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPU_ID);
	tap_ok(max_id > 0, "KVM_CAP_MAX_VCPU_ID is %ld", max_id);

	/* vCPU ids. */
	CHECK_ERRNO(vm.fd, KVM_CREATE_VCPU, max_id, EINVAL, "KVM_CREATE_VCPU(%ld = KVM_CAP_MAX_VCPU_ID)",
		    max_id);
	CHECK_ERRNO(vm.fd, KVM_CREATE_VCPU, -1L, EINVAL, "KVM_CREATE_VCPU(-1)");
	v = vcpu_create(&vm, 0);
	CHECK_ERRNO(vm.fd, KVM_CREATE_VCPU, 0, EEXIST, "KVM_CREATE_VCPU(0) again");
	v2.fd = ioctl(vm.fd, KVM_CREATE_VCPU, max_id - 1);
	tap_ok(v2.fd >= 0, "KVM_CREATE_VCPU(%ld = KVM_CAP_MAX_VCPU_ID - 1) works (got %d)",
	       max_id - 1, v2.fd);
	CHECK_ERRNO(vm.fd, KVM_SET_IDENTITY_MAP_ADDR, &ident, EINVAL,
		    "KVM_SET_IDENTITY_MAP_ADDR once a vCPU exists");
	CHECK_ERRNO(vm.fd, KVM_CREATE_VCPU, max_id - 1, EEXIST, "KVM_CREATE_VCPU(%ld) again",
		    max_id - 1);
	vcpu_set_supported_cpuid(&vm, &v);

	/* Unknown and misdirected ioctls. */
	CHECK_ERRNO(vm.fd, UNKNOWN_IOCTL, 0, ENOTTY, "VM fd: unknown ioctl _IO(KVMIO, 0xff)");
	CHECK_ERRNO(vm.fd, FOREIGN_IOCTL, 0, ENOTTY, "VM fd: foreign ioctl TCGETS");
	CHECK_ERRNO(vm.fd, KVM_GET_REGS, &(struct kvm_regs){ 0 }, ENOTTY, "VM fd: vCPU ioctl KVM_GET_REGS");
	{
		/* x86's VM fd has no device attributes at all (not even a group to refuse). */
		struct kvm_device_attr a = { .group = 0, .attr = 0 };

		CHECK_ERRNO(vm.fd, KVM_HAS_DEVICE_ATTR, &a, ENOTTY, "VM fd: KVM_HAS_DEVICE_ATTR");
		CHECK_ERRNO(vm.fd, KVM_GET_DEVICE_ATTR, &a, ENOTTY, "VM fd: KVM_GET_DEVICE_ATTR");
		CHECK_ERRNO(vm.fd, KVM_SET_DEVICE_ATTR, &a, ENOTTY, "VM fd: KVM_SET_DEVICE_ATTR");
	}
	CHECK_ERRNO(v.fd, UNKNOWN_IOCTL, 0, EINVAL, "vCPU fd: unknown ioctl _IO(KVMIO, 0xff)");
	CHECK_ERRNO(v.fd, FOREIGN_IOCTL, 0, EINVAL, "vCPU fd: foreign ioctl TCGETS");
	CHECK_ERRNO(v.fd, KVM_SET_TSS_ADDR, 0xfffbd000, EINVAL, "vCPU fd: VM ioctl KVM_SET_TSS_ADDR");
	CHECK_ERRNO(v.fd, KVM_RUN, 1, EINVAL, "KVM_RUN(1)");

	/*
	 * Bad pointers. Manual dirty log protection on, where advertised, so that
	 * KVM_CLEAR_DIRTY_LOG is tested for its pointer here, not for that mode (dirty_log).
	 */
	if (ioctl(vm.fd, KVM_CHECK_EXTENSION, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2) > 0) {
		struct kvm_enable_cap cap = { .cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
					      .args = { KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE } };

		if (ioctl(vm.fd, KVM_ENABLE_CAP, &cap))
			BAIL("KVM_ENABLE_CAP(MANUAL_DIRTY_LOG_PROTECT2)");
	}
	for (i = 0; i < N_VM; i++)
		bad_pointers(vm.fd, &vm_ioctls[i]);
	for (i = 0; i < N_VCPU; i++)
		bad_pointers(v.fd, &vcpu_ioctls[i]);
	bad_arrays(&vm, v.fd);

	forked_child(&vm, &v);
	tap_done();
}

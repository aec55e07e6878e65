// SPDX-License-Identifier: GPL-2.0
/*
 * The ioctls of the system fd (/dev/kvm, /dev/rkvm) that need no VM: KVM's protocol and
 * errnos (virt/kvm/kvm_main.c kvm_dev_ioctl, arch/x86/kvm/x86.c kvm_arch_dev_ioctl).
 *
 *   KVM_GET_API_VERSION      arg 0 -> 12; any other arg -> EINVAL
 *   KVM_CHECK_EXTENSION      the system capabilities both hypervisors advertise, their
 *                            consistency, 0 for an unknown capability; on a VM fd too
 *   KVM_GET_VCPU_MMAP_SIZE   arg 0 -> 3 pages (kvm_run, PIO page, coalesced MMIO ring)
 *   unknown ioctls, VM/vCPU ioctls on the system fd -> EINVAL (not ENOTTY)
 *   KVM_{GET,HAS}_DEVICE_ATTR group 0 / KVM_X86_XCOMP_GUEST_SUPP, ENXIO otherwise
 *   KVM_CREATE_VM            an unknown VM type -> EINVAL; type 0 gives a VM fd
 *   every pointer-taking system ioctl: NULL, PROT_NONE and kernel pointers -> EFAULT
 */
#include "lib/rkvm_test.h"

/* System capabilities rkvm and KVM both advertise: each must answer > 0. */
static const struct {
	long cap;
	const char *name;
} required_caps[] = {
#define CAP(c) { c, #c }
	CAP(KVM_CAP_GET_MSR_FEATURES), CAP(KVM_CAP_EXT_CPUID),	  CAP(KVM_CAP_EXT_EMUL_CPUID),
	CAP(KVM_CAP_SYS_ATTRIBUTES),   CAP(KVM_CAP_NR_VCPUS),	  CAP(KVM_CAP_MAX_VCPUS),
	CAP(KVM_CAP_MAX_VCPU_ID),      CAP(KVM_CAP_VM_TYPES),	  CAP(KVM_CAP_CHECK_EXTENSION_VM),
	CAP(KVM_CAP_USER_NMI),	       CAP(KVM_CAP_X86_ROBUST_SINGLESTEP), CAP(KVM_CAP_MCE),
#undef CAP
};
#define N_CAPS (int)(sizeof(required_caps) / sizeof(required_caps[0]))

/* The system ioctls that take a pointer; each must answer EFAULT for a bad one. */
static const struct {
	unsigned long req;
	const char *name;
} ptr_ioctls[] = {
#define IOC(r) { r, #r }
	IOC(KVM_GET_MSR_INDEX_LIST), IOC(KVM_GET_MSR_FEATURE_INDEX_LIST),
	IOC(KVM_GET_SUPPORTED_CPUID), IOC(KVM_GET_EMULATED_CPUID),
	IOC(KVM_GET_MSRS),	     IOC(KVM_GET_DEVICE_ATTR),
	IOC(KVM_HAS_DEVICE_ATTR),
#undef IOC
};
#define N_PTR_IOCTLS (int)(sizeof(ptr_ioctls) / sizeof(ptr_ioctls[0]))

/* An ioctl number nobody defines: type KVMIO, number 0xff. */
#define KVM_UNDEFINED_IOCTL _IO(KVMIO, 0xff)
/* A foreign ioctl (TCGETS): must reach KVM's handler and be refused the same way. */
#define FOREIGN_IOCTL 0x5401

#define CANARY 0x5a5a5a5a5a5a5a5aull

static void api_version(int kvm)
{
	CHECK_RET(kvm, KVM_GET_API_VERSION, 0, KVM_API_VERSION, "KVM_GET_API_VERSION(0)");
	CHECK_ERRNO(kvm, KVM_GET_API_VERSION, 1, EINVAL, "KVM_GET_API_VERSION(1)");
}

static void check_extension(int kvm)
{
	long nr, max, max_id, types;
	long online = sysconf(_SC_NPROCESSORS_ONLN);
	int i;

	for (i = 0; i < N_CAPS; i++) {
		struct ioctl_res res = do_ioctl(kvm, KVM_CHECK_EXTENSION, required_caps[i].cap);

		tap_ok(res.r > 0, "KVM_CHECK_EXTENSION(%s) > 0 (got %s)", required_caps[i].name,
		       res_str(res));
	}
	CHECK_RET(kvm, KVM_CHECK_EXTENSION, 0x7fffffff, 0, "KVM_CHECK_EXTENSION(0x7fffffff)");
	CHECK_RET(kvm, KVM_CHECK_EXTENSION, -1L, 0, "KVM_CHECK_EXTENSION(-1)");

	nr = ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_NR_VCPUS);
	max = ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS);
	max_id = ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPU_ID);
	types = ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_VM_TYPES);
	tap_ok(max >= nr, "KVM_CAP_MAX_VCPUS %ld >= KVM_CAP_NR_VCPUS %ld", max, nr);
	tap_ok(nr == (online < max ? online : max),
	       "KVM_CAP_NR_VCPUS %ld = min(online CPUs %ld, KVM_CAP_MAX_VCPUS %ld)", nr, online, max);
	tap_ok(max_id >= max, "KVM_CAP_MAX_VCPU_ID %ld >= KVM_CAP_MAX_VCPUS %ld", max_id, max);
	tap_ok(types > 0 && (types & (1L << KVM_X86_DEFAULT_VM)),
	       "KVM_CAP_VM_TYPES %#lx has KVM_X86_DEFAULT_VM", types);
}

static void vcpu_mmap_size(int kvm)
{
	CHECK_RET(kvm, KVM_GET_VCPU_MMAP_SIZE, 0, 3 * sysconf(_SC_PAGESIZE),
		  "KVM_GET_VCPU_MMAP_SIZE(0) (kvm_run + PIO page + coalesced MMIO ring)");
	CHECK_ERRNO(kvm, KVM_GET_VCPU_MMAP_SIZE, 1, EINVAL, "KVM_GET_VCPU_MMAP_SIZE(1)");
}

static void foreign_ioctls(int kvm)
{
	struct kvm_userspace_memory_region region = {
		.slot = 0,
		.guest_phys_addr = 0,
		.memory_size = 0x10000,
	};
	void *mem = mmap(NULL, 0x10000, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (mem == MAP_FAILED)
		BAIL("mmap");
	region.userspace_addr = (uintptr_t)mem;
	CHECK_ERRNO(kvm, KVM_UNDEFINED_IOCTL, 0, EINVAL, "undefined ioctl _IO(KVMIO, 0xff)");
	CHECK_ERRNO(kvm, FOREIGN_IOCTL, 0, EINVAL, "foreign ioctl TCGETS");
	CHECK_ERRNO(kvm, KVM_CREATE_VCPU, 0, EINVAL, "VM ioctl KVM_CREATE_VCPU(0) on the system fd");
	CHECK_ERRNO(kvm, KVM_SET_USER_MEMORY_REGION, &region, EINVAL,
		    "VM ioctl KVM_SET_USER_MEMORY_REGION (valid region) on the system fd");
	CHECK_ERRNO(kvm, KVM_SET_TSS_ADDR, 0xfffbd000, EINVAL,
		    "VM ioctl KVM_SET_TSS_ADDR on the system fd");
	CHECK_ERRNO(kvm, KVM_RUN, 0, EINVAL, "vCPU ioctl KVM_RUN on the system fd");
	munmap(mem, 0x10000);
}

static void device_attr(int kvm)
{
	uint64_t *val = buf_before_guard(2 * sizeof(uint64_t));
	struct kvm_device_attr attr = { .group = 0, .attr = KVM_X86_XCOMP_GUEST_SUPP };
	struct ioctl_res res;

	/* The value is followed by a canary the kernel must not touch. */
	val[0] = CANARY;
	val[1] = CANARY;
	attr.addr = (uintptr_t)val;
	CHECK_RET(kvm, KVM_HAS_DEVICE_ATTR, &attr, 0, "KVM_HAS_DEVICE_ATTR(0, XCOMP_GUEST_SUPP)");
	res = do_ioctl(kvm, KVM_GET_DEVICE_ATTR, (unsigned long)&attr);
	tap_ok(res.r == 0 && val[0] != CANARY && (val[0] & 3) == 3 && val[1] == CANARY,
	       "KVM_GET_DEVICE_ATTR(0, XCOMP_GUEST_SUPP) -> 0 (got %s), wrote one u64 %#llx "
	       "with x87|SSE (bits 0, 1) and nothing after it",
	       res_str(res), (unsigned long long)val[0]);

	/* HAS never touches attr.addr. */
	attr.addr = (uintptr_t)inaccessible_page();
	CHECK_RET(kvm, KVM_HAS_DEVICE_ATTR, &attr, 0,
		  "KVM_HAS_DEVICE_ATTR(0, XCOMP_GUEST_SUPP) with an inaccessible addr");
	CHECK_ERRNO(kvm, KVM_GET_DEVICE_ATTR, &attr, EFAULT,
		    "KVM_GET_DEVICE_ATTR(0, XCOMP_GUEST_SUPP) with addr in a PROT_NONE page");
	attr.addr = 0;
	CHECK_ERRNO(kvm, KVM_GET_DEVICE_ATTR, &attr, EFAULT,
		    "KVM_GET_DEVICE_ATTR(0, XCOMP_GUEST_SUPP) with addr NULL");
	attr.addr = (uintptr_t)KERNEL_ADDR;
	CHECK_ERRNO(kvm, KVM_GET_DEVICE_ATTR, &attr, EFAULT,
		    "KVM_GET_DEVICE_ATTR(0, XCOMP_GUEST_SUPP) with a kernel addr");

	/* Unknown attributes and groups: ENXIO, and nothing written. */
	val[0] = CANARY;
	attr.addr = (uintptr_t)val;
	attr.attr = 0x1234;
	CHECK_ERRNO(kvm, KVM_HAS_DEVICE_ATTR, &attr, ENXIO, "KVM_HAS_DEVICE_ATTR(0, 0x1234)");
	CHECK_ERRNO(kvm, KVM_GET_DEVICE_ATTR, &attr, ENXIO, "KVM_GET_DEVICE_ATTR(0, 0x1234)");
	/* attr is a u64: only the full value 0 is XCOMP_GUEST_SUPP. */
	attr.attr = 1ull << 32;
	CHECK_ERRNO(kvm, KVM_HAS_DEVICE_ATTR, &attr, ENXIO, "KVM_HAS_DEVICE_ATTR(0, 1 << 32)");
	CHECK_ERRNO(kvm, KVM_GET_DEVICE_ATTR, &attr, ENXIO, "KVM_GET_DEVICE_ATTR(0, 1 << 32)");
	attr.group = 0x7fff;
	attr.attr = KVM_X86_XCOMP_GUEST_SUPP;
	CHECK_ERRNO(kvm, KVM_HAS_DEVICE_ATTR, &attr, ENXIO, "KVM_HAS_DEVICE_ATTR(0x7fff, 0)");
	CHECK_ERRNO(kvm, KVM_GET_DEVICE_ATTR, &attr, ENXIO, "KVM_GET_DEVICE_ATTR(0x7fff, 0)");
	tap_ok(val[0] == CANARY, "failed KVM_GET_DEVICE_ATTR calls wrote nothing (%#llx)",
	       (unsigned long long)val[0]);
}

static void create_vm(int kvm)
{
	struct ioctl_res res;
	long sys_max = ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS);

	CHECK_ERRNO(kvm, KVM_CREATE_VM, 0xff, EINVAL, "KVM_CREATE_VM(type 0xff)");
	CHECK_ERRNO(kvm, KVM_CREATE_VM, 1ul << 32, EINVAL, "KVM_CREATE_VM(type 1 << 32)");
	/* Every type KVM_CAP_VM_TYPES does not list is refused. */
	{
		long types = ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_VM_TYPES);
		int t, bad = -1;

		for (t = 0; t < 32; t++) {
			if (types > 0 && (types & (1L << t)))
				continue;
			res = do_ioctl(kvm, KVM_CREATE_VM, t);
			if (res.r >= 0)
				close(res.r);
			if (!(res.r == -1 && res.err == EINVAL) && bad < 0) {
				bad = t;
				tap_diag("KVM_CREATE_VM(type %d): %s", t, res_str(res));
			}
		}
		tap_ok(bad < 0, "KVM_CREATE_VM(t) -> -1/EINVAL for every type t < 32 not in "
		       "KVM_CAP_VM_TYPES %#lx", types);
	}
	res = do_ioctl(kvm, KVM_CREATE_VM, KVM_X86_DEFAULT_VM);
	if (!tap_ok(res.r >= 0, "KVM_CREATE_VM(KVM_X86_DEFAULT_VM) gives an fd (got %s)",
		    res_str(res))) {
		tap_ok(0, "KVM_CHECK_EXTENSION on the VM fd: no VM fd");
		tap_ok(0, "KVM_CHECK_EXTENSION on the VM fd: no VM fd");
		return;
	}
	/* KVM_CAP_CHECK_EXTENSION_VM: the VM fd answers KVM_CHECK_EXTENSION too. */
	CHECK_RET(res.r, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS, sys_max,
		  "KVM_CHECK_EXTENSION(KVM_CAP_MAX_VCPUS) on a new VM fd (system value)");
	CHECK_RET(res.r, KVM_CHECK_EXTENSION, 0x7fffffff, 0,
		  "KVM_CHECK_EXTENSION(0x7fffffff) on the VM fd");
	close(res.r);
}

static void bad_pointers(int kvm)
{
	void *ptrs[3] = { NULL, inaccessible_page(), KERNEL_ADDR };
	static const char *const what[3] = { "NULL", "a PROT_NONE page", "a kernel address" };
	int i, j;

	for (i = 0; i < N_PTR_IOCTLS; i++)
		for (j = 0; j < 3; j++)
			CHECK_ERRNO(kvm, ptr_ioctls[i].req, ptrs[j], EFAULT, "%s(%s)",
				    ptr_ioctls[i].name, what[j]);
}

int main(void)
{
	int kvm;

	test_watchdog(60);
	kvm = kvm_open();
	tap_plan(2 + (N_CAPS + 6) + 2 + 6 + 13 + 6 + 3 * N_PTR_IOCTLS);
	api_version(kvm);
	check_extension(kvm);
	vcpu_mmap_size(kvm);
	foreign_ioctls(kvm);
	device_attr(kvm);
	create_vm(kvm);
	bad_pointers(kvm);
	tap_done();
}

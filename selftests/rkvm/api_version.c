// SPDX-License-Identifier: GPL-2.0
/*
 * Helper of the shell tests (not a test itself): proves the device named by $KVM_DEVICE
 * answers. Opens it and checks KVM_GET_API_VERSION is 12; with --vm, also creates a VM
 * (which makes the hypervisor enable virtualization on every online CPU); with --hold,
 * closes the device, keeps only the VM fd open until standard input reaches end of file,
 * then checks the VM still answers KVM_CHECK_EXTENSION.
 *
 * Prints one line saying what it found; exit status 0 if all of it worked, 1 otherwise.
 */
#include "lib/rkvm_test.h"

int main(int argc, char **argv)
{
	int vm = 0, hold = 0, i, fd, vmfd = -1;
	long v;
	char buf[64];

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--vm")) {
			vm = 1;
		} else if (!strcmp(argv[i], "--hold")) {
			vm = hold = 1;
		} else {
			fprintf(stderr, "usage: %s [--vm] [--hold]\n", argv[0]);
			return 2;
		}
	}
	fd = open(kvm_device(), O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		printf("%s: open: %s\n", kvm_device(), strerror(errno));
		return 1;
	}
	v = ioctl(fd, KVM_GET_API_VERSION, 0);
	if (v != KVM_API_VERSION) {
		printf("%s: KVM_GET_API_VERSION = %ld (%s), want %d\n", kvm_device(), v,
		       v < 0 ? strerror(errno) : "-", KVM_API_VERSION);
		return 1;
	}
	if (vm) {
		vmfd = ioctl(fd, KVM_CREATE_VM, 0);
		if (vmfd < 0) {
			printf("%s: KVM_CREATE_VM: %s\n", kvm_device(), strerror(errno));
			return 1;
		}
	}
	printf("%s: API version %ld%s\n", kvm_device(), v, vm ? ", VM created" : "");
	fflush(stdout);
	if (hold) {
		close(fd);
		fd = -1;
		while (read(0, buf, sizeof(buf)) > 0)
			;
		/* The VM must still be usable after whatever happened meanwhile. */
		if (ioctl(vmfd, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS) <= 0) {
			printf("%s: held VM: KVM_CHECK_EXTENSION failed: %s\n", kvm_device(),
			       strerror(errno));
			return 1;
		}
		printf("%s: held VM still answers, closing it\n", kvm_device());
	}
	if (vmfd >= 0)
		close(vmfd);
	if (fd >= 0)
		close(fd);
	return 0;
}

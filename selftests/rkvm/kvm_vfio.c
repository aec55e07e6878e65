// SPDX-License-Identifier: GPL-2.0
/*
 * The kvm-vfio device (KVM_CREATE_DEVICE with KVM_DEV_TYPE_VFIO) on a kernel without a
 * VFIO group to give it: KVM_CREATE_DEVICE_TEST, one device per VM (another once its fd
 * is closed), its attributes (KVM_DEV_VFIO_FILE with FILE_ADD and FILE_DEL), and the
 * errors for bad fds, non-VFIO files, unknown attributes and unknown device types.
 */
#include "lib/rkvm_test.h"

static long create_dev(int vm_fd, uint32_t type, uint32_t flags, struct kvm_create_device *out)
{
	struct kvm_create_device d = { .type = type, .flags = flags, .fd = 0x5a5a };
	long r = ioctl(vm_fd, KVM_CREATE_DEVICE, &d);

	if (out)
		*out = d;
	return r;
}

static long attr(int fd, unsigned long cmd, uint32_t group, uint64_t a, const void *addr)
{
	struct kvm_device_attr at = {
		.group = group, .attr = a, .addr = (uint64_t)(uintptr_t)addr,
	};

	return ioctl(fd, cmd, &at);
}

int main(void)
{
	struct kvm_create_device d;
	struct vm vm;
	int dev, dev2, null_fd, bad = -1;
	long r;

	test_watchdog(60);
	vm = vm_create();
	tap_plan(14);

	r = create_dev(vm.fd, KVM_DEV_TYPE_VFIO, KVM_CREATE_DEVICE_TEST, &d);
	tap_ok(r == 0 && d.fd == 0x5a5a, "KVM_CREATE_DEVICE_TEST for KVM_DEV_TYPE_VFIO: 0, no fd (%ld)",
	       r);
	r = create_dev(vm.fd, 0xffff, KVM_CREATE_DEVICE_TEST, NULL);
	tap_ok(r == -1 && errno == ENODEV, "an unknown device type -> ENODEV (%ld, errno %d)", r,
	       errno);
	r = create_dev(vm.fd, KVM_DEV_TYPE_VFIO, 0, &d);
	dev = d.fd;
	tap_ok(r == 0 && dev >= 0 && dev != 0x5a5a, "KVM_CREATE_DEVICE(VFIO): fd %d (%ld)", dev, r);
	if (r)
		BAIL("KVM_CREATE_DEVICE(VFIO)");
	r = create_dev(vm.fd, KVM_DEV_TYPE_VFIO, 0, NULL);
	tap_ok(r == -1 && errno == EBUSY, "a second kvm-vfio device in the VM -> EBUSY (%ld, errno %d)",
	       r, errno);

	r = attr(dev, KVM_HAS_DEVICE_ATTR, KVM_DEV_VFIO_FILE, KVM_DEV_VFIO_FILE_ADD, NULL);
	tap_ok(r == 0 && attr(dev, KVM_HAS_DEVICE_ATTR, KVM_DEV_VFIO_FILE, KVM_DEV_VFIO_FILE_DEL,
			      NULL) == 0,
	       "KVM_HAS_DEVICE_ATTR: FILE_ADD and FILE_DEL (%ld)", r);
	r = attr(dev, KVM_HAS_DEVICE_ATTR, KVM_DEV_VFIO_FILE, 7, NULL);
	tap_ok(r == -1 && errno == ENXIO &&
		       attr(dev, KVM_HAS_DEVICE_ATTR, 5, KVM_DEV_VFIO_FILE_ADD, NULL) == -1 &&
		       errno == ENXIO,
	       "an unknown attribute or group -> ENXIO");
	r = attr(dev, KVM_GET_DEVICE_ATTR, KVM_DEV_VFIO_FILE, KVM_DEV_VFIO_FILE_ADD, &bad);
	tap_ok(r == -1 && errno == EPERM, "KVM_GET_DEVICE_ATTR -> EPERM (%ld, errno %d)", r, errno);

	r = attr(dev, KVM_SET_DEVICE_ATTR, KVM_DEV_VFIO_FILE, KVM_DEV_VFIO_FILE_ADD, &bad);
	tap_ok(r == -1 && errno == EBADF, "FILE_ADD of fd -1 -> EBADF (%ld, errno %d)", r, errno);
	null_fd = open("/dev/null", O_RDWR);
	if (null_fd < 0)
		BAIL("open /dev/null");
	r = attr(dev, KVM_SET_DEVICE_ATTR, KVM_DEV_VFIO_FILE, KVM_DEV_VFIO_FILE_ADD, &null_fd);
	tap_ok(r == -1 && errno == EINVAL, "FILE_ADD of a file that is not VFIO -> EINVAL (%ld, errno %d)",
	       r, errno);
	r = attr(dev, KVM_SET_DEVICE_ATTR, KVM_DEV_VFIO_FILE, KVM_DEV_VFIO_FILE_DEL, &null_fd);
	tap_ok(r == -1 && errno == ENOENT, "FILE_DEL of a file never added -> ENOENT (%ld, errno %d)",
	       r, errno);
	r = attr(dev, KVM_SET_DEVICE_ATTR, KVM_DEV_VFIO_FILE, KVM_DEV_VFIO_FILE_ADD, (void *)8);
	tap_ok(r == -1 && errno == EFAULT, "FILE_ADD with an unreadable fd pointer -> EFAULT (%ld, errno %d)",
	       r, errno);
	r = attr(dev, KVM_SET_DEVICE_ATTR, KVM_DEV_VFIO_FILE, 9, &null_fd);
	tap_ok(r == -1 && errno == ENXIO, "an unknown attribute to set -> ENXIO (%ld, errno %d)", r,
	       errno);
	r = ioctl(dev, KVM_RUN, 0);
	tap_ok(r == -1 && errno == ENOTTY, "another ioctl on the device fd -> ENOTTY (%ld, errno %d)", r,
	       errno);

	close(dev);
	r = create_dev(vm.fd, KVM_DEV_TYPE_VFIO, 0, &d);
	dev2 = d.fd;
	tap_ok(r == 0 && dev2 >= 0, "once its fd is closed, a new kvm-vfio device (fd %d, %ld)", dev2,
	       r);
	close(dev2);
	close(null_fd);
	tap_done();
}

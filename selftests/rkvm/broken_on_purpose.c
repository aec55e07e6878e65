// SPDX-License-Identifier: GPL-2.0
/*
 * A test that is wrong on purpose: it expects KVM_GET_API_VERSION to be 13. Only run with
 * `make check BROKEN_TEST=1`, to show that a test failing on reference KVM fails the suite.
 */
#include "lib/rkvm_test.h"

int main(void)
{
	int fd = kvm_open();

	tap_plan(1);
	tap_ok(ioctl(fd, KVM_GET_API_VERSION, 0) == 13, "API version is 13 (it is not)");
	tap_done();
}

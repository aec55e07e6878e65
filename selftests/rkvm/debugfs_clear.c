// SPDX-License-Identifier: GPL-2.0
/*
 * Clearing stats through debugfs, as KVM's kvm_stat_data_clear allows: writing 0 (as
 * kstrtoull reads it) to a counter's file in the VM's directory "<pid>-<fd>" zeroes that
 * counter in the VM (in each of its vCPUs, for a vCPU stat), and to the file of the
 * same name in the hypervisor's debugfs root zeroes it in every VM. Any other number
 * fails with EINVAL (ERANGE past 2^64 - 1), text with EINVAL, and the counter keeps its
 * value. Files of current values (pages_4k) take no writes; counters' files do. The
 * counters cleared are the ones the binary stats read too, and they count on from 0.
 */
#include "lib/rkvm_test.h"
#include "lib/stats.h"
#include <sys/stat.h>

#define CODE_GPA 0x1000
#define OUTS 10

/* mov cx, OUTS; loop: out 0xf1, al; loop loop; hlt; out 0xf1, al; hlt */
static const uint8_t guest_code[] = {
	0xb9, OUTS, 0x00, 0xe6, 0xf1, 0xe2, 0xfc, 0xf4, 0xe6, 0xf1, 0xf4,
};

static char vm_dir[128], root_dir[64];

/* Reads the number in DIR/NAME (-1 if unreadable). */
static long long read_stat(const char *dir, const char *name)
{
	char path[256], buf[64] = { 0 };
	int fd;
	ssize_t n;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	return n > 0 ? strtoll(buf, NULL, 10) : -1;
}

/* Writes TEXT to DIR/NAME: 0 if the whole text was taken, else the errno. */
static int write_stat(const char *dir, const char *name, const char *text)
{
	char path[256];
	ssize_t n;
	int fd, err;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_WRONLY);
	if (fd < 0)
		return errno;
	n = write(fd, text, strlen(text));
	err = n == (ssize_t)strlen(text) ? 0 : n < 0 ? errno : EIO;
	close(fd);
	return err;
}

static uint64_t vcpu_stat(struct vcpu *v, const char *name)
{
	struct stats s;
	uint64_t val;
	int fd = ioctl(v->fd, KVM_GET_STATS_FD, 0);

	if (fd < 0 || !stats_load(fd, &s))
		BAIL("KVM_GET_STATS_FD");
	val = stats_value(fd, &s, name);
	close(fd);
	return val;
}

int main(void)
{
	const char *hv = strstr(kvm_device(), "rkvm") ? "rkvm" : "kvm";
	struct stat st;
	struct vcpu v;
	struct vm vm;
	uint8_t *mem;
	long long before;
	int i, err;

	test_watchdog(120);
	snprintf(root_dir, sizeof(root_dir), "/sys/kernel/debug/%s", hv);
	if (stat(root_dir, &st))
		tap_skip_all("no debugfs directory for the hypervisor (debugfs not mounted?)");
	tap_plan(14);
	vm = vm_create();
	v = real_mode_vcpu(&vm, CODE_GPA, guest_code, sizeof(guest_code), &mem);
	for (i = 0; i <= OUTS; i++)
		if (vcpu_run(&v) != (i < OUTS ? KVM_EXIT_IO : KVM_EXIT_HLT))
			BAIL("run %d: %s", i, exit_str(&v));
	snprintf(vm_dir, sizeof(vm_dir), "%s/%d-%d", root_dir, getpid(), vm.fd);

	before = read_stat(vm_dir, "io_exits");
	tap_ok(before >= OUTS, "%s/io_exits reads %lld after %d OUTs", vm_dir, before, OUTS);

	err = write_stat(vm_dir, "io_exits", "1\n");
	tap_ok(err == EINVAL && read_stat(vm_dir, "io_exits") == before,
	       "writing 1 fails with EINVAL (%s) and changes nothing", strerror(err));
	err = write_stat(vm_dir, "io_exits", "zero");
	tap_ok(err == EINVAL, "writing text fails with EINVAL (%s)", strerror(err));
	err = write_stat(vm_dir, "io_exits", "18446744073709551616");
	tap_ok(err == ERANGE, "writing 2^64 fails with ERANGE (%s)", strerror(err));

	err = write_stat(vm_dir, "io_exits", "0\n");
	tap_ok(!err && read_stat(vm_dir, "io_exits") == 0,
	       "writing \"0\\n\" clears it (%s; reads %lld)", strerror(err),
	       read_stat(vm_dir, "io_exits"));
	tap_ok(vcpu_stat(&v, "io_exits") == 0, "the vCPU's binary stats read io_exits 0 too");
	tap_ok(vcpu_stat(&v, "exits") >= OUTS && read_stat(vm_dir, "exits") >= OUTS,
	       "exits, not written, kept its count (%llu)",
	       (unsigned long long)vcpu_stat(&v, "exits"));

	if (vcpu_run(&v) != KVM_EXIT_IO)
		BAIL("the OUT after HLT: %s", exit_str(&v));
	tap_ok(read_stat(vm_dir, "io_exits") == 1 && vcpu_stat(&v, "io_exits") == 1,
	       "the next OUT counts from 0 (reads %lld)", read_stat(vm_dir, "io_exits"));

	err = write_stat(root_dir, "exits", "0x0");
	tap_ok(!err && read_stat(vm_dir, "exits") == 0 && vcpu_stat(&v, "exits") == 0,
	       "writing \"0x0\" to %s/exits clears the VM's exits (%s; reads %lld)", root_dir,
	       strerror(err), read_stat(vm_dir, "exits"));
	err = write_stat(root_dir, "exits", "+0");
	tap_ok(!err, "\"+0\" is 0 as well (%s)", strerror(err));

	err = write_stat(vm_dir, "halt_exits", "00");
	tap_ok(!err && read_stat(vm_dir, "halt_exits") == 0,
	       "an octal 00 clears halt_exits (%s)", strerror(err));

	tap_ok(!stat(vm_dir, &st) && S_ISDIR(st.st_mode), "the VM's directory is %s", vm_dir);
	{
		char path[256];

		snprintf(path, sizeof(path), "%s/io_exits", vm_dir);
		tap_ok(!stat(path, &st) && (st.st_mode & S_IWUSR),
		       "a counter's file is writable by its owner (mode %o)", st.st_mode & 0777);
		snprintf(path, sizeof(path), "%s/pages_4k", vm_dir);
		tap_ok(!stat(path, &st) && !(st.st_mode & 0222),
		       "pages_4k, a current value, is read-only (mode %o)", st.st_mode & 0777);
	}
	tap_done();
}

// SPDX-License-Identifier: GPL-2.0
/*
 * Limits of the VM's I/O buses (virt/kvm/kvm_main.c kvm_io_bus_register_dev,
 * NR_IOBUS_DEVS 1000; virt/kvm/coalesced_mmio.c; virt/kvm/eventfd.c).
 *
 * KVM keeps coalesced zones and ioeventfds as devices of the MMIO or PIO bus. A bus takes
 * at most 1000 devices, not counting ioeventfds (those are bounded by the memory charged
 * to the caller). Checks:
 *  - coalesced MMIO zones at distinct addresses: registration stops with ENOSPC after
 *    990 to 1000 of them;
 *  - then the full MMIO bus refuses an MMIO ioeventfd (ENOSPC) while the PIO bus takes a
 *    PIO ioeventfd; 1200 PIO ioeventfds at distinct ports all succeed (not counted);
 *  - with KVM_CAP_COALESCED_PIO: PIO zones also stop with ENOSPC after 990 to 1000, and
 *    then a PIO ioeventfd gets ENOSPC; the MMIO bus is unaffected by PIO zones;
 *  - after one MMIO zone goes, the MMIO ioeventfd fits;
 *  - everything deregisters (0 each), and a guest OUT to a former ioeventfd port exits
 *    to userspace as usual.
 */
#include "lib/rkvm_test.h"
#include <sys/eventfd.h>

#define ZONE_BASE 0xe0000000ull
#define PZONE_BASE 0x4000
#define MAX_TRY 1100
#define N_PIO_IOE 1200
#define IOE_PORT_BASE 0x1000
#define CODE_GPA 0x1000

/* Real mode: an OUT to the first ioeventfd port, then HLT. */
GUEST_CODE(lim_guest, 16,
	"mov $" XSTR(IOE_PORT_BASE) ", %dx\n"
	"mov $0x5a, %al\n"
	"out %al, %dx\n"
	"hlt\n");

static struct vm vm;
static int efd;

static long ioe(uint64_t addr, uint32_t len, uint32_t flags)
{
	struct kvm_ioeventfd a = { .addr = addr, .len = len, .fd = efd, .flags = flags };

	return ioctl(vm.fd, KVM_IOEVENTFD, &a);
}

static struct ioctl_res zone(unsigned long req, uint64_t addr, uint32_t size, uint32_t pio)
{
	struct kvm_coalesced_mmio_zone z = { .addr = addr, .size = size, .pio = pio };

	return do_ioctl(vm.fd, req, (unsigned long)&z);
}

/* Registers zones until one fails; returns how many succeeded, the failure in *last. */
static int fill(uint64_t base, uint64_t step, uint32_t pio, struct ioctl_res *last)
{
	int n;

	for (n = 0; n < MAX_TRY; n++) {
		*last = zone(KVM_REGISTER_COALESCED_MMIO, base + n * step, 8, pio);
		if (last->r)
			break;
	}
	return n;
}

static int unfill(uint64_t base, uint64_t step, uint32_t pio, int n, int from)
{
	int i, bad = 0;

	for (i = from; i < n; i++)
		if (zone(KVM_UNREGISTER_COALESCED_MMIO, base + i * step, 8, pio).r)
			bad++;
	return bad;
}

int main(void)
{
	struct ioctl_res last;
	int nz, npz = 0, i, bad, has_pio;
	struct vcpu v;
	uint8_t *mem;
	long r;

	test_watchdog(200);
	vm = vm_create();
	REQUIRE_CAP(vm.sys_fd, KVM_CAP_IOEVENTFD);
	REQUIRE_CAP(vm.sys_fd, KVM_CAP_COALESCED_MMIO);
	has_pio = ioctl(vm.sys_fd, KVM_CHECK_EXTENSION, KVM_CAP_COALESCED_PIO) > 0;
	tap_plan(15);
	efd = eventfd(0, EFD_CLOEXEC);
	if (efd < 0)
		BAIL("eventfd");

	nz = fill(ZONE_BASE, 0x1000, 0, &last);
	tap_ok(last.r == -1 && last.err == ENOSPC && nz >= 990 && nz <= 1000,
	       "coalesced MMIO zones: %d registered, then %s (want 990..1000, then ENOSPC)", nz,
	       res_str(last));
	r = ioe(0xd0000000, 4, 0);
	tap_ok(r == -1 && errno == ENOSPC, "an MMIO ioeventfd on the full MMIO bus -> ENOSPC (%ld/%s)",
	       r, errno_name(r ? errno : 0));
	bad = 0;
	for (i = 0; i < N_PIO_IOE; i++)
		if (ioe(IOE_PORT_BASE + i, 1, KVM_IOEVENTFD_FLAG_PIO))
			bad++;
	tap_ok(!bad, "%d PIO ioeventfds at distinct ports: not counted as bus devices (%d failed)",
	       N_PIO_IOE, bad);

	if (has_pio) {
		npz = fill(PZONE_BASE, 8, 1, &last);
		tap_ok(last.r == -1 && last.err == ENOSPC && npz >= 990 && npz <= 1000,
		       "coalesced PIO zones: %d registered, then %s (want 990..1000, then ENOSPC)",
		       npz, res_str(last));
		r = ioe(0x80, 1, KVM_IOEVENTFD_FLAG_PIO);
		tap_ok(r == -1 && errno == ENOSPC,
		       "a PIO ioeventfd on the full PIO bus -> ENOSPC (%ld/%s)", r,
		       errno_name(r ? errno : 0));
		bad = unfill(PZONE_BASE, 8, 1, npz, 0);
		tap_ok(!bad, "the PIO zones unregister (%d failed)", bad);
	} else {
		for (i = 0; i < 3; i++)
			tap_ok(1, "# SKIP no KVM_CAP_COALESCED_PIO");
	}
	r = ioe(0x80, 1, KVM_IOEVENTFD_FLAG_PIO);
	tap_ok(r == 0, "a PIO ioeventfd fits again (%ld/%s)", r, errno_name(r ? errno : 0));
	r = ioe(0x80, 1, KVM_IOEVENTFD_FLAG_PIO | KVM_IOEVENTFD_FLAG_DEASSIGN);
	tap_ok(r == 0, "and deassigns (%ld)", r);

	last = zone(KVM_UNREGISTER_COALESCED_MMIO, ZONE_BASE, 8, 0);
	tap_ok(last.r == 0, "one MMIO zone unregisters (%s)", res_str(last));
	r = ioe(0xd0000000, 4, 0);
	tap_ok(r == 0, "then the MMIO ioeventfd fits (%ld/%s)", r, errno_name(r ? errno : 0));
	r = ioe(0xd0000000, 4, KVM_IOEVENTFD_FLAG_DEASSIGN);
	tap_ok(r == 0, "and deassigns (%ld)", r);
	bad = unfill(ZONE_BASE, 0x1000, 0, nz, 1);
	tap_ok(!bad, "the other MMIO zones unregister (%d failed)", bad);
	bad = 0;
	for (i = 0; i < N_PIO_IOE; i++)
		if (ioe(IOE_PORT_BASE + i, 1, KVM_IOEVENTFD_FLAG_PIO | KVM_IOEVENTFD_FLAG_DEASSIGN))
			bad++;
	tap_ok(!bad, "the %d PIO ioeventfds deassign (%d failed)", N_PIO_IOE, bad);

	/* The VM still runs: the OUT to the first former ioeventfd port exits. */
	if (ioctl(vm.fd, KVM_SET_TSS_ADDR, 0xfffbd000))
		BAIL("KVM_SET_TSS_ADDR");
	mem = vm_add_memory(&vm, 0, 0, 0x10000, 0);
	guest_load(mem, CODE_GPA, lim_guest);
	v = vcpu_create(&vm, 0);
	vcpu_set_real_mode(&v, CODE_GPA);
	vcpu_run(&v);
	tap_ok(is_out(&v, IOE_PORT_BASE, 1) && io_out_value(&v) == 0x5a,
	       "a guest OUT to the first former ioeventfd port exits (%s)", exit_str(&v));
	vcpu_run(&v);
	tap_ok(v.run->exit_reason == KVM_EXIT_HLT, "then HLT (%s)", exit_str(&v));
	close(efd);
	tap_done();
}

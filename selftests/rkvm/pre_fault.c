// SPDX-License-Identifier: GPL-2.0
/*
 * KVM_PRE_FAULT_MEMORY: a vCPU maps guest memory into the two-dimensional page tables
 * before the guest touches it.
 *  - KVM_CHECK_EXTENSION(KVM_CAP_PRE_FAULT_MEMORY) is 1 (EPT/NPT are on).
 *  - Flags, an unaligned address or size, a zero or wrapping range -> EINVAL.
 *  - A range inside a memslot maps every page: the ioctl returns 0 with the range
 *    consumed (gpa advanced, size 0), and the VM's pages_4k stat (debugfs) counts them.
 *  - A range running past the memslot maps what it can, returns 0 and leaves the rest
 *    (gpa at the first page without a memslot); a range with no memslot at its start
 *    fails with ENOENT and is left as it was.
 *  - The guest then reads every page of the slot and sees what the host wrote.
 */
#include "lib/rkvm_test.h"

#define SLOT_GPA 0x200000ull
#define SLOT_PAGES 8
#define PAGE 4096ull
#define PORT_SUM 0x90

/* Sums the first quadword of each of the slot's pages (RCX pages from RSI), OUTs it. */
GUEST_CODE(pf_guest, 64,
	"xor %eax, %eax\n"
	"1: add (%rsi), %eax\n"
	"add $4096, %rsi\n"
	"loop 1b\n"
	"out %eax, $" XSTR(PORT_SUM) "\n"
	"hlt\n");

static long vm_stat(int vm_fd, const char *name)
{
	const char *hv = strstr(kvm_device(), "rkvm") ? "rkvm" : "kvm";
	char path[256];

	snprintf(path, sizeof(path), "/sys/kernel/debug/%s/%d-%d/%s", hv, getpid(), vm_fd, name);
	return read_long_file(path);
}

static struct ioctl_res prefault(struct vcpu *v, struct kvm_pre_fault_memory *r)
{
	return do_ioctl(v->fd, KVM_PRE_FAULT_MEMORY, (unsigned long)r);
}

static void check_einval(struct vcpu *v, uint64_t gpa, uint64_t size, uint64_t flags,
			 const char *what)
{
	struct kvm_pre_fault_memory r = { .gpa = gpa, .size = size, .flags = flags };
	struct ioctl_res res = prefault(v, &r);

	tap_ok(res.r == -1 && res.err == EINVAL, "%s -> -1/EINVAL (got %s)", what, res_str(res));
}

int main(void)
{
	struct kvm_pre_fault_memory r;
	struct ioctl_res res;
	struct kvm_regs regs;
	struct guest g;
	uint8_t *slot;
	uint32_t want = 0;
	long before, after;
	int i;

	test_watchdog(60);
	g = guest_create();
	if (ioctl(g.vm.sys_fd, KVM_CHECK_EXTENSION, KVM_CAP_PRE_FAULT_MEMORY) <= 0)
		tap_skip_all("KVM_CAP_PRE_FAULT_MEMORY not advertised by the device");
	tap_plan(13);
	tap_ok(ioctl(g.vm.fd, KVM_CHECK_EXTENSION, KVM_CAP_PRE_FAULT_MEMORY) == 1,
	       "KVM_CAP_PRE_FAULT_MEMORY is 1 on the VM");
	slot = vm_add_memory(&g.vm, 1, SLOT_GPA, SLOT_PAGES * PAGE, 0);
	for (i = 0; i < SLOT_PAGES; i++) {
		*(uint32_t *)(slot + i * PAGE) = 0x100 + i;
		want += 0x100 + i;
	}

	check_einval(&g.v, SLOT_GPA, PAGE, 1, "flags 1");
	check_einval(&g.v, SLOT_GPA + 8, PAGE, 0, "an unaligned gpa");
	check_einval(&g.v, SLOT_GPA, PAGE + 8, 0, "an unaligned size");
	check_einval(&g.v, SLOT_GPA, 0, 0, "size 0");
	check_einval(&g.v, -PAGE, 2 * PAGE, 0, "a range that wraps");

	before = vm_stat(g.vm.fd, "pages_4k");
	r = (struct kvm_pre_fault_memory){ .gpa = SLOT_GPA, .size = 4 * PAGE };
	res = prefault(&g.v, &r);
	after = vm_stat(g.vm.fd, "pages_4k");
	tap_ok(res.r == 0 && r.gpa == SLOT_GPA + 4 * PAGE && r.size == 0,
	       "4 pages inside the slot: %s, gpa %#llx, size %#llx left", res_str(res),
	       (unsigned long long)r.gpa, (unsigned long long)r.size);
	tap_ok(before >= 0 && after == before + 4, "pages_4k %ld -> %ld (4 more)", before, after);

	r = (struct kvm_pre_fault_memory){ .gpa = SLOT_GPA + 6 * PAGE, .size = 4 * PAGE };
	res = prefault(&g.v, &r);
	tap_ok(res.r == 0 && r.gpa == SLOT_GPA + SLOT_PAGES * PAGE && r.size == 2 * PAGE,
	       "4 pages from the slot's last 2: %s, stops at gpa %#llx with %#llx left",
	       res_str(res), (unsigned long long)r.gpa, (unsigned long long)r.size);
	tap_ok(vm_stat(g.vm.fd, "pages_4k") == after + 2, "pages_4k %ld (2 more)",
	       vm_stat(g.vm.fd, "pages_4k"));

	res = prefault(&g.v, &r);
	tap_ok(res.r == -1 && res.err == ENOENT && r.gpa == SLOT_GPA + SLOT_PAGES * PAGE &&
		       r.size == 2 * PAGE,
	       "the rest, with no memslot: %s, range unchanged (gpa %#llx, size %#llx)",
	       res_str(res), (unsigned long long)r.gpa, (unsigned long long)r.size);
	r = (struct kvm_pre_fault_memory){ .gpa = SLOT_GPA, .size = 2 * PAGE };
	res = prefault(&g.v, &r);
	tap_ok(res.r == 0 && r.size == 0, "pages already mapped again: %s, size %#llx left",
	       res_str(res), (unsigned long long)r.size);

	guest_load(g.mem, GUEST_CODE_GPA, pf_guest);
	vcpu_set_long_mode(&g.v, g.mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
	vcpu_get_regs(&g.v, &regs);
	regs.rsi = SLOT_GPA;
	regs.rcx = SLOT_PAGES;
	vcpu_set_regs(&g.v, &regs);
	vcpu_run(&g.v);
	tap_ok(is_out(&g.v, PORT_SUM, 4) && io_out_value(&g.v) == want,
	       "the guest reads the slot's pages: sum %#x (want %#x; %s)", io_out_value(&g.v), want,
	       exit_str(&g.v));
	tap_done();
}

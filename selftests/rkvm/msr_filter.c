// SPDX-License-Identifier: GPL-2.0
/*
 * KVM_X86_SET_MSR_FILTER (KVM_CAP_X86_MSR_FILTER): which of the guest's RDMSR/WRMSR the
 * kernel handles.
 *  - The ioctl's checks: unknown filter or range flags, a range without READ/WRITE, a
 *    deny-by-default filter without ranges, a bitmap over 1536 bytes -> EINVAL; an
 *    unreadable bitmap -> EFAULT; an allow-by-default filter without ranges is fine.
 *  - With KVM_MSR_EXIT_REASON_FILTER enabled, a denied access exits to userspace
 *    (KVM_EXIT_X86_RDMSR/WRMSR, reason FILTER) and userspace completes it: a read gets
 *    its data, a write with error set raises #GP in the guest. Allowed accesses stay in
 *    the kernel. This holds for an MSR the kernel emulates (STAR) and for MSRs the guest
 *    otherwise reaches without exits (FS_BASE write, GS_BASE read).
 *  - A new filter (allow everything) takes effect for the running vCPU: GS_BASE reads
 *    and FS_BASE writes are the kernel's again (KVM_GET_SREGS sees the write).
 *  - Without the FILTER exit, a denied access raises #GP; userspace's KVM_GET_MSRS is
 *    never filtered.
 */
#include "lib/rkvm_test.h"

#define MSR_FS_BASE 0xc0000100
#define MSR_GS_BASE 0xc0000101
#define MSR_STAR 0xc0000081
#define P_VAL 0x90
#define P_MARK 0x91
#define P_GP 0x98

#define RD(msr) "mov $" XSTR(msr) ", %ecx\nrdmsr\nout %eax, $" XSTR(P_VAL) "\n"
#define WR(msr, v) "mov $" XSTR(msr) ", %ecx\nmov $" XSTR(v) ", %eax\nxor %edx, %edx\nwrmsr\n"
#define MARK(n) "mov $" #n ", %al\nout %al, $" XSTR(P_MARK) "\n"

GUEST_CODE(mf_guest, 64,
	RD(MSR_STAR)			/* filtered read: userspace's value */
	WR(MSR_STAR, 0x5678)		/* allowed write */
	MARK(2)
	WR(MSR_FS_BASE, 0xabc000)	/* filtered write, refused by userspace: #GP */
	MARK(3)
	RD(MSR_FS_BASE)			/* allowed read: unchanged */
	RD(MSR_GS_BASE)			/* filtered read */
	MARK(4)				/* userspace allows everything */
	RD(MSR_GS_BASE)
	WR(MSR_FS_BASE, 0x1000)
	MARK(5)				/* userspace: no FILTER exits, STAR reads denied */
	"mov $" XSTR(MSR_STAR) ", %ecx\n"
	"rdmsr\n"
	MARK(6)
	"hlt\n"
	"mf_gp:\n"
	"add $8, %rsp\n"
	"push %rax\n"
	"mov $13, %al\n"
	"out %al, $" XSTR(P_GP) "\n"
	"pop %rax\n"
	"addq $2, (%rsp)\n"
	"iretq\n");
extern const uint8_t mf_gp[];

/* struct kvm_msr_filter with its ranges. */
static struct kvm_msr_filter filter;

static void filter_reset(uint32_t flags)
{
	memset(&filter, 0, sizeof(filter));
	filter.flags = flags;
}

static void filter_range(int i, uint32_t flags, uint32_t base, uint32_t nmsrs, void *bitmap)
{
	filter.ranges[i].flags = flags;
	filter.ranges[i].base = base;
	filter.ranges[i].nmsrs = nmsrs;
	filter.ranges[i].bitmap = bitmap;
}

static struct ioctl_res set_filter(int vm_fd)
{
	return do_ioctl(vm_fd, KVM_X86_SET_MSR_FILTER, (unsigned long)&filter);
}

static void user_space_msr(int vm_fd, uint64_t mask)
{
	struct kvm_enable_cap c = { .cap = KVM_CAP_X86_USER_SPACE_MSR, .args = { mask } };

	if (ioctl(vm_fd, KVM_ENABLE_CAP, &c))
		BAIL("KVM_CAP_X86_USER_SPACE_MSR %#llx", (unsigned long long)mask);
}

static void ioctl_checks(int vm_fd)
{
	static uint8_t big[2048], deny[8];
	struct ioctl_res r;

	filter_reset(2);
	r = set_filter(vm_fd);
	tap_ok(r.r == -1 && r.err == EINVAL, "filter flag 2 -> -1/EINVAL (got %s)", res_str(r));
	filter_reset(0);
	filter_range(0, 4, 0, 1, deny);
	r = set_filter(vm_fd);
	tap_ok(r.r == -1 && r.err == EINVAL, "range flag 4 -> -1/EINVAL (got %s)", res_str(r));
	filter_range(0, 0, 0, 1, deny);
	r = set_filter(vm_fd);
	tap_ok(r.r == -1 && r.err == EINVAL, "a range with MSRs but neither READ nor WRITE -> "
	       "-1/EINVAL (got %s)", res_str(r));
	filter_reset(KVM_MSR_FILTER_DEFAULT_DENY);
	r = set_filter(vm_fd);
	tap_ok(r.r == -1 && r.err == EINVAL, "deny by default without ranges -> -1/EINVAL (got %s)",
	       res_str(r));
	filter_reset(0);
	filter_range(0, KVM_MSR_FILTER_READ, 0, 1536 * 8 + 1, big);
	r = set_filter(vm_fd);
	tap_ok(r.r == -1 && r.err == EINVAL, "a range of 1536 * 8 + 1 MSRs -> -1/EINVAL (got %s)",
	       res_str(r));
	filter_range(0, KVM_MSR_FILTER_READ, 0, 1536 * 8, big);
	r = set_filter(vm_fd);
	tap_ok(r.r == 0, "a range of 1536 * 8 MSRs (got %s)", res_str(r));
	filter_range(0, KVM_MSR_FILTER_READ, 0, 8, (void *)8);
	r = set_filter(vm_fd);
	tap_ok(r.r == -1 && r.err == EFAULT, "a bitmap at address 8 -> -1/EFAULT (got %s)",
	       res_str(r));
	filter_reset(0);
	r = set_filter(vm_fd);
	tap_ok(r.r == 0, "allow by default without ranges (got %s)", res_str(r));
}

/* Runs the guest to its next exit; checks it is a FILTER exit for INDEX. */
static int msr_exit(struct vcpu *v, uint32_t exit, uint32_t index)
{
	vcpu_run(v);
	return v->run->exit_reason == exit && v->run->msr.index == index &&
	       v->run->msr.reason == KVM_MSR_EXIT_REASON_FILTER;
}

static int next_out(struct vcpu *v, int port, uint32_t *val)
{
	vcpu_run(v);
	if (!is_out(v, port, port == P_VAL ? 4 : 1))
		return 0;
	*val = port == P_VAL ? io_out_value(v) : *io_data(v);
	return 1;
}

int main(void)
{
	static uint64_t deny_star, deny_fs, deny_gs;
	struct kvm_sregs s;
	struct guest g;
	uint64_t fs0;
	uint32_t val = 0, gp = 0;
	int ok;

	test_watchdog(60);
	g = guest_create();
	if (ioctl(g.vm.sys_fd, KVM_CHECK_EXTENSION, KVM_CAP_X86_MSR_FILTER) <= 0)
		tap_skip_all("KVM_CAP_X86_MSR_FILTER not advertised by the device");
	tap_plan(8 + 13);
	ioctl_checks(g.vm.fd);

	guest_load(g.mem, GUEST_CODE_GPA, mf_guest);
	vcpu_set_long_mode(&g.v, g.mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
	idt_set_gate64(g.mem, 13, GUEST_ADDR(GUEST_CODE_GPA, mf_guest, mf_gp));
	vcpu_get_sregs(&g.v, &s);
	fs0 = s.fs.base;
	user_space_msr(g.vm.fd, KVM_MSR_EXIT_REASON_FILTER);
	/* Bits clear: STAR reads, FS_BASE writes and GS_BASE reads are denied. */
	filter_reset(KVM_MSR_FILTER_DEFAULT_ALLOW);
	filter_range(0, KVM_MSR_FILTER_READ, MSR_STAR, 1, &deny_star);
	filter_range(1, KVM_MSR_FILTER_WRITE, MSR_FS_BASE, 1, &deny_fs);
	filter_range(2, KVM_MSR_FILTER_READ, MSR_GS_BASE, 1, &deny_gs);
	if (set_filter(g.vm.fd).r)
		BAIL("KVM_X86_SET_MSR_FILTER");

	ok = msr_exit(&g.v, KVM_EXIT_X86_RDMSR, MSR_STAR);
	tap_ok(ok, "RDMSR of STAR (read denied) exits: KVM_EXIT_X86_RDMSR, reason FILTER (%s)",
	       exit_str(&g.v));
	g.v.run->msr.data = 0x1234;
	tap_ok(next_out(&g.v, P_VAL, &val) && val == 0x1234,
	       "the guest reads userspace's 0x1234 (%#x)", val);
	tap_ok(next_out(&g.v, P_MARK, &val) && val == 2 && vcpu_get_msr1(&g.v, MSR_STAR) == 0x5678,
	       "WRMSR of STAR (writes allowed) stays in the kernel: KVM_GET_MSRS %#llx",
	       (unsigned long long)vcpu_get_msr1(&g.v, MSR_STAR));
	ok = msr_exit(&g.v, KVM_EXIT_X86_WRMSR, MSR_FS_BASE) && g.v.run->msr.data == 0xabc000;
	tap_ok(ok, "WRMSR of FS_BASE (write denied) exits with its data (%s)", exit_str(&g.v));
	g.v.run->msr.error = 1;
	tap_ok(next_out(&g.v, P_GP, &gp) && gp == 13 && next_out(&g.v, P_MARK, &val) && val == 3,
	       "userspace refuses it: #GP in the guest (%u)", gp);
	tap_ok(next_out(&g.v, P_VAL, &val) && val == (uint32_t)fs0,
	       "RDMSR of FS_BASE (reads allowed) in the kernel: %#x, unchanged", val);
	ok = msr_exit(&g.v, KVM_EXIT_X86_RDMSR, MSR_GS_BASE);
	tap_ok(ok, "RDMSR of GS_BASE (read denied) exits (%s)", exit_str(&g.v));
	g.v.run->msr.data = 0x77;
	tap_ok(next_out(&g.v, P_VAL, &val) && val == 0x77 && next_out(&g.v, P_MARK, &val) &&
		       val == 4, "the guest reads userspace's 0x77");

	filter_reset(KVM_MSR_FILTER_DEFAULT_ALLOW);
	if (set_filter(g.vm.fd).r)
		BAIL("KVM_X86_SET_MSR_FILTER");
	vcpu_get_sregs(&g.v, &s);
	tap_ok(next_out(&g.v, P_VAL, &val) && val == (uint32_t)s.gs.base,
	       "a new filter allows everything: GS_BASE is read in the kernel (%#x, %s)", val,
	       exit_str(&g.v));
	vcpu_run(&g.v);
	vcpu_get_sregs(&g.v, &s);
	tap_ok(is_out(&g.v, P_MARK, 1) && *io_data(&g.v) == 5 && s.fs.base == 0x1000,
	       "and FS_BASE is written in the kernel: KVM_GET_SREGS fs.base %#llx (%s)",
	       (unsigned long long)s.fs.base, exit_str(&g.v));

	user_space_msr(g.vm.fd, 0);
	filter_reset(KVM_MSR_FILTER_DEFAULT_ALLOW);
	filter_range(0, KVM_MSR_FILTER_READ, MSR_STAR, 1, &deny_star);
	if (set_filter(g.vm.fd).r)
		BAIL("KVM_X86_SET_MSR_FILTER");
	gp = 0;
	tap_ok(next_out(&g.v, P_GP, &gp) && gp == 13, "without FILTER exits a denied RDMSR of "
	       "STAR raises #GP (%u, %s)", gp, exit_str(&g.v));
	tap_ok(vcpu_get_msr1(&g.v, MSR_STAR) == 0x5678, "KVM_GET_MSRS of STAR is not filtered (%#llx)",
	       (unsigned long long)vcpu_get_msr1(&g.v, MSR_STAR));
	tap_ok(next_out(&g.v, P_MARK, &val) && val == 6 && (vcpu_run(&g.v), 1) &&
		       g.v.run->exit_reason == KVM_EXIT_HLT,
	       "the guest ends (%s)", exit_str(&g.v));
	tap_done();
}

// SPDX-License-Identifier: GPL-2.0
/*
 * MSRs of a vCPU: KVM_GET_MSRS / KVM_SET_MSRS and the guest's RDMSR / WRMSR
 * (arch/x86/kvm/msrs.c msr_io, kvm_{get,set}_msr_common, __kvm_set_msr).
 *
 * The vCPU has the supported CPUID (so the MSRs of advertised features are enabled).
 *  - Every MSR of KVM_GET_MSR_INDEX_LIST (but the paravirtual ones, which depend on the
 *    hypervisor CPUID leaves) that KVM_GET_MSRS reads can be written back with
 *    KVM_SET_MSRS and then reads the same (the save/restore contract of the list; the TSC
 *    moves on by itself and is only checked not to go back). The core MSRs (SYSENTER_*,
 *    STAR, LSTAR, CSTAR, KERNEL_GS_BASE, SYSCALL_MASK, TSC, PAT) are in the list.
 *  - The core MSRs take and return given values. SYSENTER_ESP/EIP stay below 4 GiB and
 *    SYSCALL_MASK/SYSENTER_CS small: KVM on AMD keeps only 32 bits of them unless the
 *    guest CPUID says Intel.
 *  - KVM_SET_MSRS stops at the first MSR it refuses (a non-canonical LSTAR, a PAT with a
 *    reserved memory type, an unknown MSR) and returns how many it set; KVM_GET_MSRS of
 *    an unknown MSR returns 0; 256 or more entries -> E2BIG.
 *  - A 64-bit guest WRMSRs STAR, LSTAR, SYSENTER_*, PAT and EFER.SCE: KVM_GET_MSRS and
 *    KVM_GET_SREGS see the values. Userspace then sets new values and the guest RDMSRs
 *    them; the TSC set by userspace is what RDTSC and RDMSR(TSC) continue from.
 *  - RDMSR/WRMSR of an unknown MSR injects #GP(0) at the instruction: the guest's IDT
 *    handler OUTs the error code and RIP. So do WRMSRs of a non-canonical LSTAR and of a
 *    PAT with a reserved type on Intel; on AMD those writes reach the (emulated) CPU
 *    without an intercept and QEMU's SVM does not check them.
 */
#include "lib/rkvm_test.h"

#define MSR_IA32_TSC 0x10
#define MSR_IA32_SYSENTER_CS 0x174
#define MSR_IA32_SYSENTER_ESP 0x175
#define MSR_IA32_SYSENTER_EIP 0x176
#define MSR_IA32_CR_PAT 0x277
#define MSR_EFER 0xc0000080
#define MSR_STAR 0xc0000081
#define MSR_LSTAR 0xc0000082
#define MSR_CSTAR 0xc0000083
#define MSR_SYSCALL_MASK 0xc0000084
#define MSR_KERNEL_GS_BASE 0xc0000102
#define MSR_UNKNOWN 0x12345678
#define MAX_IO_MSRS 256

#define LIST_GPA GUEST_DATA_GPA
#define INTEL_FLAG_GPA (GUEST_DATA_GPA + 0x1000)
#define PORT_PHASE 0x90
#define PORT_LO 0x91
#define PORT_HI 0x92
#define PORT_GP_ERR 0x98
#define PORT_GP_RIP 0x99

#define NONCANONICAL 0x0000800000000000ull
#define BAD_PAT 0x0007040600070402 /* entry 0 type 2: reserved */

/* What the guest writes in phase 1. */
#define G_SYSENTER_CS 0x10
#define G_SYSENTER_ESP 0x81234560u
#define G_SYSENTER_EIP 0x81000000u
#define G_STAR 0x0023001000000000
#define G_LSTAR 0xffffffff81600000
#define G_PAT 0x0001040500070406

GUEST_CODE(msr_guest, 64,
	/* Phase 1: WRMSR. */
	"mov $" XSTR(MSR_IA32_SYSENTER_CS) ", %ecx\n"
	"mov $" XSTR(G_SYSENTER_CS) ", %eax\n"
	"xor %edx, %edx\n"
	"wrmsr\n"
	"mov $" XSTR(MSR_IA32_SYSENTER_ESP) ", %ecx\n"
	"mov $" XSTR(G_SYSENTER_ESP) ", %eax\n"
	"wrmsr\n"
	"mov $" XSTR(MSR_IA32_SYSENTER_EIP) ", %ecx\n"
	"mov $" XSTR(G_SYSENTER_EIP) ", %eax\n"
	"wrmsr\n"
	"mov $" XSTR(MSR_STAR) ", %ecx\n"
	"mov $" XSTR(G_STAR) ", %rax\n"
	"mov %rax, %rdx\n"
	"shr $32, %rdx\n"
	"wrmsr\n"
	"mov $" XSTR(MSR_LSTAR) ", %ecx\n"
	"mov $" XSTR(G_LSTAR) ", %rax\n"
	"mov %rax, %rdx\n"
	"shr $32, %rdx\n"
	"wrmsr\n"
	"mov $" XSTR(MSR_IA32_CR_PAT) ", %ecx\n"
	"mov $" XSTR(G_PAT) ", %rax\n"
	"mov %rax, %rdx\n"
	"shr $32, %rdx\n"
	"wrmsr\n"
	"mov $" XSTR(MSR_EFER) ", %ecx\n"
	"rdmsr\n"
	"or $1, %eax\n"			/* SCE */
	"wrmsr\n"
	"mov $1, %al\n"
	"out %al, $" XSTR(PORT_PHASE) "\n"
	/* Phase 2: RDMSR of each MSR in the list (0-terminated), then TSC twice. */
	"mov $" XSTR(LIST_GPA) ", %rsi\n"
	"1: mov (%rsi), %ecx\n"
	"test %ecx, %ecx\n"
	"jz 2f\n"
	"rdmsr\n"
	"out %eax, $" XSTR(PORT_LO) "\n"
	"mov %edx, %eax\n"
	"out %eax, $" XSTR(PORT_HI) "\n"
	"add $4, %rsi\n"
	"jmp 1b\n"
	"2: rdtsc\n"
	"out %eax, $" XSTR(PORT_LO) "\n"
	"mov %edx, %eax\n"
	"out %eax, $" XSTR(PORT_HI) "\n"
	"mov $" XSTR(MSR_IA32_TSC) ", %ecx\n"
	"rdmsr\n"
	"out %eax, $" XSTR(PORT_LO) "\n"
	"mov %edx, %eax\n"
	"out %eax, $" XSTR(PORT_HI) "\n"
	"mov $2, %al\n"
	"out %al, $" XSTR(PORT_PHASE) "\n"
	/* Phase 3: each of these raises #GP; the handler skips the 2-byte instruction. */
	"mov $" XSTR(MSR_UNKNOWN) ", %ecx\n"
	"xor %eax, %eax\n"
	"xor %edx, %edx\n"
	"msr_guest_gp1: wrmsr\n"
	"msr_guest_gp2: rdmsr\n"
	"cmpl $0, " XSTR(INTEL_FLAG_GPA) "\n"
	"je 3f\n"
	"mov $" XSTR(MSR_LSTAR) ", %ecx\n"
	"xor %eax, %eax\n"
	"mov $0x8000, %edx\n"
	"msr_guest_gp3: wrmsr\n"
	"mov $" XSTR(MSR_IA32_CR_PAT) ", %ecx\n"
	"mov $" XSTR(BAD_PAT) ", %rax\n"
	"mov %rax, %rdx\n"
	"shr $32, %rdx\n"
	"msr_guest_gp4: wrmsr\n"
	"3: mov $3, %al\n"
	"out %al, $" XSTR(PORT_PHASE) "\n"
	"hlt\n"
	"msr_guest_gp_handler:\n"
	"pop %rax\n"
	"out %eax, $" XSTR(PORT_GP_ERR) "\n"
	"mov (%rsp), %rax\n"
	"out %eax, $" XSTR(PORT_GP_RIP) "\n"
	"addq $2, (%rsp)\n"
	"iretq\n");
extern const uint8_t msr_guest_gp1[], msr_guest_gp2[], msr_guest_gp3[], msr_guest_gp4[],
	msr_guest_gp_handler[];

#define ADDR(label) GUEST_ADDR(GUEST_CODE_GPA, msr_guest, label)

struct msrs {
	struct kvm_msrs hdr;
	struct kvm_msr_entry e[MAX_IO_MSRS + 1];
};

static struct msrs m;

static long set_msrs(int fd, int n)
{
	m.hdr.nmsrs = n;
	m.hdr.pad = 0;
	return ioctl(fd, KVM_SET_MSRS, &m);
}

static long get_msrs(int fd, int n)
{
	m.hdr.nmsrs = n;
	m.hdr.pad = 0;
	return ioctl(fd, KVM_GET_MSRS, &m);
}

static uint64_t get1(int fd, uint32_t index, long *r)
{
	memset(&m.e[0], 0, sizeof(m.e[0]));
	m.e[0].index = index;
	*r = get_msrs(fd, 1);
	return m.e[0].data;
}

static long set1(int fd, uint32_t index, uint64_t data)
{
	memset(&m.e[0], 0, sizeof(m.e[0]));
	m.e[0].index = index;
	m.e[0].data = data;
	return set_msrs(fd, 1);
}

static const uint32_t core[] = {
	MSR_IA32_SYSENTER_CS, MSR_IA32_SYSENTER_ESP, MSR_IA32_SYSENTER_EIP, MSR_STAR, MSR_LSTAR,
	MSR_CSTAR, MSR_SYSCALL_MASK, MSR_KERNEL_GS_BASE, MSR_IA32_TSC, MSR_IA32_CR_PAT,
};
#define N_CORE (int)(sizeof(core) / sizeof(core[0]))

/* Values the host sets: index and value (no TSC). */
static const struct {
	uint32_t index;
	uint64_t data;
} host_vals[] = {
	{ MSR_IA32_SYSENTER_CS, 0x33 },
	{ MSR_IA32_SYSENTER_ESP, 0x7fff1000 },
	{ MSR_IA32_SYSENTER_EIP, 0x80c01234 },
	{ MSR_STAR, 0x001b000800000000ull },
	{ MSR_LSTAR, 0xffffffff81a00000ull },
	{ MSR_CSTAR, 0xffffffff81b00000ull },
	{ MSR_SYSCALL_MASK, 0x47700 },
	{ MSR_KERNEL_GS_BASE, 0xffff888012345000ull },
	{ MSR_IA32_CR_PAT, 0x0007010600070106ull },
};
#define N_HOST_VALS (int)(sizeof(host_vals) / sizeof(host_vals[0]))

static struct kvm_msr_list *index_list(int sys_fd)
{
	struct kvm_msr_list hdr = { .nmsrs = 0 }, *l;

	ioctl(sys_fd, KVM_GET_MSR_INDEX_LIST, &hdr);
	l = calloc(1, sizeof(*l) + hdr.nmsrs * sizeof(uint32_t));
	if (!l)
		BAIL("calloc");
	l->nmsrs = hdr.nmsrs;
	if (ioctl(sys_fd, KVM_GET_MSR_INDEX_LIST, l))
		BAIL("KVM_GET_MSR_INDEX_LIST");
	return l;
}

static int in_list(struct kvm_msr_list *l, uint32_t index)
{
	uint32_t i;

	for (i = 0; i < l->nmsrs; i++)
		if (l->indices[i] == index)
			return 1;
	return 0;
}

/* The index list round trip: 2 checks. */
static void list_round_trip(struct guest *g, struct kvm_msr_list *l)
{
	int readable = 0, bad = 0, missing = 0, i;
	char diag[512] = "";
	size_t n = 0;

	for (i = 0; i < N_CORE; i++)
		if (!in_list(l, core[i])) {
			missing++;
			tap_diag("core MSR %#x is not in KVM_GET_MSR_INDEX_LIST", core[i]);
		}
	tap_ok(!missing, "the %d core MSRs are all in KVM_GET_MSR_INDEX_LIST (%u MSRs), %d missing",
	       N_CORE, l->nmsrs, missing);

	for (i = 0; i < (int)l->nmsrs; i++) {
		uint32_t idx = l->indices[i];
		uint64_t v1, v2;
		long r1, r2, r3;

		/*
		 * Paravirtual MSRs (KVM's 0x11, 0x12, 0x4b564dxx; Hyper-V's 0x400000xx) depend
		 * on the hypervisor CPUID leaves: not part of this contract.
		 */
		if (idx == 0x11 || idx == 0x12 || (idx >> 8) == 0x4b564d || (idx >> 8) == 0x400000)
			continue;
		v1 = get1(g->v.fd, idx, &r1);
		if (r1 != 1)
			continue;
		readable++;
		r2 = set1(g->v.fd, idx, v1);
		v2 = get1(g->v.fd, idx, &r3);
		if (r2 != 1 || r3 != 1 || (idx == MSR_IA32_TSC ? v2 < v1 : v2 != v1)) {
			bad++;
			if (n < sizeof(diag) - 64)
				n += snprintf(diag + n, sizeof(diag) - n, " %#x(%#llx: set %ld, get %ld "
					      "%#llx)", idx, (unsigned long long)v1, r2, r3,
					      (unsigned long long)v2);
		}
	}
	if (bad)
		tap_diag("round trip failures:%s", diag);
	tap_ok(!bad && readable >= N_CORE, "each of the %d readable listed MSRs takes back its value "
	       "(%d fail)", readable, bad);
}

/* Host values, partial failures, unknown MSRs: 9 checks. */
static void host_side(struct guest *g)
{
	uint64_t lstar, star, tsc;
	long r;
	int i, bad = 0;

	for (i = 0; i < N_HOST_VALS; i++) {
		m.e[i].index = host_vals[i].index;
		m.e[i].reserved = 0;
		m.e[i].data = host_vals[i].data;
	}
	r = set_msrs(g->v.fd, N_HOST_VALS);
	tap_ok(r == N_HOST_VALS, "KVM_SET_MSRS of %d core MSRs -> %d (got %ld)", N_HOST_VALS,
	       N_HOST_VALS, r);
	for (i = 0; i < N_HOST_VALS; i++)
		m.e[i].data = 0xdeadbeef;
	r = get_msrs(g->v.fd, N_HOST_VALS);
	for (i = 0; i < N_HOST_VALS; i++)
		if (m.e[i].data != host_vals[i].data) {
			bad++;
			tap_diag("MSR %#x reads %#llx, set %#llx", m.e[i].index,
				 (unsigned long long)m.e[i].data, (unsigned long long)host_vals[i].data);
		}
	tap_ok(r == N_HOST_VALS && !bad, "KVM_GET_MSRS returns them (ret %ld, %d differ)", r, bad);

	lstar = get1(g->v.fd, MSR_LSTAR, &r);
	star = get1(g->v.fd, MSR_STAR, &r);
	m.e[0].index = MSR_IA32_SYSENTER_CS;
	m.e[0].data = 0x44;
	m.e[1].index = MSR_LSTAR;
	m.e[1].data = NONCANONICAL;
	m.e[2].index = MSR_STAR;
	m.e[2].data = 0x1234;
	r = set_msrs(g->v.fd, 3);
	tap_ok(r == 1, "KVM_SET_MSRS {SYSENTER_CS, LSTAR non-canonical %#llx, STAR} -> 1 (got %ld)",
	       NONCANONICAL, r);
	tap_ok(get1(g->v.fd, MSR_IA32_SYSENTER_CS, &r) == 0x44 &&
		       get1(g->v.fd, MSR_LSTAR, &r) == lstar && get1(g->v.fd, MSR_STAR, &r) == star,
	       "only SYSENTER_CS changed; LSTAR and STAR keep their values");
	r = set1(g->v.fd, MSR_IA32_CR_PAT, BAD_PAT);
	tap_ok(r == 0 && get1(g->v.fd, MSR_IA32_CR_PAT, &r) == host_vals[8].data,
	       "KVM_SET_MSRS of PAT %#llx (memory type 2 is reserved) -> 0, PAT unchanged",
	       BAD_PAT);
	r = set1(g->v.fd, MSR_UNKNOWN, 1);
	tap_ok(r == 0, "KVM_SET_MSRS of unknown MSR %#x -> 0 (got %ld)", MSR_UNKNOWN, r);
	get1(g->v.fd, MSR_UNKNOWN, &r);
	tap_ok(r == 0, "KVM_GET_MSRS of unknown MSR %#x -> 0 (got %ld)", MSR_UNKNOWN, r);
	m.hdr.nmsrs = MAX_IO_MSRS;
	CHECK_ERRNO(g->v.fd, KVM_GET_MSRS, &m, E2BIG, "KVM_GET_MSRS with nmsrs %d", MAX_IO_MSRS);

	r = set1(g->v.fd, MSR_IA32_TSC, 1ull << 40);
	tsc = get1(g->v.fd, MSR_IA32_TSC, &r);
	tap_ok(tsc >= 1ull << 40 && tsc - (1ull << 40) < 1ull << 36,
	       "TSC set to 2^40 reads %#llx (not less, and less than 2^36 more)",
	       (unsigned long long)tsc);
}

static uint64_t out64(struct guest *g, int *ok)
{
	uint64_t v;

	vcpu_run(&g->v);
	*ok &= is_out(&g->v, PORT_LO, 4);
	v = io_out_value(&g->v);
	vcpu_run(&g->v);
	*ok &= is_out(&g->v, PORT_HI, 4);
	return v | io_out_value(&g->v) << 32;
}

/* The guest's RDMSR/WRMSR and #GPs: 10 checks. */
static void guest_side(struct guest *g)
{
	static const struct {
		uint32_t index;
		uint64_t data;
	} want[] = {
		{ MSR_IA32_SYSENTER_CS, G_SYSENTER_CS }, { MSR_IA32_SYSENTER_ESP, G_SYSENTER_ESP },
		{ MSR_IA32_SYSENTER_EIP, G_SYSENTER_EIP }, { MSR_STAR, G_STAR },
		{ MSR_LSTAR, G_LSTAR }, { MSR_IA32_CR_PAT, G_PAT },
	};
	const uint64_t gp_rip[] = { ADDR(msr_guest_gp1), ADDR(msr_guest_gp2),
				    ADDR(msr_guest_gp3), ADDR(msr_guest_gp4) };
	const char *gp_what[] = { "WRMSR of unknown MSR", "RDMSR of unknown MSR",
				  "WRMSR of non-canonical LSTAR", "WRMSR of PAT with type 2" };
	uint32_t *list = (uint32_t *)(g->mem + LIST_GPA);
	struct kvm_sregs s;
	uint64_t tsc0, t1, t2;
	int i, bad = 0, ok = 1, pass;
	long r;

	vcpu_set_long_mode(&g->v, g->mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
	idt_set_gate64(g->mem, 13, ADDR(msr_guest_gp_handler));
	vcpu_run(&g->v);
	tap_ok(is_out(&g->v, PORT_PHASE, 1) && *io_data(&g->v) == 1,
	       "the guest WRMSRs STAR, LSTAR, SYSENTER_*, PAT, EFER (got %s)", exit_str(&g->v));
	for (i = 0; i < (int)(sizeof(want) / sizeof(want[0])); i++) {
		uint64_t v = get1(g->v.fd, want[i].index, &r);

		if (r != 1 || v != want[i].data) {
			bad++;
			tap_diag("MSR %#x: KVM_GET_MSRS %ld %#llx, the guest wrote %#llx",
				 want[i].index, r, (unsigned long long)v,
				 (unsigned long long)want[i].data);
		}
	}
	tap_ok(!bad, "KVM_GET_MSRS sees the values the guest wrote (%d differ)", bad);
	vcpu_get_sregs(&g->v, &s);
	tap_ok(s.efer == (EFER_LME | EFER_LMA | EFER_SCE),
	       "KVM_GET_SREGS: EFER %#llx (want 0x501: the guest set SCE)",
	       (unsigned long long)s.efer);

	/* Phase 2: new values from the host, read by the guest. */
	for (i = 0; i < N_HOST_VALS; i++) {
		m.e[i].index = host_vals[i].index;
		m.e[i].data = host_vals[i].data;
		list[i] = host_vals[i].index;
	}
	list[N_HOST_VALS] = MSR_EFER;
	list[N_HOST_VALS + 1] = 0;
	if (set_msrs(g->v.fd, N_HOST_VALS) != N_HOST_VALS)
		BAIL("KVM_SET_MSRS");
	s.efer = EFER_LME | EFER_LMA;
	vcpu_set_sregs(&g->v, &s);
	tsc0 = 1ull << 41;
	if (set1(g->v.fd, MSR_IA32_TSC, tsc0) != 1)
		BAIL("KVM_SET_MSRS(TSC)");
	bad = 0;
	for (i = 0; i < N_HOST_VALS; i++) {
		uint64_t v = out64(g, &ok);

		if (v != host_vals[i].data) {
			bad++;
			tap_diag("guest RDMSR %#x = %#llx, host set %#llx", host_vals[i].index,
				 (unsigned long long)v, (unsigned long long)host_vals[i].data);
		}
	}
	tap_ok(ok && !bad, "the guest RDMSRs the %d values the host set (%d differ, exits %s)",
	       N_HOST_VALS, bad, ok ? "ok" : exit_str(&g->v));
	t1 = out64(g, &ok);
	tap_ok(ok && t1 == (EFER_LME | EFER_LMA), "the guest RDMSRs EFER %#llx (want 0x500, set "
	       "with KVM_SET_SREGS)", (unsigned long long)t1);
	t1 = out64(g, &ok);
	t2 = out64(g, &ok);
	pass = ok && t1 >= tsc0 && t2 >= t1 && t2 - tsc0 < 1ull << 36;
	tap_ok(pass || !host_tsc_stable() || !host_is_intel(),
	       "the guest's RDTSC %#llx and RDMSR(TSC) %#llx continue from the host's %#llx%s",
	       (unsigned long long)t1, (unsigned long long)t2, (unsigned long long)tsc0,
	       pass ? "" : TSC_FLAKE_SKIP);
	vcpu_run(&g->v);
	if (!is_out(&g->v, PORT_PHASE, 1) || *io_data(&g->v) != 2)
		BAIL("phase 2 did not end: %s", exit_str(&g->v));

	/* Phase 3: #GP. */
	*(uint32_t *)(g->mem + INTEL_FLAG_GPA) = host_is_intel();
	for (i = 0; i < 4; i++) {
		uint32_t err, rip;

		if (i >= 2 && !host_is_intel()) {
			tap_ok(1, "# SKIP %s: LSTAR and PAT writes reach the CPU, QEMU's SVM does "
			       "not check them", gp_what[i]);
			continue;
		}

		vcpu_run(&g->v);
		ok = is_out(&g->v, PORT_GP_ERR, 4);
		err = io_out_value(&g->v);
		if (ok) {
			vcpu_run(&g->v);
			ok = is_out(&g->v, PORT_GP_RIP, 4);
		}
		rip = io_out_value(&g->v);
		tap_ok(ok && err == 0 && rip == (uint32_t)gp_rip[i],
		       "%s: #GP(0) at the instruction (error code %#x, RIP %#x, want %#llx; %s)",
		       gp_what[i], err, rip, (unsigned long long)gp_rip[i], exit_str(&g->v));
		if (!ok)
			BAIL("no #GP handler exit");
	}
}

int main(void)
{
	struct kvm_msr_list *l;
	struct guest g;

	test_watchdog(60);
	g = guest_create();
	tap_plan(2 + 9 + 11);
	l = index_list(g.vm.sys_fd);
	list_round_trip(&g, l);
	host_side(&g);
	guest_load(g.mem, GUEST_CODE_GPA, msr_guest);
	guest_side(&g);
	vcpu_run(&g.v);
	if (is_out(&g.v, PORT_PHASE, 1) && *io_data(&g.v) == 3)
		vcpu_run(&g.v);
	tap_ok(g.v.run->exit_reason == KVM_EXIT_HLT,
	       "after the #GPs the guest OUTs its last marker and halts (last exit %s)",
	       exit_str(&g.v));
	tap_done();
}

// SPDX-License-Identifier: GPL-2.0
/*
 * Benchmark (not a test): the cost of VM exits, measured with the guest's
 * CLOCK_MONOTONIC. Under Bochs that clock counts emulated instructions, so the numbers
 * compare path lengths of two hypervisors in the same boot, not real-world speed.
 *
 *   io              N OUTs, each a round trip to this VMM (exit to userspace and back)
 *   mmio            N writes to memory no slot backs, each a KVM_EXIT_MMIO round trip
 *   mmio_coalesced  the same writes in a coalesced MMIO zone: no exit to userspace
 *   cpuid           N CPUIDs, each handled inside the hypervisor, then one OUT
 *   msr             N RDMSRs of IA32_APIC_BASE, each handled inside the hypervisor
 *   hlt_timer       N HLTs, each ended by the local APIC's one-shot timer (1 us) of an
 *                   in-kernel APIC: the timer's start and EOI, the halt and the wake-up
 *   hlt_tscdeadline the same in x2APIC mode with the TSC-deadline timer (1000 cycles),
 *                   started and EOI'd with WRMSR, as Linux guests do
 *   ept_first_touch a 64-bit guest writes TOUCH_PAGES pages it never touched, per page
 *   dirty_round     with dirty logging (manual protect): the guest writes the same
 *                   pages again, then KVM_GET_DIRTY_LOG and KVM_CLEAR_DIRTY_LOG of all of
 *                   them, per page (the average of DIRTY_ROUNDS rounds after the first)
 *   create          a VM, a vCPU and a memslot, to the guest's first exit (HLT); then
 *                   its steps (create_vm, create_slot, create_vcpu, create_run)
 *   slot_add_N      adding N one-page memslots to a VM, per slot (N = 1 to 32000)
 *   slot_del_N      deleting them again, per slot
 *   vcpu_create_N   creating N vCPUs in one VM, per vCPU (N = 1 to 1024, KVM_CAP_MAX_VCPUS)
 *   mem_vm          kernel memory per VM charged to the caller's memory cgroup
 *                   (MEM_VMS VMs with nothing in them)
 *   mem_vcpu        the same per vCPU (MEM_VCPUS vCPUs in one VM, each run once)
 *
 * Prints one line per kind: "bench <kind> <count> <ns per item>". For the exits, when the
 * CPU is the patched Bochs (tools/bench/bochs-patches/0002-vmx-instruction-count.patch),
 * also "bench <kind>_vmx <count> <VMX instructions per item>": the VMXON, VMXOFF, VMCLEAR,
 * VMPTRLD, VMREAD, VMWRITE, INVEPT and INVVPID the hypervisor ran, which Bochs's clock
 * charges one instruction each and real CPUs hundreds of cycles.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <sys/resource.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include "lib/rkvm_test.h"

#define CODE_GPA 0x1000
#define N 5000

/* mov cx, N ; loop: out 0xf1, al ; loop loop ; hlt */
static const uint8_t io_code[] = {
	0xb9, N & 0xff, N >> 8, 0xe6, 0xf1, 0xe2, 0xfc, 0xf4,
};

/* mov si, N ; loop: xor eax, eax ; cpuid ; dec si ; jnz loop ; out 0xf1, al ; hlt */
static const uint8_t cpuid_code[] = {
	0xbe, N & 0xff, N >> 8, 0x66, 0x31, 0xc0, 0x0f, 0xa2, 0x4e, 0x75, 0xf8, 0xe6, 0xf1, 0xf4,
};

/* mov si, N ; mov ecx, 0x1b ; loop: rdmsr ; dec si ; jnz loop ; out 0xf1, al ; hlt */
static const uint8_t msr_code[] = {
	0xbe, N & 0xff, N >> 8, 0x66, 0xb9, 0x1b, 0, 0, 0, 0x0f, 0x32, 0x4e, 0x75, 0xfb,
	0xe6, 0xf1, 0xf4,
};

#define MMIO_GPA 0x20000
/* mov ax, 0x2000 ; mov ds, ax ; mov cx, N ; loop: mov [0], al ; loop loop ; hlt */
static const uint8_t mmio_code[] = {
	0xb8, 0x00, 0x20, 0x8e, 0xd8, 0xb9, N & 0xff, N >> 8, 0xa2, 0x00, 0x00, 0xe2, 0xfb, 0xf4,
};

static const uint8_t hlt_code[] = { 0xf4 };

#define APIC "0xfee00"
/* 32-bit, split irqchip: N one-shot timer periods of 1 us, each waited for in HLT. */
GUEST_CODE(hlt_timer_guest, 32,
	"movl $0x1ff, " APIC "0f0\n"
	"movl $0xb, " APIC "3e0\n"
	"movl $0x40, " APIC "320\n"
	"mov $" XSTR(N) ", %esi\n"
	"1: movl $1000, " APIC "380\n"
	"sti\n"
	"hlt\n"
	"cli\n"
	"dec %esi\n"
	"jnz 1b\n"
	"out %al, $0xf1\n"
	"hlt\n"
	"timer_h:\n"
	"movl $0, " APIC "0b0\n"
	"iret\n");
extern const uint8_t timer_h[];

/* The same with x2APIC and the TSC-deadline timer, 1000 TSC cycles ahead (as Linux
 * guests program their timer): WRMSRs instead of MMIO writes. */
GUEST_CODE(hlt_tsc_guest, 32,
	"mov $0x1b, %ecx\n"
	"rdmsr\n"
	"or $0x400, %eax\n"
	"wrmsr\n"
	"mov $0x80f, %ecx\n"
	"mov $0x1ff, %eax\n"
	"xor %edx, %edx\n"
	"wrmsr\n"
	"mov $0x832, %ecx\n"
	"mov $0x40040, %eax\n"
	"wrmsr\n"
	"mov $" XSTR(N) ", %esi\n"
	"1: rdtsc\n"
	"add $1000, %eax\n"
	"adc $0, %edx\n"
	"mov $0x6e0, %ecx\n"
	"wrmsr\n"
	"sti\n"
	"hlt\n"
	"cli\n"
	"dec %esi\n"
	"jnz 1b\n"
	"out %al, $0xf1\n"
	"hlt\n"
	"tsc_h:\n"
	"push %eax\n"
	"push %ecx\n"
	"push %edx\n"
	"mov $0x80b, %ecx\n"
	"xor %eax, %eax\n"
	"xor %edx, %edx\n"
	"wrmsr\n"
	"pop %edx\n"
	"pop %ecx\n"
	"pop %eax\n"
	"iret\n");
extern const uint8_t tsc_h[];

#define TOUCH_GPA 0x40000000ull
#define TOUCH_PAGES 2048
#define DIRTY_ROUNDS 5
/* 64-bit: writes one byte in each page, then an OUT; again from the start. */
GUEST_CODE(touch_guest, 64,
	"2: mov $" XSTR(TOUCH_GPA) ", %rdi\n"
	"mov $" XSTR(TOUCH_PAGES) ", %ecx\n"
	"1: movb $1, (%rdi)\n"
	"add $4096, %rdi\n"
	"loop 1b\n"
	"out %al, $0xf1\n"
	"jmp 2b\n");

/* The patched Bochs's count of VMX instructions run on CPU 0 (where main() pins us). */
#define MSR_BOCHS_VMX_INSNS 0x42580001

static long long vmx_insns(void)
{
	uint64_t v;
	int fd = open("/dev/cpu/0/msr", O_RDONLY);
	long long r = -1;

	if (fd >= 0 && pread(fd, &v, sizeof(v), MSR_BOCHS_VMX_INSNS) == sizeof(v))
		r = (long long)v;
	if (fd >= 0)
		close(fd);
	return r;
}

#define MEM_VMS 64
#define MEM_VCPUS 128

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static void vm_close(struct vm *vm, struct vcpu *v, void *mem)
{
	munmap(v->run, v->run_size);
	close(v->fd);
	close(vm->fd);
	close(vm->sys_fd);
	munmap(mem, 0x10000);
}

/* Runs CODE until an exit other than PASS (one of them per item), which must be HLT. */
static void run_one(const char *kind, const uint8_t *code, size_t len, uint32_t pass, int items,
		    int coalesce)
{
	struct vm vm = vm_create();
	uint8_t *mem;
	struct vcpu v = real_mode_vcpu(&vm, CODE_GPA, code, len, &mem);
	struct kvm_coalesced_mmio_ring *ring =
		(void *)((char *)v.run + KVM_COALESCED_MMIO_PAGE_OFFSET * 4096);
	uint64_t t0, t1;
	long long vmx0, vmx1;

	if (coalesce) {
		struct kvm_coalesced_mmio_zone z = { .addr = MMIO_GPA, .size = 4 };

		if (ioctl(vm.fd, KVM_REGISTER_COALESCED_MMIO, &z))
			BAIL("KVM_REGISTER_COALESCED_MMIO");
	}
	vmx0 = vmx_insns();
	t0 = now_ns();
	for (;;) {
		if (ioctl(v.fd, KVM_RUN, 0))
			BAIL("KVM_RUN");
		/* A full ring makes writes exit as plain MMIO: empty it, as a VMM does. */
		if (coalesce)
			__atomic_store_n(&ring->first, __atomic_load_n(&ring->last, __ATOMIC_ACQUIRE),
					 __ATOMIC_RELEASE);
		if (v.run->exit_reason != pass)
			break;
	}
	t1 = now_ns();
	vmx1 = vmx_insns();
	if (v.run->exit_reason != KVM_EXIT_HLT)
		BAIL("%s: unexpected exit %s", kind, exit_name(v.run->exit_reason));
	printf("bench %s %d %llu\n", kind, items, (unsigned long long)((t1 - t0) / items));
	/* (Other CPUs, QEMU's included, read the MSR as 0 or not at all.) */
	if (vmx0 >= 0 && vmx1 > vmx0)
		printf("bench %s_vmx %d %.1f\n", kind, items, (double)(vmx1 - vmx0) / items);
	print_vm_stats(vm.fd, "# ");
	vm_close(&vm, &v, mem);
}

/* HLTs ended by the in-kernel local APIC's timer: GUEST (whose handler is HANDLER). */
static void bench_hlt(const char *kind, const uint8_t *guest, size_t len, uint64_t handler)
{
	struct guest g = guest_create_split();
	uint64_t t0, t1;

	memcpy(g.mem + GUEST_CODE_GPA, guest, len);
	vcpu_set_protected_mode(&g.v, g.mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
	idt_set_gate32(g.mem, 0x40, handler);
	t0 = now_ns();
	if (ioctl(g.v.fd, KVM_RUN, 0) || !is_out(&g.v, 0xf1, 1))
		BAIL("%s: %s", kind, exit_str(&g.v));
	t1 = now_ns();
	printf("bench %s %d %llu\n", kind, N, (unsigned long long)((t1 - t0) / N));
	print_vm_stats(g.vm.fd, "# ");
	guest_destroy(&g);
}

/* EPT first touch, then rounds of dirty logging over the same pages. */
static void bench_touch(void)
{
	struct kvm_enable_cap manual = { .cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
					 .args = { KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE } };
	static uint64_t bitmap[TOUCH_PAGES / 64];
	struct kvm_dirty_log get = { .slot = 1, .dirty_bitmap = bitmap };
	struct kvm_clear_dirty_log clear = { .slot = 1, .num_pages = TOUCH_PAGES,
					     .dirty_bitmap = bitmap };
	struct guest g = guest_create();
	uint64_t t0, t1;
	void *slot;

	if (ioctl(g.vm.fd, KVM_ENABLE_CAP, &manual))
		BAIL("KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2");
	slot = vm_add_memory(&g.vm, 1, TOUCH_GPA, TOUCH_PAGES * 4096ull, KVM_MEM_LOG_DIRTY_PAGES);
	guest_load(g.mem, GUEST_CODE_GPA, touch_guest);
	vcpu_set_long_mode(&g.v, g.mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
	t0 = now_ns();
	for (int r = 0; r <= DIRTY_ROUNDS; r++) {
		if (r == 1)
			t0 = now_ns();
		if (ioctl(g.v.fd, KVM_RUN, 0) || !is_out(&g.v, 0xf1, 1))
			BAIL("touch: %s", exit_str(&g.v));
		if (r == 0) {
			t1 = now_ns();
			printf("bench ept_first_touch %d %llu\n", TOUCH_PAGES,
			       (unsigned long long)((t1 - t0) / TOUCH_PAGES));
		}
		if (ioctl(g.vm.fd, KVM_GET_DIRTY_LOG, &get) || ioctl(g.vm.fd, KVM_CLEAR_DIRTY_LOG, &clear))
			BAIL("dirty log round %d", r);
		if (r == 0)
			continue;
		for (int i = 0; i < TOUCH_PAGES / 64; i++)
			if (bitmap[i] != ~0ull)
				BAIL("dirty log round %d: word %d is %#llx", r, i,
				     (unsigned long long)bitmap[i]);
	}
	t1 = now_ns();
	printf("bench dirty_round %d %llu\n", TOUCH_PAGES,
	       (unsigned long long)((t1 - t0) / DIRTY_ROUNDS / TOUCH_PAGES));
	munmap(slot, TOUCH_PAGES * 4096ull);
	guest_destroy(&g);
}

/*
 * VM creation to the first guest instruction's exit, ROUNDS times; then its steps:
 * create_vm (open the device, KVM_CREATE_VM), create_slot (a 64 KiB memslot),
 * create_vcpu (KVM_CREATE_VCPU, the run page mapped, the registers set), create_run
 * (the first KVM_RUN, to HLT).
 */
static void bench_create(int rounds)
{
	uint64_t total = 0, step[4] = { 0 };
	static const char *const steps[4] = { "vm", "slot", "vcpu", "run" };

	for (int i = 0; i < rounds; i++) {
		uint64_t t0 = now_ns(), t1, t2, t3;
		struct vm vm = vm_create();
		void *mem;
		struct vcpu v;

		t1 = now_ns();
		ioctl(vm.fd, KVM_SET_TSS_ADDR, 0xfffbd000);
		mem = vm_add_memory(&vm, 0, 0, 0x10000, 0);
		memcpy((uint8_t *)mem + CODE_GPA, hlt_code, sizeof(hlt_code));
		t2 = now_ns();
		v = vcpu_create(&vm, 0);
		vcpu_set_real_mode(&v, CODE_GPA);
		t3 = now_ns();
		if (ioctl(v.fd, KVM_RUN, 0) || v.run->exit_reason != KVM_EXIT_HLT)
			BAIL("create: the first run did not end in HLT (%s)", exit_name(v.run->exit_reason));
		total += now_ns() - t0;
		step[0] += t1 - t0;
		step[1] += t2 - t1;
		step[2] += t3 - t2;
		step[3] += now_ns() - t3;
		vm_close(&vm, &v, mem);
	}
	printf("bench create %d %llu\n", rounds, (unsigned long long)(total / rounds));
	for (int i = 0; i < 4; i++)
		printf("bench create_%s %d %llu\n", steps[i], rounds,
		       (unsigned long long)(step[i] / rounds));
}

/* Slots 0..N-1 as R says (one page every other page from 4 GiB, or deleted). */
static void set_slots(int vm_fd, struct kvm_userspace_memory_region *r, int n, const char *what)
{
	for (int i = 0; i < n; i++) {
		r->slot = i;
		r->guest_phys_addr = 0x100000000ull + i * 8192ull;
		if (ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, r))
			BAIL("%s slot %d", what, i);
	}
}

/* Adding and deleting N one-page memslots (all over the same host page). */
static void bench_slots(int n)
{
	struct vm vm = vm_create();
	void *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct kvm_userspace_memory_region r = { .memory_size = 4096, .userspace_addr = (uintptr_t)page };
	uint64_t t0, t1, t2;

	if (page == MAP_FAILED)
		BAIL("mmap");
	t0 = now_ns();
	set_slots(vm.fd, &r, n, "add");
	t1 = now_ns();
	r.memory_size = 0;
	set_slots(vm.fd, &r, n, "delete");
	t2 = now_ns();
	printf("bench slot_add_%d %d %llu\n", n, n, (unsigned long long)((t1 - t0) / n));
	printf("bench slot_del_%d %d %llu\n", n, n, (unsigned long long)((t2 - t1) / n));
	close(vm.fd);
	close(vm.sys_fd);
	munmap(page, 4096);
}

/* Creating N vCPUs in a new VM (KVM_CREATE_VCPU and the run page's mmap), per vCPU. */
static void bench_vcpus(int n)
{
	struct vm vm = vm_create();
	struct vcpu *v = calloc(n, sizeof(*v));
	uint64_t t0, t1;

	if (!v)
		BAIL("calloc");
	t0 = now_ns();
	for (int i = 0; i < n; i++)
		v[i] = vcpu_create(&vm, i);
	t1 = now_ns();
	printf("bench vcpu_create_%d %d %llu\n", n, n, (unsigned long long)((t1 - t0) / n));
	for (int i = 0; i < n; i++) {
		munmap(v[i].run, v[i].run_size);
		close(v[i].fd);
	}
	free(v);
	close(vm.fd);
	close(vm.sys_fd);
}

/* The cgroup v2 directory the benchmark runs its memory rows in (empty: none), its root,
 * and whether this program mounted that. */
static char memcg[256];
static const char *memcg_root;
static int memcg_mounted;

static int write_str(const char *path, const char *v)
{
	int fd = open(path, O_WRONLY), ok;

	if (fd < 0)
		return -1;
	ok = write(fd, v, strlen(v)) == (ssize_t)strlen(v);
	close(fd);
	return ok ? 0 : -1;
}

/* Moves this process into a new memory cgroup; leaves memcg empty if it cannot. */
static void memcg_enter(void)
{
	const char *root = "/sys/fs/cgroup";
	char path[300], pid[32];

	if (access("/sys/fs/cgroup/cgroup.controllers", R_OK)) {
		root = "/tmp/rkvm-bench-cgroup";
		mkdir(root, 0755);
		if (mount("none", root, "cgroup2", 0, NULL)) {
			printf("# memory rows: cannot mount cgroup2 (errno %d)\n", errno);
			return;
		}
		memcg_mounted = 1;
	}
	memcg_root = root;
	snprintf(path, sizeof(path), "%s/cgroup.subtree_control", root);
	if (write_str(path, "+memory")) {
		printf("# memory rows: no memory controller in %s (errno %d)\n", root, errno);
		return;
	}
	snprintf(memcg, sizeof(memcg), "%s/rkvm-bench", root);
	mkdir(memcg, 0755);
	snprintf(path, sizeof(path), "%s/cgroup.procs", memcg);
	snprintf(pid, sizeof(pid), "%d", getpid());
	if (write_str(path, pid)) {
		printf("# memory rows: cannot join %s (errno %d)\n", memcg, errno);
		memcg[0] = 0;
	}
}

/* Back to the root cgroup; the benchmark's cgroup and mount go. */
static void memcg_leave(void)
{
	char path[300], pid[32];

	if (memcg[0]) {
		snprintf(path, sizeof(path), "%s/cgroup.procs", memcg_root);
		snprintf(pid, sizeof(pid), "%d", getpid());
		write_str(path, pid);
		rmdir(memcg);
	}
	if (memcg_mounted)
		umount(memcg_root);
}

/* Bytes charged to this process's memory cgroup (-1 without one). */
static long memcg_bytes(void)
{
	char path[300];

	if (!memcg[0])
		return -1;
	snprintf(path, sizeof(path), "%s/memory.current", memcg);
	return read_long_file(path);
}

/*
 * Kernel memory per VM and per vCPU: what the hypervisor charges to the caller's memory
 * cgroup (both KVM and rkvm allocate with __GFP_ACCOUNT), MEM_VMS empty VMs, then
 * MEM_VCPUS vCPUs in one VM, each run once to a HLT so that what is allocated lazily
 * counts too. A cgroup charges in batches of up to 64 pages per CPU, so the figure is
 * within 64 pages * CPUs / count of the truth.
 */
static void bench_memory(void)
{
	static struct vm vms[MEM_VMS];
	static struct vcpu vcpus[MEM_VCPUS];
	long before, after;
	void *mem;

	memcg_enter();
	before = memcg_bytes();
	for (int i = 0; i < MEM_VMS; i++)
		vms[i] = vm_create();
	after = memcg_bytes();
	if (before < 0 || after < 0)
		printf("bench mem_vm %d -\n", MEM_VMS);
	else
		printf("bench mem_vm %d %ld\n", MEM_VMS, (after - before) / MEM_VMS);
	ioctl(vms[0].fd, KVM_SET_TSS_ADDR, 0xfffbd000);
	mem = vm_add_memory(&vms[0], 0, 0, 0x10000, 0);
	memcpy((uint8_t *)mem + CODE_GPA, hlt_code, sizeof(hlt_code));
	before = memcg_bytes();
	for (int i = 0; i < MEM_VCPUS; i++) {
		vcpus[i] = vcpu_create(&vms[0], i);
		vcpu_set_real_mode(&vcpus[i], CODE_GPA);
		if (ioctl(vcpus[i].fd, KVM_RUN, 0) || vcpus[i].run->exit_reason != KVM_EXIT_HLT)
			BAIL("mem_vcpu: vCPU %d did not halt (%s)", i,
			     exit_name(vcpus[i].run->exit_reason));
	}
	after = memcg_bytes();
	if (before < 0 || after < 0)
		printf("bench mem_vcpu %d -\n", MEM_VCPUS);
	else
		printf("bench mem_vcpu %d %ld\n", MEM_VCPUS, (after - before) / MEM_VCPUS);
	for (int i = 0; i < MEM_VCPUS; i++) {
		munmap(vcpus[i].run, vcpus[i].run_size);
		close(vcpus[i].fd);
	}
	for (int i = 0; i < MEM_VMS; i++) {
		close(vms[i].fd);
		close(vms[i].sys_fd);
	}
	munmap(mem, 0x10000);
	memcg_leave();
}

int main(void)
{
	cpu_set_t cpu0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	CPU_ZERO(&cpu0);
	CPU_SET(0, &cpu0);
	sched_setaffinity(0, sizeof(cpu0), &cpu0);
	test_watchdog(600);
	run_one("io", io_code, sizeof(io_code), KVM_EXIT_IO, N, 0);
	run_one("mmio", mmio_code, sizeof(mmio_code), KVM_EXIT_MMIO, N, 0);
	run_one("mmio_coalesced", mmio_code, sizeof(mmio_code), KVM_EXIT_MMIO, N, 1);
	run_one("cpuid", cpuid_code, sizeof(cpuid_code), KVM_EXIT_IO, N, 0);
	run_one("msr", msr_code, sizeof(msr_code), KVM_EXIT_IO, N, 0);
	bench_hlt("hlt_timer", hlt_timer_guest, hlt_timer_guest_end - hlt_timer_guest,
		  GUEST_ADDR(GUEST_CODE_GPA, hlt_timer_guest, timer_h));
	bench_hlt("hlt_tscdeadline", hlt_tsc_guest, hlt_tsc_guest_end - hlt_tsc_guest,
		  GUEST_ADDR(GUEST_CODE_GPA, hlt_tsc_guest, tsc_h));
	bench_touch();
	bench_create(20);
	for (int n = 1; n <= 10000; n *= 10)
		bench_slots(n);
	bench_slots(32000);
	/* Up to the most vCPUs a VM may have: one fd each, beyond the default limit of 1024. */
	{
		struct rlimit fds;
		int sys = kvm_open(), max = ioctl(sys, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS);

		close(sys);
		if (!getrlimit(RLIMIT_NOFILE, &fds)) {
			fds.rlim_cur = fds.rlim_max;
			setrlimit(RLIMIT_NOFILE, &fds);
		}
		for (int n = 1; n <= max && n <= 1024; n *= 4)
			bench_vcpus(n);
	}
	bench_memory();
	return 0;
}

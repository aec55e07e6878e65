// SPDX-License-Identifier: GPL-2.0
/*
 * fuzz_ioctl: a seeded fuzzer of the whole KVM ioctl tree (system, VM and vCPU fds).
 *
 *   fuzz_ioctl [-s SEED] [-n ITERATIONS] [-t SECONDS] [-j THREADS] [-p EVERY] [-v]
 *
 * The campaign is a series of epochs. Each epoch builds a "world" (the device fd, two VMs
 * with a low memory slot, a few vCPUs, eventfds, a pool of backing memory) and lets
 * THREADS worker threads (default 3) call random ioctls on the shared fds, while a runner
 * thread keeps KVM_RUN-ning a small protected-mode guest that reads and writes memory all
 * over the churned memory slots. Workers also close fds, dup2 other files over them, map
 * and unmap the run and coalesced-MMIO pages, and remap or mprotect the memory behind the
 * memory slots. At the end of an epoch every thread is joined and every fd and mapping of
 * the world dropped.
 *
 * Arguments are valid values (memory slots backed by the pool, the supported CPUID, MSR
 * indices from the index lists), mutated valid ones (bit flips, edge values, huge counts,
 * unaligned or very high addresses), random bytes, and bad pointers (NULL, kernel,
 * PROT_NONE, read-only, a struct whose tail is in a guard page).
 *
 * Every KVM_RUN is bounded by a per-thread timer signal; a watchdog thread and alarm()
 * end the process if an ioctl never returns. Each thread draws from its own PRNG seeded
 * from (seed, epoch, thread): the operations a thread tries are fixed by the seed, the
 * interleaving is not (-j 1 -p 1 -v gives a replayable log of one thread).
 *
 * Without -n and -t it is a TAP test: a short fixed-seed campaign, then checks that must
 * hold on KVM and rkvm alike: the process survived, a fresh VM still runs a small guest
 * to its IO exit and HLT, a guest cannot write through a memory slot backed by a
 * read-only mapping of a sealed memfd, and the kernel log shows no splat since the start.
 */
#include "lib/fuzz.h"

#include <limits.h>
#include <linux/memfd.h>
#include <sys/eventfd.h>
#include <sys/wait.h>

#define NVM 2
#define NVCPU 4
#define NSLOT 8
#define NEFD 4
#define CHUNK (1u << 20)		/* backing memory per memory slot */
#define POOL_SIZE ((size_t)NVM * NSLOT * CHUNK)
#define TBUF_SIZE 0x10000		/* per-thread argument buffer */
#define EPOCH_OPS 400			/* operations per worker thread and epoch */
#define RUNNER_GPA_BASE 0x100000	/* the churned slots live above the low 1 MiB */

/* The fixed campaign of `make check` (Bochs: about 30 s on kvm-intel). */
#define TAP_SEED 0x2026
#define TAP_OPS 20000

static struct fuzz_opts opts = { .seed = TAP_SEED, .threads = 3, .tap = 1 };

/*
 * The runner's guest (32-bit, flat, no paging): a pseudo-random walk that reads, adds and
 * writes back dwords at EDI + (LCG(ESI) & EBP), with an OUT to port 0x80 every EDX steps.
 */
GUEST_CODE(runner_guest, 32,
	"1: imul $1103515245, %esi, %esi\n"
	"add $12345, %esi\n"
	"mov %esi, %ebx\n"
	"and %ebp, %ebx\n"
	"add %edi, %ebx\n"
	"mov (%ebx), %eax\n"
	"add %esi, %eax\n"
	"mov %eax, (%ebx)\n"
	"dec %ecx\n"
	"jnz 1b\n"
	"out %eax, $0x80\n"
	"mov %edx, %ecx\n"
	"jmp 1b\n");

/* The invariant guest (real mode): OUT 0x42 to port 0x10, then HLT. */
GUEST_CODE(check_guest, 16,
	"mov $0x42, %al\n"
	"out %al, $0x10\n"
	"hlt\n");

/* A guest that writes a pattern to GPA 0x200000 (the read-only-backed slot), then HLTs. */
GUEST_CODE(ro_guest, 32,
	"movl $0xdeadbeef, 0x200000\n"
	"movl $0xdeadbeef, 0x200ffc\n"
	"out %al, $0x11\n"
	"hlt\n");

struct slot {
	uint64_t gpa, size;
	uint8_t *hva;
	uint32_t flags;
	int used;
};

/* One epoch's shared state; threads race on it on purpose (plain int loads and stores). */
static struct world {
	int sys_fd;
	int vm_fd[NVM];
	int vcpu_fd[NVM][NVCPU];
	struct kvm_run *run[NVM][NVCPU];
	struct slot slots[NVM][NSLOT];
	int efd[NEFD];
	volatile int stop;
} W;

/* Learned once from the device. */
static uint8_t *pool;
static struct kvm_cpuid2 *cpuid;
static uint32_t msr_idx[512], feat_idx[128];
static int n_msr, n_feat, run_size, xsave2_size, max_vcpu_id;
static long total_ops, total_runs, total_exits, total_epochs;
static long start_ms;
/* Every run-page mapping of the epoch, unmapped when it ends. */
static void *run_maps[4096];
static int n_run_maps;

static void *map_run(int fd)
{
	void *run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	int i;

	if (run == MAP_FAILED)
		return NULL;
	i = __atomic_fetch_add(&n_run_maps, 1, __ATOMIC_RELAXED);
	if (i < (int)(sizeof(run_maps) / sizeof(run_maps[0])))
		run_maps[i] = run;
	return run;
}

struct tctx {
	int id;
	struct rng r;
	uint8_t *buf;		/* TBUF_SIZE bytes, then a PROT_NONE page */
	long ops;
	char what[160];
};

/* ---- Logging and the ioctl wrapper ------------------------------------------------------- */

static void vlog(struct tctx *t, const char *fmt, ...)
{
	va_list ap;

	if (!opts.verbose)
		return;
	printf("T%d #%ld ", t->id, t->ops);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
}

static long xio(struct tctx *t, int fd, unsigned long req, unsigned long arg, const char *name)
{
	long ret;
	int err;

	snprintf(t->what, sizeof(t->what), "%s fd %d", name, fd);
	fuzz_doing[t->id] = t->what;
	errno = 0;
	ret = ioctl(fd, req, arg);
	err = ret < 0 ? errno : 0;
	fuzz_count(ret, err);
	if (opts.verbose)
		printf("T%d #%ld %s fd %d arg %#lx -> %ld%s%s\n", t->id, t->ops, name, fd, arg,
		       ret, err ? " " : "", err ? errno_name(err) : "");
	errno = err;
	return ret;
}

#define IO(t, fd, req, arg) xio(t, fd, req, (unsigned long)(arg), #req)

/* ---- Picking fds and arguments ------------------------------------------------------------- */

/* A random KVMIO ioctl number, never KVM_RUN or KVM_SET_SIGNAL_MASK (an unbounded run). */
static unsigned long rnd_req(struct tctx *t)
{
	unsigned long nr = rnd(&t->r, 256);

	if (nr == 0x80 || nr == 0x8b)
		nr = 0xff;
	return _IOC(rnd(&t->r, 4), KVMIO, nr, chance(&t->r, 50) ? rnd(&t->r, 0x200) : 8ul << rnd(&t->r, 6));
}

static int rnd_fd(struct tctx *t)
{
	return 3 + rnd(&t->r, 40);
}

static int pick_vm(struct tctx *t, int *vmi)
{
	int i = rnd(&t->r, NVM);

	if (vmi)
		*vmi = i;
	return chance(&t->r, 3) ? rnd_fd(t) : W.vm_fd[i];
}

static int pick_vcpu(struct tctx *t, int *vmi, int *ci)
{
	int i = rnd(&t->r, NVM), c = rnd(&t->r, NVCPU), k;

	/* Prefer a vCPU that exists (the first from the drawn one on), most of the time. */
	for (k = 0; k < NVM * NVCPU && W.vcpu_fd[i][c] < 0 && chance(&t->r, 90); k++) {
		c = (c + 1) % NVCPU;
		if (!c)
			i = (i + 1) % NVM;
	}
	if (vmi)
		*vmi = i;
	if (ci)
		*ci = c;
	return chance(&t->r, 3) ? rnd_fd(t) : W.vcpu_fd[i][c];
}

/*
 * The argument pointer for a struct of SIZE bytes whose good contents are at VALID (in the
 * thread buffer): mostly VALID, sometimes a bad pointer, sometimes a copy whose tail
 * crosses into the guard page.
 */
static void *argp(struct tctx *t, void *valid, size_t size)
{
	int c = rnd(&t->r, 100);

	if (c < 88)
		return valid;
	if (c < 96)
		return bad_ptr(&t->r);
	if (size > 1 && size <= TBUF_SIZE / 2) {
		size_t keep = 1 + rnd(&t->r, size - 1);
		uint8_t *p = t->buf + TBUF_SIZE - keep;

		memmove(p, valid, keep);
		return p;
	}
	return valid;
}

/* How to build a struct: 0 = valid, 1 = valid then mutated, 2 = random bytes. */
static int style(struct tctx *t)
{
	int c = rnd(&t->r, 100);

	return c < 55 ? 0 : c < 90 ? 1 : 2;
}

/* Applies style S to an already valid struct. */
static void shape(struct tctx *t, int s, void *p, size_t size)
{
	if (s == 1)
		mutate(&t->r, p, size);
	else if (s == 2)
		rng_fill(&t->r, p, size);
}

/* A guest physical address: in or around the slots, MMIO holes, or far up. */
static uint64_t rnd_gpa(struct tctx *t)
{
	switch (rnd(&t->r, 8)) {
	case 0: return rnd(&t->r, 0x100000) & ~0xfffull;
	case 1:
	case 2: return RUNNER_GPA_BASE + (rnd(&t->r, NSLOT * 2) * (CHUNK / 2));
	case 3: return 0xfee00000 + rnd(&t->r, 2) * 0x1000;
	case 4: return (1ull << (36 + rnd(&t->r, 17))) - 0x1000 * rnd(&t->r, 3);
	case 5: return rnd_num(&t->r) & ~0xfffull;
	case 6: return rnd_num(&t->r);
	default: return RUNNER_GPA_BASE + rnd(&t->r, 16 << 20);
	}
}

/*
 * A PROT_NONE reservation of 1 TiB: the backing of huge memory slots. KVM takes any slot
 * whose host range is in user space; a guest access to one faults harmlessly.
 */
#define FAR_SIZE (1ull << 40)
static uint8_t *far_area;

/*
 * Keeps a slot's host range inside the mapping its address is in: a slot that ran past
 * the pool or a run page would let the guest (and KVM) write into the fuzzer's own
 * stacks and heap, a crash of the fuzzer, not of the host.
 */
static uint64_t clamp_size(uint64_t hva, uint64_t size)
{
	uint64_t end = 0;
	int i, c;

	/*
	 * Any other user address (low, a PROT_NONE hole): at most a page, or up to where a
	 * static binary is loaded (0x400000).
	 */
	if (hva < (1ull << 47))
		end = hva < 0x400000 ? 0x400000 : hva + 4096;
	if (hva >= (uintptr_t)pool && hva < (uintptr_t)pool + POOL_SIZE)
		end = (uintptr_t)pool + POOL_SIZE;
	else if (hva >= (uintptr_t)fuzz_ro_page && hva < (uintptr_t)fuzz_ro_page + 4096)
		end = (uintptr_t)fuzz_ro_page + 4096;
	else if (hva >= (uintptr_t)far_area && hva < (uintptr_t)far_area + FAR_SIZE)
		end = (uintptr_t)far_area + FAR_SIZE;
	for (i = 0; i < NVM; i++)
		for (c = 0; c < NVCPU; c++)
			if (W.run[i][c] && hva >= (uintptr_t)W.run[i][c] &&
			    hva < (uintptr_t)W.run[i][c] + run_size)
				end = (uintptr_t)W.run[i][c] + run_size;
	if (end && size > end - hva)
		size = (end - hva) & ~0xfffull;
	return size;
}

/* A host address for a memory slot: a pool page, unaligned, or bad. */
static uint64_t rnd_hva(struct tctx *t, int vmi, int s)
{
	uint8_t *chunk = pool + ((size_t)vmi * NSLOT + s) * CHUNK;

	switch (rnd(&t->r, 10)) {
	case 0: return (uintptr_t)bad_ptr(&t->r);
	case 1: return (uintptr_t)chunk + 1 + rnd(&t->r, 0xfff);
	case 2: return (uintptr_t)pool + rnd(&t->r, POOL_SIZE / 4096) * 4096;
	case 3: return chance(&t->r, 50) ? (uintptr_t)fuzz_ro_page : (uintptr_t)far_area + (rnd(&t->r, 1024) << 30);
	case 4: {
		/* A vCPU's run page as guest memory. */
		struct kvm_run *run = W.run[rnd(&t->r, NVM)][rnd(&t->r, NVCPU)];

		return run ? (uintptr_t)run : (uintptr_t)chunk;
	}
	default: return (uintptr_t)chunk + rnd(&t->r, 4) * 0x1000;
	}
}

static uint64_t rnd_size(struct tctx *t)
{
	switch (rnd(&t->r, 8)) {
	case 0: return 0;
	case 1: return rnd_num(&t->r);
	case 2: return 0x1000 * (1 + rnd(&t->r, 16)) + (chance(&t->r, 50) ? 1 : 0);
	default: return 0x1000ull << rnd(&t->r, 9); /* up to CHUNK */
	}
}

/* ---- World setup ------------------------------------------------------------------------- */

static int vcpu_add(int vmi, int ci, int id)
{
	int fd = ioctl(W.vm_fd[vmi], KVM_CREATE_VCPU, id);
	void *run;

	fuzz_count(fd, errno);
	if (fd < 0)
		return -1;
	/* The mapping stays until the epoch ends: other threads may be using it. */
	run = map_run(fd);
	W.run[vmi][ci] = run;
	if (cpuid)
		fuzz_count(ioctl(fd, KVM_SET_CPUID2, cpuid), errno);
	W.vcpu_fd[vmi][ci] = fd;
	return fd;
}

static void slot0_install(int vmi)
{
	struct kvm_userspace_memory_region r = {
		.slot = 0, .guest_phys_addr = 0, .memory_size = CHUNK,
		.userspace_addr = (uintptr_t)(pool + (size_t)vmi * NSLOT * CHUNK),
	};

	fuzz_count(ioctl(W.vm_fd[vmi], KVM_SET_USER_MEMORY_REGION, &r), errno);
	W.slots[vmi][0] = (struct slot){ 0, CHUNK, (uint8_t *)(uintptr_t)r.userspace_addr, 0, 1 };
}

static void vm_add(int vmi)
{
	W.vm_fd[vmi] = ioctl(W.sys_fd, KVM_CREATE_VM, 0);
	fuzz_count(W.vm_fd[vmi], errno);
	if (W.vm_fd[vmi] < 0)
		return;
	fuzz_count(ioctl(W.vm_fd[vmi], KVM_SET_TSS_ADDR, 0xfffbd000), errno);
	slot0_install(vmi);
}

static void pool_reset(void)
{
	void *p = mmap(pool, POOL_SIZE, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | (pool ? MAP_FIXED : 0), -1, 0);

	if (p == MAP_FAILED)
		BAIL("mmap pool");
	pool = p;
}

static void world_create(struct rng *r)
{
	int i, c;

	memset(&W, 0, sizeof(W));
	memset(W.vm_fd, -1, sizeof(W.vm_fd));
	memset(W.vcpu_fd, -1, sizeof(W.vcpu_fd));
	pool_reset();
	W.sys_fd = kvm_open();
	for (i = 0; i < NVM; i++) {
		vm_add(i);
		if (W.vm_fd[i] < 0)
			continue;
		/* VM 1 sometimes gets the split irqchip (in-kernel LAPICs) first. */
		if (i == 1 && rnd(r, 2)) {
			struct kvm_enable_cap cap = { .cap = KVM_CAP_SPLIT_IRQCHIP, .args = { 24 } };

			fuzz_count(ioctl(W.vm_fd[i], KVM_ENABLE_CAP, &cap), errno);
		}
		for (c = 0; c < 1 + (int)rnd(r, NVCPU); c++)
			vcpu_add(i, c, c);
	}
	for (i = 0; i < NEFD; i++)
		W.efd[i] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}

static void world_destroy(void)
{
	int i, n = n_run_maps < 4096 ? n_run_maps : 4096;

	for (i = 0; i < n; i++)
		munmap(run_maps[i], run_size);
	n_run_maps = 0;
	/* The pool may hold mappings of vCPU fds (op_churn_memory): fresh memory drops them. */
	pool_reset();
	/* Whatever fds the threads left behind (VMs, vCPUs, stats, devices, eventfds). */
	for (i = 3; i < 1024; i++)
		close(i);
}

/* ---- System fd operations ---------------------------------------------------------------- */

static void op_sys_simple(struct tctx *t)
{
	int fd = chance(&t->r, 95) ? W.sys_fd : rnd_fd(t);

	switch (rnd(&t->r, 4)) {
	case 0: IO(t, fd, KVM_GET_API_VERSION, chance(&t->r, 80) ? 0 : rnd_num(&t->r)); break;
	case 1: IO(t, fd, KVM_CHECK_EXTENSION, chance(&t->r, 80) ? rnd(&t->r, 260) : rnd_num(&t->r)); break;
	case 2: IO(t, fd, KVM_GET_VCPU_MMAP_SIZE, chance(&t->r, 90) ? 0 : rnd_num(&t->r)); break;
	default: {
		/* An unknown or random ioctl number (never KVM_RUN or KVM_SET_SIGNAL_MASK). */
		unsigned long req = rnd_req(t);

		rng_fill(&t->r, t->buf, 0x200);
		xio(t, fd, req, (unsigned long)t->buf, "random-ioctl");
	}
	}
}

static uint32_t nent_for(struct tctx *t, uint32_t good)
{
	switch (rnd(&t->r, 6)) {
	case 0: return 0;
	case 1: return 1;
	case 2: return good - 1;
	case 3: return rnd_num(&t->r);
	default: return good;
	}
}

static void op_sys_cpuid(struct tctx *t)
{
	struct kvm_cpuid2 *c = (void *)t->buf;
	uint32_t max = (TBUF_SIZE - sizeof(*c)) / sizeof(c->entries[0]);
	int emulated = chance(&t->r, 30);

	memset(c, 0, sizeof(*c));
	c->nent = nent_for(t, chance(&t->r, 50) ? 256 : max);
	if (c->nent > max && chance(&t->r, 70))
		c->nent = max;
	if (emulated)
		IO(t, W.sys_fd, KVM_GET_EMULATED_CPUID, argp(t, c, sizeof(*c)));
	else
		IO(t, W.sys_fd, KVM_GET_SUPPORTED_CPUID, argp(t, c, sizeof(*c)));
}

static void op_sys_msr_lists(struct tctx *t)
{
	struct kvm_msr_list *l = (void *)t->buf;
	uint32_t max = (TBUF_SIZE - sizeof(*l)) / 4;

	l->nmsrs = nent_for(t, chance(&t->r, 50) ? (uint32_t)n_msr : max);
	if (l->nmsrs > max && chance(&t->r, 80))
		l->nmsrs = max;
	if (chance(&t->r, 50))
		IO(t, W.sys_fd, KVM_GET_MSR_INDEX_LIST, argp(t, l, sizeof(*l)));
	else
		IO(t, W.sys_fd, KVM_GET_MSR_FEATURE_INDEX_LIST, argp(t, l, sizeof(*l)));
}

/* Fills a kvm_msrs with N entries from LIST (or random indices); returns the struct. */
static struct kvm_msrs *msrs_build(struct tctx *t, const uint32_t *list, int nlist)
{
	struct kvm_msrs *m = (void *)t->buf;
	uint32_t max = (TBUF_SIZE - sizeof(*m)) / sizeof(m->entries[0]), i, n;

	n = rnd(&t->r, 8) ? 1 + rnd(&t->r, 16) : rnd_num(&t->r);
	memset(m, 0, sizeof(*m));
	m->nmsrs = n;
	if (n > max)
		n = max;
	for (i = 0; i < n; i++) {
		int c = rnd(&t->r, 10);

		m->entries[i].index = c < 8 && nlist ? list[rnd(&t->r, nlist)] :
				      c < 9 ? (uint32_t)rnd_num(&t->r) : 0x4b564d00 + rnd(&t->r, 8);
		m->entries[i].reserved = chance(&t->r, 3) ? rng_u32(&t->r) : 0;
		m->entries[i].data = rnd_num(&t->r);
	}
	return m;
}

static void op_sys_get_msrs(struct tctx *t)
{
	struct kvm_msrs *m = msrs_build(t, feat_idx, n_feat);

	IO(t, W.sys_fd, KVM_GET_MSRS, argp(t, m, sizeof(*m)));
}

static void op_sys_create_vm(struct tctx *t)
{
	unsigned long type = chance(&t->r, 85) ? 0 : rnd_num(&t->r);
	int i = rnd(&t->r, NVM), old = W.vm_fd[i];
	long fd = IO(t, W.sys_fd, KVM_CREATE_VM, type);

	if (fd < 0)
		return;
	if (chance(&t->r, 40)) {
		/* Replace a VM of the world (the old one's vCPUs keep it alive). */
		W.vm_fd[i] = fd;
		fuzz_count(ioctl(fd, KVM_SET_TSS_ADDR, 0xfffbd000), errno);
		slot0_install(i);
		if (old >= 3 && chance(&t->r, 50))
			close(old);
	} else {
		close(fd);
	}
}

static void op_sys_attr(struct tctx *t)
{
	struct kvm_device_attr *a = (void *)t->buf;
	uint64_t *val = (void *)(t->buf + 256);

	memset(a, 0, sizeof(*a));
	a->group = chance(&t->r, 70) ? 0 : rnd_num(&t->r);
	a->attr = chance(&t->r, 70) ? rnd(&t->r, 3) : rnd_num(&t->r);
	a->flags = chance(&t->r, 90) ? 0 : rnd_num(&t->r);
	a->addr = chance(&t->r, 80) ? (uintptr_t)val : (uintptr_t)bad_ptr(&t->r);
	if (chance(&t->r, 50))
		IO(t, W.sys_fd, KVM_GET_DEVICE_ATTR, argp(t, a, sizeof(*a)));
	else
		IO(t, W.sys_fd, KVM_HAS_DEVICE_ATTR, argp(t, a, sizeof(*a)));
}

/* ---- VM fd operations --------------------------------------------------------------------- */

static uint32_t rnd_slot_id(struct tctx *t)
{
	switch (rnd(&t->r, 10)) {
	case 0: return rnd_num(&t->r);
	case 1: return (1u << 16) | rnd(&t->r, NSLOT); /* address space 1 */
	case 2: return 0;
	default: return 1 + rnd(&t->r, NSLOT - 1);
	}
}

static uint32_t rnd_mem_flags(struct tctx *t)
{
	switch (rnd(&t->r, 6)) {
	case 0: return KVM_MEM_LOG_DIRTY_PAGES;
	case 1: return KVM_MEM_READONLY;
	case 2: return rnd(&t->r, 2) ? (uint32_t)rnd_num(&t->r) : 1u << rnd(&t->r, 32);
	default: return 0;
	}
}

static void op_vm_set_mem(struct tctx *t)
{
	struct kvm_userspace_memory_region *r = (void *)t->buf;
	int vmi, fd = pick_vm(t, &vmi), s;
	uint32_t id = rnd_slot_id(t);
	long ret;

	s = (id & 0xffff) < NSLOT ? (id & 0xffff) : 1;
	r->slot = id;
	r->flags = rnd_mem_flags(t);
	switch (rnd(&t->r, 4)) {
	case 0: /* delete */
		r->guest_phys_addr = W.slots[vmi][s].gpa;
		r->memory_size = 0;
		r->userspace_addr = (uintptr_t)W.slots[vmi][s].hva;
		break;
	case 1: /* move or flag change of what is there */
		r->guest_phys_addr = chance(&t->r, 50) ? rnd_gpa(t) : W.slots[vmi][s].gpa;
		r->memory_size = W.slots[vmi][s].size;
		r->userspace_addr = (uintptr_t)W.slots[vmi][s].hva;
		break;
	default:
		r->guest_phys_addr = rnd_gpa(t);
		r->userspace_addr = rnd_hva(t, vmi, s);
		r->memory_size = clamp_size(r->userspace_addr, rnd_size(t));
	}
	vlog(t, "set_mem slot %#x flags %#x gpa %#llx size %#llx hva %#llx", r->slot, r->flags,
	     (unsigned long long)r->guest_phys_addr, (unsigned long long)r->memory_size,
	     (unsigned long long)r->userspace_addr);
	ret = IO(t, fd, KVM_SET_USER_MEMORY_REGION, argp(t, r, sizeof(*r)));
	if (!ret && fd == W.vm_fd[vmi] && id < NSLOT)
		W.slots[vmi][s] = (struct slot){ r->guest_phys_addr, r->memory_size,
						 (uint8_t *)(uintptr_t)r->userspace_addr, r->flags,
						 r->memory_size != 0 };
}

static void op_vm_set_mem2(struct tctx *t)
{
#ifdef KVM_SET_USER_MEMORY_REGION2
	struct kvm_userspace_memory_region2 *r = (void *)t->buf;
	int vmi, fd = pick_vm(t, &vmi), s = rnd(&t->r, NSLOT);

	memset(r, 0, sizeof(*r));
	r->slot = chance(&t->r, 85) ? (uint32_t)s : rnd_slot_id(t);
	r->flags = rnd_mem_flags(t);
	r->guest_phys_addr = chance(&t->r, 30) ? W.slots[vmi][s].gpa : rnd_gpa(t);
	r->userspace_addr = rnd_hva(t, vmi, s);
	r->memory_size = clamp_size(r->userspace_addr, chance(&t->r, 30) ? W.slots[vmi][s].size : rnd_size(t));
	if (chance(&t->r, 10)) {
		r->guest_memfd = rnd_fd(t);
		r->guest_memfd_offset = rnd_num(&t->r);
	}
	if (chance(&t->r, 10))
		r->pad2[rnd(&t->r, 14)] = rng_u64(&t->r);
	IO(t, fd, KVM_SET_USER_MEMORY_REGION2, argp(t, r, sizeof(*r)));
#else
	op_vm_set_mem(t);
#endif
}

static void op_vm_create_vcpu(struct tctx *t)
{
	int vmi = rnd(&t->r, NVM), ci = rnd(&t->r, NVCPU);
	unsigned long id;
	long fd;

	switch (rnd(&t->r, 6)) {
	case 0: id = rnd_num(&t->r); break;
	case 1: id = max_vcpu_id - rnd(&t->r, 2); break;
	default: id = rnd(&t->r, 8);
	}
	fd = IO(t, W.vm_fd[vmi], KVM_CREATE_VCPU, id);
	if (fd < 0)
		return;
	if (chance(&t->r, 70)) {
		void *run = map_run(fd);

		W.run[vmi][ci] = run ? run : W.run[vmi][ci];
		if (cpuid && chance(&t->r, 80))
			fuzz_count(ioctl(fd, KVM_SET_CPUID2, cpuid), errno);
		W.vcpu_fd[vmi][ci] = fd;
	} else if (chance(&t->r, 50)) {
		close(fd);
	}
}

static void op_vm_dirty_log(struct tctx *t)
{
	int vmi, fd = pick_vm(t, &vmi), s = rnd(&t->r, NSLOT);
	uint64_t *bitmap = (void *)(t->buf + 0x1000);

	if (chance(&t->r, 20)) {
		/* Rings or not, with whatever the ring pages hold (op_mmap_run scribbles). */
		IO(t, fd, KVM_RESET_DIRTY_RINGS, rnd_num(&t->r));
	} else if (chance(&t->r, 60)) {
		struct kvm_dirty_log *d = (void *)t->buf;

		memset(d, 0, sizeof(*d));
		d->slot = chance(&t->r, 85) ? (uint32_t)s : rnd_slot_id(t);
		d->dirty_bitmap = chance(&t->r, 85) ? bitmap : bad_ptr(&t->r);
		IO(t, fd, KVM_GET_DIRTY_LOG, argp(t, d, sizeof(*d)));
	} else {
		struct kvm_clear_dirty_log *d = (void *)t->buf;
		uint64_t pages = W.slots[vmi][s].size / 4096;

		memset(d, 0, sizeof(*d));
		d->slot = chance(&t->r, 85) ? (uint32_t)s : rnd_slot_id(t);
		d->first_page = chance(&t->r, 70) ? rnd(&t->r, pages + 1) & ~63ull : rnd_num(&t->r);
		d->num_pages = chance(&t->r, 80) ? (uint32_t)pages : (uint32_t)rnd_num(&t->r);
		/* FUZZ_AVOID=clear: no huge clears (rkvm's known multi-second stall). */
		if (fuzz_avoid("clear") && d->num_pages > 0x4000)
			d->num_pages = 0x4000;
		memset(bitmap, chance(&t->r, 50) ? 0xff : 0, 0x1000);
		d->dirty_bitmap = chance(&t->r, 85) ? bitmap : bad_ptr(&t->r);
		IO(t, fd, KVM_CLEAR_DIRTY_LOG, argp(t, d, sizeof(*d)));
	}
}

static int pick_efd(struct tctx *t)
{
	return chance(&t->r, 85) ? W.efd[rnd(&t->r, NEFD)] : rnd_fd(t);
}

static void op_vm_irqfd(struct tctx *t)
{
	struct kvm_irqfd *f = (void *)t->buf;
	int fd = pick_vm(t, NULL);

	memset(f, 0, sizeof(*f));
	f->fd = pick_efd(t);
	f->gsi = chance(&t->r, 80) ? rnd(&t->r, 32) : rng_u32(&t->r);
	f->flags = chance(&t->r, 70) ? (rnd(&t->r, 2) ? KVM_IRQFD_FLAG_DEASSIGN : 0) : rng_u32(&t->r) & 7;
	if (f->flags & KVM_IRQFD_FLAG_RESAMPLE)
		f->resamplefd = pick_efd(t);
	shape(t, style(t) == 2 ? 2 : 0, f, sizeof(*f));
	IO(t, fd, KVM_IRQFD, argp(t, f, sizeof(*f)));
	if (chance(&t->r, 30)) {
		uint64_t one = 1;

		if (write(W.efd[rnd(&t->r, NEFD)], &one, 8) < 0)
			errno = 0;
	}
}

static void op_vm_ioeventfd(struct tctx *t)
{
	static const uint32_t lens[] = { 0, 1, 2, 4, 8, 3, 16 };
	struct kvm_ioeventfd *e = (void *)t->buf;
	int fd = pick_vm(t, NULL);

	memset(e, 0, sizeof(*e));
	e->fd = pick_efd(t);
	e->len = lens[rnd(&t->r, 7)];
	e->flags = rnd(&t->r, 8) & (KVM_IOEVENTFD_FLAG_DATAMATCH | KVM_IOEVENTFD_FLAG_PIO |
				    KVM_IOEVENTFD_FLAG_DEASSIGN);
	if (chance(&t->r, 5))
		e->flags = rng_u32(&t->r);
	e->addr = e->flags & KVM_IOEVENTFD_FLAG_PIO ? (chance(&t->r, 80) ? 0x80 + rnd(&t->r, 4) : rnd_num(&t->r))
						   : (chance(&t->r, 50) ? 0xd0000000 + rnd(&t->r, 16) * 8 : rnd_gpa(t));
	e->datamatch = rnd_num(&t->r);
	IO(t, fd, KVM_IOEVENTFD, argp(t, e, sizeof(*e)));
}

/* An MSI address and data: fixed/lowest/SMI/NMI/INIT/ExtINT to a random APIC id. */
static void rnd_msi(struct tctx *t, uint32_t *lo, uint32_t *hi, uint32_t *data)
{
	*lo = 0xfee00000 | (uint32_t)rnd(&t->r, 4) << 12 | (uint32_t)rnd(&t->r, 4) << 2;
	*hi = chance(&t->r, 90) ? 0 : rng_u32(&t->r);
	*data = (uint32_t)rnd(&t->r, 8) << 8 | (uint32_t)(chance(&t->r, 80) ? 32 + rnd(&t->r, 224) : rnd(&t->r, 32)) |
		(uint32_t)rnd(&t->r, 2) << 15 | (uint32_t)rnd(&t->r, 2) << 14;
	if (chance(&t->r, 10)) {
		*lo = rng_u32(&t->r);
		*data = rng_u32(&t->r);
	}
}

static void op_vm_msi(struct tctx *t)
{
	struct kvm_msi *m = (void *)t->buf;
	int fd = pick_vm(t, NULL), i, n = chance(&t->r, 90) ? 1 : 1 + rnd(&t->r, 64);

	memset(m, 0, sizeof(*m));
	rnd_msi(t, &m->address_lo, &m->address_hi, &m->data);
	m->flags = chance(&t->r, 90) ? 0 : rng_u32(&t->r);
	/* Sometimes a burst of the same message (e.g. many NMIs). */
	for (i = 0; i < n; i++)
		IO(t, fd, KVM_SIGNAL_MSI, argp(t, m, sizeof(*m)));
}

static void op_vm_gsi_routing(struct tctx *t)
{
	struct kvm_irq_routing *r = (void *)t->buf;
	uint32_t max = (TBUF_SIZE - sizeof(*r)) / sizeof(r->entries[0]), i, n;
	int fd = pick_vm(t, NULL);

	n = chance(&t->r, 80) ? rnd(&t->r, 24) : (uint32_t)rnd_num(&t->r);
	memset(r, 0, sizeof(*r));
	r->nr = n;
	r->flags = chance(&t->r, 95) ? 0 : rng_u32(&t->r);
	if (n > max)
		n = max;
	for (i = 0; i < n; i++) {
		struct kvm_irq_routing_entry *e = &r->entries[i];

		memset(e, 0, sizeof(*e));
		e->gsi = chance(&t->r, 85) ? i : rng_u32(&t->r) % 4096;
		e->type = chance(&t->r, 70) ? KVM_IRQ_ROUTING_MSI :
			  chance(&t->r, 50) ? KVM_IRQ_ROUTING_IRQCHIP : rng_u32(&t->r) % 8;
		if (e->type == KVM_IRQ_ROUTING_MSI)
			rnd_msi(t, &e->u.msi.address_lo, &e->u.msi.address_hi, &e->u.msi.data);
		else {
			e->u.irqchip.irqchip = rnd(&t->r, 4);
			e->u.irqchip.pin = rnd(&t->r, 32);
		}
		if (chance(&t->r, 5))
			e->flags = rng_u32(&t->r);
	}
	IO(t, fd, KVM_SET_GSI_ROUTING, argp(t, r, sizeof(*r)));
}

static void op_vm_coalesced(struct tctx *t)
{
	struct kvm_coalesced_mmio_zone *z = (void *)t->buf;
	int fd = pick_vm(t, NULL);

	memset(z, 0, sizeof(*z));
	z->pio = chance(&t->r, 30);
	z->addr = z->pio ? 0x80 + rnd(&t->r, 8) : chance(&t->r, 50) ? 0xd0000000 : rnd_gpa(t);
	z->size = chance(&t->r, 80) ? 1u << rnd(&t->r, 13) : rng_u32(&t->r);
	shape(t, style(t) == 2 ? 2 : 0, z, sizeof(*z));
	if (chance(&t->r, 60))
		IO(t, fd, KVM_REGISTER_COALESCED_MMIO, argp(t, z, sizeof(*z)));
	else
		IO(t, fd, KVM_UNREGISTER_COALESCED_MMIO, argp(t, z, sizeof(*z)));
}

static const uint32_t vm_caps[] = {
	KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, KVM_CAP_SPLIT_IRQCHIP, KVM_CAP_MAX_VCPU_ID,
	KVM_CAP_X2APIC_API, KVM_CAP_EXIT_ON_EMULATION_FAILURE, KVM_CAP_MSR_PLATFORM_INFO,
	KVM_CAP_DISABLE_QUIRKS, KVM_CAP_X86_USER_SPACE_MSR, KVM_CAP_X86_DISABLE_EXITS,
	KVM_CAP_EXIT_HYPERCALL, KVM_CAP_HALT_POLL, KVM_CAP_X86_BUS_LOCK_EXIT,
	KVM_CAP_DIRTY_LOG_RING, KVM_CAP_SGX_ATTRIBUTE, KVM_CAP_VM_COPY_ENC_CONTEXT_FROM,
	KVM_CAP_PMU_CAPABILITY, KVM_CAP_X86_TRIPLE_FAULT_EVENT, KVM_CAP_X86_NOTIFY_VMEXIT,
	KVM_CAP_VM_DISABLE_NX_HUGE_PAGES, KVM_CAP_DISABLE_QUIRKS2,
#ifdef KVM_CAP_X86_APIC_BUS_CYCLES_NS
	KVM_CAP_X86_APIC_BUS_CYCLES_NS,
#endif
#ifdef KVM_CAP_X86_GUEST_MODE
	KVM_CAP_X86_GUEST_MODE,
#endif
	KVM_CAP_ENFORCE_PV_FEATURE_CPUID, KVM_CAP_HYPERV_ENFORCE_CPUID, KVM_CAP_SYNC_REGS,
};
#define N_VM_CAPS (int)(sizeof(vm_caps) / sizeof(vm_caps[0]))

static void cap_args(struct tctx *t, struct kvm_enable_cap *c)
{
	int i;

	memset(c, 0, sizeof(*c));
	c->cap = chance(&t->r, 90) ? vm_caps[rnd(&t->r, N_VM_CAPS)] : rnd(&t->r, 300);
	c->flags = chance(&t->r, 90) ? 0 : rng_u32(&t->r);
	for (i = 0; i < 4; i++)
		c->args[i] = chance(&t->r, 50) ? rnd(&t->r, 8) : rnd_num(&t->r);
	switch (c->cap) {
	case KVM_CAP_SPLIT_IRQCHIP:
		if (chance(&t->r, 70))
			c->args[0] = 24;
		break;
	case KVM_CAP_DIRTY_LOG_RING:
		/* A ring of at most 64 KiB per vCPU unless the draw says huge. */
		if (chance(&t->r, 80))
			c->args[0] = 0x1000 << rnd(&t->r, 5);
		break;
	case KVM_CAP_HALT_POLL:
		if (chance(&t->r, 80))
			c->args[0] = rnd(&t->r, 200000);
		break;
	case KVM_CAP_MAX_VCPU_ID:
		if (chance(&t->r, 70))
			c->args[0] = rnd(&t->r, 4097);
		break;
	case KVM_CAP_X86_DISABLE_EXITS:
		c->args[0] &= fuzz_disable_exits_mask();
		break;
	}
	if (chance(&t->r, 3))
		c->pad[rnd(&t->r, 64)] = rnd(&t->r, 256);
}

static void op_vm_enable_cap(struct tctx *t)
{
	struct kvm_enable_cap *c = (void *)t->buf;
	int fd = pick_vm(t, NULL);

	cap_args(t, c);
	vlog(t, "vm enable_cap %u flags %#x args %#llx %#llx", c->cap, c->flags,
	     (unsigned long long)c->args[0], (unsigned long long)c->args[1]);
	IO(t, fd, KVM_ENABLE_CAP, argp(t, c, sizeof(*c)));
}

static void op_vm_misc(struct tctx *t)
{
	int fd = pick_vm(t, NULL);
	uint64_t *u = (void *)t->buf;

	switch (rnd(&t->r, 10)) {
	case 0:
		IO(t, fd, KVM_SET_TSS_ADDR, chance(&t->r, 60) ? 0xfffbd000 - rnd(&t->r, 4) * 0x1000 : rnd_num(&t->r));
		break;
	case 1:
		*u = chance(&t->r, 60) ? 0xfeffc000 : rnd_num(&t->r);
		IO(t, fd, KVM_SET_IDENTITY_MAP_ADDR, argp(t, u, 8));
		break;
	case 2:
		IO(t, fd, KVM_SET_NR_MMU_PAGES, rnd_num(&t->r));
		break;
	case 3:
		IO(t, fd, KVM_SET_BOOT_CPU_ID, chance(&t->r, 70) ? rnd(&t->r, 4) : rnd_num(&t->r));
		break;
	case 4: {
		struct kvm_clock_data *c = (void *)t->buf;

		memset(c, 0, sizeof(*c));
		if (IO(t, fd, KVM_GET_CLOCK, argp(t, c, sizeof(*c))) || chance(&t->r, 50)) {
			c->clock = rnd_num(&t->r);
			c->flags = chance(&t->r, 70) ? 0 : rng_u32(&t->r);
		}
		shape(t, style(t), c, sizeof(*c));
		IO(t, fd, KVM_SET_CLOCK, argp(t, c, sizeof(*c)));
		break;
	}
	case 5:
		IO(t, fd, KVM_CHECK_EXTENSION, chance(&t->r, 90) ? rnd(&t->r, 260) : rnd_num(&t->r));
		break;
	case 6: {
		long sfd = IO(t, fd, KVM_GET_STATS_FD, 0);

		if (sfd >= 0) {
			if (pread(sfd, t->buf, 256 + rnd(&t->r, 4096), rnd(&t->r, 4096)) < 0)
				errno = 0;
			close(sfd);
		}
		break;
	}
	case 7:
		if (chance(&t->r, 50))
			IO(t, fd, KVM_GET_TSC_KHZ, 0);
		else
			IO(t, fd, KVM_SET_TSC_KHZ, rnd_num(&t->r) & 0xffffffff);
		break;
	case 8: {
		struct kvm_create_device *d = (void *)t->buf;
		long r;

		memset(d, 0, sizeof(*d));
		d->type = chance(&t->r, 70) ? rnd(&t->r, 12) : rng_u32(&t->r);
		d->flags = chance(&t->r, 40) ? KVM_CREATE_DEVICE_TEST : chance(&t->r, 80) ? 0 : rng_u32(&t->r);
		r = IO(t, fd, KVM_CREATE_DEVICE, argp(t, d, sizeof(*d)));
		if (!r && !(d->flags & KVM_CREATE_DEVICE_TEST) && d->fd > 2)
			close(d->fd);
		break;
	}
	default: {
		unsigned long req = rnd_req(t);

		rng_fill(&t->r, t->buf, 0x200);
		xio(t, fd, req, (unsigned long)t->buf, "vm-random-ioctl");
	}
	}
}

static void op_vm_irqchip(struct tctx *t)
{
	int fd = pick_vm(t, NULL);

	switch (rnd(&t->r, 8)) {
	case 0:
		IO(t, fd, KVM_CREATE_IRQCHIP, 0);
		break;
	case 5: {
		struct kvm_pit_state2 *p = (void *)t->buf;

		memset(p, 0, sizeof(*p));
		if (!IO(t, fd, KVM_GET_PIT2, argp(t, p, sizeof(*p)))) {
			shape(t, style(t), p, sizeof(*p));
			IO(t, fd, KVM_SET_PIT2, argp(t, p, sizeof(*p)));
		}
		break;
	}
	case 6: {
		struct kvm_reinject_control *c = (void *)t->buf;

		memset(c, 0, sizeof(*c));
		c->pit_reinject = rnd(&t->r, 2);
		IO(t, fd, KVM_REINJECT_CONTROL, argp(t, c, sizeof(*c)));
		break;
	}
	case 7: {
		/* A resampling irqfd on a pin of the in-kernel irqchip, then maybe gone again. */
		struct kvm_irqfd *f = (void *)t->buf;
		int e = eventfd(1, EFD_NONBLOCK), rs = eventfd(0, EFD_NONBLOCK);

		memset(f, 0, sizeof(*f));
		f->fd = e;
		f->gsi = rnd(&t->r, 24);
		f->flags = KVM_IRQFD_FLAG_RESAMPLE;
		f->resamplefd = rs;
		IO(t, fd, KVM_IRQFD, argp(t, f, sizeof(*f)));
		if (chance(&t->r, 50)) {
			f->flags = KVM_IRQFD_FLAG_DEASSIGN;
			IO(t, fd, KVM_IRQFD, argp(t, f, sizeof(*f)));
		}
		if (e >= 0)
			close(e);
		if (rs >= 0)
			close(rs);
		break;
	}
	case 1: {
		struct kvm_irq_level *l = (void *)t->buf;

		l->irq = chance(&t->r, 80) ? rnd(&t->r, 24) : rng_u32(&t->r);
		l->level = rnd(&t->r, 2);
		IO(t, fd, KVM_IRQ_LINE, argp(t, l, sizeof(*l)));
		break;
	}
	case 2: {
		struct kvm_irqchip *c = (void *)t->buf;

		memset(c, 0, sizeof(*c));
		c->chip_id = rnd(&t->r, 4);
		if (!IO(t, fd, KVM_GET_IRQCHIP, argp(t, c, sizeof(*c)))) {
			shape(t, style(t), c, sizeof(*c));
			IO(t, fd, KVM_SET_IRQCHIP, argp(t, c, sizeof(*c)));
		}
		break;
	}
	case 3: {
		struct kvm_pit_config *p = (void *)t->buf;

		memset(p, 0, sizeof(*p));
		p->flags = chance(&t->r, 80) ? rnd(&t->r, 2) : rng_u32(&t->r);
		IO(t, fd, KVM_CREATE_PIT2, argp(t, p, sizeof(*p)));
		break;
	}
	default: {
		struct kvm_irq_level *l = (void *)t->buf;

		l->irq = rnd(&t->r, 24);
		l->level = rnd(&t->r, 2);
		IO(t, fd, KVM_IRQ_LINE_STATUS, argp(t, l, sizeof(*l)));
	}
	}
}

static void op_vm_msr_filter(struct tctx *t)
{
	struct kvm_msr_filter *f = (void *)t->buf;
	uint8_t *bitmaps = t->buf + 0x1000;
	int fd = pick_vm(t, NULL), i, n = rnd(&t->r, KVM_MSR_FILTER_MAX_RANGES + 1);

	memset(f, 0, sizeof(*f));
	f->flags = chance(&t->r, 80) ? rnd(&t->r, 2) : rng_u32(&t->r);
	rng_fill(&t->r, bitmaps, 0x2000);
	for (i = 0; i < n; i++) {
		struct kvm_msr_filter_range *r = &f->ranges[i];

		r->flags = chance(&t->r, 85) ? 1 + rnd(&t->r, 3) : rng_u32(&t->r);
		r->nmsrs = chance(&t->r, 80) ? 1 + rnd(&t->r, 0x2000 * 8 - 1) : rng_u32(&t->r);
		r->base = chance(&t->r, 70) ? (uint32_t[]){ 0, 0xc0000000, 0x4b564d00, 0x800 }[rnd(&t->r, 4)]
					    : rng_u32(&t->r);
		r->bitmap = chance(&t->r, 85) ? bitmaps + rnd(&t->r, 0x100) : bad_ptr(&t->r);
	}
	IO(t, fd, KVM_X86_SET_MSR_FILTER, argp(t, f, sizeof(*f)));
}

/* ---- vCPU fd operations -------------------------------------------------------------------- */

/* KVM_RUN on a random vCPU, with sync-regs bits, immediate_exit and exit answers. */
static void op_vcpu_run(struct tctx *t)
{
	int vmi, ci, fd = pick_vcpu(t, &vmi, &ci), err;
	struct kvm_run *run = W.run[vmi][ci];
	long usec = 200 + rnd(&t->r, 5000);
	uint64_t valid = chance(&t->r, 20) ? rnd(&t->r, 16) : 0, dirty = chance(&t->r, 10) ? rnd(&t->r, 16) : 0;
	int imm = chance(&t->r, 10), win = chance(&t->r, 10);
	uint8_t junk[sizeof(((struct kvm_run *)0)->s)];

	rng_fill(&t->r, junk, sizeof(junk));
	FUZZ_TRY({
		if (run) {
			run->kvm_valid_regs = valid;
			run->kvm_dirty_regs = dirty;
			run->immediate_exit = imm;
			run->request_interrupt_window = win;
			if (dirty)
				memcpy(&run->s, junk, sizeof(junk));
		}
	});
	snprintf(t->what, sizeof(t->what), "KVM_RUN fd %d", fd);
	fuzz_doing[t->id] = t->what;
	fuzz_run(fd, usec, &err);
	vlog(t, "KVM_RUN fd %d imm %d -> %s", fd, imm, err ? errno_name(err) : "0");
	FUZZ_TRY({
		if (run && !err && run->exit_reason == KVM_EXIT_IO && run->io.direction == KVM_EXIT_IO_IN &&
		    run->io.data_offset < (uint64_t)run_size)
			rng_fill(&t->r, (uint8_t *)run + run->io.data_offset,
				 (uint64_t)run->io.size * run->io.count < (uint64_t)run_size - run->io.data_offset ?
				 (uint64_t)run->io.size * run->io.count : 0);
		if (run)
			run->immediate_exit = 0;
	});
}

/* GET into a buffer, shape it, SET it back: the common pattern of the state pairs. */
static void get_set_(struct tctx *t, int fd, unsigned long get, unsigned long set, size_t size,
		     const char *get_name, const char *set_name)
{
	void *p = t->buf;

	memset(p, 0, size);
	if (chance(&t->r, 30))
		xio(t, fd, get, (unsigned long)argp(t, p, size), get_name);
	else
		xio(t, fd, get, (unsigned long)p, get_name);
	shape(t, style(t), p, size);
	if (set == KVM_SET_FPU || set == KVM_SET_XSAVE)
		fuzz_sanitize_fpu(p, set == KVM_SET_XSAVE);
	xio(t, fd, set, (unsigned long)argp(t, p, size), set_name);
}
#define get_set(t, fd, get, set, size, n) get_set_(t, fd, get, set, size, #get, #set)

static void op_vcpu_state(struct tctx *t)
{
	int fd = pick_vcpu(t, NULL, NULL);

	switch (rnd(&t->r, 10)) {
	case 0: get_set(t, fd, KVM_GET_REGS, KVM_SET_REGS, sizeof(struct kvm_regs), "REGS"); break;
	case 1: get_set(t, fd, KVM_GET_SREGS, KVM_SET_SREGS, sizeof(struct kvm_sregs), "SREGS"); break;
	case 2: get_set(t, fd, KVM_GET_SREGS2, KVM_SET_SREGS2, sizeof(struct kvm_sregs2), "SREGS2"); break;
	case 3: get_set(t, fd, KVM_GET_FPU, KVM_SET_FPU, sizeof(struct kvm_fpu), "FPU"); break;
	case 4: get_set(t, fd, KVM_GET_XSAVE, KVM_SET_XSAVE, sizeof(struct kvm_xsave), "XSAVE"); break;
	case 5: get_set(t, fd, KVM_GET_XCRS, KVM_SET_XCRS, sizeof(struct kvm_xcrs), "XCRS"); break;
	case 6: get_set(t, fd, KVM_GET_LAPIC, KVM_SET_LAPIC, sizeof(struct kvm_lapic_state), "LAPIC"); break;
	case 7: get_set(t, fd, KVM_GET_VCPU_EVENTS, KVM_SET_VCPU_EVENTS, sizeof(struct kvm_vcpu_events), "EVENTS"); break;
	case 8: get_set(t, fd, KVM_GET_DEBUGREGS, KVM_SET_DEBUGREGS, sizeof(struct kvm_debugregs), "DEBUGREGS"); break;
	default: get_set(t, fd, KVM_GET_MP_STATE, KVM_SET_MP_STATE, sizeof(struct kvm_mp_state), "MP_STATE"); break;
	}
}

static void op_vcpu_xsave2(struct tctx *t)
{
	int fd = pick_vcpu(t, NULL, NULL);
	size_t size = xsave2_size > 0 && xsave2_size <= TBUF_SIZE ? xsave2_size : 4096;

	memset(t->buf, 0, size);
	IO(t, fd, KVM_GET_XSAVE2, argp(t, t->buf, size));
	shape(t, style(t), t->buf, size);
	fuzz_sanitize_fpu(t->buf, 1);
	IO(t, fd, KVM_SET_XSAVE, argp(t, t->buf, size));
}

static void op_vcpu_msrs(struct tctx *t)
{
	int fd = pick_vcpu(t, NULL, NULL);
	struct kvm_msrs *m = msrs_build(t, msr_idx, n_msr);

	if (chance(&t->r, 50))
		IO(t, fd, KVM_GET_MSRS, argp(t, m, sizeof(*m)));
	else
		IO(t, fd, KVM_SET_MSRS, argp(t, m, sizeof(*m)));
}

/* KVM_GET/SET_ONE_REG with MSR ids (good and mangled), KVM_GET_REG_LIST. */
static void op_vcpu_one_reg(struct tctx *t)
{
	int fd = pick_vcpu(t, NULL, NULL);
	struct kvm_one_reg *r = (void *)t->buf;
	uint64_t *val = (uint64_t *)(t->buf + 64);
	uint32_t idx = n_msr && chance(&t->r, 80) ? msr_idx[rnd(&t->r, n_msr)] : (uint32_t)rnd_num(&t->r);

	r->id = KVM_X86_REG_MSR(idx);
	if (chance(&t->r, 20))
		r->id ^= 1ull << (32 + rnd(&t->r, 32));
	if (chance(&t->r, 5))
		r->id = KVM_X86_REG_KVM(rnd(&t->r, 3));
	*val = rnd_num(&t->r);
	r->addr = chance(&t->r, 85) ? (uintptr_t)val : (uintptr_t)argp(t, val, 8);
	switch (rnd(&t->r, 5)) {
	case 0:
	case 1: IO(t, fd, KVM_GET_ONE_REG, argp(t, r, sizeof(*r))); break;
	case 2:
	case 3: IO(t, fd, KVM_SET_ONE_REG, argp(t, r, sizeof(*r))); break;
	default:
		*(uint64_t *)t->buf = rnd(&t->r, 4);
		IO(t, fd, KVM_GET_REG_LIST, argp(t, t->buf, 40));
	}
}

static void op_vcpu_cpuid(struct tctx *t)
{
	int fd = pick_vcpu(t, NULL, NULL);
	struct kvm_cpuid2 *c = (void *)t->buf;
	uint32_t max = (TBUF_SIZE - sizeof(*c)) / sizeof(c->entries[0]);

	switch (rnd(&t->r, 4)) {
	case 0:
		memset(c, 0, sizeof(*c));
		c->nent = nent_for(t, 256);
		if (c->nent > max)
			c->nent = max;
		IO(t, fd, KVM_GET_CPUID2, argp(t, c, sizeof(*c)));
		break;
	case 1: {
		/* The first format, from the supported table. */
		struct kvm_cpuid *c1 = (void *)t->buf;
		uint32_t i, n = cpuid ? cpuid->nent : 0;

		if (n > max)
			n = max;
		memset(c1, 0, sizeof(*c1));
		c1->nent = nent_for(t, n);
		for (i = 0; i < n; i++) {
			c1->entries[i].function = cpuid->entries[i].function;
			c1->entries[i].eax = cpuid->entries[i].eax;
			c1->entries[i].ebx = cpuid->entries[i].ebx;
			c1->entries[i].ecx = cpuid->entries[i].ecx;
			c1->entries[i].edx = cpuid->entries[i].edx;
		}
		if (chance(&t->r, 40))
			mutate(&t->r, c1->entries, n * sizeof(c1->entries[0]));
		IO(t, fd, KVM_SET_CPUID, argp(t, c1, sizeof(*c1)));
		break;
	}
	default: {
		size_t sz = cpuid ? sizeof(*cpuid) + cpuid->nent * sizeof(cpuid->entries[0]) : sizeof(*c);

		if (!cpuid || sz > TBUF_SIZE)
			return;
		memcpy(c, cpuid, sz);
		if (chance(&t->r, 50))
			mutate(&t->r, c->entries, c->nent * sizeof(c->entries[0]));
		if (chance(&t->r, 10))
			c->nent = nent_for(t, c->nent) % (max + 1);
		IO(t, fd, KVM_SET_CPUID2, argp(t, c, sizeof(*c)));
	}
	}
}

static void op_vcpu_events(struct tctx *t)
{
	int fd = pick_vcpu(t, NULL, NULL);

	switch (rnd(&t->r, 6)) {
	case 0:
		IO(t, fd, KVM_NMI, 0);
		break;
	case 1: {
		struct kvm_interrupt *i = (void *)t->buf;

		i->irq = chance(&t->r, 85) ? rnd(&t->r, 256) : rng_u32(&t->r);
		IO(t, fd, KVM_INTERRUPT, argp(t, i, sizeof(*i)));
		break;
	}
	case 2:
		IO(t, fd, KVM_SMI, 0);
		break;
	case 3:
		IO(t, fd, KVM_KVMCLOCK_CTRL, 0);
		break;
	case 4: {
		struct kvm_guest_debug *d = (void *)t->buf;
		int i;

		memset(d, 0, sizeof(*d));
		d->control = chance(&t->r, 80) ? (rnd(&t->r, 2) ? KVM_GUESTDBG_ENABLE : 0) |
						 (uint32_t)rnd(&t->r, 0x10) << 1 |
						 (uint32_t)rnd(&t->r, 0x4) << 16
					       : rng_u32(&t->r);
		for (i = 0; i < 8; i++)
			d->arch.debugreg[i] = chance(&t->r, 50) ? 0x10000 + rnd(&t->r, 64) : rnd_num(&t->r);
		IO(t, fd, KVM_SET_GUEST_DEBUG, argp(t, d, sizeof(*d)));
		break;
	}
	default: {
		struct kvm_signal_mask *m = (void *)t->buf;
		sigset_t s;

		sigemptyset(&s);
		m->len = chance(&t->r, 80) ? 8 : rng_u32(&t->r) % 130;
		rng_fill(&t->r, m->sigset, 16);
		fuzz_sanitize_sigmask(m->sigset);
		IO(t, fd, KVM_SET_SIGNAL_MASK, chance(&t->r, 20) ? NULL : m);
	}
	}
}

static void op_vcpu_misc(struct tctx *t)
{
	int fd = pick_vcpu(t, NULL, NULL);

	switch (rnd(&t->r, 9)) {
	case 0: {
		struct kvm_translation *tr = (void *)t->buf;

		memset(tr, 0, sizeof(*tr));
		tr->linear_address = chance(&t->r, 50) ? rnd(&t->r, 0x200000) : rnd_num(&t->r);
		IO(t, fd, KVM_TRANSLATE, argp(t, tr, sizeof(*tr)));
		break;
	}
	case 1: {
		struct kvm_enable_cap *c = (void *)t->buf;

		cap_args(t, c);
		if (chance(&t->r, 40))
			c->cap = KVM_CAP_ENFORCE_PV_FEATURE_CPUID;
		IO(t, fd, KVM_ENABLE_CAP, argp(t, c, sizeof(*c)));
		break;
	}
	case 2: {
		long sfd = IO(t, fd, KVM_GET_STATS_FD, 0);

		if (sfd >= 0) {
			if (pread(sfd, t->buf, 256 + rnd(&t->r, 4096), rnd(&t->r, 8192)) < 0)
				errno = 0;
			close(sfd);
		}
		break;
	}
	case 3:
		if (chance(&t->r, 50))
			IO(t, fd, KVM_GET_TSC_KHZ, 0);
		else
			IO(t, fd, KVM_SET_TSC_KHZ, chance(&t->r, 50) ? 1000000 + rnd(&t->r, 3000000) : rnd_num(&t->r));
		break;
	case 4: {
#ifdef KVM_PRE_FAULT_MEMORY
		struct kvm_pre_fault_memory *p = (void *)t->buf;

		memset(p, 0, sizeof(*p));
		p->gpa = rnd_gpa(t);
		p->size = chance(&t->r, 80) ? 0x1000 * (1 + rnd(&t->r, 64)) : rnd_num(&t->r);
		p->flags = chance(&t->r, 90) ? 0 : rnd_num(&t->r);
		IO(t, fd, KVM_PRE_FAULT_MEMORY, argp(t, p, sizeof(*p)));
#endif
		break;
	}
	case 5: {
		struct kvm_device_attr *a = (void *)t->buf;
		uint64_t *val = (void *)(t->buf + 256);

		memset(a, 0, sizeof(*a));
		a->group = chance(&t->r, 70) ? rnd(&t->r, 2) : rnd_num(&t->r);
		a->attr = chance(&t->r, 70) ? rnd(&t->r, 2) : rnd_num(&t->r);
		*val = rnd_num(&t->r);
		a->addr = chance(&t->r, 85) ? (uintptr_t)val : (uintptr_t)bad_ptr(&t->r);
		switch (rnd(&t->r, 3)) {
		case 0: IO(t, fd, KVM_HAS_DEVICE_ATTR, argp(t, a, sizeof(*a))); break;
		case 1: IO(t, fd, KVM_GET_DEVICE_ATTR, argp(t, a, sizeof(*a))); break;
		default: IO(t, fd, KVM_SET_DEVICE_ATTR, argp(t, a, sizeof(*a)));
		}
		break;
	}
	case 6: {
		uint64_t *mcg = (void *)t->buf;

		*mcg = rnd_num(&t->r);
		IO(t, fd, KVM_X86_SETUP_MCE, argp(t, mcg, 8));
		break;
	}
	case 7: {
		struct kvm_nested_state *n = (void *)t->buf;

		memset(n, 0, 0x3000);
		n->size = chance(&t->r, 70) ? 0x3000 : rng_u32(&t->r);
		if (!IO(t, fd, KVM_GET_NESTED_STATE, argp(t, n, sizeof(*n))) || chance(&t->r, 30)) {
			shape(t, style(t), n, sizeof(*n));
			IO(t, fd, KVM_SET_NESTED_STATE, argp(t, n, sizeof(*n)));
		}
		break;
	}
	default: {
		unsigned long req = rnd_req(t);

		rng_fill(&t->r, t->buf, 0x200);
		xio(t, fd, req, (unsigned long)t->buf, "vcpu-random-ioctl");
	}
	}
}

/* ---- Chaos: fds, mappings, backing memory ------------------------------------------------ */

static void op_close_dup(struct tctx *t)
{
	int vmi = rnd(&t->r, NVM), ci = rnd(&t->r, NVCPU), c = rnd(&t->r, 6);
	int *slot = c < 3 ? &W.vcpu_fd[vmi][ci] : &W.vm_fd[vmi];
	int fd = *slot, other;

	if (fd < 3)
		return;
	switch (c % 3) {
	case 0:
		vlog(t, "close %s fd %d", c < 3 ? "vcpu" : "vm", fd);
		*slot = -1;
		close(fd);
		/* Recreate, sometimes on another thread's heels: the number is reused soon. */
		if (c >= 3 && chance(&t->r, 80))
			vm_add(vmi);
		break;
	case 1:
		/* dup2 another file (an eventfd, a VM, the device) over the fd. */
		other = (int[]){ W.efd[0], W.vm_fd[rnd(&t->r, NVM)], W.sys_fd }[rnd(&t->r, 3)];
		vlog(t, "dup2 %d over %d", other, fd);
		if (other >= 0)
			dup2(other, fd);
		break;
	default:
		/* Keep the number, but point it at a fresh duplicate of itself. */
		other = dup(fd);
		if (other >= 0) {
			dup2(other, fd);
			close(other);
		}
	}
}

static void op_mmap_run(struct tctx *t)
{
	int fd = pick_vcpu(t, NULL, NULL);
	long pages[] = { 0, 1, KVM_COALESCED_MMIO_PAGE_OFFSET, 3, 4, rnd(&t->r, 1 << 20),
			 KVM_DIRTY_LOG_PAGE_OFFSET, KVM_DIRTY_LOG_PAGE_OFFSET + rnd(&t->r, 20) };
	long off = pages[rnd(&t->r, 8)] * 4096;
	size_t len = chance(&t->r, 70) ? 4096 : 4096 * (1 + rnd(&t->r, 8));
	int prot = chance(&t->r, 80) ? PROT_READ | PROT_WRITE : PROT_READ | (chance(&t->r, 50) ? PROT_EXEC : 0);
	int flags = chance(&t->r, 85) ? MAP_SHARED : MAP_PRIVATE;
	uint8_t *p;

	if (chance(&t->r, 10))
		fd = W.vm_fd[rnd(&t->r, NVM)];
	p = mmap(NULL, len, prot, flags, fd, off);
	vlog(t, "mmap fd %d off %#lx len %#zx -> %p", fd, off, len, p);
	if (p == MAP_FAILED)
		return;
	FUZZ_TRY({
		volatile uint8_t sum = 0;
		size_t i;

		for (i = 0; i < len; i += 512)
			sum += p[i];
		if (prot & PROT_WRITE)
			p[rnd(&t->r, len)] = rng_u32(&t->r);
	});
	if (off >= KVM_DIRTY_LOG_PAGE_OFFSET * 4096 && (prot & PROT_WRITE)) {
		/* A dirty ring consumer: mark entries collected, some with junk in them. */
		struct kvm_dirty_gfn *e = (void *)p;
		size_t i;

		FUZZ_TRY({
			for (i = 0; i < len / sizeof(*e); i++) {
				if (chance(&t->r, 10)) {
					e[i].slot = chance(&t->r, 50) ? rnd(&t->r, NSLOT) : rng_u32(&t->r);
					e[i].offset = chance(&t->r, 50) ? rnd(&t->r, 64) : rnd_num(&t->r);
				}
				if (e[i].flags & KVM_DIRTY_GFN_F_DIRTY || chance(&t->r, 5))
					e[i].flags = chance(&t->r, 90) ? KVM_DIRTY_GFN_F_RESET : rng_u32(&t->r);
			}
		});
	}
	if (chance(&t->r, 30)) {
		/* A coalesced ring consumer: advance "first" to "last" the way a VMM would. */
		FUZZ_TRY({
			struct kvm_coalesced_mmio_ring *ring = (void *)p;

			if (off == KVM_COALESCED_MMIO_PAGE_OFFSET * 4096 && (prot & PROT_WRITE))
				ring->first = chance(&t->r, 80) ? ring->last : rng_u32(&t->r);
		});
	}
	munmap(p, len);
}

/* Remaps, protects, discards or scribbles on the memory behind a memory slot. */
static void op_churn_memory(struct tctx *t)
{
	int vmi = rnd(&t->r, NVM), s = chance(&t->r, 3) ? 0 : 1 + rnd(&t->r, NSLOT - 1);
	uint8_t *chunk = pool + ((size_t)vmi * NSLOT + s) * CHUNK;
	size_t off = rnd(&t->r, CHUNK / 4096) * 4096, len = 4096 * (1 + rnd(&t->r, 64));
	int c = rnd(&t->r, 10);

	if (off + len > CHUNK)
		len = CHUNK - off;
	vlog(t, "churn vm %d chunk %d off %#zx len %#zx how %d", vmi, s, off, len, c);
	switch (c) {
	case 0:
		/* As if unmapped: a PROT_NONE mapping replaces it (no hole for others to fill). */
		mmap(chunk + off, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
		break;
	case 1:
	case 2:
		mmap(chunk + off, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
		break;
	case 3:
		mprotect(chunk + off, len, (int[]){ PROT_NONE, PROT_READ, PROT_READ | PROT_WRITE }[rnd(&t->r, 3)]);
		break;
	case 4:
		madvise(chunk + off, len, chance(&t->r, 50) ? MADV_DONTNEED : MADV_FREE);
		break;
	case 5: {
		/* Shared memfd memory, sometimes read-only and sealed. */
		int mfd = memfd_create("fuzz", MFD_CLOEXEC | MFD_ALLOW_SEALING);

		if (mfd < 0)
			break;
		if (!ftruncate(mfd, len)) {
			int ro = chance(&t->r, 50);

			if (ro)
				fcntl(mfd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW);
			mmap(chunk + off, len, ro ? PROT_READ : PROT_READ | PROT_WRITE,
			     MAP_SHARED | MAP_FIXED, mfd, 0);
		}
		close(mfd);
		break;
	}
	case 6:
		/* The run page of a vCPU mapped as the backing of guest memory. */
		if (W.vcpu_fd[vmi][0] >= 0)
			mmap(chunk + off, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
			     W.vcpu_fd[vmi][0], 0);
		break;
	default: {
		/* Random contents (guest code and data of the runner's walk too). */
		size_t n = len < 0x4000 ? len : 0x4000;

		rng_fill(&t->r, t->buf, n);
		FUZZ_TRY(memcpy(chunk + off, t->buf, n));
	}
	}
}

/* ---- The runner thread ------------------------------------------------------------------- */

static void runner_setup(struct rng *r, int vmi, int ci)
{
	int fd = W.vcpu_fd[vmi][ci];
	uint8_t *mem = pool + (size_t)vmi * NSLOT * CHUNK;
	struct kvm_sregs sregs;
	struct kvm_regs regs;
	static const uint32_t masks[] = { 0xffffc, 0xfffffc, 0x3fffffc, 0xfffffffc };

	FUZZ_TRY({
		guest_load(mem, GUEST_CODE_GPA, runner_guest);
		guest_gdt_init(mem);
	});
	memset(&sregs, 0, sizeof(sregs));
	if (fuzz_count(ioctl(fd, KVM_GET_SREGS, &sregs), errno))
		return;
	sregs.cs = seg_code32();
	sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = seg_data();
	sregs.tr = seg_tss();
	sregs.gdt.base = GUEST_GDT_GPA;
	sregs.gdt.limit = GDT_LIMIT;
	sregs.idt.base = GUEST_IDT_GPA;
	sregs.idt.limit = 0x7ff;
	sregs.cr0 = CR0_PE | CR0_ET | CR0_NE;
	sregs.cr4 = 0;
	sregs.efer = 0;
	fuzz_count(ioctl(fd, KVM_SET_SREGS, &sregs), errno);
	memset(&regs, 0, sizeof(regs));
	regs.rip = chance(r, 90) ? GUEST_CODE_GPA : rnd(r, CHUNK);
	regs.rflags = 2;
	regs.rsi = rng_u32(r);
	regs.rbp = masks[rnd(r, 4)];
	regs.rdi = chance(r, 80) ? RUNNER_GPA_BASE : rnd(r, 2) ? 0 : 0xd0000000;
	regs.rcx = regs.rdx = 1 + rnd(r, 2000);
	regs.rsp = GUEST_STACK_TOP;
	fuzz_count(ioctl(fd, KVM_SET_REGS, &regs), errno);
}

struct runner_arg {
	int id;
	uint64_t epoch;
};

/* Answers the runner's exit (IN data, MMIO read data, MSR exits); returns whether to reset. */
static __attribute__((noinline)) int runner_answer(struct rng *r, struct kvm_run *run)
{
	static __thread int reset;

	reset = 0;
	if (!run)
		return 0;
	FUZZ_TRY({
		switch (run->exit_reason) {
		case KVM_EXIT_IO:
			if (run->io.direction == KVM_EXIT_IO_IN && run->io.data_offset + 8 <= (uint64_t)run_size)
				rng_fill(r, (uint8_t *)run + run->io.data_offset, 8);
			break;
		case KVM_EXIT_MMIO:
			if (!run->mmio.is_write)
				rng_fill(r, run->mmio.data, 8);
			break;
		case KVM_EXIT_X86_RDMSR:
		case KVM_EXIT_X86_WRMSR:
			run->msr.error = rnd(r, 2);
			run->msr.data = rng_u64(r);
			break;
		default:
			/* HLT, SHUTDOWN, FAIL_ENTRY, INTERNAL_ERROR and the rest: start over. */
			reset = 1;
		}
	});
	return reset;
}

static void *runner_thread(void *p)
{
	struct runner_arg *a = p;
	struct rng r = rng_derive(opts.seed, a->epoch, 100);
	int vmi = 0, ci = 0, fresh = 1, err;

	fuzz_thread_name = "runner";
	fuzz_thread_timer();
	while (!W.stop) {
		struct kvm_run *run;
		int fd;

		fuzz_busy(a->id, "runner");
		if (fresh || chance(&r, 2)) {
			vmi = rnd(&r, NVM);
			ci = rnd(&r, NVCPU);
			if (W.vm_fd[vmi] < 0)
				continue;
			if (W.vcpu_fd[vmi][ci] < 0)
				vcpu_add(vmi, ci, rnd(&r, 8));
			if (W.vcpu_fd[vmi][ci] < 0) {
				usleep(1000);
				continue;
			}
			slot0_install(vmi);
			runner_setup(&r, vmi, ci);
			fresh = 0;
		}
		fd = W.vcpu_fd[vmi][ci];
		run = W.run[vmi][ci];
		fuzz_doing[a->id] = "runner KVM_RUN";
		fuzz_run(fd, 1000 + rnd(&r, 20000), &err);
		__atomic_add_fetch(&total_runs, 1, __ATOMIC_RELAXED);
		fuzz_idle(a->id);
		if (err) {
			if (err != EINTR && err != EAGAIN)
				fresh = 1;
			continue;
		}
		__atomic_add_fetch(&total_exits, 1, __ATOMIC_RELAXED);
		if (runner_answer(&r, run))
			fresh = 1;
	}
	fuzz_thread_timer_delete();
	fuzz_busy_since[a->id] = 0;
	fuzz_doing[a->id] = NULL;
	return NULL;
}

/* ---- Workers ------------------------------------------------------------------------------ */

struct op {
	const char *name;
	int weight;
	void (*fn)(struct tctx *t);
};

static const struct op ops[] = {
	{ "sys_simple", 3, op_sys_simple },
	{ "sys_cpuid", 2, op_sys_cpuid },
	{ "sys_msr_lists", 2, op_sys_msr_lists },
	{ "sys_get_msrs", 2, op_sys_get_msrs },
	{ "sys_create_vm", 1, op_sys_create_vm },
	{ "sys_attr", 1, op_sys_attr },
	{ "vm_set_mem", 8, op_vm_set_mem },
	{ "vm_set_mem2", 3, op_vm_set_mem2 },
	{ "vm_create_vcpu", 2, op_vm_create_vcpu },
	{ "vm_dirty_log", 4, op_vm_dirty_log },
	{ "vm_irqfd", 2, op_vm_irqfd },
	{ "vm_ioeventfd", 3, op_vm_ioeventfd },
	{ "vm_msi", 3, op_vm_msi },
	{ "vm_gsi_routing", 2, op_vm_gsi_routing },
	{ "vm_coalesced", 3, op_vm_coalesced },
	{ "vm_enable_cap", 4, op_vm_enable_cap },
	{ "vm_misc", 5, op_vm_misc },
	{ "vm_irqchip", 2, op_vm_irqchip },
	{ "vm_msr_filter", 2, op_vm_msr_filter },
	{ "vcpu_run", 6, op_vcpu_run },
	{ "vcpu_state", 14, op_vcpu_state },
	{ "vcpu_xsave2", 2, op_vcpu_xsave2 },
	{ "vcpu_msrs", 6, op_vcpu_msrs },
	{ "vcpu_one_reg", 2, op_vcpu_one_reg },
	{ "vcpu_cpuid", 3, op_vcpu_cpuid },
	{ "vcpu_events", 5, op_vcpu_events },
	{ "vcpu_misc", 6, op_vcpu_misc },
	{ "close_dup", 1, op_close_dup },
	{ "mmap_run", 2, op_mmap_run },
	{ "churn_memory", 5, op_churn_memory },
};
#define N_OPS (int)(sizeof(ops) / sizeof(ops[0]))

static int total_weight;
static long ops_budget;	/* remaining operations of the campaign (-n), or LONG_MAX */

static int campaign_over(void)
{
	return (opts.seconds && monotonic_ms() - start_ms >= opts.seconds * 1000) ||
	       __atomic_load_n(&ops_budget, __ATOMIC_RELAXED) <= 0;
}

struct worker_arg {
	int id;
	uint64_t epoch;
};

static void *worker_thread(void *p)
{
	struct worker_arg *a = p;
	struct tctx t = { .id = a->id, .r = rng_derive(opts.seed, a->epoch, a->id) };
	long i;

	fuzz_thread_name = t.what;
	t.buf = mmap(NULL, TBUF_SIZE + 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (t.buf == MAP_FAILED)
		BAIL("mmap");
	mprotect(t.buf + TBUF_SIZE, 4096, PROT_NONE);
	fuzz_thread_timer();
	for (i = 0; i < EPOCH_OPS && !W.stop; i++) {
		int w = rnd(&t.r, total_weight), k;

		for (k = 0; w >= ops[k].weight; k++)
			w -= ops[k].weight;
		if (__atomic_sub_fetch(&ops_budget, 1, __ATOMIC_RELAXED) < 0 ||
		    (opts.seconds && monotonic_ms() - start_ms >= opts.seconds * 1000))
			break;
		t.ops = __atomic_add_fetch(&total_ops, 1, __ATOMIC_RELAXED);
		snprintf(t.what, sizeof(t.what), "%s", ops[k].name);
		fuzz_busy(t.id, t.what);
		FUZZ_TRY(ops[k].fn(&t));
		fuzz_idle(t.id);
		if (t.ops % opts.progress == 0)
			printf("# progress: %ld ops, %ld ioctls, %ld runs, %ld s (epoch %llu, thread %d at %s)\n",
			       t.ops, __atomic_load_n(&fuzz_ioctls, __ATOMIC_RELAXED),
			       __atomic_load_n(&total_runs, __ATOMIC_RELAXED),
			       (monotonic_ms() - start_ms) / 1000, (unsigned long long)a->epoch, t.id,
			       ops[k].name);
	}
	fuzz_thread_timer_delete();
	fuzz_busy_since[t.id] = 0;
	fuzz_doing[t.id] = NULL;
	munmap(t.buf, TBUF_SIZE + 4096);
	return NULL;
}

static void learn_device(void)
{
	int sys = kvm_open(), vm, v;
	struct kvm_msr_list *l = calloc(1, sizeof(*l) + 4 * 512);

	run_size = ioctl(sys, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (run_size <= 0)
		BAIL("KVM_GET_VCPU_MMAP_SIZE");
	max_vcpu_id = ioctl(sys, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPU_ID);
	xsave2_size = ioctl(sys, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
	cpuid = supported_cpuid(sys);
	l->nmsrs = 512;
	if (!ioctl(sys, KVM_GET_MSR_INDEX_LIST, l))
		memcpy(msr_idx, l->indices, (n_msr = l->nmsrs) * 4);
	l->nmsrs = 128;
	if (!ioctl(sys, KVM_GET_MSR_FEATURE_INDEX_LIST, l))
		memcpy(feat_idx, l->indices, (n_feat = l->nmsrs) * 4);
	free(l);
	/* The KVM_CAP_XSAVE2 size can also be read from a VM. */
	vm = ioctl(sys, KVM_CREATE_VM, 0);
	if (vm >= 0) {
		v = ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
		if (v > 0)
			xsave2_size = v;
		close(vm);
	}
	close(sys);
}

static void campaign(void)
{
	pthread_t th[FUZZ_MAX_THREADS + 1];
	struct worker_arg wa[FUZZ_MAX_THREADS];
	struct runner_arg ra;
	uint64_t epoch;
	int i, nthreads = opts.threads > FUZZ_MAX_THREADS - 1 ? FUZZ_MAX_THREADS - 1 : opts.threads;

	for (i = 0; i < N_OPS; i++)
		total_weight += ops[i].weight;
	ops_budget = opts.iterations ? opts.iterations : LONG_MAX;
	for (epoch = 0; !campaign_over(); epoch++) {
		struct rng r = rng_derive(opts.seed, epoch, 99);

		world_create(&r);
		for (i = 0; i < nthreads; i++) {
			wa[i] = (struct worker_arg){ i, epoch };
			if (pthread_create(&th[i], NULL, worker_thread, &wa[i]))
				BAIL("pthread_create");
		}
		ra = (struct runner_arg){ nthreads, epoch };
		if (pthread_create(&th[nthreads], NULL, runner_thread, &ra))
			BAIL("pthread_create");
		for (i = 0; i < nthreads; i++)
			pthread_join(th[i], NULL);
		W.stop = 1;
		pthread_join(th[nthreads], NULL);
		world_destroy();
		total_epochs++;
	}
}

/* ---- Invariants after the campaign ---------------------------------------------------------- */

/* A fresh VM with one vCPU runs a real-mode guest to its OUT and HLT. */
static int check_fresh_vm(char *diag, size_t n)
{
	struct guest g = guest_create();
	int ok;

	guest_load(g.mem, 0x1000, check_guest);
	vcpu_set_real_mode(&g.v, 0x1000);
	int err;

	ok = !fuzz_run(g.v.fd, 2000000, &err) && is_out(&g.v, 0x10, 1) && *io_data(&g.v) == 0x42;
	snprintf(diag, n, "first exit %s (%s)", exit_str(&g.v), errno_name(err));
	if (ok) {
		ok = !fuzz_run(g.v.fd, 2000000, &err) && g.v.run->exit_reason == KVM_EXIT_HLT;
		snprintf(diag, n, "second exit %s (%s)", exit_str(&g.v), errno_name(err));
	}
	guest_destroy(&g);
	return ok;
}

/*
 * A memory slot backed by a read-only shared mapping of a write-sealed memfd: the guest's
 * writes must not reach the file (KVM refuses the writable mapping: KVM_RUN -> EFAULT,
 * or some other exit); the file must still hold its pattern.
 */
static int check_ro_backing(char *diag, size_t n)
{
	struct guest g = guest_create();
	int mfd = memfd_create("fuzz-ro", MFD_CLOEXEC | MFD_ALLOW_SEALING), err, ok = 1, i;
	struct kvm_userspace_memory_region r = { .slot = 1, .guest_phys_addr = 0x200000,
						 .memory_size = 0x1000 };
	uint32_t word;
	long ret;
	uint8_t *ro;

	if (mfd < 0 || ftruncate(mfd, 0x1000))
		BAIL("memfd");
	ro = mmap(NULL, 0x1000, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	memset(ro, 0x5a, 0x1000);
	munmap(ro, 0x1000);
	if (fcntl(mfd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW))
		BAIL("F_ADD_SEALS");
	ro = mmap(NULL, 0x1000, PROT_READ, MAP_SHARED, mfd, 0);
	if (ro == MAP_FAILED)
		BAIL("mmap sealed memfd");
	r.userspace_addr = (uintptr_t)ro;
	if (ioctl(g.vm.fd, KVM_SET_USER_MEMORY_REGION, &r))
		BAIL("KVM_SET_USER_MEMORY_REGION of the read-only mapping");
	guest_load(g.mem, GUEST_CODE_GPA, ro_guest);
	vcpu_set_protected_mode(&g.v, g.mem, GUEST_CODE_GPA, GUEST_STACK_TOP);
	snprintf(diag, n, "no exit");
	for (i = 0; i < 4; i++) {
		ret = fuzz_run(g.v.fd, 2000000, &err);
		snprintf(diag, n, "KVM_RUN %ld %s, exit %s", ret, errno_name(err), exit_str(&g.v));
		if (ret || g.v.run->exit_reason == KVM_EXIT_HLT)
			break;
	}
	for (i = 0; i < 0x1000; i += 4) {
		if (pread(mfd, &word, 4, i) != 4 || word != 0x5a5a5a5a) {
			ok = 0;
			snprintf(diag + strlen(diag), n - strlen(diag),
				 "; the sealed file holds %#x at offset %#x", word, i);
			break;
		}
	}
	munmap(ro, 0x1000);
	close(mfd);
	guest_destroy(&g);
	return ok;
}

int main(int argc, char **argv)
{
	const char *mark, *splat;
	char diag[256];
	long ms;

	fuzz_parse(&opts, argc, argv);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (opts.tap) {
		if (!opts.iterations && !opts.seconds)
			opts.iterations = TAP_OPS;
		opts.progress = opts.progress == 1000 ? 2000 : opts.progress;
		tap_plan(5);
	}
	printf("# fuzz_ioctl: seed %#llx, %ld ops, %ld s, %d threads + runner, device %s\n",
	       (unsigned long long)opts.seed, opts.iterations, opts.seconds, opts.threads,
	       kvm_device());
	fuzz_signals_init();
	fuzz_ptr_init();
	far_area = mmap(NULL, FAR_SIZE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (far_area == MAP_FAILED)
		BAIL("mmap of the far area");
	learn_device();
	mark = fuzz_kmsg_mark("fuzz_ioctl");
	start_ms = monotonic_ms();
	fuzz_watchdog_start();
	campaign();
	ms = monotonic_ms() - start_ms;
	fuzz_print_errnos("# ");
	printf("# summary: seed %#llx epochs %ld ops %ld ioctls %ld runs %ld exits %ld faults %ld "
	       "ms %ld ioctls/min %ld\n", (unsigned long long)opts.seed, total_epochs, total_ops,
	       fuzz_ioctls, total_runs, total_exits, fuzz_faults, ms,
	       ms ? fuzz_ioctls * 60000 / ms : 0);
	if (!opts.tap)
		return 0;
	fuzz_thread_timer();
	tap_ok(total_ops > 0 && (!opts.iterations || total_ops == opts.iterations),
	       "the campaign ran %ld operations (%ld ioctls) and the process survived",
	       total_ops, fuzz_ioctls);
	tap_ok(check_fresh_vm(diag, sizeof(diag)),
	       "after the churn, a fresh VM runs a real-mode guest to OUT 0x42 and HLT (%s)", diag);
	tap_ok(check_ro_backing(diag, sizeof(diag)),
	       "guest writes never reach a write-sealed memfd mapped read-only behind a slot (%s)",
	       diag);
	tap_ok(ioctl(kvm_open(), KVM_GET_API_VERSION, 0) == KVM_API_VERSION,
	       "the device still answers KVM_GET_API_VERSION");
	splat = mark[0] ? fuzz_kmsg_splat(mark) : NULL;
	tap_ok(!splat, "the kernel log since the start is clean%s%s",
	       splat ? ": " : "", splat ? splat : "");
	tap_done();
}

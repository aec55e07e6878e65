/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Shared pieces of the two fuzzers (fuzz_ioctl, fuzz_guest): options, a seeded PRNG per
 * thread, bounded KVM_RUN, recovery from our own faults on memory the other threads
 * unmapped, a watchdog, errno accounting and argument mutation.
 *
 * Reproducibility: every thread draws from its own PRNG, seeded from (seed, epoch,
 * thread), so the sequence of operations a thread tries is fixed by the seed; only the
 * interleaving between threads is not. With one thread (-j 1) a run is a function of the
 * seed alone (up to what the host does, e.g. TSC values and timer expiry).
 */
#ifndef RKVM_FUZZ_H
#define RKVM_FUZZ_H

#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <stddef.h>
#include <ucontext.h>

#include "rkvm_test.h"

/* ---- Options ------------------------------------------------------------------------- */

struct fuzz_opts {
	uint64_t seed;
	long iterations;	/* -n: 0 = unlimited */
	long seconds;		/* -t: 0 = unlimited */
	int verbose;		/* -v: log every operation */
	int threads;		/* -j: worker threads */
	long progress;		/* -p: a progress line every this many operations */
	int tap;		/* neither -n nor -t: the short fixed campaign of make check */
};

static inline void fuzz_usage(const char *prog)
{
	fprintf(stderr, "usage: %s [-s SEED] [-n ITERATIONS] [-t SECONDS] [-j THREADS] "
		"[-p PROGRESS_EVERY] [-v]\n", prog);
	exit(2);
}

static inline void fuzz_parse(struct fuzz_opts *o, int argc, char **argv)
{
	int c;

	while ((c = getopt(argc, argv, "s:n:t:j:p:vh")) != -1) {
		switch (c) {
		case 's': o->seed = strtoull(optarg, NULL, 0); break;
		case 'n': o->iterations = strtol(optarg, NULL, 0); o->tap = 0; break;
		case 't': o->seconds = strtol(optarg, NULL, 0); o->tap = 0; break;
		case 'j': o->threads = atoi(optarg); break;
		case 'p': o->progress = strtol(optarg, NULL, 0); break;
		case 'v': o->verbose++; break;
		default: fuzz_usage(argv[0]);
		}
	}
	/*
	 * As a TAP test (no -n/-t), the environment may lengthen the campaign: the image's
	 * /init passes FUZZ_SEED, FUZZ_SECONDS and FUZZ_ITERATIONS from the kernel command
	 * line (tools/bench/fuzz.sh); FUZZ_THREADS, FUZZ_VERBOSE and FUZZ_PROGRESS stand for -j, -v
	 * and -p.
	 */
	if (o->tap) {
		const char *e;

		if ((e = getenv("FUZZ_SEED")) && *e)
			o->seed = strtoull(e, NULL, 0);
		if ((e = getenv("FUZZ_SECONDS")) && *e)
			o->seconds = strtol(e, NULL, 0);
		if ((e = getenv("FUZZ_ITERATIONS")) && *e)
			o->iterations = strtol(e, NULL, 0);
		if ((e = getenv("FUZZ_THREADS")) && *e)
			o->threads = atoi(e);
		if ((e = getenv("FUZZ_VERBOSE")) && *e)
			o->verbose = atoi(e);
		if ((e = getenv("FUZZ_PROGRESS")) && *e)
			o->progress = strtol(e, NULL, 0);
	}
	if (o->threads < 1)
		o->threads = 1;
	if (o->progress <= 0)
		o->progress = 1000;
}

/* ---- PRNG ------------------------------------------------------------------------------ */

struct rng {
	uint64_t s;
};

/* splitmix64: tiny, statistically fine for picking cases, trivially seedable. */
static inline uint64_t rng_u64(struct rng *r)
{
	uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static inline struct rng rng_derive(uint64_t seed, uint64_t a, uint64_t b)
{
	struct rng r = { seed ^ (a * 0x100000001b3ull) ^ (b << 40) ^ 0x5eed };

	rng_u64(&r);
	return r;
}

static inline uint32_t rng_u32(struct rng *r) { return (uint32_t)rng_u64(r); }
/* A number in [0, n); n > 0. */
static inline uint64_t rnd(struct rng *r, uint64_t n) { return n ? rng_u64(r) % n : 0; }
/* True with probability pct %. */
static inline int chance(struct rng *r, int pct) { return (int)rnd(r, 100) < pct; }

static inline void rng_fill(struct rng *r, void *buf, size_t len)
{
	uint8_t *p = buf;

	while (len >= 8) {
		uint64_t v = rng_u64(r);

		memcpy(p, &v, 8);
		p += 8;
		len -= 8;
	}
	if (len) {
		uint64_t v = rng_u64(r);

		memcpy(p, &v, len);
	}
}

/* Values at the edges of common ranges. */
static const uint64_t fuzz_edges[] = {
	0, 1, 2, 3, 7, 8, 0xf, 0x10, 0x7f, 0x80, 0xff, 0x100, 0xfff, 0x1000, 0x1001,
	0x7fff, 0x8000, 0xffff, 0x10000, 0xfffff, 0x100000, 0x7fffffff, 0x80000000,
	0xfffff000, 0xffffffff, 0x100000000ull, 0xfffffffffull, 0x1000000000ull,
	0xffffffffffffull, 0x1000000000000ull, 0xfffffffffffffull, 0x10000000000000ull,
	0x7fffffffffffffffull, 0x8000000000000000ull, 0xfffffffffffff000ull,
	0xffffffffffffffffull, 0xfee00000, 0xfec00000, 0xffff800000000000ull,
};

/* A number: mostly small or an edge, sometimes fully random. */
static inline uint64_t rnd_num(struct rng *r)
{
	switch (rnd(r, 4)) {
	case 0: return rnd(r, 16);
	case 1: return fuzz_edges[rnd(r, sizeof(fuzz_edges) / sizeof(fuzz_edges[0]))];
	case 2: return fuzz_edges[rnd(r, sizeof(fuzz_edges) / sizeof(fuzz_edges[0]))] +
		       (int64_t)rnd(r, 5) - 2;
	default: return rng_u64(r);
	}
}

/* Mutates LEN bytes at BUF: a few bit flips, edge values or random runs. */
static inline void mutate(struct rng *r, void *buf, size_t len)
{
	uint8_t *p = buf;
	int n = 1 + rnd(r, 4), i;

	if (!len)
		return;
	for (i = 0; i < n; i++) {
		size_t off = rnd(r, len);

		switch (rnd(r, 5)) {
		case 0:
		case 1:
			p[off] ^= 1 << rnd(r, 8);
			break;
		case 2: {
			uint64_t v = rnd_num(r);
			size_t w = 1 << rnd(r, 4);

			if (off + w > len)
				off = len >= w ? len - w : 0, w = len < w ? len : w;
			memcpy(p + off, &v, w);
			break;
		}
		case 3:
			p[off] = rnd(r, 2) ? 0xff : 0;
			break;
		default: {
			size_t w = 1 + rnd(r, 32);

			if (off + w > len)
				w = len - off;
			rng_fill(r, p + off, w);
		}
		}
	}
}

/*
 * KVM_CAP_X86_DISABLE_EXITS lets a guest run HLT and MWAIT natively. Under Bochs that is
 * a hazard of the emulator, not of the hypervisor: with kvm-intel, fuzz_guest (seed
 * 0x2026, FUZZ_UNSAFE_EXITS=1) stopped the whole machine after 18,500 programs, its last
 * act an HLT with IF clear. The fuzzers keep those exits unless FUZZ_UNSAFE_EXITS=1.
 */
static inline uint64_t fuzz_disable_exits_mask(void)
{
	const char *e = getenv("FUZZ_UNSAFE_EXITS");

	return e && *e == '1' ? ~0ull : ~3ull; /* KVM_X86_DISABLE_EXITS_MWAIT | _HLT */
}

/*
 * FUZZ_AVOID=fpu steers around a known host crash so a campaign can find the next one:
 * MXCSR values with reserved bits (16-31) in KVM_SET_FPU and KVM_SET_XSAVE are cleared.
 */
static inline int fuzz_avoid(const char *what)
{
	const char *e = getenv("FUZZ_AVOID");

	return e && strstr(e, what);
}

static inline void fuzz_sanitize_fpu(void *fpu_or_xsave, int is_xsave)
{
	uint8_t *p = fpu_or_xsave;
	uint32_t mxcsr;
	size_t off = is_xsave ? 24 : offsetof(struct kvm_fpu, mxcsr);

	if (!fuzz_avoid("fpu"))
		return;
	memcpy(&mxcsr, p + off, 4);
	mxcsr &= 0xffff;
	memcpy(p + off, &mxcsr, 4);
}

/* ---- Bad pointers ------------------------------------------------------------------------ */

static uint8_t *fuzz_ro_page;	   /* a read-only page */
static uint8_t *fuzz_hole;	   /* an address nothing is mapped at (kept reserved) */

static inline void fuzz_ptr_init(void)
{
	fuzz_ro_page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (fuzz_ro_page == MAP_FAILED)
		BAIL("mmap");
	memset(fuzz_ro_page, 0x5a, 4096);
	mprotect(fuzz_ro_page, 4096, PROT_READ);
	/* A PROT_NONE reservation is "unmapped" for access purposes and never reused. */
	fuzz_hole = inaccessible_page();
}

/* A pointer that must not work: NULL, kernel, PROT_NONE, read-only, non-canonical, -1. */
static inline void *bad_ptr(struct rng *r)
{
	switch (rnd(r, 7)) {
	case 0: return NULL;
	case 1: return KERNEL_ADDR;
	case 2: return fuzz_hole;
	case 3: return fuzz_ro_page;
	case 4: return (void *)0x8000000000000000ull;
	case 5: return (void *)(uintptr_t)(0x1000 + rnd(r, 0x10000));
	default: return (void *)-1L;
	}
}

/* ---- Recovering from our own faults ------------------------------------------------------ */

/*
 * Threads touch memory that other threads remap (run pages, guest memory): a SIGSEGV or
 * SIGBUS there returns to the operation's FUZZ_TRY point instead of killing the process.
 */
/*
 * volatile, and fenced in FUZZ_TRY: otherwise the compiler may drop or move the stores
 * around the protected code (a memcpy or plain loads do not "read" fuzz_jb), and a fault
 * finds no landing point (seen: the runner's guest_load into a page another thread had
 * made read-only killed the process).
 */
static __thread sigjmp_buf *volatile fuzz_jb;
static long fuzz_faults;

static __thread const char *fuzz_thread_name = "main";

static void fuzz_fault_handler(int sig, siginfo_t *si, void *uc_)
{
	ucontext_t *uc = uc_;
	char msg[256];
	int n;

	if (fuzz_jb) {
		__atomic_add_fetch(&fuzz_faults, 1, __ATOMIC_RELAXED);
		siglongjmp(*fuzz_jb, 1);
	}
	/* A fault of the fuzzer itself: say where, then die of it. */
	n = snprintf(msg, sizeof(msg), "# fatal signal %d (code %d) at address %p, rip %#llx, thread %s\n",
		     sig, si->si_code, si->si_addr, (unsigned long long)uc->uc_mcontext.gregs[REG_RIP],
		     fuzz_thread_name);
	if (write(1, msg, n) < 0)
		n = 0;
	signal(sig, SIG_DFL);
	raise(sig);
}

/* Runs STMT; a fault of ours inside it abandons it (FUZZ_TRYs nest). */
#define FUZZ_TRY(stmt)                                                                     \
	do {                                                                               \
		sigjmp_buf __jb, *__outer = fuzz_jb;                                       \
		if (!sigsetjmp(__jb, 1)) {                                                 \
			fuzz_jb = &__jb;                                                   \
			__asm__ __volatile__("" ::: "memory");                             \
			stmt;                                                              \
			__asm__ __volatile__("" ::: "memory");                             \
		}                                                                          \
		fuzz_jb = __outer;                                                         \
	} while (0)

/* ---- Bounded KVM_RUN ------------------------------------------------------------------- */

/*
 * Each thread that runs vCPUs has a POSIX timer aimed at itself (SIGUSR2, a handler that
 * does nothing): armed before KVM_RUN, it ends a guest that never exits with EINTR. A
 * fuzzer must never block SIGUSR2 in a vCPU's signal mask (fuzz_sanitize_sigmask).
 */
#define FUZZ_RUN_SIG SIGUSR2
static __thread timer_t fuzz_timer;
static __thread int fuzz_timer_ok;
static long fuzz_ioctls;	/* every ioctl the fuzzer issued (KVM_RUN included) */
static inline long fuzz_count(long ret, int err);

static void fuzz_nop_handler(int sig) { }

static inline void fuzz_signals_init(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = fuzz_nop_handler;
	sigaction(FUZZ_RUN_SIG, &sa, NULL);
	sa.sa_handler = NULL;
	sa.sa_sigaction = fuzz_fault_handler;
	sa.sa_flags = SA_NODEFER | SA_SIGINFO;
	sigaction(SIGSEGV, &sa, NULL);
	sigaction(SIGBUS, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

static inline void fuzz_thread_timer(void)
{
	struct sigevent sev;

	memset(&sev, 0, sizeof(sev));
	sev.sigev_notify = SIGEV_THREAD_ID;
	sev.sigev_signo = FUZZ_RUN_SIG;
	sev._sigev_un._tid = syscall(SYS_gettid);
	fuzz_timer_ok = !timer_create(CLOCK_MONOTONIC, &sev, &fuzz_timer);
	if (!fuzz_timer_ok)
		BAIL("timer_create");
}

static inline void fuzz_thread_timer_delete(void)
{
	if (fuzz_timer_ok)
		timer_delete(fuzz_timer);
	fuzz_timer_ok = 0;
}

static inline void fuzz_arm(long usec)
{
	struct itimerspec it = { .it_value = { usec / 1000000, (usec % 1000000) * 1000 } };

	/* Repeats, in case the first expiry lands before the guest entry. */
	it.it_interval.tv_nsec = 2000000;
	timer_settime(fuzz_timer, 0, &it, NULL);
}

static inline void fuzz_disarm(void)
{
	struct itimerspec it;

	memset(&it, 0, sizeof(it));
	timer_settime(fuzz_timer, 0, &it, NULL);
}

/* KVM_RUN bounded by USEC microseconds of the host's clock; returns ioctl's result. */
static inline long fuzz_run(int fd, long usec, int *err)
{
	long ret;

	fuzz_arm(usec);
	errno = 0;
	ret = ioctl(fd, KVM_RUN, 0);
	*err = ret < 0 ? errno : 0;
	fuzz_disarm();
	fuzz_count(ret, *err);
	return ret;
}

/* Removes the signals the fuzzer relies on from a sigset given to KVM_SET_SIGNAL_MASK. */
static inline void fuzz_sanitize_sigmask(void *set8)
{
	uint64_t m;

	memcpy(&m, set8, 8);
	m &= ~(1ull << (FUZZ_RUN_SIG - 1) | 1ull << (SIGALRM - 1) | 1ull << (SIGSEGV - 1) |
	       1ull << (SIGBUS - 1));
	memcpy(set8, &m, 8);
}

/* ---- errno accounting -------------------------------------------------------------------- */

#define FUZZ_NERR 140
static long fuzz_errs[FUZZ_NERR];

/* Counts one ioctl and its outcome; returns ret. */
static inline long fuzz_count(long ret, int err)
{
	__atomic_add_fetch(&fuzz_ioctls, 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&fuzz_errs[ret < 0 && err > 0 && err < FUZZ_NERR ? err : 0], 1,
			   __ATOMIC_RELAXED);
	return ret;
}

static inline void fuzz_print_errnos(const char *prefix)
{
	char line[1024];
	int e, n = 0;

	n += snprintf(line + n, sizeof(line) - n, "%sresults:", prefix);
	for (e = 0; e < FUZZ_NERR; e++)
		if (fuzz_errs[e] && n < (int)sizeof(line) - 40)
			n += snprintf(line + n, sizeof(line) - n, " %s=%ld",
				      e ? errno_name(e) : "ok", fuzz_errs[e]);
	printf("%s\n", line);
}

/* ---- Watchdog ---------------------------------------------------------------------------- */

/*
 * A thread that ends the process (exit status 3, saying what every thread was doing) when
 * one operation of any thread has not returned for FUZZ_STALL_S seconds, or no operation
 * at all completed for that long; alarm() is the last resort should the watchdog itself
 * never run. A KVM_RUN is bounded by the run timer, so a stall is an ioctl that does not
 * return (or a guest the timer signal cannot stop).
 */
#define FUZZ_MAX_THREADS 8
#define FUZZ_STALL_S 120
static long fuzz_progress;		/* bumped by every operation */
static const char *volatile fuzz_doing[FUZZ_MAX_THREADS];
static volatile long fuzz_busy_since[FUZZ_MAX_THREADS];	/* ms; 0 = between operations */

/* Thread ID starts WHAT (a string that stays valid until fuzz_idle). */
static inline void fuzz_busy(int id, const char *what)
{
	fuzz_doing[id] = what;
	fuzz_busy_since[id] = monotonic_ms();
}

static inline void fuzz_idle(int id)
{
	fuzz_busy_since[id] = 0;
	__atomic_add_fetch(&fuzz_progress, 1, __ATOMIC_RELAXED);
}

static void *fuzz_watchdog(void *arg)
{
	long last = -1, since = monotonic_ms();
	int i;

	for (;;) {
		long p = __atomic_load_n(&fuzz_progress, __ATOMIC_RELAXED), now;
		int stuck = -1;

		sleep(1);
		now = monotonic_ms();
		if (p != last) {
			last = p;
			since = now;
		}
		for (i = 0; i < FUZZ_MAX_THREADS; i++)
			if (fuzz_busy_since[i] && now - fuzz_busy_since[i] > FUZZ_STALL_S * 1000)
				stuck = i;
		if (stuck < 0 && now - since <= FUZZ_STALL_S * 1000) {
			alarm(3 * FUZZ_STALL_S);
			continue;
		}
		printf("# watchdog: %s for %d s; threads are in:\n",
		       stuck >= 0 ? "an operation has not returned" : "no operation completed",
		       FUZZ_STALL_S);
		for (i = 0; i < FUZZ_MAX_THREADS; i++)
			if (fuzz_doing[i])
				printf("#   thread %d: %s (%s, for %ld ms)\n", i, fuzz_doing[i],
				       fuzz_busy_since[i] ? "busy" : "idle",
				       fuzz_busy_since[i] ? now - fuzz_busy_since[i] : 0);
		printf("Bail out! the fuzzer stalled\n");
		fflush(stdout);
		_exit(3);
	}
	return NULL;
}

static inline void fuzz_watchdog_start(void)
{
	pthread_t t;

	/* The default action of SIGALRM ends the process, whatever the threads do. */
	signal(SIGALRM, SIG_DFL);
	alarm(3 * FUZZ_STALL_S);
	if (pthread_create(&t, NULL, fuzz_watchdog, NULL))
		BAIL("pthread_create");
	pthread_detach(t);
}

/* ---- Host kernel log ------------------------------------------------------------------- */

#include <sys/klog.h>

/* The first line in the kernel log after MARK (written to /dev/kmsg) that shows a splat. */
static inline const char *fuzz_kmsg_splat(const char *mark)
{
	static char line[256];
	static const char *bad[] = { "Oops", "BUG:", "WARNING:", "Call Trace", "general protection",
				     "KASAN", "possible circular", "possible recursive", "soft lockup",
				     "rcu_sched self-detected", "rcu: INFO", "kmemleak", "Kernel panic",
				     "UBSAN" };
	int size = klogctl(10, NULL, 0);
	char *buf, *p, *end;
	unsigned int i;

	if (size <= 0)
		size = 1 << 20;
	buf = malloc(size + 1);
	if (!buf)
		return NULL;
	size = klogctl(3, buf, size);
	if (size < 0) {
		free(buf);
		return NULL;
	}
	buf[size] = 0;
	p = *mark ? strstr(buf, mark) : NULL;
	if (!p) {
		free(buf);
		return NULL;	/* the mark scrolled out (or no permission): nothing to say */
	}
	for (; *p; p = end + (*end != 0)) {
		end = strchr(p, '\n');
		if (!end)
			end = p + strlen(p);
		for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			if (memmem(p, end - p, bad[i], strlen(bad[i]))) {
				snprintf(line, sizeof(line), "%.*s", (int)(end - p), p);
				free(buf);
				return line;
			}
		}
	}
	free(buf);
	return NULL;
}

static inline const char *fuzz_kmsg_mark(const char *who)
{
	static char mark[96];
	int fd = open("/dev/kmsg", O_WRONLY);

	snprintf(mark, sizeof(mark), "%s: fuzz mark %d.%ld", who, getpid(), monotonic_ms());
	if (fd < 0 || write(fd, mark, strlen(mark)) < 0)
		mark[0] = 0;
	if (fd >= 0)
		close(fd);
	return mark;
}

#endif /* RKVM_FUZZ_H */

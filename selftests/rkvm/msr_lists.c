// SPDX-License-Identifier: GPL-2.0
/*
 * The MSR lists of the system fd and KVM_GET_MSRS on it (arch/x86/kvm/msrs.c
 * kvm_get_msr_index_list, kvm_get_feature_msr_index_list, msr_io/kvm_get_feature_msrs).
 *
 * Both lists: the count is written back whatever happens; a too-small array gives E2BIG
 * and no index; a large enough one gets exactly the indices (nothing past them); the list
 * has no duplicates and does not change between calls.
 *
 * KVM_GET_MSRS on the system fd reads feature MSRs. It returns how many entries it
 * processed: all of them for feature MSRs and for advertised MSRs (which read as 0 there),
 * and it stops at the first other MSR, whose data is zeroed; the entries after it are not
 * touched. At most 255 entries per call (nmsrs >= 256 -> E2BIG).
 */
#include "lib/rkvm_test.h"

#define MAX_IO_MSRS 256
#define BOGUS_MSR 0x12345678u
#define JUNK 0xdeadbeefcafef00dull
#define CANARY_IDX 0xa5a5a5a5u

struct list {
	uint32_t n;
	uint32_t *idx;
};

static struct kvm_msr_list *alloc_list(uint32_t room)
{
	struct kvm_msr_list *l = malloc(sizeof(*l) + (room + 8) * sizeof(uint32_t));
	uint32_t i;

	if (!l)
		BAIL("malloc");
	for (i = 0; i < room + 8; i++)
		l->indices[i] = CANARY_IDX;
	return l;
}

static int has_dup(const uint32_t *idx, uint32_t n, uint32_t *dup)
{
	uint32_t i, j;

	for (i = 0; i < n; i++)
		for (j = i + 1; j < n; j++)
			if (idx[i] == idx[j]) {
				*dup = idx[i];
				return 1;
			}
	return 0;
}

static int contains(const struct list *l, uint32_t m)
{
	uint32_t i;

	for (i = 0; i < l->n; i++)
		if (l->idx[i] == m)
			return 1;
	return 0;
}

/* The list protocol; 9 checks. Returns the list (empty on failure). */
static struct list list_protocol(int kvm, unsigned long req, const char *name)
{
	struct list out = { 0, NULL };
	struct kvm_msr_list hdr = { .nmsrs = 0 }, *l, *l2;
	struct ioctl_res res;
	uint32_t n, i, dup = 0;
	int untouched;

	res = do_ioctl(kvm, req, (unsigned long)&hdr);
	tap_ok(res.r == -1 && res.err == E2BIG, "%s(nmsrs 0) -> -1/E2BIG (got %s)", name,
	       res_str(res));
	n = hdr.nmsrs;
	if (!tap_ok(n > 0 && n < 4096, "%s(nmsrs 0) wrote back the count %u (> 0)", name, n)) {
		for (i = 0; i < 8; i++)
			tap_ok(0, "%s: no count to go on", name);
		return out;
	}

	/* One short: E2BIG, the count written back, no index written. */
	l = alloc_list(n);
	l->nmsrs = n - 1;
	res = do_ioctl(kvm, req, (unsigned long)l);
	untouched = 1;
	for (i = 0; i < n + 8; i++)
		untouched &= l->indices[i] == CANARY_IDX;
	tap_ok(res.r == -1 && res.err == E2BIG && l->nmsrs == n && untouched,
	       "%s(nmsrs %u) -> -1/E2BIG (got %s), count %u written back (want %u), no index written",
	       name, n - 1, res_str(res), l->nmsrs, n);

	/* Exactly the count. */
	l->nmsrs = n;
	res = do_ioctl(kvm, req, (unsigned long)l);
	tap_ok(res.r == 0 && l->nmsrs == n, "%s(nmsrs %u) -> 0 (got %s), nmsrs %u", name, n,
	       res_str(res), l->nmsrs);
	untouched = 1;
	for (i = 0; i < n; i++)
		untouched &= l->indices[i] != CANARY_IDX;
	for (i = n; i < n + 8; i++)
		untouched &= l->indices[i] == CANARY_IDX;
	tap_ok(untouched, "%s wrote exactly %u indices", name, n);
	tap_ok(!has_dup(l->indices, n, &dup), "%s: no duplicate index (dup %#x)", name, dup);

	/* Room to spare: the same list, the count written back, nothing past it. */
	l2 = alloc_list(n + 100);
	l2->nmsrs = n + 100;
	res = do_ioctl(kvm, req, (unsigned long)l2);
	untouched = 1;
	for (i = n; i < n + 108; i++)
		untouched &= l2->indices[i] == CANARY_IDX;
	tap_ok(res.r == 0 && l2->nmsrs == n && untouched,
	       "%s(nmsrs %u) -> 0 (got %s), nmsrs %u written back (want %u), nothing past it",
	       name, n + 100, res_str(res), l2->nmsrs, n);
	tap_ok(!memcmp(l->indices, l2->indices, n * sizeof(uint32_t)),
	       "%s: a second call returns the same list", name);
	free(l2);

	/* A header that is readable but indices that are not: EFAULT, count still written. */
	{
		struct kvm_msr_list *g = buf_before_guard(sizeof(*g));

		g->nmsrs = n;
		res = do_ioctl(kvm, req, (unsigned long)g);
		tap_ok(res.r == -1 && res.err == EFAULT && g->nmsrs == n,
		       "%s with indices in a PROT_NONE page -> -1/EFAULT (got %s), count %u written",
		       name, res_str(res), g->nmsrs);
		g->nmsrs = 0;
		res = do_ioctl(kvm, req, (unsigned long)g);
		tap_ok(res.r == -1 && res.err == E2BIG && g->nmsrs == n,
		       "%s(nmsrs 0) with indices in a PROT_NONE page -> -1/E2BIG (got %s)", name,
		       res_str(res));
	}

	out.n = n;
	out.idx = malloc(n * sizeof(uint32_t));
	if (!out.idx)
		BAIL("malloc");
	memcpy(out.idx, l->indices, n * sizeof(uint32_t));
	free(l);
	return out;
}

static struct kvm_msrs *alloc_msrs(uint32_t n)
{
	struct kvm_msrs *m = calloc(1, sizeof(*m) + n * sizeof(struct kvm_msr_entry));

	if (!m)
		BAIL("calloc");
	m->nmsrs = n;
	return m;
}

/* KVM_GET_MSRS on the system fd; 10 checks. */
static void get_msrs(int kvm, const struct list *all, const struct list *feat)
{
	struct kvm_msrs *a, *b, *m;
	struct ioctl_res res, res2;
	uint32_t i, n, k, bad;

	/* Every feature MSR, twice: all processed, the same values. */
	if (feat->n >= MAX_IO_MSRS)
		BAIL("%u feature MSRs: more than one KVM_GET_MSRS call can read", feat->n);
	a = alloc_msrs(feat->n);
	b = alloc_msrs(feat->n);
	for (i = 0; i < feat->n; i++) {
		a->entries[i].index = b->entries[i].index = feat->idx[i];
		a->entries[i].data = JUNK;
		b->entries[i].data = 0;
	}
	res = do_ioctl(kvm, KVM_GET_MSRS, (unsigned long)a);
	res2 = do_ioctl(kvm, KVM_GET_MSRS, (unsigned long)b);
	tap_ok(res.r == feat->n, "KVM_GET_MSRS(every feature MSR) -> %u (got %s)", feat->n,
	       res_str(res));
	bad = 0;
	for (i = 0; i < feat->n; i++) {
		if (a->entries[i].data != b->entries[i].data || a->entries[i].index != feat->idx[i]) {
			tap_diag("MSR %#x: %#llx then %#llx", feat->idx[i],
				 (unsigned long long)a->entries[i].data,
				 (unsigned long long)b->entries[i].data);
			bad++;
		}
	}
	tap_ok(res2.r == feat->n && !bad,
	       "reading the feature MSRs again gives the same values (%s, %u differ)",
	       res_str(res2), bad);

	/* An MSR that is neither a feature nor advertised stops the call there. */
	k = feat->n < 2 ? feat->n : 2;
	m = alloc_msrs(k + 3);
	for (i = 0; i < k + 3; i++) {
		m->entries[i].index = i < k ? feat->idx[i] : feat->idx[0];
		m->entries[i].data = JUNK;
	}
	m->entries[k].index = BOGUS_MSR;
	res = do_ioctl(kvm, KVM_GET_MSRS, (unsigned long)m);
	tap_ok(res.r == k, "KVM_GET_MSRS(%u feature MSRs, %#x, 2 more) -> %u (got %s)", k,
	       BOGUS_MSR, k, res_str(res));
	bad = 0;
	for (i = 0; i < k; i++)
		bad += m->entries[i].data != a->entries[i].data;
	tap_ok(!bad && m->entries[k].data == 0,
	       "entries before it read, its data zeroed (%#llx)",
	       (unsigned long long)m->entries[k].data);
	tap_ok(m->entries[k + 1].data == JUNK && m->entries[k + 2].data == JUNK &&
		       m->entries[k + 1].index == feat->idx[0] && m->entries[k + 2].index == feat->idx[0],
	       "entries after it untouched (%#llx %#llx)", (unsigned long long)m->entries[k + 1].data,
	       (unsigned long long)m->entries[k + 2].data);
	free(m);

	/* Advertised MSRs that are not feature MSRs read as 0 on the system fd. */
	n = 0;
	m = alloc_msrs(all->n);
	for (i = 0; i < all->n; i++) {
		if (contains(feat, all->idx[i]))
			continue;
		m->entries[n].index = all->idx[i];
		m->entries[n].data = JUNK;
		n++;
	}
	bad = 0;
	for (i = 0; i < n; i += MAX_IO_MSRS - 1) {
		struct kvm_msrs *c = alloc_msrs(n - i < MAX_IO_MSRS - 1 ? n - i : MAX_IO_MSRS - 1);
		uint32_t j;

		memcpy(c->entries, m->entries + i, c->nmsrs * sizeof(struct kvm_msr_entry));
		res = do_ioctl(kvm, KVM_GET_MSRS, (unsigned long)c);
		if (res.r != c->nmsrs) {
			tap_diag("KVM_GET_MSRS(advertised MSRs %u..%u) -> %s, stopped at %#x", i,
				 i + c->nmsrs - 1, res_str(res),
				 res.r >= 0 && res.r < c->nmsrs ? c->entries[res.r].index : 0);
			bad++;
		}
		for (j = 0; j < c->nmsrs && (long)j < res.r; j++) {
			if (c->entries[j].data) {
				tap_diag("MSR %#x reads %#llx", c->entries[j].index,
					 (unsigned long long)c->entries[j].data);
				bad++;
			}
		}
		free(c);
	}
	tap_ok(!bad, "KVM_GET_MSRS reads each of the %u advertised non-feature MSRs as 0", n);
	free(m);

	/* The size limit. */
	m = alloc_msrs(MAX_IO_MSRS);
	for (i = 0; i < MAX_IO_MSRS; i++)
		m->entries[i].index = feat->idx[0];
	m->nmsrs = MAX_IO_MSRS - 1;
	CHECK_RET(kvm, KVM_GET_MSRS, m, MAX_IO_MSRS - 1, "KVM_GET_MSRS(nmsrs 255)");
	m->nmsrs = MAX_IO_MSRS;
	CHECK_ERRNO(kvm, KVM_GET_MSRS, m, E2BIG, "KVM_GET_MSRS(nmsrs 256)");
	m->nmsrs = 0xffffffff;
	CHECK_ERRNO(kvm, KVM_GET_MSRS, m, E2BIG, "KVM_GET_MSRS(nmsrs 0xffffffff)");
	m->nmsrs = 0;
	CHECK_RET(kvm, KVM_GET_MSRS, m, 0, "KVM_GET_MSRS(nmsrs 0)");
	free(m);

	/* A readable header with unreadable entries. */
	m = buf_before_guard(sizeof(struct kvm_msrs));
	m->nmsrs = 1;
	CHECK_ERRNO(kvm, KVM_GET_MSRS, m, EFAULT, "KVM_GET_MSRS(nmsrs 1, entries in a PROT_NONE page)");
	free(a);
	free(b);
}

int main(void)
{
	struct list all, feat;
	int kvm;

	test_watchdog(60);
	kvm = kvm_open();
	REQUIRE_CAP(kvm, KVM_CAP_GET_MSR_FEATURES);
	tap_plan(2 * 10 + 11);
	all = list_protocol(kvm, KVM_GET_MSR_INDEX_LIST, "KVM_GET_MSR_INDEX_LIST");
	feat = list_protocol(kvm, KVM_GET_MSR_FEATURE_INDEX_LIST, "KVM_GET_MSR_FEATURE_INDEX_LIST");
	if (!feat.n)
		BAIL("no feature MSR to read");
	get_msrs(kvm, &all, &feat);
	tap_done();
}

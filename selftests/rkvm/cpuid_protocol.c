// SPDX-License-Identifier: GPL-2.0
/*
 * KVM_GET_SUPPORTED_CPUID and KVM_GET_EMULATED_CPUID on the system fd (arch/x86/kvm/
 * cpuid.c kvm_dev_ioctl_get_cpuid, x86.c kvm_arch_dev_ioctl).
 *
 * Protocol: nent 0 -> E2BIG; an array too small -> E2BIG with neither nent nor any entry
 * written back; nent is clamped to KVM_MAX_CPUID_ENTRIES (256) and, on success, replaced by
 * the number of entries written. The emulated list also wants every entry's padding zero
 * (EINVAL otherwise), checked over the clamped nent.
 *
 * Content (only what every KVM-compatible hypervisor must report): leaf 0 and 0x80000000
 * present and bounding their ranges, leaf 1 says "hypervisor", leaf 0x40000000 carries
 * KVM's signature and bounds its range, indexed leaves are flagged, no (function, index)
 * twice, XCR0 bits of leaf 0xd within KVM_X86_XCOMP_GUEST_SUPP.
 *
 * The first vCPU format, KVM_SET_CPUID: its entries come back from KVM_GET_CPUID2 with
 * index 0 and no flags; more than 256 entries -> E2BIG.
 */
#include "lib/rkvm_test.h"

#define KVM_MAX_CPUID_ENTRIES 256
#define JUNK 0xa5

static struct kvm_cpuid2 *alloc_cpuid(uint32_t room, uint32_t nent)
{
	size_t sz = sizeof(struct kvm_cpuid2) + room * sizeof(struct kvm_cpuid_entry2);
	struct kvm_cpuid2 *c = malloc(sz);

	if (!c)
		BAIL("malloc");
	memset(c, 0, sz);
	c->nent = nent;
	return c;
}

/* Fills the entries (not nent) with a junk pattern: padding nonzero included. */
static void fill_junk(struct kvm_cpuid2 *c, uint32_t room)
{
	memset(c->entries, JUNK, room * sizeof(struct kvm_cpuid_entry2));
}

static int all_junk(const struct kvm_cpuid2 *c, uint32_t from, uint32_t to)
{
	const uint8_t *p = (const uint8_t *)&c->entries[from];
	size_t i;

	for (i = 0; i < (to - from) * sizeof(struct kvm_cpuid_entry2); i++)
		if (p[i] != JUNK)
			return 0;
	return 1;
}

static const struct kvm_cpuid_entry2 *find(const struct kvm_cpuid2 *c, uint32_t fn, uint32_t idx)
{
	uint32_t i;

	for (i = 0; i < c->nent; i++)
		if (c->entries[i].function == fn && c->entries[i].index == idx)
			return &c->entries[i];
	return NULL;
}

/*
 * Protocol checks shared by both ioctls; 4 checks. UNREADABLE is the errno for entries
 * that cannot be accessed: EFAULT, except that KVM_GET_EMULATED_CPUID first reads every
 * entry's padding and answers EINVAL when that read faults (sanity_check_entries()).
 */
static void protocol(int kvm, unsigned long req, const char *name, int unreadable)
{
	struct kvm_cpuid2 *c = alloc_cpuid(8, 0);
	struct ioctl_res res;

	c->nent = 0;
	res = do_ioctl(kvm, req, (unsigned long)c);
	tap_ok(res.r == -1 && res.err == E2BIG && c->nent == 0,
	       "%s(nent 0) -> -1/E2BIG (got %s), nent left 0 (%u)", name, res_str(res), c->nent);
	c->nent = 0;
	res = do_ioctl(kvm, req, 0);
	tap_ok(res.r == -1 && res.err == EFAULT, "%s(NULL) -> -1/EFAULT (got %s)", name,
	       res_str(res));
	/* nent 0 fails before the entries are looked at. */
	{
		struct kvm_cpuid2 *g = buf_before_guard(sizeof(*g));

		g->nent = 0;
		res = do_ioctl(kvm, req, (unsigned long)g);
		tap_ok(res.r == -1 && res.err == E2BIG,
		       "%s(nent 0, entries in a PROT_NONE page) -> -1/E2BIG (got %s)", name,
		       res_str(res));
		g->nent = KVM_MAX_CPUID_ENTRIES;
		res = do_ioctl(kvm, req, (unsigned long)g);
		tap_ok(res.r == -1 && res.err == unreadable && g->nent == KVM_MAX_CPUID_ENTRIES,
		       "%s(nent 256, entries in a PROT_NONE page) -> -1/%s (got %s), nent %u "
		       "not written back", name, errno_name(unreadable), res_str(res), g->nent);
	}
	free(c);
}

/* KVM_GET_SUPPORTED_CPUID: 4 + 17 checks. */
static void supported(int kvm)
{
	struct kvm_cpuid2 *c, *c2;
	const struct kvm_cpuid_entry2 *e, *e0, *e8, *e4;
	struct ioctl_res res;
	uint32_t i, j, n, bad;
	char sig[13];

	protocol(kvm, KVM_GET_SUPPORTED_CPUID, "KVM_GET_SUPPORTED_CPUID", EFAULT);

	/* Too small: E2BIG, nothing written. */
	c = alloc_cpuid(KVM_MAX_CPUID_ENTRIES, 1);
	fill_junk(c, KVM_MAX_CPUID_ENTRIES);
	res = do_ioctl(kvm, KVM_GET_SUPPORTED_CPUID, (unsigned long)c);
	tap_ok(res.r == -1 && res.err == E2BIG && c->nent == 1 && all_junk(c, 0, KVM_MAX_CPUID_ENTRIES),
	       "KVM_GET_SUPPORTED_CPUID(nent 1) -> -1/E2BIG (got %s), nent (%u) and entries not written",
	       res_str(res), c->nent);
	free(c);

	/* KVM_MAX_CPUID_ENTRIES: the table, and its size in nent. */
	c = alloc_cpuid(KVM_MAX_CPUID_ENTRIES, KVM_MAX_CPUID_ENTRIES);
	fill_junk(c, KVM_MAX_CPUID_ENTRIES);
	res = do_ioctl(kvm, KVM_GET_SUPPORTED_CPUID, (unsigned long)c);
	n = c->nent;
	if (!tap_ok(res.r == 0 && n > 0 && n <= KVM_MAX_CPUID_ENTRIES,
		    "KVM_GET_SUPPORTED_CPUID(nent 256) -> 0 (got %s), nent %u in 1..256",
		    res_str(res), n))
		BAIL("no supported CPUID table to check");
	tap_ok(all_junk(c, n, KVM_MAX_CPUID_ENTRIES), "no entry written past nent %u", n);

	/* Exactly n entries is enough; one fewer is not. */
	c2 = alloc_cpuid(KVM_MAX_CPUID_ENTRIES, n);
	res = do_ioctl(kvm, KVM_GET_SUPPORTED_CPUID, (unsigned long)c2);
	tap_ok(res.r == 0 && c2->nent == n &&
		       !memcmp(c->entries, c2->entries, n * sizeof(struct kvm_cpuid_entry2)),
	       "KVM_GET_SUPPORTED_CPUID(nent %u) -> 0 (got %s), the same %u entries", n,
	       res_str(res), c2->nent);
	c2->nent = n - 1;
	res = do_ioctl(kvm, KVM_GET_SUPPORTED_CPUID, (unsigned long)c2);
	tap_ok(n == 1 || (res.r == -1 && res.err == E2BIG && c2->nent == n - 1),
	       "KVM_GET_SUPPORTED_CPUID(nent %u) -> -1/E2BIG (got %s), nent not written (%u)",
	       n - 1, res_str(res), c2->nent);
	free(c2);

	/* More than KVM_MAX_CPUID_ENTRIES: clamped, the same table. */
	c2 = alloc_cpuid(1000, 1000);
	fill_junk(c2, 1000);
	res = do_ioctl(kvm, KVM_GET_SUPPORTED_CPUID, (unsigned long)c2);
	tap_ok(res.r == 0 && c2->nent == n &&
		       !memcmp(c->entries, c2->entries, n * sizeof(struct kvm_cpuid_entry2)) &&
		       all_junk(c2, n, 1000),
	       "KVM_GET_SUPPORTED_CPUID(nent 1000) -> 0 (got %s), the same %u entries (got %u)",
	       res_str(res), n, c2->nent);
	free(c2);

	/* The entries. */
	e0 = find(c, 0, 0);
	e8 = find(c, 0x80000000, 0);
	tap_ok(e0 != NULL, "leaf 0 present");
	tap_ok(e8 != NULL && e8->eax >= 0x80000000,
	       "leaf 0x80000000 present, eax %#x >= 0x80000000", e8 ? e8->eax : 0);
	bad = 0;
	for (i = 0; i < n; i++) {
		uint32_t fn = c->entries[i].function;
		uint32_t max = 0;

		if (fn < 0x40000000)
			max = e0 ? e0->eax : 0;
		else if (fn >= 0x80000000 && fn < 0x80010000)
			max = e8 ? e8->eax : 0;
		else
			continue;
		if (fn > max) {
			tap_diag("leaf %#x above its range's maximum %#x", fn, max);
			bad++;
		}
	}
	tap_ok(!bad, "every basic leaf <= leaf 0 eax (%#x), every extended leaf <= %#x",
	       e0 ? e0->eax : 0, e8 ? e8->eax : 0);
	e = find(c, 1, 0);
	tap_ok(e && (e->ecx & (1u << 31)), "leaf 1 present with ECX bit 31 (hypervisor) set (ecx %#x)",
	       e ? e->ecx : 0);

	e4 = find(c, 0x40000000, 0);
	memset(sig, 0, sizeof(sig));
	if (e4) {
		memcpy(sig, &e4->ebx, 4);
		memcpy(sig + 4, &e4->ecx, 4);
		memcpy(sig + 8, &e4->edx, 4);
	}
	tap_ok(e4 && !memcmp(sig, "KVMKVMKVM\0\0\0", 12),
	       "leaf 0x40000000 present with signature \"KVMKVMKVM\\0\\0\\0\" (got \"%.12s\")", sig);
	bad = 0;
	for (i = 0; i < n; i++) {
		uint32_t fn = c->entries[i].function;

		if (fn > 0x40000000 && fn < 0x40010000 && (!e4 || fn > e4->eax)) {
			tap_diag("leaf %#x above leaf 0x40000000 eax %#x", fn, e4 ? e4->eax : 0);
			bad++;
		}
	}
	tap_ok(e4 && e4->eax >= 0x40000000 && !bad,
	       "leaf 0x40000000 eax %#x bounds the hypervisor leaves present", e4 ? e4->eax : 0);

	/* Indexed leaves are flagged; others have index 0. */
	bad = 0;
	for (i = 0; i < n; i++) {
		const struct kvm_cpuid_entry2 *x = &c->entries[i];
		int indexed = x->function == 4 || x->function == 7 || x->function == 0xb ||
			      x->function == 0xd;

		if (indexed && !(x->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX)) {
			tap_diag("leaf %#x index %u lacks KVM_CPUID_FLAG_SIGNIFCANT_INDEX (flags %#x)",
				 x->function, x->index, x->flags);
			bad++;
		}
	}
	tap_ok(!bad, "leaves 4, 7, 0xb, 0xd carry KVM_CPUID_FLAG_SIGNIFCANT_INDEX");
	bad = 0;
	for (i = 0; i < n; i++) {
		const struct kvm_cpuid_entry2 *x = &c->entries[i];

		if (!(x->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) && x->index) {
			tap_diag("leaf %#x: index %u without KVM_CPUID_FLAG_SIGNIFCANT_INDEX",
				 x->function, x->index);
			bad++;
		}
	}
	tap_ok(!bad, "entries without KVM_CPUID_FLAG_SIGNIFCANT_INDEX have index 0");
	bad = 0;
	for (i = 0; i < n; i++)
		for (j = i + 1; j < n; j++)
			if (c->entries[i].function == c->entries[j].function &&
			    c->entries[i].index == c->entries[j].index) {
				tap_diag("leaf %#x index %u twice", c->entries[i].function,
					 c->entries[i].index);
				bad++;
			}
	tap_ok(!bad, "no (function, index) pair twice");
	bad = 0;
	for (i = 0; i < n; i++)
		bad += c->entries[i].padding[0] || c->entries[i].padding[1] ||
		       c->entries[i].padding[2];
	tap_ok(!bad, "every entry's padding is zero (%u are not)", bad);

	/* XCR0 bits offered in leaf 0xd are bits KVM_X86_XCOMP_GUEST_SUPP allows. */
	{
		uint64_t supp = 0;
		struct kvm_device_attr attr = {
			.group = 0, .attr = KVM_X86_XCOMP_GUEST_SUPP, .addr = (uintptr_t)&supp
		};
		uint64_t xcr0;

		e = find(c, 0xd, 0);
		xcr0 = e ? ((uint64_t)e->edx << 32 | e->eax) : 0;
		res = do_ioctl(kvm, KVM_GET_DEVICE_ATTR, (unsigned long)&attr);
		tap_ok(res.r == 0 && !(xcr0 & ~supp),
		       "leaf 0xd.0 XCR0 bits %#llx within KVM_X86_XCOMP_GUEST_SUPP %#llx (%s)",
		       (unsigned long long)xcr0, (unsigned long long)supp, res_str(res));
	}
	free(c);
}

/* KVM_GET_EMULATED_CPUID: 4 + 5 checks. */
static void emulated(int kvm)
{
	struct kvm_cpuid2 *c;
	struct ioctl_res res;
	uint32_t i, bad;

	protocol(kvm, KVM_GET_EMULATED_CPUID, "KVM_GET_EMULATED_CPUID", EINVAL);

	/* Nonzero padding in any entry of the (clamped) array: EINVAL. */
	c = alloc_cpuid(KVM_MAX_CPUID_ENTRIES, KVM_MAX_CPUID_ENTRIES);
	c->entries[KVM_MAX_CPUID_ENTRIES - 1].padding[2] = 1;
	res = do_ioctl(kvm, KVM_GET_EMULATED_CPUID, (unsigned long)c);
	tap_ok(res.r == -1 && res.err == EINVAL && c->nent == KVM_MAX_CPUID_ENTRIES,
	       "KVM_GET_EMULATED_CPUID with padding[2] = 1 in entry 255 -> -1/EINVAL (got %s), "
	       "nent not written (%u)", res_str(res), c->nent);
	c->entries[KVM_MAX_CPUID_ENTRIES - 1].padding[2] = 0;
	c->entries[0].padding[0] = 0x80000000;
	res = do_ioctl(kvm, KVM_GET_EMULATED_CPUID, (unsigned long)c);
	tap_ok(res.r == -1 && res.err == EINVAL,
	       "KVM_GET_EMULATED_CPUID with padding[0] set in entry 0 -> -1/EINVAL (got %s)",
	       res_str(res));
	free(c);

	/* Zeroed padding: success, nent written back, entries consistent. */
	c = alloc_cpuid(KVM_MAX_CPUID_ENTRIES, KVM_MAX_CPUID_ENTRIES);
	res = do_ioctl(kvm, KVM_GET_EMULATED_CPUID, (unsigned long)c);
	tap_ok(res.r == 0 && c->nent <= KVM_MAX_CPUID_ENTRIES,
	       "KVM_GET_EMULATED_CPUID(nent 256, zeroed) -> 0 (got %s), nent %u <= 256",
	       res_str(res), c->nent);
	bad = 0;
	for (i = 0; i < c->nent && res.r == 0; i++) {
		uint32_t j;

		if (c->entries[i].padding[0] || c->entries[i].padding[1] || c->entries[i].padding[2])
			bad++;
		for (j = i + 1; j < c->nent; j++)
			bad += c->entries[i].function == c->entries[j].function &&
			       c->entries[i].index == c->entries[j].index;
	}
	tap_ok(!bad, "emulated entries: zero padding, no (function, index) twice (%u bad)", bad);
	free(c);

	/* The padding check covers the clamped nent only: junk past entry 255 is ignored. */
	c = alloc_cpuid(1000, 1000);
	for (i = KVM_MAX_CPUID_ENTRIES; i < 1000; i++)
		c->entries[i].padding[1] = 0xffffffff;
	res = do_ioctl(kvm, KVM_GET_EMULATED_CPUID, (unsigned long)c);
	tap_ok(res.r == 0 && c->nent <= KVM_MAX_CPUID_ENTRIES,
	       "KVM_GET_EMULATED_CPUID(nent 1000, padding junk from entry 256) -> 0 (got %s), "
	       "nent %u", res_str(res), c->nent);
	free(c);
}

/* KVM_SET_CPUID (struct kvm_cpuid): 3 checks. */
static void old_format(void)
{
	struct guest g = guest_create();
	struct kvm_cpuid *c = calloc(1, sizeof(*c) + 257 * sizeof(struct kvm_cpuid_entry));
	struct kvm_cpuid2 *back = alloc_cpuid(8, 8);
	int ok;

	if (!c)
		BAIL("calloc");
	c->nent = 2;
	c->entries[0] = (struct kvm_cpuid_entry){ .function = 0, .eax = 1, .ebx = 0x756e6547,
						   .ecx = 0x6c65746e, .edx = 0x49656e69 };
	c->entries[1] = (struct kvm_cpuid_entry){ .function = 1, .eax = 0x906a0, .ebx = 0x800,
						   .ecx = 0x80000000, .edx = 0x178bfbff };
	CHECK_RET(g.v.fd, KVM_SET_CPUID, c, 0, "KVM_SET_CPUID with 2 entries");
	if (ioctl(g.v.fd, KVM_GET_CPUID2, back))
		BAIL("KVM_GET_CPUID2");
	ok = back->nent == 2;
	for (int i = 0; ok && i < 2; i++) {
		struct kvm_cpuid_entry2 *e = &back->entries[i];
		struct kvm_cpuid_entry *o = &c->entries[i];

		ok = e->function == o->function && e->index == 0 && e->flags == 0 &&
		     e->eax == o->eax && e->ebx == o->ebx && e->ecx == o->ecx && e->edx == o->edx;
	}
	tap_ok(ok, "KVM_GET_CPUID2 returns them with index 0 and no flags (%u entries)",
	       back->nent);
	c->nent = KVM_MAX_CPUID_ENTRIES + 1;
	CHECK_ERRNO(g.v.fd, KVM_SET_CPUID, c, E2BIG, "KVM_SET_CPUID with %d entries",
		    KVM_MAX_CPUID_ENTRIES + 1);
	free(c);
	free(back);
	guest_destroy(&g);
}

int main(void)
{
	int kvm;

	test_watchdog(60);
	kvm = kvm_open();
	REQUIRE_CAP(kvm, KVM_CAP_EXT_CPUID);
	REQUIRE_CAP(kvm, KVM_CAP_EXT_EMUL_CPUID);
	tap_plan(4 + 17 + 4 + 5 + 3);
	supported(kvm);
	emulated(kvm);
	old_format();
	tap_done();
}

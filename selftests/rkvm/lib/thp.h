/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Transparent huge pages for tests of huge mappings. The kernel turns them off on
 * machines with less than 512 MiB (the test machines): thp_madvise() turns them on for
 * madvise()d memory alone, and back as they were at exit.
 */
#ifndef RKVM_THP_H
#define RKVM_THP_H

#include "rkvm_test.h"

#define THP_ENABLED "/sys/kernel/mm/transparent_hugepage/enabled"
static char thp_before[16];

/* Puts the transparent-huge-page mode back (at exit). */
static inline void thp_restore(void)
{
	FILE *f = fopen(THP_ENABLED, "w");

	if (f) {
		fputs(thp_before, f);
		fclose(f);
	}
}

/* Transparent huge pages for madvise()d memory; the old mode comes back at exit. */
static inline void thp_madvise(void)
{
	char line[128], *open, *close;
	FILE *f = fopen(THP_ENABLED, "r");

	/* "always madvise [never]": the bracketed word is the mode. */
	if (!f || !fgets(line, sizeof(line), f) || !(open = strchr(line, '[')) ||
	    !(close = strchr(open, ']')) || close - open - 1 >= (long)sizeof(thp_before))
		tap_skip_all("no transparent huge pages in this kernel");
	fclose(f);
	memcpy(thp_before, open + 1, close - open - 1);
	f = fopen(THP_ENABLED, "w");
	if (!f || fputs("madvise", f) < 0 || fclose(f))
		tap_skip_all("cannot turn transparent huge pages on");
	atexit(thp_restore);
}

/* The AnonHugePages of this process's mappings, in kB (-1 unknown). */
static inline long anon_huge_kb(void)
{
	char line[256];
	long kb = -1;
	FILE *f = fopen("/proc/self/smaps_rollup", "r");

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "AnonHugePages: %ld kB", &kb) == 1)
			break;
	if (f)
		fclose(f);
	return kb;
}

/*
 * SIZE bytes of anonymous memory at a 2 MiB aligned address, madvise()d for huge pages;
 * the whole mapping (2 MiB more) goes to *RAW for munmap.
 */
static inline uint8_t *thp_region(size_t size, uint8_t **raw)
{
	const uintptr_t mb2 = 2ul << 20;
	uint8_t *hva;

	*raw = mmap(NULL, size + mb2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (*raw == MAP_FAILED)
		BAIL("mmap");
	hva = (uint8_t *)(((uintptr_t)*raw + mb2 - 1) & ~(mb2 - 1));
	madvise(hva, size, MADV_HUGEPAGE);
	return hva;
}

#endif

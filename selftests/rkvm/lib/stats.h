/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Reading KVM's binary stats (KVM_GET_STATS_FD): the header, the descriptors and one
 * stat's value by name.
 */
#ifndef RKVM_STATS_H
#define RKVM_STATS_H

#include "rkvm_test.h"

/* KVM_STATS_NAME_SIZE. */
#define NAME_SIZE 48

struct stats {
	struct kvm_stats_header h;
	char id[NAME_SIZE];
	uint8_t *descs; /* num_desc entries of sizeof(struct kvm_stats_desc) + name_size */
	size_t desc_size;
};

static inline struct kvm_stats_desc *desc_at(struct stats *s, uint32_t i)
{
	return (struct kvm_stats_desc *)(s->descs + (size_t)i * s->desc_size);
}

static inline int stats_load(int fd, struct stats *s)
{
	size_t n;

	if (pread(fd, &s->h, sizeof(s->h), 0) != sizeof(s->h))
		return 0;
	if (s->h.name_size != NAME_SIZE || s->h.num_desc == 0 || s->h.num_desc > 1000)
		return 0;
	if (pread(fd, s->id, NAME_SIZE, s->h.id_offset) != NAME_SIZE)
		return 0;
	s->desc_size = sizeof(struct kvm_stats_desc) + s->h.name_size;
	n = s->desc_size * s->h.num_desc;
	s->descs = calloc(1, n);
	if (!s->descs || pread(fd, s->descs, n, s->h.desc_offset) != (ssize_t)n)
		return 0;
	return 1;
}

static inline struct kvm_stats_desc *stats_find(struct stats *s, const char *name)
{
	uint32_t i;

	for (i = 0; i < s->h.num_desc; i++)
		if (!strcmp(desc_at(s, i)->name, name))
			return desc_at(s, i);
	return NULL;
}

static inline uint64_t stats_value(int fd, struct stats *s, const char *name)
{
	struct kvm_stats_desc *d = stats_find(s, name);
	uint64_t v = ~0ull;

	if (d && pread(fd, &v, 8, s->h.data_offset + d->offset) != 8)
		v = ~0ull;
	return v;
}

/* The sum of the buckets of histogram NAME from bucket FIRST on (~0 if absent). */
static inline uint64_t stats_hist_sum(int fd, struct stats *s, const char *name, uint32_t first)
{
	struct kvm_stats_desc *d = stats_find(s, name);
	uint64_t b[64], sum = 0;
	uint32_t i;

	if (!d || d->size > 64 || (d->flags & KVM_STATS_TYPE_MASK) != KVM_STATS_TYPE_LOG_HIST)
		return ~0ull;
	if (pread(fd, b, d->size * 8, s->h.data_offset + d->offset) != (ssize_t)(d->size * 8))
		return ~0ull;
	for (i = first; i < d->size; i++)
		sum += b[i];
	return sum;
}

#endif /* RKVM_STATS_H */

/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Metrics mode (`kprobekit exporter`): a tool's programs count in maps
 * instead of sending events.  User space sets kk_metrics before load; the
 * verifier then drops the event path, and the event path drops this one when
 * it is off.  Maps are read at scrape time, so no record per event crosses
 * to user space.
 *
 * A counter is a hash map key -> __u64 (the key's members become labels); a
 * histogram is a one-entry array of struct kk_hist, log2 buckets as
 * histogram.bucket_of() numbers them (slot = bit length of the value).
 */
#ifndef KK_METRICS_BPF_H
#define KK_METRICS_BPF_H

#include "kprobekit.bpf.h"

const volatile bool kk_metrics = false;		/* count in maps, send no events */
const volatile __u32 kk_metrics_netns = 0;	/* count sockets of this network namespace only; 0: all */

#define KK_HIST_SLOTS 64

struct kk_hist {
	__u64 slots[KK_HIST_SLOTS];
	__u64 sum;		/* of the observed values, for Prometheus' _sum */
};

#define KK_COUNTER(name, key_t, entries)				\
struct {								\
	__uint(type, BPF_MAP_TYPE_HASH);				\
	__uint(max_entries, entries);					\
	__type(key, key_t);						\
	__type(value, __u64);						\
} name SEC(".maps")

#define KK_HISTOGRAM(name)						\
struct {								\
	__uint(type, BPF_MAP_TYPE_ARRAY);				\
	__uint(max_entries, 1);						\
	__type(key, __u32);						\
	__type(value, struct kk_hist);					\
} name SEC(".maps")

/* Adds n to map[key]; a full map counts as lost rather than growing without bound. */
static __always_inline void kk_count(void *map, const void *key, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(map, key);

	if (!v) {
		if (!bpf_map_update_elem(map, key, &n, BPF_NOEXIST))
			return;
		/* another CPU inserted it first (EEXIST), or the map is full */
		v = bpf_map_lookup_elem(map, key);
		if (!v) {
			__sync_fetch_and_add(&kk_lost, 1);
			return;
		}
	}
	__sync_fetch_and_add(v, n);
}

static __always_inline void kk_observe(void *map, __u64 value)
{
	__u32 zero = 0, slot = 0;
	struct kk_hist *h = bpf_map_lookup_elem(map, &zero);
	__u64 v = value;

	if (!h)
		return;
	for (int i = 0; i < KK_HIST_SLOTS && v; i++) {
		v >>= 1;
		slot++;
	}
	__sync_fetch_and_add(&h->slots[slot & (KK_HIST_SLOTS - 1)], 1);
	__sync_fetch_and_add(&h->sum, value);
}

static __always_inline bool kk_metrics_sock_wanted(const struct sock *sk)
{
	return !kk_metrics_netns || kk_sock_netns(sk) == kk_metrics_netns;
}

#endif /* KK_METRICS_BPF_H */

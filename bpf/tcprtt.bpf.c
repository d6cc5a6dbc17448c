// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * tcprtt: the smoothed round-trip time (tcp_sock.srtt_us / 8) of TCP
 * connections, as a log2 histogram kept in the kernel: one sample per
 * received segment on an established connection.  Two backends, one object:
 *   tracepoint  tcp:tcp_probe (in tcp_rcv_established; carries srtt)
 *   kprobe      tcp_rcv_established(sk, skb)
 * With -B/--byraddr one histogram per local/remote address.
 */
#include "kk_tcp.bpf.h"

#define MAX_SLOTS 64

const volatile bool in_ms = false;		/* -m */
const volatile __u8 by_addr = 0;		/* 0, 1: local (-B), 2: remote (--byraddr) */
/* -a/-b: an address, IPv4 as IPv4-mapped IPv6 (::ffff:a.b.c.d); all zero: any */
const volatile __u8 filter_laddr[16] = {};
const volatile __u8 filter_raddr[16] = {};

/* (address, log2 slot) -> samples */
struct hkey {
	kk_addr_t addr;		/* zero unless by_addr */
	__u32 slot;
	__u8 ip;
	__u8 pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct hkey);
	__type(value, __u64);
} hist SEC(".maps");

static __always_inline bool addr_wanted(const volatile __u8 *want, const __u8 *addr, __u16 family)
{
	bool any = true, v4 = true;

	for (int i = 0; i < 16; i++) {
		if (want[i])
			any = false;
		if (i < 10 ? want[i] != 0 : i < 12 ? want[i] != 0xff : false)
			v4 = false;
	}
	if (any)
		return true;
	if (v4)
		return family == AF_INET && !__builtin_memcmp((const void *)&want[12], addr, 4);
	if (family != AF_INET6)
		return false;
	for (int i = 0; i < 16; i++)
		if (want[i] != addr[i])
			return false;
	return true;
}

static __always_inline __u32 log2_slot(__u64 v)
{
	__u32 slot = 0;

	/* bit length, as histogram.bucket_of() in user space */
	for (int i = 0; i < MAX_SLOTS && v; i++) {
		slot++;
		v >>= 1;
	}
	return slot;
}

static __always_inline int sample(const struct kk_flow *f, __u32 srtt_us)
{
	struct hkey key = {};
	__u64 one = 1, *n;

	if (!kk_flow_wanted(f) || !addr_wanted(filter_laddr, f->laddr, f->family) ||
	    !addr_wanted(filter_raddr, f->raddr, f->family))
		return 0;
	key.slot = log2_slot(in_ms ? srtt_us / 1000 : srtt_us);
	if (by_addr) {
		__builtin_memcpy(key.addr, by_addr == 1 ? f->laddr : f->raddr, 16);
		key.ip = f->ip;
	}
	n = bpf_map_lookup_elem(&hist, &key);
	if (n)
		*n += 1;	/* per-CPU: no other writer */
	else
		bpf_map_update_elem(&hist, &key, &one, BPF_NOEXIST);
	return 0;
}

SEC("?tracepoint/tcp/tcp_probe")
int tp_probe(struct trace_event_raw_tcp_probe *ctx)
{
	struct kk_flow f = {};

	/*
	 * saddr/daddr hold a struct sockaddr_in (address at byte 4) or
	 * sockaddr_in6 (at byte 8), whose first member is the family: older
	 * kernels' tcp_probe has no `family` field.
	 */
	bpf_probe_read_kernel(&f.family, 2, (void *)ctx->saddr);
	f.lport = ctx->sport;
	f.rport = ctx->dport;
	if (f.family == AF_INET) {
		bpf_probe_read_kernel(f.laddr, 4, (void *)ctx->saddr + 4);
		bpf_probe_read_kernel(f.raddr, 4, (void *)ctx->daddr + 4);
		f.ip = 4;
	} else if (f.family == AF_INET6) {
		bpf_probe_read_kernel(f.laddr, 16, (void *)ctx->saddr + 8);
		bpf_probe_read_kernel(f.raddr, 16, (void *)ctx->daddr + 8);
		f.ip = 6;
	} else {
		return 0;
	}
	return sample(&f, ctx->srtt);
}

SEC("?kprobe/tcp_rcv_established")
int BPF_KPROBE(kprobe_rcv_established, struct sock *sk)
{
	struct kk_flow f = {};

	if (!kk_flow_from_sk(&f, sk))
		return 0;
	return sample(&f, BPF_CORE_READ((struct tcp_sock *)sk, srtt_us) >> 3);
}

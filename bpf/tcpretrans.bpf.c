// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * tcpretrans: retransmitted TCP segments, and with -l tail loss probes.
 * Two backends, one object:
 *   tracepoint  tcp:tcp_retransmit_skb (the segment went out again)
 *   kprobe      tcp_retransmit_skb(sk, skb, segs), and tcp_send_loss_probe(sk) for -l
 * Both read the connection from the socket, so they report the same fields.
 * With -c nothing is sent to user space: counts per flow stay in `counts`.
 */
#include "kk_tcp.bpf.h"

#define TYPE_RETRANS	1
#define TYPE_TLP	2

const volatile bool count_mode = false;	/* -c */
const volatile bool trace_tlp = false;	/* -l */

struct event {
	kk_addr_t laddr;
	kk_addr_t raddr;
	__u64 ts_ns;
	__u32 pid;
	__u16 lport;
	__u16 rport;
	__u8 ip;
	__u8 state;
	__u8 type;		/* TYPE_RETRANS or TYPE_TLP */
};

KK_EVENTS(struct event)

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct kk_flow);
	__type(value, __u64);
} counts SEC(".maps");

static __always_inline int handle(void *ctx, const struct sock *sk, __u8 type)
{
	struct kk_flow f = {};
	struct event *e;
	__u64 one = 1, *n;

	if (!sk || !kk_flow_from_sk(&f, sk) || !kk_flow_wanted(&f))
		return 0;
	if (count_mode) {
		n = bpf_map_lookup_elem(&counts, &f);
		if (n)
			__sync_fetch_and_add(n, 1);
		else
			bpf_map_update_elem(&counts, &f, &one, BPF_NOEXIST);
		return 0;
	}
	e = kk_reserve();
	if (!e)
		return 0;
	__builtin_memcpy(e->laddr, f.laddr, 16);
	__builtin_memcpy(e->raddr, f.raddr, 16);
	e->ts_ns = bpf_ktime_get_ns();
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->lport = f.lport;
	e->rport = f.rport;
	e->ip = f.ip;
	e->state = BPF_CORE_READ(sk, __sk_common.skc_state);
	e->type = type;
	kk_submit(ctx, e);
	return 0;
}

/* The tracepoint's leading fields, laid out alike on every kernel (its BTF struct was renamed, so no CO-RE here). */
struct tp_retransmit {
	__u64 common;
	const void *skbaddr;
	const void *skaddr;
};

SEC("?tracepoint/tcp/tcp_retransmit_skb")
int tp_retransmit(struct tp_retransmit *ctx)
{
	return handle(ctx, ctx->skaddr, TYPE_RETRANS);
}

SEC("?kprobe/tcp_retransmit_skb")
int BPF_KPROBE(kprobe_retransmit, struct sock *sk)
{
	return handle(ctx, sk, TYPE_RETRANS);
}

SEC("?kprobe/tcp_send_loss_probe")
int BPF_KPROBE(kprobe_tlp, struct sock *sk)
{
	if (!trace_tlp)
		return 0;
	return handle(ctx, sk, TYPE_TLP);
}

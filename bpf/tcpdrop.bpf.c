// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * tcpdrop: TCP packets the kernel drops, with the drop reason and the kernel
 * stack.  Two backends, one object:
 *   tracepoint  skb:kfree_skb with its reason (Linux 5.17+)
 *   kprobe      the function that frees a dropped skb, whichever this kernel
 *               has: sk_skb_reason_drop(sk, skb, reason) (6.10+),
 *               kfree_skb_reason(skb, reason) (5.17+), tcp_drop(sk, skb)
 *               (older: no reason)
 * Addresses, ports and flags come from the packet's own headers; STATE from
 * the socket the kernel dropped it for, when there is one.  Reason values
 * differ between kernels, so user space names them from the kernel's BTF.
 */
#include "kk_tcp.bpf.h"
#include "kk_stack.bpf.h"

const volatile __u16 filter_ports[KK_MAX_PORTS] = {};	/* -P: either end; 0-terminated */
const volatile __u32 filter_reason = 0;			/* --reason; 0 (SKB_NOT_DROPPED_YET): any */

struct event {
	kk_addr_t saddr;
	kk_addr_t daddr;
	__u64 ts_ns;
	__u32 pid;
	__u32 reason;		/* enum skb_drop_reason of this kernel; 0: not known (tcp_drop) */
	kk_stack_t kstack;
	__u16 sport;
	__u16 dport;
	__u8 ip;
	__u8 state;		/* of the socket; 0: no socket */
	__u8 tcpflags;
	char comm[TASK_COMM_LEN];
};

KK_EVENTS(struct event)

static __always_inline int handle(void *ctx, struct sk_buff *skb, const struct sock *sk, __u32 reason)
{
	struct kk_flow f = {};
	struct event *e;
	__u8 flags = 0;

	if (filter_reason && reason != filter_reason)
		return 0;
	if (!skb || !kk_flow_from_skb(&f, skb, &flags))
		return 0;
	if (!kk_tcp_wanted(f.family, f.lport, f.rport))
		return 0;
	if (!kk_port_in(filter_ports, f.lport) && !kk_port_in(filter_ports, f.rport))
		return 0;
	e = kk_reserve();
	if (!e)
		return 0;
	__builtin_memcpy(e->saddr, f.laddr, 16);
	__builtin_memcpy(e->daddr, f.raddr, 16);
	e->ts_ns = bpf_ktime_get_ns();
	e->pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	e->reason = reason;
	e->kstack = kk_kernel_stack(ctx);
	e->sport = f.lport;
	e->dport = f.rport;
	e->ip = f.ip;
	e->state = sk ? BPF_CORE_READ(sk, __sk_common.skc_state) : 0;
	e->tcpflags = flags;
	kk_submit(ctx, e);
	return 0;
}

SEC("?tracepoint/skb/kfree_skb")
int tp_kfree_skb(struct trace_event_raw_kfree_skb *ctx)
{
	struct sk_buff *skb = ctx->skbaddr;
	struct sock *sk = NULL;

	/* rx_sk (6.10+): the socket a received packet was dropped for; else the owner of a sent one */
	if (bpf_core_field_exists(ctx->rx_sk))
		sk = ctx->rx_sk;
	if (!sk)
		sk = BPF_CORE_READ(skb, sk);
	return handle(ctx, skb, sk, ctx->reason);
}

/* kfree_skb_reason() passes SKB_CONSUMED (6.2+) for packets that were not dropped */
static __always_inline bool consumed(__u32 reason)
{
	return bpf_core_enum_value_exists(enum skb_drop_reason, SKB_CONSUMED) &&
	       reason == bpf_core_enum_value(enum skb_drop_reason, SKB_CONSUMED);
}

SEC("?kprobe/sk_skb_reason_drop")
int BPF_KPROBE(kprobe_sk_skb_reason_drop, struct sock *sk, struct sk_buff *skb, __u32 reason)
{
	if (consumed(reason))
		return 0;
	return handle(ctx, skb, sk ? sk : BPF_CORE_READ(skb, sk), reason);
}

SEC("?kprobe/kfree_skb_reason")
int BPF_KPROBE(kprobe_kfree_skb_reason, struct sk_buff *skb, __u32 reason)
{
	if (consumed(reason))
		return 0;
	return handle(ctx, skb, BPF_CORE_READ(skb, sk), reason);
}

SEC("?kprobe/tcp_drop")
int BPF_KPROBE(kprobe_tcp_drop, struct sock *sk, struct sk_buff *skb)
{
	return handle(ctx, skb, sk, 0);
}

/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * TCP state changes as sock:inet_sock_set_state reports them, for tools that
 * hook it either as a plain tracepoint (fields copied by the kernel) or as
 * tp_btf (a typed struct sock *): both end up in one struct kk_transition.
 *
 * Who a transition belongs to: most happen in softirq (the handshake on the
 * server, the peer's FIN or RST, timers), where the current task is whatever
 * was running.  Only connect(), listen() and close()/shutdown() make their
 * transitions in the socket owner's task; kk_owners remembers that task per
 * socket, and the transitions the kernel makes on its own are attributed to
 * it.  A socket no task has acted on since tracing began has no known owner.
 */
#ifndef KK_TCP_STATE_BPF_H
#define KK_TCP_STATE_BPF_H

#include "kk_tcp.bpf.h"

struct kk_transition {
	struct sock *sk;
	__u8 saddr[16];
	__u8 daddr[16];
	int oldstate;
	int newstate;
	__u16 sport;
	__u16 dport;
	__u16 family;
};

/*
 * Sockets followed at once, per map: an entry lives from a socket's first
 * transition to its CLOSE, so this bounds the sockets open at the same time,
 * and past it the LRU forgets the least recently active.  10,240, as bcc's and
 * libbpf-tools' tcpstates keep: LRU maps are allocated whole at load, and
 * 65,536 entries took ~2 ms of start-up each.
 */
#define KK_SOCKETS_MAX 10240

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, KK_SOCKETS_MAX);
	__type(key, struct sock *);
	__type(value, struct kk_task);
} kk_owners SEC(".maps");

/* Transitions made only by the owner's own calls: connect(), listen(), close()/shutdown(). */
static __always_inline bool kk_in_owner_task(int oldstate, int newstate)
{
	switch (newstate) {
	case TCP_SYN_SENT:
	case TCP_LISTEN:
		return oldstate == TCP_CLOSE;
	case TCP_FIN_WAIT1:
	case TCP_LAST_ACK:
		return true;	/* tcp_close_state(), from tcp_close() or tcp_shutdown() */
	}
	return false;
}

/*
 * The transition's owner into *owner: the current task if this transition is
 * its own (and it is remembered for the socket), else the remembered one.
 * False when not known.
 */
static __always_inline bool kk_transition_owner(const struct kk_transition *t, struct kk_task *owner)
{
	struct kk_task *found;

	if (kk_in_owner_task(t->oldstate, t->newstate)) {
		kk_task_now(owner);
		bpf_map_update_elem(&kk_owners, &t->sk, owner, BPF_ANY);
		return true;
	}
	found = bpf_map_lookup_elem(&kk_owners, &t->sk);
	if (!found)
		return false;
	*owner = *found;
	return true;
}

/* After the last use of a socket's state (it reached CLOSE). */
static __always_inline void kk_forget_owner(struct sock *sk)
{
	bpf_map_delete_elem(&kk_owners, &sk);
}

/* From the plain tracepoint's copy; false if not TCP. */
static __always_inline bool kk_transition_from_tp(struct kk_transition *t,
						  const struct trace_event_raw_inet_sock_set_state *ctx)
{
	if (ctx->protocol != IPPROTO_TCP)
		return false;
	t->sk = (struct sock *)ctx->skaddr;
	t->oldstate = ctx->oldstate;
	t->newstate = ctx->newstate;
	t->sport = ctx->sport;
	t->dport = ctx->dport;
	t->family = ctx->family;
	/* copied with a helper: the verifier refuses ctx accesses at computed offsets */
	if (t->family == AF_INET6) {
		bpf_probe_read_kernel(t->saddr, 16, ctx->saddr_v6);
		bpf_probe_read_kernel(t->daddr, 16, ctx->daddr_v6);
	} else {
		bpf_probe_read_kernel(t->saddr, 4, ctx->saddr);
		bpf_probe_read_kernel(t->daddr, 4, ctx->daddr);
	}
	return true;
}

/* From the socket, reading the same fields the tracepoint copies (include/trace/events/sock.h). */
static __always_inline bool kk_transition_from_sk(struct kk_transition *t, const struct sock *sk,
						  int oldstate, int newstate)
{
	const struct inet_sock *inet = (const struct inet_sock *)sk;

	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return false;
	t->sk = (struct sock *)sk;
	t->oldstate = oldstate;
	t->newstate = newstate;
	t->sport = bpf_ntohs(BPF_CORE_READ(inet, inet_sport));
	t->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	t->family = kk_sock_family(sk);
	if (t->family == AF_INET6) {
		bpf_core_read(t->saddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(t->daddr, 16, &sk->__sk_common.skc_v6_daddr);
	} else {
		bpf_core_read(t->saddr, 4, &inet->inet_saddr);
		bpf_core_read(t->daddr, 4, &sk->__sk_common.skc_daddr);
	}
	return true;
}

#endif /* KK_TCP_STATE_BPF_H */

// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * tcpstates: every TCP state change, with the time spent in the previous
 * state.  Two backends, one object, both on sock:inet_sock_set_state (the
 * one hook that sees every transition: tcp_set_state() and
 * inet_sk_set_state(), e.g. a new server socket's SYN_RECV):
 *   tp_btf      typed struct sock *, the addresses read from the socket
 *   tracepoint  the tracepoint's own copy of ports and addresses
 * PID/COMM: the socket's owner, see kk_tcp_state.bpf.h.
 */
#include "kk_tcp_state.bpf.h"
#include "kk_metrics.bpf.h"


struct event {
	kk_addr_t laddr;
	kk_addr_t raddr;
	__u64 skaddr;
	__u64 ts_ns;
	__u64 delta_ns;		/* in the previous state; 0 if not seen entering it */
	__u32 pid;		/* 0: owner unknown */
	__u32 tid;
	__u32 uid;
	__s32 oldstate;
	__s32 newstate;
	__u16 lport;
	__u16 rport;
	__u8 ip;
	char comm[TASK_COMM_LEN];
};

KK_EVENTS(struct event)

/* socket -> when it entered its current state */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, KK_SOCKETS_MAX);
	__type(key, struct sock *);
	__type(value, __u64);
} entered SEC(".maps");

/* Metrics mode: transitions by (old state, new state), at most 12 x 12 keys. */
struct transition_key {
	__u32 oldstate;
	__u32 newstate;
};

KK_COUNTER(transitions, struct transition_key, 256);

static __always_inline int handle(void *ctx, const struct kk_transition *t)
{
	__u64 now = bpf_ktime_get_ns(), *since, delta;
	struct kk_task owner = {};
	bool known;
	struct event *e;

	if (t->family != AF_INET && t->family != AF_INET6)
		return 0;
	if (kk_metrics) {
		/* no owner or time kept: the counter needs neither */
		struct transition_key k = { .oldstate = t->oldstate, .newstate = t->newstate };

		if (kk_metrics_sock_wanted(t->sk))
			kk_count(&transitions, &k, 1);
		return 0;
	}
	/* every transition keeps the owner and the time up to date, filtered or not */
	known = kk_transition_owner(t, &owner);
	since = bpf_map_lookup_elem(&entered, &t->sk);
	delta = since ? now - *since : 0;

	if (t->newstate == TCP_CLOSE) {
		bpf_map_delete_elem(&entered, &t->sk);
		kk_forget_owner(t->sk);
	} else {
		bpf_map_update_elem(&entered, &t->sk, &now, BPF_ANY);
	}
	if (filter_pid && (!known || owner.pid != filter_pid))
		return 0;
	if (!kk_tcp_wanted(t->family, t->sport, t->dport))
		return 0;
	e = kk_reserve();
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	__builtin_memcpy(e->laddr, t->saddr, 16);
	__builtin_memcpy(e->raddr, t->daddr, 16);
	e->skaddr = (__u64)t->sk;
	e->ts_ns = now;
	e->delta_ns = delta;
	if (known) {
		KK_SET_TASK(e, &owner);
	}
	e->oldstate = t->oldstate;
	e->newstate = t->newstate;
	e->lport = t->sport;
	e->rport = t->dport;
	e->ip = t->family == AF_INET6 ? 6 : 4;
	kk_submit(ctx, e);
	return 0;
}

SEC("?tp_btf/inet_sock_set_state")
int BPF_PROG(btf_set_state, const struct sock *sk, const int oldstate, const int newstate)
{
	struct kk_transition t = {};

	if (!kk_transition_from_sk(&t, sk, oldstate, newstate))
		return 0;
	return handle(ctx, &t);
}

SEC("?tracepoint/sock/inet_sock_set_state")
int tp_set_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	struct kk_transition t = {};

	if (!kk_transition_from_tp(&t, ctx))
		return 0;
	return handle(ctx, &t);
}

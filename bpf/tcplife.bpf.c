// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * tcplife: TCP sessions, reported when they close, with their duration and
 * the bytes they moved.  Two backends, one object, both on
 * sock:inet_sock_set_state:
 *   tp_btf      typed struct sock *, the addresses read from the socket
 *   tracepoint  the tracepoint's own copy of ports and addresses
 * A session starts at the socket's first SYN_SENT, SYN_RECV or ESTABLISHED
 * seen; sockets opened before tracing began are not reported.  Bytes are
 * read from tcp_sock at CLOSE.  PID/COMM: the socket's owner, see
 * kk_tcp_state.bpf.h.
 */
#include "kk_tcp_state.bpf.h"
#include "kk_metrics.bpf.h"


struct event {
	kk_addr_t laddr;
	kk_addr_t raddr;
	__u64 ts_ns;
	__u64 span_ns;
	__u64 tx_bytes;
	__u64 rx_bytes;
	__u32 pid;		/* 0: owner unknown */
	__u32 tid;
	__u32 uid;
	__u16 lport;
	__u16 rport;
	__u8 ip;
	char comm[TASK_COMM_LEN];
};

KK_EVENTS(struct event)

/* socket -> when its session began */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, KK_SOCKETS_MAX);
	__type(key, struct sock *);
	__type(value, __u64);
} births SEC(".maps");

/* Metrics mode: closed sessions' durations, and their bytes by direction (0: tx, 1: rx). */
KK_HISTOGRAM(session_duration);
KK_COUNTER(session_bytes, __u32, 2);

static __always_inline int count_session(const struct kk_transition *t, __u64 span_ns)
{
	struct tcp_sock *tp = (struct tcp_sock *)t->sk;
	__u32 tx = 0, rx = 1;

	if (!kk_metrics_sock_wanted(t->sk))
		return 0;
	kk_observe(&session_duration, span_ns);
	kk_count(&session_bytes, &tx, BPF_CORE_READ(tp, bytes_acked));
	kk_count(&session_bytes, &rx, BPF_CORE_READ(tp, bytes_received));
	return 0;
}

static __always_inline int handle(void *ctx, const struct kk_transition *t)
{
	__u64 now = bpf_ktime_get_ns(), *birth, born;
	struct tcp_sock *tp = (struct tcp_sock *)t->sk;
	struct kk_task owner = {};
	struct event *e;
	bool known;

	if (t->family != AF_INET && t->family != AF_INET6)
		return 0;
	known = !kk_metrics && kk_transition_owner(t, &owner);	/* the metrics need no owner */
	if (t->newstate < TCP_FIN_WAIT1) {	/* SYN_SENT, SYN_RECV, ESTABLISHED */
		bpf_map_update_elem(&births, &t->sk, &now, BPF_NOEXIST);
		return 0;
	}
	if (t->newstate != TCP_CLOSE)
		return 0;
	birth = bpf_map_lookup_elem(&births, &t->sk);
	kk_forget_owner(t->sk);
	if (!birth)
		return 0;	/* born before tracing, or a listener */
	born = *birth;
	bpf_map_delete_elem(&births, &t->sk);
	if (filter_pid && (!known || owner.pid != filter_pid))
		return 0;
	if (!kk_tcp_wanted(t->family, t->sport, t->dport))
		return 0;
	if (kk_metrics)
		return count_session(t, now - born);
	e = kk_reserve();
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	__builtin_memcpy(e->laddr, t->saddr, 16);
	__builtin_memcpy(e->raddr, t->daddr, 16);
	e->ts_ns = now;
	e->span_ns = now - born;
	e->tx_bytes = BPF_CORE_READ(tp, bytes_acked);
	e->rx_bytes = BPF_CORE_READ(tp, bytes_received);
	if (known) {
		KK_SET_TASK(e, &owner);
	}
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

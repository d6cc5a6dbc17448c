// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* Seed 004: an event for each listen(): local address and port, network namespace, backlog. */
#include "kprobekit.bpf.h"

/* The only definition of the event: Python reads it from BTF. */
struct listen_evt_t {
	kk_addr_t laddr;
	__u32 pid;
	__u32 netns;		/* inode number, as in /proc/PID/ns/net */
	__u32 backlog;
	__u16 lport;
	__u8 ip;		/* 4 or 6: how to read laddr */
	char comm[TASK_COMM_LEN];
};
KK_RECORD(struct listen_evt_t);

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} listen_evt SEC(".maps");

static __always_inline int submit(void *ctx, struct sock *sk, __u32 backlog)
{
	struct listen_evt_t evt = {};
	__u16 family = kk_sock_family(sk);

	evt.pid = bpf_get_current_pid_tgid() >> 32;
	evt.netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	evt.backlog = backlog;
	evt.lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	evt.ip = family == AF_INET6 ? 6 : 4;
	if (family == AF_INET6)
		bpf_core_read(evt.laddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
	else
		bpf_core_read(evt.laddr, 4, &sk->__sk_common.skc_rcv_saddr);
	bpf_get_current_comm(evt.comm, sizeof(evt.comm));
	bpf_perf_event_output(ctx, &listen_evt, BPF_F_CURRENT_CPU, &evt, sizeof(evt));
	return 0;
}

/* The seed's hook: inet_listen(sock, backlog), for IPv4 and IPv6 stream sockets. */
SEC("?kprobe/inet_listen")
int BPF_KPROBE(kprobe_inet_listen, struct socket *sock, int backlog)
{
	return submit(ctx, BPF_CORE_READ(sock, sk), backlog);
}

/* Without kprobes: the socket's move to LISTEN, inside listen(); inet_listen set the backlog just before. */
SEC("?tracepoint/sock/inet_sock_set_state")
int tracepoint_inet_listen(struct trace_event_raw_inet_sock_set_state *ctx)
{
	struct sock *sk = (struct sock *)ctx->skaddr;

	if (ctx->newstate != TCP_LISTEN)
		return 0;
	return submit(ctx, sk, BPF_CORE_READ(sk, sk_max_ack_backlog));
}

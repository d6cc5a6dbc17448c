// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* Seed 000: IPv4 TCP connects, a kprobe on tcp_v4_connect stashing the socket for its kretprobe. */
#include "kprobekit.bpf.h"

struct event {
	kk_addr_t saddr;
	kk_addr_t daddr;
	__u32 pid;
	__u16 dport;
	__u8 ip;		/* 4: tells the decoder to read 4 bytes of the addresses */
	char comm[TASK_COMM_LEN];
};
KK_EVENTS(struct event)

/* thread id -> socket, from the call to its return */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32);
	__type(value, struct sock *);
} currsock SEC(".maps");

SEC("kprobe/tcp_v4_connect")
int BPF_KPROBE(trace_connect_entry, struct sock *sk)
{
	__u32 tid = bpf_get_current_pid_tgid();

	bpf_map_update_elem(&currsock, &tid, &sk, BPF_ANY);
	return 0;
}

SEC("kretprobe/tcp_v4_connect")
int BPF_KRETPROBE(trace_connect_return, int ret)
{
	__u32 tid = bpf_get_current_pid_tgid();
	struct sock **skpp = bpf_map_lookup_elem(&currsock, &tid);
	struct sock *sk;
	struct event *e;

	if (!skpp)
		return 0;	/* missed the entry */
	sk = *skpp;
	bpf_map_delete_elem(&currsock, &tid);
	if (ret)
		return 0;	/* no SYN sent: the addresses may not be set */
	e = kk_reserve();
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	e->pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_core_read(e->saddr, 4, &sk->__sk_common.skc_rcv_saddr);
	bpf_core_read(e->daddr, 4, &sk->__sk_common.skc_daddr);
	e->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	e->ip = 4;
	kk_submit(ctx, e);
	return 0;
}

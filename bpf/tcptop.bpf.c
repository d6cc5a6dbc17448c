// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * tcptop: bytes each process sends and receives per TCP connection, summed in
 * the kernel; user space reads the totals every interval.  Two backends:
 *   tracepoint  sock:sock_send_length / sock:sock_recv_length (Linux 6.5+):
 *               what sendmsg()/recvmsg() returned, in the calling task
 *   kprobe      tcp_sendmsg(sk, msg, size) and tcp_cleanup_rbuf(sk, copied)
 */
#include "kk_tcp.bpf.h"

#define MSG_PEEK 2

struct conn {
	struct kk_flow flow;
	__u32 pid;
	char comm[TASK_COMM_LEN];
};

struct bytes {
	__u64 tx;
	__u64 rx;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct conn);
	__type(value, struct bytes);
} totals SEC(".maps");

static __always_inline int account(const struct sock *sk, __s64 n, bool tx)
{
	struct conn key = {};
	struct bytes zero = {}, *b;
	__u32 pid = bpf_get_current_pid_tgid() >> 32;

	if (n <= 0 || !sk || !kk_pid_wanted(pid))
		return 0;
	if (!kk_flow_from_sk(&key.flow, sk) || !kk_flow_wanted(&key.flow))
		return 0;
	key.pid = pid;
	bpf_get_current_comm(key.comm, sizeof(key.comm));
	b = bpf_map_lookup_elem(&totals, &key);
	if (!b) {
		bpf_map_update_elem(&totals, &key, &zero, BPF_NOEXIST);
		b = bpf_map_lookup_elem(&totals, &key);
		if (!b)
			return 0;
	}
	__sync_fetch_and_add(tx ? &b->tx : &b->rx, n);
	return 0;
}

SEC("?tracepoint/sock/sock_send_length")
int tp_send(struct trace_event_raw_sock_msg_length *ctx)
{
	if (ctx->protocol != IPPROTO_TCP)
		return 0;
	return account(ctx->sk, ctx->ret, true);
}

SEC("?tracepoint/sock/sock_recv_length")
int tp_recv(struct trace_event_raw_sock_msg_length *ctx)
{
	if (ctx->protocol != IPPROTO_TCP || (ctx->flags & MSG_PEEK))
		return 0;
	return account(ctx->sk, ctx->ret, false);
}

SEC("?kprobe/tcp_sendmsg")
int BPF_KPROBE(kprobe_sendmsg, struct sock *sk, void *msg, size_t size)
{
	return account(sk, size, true);
}

SEC("?kprobe/tcp_cleanup_rbuf")
int BPF_KPROBE(kprobe_cleanup_rbuf, struct sock *sk, int copied)
{
	return account(sk, copied, false);
}

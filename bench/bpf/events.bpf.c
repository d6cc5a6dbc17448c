// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Event generator for bench/decode.py: one ring buffer record per getppid()
 * made by a process named "storm" (bench/storm.c).  The record has
 * tcpconnect's layout, so the decode figures are those of a real tool.
 */
#include "kprobekit.bpf.h"

struct event {
	kk_addr_t saddr;
	kk_addr_t daddr;
	__u64 ts_ns;
	__u32 pid;
	__u32 tid;
	__u32 uid;
	__u16 sport;
	__u16 dport;
	__u8 ip;
	char comm[TASK_COMM_LEN];
};

KK_EVENTS(struct event)

__u64 seq = 0;

SEC("tracepoint/syscalls/sys_enter_getppid")
int on_getppid(void *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	char comm[TASK_COMM_LEN];
	struct event *e;

	bpf_get_current_comm(comm, sizeof(comm));
	if (comm[0] != 's' || comm[1] != 't' || comm[2] != 'o' || comm[3] != 'r' ||
	    comm[4] != 'm' || comm[5])
		return 0;
	e = kk_reserve();
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	e->saddr[0] = 127;
	e->saddr[3] = 1;
	e->daddr[0] = 127;
	e->daddr[3] = 1;
	e->ts_ns = bpf_ktime_get_ns();
	e->pid = pid_tgid >> 32;
	e->tid = (__u32)pid_tgid;
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->sport = __sync_fetch_and_add(&seq, 1);
	e->dport = 80;
	e->ip = 4;
	__builtin_memcpy(e->comm, comm, sizeof(e->comm));
	kk_submit(ctx, e);
	return 0;
}

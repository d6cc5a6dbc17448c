// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Seed 002's two kernel modules as one BPF program: a kprobe on inet_bind
 * reports the port being bound; a kprobe and kretprobe on inet_release
 * report its return value and how long it took, and count the durations in
 * a log2 histogram.  printk becomes bpf_printk: the lines land in trace_pipe.
 */
#include "kprobekit.bpf.h"

/* thread id -> inet_release entry time (the kretprobe_instance data of the module) */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32);
	__type(value, __u64);
} start SEC(".maps");

/* log2 buckets of inet_release durations, in ns (kk_log2l: 0..64) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65);
	__type(key, __u32);
	__type(value, __u64);
} dist SEC(".maps");

SEC("kprobe/inet_bind")
int BPF_KPROBE(handler_pre, struct socket *sock, struct sockaddr *uaddr)
{
	struct sockaddr_in *addr = (struct sockaddr_in *)uaddr;
	char comm[TASK_COMM_LEN];

	bpf_get_current_comm(comm, sizeof(comm));
	bpf_printk("inet_bind name:%s pid:%d socket bind port=%d", comm,
		   bpf_get_current_pid_tgid() >> 32, bpf_ntohs(BPF_CORE_READ(addr, sin_port)));
	return 0;
}

SEC("kprobe/inet_release")
int BPF_KPROBE(entry_handler)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u32 tid = bpf_get_current_pid_tgid();
	__u64 now = bpf_ktime_get_ns();

	if (!BPF_CORE_READ(task, mm))
		return 0;	/* skip kernel threads */
	bpf_map_update_elem(&start, &tid, &now, BPF_ANY);
	return 0;
}

SEC("kretprobe/inet_release")
int BPF_KRETPROBE(ret_handler, int retval)
{
	__u32 tid = bpf_get_current_pid_tgid(), bucket;
	__u64 *entry = bpf_map_lookup_elem(&start, &tid), delta;

	if (!entry)
		return 0;
	delta = bpf_ktime_get_ns() - *entry;
	bpf_map_delete_elem(&start, &tid);
	bpf_printk("inet_release returned %d and took %llu ns to execute", retval, delta);
	bucket = kk_log2l(delta);
	kk_increment(&dist, &bucket, 1);
	return 0;
}

// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * A user's own object for the exporter's [[object]] tables (tests/test_exporter.py):
 * getppid() calls counted by (tgid, comm) in a hash map with a struct key, and their
 * durations in a log2 array (slot = bit length of the nanoseconds).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

const volatile __u32 target_tgid = 0;	/* set through the config's rodata */

struct task_key {
	__u32 tgid;
	char comm[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct task_key);
	__type(value, __u64);
} calls SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 40);
	__type(key, __u32);
	__type(value, __u64);
} duration_log2 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} started SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getppid")
int enter(void *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct task_key k = {};
	__u64 one = 1, now, *n;

	k.tgid = bpf_get_current_pid_tgid() >> 32;
	if (target_tgid && k.tgid != target_tgid)
		return 0;
	bpf_get_current_comm(k.comm, sizeof(k.comm));
	n = bpf_map_lookup_elem(&calls, &k);
	if (n)
		__sync_fetch_and_add(n, 1);
	else
		bpf_map_update_elem(&calls, &k, &one, BPF_NOEXIST);
	now = bpf_ktime_get_ns();
	bpf_map_update_elem(&started, &tid, &now, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_getppid")
int leave(void *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid(), slot = 0;
	__u64 *t = bpf_map_lookup_elem(&started, &tid), d, *n;

	if (!t)
		return 0;
	d = bpf_ktime_get_ns() - *t;
	bpf_map_delete_elem(&started, &tid);
	for (int i = 0; i < 39 && d; i++) {
		d >>= 1;
		slot++;
	}
	n = bpf_map_lookup_elem(&duration_log2, &slot);
	if (n)
		__sync_fetch_and_add(n, 1);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

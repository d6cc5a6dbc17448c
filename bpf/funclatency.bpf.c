// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * funclatency: how long kernel functions take.  An entry hook stores the
 * start time per (thread, function); the return hook adds the duration to a
 * log2 histogram and, with --per-call, sends one event.  Three backends:
 *   fentry    fentry+fexit; one object per function (the attach target is
 *             fixed at load), all sharing this object's maps; func_id says
 *             which function the object times
 *   kprobe    one kprobe and one kretprobe program attached to every
 *             function, the function's index passed as the attach cookie
 *   syscalls  raw_syscalls:sys_enter / sys_exit, with the timed syscalls'
 *             numbers in a map, for kernels without kprobes
 * A function that recurses into itself is timed from its innermost call.
 */
#include "kprobekit.bpf.h"

const volatile __u32 func_id = 0;	/* fentry backend: index of this object's function */
const volatile __u64 unit_ns = 1;	/* histogram unit: 1, 1000 or 1000000 ns */
const volatile bool per_call = false;	/* send one event per call */
const volatile bool count_rets = false;	/* count calls per return value (progtrace) */

struct event {
	__u64 duration_ns;
	__s64 ret;
	__u32 pid;
	__u32 tid;
	__u32 func;
	char comm[TASK_COMM_LEN];
};

KK_EVENTS(struct event)

struct start_key {
	__u32 tid;
	__u32 func;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 10240);
	__type(key, struct start_key);
	__type(value, __u64);
} starts SEC(".maps");

struct hist_key {
	__u32 func;
	__u32 slot;
};

/* (function, log2 slot) -> calls, cumulative: -i reports differences (Map.take), never clears */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct hist_key);
	__type(value, __u64);
} hist SEC(".maps");

struct stats {
	__u64 count;
	__u64 total_ns;
};

/* function -> calls and time spent, for the average */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 256);	/* symbols.MAX_MATCHES */
	__type(key, __u32);
	__type(value, struct stats);
} stats SEC(".maps");

struct ret_key {
	__u32 func;
	__u32 pad;
	__s64 ret;
};

/* (function, return value) -> calls */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 1024);
	__type(key, struct ret_key);
	__type(value, __u64);
} rets SEC(".maps");

static __always_inline int on_entry(__u32 func)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct start_key key = { .tid = (__u32)pid_tgid, .func = func };
	__u64 now;

	if (!kk_pid_wanted(pid_tgid >> 32))
		return 0;
	now = bpf_ktime_get_ns();
	bpf_map_update_elem(&starts, &key, &now, BPF_ANY);
	return 0;
}

static __always_inline int on_return(void *ctx, __u32 func, __s64 ret)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct start_key key = { .tid = (__u32)pid_tgid, .func = func };
	struct hist_key hk = { .func = func };
	__u64 *start, delta, one = 1, *count;
	struct stats *st;
	struct event *e;

	start = bpf_map_lookup_elem(&starts, &key);
	if (!start)
		return 0;	/* entry before we attached, or filtered out there */
	delta = bpf_ktime_get_ns() - *start;
	bpf_map_delete_elem(&starts, &key);

	hk.slot = kk_log2l(delta / unit_ns);
	count = bpf_map_lookup_elem(&hist, &hk);
	if (count)
		*count += 1;	/* per-CPU value: no atomics needed */
	else
		bpf_map_update_elem(&hist, &hk, &one, BPF_NOEXIST);

	if (count_rets) {
		struct ret_key rk = { .func = func, .ret = ret };

		count = bpf_map_lookup_elem(&rets, &rk);
		if (count)
			*count += 1;
		else
			bpf_map_update_elem(&rets, &rk, &one, BPF_NOEXIST);
	}
	st = bpf_map_lookup_elem(&stats, &func);
	if (st) {
		st->count++;
		st->total_ns += delta;
	}
	if (!per_call)
		return 0;
	e = kk_reserve();
	if (!e)
		return 0;
	e->duration_ns = delta;
	e->ret = ret;
	e->pid = pid_tgid >> 32;
	e->tid = (__u32)pid_tgid;
	e->func = func;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	kk_submit(ctx, e);
	return 0;
}

/* --- fentry backend: targets set from user space before load --- */

SEC("?fentry")
int BPF_PROG(fentry_entry)
{
	return on_entry(func_id);
}

SEC("?fexit")
int BPF_PROG(fexit_return)
{
	__u64 ret = 0;

	bpf_get_func_ret(ctx, &ret);
	return on_return(ctx, func_id, (__s64)ret);
}

/* --- kprobe backend: attached from user space, cookie = function index --- */

SEC("?kprobe")
int BPF_KPROBE(kprobe_entry)
{
	return on_entry((__u32)bpf_get_attach_cookie(ctx));
}

SEC("?kretprobe")
int BPF_KRETPROBE(kretprobe_return)
{
	return on_return(ctx, (__u32)bpf_get_attach_cookie(ctx), (__s64)PT_REGS_RC(ctx));
}

/* --- syscalls backend: raw_syscalls, two hooks however many syscalls are timed ---
 * One tracepoint per syscall would cost an RCU grace period per hook at exit
 * (~40 ms each, serialized in the kernel): 256 syscalls took 40 s to detach.
 * 64-bit syscall numbers only, as the syscalls:* events count them.  Syscalls
 * newer than the number table kprobekit was built with fall back to their own
 * syscalls:sys_enter_X / sys_exit_X (sys_entry_one, sys_return_one). */

#define MAX_SYSCALLS 1024

/* syscall number -> timed function index + 1 (0: not timed); filled before attach */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_SYSCALLS);
	__type(key, __u32);
	__type(value, __u32);
} syscall_funcs SEC(".maps");

static __always_inline __u32 syscall_func(long nr)
{
	__u32 key = (__u32)nr;
	__u32 *f = bpf_map_lookup_elem(&syscall_funcs, &key);

	return f ? *f : 0;
}

SEC("?tracepoint/raw_syscalls/sys_enter")
int sys_entry(struct trace_event_raw_sys_enter *ctx)
{
	__u32 f = syscall_func(ctx->id);

	return f ? on_entry(f - 1) : 0;
}

SEC("?tracepoint/raw_syscalls/sys_exit")
int sys_return(struct trace_event_raw_sys_exit *ctx)
{
	__u32 f = syscall_func(ctx->id);

	return f ? on_return(ctx, f - 1, ctx->ret) : 0;
}

SEC("?tracepoint")
int sys_entry_one(struct trace_event_raw_sys_enter *ctx)
{
	return on_entry((__u32)bpf_get_attach_cookie(ctx));
}

SEC("?tracepoint")
int sys_return_one(struct trace_event_raw_sys_exit *ctx)
{
	return on_return(ctx, (__u32)bpf_get_attach_cookie(ctx), ctx->ret);
}

#!/usr/bin/python3
"""The tool docs/library.md builds step by step: which files processes open.

    /usr/bin/python3 examples/opensnoop.py [-p PID]    (as root)
"""
import argparse

from kprobekit import BPF, run

TEXT = r"""
#include "kprobekit.bpf.h"

const volatile __u32 target_pid = 0;	/* set from Python before load; 0: every process */

struct event {
	__u32 pid;
	char comm[TASK_COMM_LEN];
	char path[128];
};
KK_EVENTS(struct event)

/* opens per process, read by Python at the end */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} opens SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_openat")
int on_openat(struct trace_event_raw_sys_enter *ctx)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	struct event *e;

	if (target_pid && pid != target_pid)
		return 0;
	kk_increment(&opens, &pid, 1);

	e = kk_reserve();
	if (!e)
		return 0;
	e->pid = pid;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_probe_read_user_str(e->path, sizeof(e->path), (const char *)ctx->args[1]);
	kk_submit(ctx, e);
	return 0;
}
"""


def main():
    parser = argparse.ArgumentParser(description="Trace open() calls.")
    parser.add_argument("-p", "--pid", type=int, default=0, help="only this process")
    args = parser.parse_args()
    with BPF(text=TEXT, name="opensnoop", rodata={"target_pid": args.pid}) as b:
        print(f"{'PID':<7} {'COMM':<16} PATH", flush=True)
        try:
            for e in b.events():
                print(f"{e.pid:<7} {e.comm:<16} {e.path}", flush=True)
        except KeyboardInterrupt:
            busiest = sorted(b["opens"].items(), key=lambda item: -item[1])[:5]
            print("opens by pid:", ", ".join(f"{pid}={n}" for pid, n in busiest))


if __name__ == "__main__":
    run(main)

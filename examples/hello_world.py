#!/usr/bin/python3
"""Seed 003, bcc's hello_world.py: "Hello, World!" each time a task calls clone().

bcc hooked sys_clone with a kprobe.  On a kernel without kprobes this uses
the syscalls:sys_enter_clone tracepoint instead, and says so; kprobekit.features
decides, by loading a test program, not by the kernel version.

    /usr/bin/python3 examples/hello_world.py [kprobe|tracepoint]    (as root)
"""
import sys

from kprobekit import BPF, features, run

TEXT = r"""
#include "kprobekit.bpf.h"

SEC("?ksyscall/clone")
int BPF_KSYSCALL(hello_kprobe)
{
	bpf_printk("Hello, World!");
	return 0;
}

SEC("?tracepoint/syscalls/sys_enter_clone")
int hello_tracepoint(void *ctx)
{
	bpf_printk("Hello, World!");
	return 0;
}
"""


def main(hook="auto"):
    if hook == "auto":
        hook = "kprobe" if features.have("kprobe") else "tracepoint"
        if hook == "tracepoint":
            print(f"hello_world: kprobes unavailable ({features.probe('kprobe').reason}); "
                  "using tracepoint syscalls:sys_enter_clone", file=sys.stderr)
    with BPF(text=TEXT, name="hello_world", programs=[f"hello_{hook}"]) as b:
        b.trace_pipe()      # open before printing the header: no line is missed after it
        print(f"{'TASK':<16} {'PID':<7} MESSAGE", flush=True)
        b.trace_print()


if __name__ == "__main__":
    run(main, *sys.argv[1:])

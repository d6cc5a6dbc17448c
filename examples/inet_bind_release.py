#!/usr/bin/python3
"""Seed 002: the kprobe on inet_bind and the kretprobe timing inet_release, without a kernel module.

Prints each bpf_printk line as it comes; on Ctrl-C, a histogram of
inet_release durations.  Needs kprobes.

    /usr/bin/python3 examples/inet_bind_release.py    (as root)
"""
import os

from kprobekit import BPF, run

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "inet_bind_release.bpf.c")


def main():
    with BPF(src_file=SOURCE) as b:
        pipe = b.trace_pipe()
        print(f"{'TASK':<16} {'PID':<7} MESSAGE", flush=True)
        try:
            for line in pipe:
                print(f"{line.task:<16} {line.pid:<7} {line.msg}", flush=True)
        except KeyboardInterrupt:
            print()
            b.print_log2_hist("dist", "nsecs")


if __name__ == "__main__":
    run(main)
